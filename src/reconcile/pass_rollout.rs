//! The pass's rollout bookkeeping: before planning, the current rollout (the configured
//! spec is the target; the leader records a new target) and each row's recorded progress; after
//! planning, the halt, the counts and the gauges. The per-app states are the executors' writes.

use super::execute::Ctx;
use super::pass::{PassConfig, PassError};
use super::plan::Plan;
use super::plan_rollout::RolloutInput;
use super::rollout::{HaltReason, Rollout, Step};
use super::spec::{StoredSpec, spec_digest};
use crate::db::{apps, rollout as rollout_db};
use crate::metrics::{Metrics, RolloutState};
use crate::model::rollout::Tally;

/// The current rollout: the configured spec is the target. `start` (the leader's pass) records a
/// new target in `vyx_fleet.rollout`; a dry run plans against an unstarted one (id 0). Every live
/// row's progress is read.
pub(super) async fn load_rollout(
    ctx: &Ctx,
    cfg: &PassConfig,
    start: bool,
) -> Result<RolloutInput, PassError> {
    load(ctx, cfg, start, None).await
}

/// The current rollout with one user's progress only (a targeted run: indexed, O(1)). Never
/// starts a rollout: that is the full pass's.
pub(super) async fn load_rollout_for_user(
    ctx: &Ctx,
    cfg: &PassConfig,
    user: uuid::Uuid,
) -> Result<RolloutInput, PassError> {
    load(ctx, cfg, false, Some(user)).await
}

async fn load(
    ctx: &Ctx,
    cfg: &PassConfig,
    start: bool,
    user: Option<uuid::Uuid>,
) -> Result<RolloutInput, PassError> {
    let pool = ctx.store.pool();
    let target = spec_digest(&ctx.spec);
    let record = if start {
        let stored = serde_json::to_value(StoredSpec::of(&ctx.spec)).ok();
        match ctx
            .store
            .start_rollout_of(&target, &ctx.spec.image, stored.as_ref())
            .await
        {
            Ok(r) => Some(r),
            Err(apps::StoreError::Sql(e)) => return Err(e.into()),
            // Fenced or raced: plan as a dry run; the executors' fenced writes stop anything.
            Err(_) => None,
        }
    } else {
        rollout_db::load_current(pool)
            .await?
            .filter(|r| r.target_digest == target)
    };
    let recorded = match (&record, user) {
        (None, _) => Default::default(),
        (Some(r), None) => rollout_db::load_recorded(pool, r).await?,
        (Some(r), Some(u)) => rollout_db::load_user_progress(pool, u)
            .await?
            .into_iter()
            .filter(|p| p.rollout_id == Some(r.id))
            .map(|p| (p.row_id, p.state_in(r)))
            .collect(),
    };
    Ok(RolloutInput {
        id: record.as_ref().map_or(0, |r| r.id),
        rollout: record.as_ref().map_or_else(
            || Rollout {
                target: target.clone(),
                halted: None,
                failures_forgiven: 0,
            },
            |r| r.to_rollout(),
        ),
        target_image: ctx.spec.image.clone(),
        settings: cfg.waves,
        recorded,
    })
}

/// `vyx_fleet_rollout_apps{state}` from the wave decision's tally.
pub(super) fn rollout_counts(t: &Tally) -> [(RolloutState, i64); 6] {
    let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
    [
        (RolloutState::Pending, n(t.pending)),
        (RolloutState::Moving, n(t.moving)),
        (RolloutState::Soaking, n(t.soaking)),
        // An app already on the target is as good as one the rollout moved and soaked.
        (RolloutState::Healthy, n(t.healthy + t.already_on_target)),
        (RolloutState::Failed, n(t.failed)),
        (RolloutState::RolledBack, n(t.rolled_back)),
    ]
}

/// Persist what the wave decision found (halt, counts, completion) and feed the gauges. The
/// per-app states are written by the executors, before and after their Fly calls.
pub(super) async fn record_rollout(
    ctx: &Ctx,
    plan: &Plan,
    metrics: &Metrics,
) -> Result<(), apps::StoreError> {
    let Some(r) = &plan.rollout else {
        return Ok(());
    };
    let d = &r.decision;
    let halted = matches!(d.step, Step::Halted { .. });
    metrics.set_rollout(&rollout_counts(&d.tally), halted);
    if r.id == 0 {
        return Ok(());
    }
    if let Step::Halted { halt, newly: true } = &d.step {
        let canary = match halt.reason {
            HaltReason::CanaryFailed { app } => Some(app),
            _ => None,
        };
        let detail = rollout_db::last_failure(ctx.store.pool(), r.id, canary)
            .await
            .map_err(apps::StoreError::Sql)?;
        ctx.store
            .halt_rollout_because(r.id, halt, detail.as_deref())
            .await?;
    }
    ctx.store
        .save_rollout_progress(r.id, &d.tally, d.step == Step::Complete)
        .await
}
