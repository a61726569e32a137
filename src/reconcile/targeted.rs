//! Reconcile one user, at once, outside the pass: what a NOTIFY triggers through
//! the [`super::queue`].
//!
//! # Expected flow
//! 1. Read only this user's facts and row (indexed lookups), the breaker state and the database
//!    clock; take the observed Fly state of this user's apps from the [`super::cache`] as it is
//!    (no Fly call once the term's first full list is done, no copy of the fleet).
//! 2. Plan with the pure planner over this user alone.
//! 3. Run the user's converge, or the DB-only grace bookkeeping (mark unwanted / cancel), at once.
//!
//! # Guarantees
//! - Nothing is deleted here: deprovisions and orphan deletions are left to the full pass, where
//!   the blast-radius breaker sees every planned deletion of the fleet at once (invariant 6).
//! - The user is never worked on by a pass and a targeted run at the same time: both claim it in
//!   the shared [`super::queue::WorkQueue`].
//!
//! # Caveats
//! - Probes and orphan bookkeeping stay with the full pass (they need the whole fleet's view).

use tracing::{Instrument, info, info_span, warn};
use uuid::Uuid;

use super::desired::desired;
use super::execute::{self, Ctx, Outcome};
use super::pass::{PassConfig, PassError, plan_settings};
use super::plan::{Action, PlanInput, plan};
use crate::db::{apps, breaker};
use crate::metrics::ActionKind;

/// The user an action belongs to (orphan bookkeeping belongs to none).
pub fn action_user(action: &Action) -> Option<Uuid> {
    match action {
        Action::Converge { user_id, .. }
        | Action::MarkUnwanted { user_id, .. }
        | Action::CancelDeprovision { user_id, .. }
        | Action::Deprovision { user_id, .. }
        | Action::Rollout { user_id, .. }
        | Action::Repair { user_id, .. } => Some(*user_id),
        Action::SyncOrphans { .. } | Action::DeleteOrphan { .. } => None,
    }
}

/// The actions a targeted run may take: the user's own, none that deletes anything.
fn allowed(action: &Action, user: Uuid) -> bool {
    match action {
        Action::Converge { user_id, .. }
        | Action::MarkUnwanted { user_id, .. }
        | Action::CancelDeprovision { user_id, .. } => *user_id == user,
        // Rollout steps and repairs need the whole fleet's picture (waves, the per-pass repair
        // bound): they stay with the interval pass.
        Action::Deprovision { .. }
        | Action::Rollout { .. }
        | Action::Repair { .. }
        | Action::SyncOrphans { .. }
        | Action::DeleteOrphan { .. } => false,
    }
}

/// Plan and act for `user` alone. The caller holds the user's claim in the work queue.
pub async fn run_user(
    ctx: &Ctx,
    cfg: &PassConfig,
    user: Uuid,
) -> Result<Vec<(ActionKind, Outcome)>, PassError> {
    let span = info_span!("user_run", user_id = %user, term = ctx.store.term());
    async move {
        let pool = ctx.store.pool();
        let facts: Vec<_> = apps::load_desired_facts_for_user(pool, user)
            .await?
            .into_iter()
            .collect();
        let rows: Vec<_> = apps::load_row_for_user(pool, user)
            .await?
            .into_iter()
            .collect();
        let breaker_state = breaker::load_state(pool).await?;
        let now = crate::db::now(pool).await?;
        // Only this user's apps: the name its row records and the one a first converge takes
        // (what the planner looks up for one user), so a NOTIFY costs the same at any fleet size.
        let mut names: Vec<String> = rows.iter().map(|r| r.fly_app_name.clone()).collect();
        names.push(super::naming::candidate(&ctx.prefix, user, 0));
        let observed = ctx
            .observed
            .snapshot_or_observe(
                &ctx.fly,
                &ctx.spec.org_slug,
                &ctx.prefix,
                ctx.store.term(),
                &names,
            )
            .await?;
        let (desired, _) = desired(&facts, &cfg.policy);
        let settings = plan_settings(ctx, cfg);
        let no_orphans = Default::default();
        // The rollout decides which image a new user gets and keeps drifted apps in their waves
        // (their steps are not this run's to take): the rollout record and this user's progress
        // only. Health state only feeds probes and repairs, which stay with the interval pass.
        let rollout = super::pass_rollout::load_rollout_for_user(ctx, cfg, user).await?;
        let no_health = Default::default();
        let planned = plan(&PlanInput {
            now,
            settings: &settings,
            desired: &desired,
            rows: &rows,
            observed: &observed,
            orphans_first_seen: &no_orphans,
            recent_deletions: &breaker_state.recent,
            held_deletions: &breaker_state.held_map(),
            rollout: &rollout,
            health: &no_health,
        });
        let mut outcomes = Vec::new();
        for action in planned.actions.iter().filter(|a| allowed(a, user)) {
            let outcome = execute::run(ctx, action).await;
            let fenced = outcome == Outcome::Fenced;
            outcomes.push((action.label(), outcome));
            if fenced {
                warn!("lease lost during a targeted run");
                break;
            }
        }
        info!(actions = outcomes.len(), "targeted run finished");
        Ok(outcomes)
    }
    .instrument(span)
    .await
}
