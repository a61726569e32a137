//! Make-before-break: move an app's machine to another region, or replace it, without a
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
use super::rollout::At;
use super::verdict::wait_for;
use super::{Ctx, ExecError, wait};
use crate::db::Event;
use crate::db::rollout::RowRolloutState;
use crate::fly::{CreateMachineRequest, FlyError, ListMachines, Machine, MachineConfig};
use crate::reconcile::observed::META_OP;
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
    if let Some(made) = made_before(ctx, row, old).await? {
        // The create went out before a crash or a lost answer: judge that machine, make no other.
        info!(machine_id = %made.id, "replacement found by its op id; adopting it");
        return judge_and_swap(ctx, row, old, made).await;
    }
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
    judge_and_swap(ctx, row, old, new).await
}

/// A machine of the app in the target region carrying the op id the row recorded before its
/// create. The old machine carrying that op means no create is pending; otherwise the list may
/// not show the new machine yet (REFERENCE §7), so it is looked for a moment before concluding.
async fn made_before(ctx: &Ctx, row: &AppRow, old: &Machine) -> Result<Option<Machine>, ExecError> {
    let Some(op) = row.machine_op_id.as_deref() else {
        return Ok(None);
    };
    if old
        .metadata()
        .and_then(|md| md.get(META_OP))
        .map(String::as_str)
        == Some(op)
    {
        return Ok(None);
    }
    let found = wait::until(
        ctx.timeouts.list_lag,
        "the replacement in the list",
        || async {
            let listed = ctx
                .fly
                .list_machines(&row.fly_app_name, &ListMachines::default())
                .await?;
            Ok(listed.into_iter().find(|m| {
                m.id != old.id
                    && !m.state.is_gone()
                    && m.region == ctx.spec.region
                    && m.metadata()
                        .and_then(|md| md.get(META_OP))
                        .map(String::as_str)
                        == Some(op)
            }))
        },
    )
    .await;
    match found {
        Ok(m) => Ok(Some(m)),
        Err(ExecError::StillWaiting(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

async fn judge_and_swap(
    ctx: &Ctx,
    row: &AppRow,
    old: &Machine,
    new: Machine,
) -> Result<Result<String, String>, ExecError> {
    let app = row.fly_app_name.as_str();
    match wait_for(ctx, row, &new.id, new.version.as_deref()).await? {
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
