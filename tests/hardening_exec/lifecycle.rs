//! The executor's smaller failure paths (machine lifecycle, deprovision, backoff).

use std::time::Duration;

use super::fleet_support::Fleet;
use super::support::{self, UserFixture};
use super::*;

#[tokio::test]
async fn a_machine_left_in_created_is_started() {
    use vyx_fleet::fly::CreateMachineRequest;
    let mut fleet = Fleet::start().await;
    fleet.ctx.timeouts.machine_started = Duration::from_secs(3);
    let user = UserFixture::paid("pro").insert(&fleet.db.pool).await;
    fleet.converge().await;
    let row = fleet.row(user).await;
    let app = row.fly_app_name.clone();
    let old = fleet
        .ctx
        .fly
        .get_machine(&app, row.machine_id.as_deref().unwrap())
        .await
        .unwrap();
    // An operator replaces the machine with `fly machine create`-style skip_launch: same config,
    // never booted.
    fleet
        .ctx
        .fly
        .delete_machine(&app, &old.id, true)
        .await
        .unwrap();
    fleet
        .ctx
        .fly
        .create_machine(
            &app,
            &CreateMachineRequest {
                config: old.config.clone().unwrap(),
                region: Some(old.region.clone()),
                skip_launch: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();

    fleet.converge_within(10).await;

    assert_fully_provisioned(&fleet, user).await;
}

#[tokio::test]
async fn a_transiently_empty_machine_list_does_not_make_a_second_machine() {
    // Machine lists lag writes (REFERENCE §7); here long enough that the org list and the app's
    // list both miss the machine on the next pass.
    let fleet = Fleet::builder()
        .sim(|s| s.timings.machine_list_lag = Duration::from_secs(120))
        .start()
        .await;
    let user = UserFixture::paid("pro").insert(&fleet.db.pool).await;
    fleet.pass().await;
    let row = fleet.row(user).await;
    assert_eq!(row.status, "active");
    assert!(row.machine_id.is_some());

    fleet.pass().await;

    let app = fleet.app(&row.fly_app_name).unwrap();
    assert_eq!(live_machines(&app).len(), 1, "{:?}", app.machines);
    let creates = fleet
        .sim
        .calls()
        .iter()
        .filter(|c| c.class == "machines.create" && c.write_applied)
        .count();
    assert_eq!(creates, 1);
    assert_eq!(fleet.row(user).await.machine_id, row.machine_id);
}

#[tokio::test]
async fn a_single_false_404_does_not_mark_a_deprovisioned_row_deleted() {
    let fleet = Fleet::start().await;
    let stays = UserFixture::paid("pro").insert(&fleet.db.pool).await;
    let leaves = UserFixture::paid("pro").insert(&fleet.db.pool).await;
    fleet.converge().await;
    let name = fleet.row(leaves).await.fly_app_name;

    // flaps sometimes says "not found" for apps that exist (REFERENCE §7). The seed makes the first
    // GET of the deprovision such a false 404 and the next one true.
    fleet.sim.set_faults(Faults {
        rules: vec![FaultRule::new("apps.get", 0.5, FaultKind::NotFound)],
        seed: Some(6),
        ..Faults::default()
    });
    fleet.sim.clear_calls();
    support::set_subscription(&fleet.db.pool, leaves, "free", "active").await;
    for _ in 0..10 {
        fleet.pass().await;
        if fleet.row(leaves).await.status == "deleted" {
            break;
        }
    }
    let first_get = fleet
        .sim
        .calls()
        .into_iter()
        .find(|c| c.class == "apps.get")
        .expect("the deprovision read the app");
    assert_eq!(
        first_get.fault.as_deref(),
        Some("not_found"),
        "the seed no longer makes the first GET a false 404; pick another"
    );
    let row = fleet.row(leaves).await;
    assert_eq!(row.status, "deleted");
    let snapshot = fleet.sim.snapshot();
    assert!(
        snapshot.app(&name).is_none_or(|a| a.deleting),
        "the row says deleted while its app still runs"
    );
    fleet.sim.set_faults(Faults::default());
    fleet.converge().await;
    assert!(fleet.app(&name).is_none());
    assert_eq!(fleet.row(stays).await.status, "active");
}

#[tokio::test]
async fn a_first_provision_that_fails_before_any_app_exists_backs_off() {
    let mut fleet = Fleet::start().await;
    fleet.ctx.backoff_base = Duration::from_secs(600);
    fleet.ctx.backoff_max = Duration::from_secs(600);
    let user = UserFixture::paid("pro").insert(&fleet.db.pool).await;
    fleet.sim.set_faults(only(vec![FaultRule::new(
        "apps.get",
        1.0,
        FaultKind::ServerError { status: 500 },
    )]));

    fleet.pass().await;

    let row = fleet
        .maybe_row(user)
        .await
        .expect("the failure is recorded in the user's row");
    assert!(row.next_attempt_at.is_some(), "{row:?}");
    assert_eq!(row.last_error_kind.as_deref(), Some("server"));
    let plan = fleet.plan().await;
    assert!(
        !plan.actions.iter().any(|a| matches!(
            a,
            vyx_fleet::reconcile::plan::Action::Converge { user_id, .. } if *user_id == user
        )),
        "retried at once: {:?}",
        plan.actions
    );
}

#[tokio::test]
async fn a_wait_on_a_machine_destroyed_meanwhile_ends_and_the_machine_is_recreated() {
    let mut fleet = Fleet::builder()
        // The new machine sits in `created` long enough to be destroyed while the converge waits.
        .sim(|s| s.timings.machine_create = Duration::from_secs(600))
        .start()
        .await;
    fleet.ctx.timeouts.machine_started = Duration::from_secs(4);
    let user = UserFixture::paid("pro").insert(&fleet.db.pool).await;

    let ctx = fleet.ctx.clone();
    let cfg = fleet.pass_cfg.clone();
    let metrics = fleet.metrics.clone();
    let pass =
        tokio::spawn(async move { vyx_fleet::reconcile::run_pass(&ctx, &cfg, &metrics).await });
    let (app, machine) = loop {
        let found = fleet.apps().into_iter().find_map(|a| {
            let m = a.machines.first()?.id.clone();
            Some((a.name.clone(), m))
        });
        if let Some(f) = found {
            break f;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    fleet
        .ctx
        .fly
        .delete_machine(&app, &machine, true)
        .await
        .unwrap();
    fleet.sim.set_timings(vyx_fleet::sim::Timings::default());
    pass.await.unwrap().unwrap();

    let row = fleet.row(user).await;
    assert_eq!(
        row.machine_id, None,
        "the destroyed machine is forgotten, not waited on: {row:?}"
    );
    fleet.converge().await;
    assert_fully_provisioned(&fleet, user).await;
}

/// A converge judges the machine as a rollout's move does: an image whose process exits at once
/// fails the converge with that reason, not after the whole health budget with "checks not
/// passing".
#[tokio::test]
async fn a_converge_onto_an_image_whose_process_exits_records_that_reason() {
    use vyx_fleet::sim::ImageBehaviour;
    let fleet = Fleet::start().await;
    fleet
        .sim
        .set_image_behaviour(super::fleet_support::IMAGE, ImageBehaviour::ExitsAtOnce);
    let user = UserFixture::paid("pro").insert(&fleet.db.pool).await;
    fleet.pass().await;
    let (status, why): (String, Option<String>) =
        sqlx::query_as("SELECT status, error_message FROM public.user_fly_apps WHERE user_id = $1")
            .bind(user)
            .fetch_one(&fleet.db.pool)
            .await
            .unwrap();
    assert_eq!(status, "error");
    let why = why.unwrap_or_default();
    assert!(why.contains("process exited"), "{why}");
}
