//! Rollback of an app that failed on a rollout's target: back to the last spec it ran healthily,
//! recorded per row (`healthy_image`, `healthy_spec`), and running again.
//!
//! # Expected flow
//! 1. Read the rollback point (machine config and region; no secret values).
//! 2. Find the app's machines: the recorded one is kept if it still exists; every other machine
//!    (a duplicate on the new spec) is destroyed; with none left, one is created from the rollback
//!    point (its op id recorded first, as every create).
//! 3. A `recovery_attempted` event (`{"step":"rollback"}`), then, unless the machine already runs
//!    that config, one update with it (`current_version`, `min_secrets_version`), which relaunches
//!    a stopped machine; a machine already on that config but down is started.
//! 4. Record what runs (image, region, guest, cost; `config_digest` unknown, `spec_digest` the
//!    rollback point's) and `rolled_back`; wait for the version to be `started` with its checks
//!    passing, and record the app healthy if so.
//!
//! # Guarantees
//! - A rolled-back app waits for the next target: the planner never moves it again for this one.
//! - A failed app is never left down on the failed spec: crashed, stopped, vanished or duplicated,
//!   it ends with one machine on its last healthy config, started.
//!
//! # Assumptions
//! - The rollback point's config was healthy when recorded (a converge or a soak that ended well).
//!
//! # Caveats
//! - Secrets are app-level on Fly: the config is restored, not the previous secret values.
//! - A row with no recorded healthy spec is marked `rolled_back` unchanged and left to repair.
//! - The region is not moved back (a failed region move never destroyed the old machine).

use serde_json::json;
use tracing::{info, warn};

use super::rollout::{At, passed_event, set_state};
use super::verdict::wait_for;
use super::{Ctx, ExecError};
use crate::db::Event;
use crate::db::rollout::load_rollback_point;
use crate::fly::{
    FlyError, ListMachines, Machine, MachineConfig, MachineState, UpdateMachineRequest,
};
use crate::reconcile::recorded::AppRow;

use super::machine_config::matches;

pub(super) async fn roll_back(ctx: &Ctx, row: &AppRow, at: At) -> Result<(), ExecError> {
    let Some((image, point)) = load_rollback_point(ctx.store.pool(), row.id).await? else {
        warn!("rollout: no healthy spec recorded to roll back to; left to repair");
        set_state(ctx, row, at, None).await?;
        return Ok(());
    };
    let Some(config) = point
        .get("config")
        .and_then(|c| serde_json::from_value::<MachineConfig>(c.clone()).ok())
    else {
        set_state(ctx, row, at, None).await?;
        return Ok(());
    };
    let app = row.fly_app_name.as_str();
    let secrets_version = row
        .secrets_version
        .and_then(|v| u64::try_from(v).ok())
        .filter(|v| *v > 0);
    let ev = Event::new(
        "recovery_attempted",
        json!({"step": "rollback", "image": image}),
    );
    ctx.store.add_events(row.id, &[ev]).await?;
    let (machine, version) = match keep_one(ctx, row).await? {
        None => {
            let region = point
                .get("region")
                .and_then(|r| r.as_str())
                .filter(|r| !r.is_empty())
                .unwrap_or(ctx.spec.region.as_str())
                .to_string();
            let m =
                super::machine::create_from(ctx, row, (config.clone(), region), secrets_version)
                    .await?;
            let v = m.version.clone();
            (m, v)
        }
        Some(current) => {
            let base = current.config.clone().unwrap_or_default();
            if matches(&base, &config) && base.image == config.image {
                if is_down(&current) {
                    match ctx.fly.start_machine(app, &current.id).await {
                        Ok(()) | Err(FlyError::Conflict { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                let v = current.version.clone();
                (current, v)
            } else {
                let req = UpdateMachineRequest {
                    config: config.clone(),
                    current_version: current.version.clone(),
                    min_secrets_version: secrets_version,
                    ..Default::default()
                };
                let v = ctx
                    .fly
                    .update_machine(app, &current.id, &req)
                    .await?
                    .version;
                (current, v)
            }
        }
    };
    // The row says what runs: the planner then sees the app off the target (a rolled-back app
    // waits for the next one) rather than a move to resume, and the work list stops naming it.
    let guest = config.guest.clone().unwrap_or_default();
    ctx.store
        .record_rolled_back(
            row.id,
            &image,
            &machine.region,
            guest.cpus.unwrap_or(ctx.spec.cpus),
            guest.memory_mb.unwrap_or(ctx.spec.memory_mb),
        )
        .await?;
    set_state(ctx, row, at, version.as_deref()).await?;
    match wait_for(ctx, row, &machine.id, version.as_deref()).await? {
        Ok(_) => {
            ctx.store
                .mark_active(row.id, &passed_event(row, &machine.id))
                .await?;
            info!(image = %image, "rollout: app rolled back to its last healthy spec");
        }
        Err(why) => {
            warn!(image = %image, reason = %why, "rollout: rolled back, still unhealthy; left to repair")
        }
    }
    Ok(())
}

fn is_down(m: &Machine) -> bool {
    matches!(
        m.state,
        MachineState::Stopped
            | MachineState::Suspended
            | MachineState::Failed
            | MachineState::Created
    )
}

/// The machine the rollback keeps: the recorded one if Fly still has it, else any; every other
/// live machine of the app is destroyed. `None`: the app has no machine left.
async fn keep_one(ctx: &Ctx, row: &AppRow) -> Result<Option<Machine>, ExecError> {
    let app = row.fly_app_name.as_str();
    let mut live: Vec<Machine> = ctx
        .fly
        .list_machines(app, &ListMachines::default())
        .await?
        .into_iter()
        .filter(|m| !m.state.is_gone())
        .collect();
    if let Some(recorded) = &row.machine_id
        && !live.iter().any(|m| &m.id == recorded)
    {
        // The list lags (REFERENCE §7): ask for the recorded machine by id before giving it up.
        match ctx.fly.get_machine(app, recorded).await {
            Ok(m) if !m.state.is_gone() => live.insert(0, m),
            Ok(_) | Err(FlyError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let keep = live
        .iter()
        .position(|m| row.machine_id.as_deref() == Some(m.id.as_str()))
        .or_else(|| (!live.is_empty()).then_some(0));
    let Some(keep) = keep else {
        if row.machine_id.is_some() {
            ctx.store.clear_machine(row.id).await?;
        }
        return Ok(None);
    };
    let kept = live.swap_remove(keep);
    for extra in live {
        warn!(machine_id = %extra.id, "rollback: destroying a second machine of the app");
        match ctx.fly.delete_machine(app, &extra.id, true).await {
            Ok(()) | Err(FlyError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if row.machine_id.as_deref() != Some(kept.id.as_str()) {
        ctx.store.set_machine(row.id, Some(&kept.id)).await?;
    }
    // The list may hold a summary: the update needs the whole config and the current version.
    match ctx.fly.get_machine(app, &kept.id).await {
        Ok(m) => Ok(Some(m)),
        Err(FlyError::NotFound { .. }) => {
            ctx.store.clear_machine(row.id).await?;
            Err(ExecError::StillWaiting("machine vanished during rollback"))
        }
        Err(e) => Err(e.into()),
    }
}
