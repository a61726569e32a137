//! Executors: each performs one planned action idempotently, recording progress in the row before
//! and after every Fly call, so a crash at any instant resumes from the database and Fly.
//!
//! Failures become per-user backoff stored in the row (invariant 7); a lost lease (`Fenced`) stops
//! the caller at once.

mod app;
mod converge;
mod deprovision;
pub(crate) mod health;
mod machine;
pub(crate) mod machine_config;
pub(crate) mod probe;

pub use machine_config::desired_config;
mod repair;
mod replace;
mod rollback;
mod rollout;
mod verdict;
mod wait;

use rand::Rng;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{Instrument, info, info_span, warn};
use uuid::Uuid;

use super::cache::ObserveCache;
use super::plan::{Action, ConvergeReason};
use super::queue::WorkQueue;
use super::recorded::RowStatus;
use super::spec::AppSpec;
use crate::db::{Event, Store, StoreError};
use crate::fly::{FlyClient, FlyError};
use crate::metrics::{ActionOutcome, FlyErrorKind};
pub use crate::model::desired::Wanted;

/// How long an executor waits on Fly's asynchronous steps before leaving the rest to a later pass.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// Post-create window in which a new app answers 404 (REFERENCE §7).
    pub app_visible: Duration,
    pub machine_started: Duration,
    /// From `started` to all checks passing.
    pub healthy: Duration,
    /// A started machine whose API reports no check results at all for this long is accepted.
    pub checks_appear: Duration,
    pub machine_stopped: Duration,
    /// Async app deletion (202) until the app answers 404.
    pub app_gone: Duration,
    /// How long to keep looking for a machine whose create answer was lost before creating another.
    pub list_lag: Duration,
    /// Pause before asking again when an app answers 404 where its absence would end something
    /// (a deprovision): flaps sometimes says "not found" for apps that exist (REFERENCE §7).
    pub not_found_confirm: Duration,
    /// How long one pass waits for a moving app's verdict before leaving it to the next pass. It
    /// holds no slot, but the pass waits for it: short, so a slow boot does not keep the rest of
    /// the fleet's work (a deletion due, a repair) waiting for the next pass.
    pub rollout_look: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            app_visible: Duration::from_secs(60),
            machine_started: Duration::from_secs(120),
            healthy: Duration::from_secs(120),
            checks_appear: Duration::from_secs(20),
            machine_stopped: Duration::from_secs(30),
            app_gone: Duration::from_secs(30),
            list_lag: Duration::from_secs(3),
            not_found_confirm: Duration::from_secs(2),
            rollout_look: Duration::from_secs(2),
        }
    }
}

/// Everything an executor needs; cheap to clone into tasks.
#[derive(Clone)]
pub struct Ctx {
    pub fly: FlyClient,
    pub store: Store,
    pub spec: Arc<AppSpec>,
    pub prefix: String,
    pub timeouts: Timeouts,
    /// Per-user backoff bounds: first retry after `backoff_base`, doubling up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Observed Fly state kept between passes; executors write what they learn into it.
    pub observed: Arc<ObserveCache>,
    /// Users in progress: a pass's action and a targeted run never work on one user at once.
    pub users: Arc<WorkQueue>,
    /// Each app's own health endpoint, `{app}` standing for its name (`HEALTH_URL_TEMPLATE`).
    pub health_url_template: Arc<str>,
    /// The pass's concurrency slot this action holds (none outside a full pass).
    pub slot: Slot,
    /// What the write that starts a deprovision re-checks (see [`Wanted`]).
    pub wanted: Wanted,
}

/// One of a full pass's `MAX_CONCURRENCY` slots, held by the action it was given to
/// (`pass::execute_plan`). A deletion gives it back as soon as Fly accepted its `DELETE`: what is
/// left, spaced `GET`s until the app answers 404 twice, writes nothing to Fly, and holding the slot
/// through that wait made the waits, not Fly's deletion limit, pace a mass deprovision. Outside a
/// pass (targeted runs, tests) it holds nothing and `release` does nothing. Dropping the last clone
/// gives the slot back too.
#[derive(Clone, Default)]
pub struct Slot(Option<Arc<Mutex<Option<OwnedSemaphorePermit>>>>);

impl Slot {
    pub(crate) fn holding(permit: OwnedSemaphorePermit) -> Self {
        Slot(Some(Arc::new(Mutex::new(Some(permit)))))
    }

    /// Give the slot back now; later calls do nothing.
    pub(crate) fn release(&self) {
        if let Some(held) = &self.0 {
            let permit = held.lock().unwrap_or_else(|e| e.into_inner()).take();
            drop(permit);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Fly(#[from] FlyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Fly has not finished an asynchronous step (app propagation, machine start, checks, deletion)
    /// within the executor's patience; a later pass picks it up from where it is.
    #[error("still waiting: {0}")]
    StillWaiting(&'static str),
    /// The machine serves on the new config but its checks fail.
    #[error("unhealthy: {0}")]
    Unhealthy(String),
    /// Something only an operator can resolve (e.g. every candidate name is held elsewhere).
    #[error("needs an operator: {0}")]
    NeedsHuman(String),
    /// The machine was destroyed while the converge waited on it (by someone else, or a failed
    /// launch that ended `destroyed`); the row forgot it and the next pass makes a new one.
    #[error("machine destroyed meanwhile")]
    MachineGone,
    /// The row disappeared or is not in a state this action applies to; the next pass re-plans.
    #[error("row not found or changed")]
    RowGone,
    /// The planned action no longer fits its user, read afresh before any write (a downgrade, a
    /// fresh `paused` override): nothing was done, and nothing is owed a retry.
    #[error("the action no longer fits the user")]
    NoLongerFits,
}

impl From<sqlx::Error> for ExecError {
    fn from(e: sqlx::Error) -> Self {
        ExecError::Store(StoreError::Sql(e))
    }
}

impl ExecError {
    /// Fixed-cardinality label for the row, metrics and logs.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            ExecError::Fly(e) => e.kind(),
            ExecError::Store(StoreError::Fenced) => "fenced",
            ExecError::Store(_) => "database",
            ExecError::StillWaiting(_) => "still_waiting",
            ExecError::Unhealthy(_) => "unhealthy_after_update",
            ExecError::NeedsHuman(_) => "needs_operator",
            ExecError::MachineGone => "machine_gone",
            ExecError::RowGone => "row_changed",
            ExecError::NoLongerFits => "stale",
        }
    }

    fn request_id(&self) -> Option<&str> {
        match self {
            ExecError::Fly(e) => e.request_id(),
            _ => None,
        }
    }
}

/// How one action ended; exactly one of these per action, so "failed and requeued" cannot both be
/// reported by accident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// Failed; backoff recorded in the row, a later pass retries. `fly` is the class of Fly's
    /// answer when it (rather than the database or our own patience) was the cause.
    Retry {
        kind: &'static str,
        fly: Option<FlyErrorKind>,
    },
    /// This replica lost the lease: stop acting.
    Fenced,
    /// Not carried out: the action no longer fitted its user, read afresh under its claim.
    Dropped,
}

impl Outcome {
    pub(crate) fn label(self) -> ActionOutcome {
        match self {
            Outcome::Done => ActionOutcome::Ok,
            Outcome::Retry { .. } => ActionOutcome::Retry,
            Outcome::Fenced => ActionOutcome::Fenced,
            Outcome::Dropped => ActionOutcome::Stale,
        }
    }
}

/// The metric class of a Fly error that failed an action; `None` for a write the gate refused,
/// which is a lost lease (a fenced action), not an answer from Fly. The match is exhaustive so a
/// new kind of Fly error gets a label on purpose.
fn fly_error_label(e: &FlyError) -> Option<FlyErrorKind> {
    use FlyError::*;
    Some(match e {
        Unauthorized { .. } => FlyErrorKind::Unauthorized,
        Forbidden { .. } => FlyErrorKind::Forbidden,
        NotFound { .. } => FlyErrorKind::NotFound,
        Timeout { .. } => FlyErrorKind::Timeout,
        Conflict { .. } => FlyErrorKind::Conflict,
        PreconditionFailed { .. } => FlyErrorKind::PreconditionFailed,
        NameTaken { .. } => FlyErrorKind::NameTaken,
        InsufficientCapacity { .. } => FlyErrorKind::InsufficientCapacity,
        Invalid { .. } => FlyErrorKind::Invalid,
        RateLimited { .. } => FlyErrorKind::RateLimited,
        Server { .. } => FlyErrorKind::Server,
        Transport { .. } => FlyErrorKind::Transport,
        Decode { .. } => FlyErrorKind::Decode,
        BodyTooLarge { .. } => FlyErrorKind::BodyTooLarge,
        Incomplete { .. } => FlyErrorKind::Incomplete,
        UnexpectedStatus { .. } => FlyErrorKind::UnexpectedStatus,
        Config { .. } => FlyErrorKind::Config,
        Deposed { .. } => return None,
    })
}

/// Perform one action inside its own span (`user_id`, `app`).
pub async fn run(ctx: &Ctx, action: &Action) -> Outcome {
    let (user, row_id) = match action {
        Action::Converge {
            user_id, row_id, ..
        } => (Some(*user_id), *row_id),
        Action::Rollout {
            user_id, row_id, ..
        }
        | Action::Repair {
            user_id, row_id, ..
        } => (Some(*user_id), Some(*row_id)),
        Action::MarkUnwanted { user_id, row_id }
        | Action::CancelDeprovision { user_id, row_id }
        | Action::Deprovision {
            user_id, row_id, ..
        } => (Some(*user_id), Some(*row_id)),
        Action::SyncOrphans { .. } | Action::DeleteOrphan { .. } => (None, None),
    };
    let user = user.map(|u| u.to_string()).unwrap_or_default();
    let span = info_span!(
        "action",
        kind = action.kind(),
        user_id = %user,
        app = tracing::field::Empty
    );
    // Converges and probes learn the app name from the row and record it then.
    if let Action::Deprovision { app, .. } | Action::DeleteOrphan { app } = action {
        span.record("app", app.as_str());
    }
    async move {
        let result = dispatch(ctx, action).await;
        match result {
            Ok(()) => Outcome::Done,
            Err(ExecError::NoLongerFits) => {
                info!("planned action no longer fits the user; dropped");
                Outcome::Dropped
            }
            Err(ExecError::Store(StoreError::Fenced))
            | Err(ExecError::Fly(crate::fly::FlyError::Deposed { .. })) => {
                warn!("lease lost mid-action; stopping");
                Outcome::Fenced
            }
            Err(e) => {
                warn!(error = %e, error_kind = e.kind(), fly_request_id = e.request_id(), "action failed");
                match record_failure(ctx, action, row_id, &e).await {
                    Err(StoreError::Fenced) => return Outcome::Fenced,
                    Err(e2) => warn!(error = %e2, "could not record the failure"),
                    Ok(()) => {}
                }
                Outcome::Retry {
                    kind: e.kind(),
                    fly: match &e {
                        ExecError::Fly(f) => fly_error_label(f),
                        _ => None,
                    },
                }
            }
        }
    }
    .instrument(span)
    .await
}

async fn dispatch(ctx: &Ctx, action: &Action) -> Result<(), ExecError> {
    match action {
        Action::Converge {
            user_id,
            row_id,
            reason,
            to,
        } => converge::converge(ctx, *user_id, *row_id, reason, *to).await,
        Action::MarkUnwanted { row_id, .. } => {
            info!("user no longer wanted; deprovision grace starts");
            let ev = Event::new(
                "deprovision_requested",
                serde_json::json!({"grace_started": true}),
            );
            Ok(ctx.store.mark_unwanted(*row_id, &[ev]).await?)
        }
        Action::CancelDeprovision { row_id, .. } => {
            info!("user wanted again within the grace; deprovision cancelled");
            let ev = Event::new(
                "provision_requested",
                serde_json::json!({"cancelled_deprovision": true}),
            );
            Ok(ctx.store.cancel_unwanted(*row_id, &[ev]).await?)
        }
        Action::Deprovision { row_id, .. } => deprovision::deprovision(ctx, *row_id).await,
        Action::Repair { row_id, step, .. } => repair::repair(ctx, *row_id, *step).await,
        Action::Rollout {
            row_id,
            rollout_id,
            wave,
            step,
            ..
        } => rollout::run(ctx, *row_id, *rollout_id, *wave, *step).await,
        Action::SyncOrphans { names } => {
            for name in names {
                warn!(app = %name, "orphan app: managed prefix, no live row owns it");
            }
            Ok(ctx.store.sync_orphans(names).await?)
        }
        Action::DeleteOrphan { app } => deprovision::delete_orphan(ctx, app).await,
    }
}

async fn record_failure(
    ctx: &Ctx,
    action: &Action,
    row_id: Option<Uuid>,
    e: &ExecError,
) -> Result<(), StoreError> {
    let user_id = match action {
        Action::Converge { user_id, .. } => Some(*user_id),
        _ => None,
    };
    // A first provision has no row id in the plan; the row it reserved is found by user.
    let row = match (row_id, user_id) {
        (Some(id), _) => crate::db::apps::load_row(ctx.store.pool(), id).await?,
        (None, Some(user)) => crate::db::load_row_for_user(ctx.store.pool(), user).await?,
        (None, None) => None,
    };
    let Some(row) = row else { return Ok(()) };
    let row_id = row.id;
    let attempt = row.retry_count.unwrap_or(0).max(0) as u32;
    let mut delay = backoff_delay(ctx.backoff_base, ctx.backoff_max, attempt);
    if let ExecError::Fly(FlyError::RateLimited {
        retry_after: Some(ra),
        ..
    }) = e
    {
        delay = delay.max(*ra);
    }
    let message = e.to_string();
    let meta = serde_json::json!({
        "action": action.kind(),
        "error_kind": e.kind(),
        "fly_request_id": e.request_id(),
        "retry_in_s": delay.as_secs(),
    });
    match (action, e) {
        (Action::Deprovision { .. }, _) => {
            let ev = Event::new("deprovision_failed", meta).with_error(message.clone());
            ctx.store
                .mark_failure(
                    row_id,
                    RowStatus::Deprovisioning,
                    e.kind(),
                    &message,
                    delay,
                    &[ev],
                )
                .await
        }
        (_, ExecError::Unhealthy(_)) => {
            let ev = Event::new("health_check_failed", meta).with_error(message.clone());
            ctx.store
                .mark_unhealthy(row_id, e.kind(), &message, delay, &[ev])
                .await
        }
        // DB-only bookkeeping retries next pass on its own; its failure says nothing about the
        // app, so the row is not marked failed. Nor does a repair step's: the next probe judges
        // the app, and the ladder's own clock paces the next step.
        (
            Action::Repair { .. }
            | Action::MarkUnwanted { .. }
            | Action::CancelDeprovision { .. }
            | Action::SyncOrphans { .. },
            _,
        ) => Ok(()),
        // A rollout step's verdicts are recorded by the step; an error (429, 5xx, 409) leaves the
        // app where it was in its wave, serving, with a backoff before the step is resumed.
        (Action::Rollout { .. }, _) => {
            let mut meta = meta;
            meta["still_serving"] = serde_json::Value::Bool(true);
            let ev = Event::new("provision_failed", meta).with_error(message.clone());
            let status = row.status().unwrap_or(RowStatus::Active);
            ctx.store
                .mark_failure(row_id, status, e.kind(), &message, delay, &[ev])
                .await
        }
        (Action::Converge { reason, .. }, _) if still_serving(&row, reason, e) => {
            // A failed roll or repair of an app that keeps serving: `error` tells the Go backend
            // and admins the user has no working app, which is not true. The error kind and the
            // backoff are recorded all the same.
            let mut meta = meta;
            meta["still_serving"] = serde_json::Value::Bool(true);
            let ev = Event::new("provision_failed", meta).with_error(message.clone());
            ctx.store
                .mark_failure(row_id, RowStatus::Active, e.kind(), &message, delay, &[ev])
                .await
        }
        _ => {
            let ev = Event::new("provision_failed", meta).with_error(message.clone());
            ctx.store
                .mark_failure(row_id, RowStatus::Error, e.kind(), &message, delay, &[ev])
                .await
        }
    }
}

/// Whether the user still has a working app while its converge failed: the row was active and
/// healthy, the converge was a change to a running app rather than the repair of a missing or
/// stopped one, and the failure did not take the machine away.
fn still_serving(
    row: &crate::reconcile::recorded::AppRow,
    reason: &ConvergeReason,
    e: &ExecError,
) -> bool {
    !matches!(e, ExecError::MachineGone)
        && row.status() == Some(RowStatus::Active)
        && row.health_status.as_deref() == Some("healthy")
        && !matches!(
            reason,
            ConvergeReason::AppMissing
                | ConvergeReason::MachineMissing
                | ConvergeReason::MachineDown
        )
}

/// Exponential per-user backoff with ±20 % jitter, so a fleet that failed together does not retry
/// in lockstep.
pub(crate) fn backoff_delay(base: Duration, max: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(16));
    let capped = exp.min(max);
    let jitter = rand::rng().random_range(0.8..1.2);
    capped.mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_then_caps() {
        let base = Duration::from_secs(5);
        let max = Duration::from_secs(600);
        let d0 = backoff_delay(base, max, 0);
        let d3 = backoff_delay(base, max, 3);
        let d30 = backoff_delay(base, max, 30);
        assert!(d0 >= Duration::from_secs(4) && d0 <= Duration::from_secs(6));
        assert!(d3 >= Duration::from_secs(32) && d3 <= Duration::from_secs(48));
        assert!(d30 <= Duration::from_secs(720) && d30 >= Duration::from_secs(480));
    }

    #[test]
    fn a_fly_error_is_counted_under_the_kind_the_client_names_it() {
        use crate::fly::{CallInfo, Route};
        let call = || CallInfo::new(Route::GetApp);
        let m = String::new;
        let errors = [
            FlyError::Unauthorized {
                call: call(),
                message: m(),
            },
            FlyError::Forbidden {
                call: call(),
                message: m(),
            },
            FlyError::NotFound {
                call: call(),
                message: m(),
            },
            FlyError::Timeout {
                call: call(),
                message: m(),
            },
            FlyError::Conflict {
                call: call(),
                message: m(),
            },
            FlyError::PreconditionFailed {
                call: call(),
                message: m(),
            },
            FlyError::NameTaken {
                call: call(),
                status: 422,
                message: m(),
            },
            FlyError::InsufficientCapacity {
                call: call(),
                status: 412,
                message: m(),
            },
            FlyError::Invalid {
                call: call(),
                status: 400,
                message: m(),
            },
            FlyError::RateLimited {
                call: call(),
                retry_after: None,
                message: m(),
            },
            FlyError::Server {
                call: call(),
                status: 500,
                message: m(),
            },
            FlyError::Transport {
                call: call(),
                detail: m(),
            },
            FlyError::Decode {
                call: call(),
                status: 200,
                detail: m(),
            },
            FlyError::BodyTooLarge {
                call: call(),
                status: 200,
                limit: 1,
            },
            FlyError::Incomplete {
                call: call(),
                error_regions: vec![],
            },
            FlyError::UnexpectedStatus {
                call: call(),
                status: 302,
            },
            FlyError::Config { message: m() },
        ];
        let labels: Vec<_> = errors.iter().map(|e| fly_error_label(e).unwrap()).collect();
        for (e, label) in errors.iter().zip(&labels) {
            assert_eq!(label.as_str(), e.kind(), "{e:?}");
        }
        assert_eq!(labels, FlyErrorKind::ALL, "each label once, in order");
        assert_eq!(fly_error_label(&FlyError::Deposed { call: call() }), None);
    }
}
