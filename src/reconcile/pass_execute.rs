//! A pass's actions carried out: at most `MAX_CONCURRENCY` at once, each under its user's claim
//! and only if it still fits the user's facts read afresh.

use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{Instrument, error, info, warn};

use super::desired::{Intent, PaidPolicy, desired};
use super::execute::{self, Ctx, Outcome, Slot};
use super::pass::{PassConfig, PassReport};
use super::plan::{Action, Plan, RolloutStep};
use crate::db::apps;
use crate::metrics::{ActionKind, Metrics};

/// Run the actions, at most `max_concurrency` at once. DB-only actions go first so a grace period
/// starts even if Fly is slow. Each action carries its slot in its `Ctx`: a deletion whose `DELETE`
/// Fly accepted gives it back while it only waits for the two spaced 404s, so the slots bound the
/// actions still working on Fly, not those waiting for it; the pass still waits for every task,
/// so a row is soft-deleted within the pass that deleted its app, as before.
pub(super) async fn execute_plan(
    ctx: &Ctx,
    cfg: &PassConfig,
    metrics: &Metrics,
    plan: Plan,
) -> PassReport {
    let sem = Arc::new(Semaphore::new(cfg.max_concurrency.max(1)));
    let mut set = JoinSet::new();
    let mut actions = plan.actions.clone();
    actions.sort_by_key(|a| match a {
        Action::MarkUnwanted { .. }
        | Action::CancelDeprovision { .. }
        | Action::SyncOrphans { .. } => 0,
        Action::Deprovision { .. } | Action::DeleteOrphan { .. } => 1,
        // A wave's moves before the previous wave's last looks: the next wave waits for the last
        // app of this one to soak, and a soak starts only once its move is judged healthy; the
        // looks (check, settle) end nothing another step waits for.
        Action::Rollout {
            step: RolloutStep::Check | RolloutStep::Settle,
            ..
        } => 3,
        Action::Converge { .. } | Action::Rollout { .. } => 2,
        Action::Repair { .. } => 2,
    });
    // The looks at soaking apps start once every move of this pass has its verdict: a wave's
    // soak ends with its last verdict, and looks running beside the moves would slow them down
    // for nothing (they end nothing another step waits for).
    let (moves_tx, mut moves_done) = tokio::sync::mpsc::channel::<()>(1);
    let mut moves_tx = Some(moves_tx);
    for action in actions {
        let look = matches!(
            action,
            Action::Rollout {
                step: RolloutStep::Check | RolloutStep::Settle,
                ..
            }
        );
        if look && let Some(tx) = moves_tx.take() {
            drop(tx);
            while moves_done.recv().await.is_some() {}
        }
        let moving = match &action {
            Action::Rollout {
                step: RolloutStep::Move,
                ..
            } => moves_tx.clone(),
            _ => None,
        };
        let permit = match sem.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => break,
        };
        crate::failpoint::hit(crate::failpoint::PASS_ACTION_BEFORE_CLAIM).await;
        // A user a targeted run is working on is left to it: it reads everything afresh.
        let user = super::targeted::action_user(&action);
        let claim = match user {
            Some(user) => match ctx.users.claim(user) {
                Some(c) => Some(c),
                None => continue,
            },
            None => None,
        };
        let ctx = Ctx {
            slot: Slot::holding(permit),
            ..ctx.clone()
        };
        let policy = cfg.policy.clone();
        set.spawn(
            async move {
                let outcome = match user {
                    Some(user) => match still_fits(&ctx, &policy, &action, user).await {
                        Ok(true) => execute::run(&ctx, &action).await,
                        Ok(false) => {
                            info!(%user, action = action.kind(), "planned action no longer fits the user; dropped");
                            Outcome::Dropped
                        }
                        Err(e) => {
                            warn!(%user, action = action.kind(), error = %e, "could not re-read the user; action left to a later pass");
                            Outcome::Dropped
                        }
                    },
                    None => execute::run(&ctx, &action).await,
                };
                drop(claim);
                ctx.slot.release();
                drop(moving);
                (action.label(), outcome, tokio::time::Instant::now())
            }
            .in_current_span(),
        );
    }
    let mut report = PassReport {
        plan,
        ..Default::default()
    };
    while let Some(res) = set.join_next().await {
        match res {
            Ok((kind, outcome, ended)) => {
                if kind == ActionKind::RolloutMove {
                    report.last_move_done = report.last_move_done.max(Some(ended));
                }
                metrics.record_action(kind, outcome.label());
                if let Outcome::Retry { fly: Some(fly), .. } = outcome {
                    metrics.record_fly_error(fly);
                }
                if outcome == Outcome::Fenced {
                    report.fenced = true;
                    set.abort_all();
                }
                report.outcomes.push((kind, outcome));
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => error!(error = %e, "action task panicked"),
        }
    }
    report
}

/// Whether `action`, planned from a read of the whole fleet that may be minutes old, still fits its
/// user now. Called under the user's claim, right before the action's first write, with the user's
/// own facts re-read by primary key: a converge or repair needs the user wanted (`Present`: a
/// fresh `paused` override or a downgrade drops it), a grace start or a deprovision needs the user
/// unwanted (a re-upgrade or a `present`/`paused` override drops it). A deprovision is left to the
/// write that starts it, which re-checks the grace and the facts in SQL, in one statement with the
/// write; a rollout step to the step, which reads the facts with its row (the same rule).
async fn still_fits(
    ctx: &Ctx,
    policy: &PaidPolicy,
    action: &Action,
    user: uuid::Uuid,
) -> Result<bool, sqlx::Error> {
    let needs = match action {
        Action::Converge { .. } | Action::Repair { .. } | Action::CancelDeprovision { .. } => {
            Intent::Present
        }
        // Judged by the step itself, from the one read it starts with (the row, its progress
        // and the user's facts together): a wave's moves queue for the slots, and each read
        // saved there is one a wave's last move no longer waits for.
        Action::Rollout { .. } => return Ok(true),
        Action::MarkUnwanted { .. } => Intent::Absent,
        // Judged by the fenced write that starts it, in SQL with the grace (see
        // `Store::mark_deprovisioning`); one that already started runs to the end whoever wants the
        // user now (the planner plans it for wanted users too), so the intent alone cannot judge it.
        Action::Deprovision { .. } => return Ok(true),
        Action::SyncOrphans { .. } | Action::DeleteOrphan { .. } => return Ok(true),
    };
    let facts: Vec<_> = apps::load_desired_facts_for_user(ctx.store.pool(), user)
        .await?
        .into_iter()
        .collect();
    let (desired, _) = desired(&facts, policy);
    let now = desired
        .get(&user)
        .map(|i| i.intent)
        .unwrap_or(Intent::Absent);
    Ok(now == needs)
}
