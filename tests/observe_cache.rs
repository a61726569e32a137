//! Incremental observation: the observed Fly state is kept between passes; a quiet
//! pass reads only the machines changed since the last one, a full list comes with every new lease
//! term and every `RESYNC_INTERVAL`. Real PostgreSQL, the simulator's call log as the witness.

mod fleet_support;
mod support;

use std::time::Duration;

use fleet_support::Fleet;
use support::UserFixture;
use uuid::Uuid;
use vyx_fleet::db::Store;
use vyx_fleet::db::lease;
use vyx_fleet::reconcile::plan::Action;
use vyx_fleet::reconcile::{Ctx, plan_pass, run_pass};
use vyx_fleet::sim::{CallRecord, FaultKind, FaultRule, Faults};

fn classes(calls: &[CallRecord]) -> Vec<&str> {
    calls.iter().map(|c| c.class.as_str()).collect()
}

/// The org machine list calls that are deltas: `updated_after` set and destroyed machines included.
fn is_delta(c: &CallRecord) -> bool {
    c.class == "orgs.machines"
        && c.path.contains("updated_after=")
        && c.path.contains("include_deleted=true")
}

fn converges_user(actions: &[Action], user: Uuid) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, Action::Converge { user_id, .. } if *user_id == user))
}

async fn paid(fleet: &Fleet, n: usize) -> Vec<Uuid> {
    let mut users = Vec::new();
    for _ in 0..n {
        users.push(UserFixture::paid("pro").insert(&fleet.db.pool).await);
    }
    users
}

/// The user's one live machine id on Fly, once the sim shows exactly one.
fn live_machine(fleet: &Fleet, app: &str) -> String {
    let app = fleet.app(app).expect("app exists");
    let live: Vec<_> = app
        .live_machines()
        .filter(|m| m.state != "destroying")
        .collect();
    assert_eq!(live.len(), 1, "{app:?}");
    live[0].id.clone()
}

/// Destroy a machine as an operator would with flyctl (`fly m destroy --force`).
async fn destroy_by_hand(fleet: &Fleet, app: &str, id: &str) {
    fleet
        .ctx
        .fly
        .delete_machine(app, id, true)
        .await
        .expect("destroy by hand");
}

#[tokio::test]
async fn a_quiet_pass_after_the_first_costs_one_changed_machine_list() {
    let fleet = Fleet::start().await;
    paid(&fleet, 3).await;
    fleet.pass().await;
    let first = fleet.sim.calls();
    assert_eq!(
        classes(&first[..2]),
        ["apps.list", "orgs.machines"],
        "the first pass lists in full"
    );
    assert!(!first[1].path.contains("updated_after"), "{:?}", first[1]);

    fleet.converge().await;
    fleet.sim.clear_calls();
    let report = fleet.pass().await;
    assert!(report.plan.actions.is_empty(), "{:?}", report.plan.actions);
    let calls = fleet.sim.calls();
    assert_eq!(classes(&calls), ["orgs.machines"], "{calls:?}");
    assert!(is_delta(&calls[0]), "{:?}", calls[0]);
}

#[tokio::test]
async fn a_machine_destroyed_by_hand_is_seen_through_the_delta_and_replaced() {
    let fleet = Fleet::start().await;
    let users = paid(&fleet, 2).await;
    fleet.converge().await;
    let app = fleet.row(users[0]).await.fly_app_name;
    let old = live_machine(&fleet, &app);
    destroy_by_hand(&fleet, &app, &old).await;
    fleet.sim.clear_calls();

    let plan = fleet.plan().await;
    assert!(converges_user(&plan.actions, users[0]), "{plan:?}");
    assert!(!converges_user(&plan.actions, users[1]), "{plan:?}");
    let calls = fleet.sim.calls();
    assert!(
        calls.iter().all(is_delta),
        "seen by the delta alone: {calls:?}"
    );

    fleet.converge().await;
    let new = live_machine(&fleet, &app);
    assert_ne!(new, old, "a new machine replaced the destroyed one");
    assert!(
        fleet.sim.calls().iter().all(|c| c.class != "apps.list"),
        "no full list was needed"
    );
    assert_eq!(fleet.row(users[0]).await.status, "active");
}

#[tokio::test]
async fn an_app_deleted_by_hand_is_caught_by_the_resync_and_not_before() {
    // Two observation caches over one fleet, each already past its first full list: one whose
    // resync is an hour away (its next looks are deltas, however slow the machine), one whose
    // resync is a second away (due by the time the test sleeps a second: a lower bound, never an
    // upper one). The first shows what a delta cannot see, the second that the resync sees it.
    let fleet = Fleet::builder()
        .var("RECONCILE_INTERVAL", "1s")
        .var("RESYNC_INTERVAL", "1h")
        .start()
        .await;
    let users = paid(&fleet, 2).await;
    fleet.converge().await;
    let soon = Ctx {
        observed: std::sync::Arc::new(vyx_fleet::reconcile::ObserveCache::new(
            Duration::from_secs(1),
        )),
        ..fleet.ctx.clone()
    };
    let _ = plan_pass(&soon, &fleet.pass_cfg).await.unwrap();
    fleet.relist().await;
    fleet.pass().await;
    let app = fleet.row(users[0]).await.fly_app_name;
    assert!(fleet.sim.delete_app_out_of_band(&app));
    fleet.sim.clear_calls();

    let plan = fleet.plan().await;
    assert!(
        !converges_user(&plan.actions, users[0]),
        "no machine event tells of a deleted app: {plan:?}"
    );
    let calls = fleet.sim.calls();
    assert!(calls.iter().all(is_delta), "{calls:?}");

    tokio::time::sleep(Duration::from_secs(1)).await;
    fleet.sim.clear_calls();
    let plan = plan_pass(&soon, &fleet.pass_cfg).await.unwrap();
    assert!(converges_user(&plan.actions, users[0]), "{plan:?}");
    let calls = fleet.sim.calls();
    assert_eq!(
        classes(&calls),
        ["apps.list", "orgs.machines"],
        "the resync lists in full"
    );

    fleet.relist().await;
    fleet.converge().await;
    assert!(fleet.app(&app).is_some(), "the app is back");
    live_machine(&fleet, &app);
    assert_eq!(fleet.row(users[0]).await.status, "active");
}

#[tokio::test]
async fn a_new_leader_starts_with_a_full_list() {
    let fleet = Fleet::start().await;
    paid(&fleet, 2).await;
    fleet.converge().await;
    lease::release(&fleet.db.pool, &fleet.holder, fleet.term)
        .await
        .unwrap();
    let term = lease::try_acquire(&fleet.db.pool, "successor", Duration::from_secs(600))
        .await
        .unwrap()
        .expect("the lease is free");
    assert_ne!(term, fleet.term);
    // Same process, same (warm) cache: only the term differs, as for a replica that led before.
    let ctx = Ctx {
        store: Store::new(fleet.db.pool.clone(), term),
        ..fleet.ctx.clone()
    };
    fleet.sim.clear_calls();
    let report = run_pass(&ctx, &fleet.pass_cfg, &fleet.metrics)
        .await
        .unwrap();
    assert!(report.plan.actions.is_empty(), "{:?}", report.plan.actions);
    let calls = fleet.sim.calls();
    assert_eq!(classes(&calls), ["apps.list", "orgs.machines"], "{calls:?}");
    assert!(!calls[1].path.contains("updated_after"), "{:?}", calls[1]);

    fleet.sim.clear_calls();
    run_pass(&ctx, &fleet.pass_cfg, &fleet.metrics)
        .await
        .unwrap();
    let calls = fleet.sim.calls();
    assert_eq!(classes(&calls), ["orgs.machines"], "{calls:?}");
    assert!(is_delta(&calls[0]));
}

#[tokio::test]
async fn deltas_follow_list_pages_of_two() {
    let fleet = Fleet::builder()
        .var("VYX_FLY_LIST_PAGE_SIZE", "2")
        .start()
        .await;
    let users = paid(&fleet, 5).await;
    fleet.converge().await;
    let app = fleet.row(users[3]).await.fly_app_name;
    let old = live_machine(&fleet, &app);
    destroy_by_hand(&fleet, &app, &old).await;
    fleet.sim.clear_calls();

    let plan = fleet.plan().await;
    let calls = fleet.sim.calls();
    assert!(calls.len() >= 3, "five or six changed machines: {calls:?}");
    assert!(calls.iter().all(is_delta), "{calls:?}");
    assert!(
        calls.iter().all(|c| c.path.contains("limit=2")),
        "{calls:?}"
    );
    assert!(
        calls[1..].iter().all(|c| c.path.contains("cursor=")),
        "later pages follow the cursor: {calls:?}"
    );
    assert!(converges_user(&plan.actions, users[3]), "{plan:?}");
    assert_eq!(
        plan.actions
            .iter()
            .filter(|a| matches!(a, Action::Converge { .. }))
            .count(),
        1,
        "only the user whose machine went: {plan:?}"
    );

    fleet.converge().await;
    assert_ne!(live_machine(&fleet, &app), old);
    for u in &users {
        assert_eq!(fleet.row(*u).await.status, "active");
    }
}

#[tokio::test]
async fn after_a_failed_observation_the_next_pass_lists_in_full() {
    let fleet = Fleet::start().await;
    paid(&fleet, 2).await;
    fleet.converge().await;
    fleet.sim.set_faults(Faults {
        rules: vec![FaultRule::new(
            "orgs.machines",
            1.0,
            FaultKind::ServerError { status: 500 },
        )],
        ..Faults::default()
    });
    let failed = plan_pass(&fleet.ctx, &fleet.pass_cfg).await;
    assert!(failed.is_err(), "the delta failed: the pass is skipped");
    fleet.sim.set_faults(Faults::default());
    fleet.sim.clear_calls();

    let plan = fleet.plan().await;
    assert!(plan.actions.is_empty(), "{plan:?}");
    let calls = fleet.sim.calls();
    assert_eq!(classes(&calls), ["apps.list", "orgs.machines"], "{calls:?}");
    assert!(!calls[1].path.contains("updated_after"), "{:?}", calls[1]);
}
