//! The daemon loop in-process: NOTIFY triggers a pass at once, a deposed leader stops acting, and
//! shutdown releases the lease.

mod fleet_support;
mod support;

use std::time::Duration;

use fleet_support::Fleet;
use support::{UserFixture, set_subscription};
use tokio::sync::watch;
use tokio::time::Instant;
use vyx_fleet::db::lease;
use vyx_fleet::http::Health;
use vyx_fleet::reconcile::controller::Controller;

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
    let store = vyx_fleet::db::apps::Store::new(fleet.db.pool.clone(), old.term);
    let late = store.sync_orphans(&["vyx-user-late0001".to_string()]).await;
    assert!(
        matches!(late, Err(vyx_fleet::db::apps::StoreError::Fenced)),
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
