//! One app's steps in a rollout: move it to the target spec, judge it on the machine's
//! new version, keep judging it through the soak, settle it, or put it back on its last healthy
//! spec. The waves, the soak clock and the halt are the planner's (`plan_rollout`, `rollout`).
//!
//! # Expected flow
//! 1. Move: read the machine (`V0`); if the app is healthy now, record its running config as the
//!    rollback point; record `rollout_state = moving` and the wave *before* any Fly write. Write the
//!    app's secrets if they changed (app-level, now, not fleet-wide up front: a repair restart
//!    elsewhere must not pick them up outside the waves). `POST` the update with the whole config,
//!    `current_version = V0` and `min_secrets_version`; record the version it returned (`V1`) and
//!    the applied image/config. Region changes are made before broken (`replace.rs`).
//! 2. Verdict, one short look per pass (`Timeouts::rollout_look`, without the slot, so a wave's
//!    updates are not serialised behind their machines' boots): healthy only when the machine reports `version == V1`,
//!    `started` and every check passing → `soaking` since the database's now; `failed`, or not
//!    healthy within the start + health timeouts counted from the recorded `moving` → `failed`;
//!    otherwise still `moving`, and the next pass looks again (no second update: the version is
//!    recorded).
//! 3. Check (each pass while soaking): the machine must still be on `V1`, `started`, checks
//!    passing; anything else → `failed`.
//! 4. Settle (soak over): `healthy`, and the running spec becomes the rollback point.
//! 5. Back (failed, `rollback.rs`): update to the recorded rollback config, wait for `started` on the version
//!    that update returned, record `rolled_back` and the image that runs.
//!
//! # Guarantees
//! - No app moves twice for one rollout: `moving` is recorded before the update; a resumed move
//!   finds the machine already on the target config and sends nothing, adopting its version.
//! - Checks of the previous version never count: every verdict compares the machine's version with
//!   the one the update returned.
//! - A refused update (4xx other than 409/429) is a failure of the app on the target; a 409 (the
//!   machine changed under us), 429 or 5xx is retried by a later pass with the app still `moving`.
//!
//! # Assumptions
//! - The rollback point's config holds no secret values (`config.env` never does, DESIGN §3).
//!
//! # Caveats
//! - A move gives its executor slot back once Fly accepted the update: recording its version
//!   and the verdict's short wait hold none (a crash between the two resumes as the guarantees
//!   above say: the machine is found on the target config and its version adopted). A failure
//!   found in that wait is rolled back at once, outside the slot (the user is down; the rollback
//!   must not queue behind the wave).
//! - A make-before-break replacement waits for its verdict within the step (rare: region
//!   changes), holding one executor slot meanwhile.
//! - Secrets are app-level on Fly: a rollback restores the config, not the previous secret values.
//! - An app with no rollback point (never seen healthy by this version) is marked `rolled_back`
//!   without a change and left to repair.

use chrono::{DateTime, Utc};
use serde_json::json;
use tracing::{info, warn};
use uuid::Uuid;

use super::converge::{ensure_secrets, reload};
use super::machine_config::{desired_config, matches};
use super::verdict::{self, Verdict, healthy_on};
use super::{Ctx, ExecError, wait};
use crate::db::Event;
use crate::db::rollout::{HealthySpec, RowRolloutState, Running, StepInputs, load_step_inputs};
use crate::failpoint::{self as fp, hit};
use crate::fly::{FlyError, Guest, Machine, UpdateMachineRequest};
use crate::reconcile::desired::{Intent, desired};
use crate::reconcile::plan_rollout::RolloutStep;
use crate::reconcile::recorded::AppRow;
use crate::reconcile::spec::{config_digest, secrets_digest, spec_digest};

pub(super) async fn run(
    ctx: &Ctx,
    row_id: Uuid,
    rollout_id: i64,
    wave: u32,
    step: RolloutStep,
) -> Result<(), ExecError> {
    let inputs = load_step_inputs(ctx.store.pool(), row_id)
        .await?
        .ok_or(ExecError::RowGone)?;
    tracing::Span::current().record("app", inputs.row.fly_app_name.as_str());
    // Planned from a read of the whole fleet, maybe a while ago: a user downgraded or paused
    // since is not moved, checked or rolled back by it.
    let (intents, _) = desired(&[inputs.facts()], &ctx.wanted.policy);
    if intents.get(&inputs.row.user_id).map(|i| i.intent) != Some(Intent::Present) {
        return Err(ExecError::NoLongerFits);
    }
    let StepInputs { row, progress, .. } = inputs;
    let mine = progress.rollout_id == Some(rollout_id);
    let in_flight = mine
        && matches!(
            progress.rollout_state.as_deref(),
            Some("moving" | "soaking")
        );
    let version = progress.rollout_machine_version.clone().filter(|_| mine);
    let at = |s| (rollout_id, wave, s);
    if step == RolloutStep::Back {
        // A failed app goes back whatever its machine's fate: down, gone or duplicated.
        return super::rollback::roll_back(ctx, &row, at(RowRolloutState::RolledBack)).await;
    }
    let machine_id = match row.machine_id.clone() {
        Some(id) => id,
        // A machine that vanished during its move is a failure of the spec it was moved to.
        None if in_flight => {
            return fail(
                ctx,
                &row,
                at(RowRolloutState::Failed),
                "machine vanished on the new spec",
            )
            .await;
        }
        // Not yet moved: the planner repairs it before any wave may take it.
        None => {
            return Err(ExecError::StillWaiting(
                "no machine to move; repaired first",
            ));
        }
    };
    match step {
        RolloutStep::Move => {
            let moving = mine && progress.rollout_state.as_deref() == Some("moving");
            let since = progress.rollout_state_at.filter(|_| moving);
            if let (true, Some(v1)) = (moving, version.as_deref()) {
                // The update went out (its version is recorded): only the verdict is owed, a
                // wait that needs no slot.
                ctx.slot.release();
                return judge(ctx, &row, &machine_id, Some(v1), since, &at).await;
            }
            move_app(ctx, &row, &machine_id, moving, version, since, at).await
        }
        RolloutStep::Check => {
            let Some(m) = get_in_flight(ctx, &row, &machine_id).await? else {
                let why = "machine vanished on the new spec";
                return fail(ctx, &row, at(RowRolloutState::Failed), why).await;
            };
            if !healthy_on(&m, version.as_deref()) {
                let why = verdict::describe(&m, version.as_deref());
                return fail(ctx, &row, at(RowRolloutState::Failed), &why).await;
            }
            Ok(())
        }
        RolloutStep::Settle => {
            // The soak's last look: what becomes the rollback point must be healthy now, on the
            // version the move made, or a later failure would roll back onto a broken spec.
            let Some(m) = get_in_flight(ctx, &row, &machine_id).await? else {
                let why = "machine vanished on the new spec";
                return fail(ctx, &row, at(RowRolloutState::Failed), why).await;
            };
            if !healthy_on(&m, version.as_deref()) {
                let why = verdict::describe(&m, version.as_deref());
                return fail(ctx, &row, at(RowRolloutState::Failed), &why).await;
            }
            let digest = spec_digest(&ctx.spec);
            let image = ctx.spec.image.clone();
            let spec = rollback_point(&m);
            let healthy = HealthySpec {
                spec_digest: &digest,
                image: &image,
                spec: &spec,
                image_digest: m.image_ref.as_ref().and_then(|r| r.digest.as_deref()),
            };
            let ev = Event::new(
                "provision_completed",
                json!({"operation": "rollout", "wave": wave, "image": image}),
            );
            ctx.store
                .record_settled(row.id, rollout_id, wave, &healthy, &[ev])
                .await?;
            info!(wave, "rollout: app soaked healthy on the target");
            Ok(())
        }
        RolloutStep::Back => unreachable!("handled before the machine is looked up"),
    }
}

pub(super) type At = (i64, u32, RowRolloutState);

/// How long after its update a moved machine is first looked at.
const FIRST_LOOK: std::time::Duration = std::time::Duration::from_millis(50);

async fn move_app(
    ctx: &Ctx,
    row: &AppRow,
    machine_id: &str,
    resumed: bool,
    recorded_version: Option<String>,
    since: Option<DateTime<Utc>>,
    at: impl Fn(RowRolloutState) -> At,
) -> Result<(), ExecError> {
    let image = ctx.spec.image.clone();
    let current = get(ctx, row, machine_id).await?;
    if !resumed {
        // The spec the app runs healthily now is what a failure goes back to.
        let healthy_now = row.health_status.as_deref() == Some("healthy") && current.is_healthy();
        let old_image = current.config.as_ref().map(|c| c.image.clone());
        let point = healthy_now.then(|| rollback_point(&current));
        let rollback = point
            .as_ref()
            .map(|p| (old_image.as_deref().unwrap_or_default(), p));
        let (id, wave, _) = at(RowRolloutState::Moving);
        let ev = Event::new(
            "provision_started",
            json!({"operation": "rollout", "wave": wave, "image": image}),
        );
        ctx.store
            .begin_move(row.id, id, wave, rollback, &[ev])
            .await?;
        hit(fp::ROLLOUT_MOVING_RECORDED).await;
    }
    // The row is read again only when the secrets step wrote it (the version the update waits for).
    let secrets_touched =
        row.secrets_digest.as_deref() != Some(secrets_digest(&ctx.spec.secrets).as_str());
    let secrets_written = ensure_secrets(ctx, row).await?;
    let row = if secrets_touched {
        reload(ctx, row.id).await?
    } else {
        row.clone()
    };
    if current.region != ctx.spec.region {
        return super::replace::move_region(ctx, &row, current, &at).await;
    }
    let base = current.config.clone().unwrap_or_default();
    let op = row
        .machine_op_id
        .clone()
        .unwrap_or_else(|| current.id.clone());
    let desired = desired_config(base.clone(), &ctx.spec, &image, row.user_id, &op);
    let secrets_version = row
        .secrets_version
        .and_then(|v| u64::try_from(v).ok())
        .filter(|v| *v > 0);
    // A machine booted before the secrets it must see needs the update even with an equal config.
    let secrets_stale = secrets_written || row.config_digest.is_none();
    let v1 = if matches(&base, &desired) && !secrets_stale {
        // Already on the target: a move resumed after its update, or nothing to change.
        recorded_version.or(current.version.clone())
    } else {
        let req = UpdateMachineRequest {
            config: desired,
            current_version: current.version.clone(),
            min_secrets_version: secrets_version,
            ..Default::default()
        };
        hit(fp::UPDATE_MACHINE_BEFORE).await;
        let updated = match ctx
            .fly
            .update_machine(&row.fly_app_name, machine_id, &req)
            .await
        {
            Ok(m) => m,
            // 409/412 (the machine changed: re-read next pass), 429, 5xx: retried, still moving.
            // Capacity, like any other refusal, is a verdict on the target.
            Err(e) if e.is_transient() && !matches!(e, FlyError::InsufficientCapacity { .. }) => {
                return Err(e.into());
            }
            Err(e) => {
                let why = format!("update refused: {}", e.kind());
                return fail(ctx, &row, at(RowRolloutState::Failed), &why).await;
            }
        };
        hit(fp::UPDATE_MACHINE_AFTER_CALL).await;
        updated.version.clone()
    };
    // Fly has the update: what is left is recording its version and waiting for the boot and
    // the checks, which write nothing to Fly. The slot goes to the wave's next move meanwhile, so
    // a wave's updates go out at the pace of Fly's answers, not of its machines' boots.
    ctx.slot.release();
    let digest = config_digest(&ctx.spec);
    let (id, wave, _) = at(RowRolloutState::Moving);
    ctx.store
        .record_moved(
            row.id,
            id,
            wave,
            v1.as_deref(),
            &running(&image, &digest, &current.region, &desired_guest(ctx)),
        )
        .await?;
    judge(ctx, &row, machine_id, v1.as_deref(), since, &at).await
}

/// The verdict on a moving app, from the machine's state on the version the update returned
/// (`verdict::judge`): healthy → `soaking`; failed, or not healthy within the start and health
/// timeouts of the move (counted from `moving` on the database clock) → `failed`; else still
/// moving. A vanished machine is a failure of the spec; a transient Fly error is no verdict.
async fn judge(
    ctx: &Ctx,
    row: &AppRow,
    machine_id: &str,
    version: Option<&str>,
    since: Option<DateTime<Utc>>,
    at: &impl Fn(RowRolloutState) -> At,
) -> Result<(), ExecError> {
    let limit = ctx.timeouts.machine_started + ctx.timeouts.healthy;
    // How long the move has run and how much of its budget is left. No recorded start: the
    // update went out just now, so nothing has run and all is left, with no need to ask the
    // database's clock (a round trip for every move of a wave, on the way to its soak).
    let fresh = since.is_none();
    let (before, left) = match since {
        None => (std::time::Duration::ZERO, limit),
        Some(since) => {
            let now = crate::db::now(ctx.store.pool()).await?;
            let deadline = since + chrono::Duration::from_std(limit).unwrap_or_default();
            (
                (now - since).to_std().unwrap_or_default(),
                (deadline - now).to_std().unwrap_or_default(),
            )
        }
    };
    if fresh {
        // Fly replaces the machine for an update, never at once: a look right after it could
        // only say "not yet". The first look waits a moment instead.
        tokio::time::sleep(FIRST_LOOK.min(left)).await;
    }
    let started = tokio::time::Instant::now();
    let outcome = wait::until(
        left.min(ctx.timeouts.rollout_look),
        "the new version",
        || async {
            let elapsed = before + started.elapsed();
            match ctx.fly.get_machine(&row.fly_app_name, machine_id).await {
                Ok(m) => Ok(match verdict::judge(&m, version, elapsed) {
                    Verdict::Healthy => Some(Ok(())),
                    Verdict::Failed(why) => Some(Err(why)),
                    Verdict::Pending => None,
                }),
                Err(FlyError::NotFound { .. }) => {
                    Ok(Some(Err("machine vanished on the new spec".to_string())))
                }
                Err(e) if e.is_transient() => Ok(None),
                Err(e) => Err(e.into()),
            }
        },
    )
    .await;
    let outcome = match outcome {
        Ok(v) => v,
        Err(ExecError::StillWaiting(_)) if left > ctx.timeouts.rollout_look => return Ok(()),
        Err(ExecError::StillWaiting(_)) => {
            let Some(m) = get_in_flight(ctx, row, machine_id).await? else {
                let why = "machine vanished on the new spec";
                return fail(ctx, row, at(RowRolloutState::Failed), why).await;
            };
            Err(format!(
                "not healthy within {}s: {}",
                limit.as_secs(),
                verdict::describe(&m, version)
            ))
        }
        Err(e) => return Err(e),
    };
    hit(fp::ROLLOUT_VERDICT_BEFORE_RECORD).await;
    match outcome {
        Ok(()) => {
            let (id, wave, _) = at(RowRolloutState::Soaking);
            ctx.store
                .record_soaking(row.id, id, wave, &passed_event(row, machine_id))
                .await?;
            info!(
                wave,
                version = version.unwrap_or(""),
                "rollout: healthy on the new version; soaking"
            );
            Ok(())
        }
        Err(why) => fail(ctx, row, at(RowRolloutState::Failed), &why).await,
    }
}

/// Record the app `failed` on the target, then roll it back at once: every failed app goes back
/// (halted or not), and its user is down until it does, so the rollback does not wait for the next
/// pass. A rollback that fails on a Fly error leaves the app `failed`; the planner's `Back` step
/// retries it.
pub(super) async fn fail(ctx: &Ctx, row: &AppRow, at: At, why: &str) -> Result<(), ExecError> {
    warn!(reason = %why, wave = at.1, "rollout: app failed on the target");
    set_state(ctx, row, at, None).await?;
    let ev = Event::new(
        "health_check_failed",
        json!({"operation": "rollout", "wave": at.1, "reason": why}),
    );
    ctx.store.record_health(row.id, false, &[ev]).await?;
    let row = reload(ctx, row.id).await?;
    let (id, wave, _) = at;
    super::rollback::roll_back(ctx, &row, (id, wave, RowRolloutState::RolledBack)).await
}

pub(super) async fn set_state(
    ctx: &Ctx,
    row: &AppRow,
    at: At,
    version: Option<&str>,
) -> Result<(), ExecError> {
    let now = crate::db::now(ctx.store.pool()).await?;
    let (id, wave, state) = at;
    ctx.store
        .set_app_rollout_state(row.id, id, wave, state, now, version)
        .await?;
    Ok(())
}

pub(super) async fn get(ctx: &Ctx, row: &AppRow, machine_id: &str) -> Result<Machine, ExecError> {
    match ctx.fly.get_machine(&row.fly_app_name, machine_id).await {
        Ok(m) => Ok(m),
        Err(FlyError::NotFound { .. }) => {
            ctx.store.clear_machine(row.id).await?;
            Err(ExecError::StillWaiting(
                "machine vanished; repaired next pass",
            ))
        }
        Err(e) => Err(e.into()),
    }
}

/// The machine of an app in flight, or `None` when Fly no longer has it (the row forgets it).
async fn get_in_flight(
    ctx: &Ctx,
    row: &AppRow,
    machine_id: &str,
) -> Result<Option<Machine>, ExecError> {
    match ctx.fly.get_machine(&row.fly_app_name, machine_id).await {
        Ok(m) if m.state.is_gone() => Ok(None),
        Ok(m) => Ok(Some(m)),
        Err(FlyError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub(super) fn passed_event(row: &AppRow, machine_id: &str) -> Vec<Event> {
    if row.health_status.as_deref() == Some("healthy") {
        return vec![];
    }
    vec![Event::new(
        "health_check_passed",
        json!({"machine_id": machine_id}),
    )]
}

/// The guest every machine of the spec runs with.
pub(super) fn desired_guest(ctx: &Ctx) -> Guest {
    Guest {
        cpus: Some(ctx.spec.cpus),
        memory_mb: Some(ctx.spec.memory_mb),
        ..Default::default()
    }
}

/// The row's record of what runs: the config applied, where, and at what size.
pub(super) fn running<'a>(
    image: &'a str,
    digest: &'a str,
    region: &'a str,
    guest: &Guest,
) -> Running<'a> {
    Running {
        image,
        config_digest: digest,
        region,
        cpus: guest.cpus.unwrap_or(1),
        memory_mb: guest.memory_mb.unwrap_or(256),
    }
}

/// What a rollback restores: the region and the whole machine config (no secret values in it).
pub(super) fn rollback_point(m: &Machine) -> serde_json::Value {
    json!({"region": m.region, "config": m.config})
}
