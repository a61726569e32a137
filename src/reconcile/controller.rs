//! The daemon loop: lead or stand by, schedule passes (every `RECONCILE_INTERVAL`, and at once on a
//! NOTIFY), stop acting before the lease could expire, and shut down cleanly.
//!
//! # Expected flow
//! 1. Try to take the lease (`vyx_fleet.lease`, fencing term). Standby replicas retry every
//!    `standby_poll`, so they take over within `ttl + standby_poll` of a leader's death.
//! 2. As leader: a renewer refreshes the lease every `renew_every`; each interval tick runs a
//!    sweep ([`super::sweep`]): a full pass on the term's first tick, every `RESYNC_INTERVAL` and
//!    whenever fleet-level work is due, else one statement that queues the users needing work.
//!    A NOTIFY enqueues its user in the work queue at once, and the runner reconciles that user
//!    alone ([`super::targeted`]) beside the pass, never deleting.
//! 3. If no renewal *sent* within the last `act_margin` (shorter than the TTL) has succeeded, the
//!    current pass is cancelled and the replica drops back to standby, `ttl - act_margin` before the
//!    lease can expire under it (`leadership.rs`). Every write is fenced anyway, so a late write from
//!    a deposed leader changes nothing.
//! 4. On shutdown: no new pass; the running one gets `drain` to finish, then the lease is released
//!    so a standby takes over at once.

use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{error, info, warn};

use super::execute::Ctx;
use super::leadership::{RenewConfig, keep_db_lease};
use super::pass::{PassConfig, PassError, PassReport, PlanAt};
use super::pass_clock::{Leads, MAX_LEAD};
use super::plan::Finding;
use super::queue::{self, WorkQueue};
use super::sweep::{Sweeper, Tick};
use super::targeted::run_user;
use super::wake::FleetWake;
use crate::db::Store;
use crate::db::console;
use crate::db::lease;
use crate::db::notify::{self, Notification};
use crate::liveness::Health;
use crate::metrics::Metrics;

#[derive(Debug, Clone)]
pub struct LoopConfig {
    pub interval: Duration,
    pub lease_ttl: Duration,
    pub renew_every: Duration,
    /// Stop acting when the last successful renew is older than this (must be < `lease_ttl`).
    pub act_margin: Duration,
    pub standby_poll: Duration,
    /// The least time between the end of a pass and a sweep brought forward by fleet-level work
    /// falling due (`wake.rs`): a burst of downgrades wakes the loop once, not once per user.
    /// (NOTIFYs themselves enqueue their user in the deduplicating work queue, `queue.rs`.)
    pub notify_debounce: Duration,
    /// How long a running pass may go on after a shutdown signal.
    pub drain: Duration,
}

impl LoopConfig {
    pub(crate) fn renew_config(&self) -> RenewConfig {
        RenewConfig {
            ttl: self.lease_ttl,
            renew_every: self.renew_every,
            act_margin: self.act_margin,
        }
    }
}

impl Default for LoopConfig {
    fn default() -> Self {
        LoopConfig {
            interval: Duration::from_secs(30),
            lease_ttl: Duration::from_secs(15),
            renew_every: Duration::from_secs(3),
            act_margin: Duration::from_secs(10),
            standby_poll: Duration::from_secs(2),
            notify_debounce: Duration::from_millis(300),
            drain: Duration::from_secs(25),
        }
    }
}

pub struct Controller {
    /// Executor context without a term; each leadership stint gets a `Store` with its own term.
    pub base: Ctx,
    pub pass: PassConfig,
    pub loop_cfg: LoopConfig,
    pub metrics: Metrics,
    pub health: Health,
    /// Unique per process: hostname/machine id plus a random suffix.
    pub holder: String,
}

impl Controller {
    /// Run until `shutdown` flips to true. Returns after releasing the lease.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        let pool = self.base.store.pool().clone();
        loop {
            if *shutdown.borrow() {
                return;
            }
            self.health.heartbeat();
            // The lease's validity counts from when the request went out, not from its answer.
            let sent = Instant::now();
            let attempt = lease::try_acquire(&pool, &self.holder, self.loop_cfg.lease_ttl).await;
            // A standby that can reach the database can take over: that is what "ready" means.
            self.health.set_db_ok(attempt.is_ok());
            match attempt {
                Ok(Some(term)) => {
                    info!(holder = %self.holder, term, "leading");
                    self.metrics.set_leader(true);
                    self.health.set_leader(true);
                    self.lead(term, sent, &mut shutdown).await;
                    self.metrics.set_leader(false);
                    self.health.set_leader(false);
                    if let Err(e) = lease::release(&pool, &self.holder, term).await {
                        warn!(error = %e, "could not release the lease; it expires by itself");
                    } else {
                        info!(term, "lease released");
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    self.health.set_db_ok(false);
                    warn!(error = %e, "lease check failed");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.loop_cfg.standby_poll) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Lead until the lease is lost or shutdown; passes never overlap.
    async fn lead(&self, term: i64, held_since: Instant, shutdown: &mut watch::Receiver<bool>) {
        let pool = self.base.store.pool().clone();
        // Fly writes of this stint leave only while the lease is known valid (`leadership.rs`).
        let gate = crate::fly::WriteGate::new().with_verifier(
            super::leadership::fence_verifier(pool.clone(), term),
            super::leadership::VERIFY_FRESH,
        );
        // Open before anything can act (the keeper task may not have run yet); it moves it on.
        gate.open_until(held_since + self.loop_cfg.act_margin);
        let ctx = Ctx {
            store: Store::new(pool.clone(), term),
            fly: self.base.fly.with_write_gate(gate.clone()),
            // A queue per stint: nothing queued or claimed under another term carries over.
            users: WorkQueue::new(),
            ..self.base.clone()
        };
        let (lost_tx, mut lost_rx) = watch::channel(false);
        let renewer = tokio::spawn(keep_db_lease(
            pool.clone(),
            self.holder.clone(),
            term,
            self.loop_cfg.renew_config(),
            held_since,
            lost_tx,
            gate,
        ));
        // NOTIFYs enqueue their user at once, even while a pass runs; the runner works on at most
        // MAX_CONCURRENCY users, each in its own task, so a slow one holds only its own slot.
        // Deletions falling due between ticks (a grace's end, a confirmation) bring the sweep forward.
        let wake = Arc::new(FleetWake::default());
        let grace = self
            .pass
            .plan
            .deprovision_grace
            .to_std()
            .unwrap_or_default();
        let notifier = tokio::spawn(enqueue_notifications(
            pool.clone(),
            ctx.users.clone(),
            wake.clone(),
        ));
        let runner = {
            let (ctx, cfg, wake) = (ctx.clone(), self.pass.clone(), wake.clone());
            tokio::spawn(queue::run(
                ctx.users.clone(),
                self.pass.max_concurrency,
                move |user| {
                    let (ctx, cfg, wake) = (ctx.clone(), cfg.clone(), wake.clone());
                    async move {
                        match run_user(&ctx, &cfg, user).await {
                            Ok(outcomes) => wake.after(&outcomes, grace),
                            Err(e) => {
                                warn!(%user, error = %e, "targeted run failed; the next pass retries")
                            }
                        }
                    }
                },
            ))
        };
        // Health probes beside the passes, for this term only (dropped, so stopped, with `lead`).
        let _prober = super::prober::spawn(ctx.clone(), &self.pass);

        let mut tick = tokio::time::interval(self.loop_cfg.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Per stint: the term's first tick is a full pass.
        let mut sweeper = Sweeper::default();
        // A rollout's soak end or a wave just started (`Tick::wake_hint`): sweep then, not a
        // whole interval later.
        let mut early: Option<Instant> = None;
        // An early wake comes a read's time before its due time (`Leads`), so that the pass has
        // read the fleet by then and plans the next wave at once, rather than a whole read after.
        let mut leads = Leads::default();
        // How long the last full pass took, tick to end.
        let mut pass_took = Duration::ZERO;
        let mut last_end = Instant::now();
        loop {
            // A tick that will list Fly in full (a resync falls due) reads for longer.
            let lead = early.map_or(Duration::ZERO, |at| {
                leads.get(ctx.observed.full_list_due_by(term, at))
            });
            let wake_at = early.map(|t| t.checked_sub(lead).unwrap_or(t).max(last_end));
            // Wait for a reason to sweep: the interval (the safety net behind NOTIFY).
            let mut by_interval = false;
            tokio::select! {
                _ = tick.tick() => by_interval = true,
                _ = sleep_until_opt(wake_at), if wake_at.is_some() => {}
                _ = wake.due(last_end + self.loop_cfg.notify_debounce) => {}
                _ = lost_rx.changed() => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() || *lost_rx.borrow() {
                break;
            }
            // An interval's tick shortly before an early wake is left to it: the early pass does
            // all an interval's pass would, and one run just before it would push it past its
            // due time (a wave waiting a whole pass).
            let soon = (lead.max(pass_took) + LEAD_MARGIN).min(MAX_LEAD);
            if by_interval
                && wake_at.is_some_and(|w| w.saturating_duration_since(Instant::now()) <= soon)
            {
                continue;
            }
            self.health.heartbeat();
            sweeper.plan_at(early.map(|at| PlanAt {
                at,
                max_hold: lead + LEAD_MARGIN,
            }));
            let listing_in_full = ctx.observed.full_list_due(term);
            let tick_started = Instant::now();
            let pass = sweeper.tick(&ctx, &self.pass, &self.metrics);
            tokio::pin!(pass);
            let mut draining: Option<Instant> = None;
            // A long pass (a slow rollout) is progress, not a hang: keep /healthz fed.
            let mut alive = tokio::time::interval(Duration::from_secs(10));
            let fenced = loop {
                let drain_deadline = draining.map(|t| t + self.loop_cfg.drain);
                tokio::select! {
                    r = &mut pass => {
                        self.health.set_db_ok(!matches!(r, Err(super::pass::PassError::Db(_))));
                        if let Ok(Tick::Full { report, .. }) = &r
                            && let Some(clock) = report.clock
                        {
                            // The hold is not reading: counted, it would grow the lead each wave.
                            leads.record(
                                listing_in_full,
                                clock
                                    .at
                                    .saturating_duration_since(tick_started)
                                    .saturating_sub(report.held),
                            );
                            pass_took = tick_started.elapsed().saturating_sub(report.held);
                        }
                        // A full pass judged the rollout afresh: its hint replaces the last. A
                        // sweep or a failed pass knows nothing new: a wake still ahead stands.
                        // A wake beyond the next interval tick is kept too: that tick is skipped
                        // when it would run into the wake's pass.
                        early = match &r {
                            Ok(t @ Tick::Full { .. }) => t
                                .wake_hint(self.pass.waves.soak.to_std().unwrap_or_default())
                                .map(|d| Instant::now() + d),
                            _ => early.filter(|t| *t > Instant::now()),
                        };
                        match &r {
                            Ok(Tick::Full { report, .. }) => {
                                wake.after(&report.outcomes, grace);
                                record_pass(&pool, term, report)
                            }
                            // The leader-silent alert and the dashboard count sweeps as passes; no
                            // rollout is halted (a halted one makes every tick a full pass).
                            Ok(Tick::Queued { .. }) => {
                                record_pass(&pool, term, &Default::default())
                            }
                            Err(e) => record_failure(&pool, term, e),
                        }
                        break matches!(r, Ok(Tick::Full { ref report, .. }) if report.fenced)
                    }
                    _ = alive.tick() => {
                        self.health.heartbeat();
                        continue;
                    }
                    _ = lost_rx.changed() => {
                        error!(term, "lease renewal failing; abandoning the pass before the lease expires");
                        break true;
                    }
                    _ = shutdown.changed(), if draining.is_none() => {
                        info!("shutdown requested; letting the current pass finish");
                        draining = Some(Instant::now());
                    }
                    _ = sleep_until_opt(drain_deadline) => {
                        warn!("drain deadline reached; abandoning the pass (work resumes from the database)");
                        break false;
                    }
                }
            };
            self.health.heartbeat();
            last_end = Instant::now();
            if fenced || draining.is_some() || *shutdown.borrow() || *lost_rx.borrow() {
                break;
            }
        }
        ctx.users.close();
        // Aborting the runner aborts its tasks: no Fly call starts for this term any more.
        notifier.abort();
        runner.abort();
        renewer.abort();
    }
}

/// What an early pass may wait, beyond the read it started early for, before it plans.
const LEAD_MARGIN: Duration = Duration::from_millis(100);

/// Feed NOTIFY payloads (user ids) into the queue until aborted, a confirmation of held deletions
/// into the wake; reconnect when LISTEN breaks.
async fn enqueue_notifications(pool: sqlx::PgPool, users: Arc<WorkQueue>, wake: Arc<FleetWake>) {
    let mut listener = notify::listen(&pool).await;
    loop {
        match notify::next(&mut listener).await {
            Some(Notification::DeletionsConfirmed) => wake.at(Instant::now()),
            Some(Notification::User(user)) => users.add(user),
            Some(Notification::Unknown(payload)) => {
                warn!(payload = %payload, "NOTIFY without a user id; the next pass covers it")
            }
            None => listener = notify::listen(&pool).await,
        }
    }
}

/// After a pass: records when it finished and whether it found the rollout halted, for the dashboard
/// and the standby's "leader silent" alert. Spawned, so the pass loop never waits on it.
fn record_pass(pool: &PgPool, term: i64, report: &PassReport) {
    if report.fenced {
        return;
    }
    let halted = report.plan.findings.iter().find_map(|f| match f {
        Finding::RolloutHalted { image, .. } => Some(image.clone()),
        _ => None,
    });
    let pool = pool.clone();
    tokio::spawn(async move {
        if let Err(e) = console::record_pass(&pool, term, halted.as_deref()).await {
            warn!(error = %e, "could not record the pass for the console");
        }
    });
}

/// After a failed pass: records its cause for the alerts. Spawned, so the pass loop never waits on it.
fn record_failure(pool: &PgPool, term: i64, e: &PassError) {
    let cause = e.failure();
    let pool = pool.clone();
    tokio::spawn(async move {
        if let Err(e) = console::record_pass_failure(&pool, term, cause.as_str()).await {
            warn!(error = %e, "could not record the pass failure for the alerts");
        }
    });
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
