//! Decisions are fresh: a full pass plans the whole fleet at once, and an action may wait for a slot
//! while the world moves on. Whatever it planned, the user's action is re-derived under the user's
//! claim from the user's own facts, and the write that starts a deletion re-checks them in SQL.
//!
//! The interleavings are made with a failpoint that pauses the pass after it planned and before it
//! claims its next user (`pass.action.before_claim`), never with sleeps; every verdict is the
//! simulator's call log.

mod fleet_support;
mod support;

use fleet_support::Fleet;
use support::{UserFixture, set_subscription};
use vyx_fleet::db::Store;
use vyx_fleet::failpoint::{self as fp, Paused};
use vyx_fleet::reconcile::plan::{Action, RolloutStep};
use vyx_fleet::reconcile::{Wanted, run_user};
use vyx_fleet::sim::CallRecord;

/// Fails the test instead of hanging it when something wedges.
async fn guard<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(120), f)
        .await
        .expect("wedged")
}

/// Disarms this thread's failpoints however the test ends, so a failed assertion cannot leave a
/// pause armed for the next test on this thread.
struct Disarm;

impl Drop for Disarm {
    fn drop(&mut self) {
        fp::disarm_this_thread();
    }
}

/// Asserts the simulator received no write for `app` (any method but GET, on the app or its
/// machines, secrets, IPs) since its call log was last cleared; `what` says what must not have gone.
fn assert_no_writes_to(fleet: &Fleet, app: &str, what: &str) {
    let calls = fleet.sim.calls();
    let writes: Vec<&CallRecord> = calls
        .iter()
        .filter(|c| c.method != "GET" && c.path.contains(app))
        .collect();
    assert!(writes.is_empty(), "{what}: {writes:?}");
}

/// Runs one full pass on this thread, stopped right after it planned (at its first action, before
/// that action's user is claimed); `meanwhile` changes the world; then the pass goes on with the
/// plan it made before.
async fn pass_with_a_change_after_planning<F, Fut>(fleet: &Fleet, meanwhile: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let _disarm = Disarm;
    let paused: Paused = fp::arm_pause_on_this_thread(fp::PASS_ACTION_BEFORE_CLAIM);
    let pass = fleet.pass();
    tokio::pin!(pass);
    guard(async {
        tokio::select! {
            report = &mut pass => panic!("the pass ended without acting: {:?}", report.plan.actions),
            () = paused.reached() => {}
        }
    })
    .await;
    // The pass holds its plan and waits (nothing of it is polled meanwhile).
    meanwhile().await;
    fleet.sim.clear_calls();
    paused.release();
    guard(pass).await;
}

/// Two more paying users, never touched.
async fn others(fleet: &Fleet) {
    for _ in 0..2 {
        UserFixture::paid("pro").insert(&fleet.db.pool).await;
    }
}

#[tokio::test]
async fn a_deprovision_planned_before_a_re_upgrade_deletes_nothing() {
    let fleet = Fleet::start().await;
    let user = UserFixture::paid("pro").insert(&fleet.db.pool).await;
    // Others stay: deleting every live app at once would be held by the blast-radius breaker.
    others(&fleet).await;
    fleet.converge().await;
    let app = fleet.row(user).await.fly_app_name;

    // Downgraded: the grace starts (0 s in these tests), and the next pass plans the deletion.
    set_subscription(&fleet.db.pool, user, "free", "cancelled").await;
    fleet.pass().await;
    assert!(fleet.row(user).await.unwanted_since.is_some());
    assert!(
        fleet
            .plan()
            .await
            .actions
            .iter()
            .any(|a| matches!(a, Action::Deprovision { user_id, .. } if *user_id == user)),
        "the pass below plans the deletion"
    );

    // While that deletion waits, the user re-upgrades and NOTIFY runs their targeted reconcile,
    // which cancels the grace and lets the user go.
    pass_with_a_change_after_planning(&fleet, || async {
        set_subscription(&fleet.db.pool, user, "pro", "active").await;
        let claim = fleet
            .ctx
            .users
            .claim(user)
            .expect("nobody works on the user");
        run_user(&fleet.ctx, &fleet.pass_cfg, user).await.unwrap();
        drop(claim);
        assert!(fleet.row(user).await.unwanted_since.is_none());
    })
    .await;

    assert_no_writes_to(&fleet, &app, "no stop, no delete");
    assert!(fleet.app(&app).is_some(), "the app still exists");
    let row = fleet.row(user).await;
    assert_eq!(row.status, "active");
    assert!(
        !fleet
            .events(user)
            .await
            .contains(&"deprovision_started".to_string())
    );
}

#[tokio::test]
async fn a_deprovision_planned_before_a_re_upgrade_deletes_nothing_even_before_the_user_is_reconciled()
 {
    let fleet = Fleet::start().await;
    let user = UserFixture::paid("pro").insert(&fleet.db.pool).await;
    // Others stay: deleting every live app at once would be held by the blast-radius breaker.
    others(&fleet).await;
    fleet.converge().await;
    let app = fleet.row(user).await.fly_app_name;
    set_subscription(&fleet.db.pool, user, "free", "cancelled").await;
    fleet.pass().await;
    assert!(
        fleet
            .plan()
            .await
            .actions
            .iter()
            .any(|a| matches!(a, Action::Deprovision { user_id, .. } if *user_id == user)),
        "the pass below plans the deletion"
    );

    // The re-upgrade's NOTIFY is lost (or its run has not come yet): the row still reads unwanted.
    pass_with_a_change_after_planning(&fleet, || async {
        set_subscription(&fleet.db.pool, user, "elite", "active").await;
    })
    .await;

    assert_no_writes_to(&fleet, &app, "no stop, no delete");
    assert!(fleet.app(&app).is_some(), "the app still exists");
    assert_eq!(fleet.row(user).await.status, "active");
}

#[tokio::test]
async fn a_converge_planned_before_a_paused_override_changes_nothing_at_fly() {
    let fleet = Fleet::start().await;
    let settled = UserFixture::paid("pro").insert(&fleet.db.pool).await;
    fleet.converge().await;
    // A new paying user: the pass below plans their provisioning.
    let user = UserFixture::paid("pro").insert(&fleet.db.pool).await;
    assert!(
        fleet
            .plan()
            .await
            .actions
            .iter()
            .any(|a| matches!(a, Action::Converge { user_id, .. } if *user_id == user)),
        "the pass below plans the converge"
    );

    // While the converge waits for its slot, an admin pauses the user.
    pass_with_a_change_after_planning(&fleet, || async {
        fleet.set_override(user, Some("paused")).await;
    })
    .await;

    let calls = fleet.sim.calls();
    assert!(fleet.writes().is_empty(), "no create, no update: {calls:?}");
    assert!(fleet.maybe_row(user).await.is_none(), "no row reserved");
    assert_eq!(fleet.apps().len(), 1);
    assert_eq!(fleet.row(settled).await.status, "active");
}

#[tokio::test]
async fn a_repair_planned_before_a_paused_override_changes_nothing_at_fly() {
    let fleet = Fleet::start().await;
    let user = UserFixture::paid("pro").insert(&fleet.db.pool).await;
    fleet.converge().await;
    let row = fleet.row(user).await;
    let app = row.fly_app_name.clone();
    // The machine is destroyed by hand (`fly m destroy --force`): the pass below plans a converge
    // that creates another.
    fleet
        .ctx
        .fly
        .delete_machine(&app, row.machine_id.as_deref().expect("a machine"), true)
        .await
        .expect("destroy by hand");
    assert!(
        fleet
            .plan()
            .await
            .actions
            .iter()
            .any(|a| matches!(a, Action::Converge { user_id, .. } if *user_id == user)),
        "the pass below plans the repair"
    );

    pass_with_a_change_after_planning(&fleet, || async {
        fleet.set_override(user, Some("paused")).await;
    })
    .await;

    assert_no_writes_to(&fleet, &app, "no machine created");
}

#[tokio::test]
async fn a_rollout_move_planned_before_a_paused_override_changes_nothing_at_fly() {
    let mut fleet = Fleet::builder().var("ROLLOUT_SOAK", "1s").start().await;
    let user = UserFixture::paid("pro").insert(&fleet.db.pool).await;
    fleet.converge().await;
    let app = fleet.row(user).await.fly_app_name.clone();
    fleet.reconfigure("USER_APP_IMAGE", "registry.fly.io/vyx-screener:v2");
    assert!(
        fleet.plan().await.actions.iter().any(|a| matches!(
            a,
            Action::Rollout { user_id, step: RolloutStep::Move, .. } if *user_id == user
        )),
        "the pass below plans the canary's move"
    );

    // While the move waits for its slot, an admin pauses the user.
    pass_with_a_change_after_planning(&fleet, || async {
        fleet.set_override(user, Some("paused")).await;
    })
    .await;

    assert_no_writes_to(&fleet, &app, "no machine updated");
    let state: Option<String> =
        sqlx::query_scalar("SELECT rollout_state FROM public.user_fly_apps WHERE user_id = $1")
            .bind(user)
            .fetch_one(&fleet.db.pool)
            .await
            .expect("row");
    assert_eq!(state, None, "the move was never begun");
}

/// The guard itself, against the database alone: the write that starts a deprovision changes no
/// row unless the user is unwanted now and the grace is over.
#[tokio::test]
async fn the_write_that_starts_a_deprovision_re_checks_the_user_and_the_grace_in_sql() {
    let fleet = Fleet::start().await;
    let store = Store::new(fleet.db.pool.clone(), fleet.term);
    let wanted = |grace_s: i64| Wanted {
        policy: fleet.pass_cfg.policy.clone(),
        deprovision_grace: chrono::Duration::seconds(grace_s),
    };
    let user = UserFixture::paid("pro").insert(&fleet.db.pool).await;
    fleet.converge().await;
    let row_id = fleet.row(user).await.id;
    let start = |grace_s: i64| {
        let store = store.clone();
        let wanted = wanted(grace_s);
        async move {
            store
                .mark_deprovisioning(row_id, &wanted, &[])
                .await
                .unwrap()
        }
    };
    let unwanted_for = |seconds: i64| {
        let pool = fleet.db.pool.clone();
        async move {
            sqlx::query(
                "UPDATE public.user_fly_apps SET unwanted_since = now() - $2 * interval '1 second' \
                 WHERE id = $1",
            )
            .bind(row_id)
            .bind(seconds as f64)
            .execute(&pool)
            .await
            .unwrap();
        }
    };

    // Paid, and never marked unwanted.
    assert!(!start(0).await, "a row never marked unwanted");
    // Marked unwanted long ago, but paid again since.
    unwanted_for(3600).await;
    assert!(!start(0).await, "a paid user");
    set_subscription(&fleet.db.pool, user, "free", "active").await;
    // Unwanted, but within the grace.
    unwanted_for(60).await;
    assert!(!start(600).await, "within the grace");
    // Unwanted past the grace, but kept by an override.
    unwanted_for(3600).await;
    for keep in ["present", "paused"] {
        fleet.set_override(user, Some(keep)).await;
        assert!(!start(600).await, "an override {keep}");
    }
    assert_eq!(fleet.row(user).await.status, "active");
    // `absent` deletes whatever the subscription says.
    set_subscription(&fleet.db.pool, user, "pro", "active").await;
    fleet.set_override(user, Some("absent")).await;
    assert!(start(600).await, "an absent override past the grace");
    assert_eq!(fleet.row(user).await.status, "deprovisioning");
}
