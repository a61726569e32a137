//! The repair ladder's steps for an app that stayed unhealthy (the planner picks
//! the step and bounds them per pass, `plan_health`).
//!
//! # Expected flow
//! - Restart: record the step and a `recovery_attempted` event (`{"step":"restart"}`), then stop
//!   the machine gracefully and start it again. The next probe judges the result.
//! - Replace: record the step and its event (`{"step":"replace"}`), then make-before-break
//!   (`replace.rs`): a new machine on the app's current image in the configured region; once it
//!   passes its checks it becomes the row's machine and the old one is destroyed. A healthy
//!   replacement ends the unhealthy spell at once.
//!
//! # Guarantees
//! - The step is recorded before any Fly call: a crash mid-step does not repeat it before another
//!   `REPAIR_AFTER` has passed.
//! - A replace never leaves the user without a machine: the old one goes only after the new one
//!   is healthy.
//!
//! # Assumptions
//! - A machine that is not healthy is worth restarting (its state is in Postgres, not on disk).
//!
//! # Caveats
//! - A restart is a stop and a start (the Machines API has no restart call we rely on), so it
//!   waits up to the stop timeout.

use serde_json::json;
use tracing::{info, warn};
use uuid::Uuid;

use super::converge::reload;
use super::machine::stop_gracefully;
use super::replace::make_before_break;
use super::{Ctx, ExecError};
use crate::db::Event;
use crate::db::health::Verdict;
use crate::fly::FlyError;
use crate::reconcile::plan_health::RepairStep;

pub(super) async fn repair(ctx: &Ctx, row_id: Uuid, step: RepairStep) -> Result<(), ExecError> {
    let row = reload(ctx, row_id).await?;
    tracing::Span::current().record("app", row.fly_app_name.as_str());
    let Some(machine_id) = row.machine_id.clone() else {
        return Err(ExecError::RowGone);
    };
    let app = row.fly_app_name.as_str();
    let m = match ctx.fly.get_machine(app, &machine_id).await {
        Ok(m) => m,
        Err(FlyError::NotFound { .. }) => {
            ctx.store.clear_machine(row.id).await?;
            return Err(ExecError::StillWaiting(
                "machine vanished; recreated next pass",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    // The unhealthy record may rest on the app's endpoint alone (an outage of our own egress or
    // of the edge keeps it failing), or be a verdict older than a move that since made the app
    // healthy: a repair acts only when Fly itself says the machine is failing.
    if m.is_healthy() {
        warn!(machine_id = %machine_id, step = step.as_str(), "repair: Fly's checks pass; the unhealthy record is cleared, nothing restarted");
        // The prober may have seen the recovery first: the event is written only by whichever
        // records the transition, so a spell ends with one `health_check_passed`.
        let healthy = Verdict {
            row_id: row.id,
            healthy: true,
            metadata: json!({"machine_id": machine_id, "source": "fly", "before": step.as_str()}),
        };
        ctx.store.record_verdicts(&[healthy]).await?;
        return Ok(());
    }
    ctx.store.record_repair_step(row.id, step.as_str()).await?;
    let ev = Event::new(
        "recovery_attempted",
        json!({"step": step.as_str(), "machine_id": machine_id, "reason": "unhealthy"}),
    );
    ctx.store.add_events(row.id, &[ev]).await?;
    match step {
        RepairStep::Restart => {
            warn!(machine_id = %machine_id, "repair: restarting an app unhealthy for REPAIR_AFTER");
            stop_gracefully(ctx, app, &m).await?;
            match ctx.fly.start_machine(app, &machine_id).await {
                Ok(()) | Err(FlyError::Conflict { .. } | FlyError::PreconditionFailed { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            Ok(())
        }
        RepairStep::Replace => {
            warn!(machine_id = %machine_id, "repair: replacing a machine still unhealthy after a restart");
            let image = row
                .docker_image
                .as_ref()
                .map_or_else(|| ctx.spec.image.clone(), |i| i.to_string());
            match make_before_break(ctx, &row, &m, &image).await? {
                Ok(new_id) => {
                    let digest = row.config_digest.clone().unwrap_or_default();
                    let guest = super::rollout::desired_guest(ctx);
                    let run = super::rollout::running(&image, &digest, &ctx.spec.region, &guest);
                    ctx.store.record_running(row.id, &run).await?;
                    let healthy = Verdict {
                        row_id: row.id,
                        healthy: true,
                        metadata: json!({"machine_id": new_id}),
                    };
                    ctx.store.record_verdicts(&[healthy]).await?;
                    info!(machine_id = %new_id, "repair: replacement healthy; old machine destroyed");
                }
                Err(why) => {
                    warn!(reason = %why, "repair: replacement failed; the old machine stays")
                }
            }
            Ok(())
        }
    }
}
