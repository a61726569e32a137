//! The health prober (invariant 9): a task beside the passes, started by the
//! controller while it leads, that probes every live app's own health endpoint once per
//! `HEALTH_PROBE_INTERVAL` and writes only what changed.
//!
//! # Expected flow
//! 1. Every `HEALTH_PROBE_INTERVAL`: one database read of the `active` rows and what each says of
//!    its health ([`crate::db::health::probe_targets`]).
//! 2. Every few seconds: the observation cache's machines (no Fly call). An app is probed while it
//!    has a row and a `started` machine; new apps get slots spread evenly over the interval
//!    ([`Schedule`]), so probes never come in a burst.
//! 3. Every tick: the apps whose slot came, their endpoints over HTTP, at most
//!    [`PROBE_CONCURRENCY`] at once. A failing endpoint of an app not known unhealthy makes it a
//!    suspect; at most [`CONFIRMS_PER_ROUND`] suspects a round are confirmed through the Fly API
//!    ([`probe::confirm`]). The verdicts that differ from what the prober knows of the row go to
//!    the database in one statement ([`crate::db::apps::Store::record_verdicts`]).
//! 4. A machine whose `version` moved in the org list (someone, maybe us, changed its config) is
//!    read once for config drift ([`probe::config_drift`]).
//!
//! # Guarantees
//! - A converged, healthy fleet costs no Fly API call and no database write; "last probed" lives
//!   in memory. Fly is read for a failing endpoint (once per unhealthy spell) and a changed machine.
//! - Every write is fenced by the lease term; a fenced round ends the prober.
//!
//! # Assumptions
//! - The cache is kept fresh by the passes (org list deltas); the prober only reads it.
//!
//! # Caveats
//! - What the prober knows of a row is re-read once per interval: a verdict another executor wrote
//!   meanwhile (a rollout marking an app unhealthy) is corrected within an interval.
//! - A new active row is probed from the next read of the rows (within an interval).
//! - Config changed behind our back while no leader watched (or before this leader's first look)
//!   is not seen until the machine changes again: the first look is the baseline.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info, warn};
use uuid::Uuid;

use super::cache;
use super::execute::health::{HealthSource, Reading};
use super::execute::{Ctx, ExecError, probe};
use super::pass::PassConfig;
use super::probe_schedule::Schedule;
use crate::db::StoreError;
use crate::db::health::{Verdict, probe_targets};

/// Endpoint probes in flight at once. HTTP `GET`s to the apps themselves, not Fly API calls.
pub(crate) const PROBE_CONCURRENCY: usize = 64;
/// Fly reads to confirm failing endpoints, per round (a round a second at the default interval):
/// an outage of the apps' edge, or of our own egress, cannot become a flood of API calls.
pub(crate) const CONFIRMS_PER_ROUND: usize = 1;
/// Drift reads (Fly `GET machine`) per round; the rest wait for the next round.
const DRIFT_READS_PER_ROUND: usize = 8;

/// One machine as the observation cache holds it.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub app: String,
    pub machine: String,
    pub started: bool,
    pub version: Option<String>,
}

/// The prober of one leadership stint.
pub struct Prober {
    ctx: Ctx,
    /// The apps' own endpoints.
    source: HealthSource,
    interval: Duration,
    schedule: Schedule,
    /// App → (row id, health last recorded).
    targets: HashMap<String, (Uuid, Option<bool>)>,
    targets_at: Option<Instant>,
    view_at: Option<Instant>,
    /// The cache generation the last look saw (`None`: look again whatever it is).
    view_generation: Option<u64>,
    /// Machine id → version last seen in the cache; `None` until the first look.
    versions: Option<HashMap<String, Option<String>>>,
    drifted: HashSet<Uuid>,
    /// Apps whose endpoint failed, waiting for a confirming read: app → the endpoint's answer.
    suspects: HashMap<String, String>,
}

/// What one round did (tests and logs).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Round {
    pub probed: usize,
    pub written: usize,
    pub transitions: Vec<Uuid>,
    pub confirm_reads: usize,
    pub drift_reads: usize,
}

impl Prober {
    pub fn new(ctx: Ctx, interval: Duration) -> Prober {
        Prober {
            source: HealthSource::endpoint(ctx.health_url_template.clone()),
            ctx,
            interval,
            schedule: Schedule::new(interval),
            targets: HashMap::new(),
            targets_at: None,
            view_at: None,
            view_generation: None,
            versions: None,
            drifted: HashSet::new(),
            suspects: HashMap::new(),
        }
    }

    /// How often [`Prober::round`] runs: a few hundred rounds per interval, so each is small.
    pub fn tick(&self) -> Duration {
        (self.interval / 300).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    fn view_every(&self) -> Duration {
        (self.interval / 30).clamp(self.tick(), Duration::from_secs(10))
    }

    /// Probe whoever is due at `now` and record what changed.
    pub async fn round(&mut self, now: Instant) -> Result<Round, ExecError> {
        let mut out = Round::default();
        if self.targets_at.is_none_or(|t| t + self.interval <= now) {
            let rows = probe_targets(self.ctx.store.pool())
                .await
                .map_err(StoreError::from)?;
            self.targets = rows
                .into_iter()
                .map(|t| (t.app, (t.row_id, t.known)))
                .collect();
            self.targets_at = Some(now);
            self.view_at = None;
            self.view_generation = None;
        }
        if self.view_at.is_none_or(|t| t + self.view_every() <= now) {
            let term = self.ctx.store.term();
            let seen = self
                .ctx
                .observed
                .machines_seen(term, self.view_generation)
                .await;
            match seen {
                // No full list under this term yet: nothing to look at.
                None => return Ok(out),
                Some(cache::Seen::Unchanged) => {}
                Some(cache::Seen::Machines {
                    generation,
                    machines,
                }) => {
                    self.view(machines, now);
                    self.view_generation = Some(generation);
                }
            }
            self.view_at = Some(now);
        }

        let due = self.schedule.take_due(now);
        out.probed = due.len();
        let mut tasks = JoinSet::new();
        let mut readings: Vec<(String, Reading)> = Vec::new();
        for app in due {
            if !self.targets.contains_key(&app) {
                continue;
            }
            if tasks.len() >= PROBE_CONCURRENCY
                && let Some(done) = tasks.join_next().await
            {
                collect(done, &mut readings);
            }
            let (source, fly) = (self.source.clone(), self.ctx.fly.clone());
            tasks.spawn(async move {
                let r = source.read(&fly, &app, None).await;
                (app, r)
            });
        }
        while let Some(done) = tasks.join_next().await {
            collect(done, &mut readings);
        }
        let mut verdicts: Vec<(String, Verdict)> = Vec::new();
        for (app, r) in readings {
            let Some(&(row_id, known)) = self.targets.get(&app) else {
                continue;
            };
            if r.healthy {
                self.suspects.remove(&app);
                if known != Some(true) {
                    verdicts.push((app, probe::healthy(row_id)));
                }
            } else if known != Some(false) {
                self.suspects.insert(app, r.detail);
            }
        }
        let confirm: Vec<(String, String)> = self
            .suspects
            .iter()
            .take(CONFIRMS_PER_ROUND)
            .map(|(a, d)| (a.clone(), d.clone()))
            .collect();
        for (app, detail) in confirm {
            self.suspects.remove(&app);
            let Some(&(row_id, _)) = self.targets.get(&app) else {
                continue;
            };
            out.confirm_reads += 1;
            match probe::confirm(&self.ctx, row_id, &app, &detail).await {
                Ok(Some(v)) => verdicts.push((app, v)),
                Ok(None) => {}
                Err(ExecError::Store(StoreError::Fenced)) => return Err(StoreError::Fenced.into()),
                Err(e) => {
                    warn!(%app, error = %e, "probe: confirming read failed; the app's next slot retries")
                }
            }
        }
        if !verdicts.is_empty() {
            out.written = verdicts.len();
            let batch: Vec<Verdict> = verdicts.iter().map(|(_, v)| v.clone()).collect();
            out.transitions = self.ctx.store.record_verdicts(&batch).await?;
            // The rows now agree with these verdicts (written, or already so).
            for (app, v) in &verdicts {
                if let Some(t) = self.targets.get_mut(app) {
                    t.1 = Some(v.healthy);
                }
            }
            if !out.transitions.is_empty() {
                info!(transitions = out.transitions.len(), "probe: health changed");
            }
        }

        let drifted: Vec<Uuid> = self
            .drifted
            .iter()
            .copied()
            .take(DRIFT_READS_PER_ROUND)
            .collect();
        for row_id in drifted {
            self.drifted.remove(&row_id);
            out.drift_reads += 1;
            match probe::config_drift(&self.ctx, row_id).await {
                Ok(_) => {}
                Err(ExecError::Store(StoreError::Fenced)) => return Err(StoreError::Fenced.into()),
                Err(e) => {
                    warn!(%row_id, error = %e, "drift check failed; the machine's next change retries")
                }
            }
        }
        Ok(out)
    }

    /// Take in the cache's machines: which apps to probe, and which machines changed.
    fn view(&mut self, seen: Vec<Seen>, now: Instant) {
        let mut apps = HashSet::new();
        let mut versions = HashMap::with_capacity(seen.len());
        for m in seen {
            let Some(&(row_id, _)) = self.targets.get(&m.app) else {
                continue;
            };
            if m.started {
                apps.insert(m.app.clone());
            }
            if let Some(old) = self.versions.as_ref().and_then(|v| v.get(&m.machine))
                && *old != m.version
            {
                self.drifted.insert(row_id);
            }
            versions.insert(m.machine, m.version);
        }
        self.versions = Some(versions);
        self.schedule.sync(&apps, now);
        debug!(apps = self.schedule.len(), "probe: schedule synced");
    }

    /// Rounds every [`Prober::tick`] until fenced (or aborted with the term).
    pub(crate) async fn run(mut self) {
        let mut tick = tokio::time::interval(self.tick());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.round(Instant::now()).await {
                Ok(_) => {}
                Err(ExecError::Store(StoreError::Fenced)) => {
                    warn!("probe: fenced; the prober stops with this term");
                    return;
                }
                Err(e) => warn!(error = %e, "probe round failed; the next one retries"),
            }
        }
    }
}

/// An app and what its probe read.
type Probed = (String, Result<Option<Reading>, crate::fly::FlyError>);

/// Keep a probe's reading; a probe that could not judge leaves the app as it was until its next slot.
fn collect(done: Result<Probed, tokio::task::JoinError>, out: &mut Vec<(String, Reading)>) {
    match done {
        Ok((app, Ok(Some(r)))) => out.push((app, r)),
        Ok((_, Ok(None))) => {}
        Ok((app, Err(e))) => {
            warn!(%app, error = %e, "probe: no reading; the app's next slot retries")
        }
        Err(e) => warn!(error = %e, "probe task ended abnormally"),
    }
}

/// The prober task of a leadership stint; dropping it stops the prober.
pub struct ProberHandle(tokio::task::JoinHandle<()>);

impl Drop for ProberHandle {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Start probing with `ctx` (whose store carries the stint's term).
pub fn spawn(ctx: Ctx, cfg: &PassConfig) -> ProberHandle {
    let interval = cfg
        .plan
        .probe_interval
        .to_std()
        .unwrap_or(Duration::from_secs(300));
    ProberHandle(tokio::spawn(Prober::new(ctx, interval).run()))
}
