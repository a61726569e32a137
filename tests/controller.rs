//! The daemon loop in-process: NOTIFY triggers a pass at once, a deposed leader stops acting, and
//! shutdown releases the lease.

mod fleet_support;
mod support;

use std::time::Duration;

use fleet_support::Fleet;
use support::{UserFixture, set_subscription};
use tokio::sync::watch;
use tokio::time::Instant;
use vyx_fleet::db::{breaker, lease};
use vyx_fleet::liveness::Health;
use vyx_fleet::reconcile::Controller;

fn controller(fleet: &Fleet, health: Health) -> Controller {
    // An hour between ticks: only the leader's first tick and the NOTIFY queue act.
    Controller {
        health,
        ..fleet.controller(Duration::from_secs(3600))
    }
}

/// Poll `cond` until true or `within` elapses.
async fn eventually<F, Fut>(within: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn release_test_lease(fleet: &Fleet) {
    lease::release(&fleet.db.pool, &fleet.holder, fleet.term)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_notify_triggers_a_pass_without_waiting_for_the_interval() {
    let fleet = Fleet::start().await;
    release_test_lease(&fleet).await;
    let health = Health::new(Duration::from_secs(60));
    let c = controller(&fleet, health.clone());
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(async move { c.run(rx).await });
    eventually(Duration::from_secs(10), "leadership", || async {
        health.is_leader()
    })
    .await;

    let user = UserFixture::free().insert(&fleet.db.pool).await;
    set_subscription(&fleet.db.pool, user, "elite", "active").await;
    eventually(
        Duration::from_secs(20),
        "app provisioned after NOTIFY",
        || async {
            fleet
                .maybe_row(user)
                .await
                .is_some_and(|r| r.status == "active")
        },
    )
    .await;

    stop.send(true).unwrap();
    task.await.unwrap();
    let state = lease::current(&fleet.db.pool).await.unwrap();
    assert!(
        state.live_holder().is_none(),
        "lease released on shutdown: {state:?}"
    );
}

#[tokio::test]
async fn a_deposed_leader_stops_acting_and_its_late_writes_are_fenced() {
    let fleet = Fleet::start().await;
    release_test_lease(&fleet).await;
    let health = Health::new(Duration::from_secs(60));
    let c = controller(&fleet, health.clone());
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(async move { c.run(rx).await });
    eventually(Duration::from_secs(10), "leadership", || async {
        health.is_leader()
    })
    .await;
    let old = lease::current(&fleet.db.pool).await.unwrap();

    // Another replica takes over (as if this one had been partitioned away past its TTL).
    sqlx::query(
        "UPDATE vyx_fleet.lease SET holder = 'usurper', term = term + 1, \
         expires_at = clock_timestamp() + interval '1 hour' WHERE name = 'controller'",
    )
    .execute(&fleet.db.pool)
    .await
    .unwrap();
    eventually(Duration::from_secs(10), "stepping down", || async {
        !health.is_leader()
    })
    .await;

    // Work appears; the deposed replica must not act on it.
    fleet.sim.clear_calls();
    let user = UserFixture::paid("pro").insert(&fleet.db.pool).await;
    // A write under the old term is rejected by the fence.
    let store = vyx_fleet::db::Store::new(fleet.db.pool.clone(), old.term);
    let late = store.sync_orphans(&["vyx-user-late0001".to_string()]).await;
    assert!(
        matches!(late, Err(vyx_fleet::db::StoreError::Fenced)),
        "a write under the old term must be fenced: {late:?}"
    );
    assert!(fleet.maybe_row(user).await.is_none());
    assert!(
        fleet.writes().is_empty(),
        "deposed leader wrote to Fly: {:?}",
        fleet.writes()
    );

    // The usurper goes away; this replica leads again and converges.
    sqlx::query("UPDATE vyx_fleet.lease SET holder = NULL, expires_at = clock_timestamp() WHERE name = 'controller'")
        .execute(&fleet.db.pool)
        .await
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "re-elected and converged",
        || async {
            fleet
                .maybe_row(user)
                .await
                .is_some_and(|r| r.status == "active")
        },
    )
    .await;
    stop.send(true).unwrap();
    task.await.unwrap();
}

/// Start a controller (an hour between ticks) over `fleet` once its test lease is released.
async fn lead(fleet: &Fleet) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    release_test_lease(fleet).await;
    let health = Health::new(Duration::from_secs(60));
    let c = controller(fleet, health.clone());
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(async move { c.run(rx).await });
    eventually(Duration::from_secs(10), "leadership", || async {
        health.is_leader()
    })
    .await;
    (stop, task)
}

/// With an hour between ticks, a downgrade's deletion does not wait for the interval: the end of
/// its grace (0 s here) brings the full pass forward.
#[tokio::test]
async fn a_downgrade_is_deleted_when_its_grace_ends_not_at_the_next_interval() {
    let fleet = Fleet::start().await;
    let users = [
        UserFixture::paid("pro").insert(&fleet.db.pool).await,
        UserFixture::paid("pro").insert(&fleet.db.pool).await,
        UserFixture::paid("elite").insert(&fleet.db.pool).await,
    ];
    fleet.converge().await;
    let (stop, task) = lead(&fleet).await;

    set_subscription(&fleet.db.pool, users[0], "free", "cancelled").await;
    eventually(Duration::from_secs(30), "the row deleted", || async {
        fleet.row(users[0]).await.status == "deleted"
    })
    .await;
    assert!(fleet.app(&fleet.row(users[0]).await.fly_app_name).is_none());
    assert_eq!(fleet.apps().len(), 2);
    stop.send(true).unwrap();
    task.await.unwrap();
}

/// With an hour between ticks, an operator's confirmation of held deletions is acted on at once.
#[tokio::test]
async fn a_confirmation_of_held_deletions_is_acted_on_at_once() {
    let fleet = Fleet::start().await;
    let mut users = Vec::new();
    for _ in 0..8 {
        users.push(UserFixture::paid("pro").insert(&fleet.db.pool).await);
    }
    fleet.converge().await;
    for u in &users[..6] {
        set_subscription(&fleet.db.pool, *u, "free", "cancelled").await;
    }
    fleet.pass().await; // the graces start
    fleet.pass().await; // the breaker holds the six
    assert_eq!(breaker::load_held(&fleet.db.pool).await.unwrap().len(), 6);
    let (stop, task) = lead(&fleet).await;
    // The leader's first tick (a full pass) ends, still held; nothing else is due for an hour.
    eventually(Duration::from_secs(20), "the first pass", || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM vyx_fleet.settings WHERE key = 'last_pass_at'",
        )
        .fetch_one(&fleet.db.pool)
        .await
        .unwrap()
            == 1
    })
    .await;
    assert_eq!(
        fleet.apps().len(),
        8,
        "nothing deleted before a confirmation"
    );

    assert_eq!(
        breaker::confirm_held(&fleet.db.pool, "test").await.unwrap(),
        6
    );
    eventually(Duration::from_secs(30), "six rows deleted", || async {
        let mut deleted = 0;
        for u in &users[..6] {
            deleted += usize::from(fleet.row(*u).await.status == "deleted");
        }
        deleted == 6
    })
    .await;
    assert_eq!(fleet.apps().len(), 2);
    stop.send(true).unwrap();
    task.await.unwrap();
}
