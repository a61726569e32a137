//! Rollback of an app that failed on a rollout's target (issue 7): back to the last spec it ran
//! healthily, recorded per row (`healthy_image`, `healthy_spec`).
//!
//! # Expected flow
//! 1. Read the rollback point (machine config and region; no secret values) and the machine.
//! 2. A `recovery_attempted` event (`{"step":"rollback"}`), then, unless the machine already runs
//!    that config, one update with it (`current_version`, `min_secrets_version`).
//! 3. Record what runs (image, region, guest, cost) and `rolled_back`; wait for the version the
//!    update returned to be `started` with its checks passing, and record the app healthy if so.
//!
//! # Guarantees
//! - A rolled-back app waits for the next target: the planner never moves it again for this one.
//!
//! # Assumptions
//! - The failed app's machine still exists (a vanished machine is repaired, not rolled back).
//!
//! # Caveats
//! - Secrets are app-level on Fly: the config is restored, not the previous secret values.
//! - A row with no recorded healthy spec is marked `rolled_back` unchanged and left to repair.
//! - The region is not moved back (a failed region move never destroyed the old machine).

use serde_json::json;
use tracing::{info, warn};

use super::rollout::{At, get, passed_event, running, set_state, verdict};
use super::{Ctx, ExecError};
use crate::db::apps::Event;
use crate::db::rollout::load_rollback_point;
use crate::fly::{MachineConfig, UpdateMachineRequest};
use crate::reconcile::recorded::AppRow;

use super::machine_config::matches;

pub(super) async fn roll_back(
    ctx: &Ctx,
    row: &AppRow,
    machine_id: &str,
    at: At,
) -> Result<(), ExecError> {
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
    let current = get(ctx, row, machine_id).await?;
    let base = current.config.clone().unwrap_or_default();
    let ev = Event::new(
        "recovery_attempted",
        json!({"step": "rollback", "image": image}),
    );
    ctx.store.add_events(row.id, &[ev]).await?;
    let guest = config.guest.clone().unwrap_or_default();
    let version = if matches(&base, &config) && base.image == config.image {
        current.version.clone()
    } else {
        let req = UpdateMachineRequest {
            config,
            current_version: current.version.clone(),
            min_secrets_version: row
                .secrets_version
                .and_then(|v| u64::try_from(v).ok())
                .filter(|v| *v > 0),
            ..Default::default()
        };
        ctx.fly
            .update_machine(&row.fly_app_name, machine_id, &req)
            .await?
            .version
    };
    // The row says what runs: the planner then sees the app off the target (a rolled-back app
    // waits for the next one) rather than a move to resume.
    let digest = row.config_digest.clone().unwrap_or_default();
    ctx.store
        .record_running(row.id, &running(&image, &digest, &current.region, &guest))
        .await?;
    set_state(ctx, row, at, version.as_deref()).await?;
    match verdict(ctx, row, machine_id, version.as_deref()).await? {
        Ok(_) => {
            ctx.store
                .mark_active(row.id, &passed_event(row, machine_id))
                .await?;
            info!(image = %image, "rollout: app rolled back to its last healthy spec");
        }
        Err(why) => {
            warn!(image = %image, reason = %why, "rollout: rolled back, still unhealthy; left to repair")
        }
    }
    Ok(())
}
