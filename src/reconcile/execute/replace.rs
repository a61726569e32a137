//! Make-before-break (issue 7): move an app's machine to another region, or replace it, without a
//! moment in which the user has no running machine.
//!
//! # Expected flow
//! 1. Record a fresh `machine_op_id` in the row, then create the new machine (target config, the
//!    op in its metadata) in the target region.
//! 2. Wait for it to be `started` with every check passing on its own version.
//! 3. Healthy: record it as the row's machine, then destroy the old one. Not healthy, or the create
//!    refused (422 `insufficient_capacity`, any 4xx): destroy the *new* one; the app fails on the
//!    target and the old machine, never stopped, keeps serving.
//!
//! # Guarantees
//! - The old machine is destroyed only after the new one passed its checks and was recorded.
//!
//! # Assumptions
//! - The app's volume-less machines carry no state that must move with them.
//!
//! # Caveats
//! - A crash between the create and the record leaves two machines; the duplicate sweep of a later
//!   converge keeps the recorded (old) one and destroys the other, and the move is resumed.

use serde_json::json;
use tracing::{info, warn};
use uuid::Uuid;

use super::converge::reload;
use super::machine_config::desired_config;
use super::rollout::{At, verdict};
use super::{Ctx, ExecError};
use crate::db::apps::Event;
use crate::db::rollout::RowRolloutState;
use crate::fly::{CreateMachineRequest, FlyError, Machine, MachineConfig};
use crate::reconcile::recorded::AppRow;
use crate::reconcile::spec::config_digest;

/// A rollout move the region forbids in place. Returns after recording `soaking` or `failed`.
pub(super) async fn move_region(
    ctx: &Ctx,
    row: &AppRow,
    old: Machine,
    at: &impl Fn(RowRolloutState) -> At,
) -> Result<(), ExecError> {
    let image = ctx.spec.image.clone();
    match make_before_break(ctx, row, &old, &image).await? {
        Ok(new_id) => {
            let row = reload(ctx, row.id).await?;
            let digest = config_digest(&ctx.spec);
            let guest = super::rollout::desired_guest(ctx);
            let run = super::rollout::running(&image, &digest, &ctx.spec.region, &guest);
            ctx.store.record_running(row.id, &run).await?;
            let now = crate::db::now(ctx.store.pool()).await?;
            let (id, wave, _) = at(RowRolloutState::Soaking);
            ctx.store
                .set_app_rollout_state(row.id, id, wave, RowRolloutState::Soaking, now, None)
                .await?;
            ctx.store.mark_active(row.id, &[]).await?;
            info!(machine_id = %new_id, region = %ctx.spec.region, "rollout: machine replaced in the new region; soaking");
            Ok(())
        }
        Err(why) => super::rollout::fail(ctx, row, at(RowRolloutState::Failed), &why).await,
    }
}

/// Create the replacement, wait for it, then destroy `old`. `Ok(Err(why))`: the replacement could
/// not be made healthy and is gone again; `old` untouched.
pub(super) async fn make_before_break(
    ctx: &Ctx,
    row: &AppRow,
    old: &Machine,
    image: &str,
) -> Result<Result<String, String>, ExecError> {
    let app = row.fly_app_name.as_str();
    let op = Uuid::new_v4().to_string();
    ctx.store.set_machine_op(row.id, &op).await?;
    let req = CreateMachineRequest {
        config: desired_config(MachineConfig::default(), &ctx.spec, image, row.user_id, &op),
        region: Some(ctx.spec.region.clone()),
        min_secrets_version: row
            .secrets_version
            .and_then(|v| u64::try_from(v).ok())
            .filter(|v| *v > 0),
        ..Default::default()
    };
    let new = match ctx.fly.create_machine(app, &req).await {
        Ok(m) => m,
        // No capacity in the region is a verdict on the target, not a blip to retry forever.
        Err(e) if e.is_transient() && !matches!(e, FlyError::InsufficientCapacity { .. }) => {
            return Err(e.into());
        }
        Err(e) => {
            warn!(error_kind = e.kind(), region = %ctx.spec.region, "replacement machine refused; the old one keeps serving");
            return Ok(Err(format!("replacement refused: {}", e.kind())));
        }
    };
    match verdict(ctx, row, &new.id, new.version.as_deref()).await? {
        Ok(_) => {}
        Err(why) => {
            warn!(machine_id = %new.id, reason = %why, "replacement unhealthy; destroying it, the old one keeps serving");
            destroy(ctx, app, &new.id).await?;
            return Ok(Err(format!("replacement unhealthy: {why}")));
        }
    }
    ctx.store.set_machine(row.id, Some(&new.id)).await?;
    let ev = Event::new(
        "provision_completed",
        json!({"operation": "replace", "machine_id": new.id, "replaced": old.id, "region": new.region}),
    );
    ctx.store.add_events(row.id, &[ev]).await?;
    super::machine::stop_gracefully(ctx, app, old).await?;
    destroy(ctx, app, &old.id).await?;
    Ok(Ok(new.id))
}

async fn destroy(ctx: &Ctx, app: &str, id: &str) -> Result<(), ExecError> {
    match ctx.fly.delete_machine(app, id, true).await {
        Ok(()) | Err(FlyError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
