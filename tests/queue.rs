//! No head-of-line blocking: a NOTIFY enqueues its user at once and the user is
//! reconciled beside a running pass, reading only that user's facts and row.

mod fleet_support;
mod support;

use std::time::Duration;

use fleet_support::Fleet;
use support::{UserFixture, set_subscription};
use tokio::sync::watch;
use tokio::time::Instant;
use vyx_fleet::db::lease;
use vyx_fleet::failpoint as fp;
use vyx_fleet::liveness::Health;
use vyx_fleet::reconcile::{Controller, run_user};

/// Disarms this thread's failpoints however the test ends.
struct Disarm;

impl Drop for Disarm {
    fn drop(&mut self) {
        fp::disarm_this_thread();
    }
}

fn controller(fleet: &Fleet, health: Health) -> Controller {
    // An hour between ticks: only the leader's first tick and the NOTIFY queue act.
    Controller {
        health,
        ..fleet.controller(Duration::from_secs(3600))
    }
}

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

#[tokio::test]
async fn an_upgrade_during_a_slow_pass_is_served_before_the_pass_ends() {
    let fleet = Fleet::start().await;
    lease::release(&fleet.db.pool, &fleet.holder, fleet.term)
        .await
        .unwrap();
    // The leader's first pass plans this user's provisioning and then stays stopped before acting
    // on it until the test lets it go: a pass as slow as the test needs, without a clock.
    let _disarm = Disarm;
    let slow_pass = fp::arm_pause_on_this_thread(fp::PASS_ACTION_BEFORE_CLAIM);
    let slow = UserFixture::paid("pro").insert(&fleet.db.pool).await;
    let health = Health::new(Duration::from_secs(60));
    let c = controller(&fleet, health.clone());
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(async move { c.run(rx).await });
    tokio::time::timeout(Duration::from_secs(60), slow_pass.reached())
        .await
        .expect("the leader's first pass reaches its actions");

    let upgraded = UserFixture::free().insert(&fleet.db.pool).await;
    set_subscription(&fleet.db.pool, upgraded, "elite", "active").await;
    // The deadline only stops a broken build from hanging the suite; the order is the assertion.
    eventually(
        Duration::from_secs(60),
        "the upgraded user served",
        || async {
            fleet
                .maybe_row(upgraded)
                .await
                .is_some_and(|r| r.status == "active")
        },
    )
    .await;
    assert!(
        fleet.maybe_row(slow).await.is_none(),
        "served while the pass still held its plan, before it touched the slow user"
    );

    slow_pass.release();
    eventually(
        Duration::from_secs(60),
        "the slow user served too",
        || async {
            fleet
                .maybe_row(slow)
                .await
                .is_some_and(|r| r.status == "active")
        },
    )
    .await;
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn a_targeted_run_converges_its_user_and_deletes_nothing() {
    let fleet = Fleet::start().await;
    let stays = UserFixture::paid("pro").insert(&fleet.db.pool).await;
    let leaves = UserFixture::paid("pro").insert(&fleet.db.pool).await;
    fleet.converge().await;
    let leaving_app = fleet.row(leaves).await.fly_app_name;
    set_subscription(&fleet.db.pool, leaves, "free", "active").await;
    let fresh = UserFixture::paid("elite").insert(&fleet.db.pool).await;
    fleet.sim.clear_calls();

    // The downgrade: marked unwanted (DB only), its deletion left to the full pass's breaker.
    run_user(&fleet.ctx, &fleet.pass_cfg, leaves).await.unwrap();
    assert_eq!(fleet.row(leaves).await.status, "active");
    assert!(fleet.row(leaves).await.unwanted_since.is_some());
    assert!(fleet.app(&leaving_app).is_some(), "nothing deleted");
    assert!(
        fleet.writes().is_empty(),
        "no Fly write: {:?}",
        fleet.writes()
    );
    assert!(
        fleet.sim.calls().is_empty(),
        "the cache is read as it is: {:?}",
        fleet.sim.calls()
    );

    // The upgrade: served at once.
    run_user(&fleet.ctx, &fleet.pass_cfg, fresh).await.unwrap();
    assert_eq!(fleet.row(fresh).await.status, "active");
    assert_eq!(fleet.row(stays).await.status, "active");

    // The full pass deletes.
    fleet.converge().await;
    assert_eq!(fleet.row(leaves).await.status, "deleted");
    assert!(fleet.app(&leaving_app).is_none());
}

#[tokio::test]
async fn a_notify_before_the_leaders_first_full_list_reads_only_its_users_apps() {
    let fleet = Fleet::start().await;
    let running = UserFixture::paid("pro").insert(&fleet.db.pool).await;
    fleet.converge().await;
    let fresh = UserFixture::paid("elite").insert(&fleet.db.pool).await;
    // A new leader: no complete observation yet (its first full list takes minutes at 100,000
    // apps). The targeted run must not wait for it, nor make it.
    fleet.ctx.observed.invalidate().await;
    fleet.sim.clear_calls();
    run_user(&fleet.ctx, &fleet.pass_cfg, fresh).await.unwrap();
    assert_eq!(fleet.row(fresh).await.status, "active");
    let calls = fleet.sim.calls();
    assert!(
        !calls
            .iter()
            .any(|c| c.class == "apps.list" || c.class == "orgs.machines"),
        "no fleet-wide list for one user: {calls:?}"
    );
    let others = fleet.row(running).await.fly_app_name;
    assert!(
        !calls.iter().any(|c| c.path.contains(&others)),
        "only the user's own apps are read: {calls:?}"
    );
}
