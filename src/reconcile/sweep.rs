//! The interval tick: a sweep whose steady cost follows changes, not fleet size. A full
//! pass reads and plans the whole fleet; a quiet tick needs neither.
//!
//! # Expected flow
//! 1. A full pass ([`run_pass`]) on the first tick of a lease term and then every
//!    `RESYNC_INTERVAL`, in step with the observation cache's full Fly list: the safety net.
//! 2. Every other tick: one delta list through the cache (the managed apps whose machines
//!    changed), then ONE statement ([`worklist`]): the users that may need work, each with a
//!    reason, judged in SQL against the policy and the current spec with the database's clock.
//!    It judges only what changed since the last look (a watermark kept here, taken before each
//!    full pass), the rows whose time came, and the users the last look listed: a quiet tick's
//!    cost inside PostgreSQL follows the changes, not the fleet.
//! 3. Fleet-level work on the list (a deletion due, rollout waves, a repair step, orphans or held
//!    deletions) → a full pass now, unchanged: the blast-radius breaker sees every planned deletion
//!    at once and the rollout its waves. Otherwise each listed user goes into the per-user work
//!    queue ([`super::queue`]) and is reconciled alone ([`super::targeted`]).
//!
//! # Guarantees
//! - A quiet tick on a converged fleet: one Fly list call (the delta), one database statement
//!   (the controller adds the last-pass heartbeat write), nobody queued.
//! - Nothing a full pass would do is lost: the work list is a superset of the users the planner
//!   gives a per-user action (`tests/sweep_contract.rs` checks it over varied states); whatever
//!   it could still miss is found by the full pass within `RESYNC_INTERVAL`.
//!
//! # Caveats
//! - Changes no machine shows and no row records (an app deleted by hand, a new orphan without
//!   machines) wait for the resync, as they did for the cache.
//! - Health probes are the full pass's (or the background prober's); a quiet tick probes nothing.

use std::time::Duration;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::execute::Ctx;
use super::pass::{PassConfig, PassError, PassReport, PlanAt, run_pass_at};
use super::rollout::Step;
use super::spec::{config_digest, secrets_digest, spec_digest};
use crate::db::worklist::{self, Entry, Watermark, WorkList, WorkListParams};
use crate::metrics::{Metrics, PassOutcome};

/// When the last full pass of this lease term ran; a new term starts with `Sweeper::default()`.
///
/// # Assumptions
/// - Between full passes, the work list's reasons cover what the planner acts on (the contract
///   test); a reason it lacks delays that work until the next full pass, never loses it.
#[derive(Debug, Default)]
pub struct Sweeper {
    last_full: Option<Instant>,
    /// Where the next look at the work list starts; `None` until this term has looked once.
    since: Option<Watermark>,
    /// Users the last look listed: judged again by the next, so work a run left undone without
    /// a write (a transient Fly error) is not forgotten until the resync.
    carry: Vec<uuid::Uuid>,
    /// The next tick's full pass plans no sooner than this (the loop's early wake for a soak end).
    plan_at: Option<PlanAt>,
}

/// What one tick did.
#[derive(Debug)]
pub enum Tick {
    /// A full pass ran (why, and its report).
    Full {
        why: &'static str,
        report: Box<PassReport>,
    },
    /// The work list had per-user work only: these users were queued.
    Queued { users: usize },
}

impl Tick {
    /// How soon the next tick should come if earlier than the interval: a rollout's pace is its
    /// waves (update, boot, soak), and a wave that waits a whole interval for the pass that starts
    /// the next one (or notices its soak end) loses up to an interval per wave. A wave just started
    /// (its verdicts taken in this pass) → tick when its `soak` ends; soaking → at the soak's end.
    /// Never sooner than [`MIN_WAKE`], so a step that cannot progress (apps in backoff) does not
    /// spin full passes. A hint: the pass judges every soak by the database clock itself.
    pub(crate) fn wake_hint(&self, soak: Duration) -> Option<Duration> {
        let Tick::Full { report, .. } = self else {
            return None;
        };
        let decision = &report.plan.rollout.as_ref()?.decision;
        // Soak ends are database times: counted from the pass's read of that clock, so a skew
        // between this host and the database neither wakes the loop early nor late.
        let now = report.clock.map_or_else(chrono::Utc::now, |c| c.now());
        let hint = match &decision.step {
            // Every app of the wave started its soak before its move ended, so all have soaked a
            // soak after the last move (the settles after it end nothing the next wave waits for).
            Step::Advance { .. } => Some(
                (soak + WAKE_SLACK).saturating_sub(
                    report
                        .last_move_done
                        .map_or(Duration::ZERO, |t| t.elapsed()),
                ),
            ),
            Step::Wait { until: Some(t) } => match (*t - now).to_std() {
                Ok(left) if !left.is_zero() => Some(left + WAKE_SLACK),
                // Already past: apps that could not be settled; never spin passes on them.
                _ => Some(MIN_WAKE),
            },
            Step::Wait { until: None } | Step::Complete | Step::Halted { .. } => None,
        };
        // A moving app is judged a little each pass: its verdict (a crash, checks critical past
        // their grace) must not wait for a soak or an interval while its user is down.
        let moving = decision.tally.moving > 0 || matches!(decision.step, Step::Advance { .. });
        match (hint, moving) {
            (Some(h), true) => Some(h.min(MOVING_POLL)),
            (None, true) => Some(MOVING_POLL),
            (h, false) => h,
        }
    }
}

/// How often passes come while an app is moving: its verdict is read each pass.
const MOVING_POLL: Duration = Duration::from_secs(10);

/// Margin after a soak's end. Only timer granularity needs it: the soak ends are counted on the
/// database's clock, and every wave's gap includes it, so it is kept short (500 ms over 57 waves
/// is 570 s of Fly time at the bench's scale, a sixth of a 10,000-app rollout's bound).
const WAKE_SLACK: Duration = Duration::from_millis(50);
/// The soonest an early tick comes after the last one.
const MIN_WAKE: Duration = Duration::from_secs(1);

impl Sweeper {
    /// The next tick, if it runs a full pass, plans no sooner than `at` (see [`PlanAt`]).
    pub(crate) fn plan_at(&mut self, at: Option<PlanAt>) {
        self.plan_at = at;
    }

    /// One interval tick under the current lease term.
    pub async fn tick(
        &mut self,
        ctx: &Ctx,
        cfg: &PassConfig,
        metrics: &Metrics,
    ) -> Result<Tick, PassError> {
        let plan_at = self.plan_at.take();
        let resync = ctx.observed.resync_interval();
        let due = self
            .last_full
            .is_none_or(|t| t.elapsed() >= resync.max(Duration::from_millis(1)));
        if due {
            return self.full(ctx, cfg, metrics, "resync", plan_at).await;
        }
        // The wake for a rollout's next step: while a rollout is under way the work list names
        // it (fleet-level), so its look would only read Fly and the database once more before
        // the pass reads them again, a read the wave waits for. Other ticks meanwhile (the
        // interval's, a NOTIFY's) look first: their users may need no full pass.
        if plan_at.is_some_and(|p| p.is_this_tick(Instant::now())) {
            return self
                .full(ctx, cfg, metrics, "rollout step due", plan_at)
                .await;
        }
        let started = Instant::now();
        let found = match self.find(ctx, cfg).await {
            Ok(f) => f,
            Err(e) => {
                warn!(error = %e, "sweep failed; the next tick tries again");
                metrics.record_pass(PassOutcome::Error, started.elapsed());
                return Err(e);
            }
        };
        let (list, changed) = match found {
            Some(f) => f,
            None => return self.full(ctx, cfg, metrics, "full list due", plan_at).await,
        };
        if let Some(e) = list.entries.iter().find(|e| e.reason.is_fleet_level()) {
            return self
                .full(ctx, cfg, metrics, e.reason.as_str(), plan_at)
                .await;
        }
        let users = per_user(&list.entries);
        for u in &users {
            ctx.users.add(*u);
        }
        if users.is_empty() {
            debug!(changed, "quiet sweep");
        } else {
            info!(users = users.len(), changed, "sweep queued users");
        }
        // A tick that needed no full pass is still a completed pass for the gauges and alerts.
        metrics.record_pass(PassOutcome::Sweep, started.elapsed());
        Ok(Tick::Queued { users: users.len() })
    }

    /// The delta and the work list; `None` when the cache needs a full list.
    async fn find(
        &mut self,
        ctx: &Ctx,
        cfg: &PassConfig,
    ) -> Result<Option<(WorkList, usize)>, PassError> {
        let org = &ctx.spec.org_slug;
        let term = ctx.store.term();
        let Some(changed) = ctx.observed.changes(&ctx.fly, org, term).await? else {
            return Ok(None);
        };
        let list = self.look(ctx, cfg, &changed).await?;
        Ok(Some((list, changed.len())))
    }

    /// One look at the work list: since the last look if there was one in this term, else the
    /// whole comparison. Moves the watermark and the carried users on.
    async fn look(
        &mut self,
        ctx: &Ctx,
        cfg: &PassConfig,
        changed: &[String],
    ) -> Result<WorkList, sqlx::Error> {
        let t = Target::of(ctx);
        let params = t.params(ctx, cfg, changed);
        let pool = ctx.store.pool();
        let list = match &self.since {
            Some(since) => worklist::load_since(pool, &params, since, &self.carry).await?,
            None => worklist::load(pool, &params).await?,
        };
        self.since = Some(list.watermark.clone());
        self.carry = per_user(&list.entries);
        Ok(list)
    }

    async fn full(
        &mut self,
        ctx: &Ctx,
        cfg: &PassConfig,
        metrics: &Metrics,
        why: &'static str,
        plan_at: Option<PlanAt>,
    ) -> Result<Tick, PassError> {
        debug!(why, "sweep runs a full pass");
        // Taken before the pass reads anything: what the pass could not see, the next look reads.
        let since = worklist::watermark(ctx.store.pool()).await?;
        self.list_fly_serving_users(ctx, cfg).await?;
        let report = run_pass_at(ctx, cfg, metrics, plan_at).await?;
        // Only a pass that observed and planned counts as the safety net.
        self.last_full = Some(Instant::now());
        self.since = Some(since);
        self.carry.clear();
        Ok(Tick::Full {
            why,
            report: Box::new(report),
        })
    }

    /// A full Fly list takes minutes at 100,000 apps (a new term's first, each resync), and the
    /// pass plans only after it. The work list needs no Fly call, so while the list runs, a look
    /// every interval (the first one interval in, so a short list changes nothing) queues its
    /// per-user work: a missed NOTIFY waits an interval, not the list. Fleet-level work waits
    /// for the pass. Users whose apps the cache does not hold yet are read by name by their runs.
    async fn list_fly_serving_users(
        &mut self,
        ctx: &Ctx,
        cfg: &PassConfig,
    ) -> Result<(), PassError> {
        let term = ctx.store.term();
        if !ctx.observed.full_list_due(term) {
            return Ok(());
        }
        let every = cfg
            .plan
            .reconcile_interval
            .to_std()
            .unwrap_or(Duration::from_secs(1))
            .max(MIN_WAKE);
        let listing = ctx
            .observed
            .observe(&ctx.fly, &ctx.spec.org_slug, &ctx.prefix, term);
        let looks = async {
            loop {
                tokio::time::sleep(every).await;
                match self.look(ctx, cfg, &[]).await {
                    Ok(list) => {
                        let users = per_user(&list.entries);
                        for u in &users {
                            ctx.users.add(*u);
                        }
                        if !users.is_empty() {
                            info!(users = users.len(), "work list served while Fly is listed");
                        }
                    }
                    Err(e) => warn!(error = %e, "work list failed while Fly is listed"),
                }
            }
        };
        tokio::select! {
            listed = listing => { listed?; }
            () = looks => {}
        }
        Ok(())
    }
}

/// The users of per-user entries, each once.
fn per_user(entries: &[Entry]) -> Vec<uuid::Uuid> {
    let mut users: Vec<_> = entries
        .iter()
        .filter(|e| !e.reason.is_fleet_level())
        .filter_map(|e| e.user)
        .collect();
    users.sort();
    users.dedup();
    users
}

/// The current target's digests, computed once per tick.
struct Target {
    spec: String,
    config: String,
    secrets: String,
}

impl Target {
    fn of(ctx: &Ctx) -> Target {
        Target {
            spec: spec_digest(&ctx.spec),
            config: config_digest(&ctx.spec),
            secrets: secrets_digest(&ctx.spec.secrets),
        }
    }

    fn params<'a>(
        &'a self,
        ctx: &'a Ctx,
        cfg: &'a PassConfig,
        changed_apps: &'a [String],
    ) -> WorkListParams<'a> {
        WorkListParams {
            paid_tiers: &cfg.policy.tiers,
            paid_statuses: &cfg.policy.statuses,
            spec_digest: &self.spec,
            config_digest: &self.config,
            secrets_digest: &self.secrets,
            image: &ctx.spec.image,
            deprovision_grace: cfg.plan.deprovision_grace,
            orphan_grace: cfg.plan.orphan_grace,
            repair_after: cfg.plan.repair_after,
            changed_apps,
        }
    }
}

/// The work list for the current settings and target.
pub async fn work_list(
    ctx: &Ctx,
    cfg: &PassConfig,
    changed_apps: &[String],
) -> Result<Vec<Entry>, sqlx::Error> {
    let t = Target::of(ctx);
    Ok(
        worklist::load(ctx.store.pool(), &t.params(ctx, cfg, changed_apps))
            .await?
            .entries,
    )
}

/// The work list of a look since `since` (a quiet tick's statement), with where the next starts.
pub async fn work_list_since(
    ctx: &Ctx,
    cfg: &PassConfig,
    changed_apps: &[String],
    since: &Watermark,
    carry: &[uuid::Uuid],
) -> Result<WorkList, sqlx::Error> {
    let t = Target::of(ctx);
    worklist::load_since(
        ctx.store.pool(),
        &t.params(ctx, cfg, changed_apps),
        since,
        carry,
    )
    .await
}

/// Where a look starting now would stop (tests take one before writing a state).
pub async fn watermark(ctx: &Ctx) -> Result<Watermark, sqlx::Error> {
    worklist::watermark(ctx.store.pool()).await
}

/// The work list's `EXPLAIN (ANALYZE, BUFFERS)` for the current settings (docs/QUERIES.md).
pub async fn explain_work_list(
    ctx: &Ctx,
    cfg: &PassConfig,
    changed_apps: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    let t = Target::of(ctx);
    worklist::explain(ctx.store.pool(), &t.params(ctx, cfg, changed_apps)).await
}

/// The quiet tick's statement's `EXPLAIN (ANALYZE, BUFFERS)`.
pub async fn explain_work_list_since(
    ctx: &Ctx,
    cfg: &PassConfig,
    changed_apps: &[String],
    since: &Watermark,
) -> Result<Vec<String>, sqlx::Error> {
    let t = Target::of(ctx);
    worklist::explain_since(
        ctx.store.pool(),
        &t.params(ctx, cfg, changed_apps),
        since,
        &[],
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::plan_rollout::RolloutPlan;
    use crate::reconcile::rollout::Decision;

    fn full_with(step: Step) -> Tick {
        let mut report = PassReport::default();
        report.plan.rollout = Some(RolloutPlan {
            id: 1,
            target_image: "img:2".into(),
            decision: Decision {
                step,
                roll_back: vec![],
                tally: Default::default(),
            },
        });
        Tick::Full {
            why: "rollout",
            report: Box::new(report),
        }
    }

    #[test]
    fn a_rollout_wakes_the_loop_at_its_soak_end_not_an_interval_later() {
        let soak = Duration::from_secs(60);
        let started = full_with(Step::Advance {
            wave: 2,
            apps: vec![],
        });
        // A wave just started: its apps are moving, judged again soon, not only at the soak's end.
        assert_eq!(started.wake_hint(soak), Some(MOVING_POLL));
        let short = Duration::from_secs(2);
        assert_eq!(started.wake_hint(short), Some(short + WAKE_SLACK));
        // The wave's last move ended 1.5 s before the pass did (settles ran after it): the next
        // wave is due a soak after that move, not after the pass.
        let mut settled_after = full_with(Step::Advance {
            wave: 2,
            apps: vec![],
        });
        if let Tick::Full { report, .. } = &mut settled_after {
            report.last_move_done = Some(Instant::now() - Duration::from_millis(1500));
        }
        let hint = settled_after.wake_hint(short).expect("a wave started");
        assert!(
            hint <= Duration::from_millis(500) + WAKE_SLACK,
            "{hint:?}: counted from the pass's end"
        );
        let end = chrono::Utc::now() + chrono::Duration::seconds(20);
        let soaking = full_with(Step::Wait { until: Some(end) });
        let hint = soaking.wake_hint(soak).expect("a soak end");
        assert!(
            hint > Duration::from_secs(18) && hint <= Duration::from_secs(21),
            "{hint:?}"
        );
        // A soak end a moment away is waited for, not rounded up to a second: each wave's gap
        // counts against the rollout's pace.
        let mut near = full_with(Step::Wait {
            until: Some(chrono::Utc::now() + chrono::Duration::hours(1)),
        });
        if let Tick::Full { report, .. } = &mut near {
            report.clock = Some(crate::reconcile::pass::DbClock {
                now: chrono::Utc::now() + chrono::Duration::hours(1)
                    - chrono::Duration::milliseconds(100),
                at: Instant::now(),
            });
        }
        let hint = near.wake_hint(soak).expect("a soak end");
        assert!(
            hint <= Duration::from_millis(100) + WAKE_SLACK && hint < MIN_WAKE,
            "{hint:?}: the database's clock, not this host's, says when the soak ends"
        );
        // A soak end already past (apps that could not be settled) never spins passes.
        let past = full_with(Step::Wait {
            until: Some(chrono::Utc::now() - chrono::Duration::seconds(5)),
        });
        assert_eq!(past.wake_hint(soak), Some(MIN_WAKE));
        for quiet in [Step::Complete, Step::Wait { until: None }] {
            assert_eq!(full_with(quiet).wake_hint(soak), None);
        }
        assert_eq!(Tick::Queued { users: 3 }.wake_hint(soak), None);
    }
}
