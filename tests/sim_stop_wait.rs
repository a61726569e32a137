//! The daemon against a wait that answers 400 because the version it waits on was replaced
//! (REFERENCE §3.8: flyctl re-reads the machine and retries), reached through a machine list that
//! lags an update (§3.9, §7): the stop-wait must not give up on it.

mod fleet_support;
mod support;

use std::time::Duration;

use fleet_support::Fleet;
use support::{UserFixture, set_subscription};
use vyx_fleet::fly::UpdateMachineRequest;
use vyx_fleet::sim::Timings;

#[tokio::test]
async fn a_deprovision_that_lists_a_replaced_version_still_stops_the_machine_and_deletes_the_app() {
    let fleet = Fleet::start().await;
    // Others stay: cancelling the whole fleet would trip the deletion breaker instead.
    let user = UserFixture::paid("pro").insert(&fleet.db.pool).await;
    for _ in 0..3 {
        UserFixture::paid("pro").insert(&fleet.db.pool).await;
    }
    fleet.converge().await;
    let row = fleet.row(user).await;
    let app = row.fly_app_name.clone();
    let id = row.machine_id.clone().expect("a machine");

    // From now on every machine list is an hour behind...
    fleet.sim.set_timings(Timings {
        machine_list_lag: Duration::from_secs(3600),
        ..Timings::default()
    });
    fleet.sim.set_stale_list_reads(1.0);
    // ...and someone else (an operator's no-op update, say) gives the machine a new version, which
    // the lists do not show yet.
    let m = fleet.ctx.fly.get_machine(&app, &id).await.expect("machine");
    let req = UpdateMachineRequest {
        config: m.config.clone().expect("config"),
        current_version: m.version.clone(),
        ..Default::default()
    };
    let updated = fleet
        .ctx
        .fly
        .update_machine(&app, &id, &req)
        .await
        .expect("update");
    assert_ne!(updated.version, m.version);

    set_subscription(&fleet.db.pool, user, "free", "cancelled").await;
    for _ in 0..4 {
        fleet.pass().await;
        if fleet.app(&app).is_none() {
            break;
        }
    }
    assert!(fleet.app(&app).is_none(), "the app was deleted");
    let replaced = fleet
        .sim
        .calls()
        .iter()
        .filter(|c| c.class == "machines.wait" && c.status == Some(400))
        .count();
    assert!(replaced >= 1, "the stop-wait met the replaced version");
}
