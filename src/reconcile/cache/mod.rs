//! The observed Fly state kept between passes, so a quiet pass costs the machines that changed, not
//! the fleet (invariant 9; kube-rs `watcher` + `reflector::Store` as model: list, then deltas, then
//! a periodic relist). The cache is a cache, never the truth: any doubt empties it and the next
//! pass lists everything again.
//!
//! # Expected flow
//! 1. **Full list** (the first pass, a new lease term, after any observe error, or when the resync
//!    is due): apps by org and machines by org, every page ([`super::observe::full_list`]). The
//!    cache keeps the managed apps and their live machines, the term it was built under, and the
//!    *watermark*: the largest machine `updated_at` Fly has shown us (Fly's own clock, never ours),
//!    but never past the API's `Date` when the list began (one host's clock far ahead must not
//!    blind the deltas).
//! 2. **Delta** (every other pass): one org machine list with `updated_after = watermark - OVERLAP`
//!    and `include_deleted=true`. A machine in a gone state (`destroyed`, `destroying`, ...) is
//!    dropped; any other replaces the cached copy unless that copy is newer; a machine of an app the
//!    cache does not hold adds that app. The watermark moves to the newest `updated_at` seen, bounded
//!    by the delta's `Date` in the same way.
//! 3. **Resync**: the next full list is due `RESYNC_INTERVAL` after the last one, minus up to 10%
//!    jitter. It catches what no machine shows: an app without machines, or an app deleted by hand
//!    (its machines vanish with it, so no delta reports them). A resync within the term refreshes
//!    the cached state in place, page by page (each page merged like a delta), and drops at its end
//!    whatever it did not list; so the fleet is held once, not twice (the old state beside the
//!    new one was half of the daemon's peak at 100,000 apps).
//! 4. A targeted run (one user, after a NOTIFY) reads that user's apps from the cache as it is,
//!    without a Fly call. Observers (passes, sweeps) take turns; the state is locked only to read or
//!    merge, never across a Fly call, so a resync's full list does not hold up targeted runs: they
//!    read the cached state meanwhile (during a resync, each app as new as the last complete list
//!    or newer).
//! 5. Executors write what they learn: an app they created or adopted is added, an app they
//!    deleted (confirmed 404) is removed with its machines. Machines they create, update or destroy
//!    are left to the next delta, which reads them anyway.
//!
//! # Guarantees
//! - The planner only ever sees a complete observation: one full list that succeeded, plus deltas
//!   that succeeded. Until the first full list of a term has completed, observing returns an error
//!   (the pass is skipped), never a half-built cache.
//! - A list that reports `error_regions` is used for that pass (the planner holds the apps in those
//!   regions back) and empties the cache: the next pass lists everything again.
//! - A new lease term never reuses a cache built under another one.
//!
//! # Assumptions
//! - Fly orders the org list by `updated_at` and bumps it on every state or config change
//!   (REFERENCE §3.9), and a machine appears in the list at most `OVERLAP` after its `updated_at`
//!   (list lag, §7; skew between the Fly hosts that stamp `updated_at`). REFERENCE asks to overlap
//!   the windows without a figure; 60 s is far above the "moment" of lag it reports.
//!
//! # Caveats
//! - An app deleted outside the controller looks present until the next resync (at most
//!   `RESYNC_INTERVAL`); the executors still find the truth with their own calls (a converge asks
//!   `GET /v1/apps/{name}` before anything else).
//! - The full list is taken in one pass (paced by the client's list bucket), not sliced over passes:
//!   at 100,000 apps it is about 400 pages once per `RESYNC_INTERVAL`, and slicing would need
//!   cursors that outlive Fly's 30-minute cursor lifetime. The jitter keeps replicas and restarts
//!   from relisting in step.

mod cached;
mod delta;
mod full;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::observe::observe_names;
use super::observed::{Observation, ObservedApp};
use crate::fly::{FlyClient, FlyError};
use cached::Cached;

/// How far before the watermark each delta starts (see Assumptions); the default of
/// [`ObserveCache::with_overlap`].
pub const OVERLAP: Duration = Duration::from_secs(60);

/// Observed Fly state shared by the passes of one process (and its executors).
pub struct ObserveCache {
    resync_interval: Duration,
    /// How far before the watermark each delta starts ([`OVERLAP`] unless set).
    overlap: Duration,
    /// Held by the one observer (full list or delta) at work; never needed to read `state`.
    listing: tokio::sync::Mutex<()>,
    /// Locked only to read, merge one page or swap (a plain mutex: never held across an await).
    state: Mutex<Option<Cached>>,
    /// Bumped (under `state`) whenever what the planner sees changes: a merge that changed
    /// something, an app an executor added or removed, a full list, an invalidation. The prober
    /// looks at the fleet again only when it moved (a quiet fleet costs it nothing).
    generation: AtomicU64,
}

/// How the last observation was made (for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObserveKind {
    Full,
    Delta,
}

impl ObserveCache {
    pub fn new(resync_interval: Duration) -> ObserveCache {
        ObserveCache {
            resync_interval,
            overlap: OVERLAP,
            listing: tokio::sync::Mutex::new(()),
            state: Mutex::new(None),
            generation: AtomicU64::new(0),
        }
    }

    /// Deltas start `overlap` before the watermark instead of [`OVERLAP`]: tests that put less
    /// than a minute of Fly's time between changes set it to see a delta leave machines out.
    pub fn with_overlap(mut self, overlap: Duration) -> ObserveCache {
        self.overlap = overlap;
        self
    }

    /// The state; a panic elsewhere while it was held leaves nothing half-merged that matters
    /// more than a cache (the next full list replaces it), so poisoning is not an error.
    fn state(&self) -> MutexGuard<'_, Option<Cached>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forget everything: the next observation is a full list.
    pub async fn invalidate(&self) {
        *self.state() = None;
        self.bump();
    }

    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// The observation for a pass under lease `term`: a delta on a valid cache, else a full list.
    ///
    /// Observers take turns (`listing`); the state itself is locked only to read the watermark and
    /// to merge the answer, never across a Fly call, so targeted runs, executors and the prober keep
    /// reading the cached state while a full list (minutes at 100,000 apps) or a delta runs.
    /// The answer is shared with the cache: drop it once planned.
    pub async fn observe(
        &self,
        fly: &FlyClient,
        org: &str,
        prefix: &str,
        term: i64,
    ) -> Result<(Arc<Observation>, ObserveKind), FlyError> {
        let _turn = self.listing.lock().await;
        let Some(watermark) = self.valid_watermark(term) else {
            return self.full(fly, org, prefix, term).await;
        };
        let delta = self.delta(fly, org, watermark).await?;
        match self.merge_delta(term, delta) {
            Some(obs) => Ok((obs, ObserveKind::Delta)),
            // Invalidated while the delta was out: start again from a full list.
            None => self.full(fly, org, prefix, term).await,
        }
    }

    /// The watermark of a cache valid for `term` whose resync is not due (`None`: list in full).
    /// Whether the next observation for `term` is a full list (a new term, a resync due, an
    /// invalidated state): the sweep serves the work list beside it, since it may take minutes.
    pub(crate) fn full_list_due(&self, term: i64) -> bool {
        self.valid_watermark(term).is_none()
    }

    /// Whether an observation for `term` made at `at` would list in full: no valid state, or
    /// its resync due by then.
    pub(crate) fn full_list_due_by(&self, term: i64, at: Instant) -> bool {
        self.state()
            .as_ref()
            .is_none_or(|c| c.term != term || at >= c.resync_at)
    }

    fn valid_watermark(&self, term: i64) -> Option<Option<DateTime<Utc>>> {
        self.state()
            .as_ref()
            .filter(|c| c.term == term && Instant::now() < c.resync_at)
            .map(|c| c.watermark)
    }

    /// For a targeted run: what the cache holds for the apps named `names` (the user's row name, the
    /// name a first converge would take), without a Fly call and without copying the fleet, if the
    /// cache is valid for `term`. While a resync lists, the cached state answers. With no
    /// state for this term yet (a new leader's first full list, minutes at 100,000 apps), those
    /// apps are read from Fly one by one ([`observe_names`]: per-app buckets, not the org list's),
    /// so a NOTIFY never waits for the fleet's list.
    pub(crate) async fn snapshot_or_observe(
        &self,
        fly: &FlyClient,
        org: &str,
        prefix: &str,
        term: i64,
        names: &[String],
    ) -> Result<Observation, FlyError> {
        if let Some(obs) = self.snapshot_for(term, names) {
            return Ok(obs);
        }
        observe_names(fly, org, prefix, names).await
    }

    /// The cached apps named `names` (a lookup each, whatever the fleet's size).
    fn snapshot_for(&self, term: i64, names: &[String]) -> Option<Observation> {
        let guard = self.state();
        let c = guard.as_ref().filter(|c| c.term == term)?;
        let apps = names
            .iter()
            .filter_map(|n| c.obs.apps.get(n))
            .map(|a| (a.name.clone(), a.clone()))
            .collect();
        Some(Observation {
            apps,
            error_regions: Default::default(),
        })
    }

    /// An executor created or adopted `name` in our org.
    pub(crate) async fn app_seen(&self, name: &str) {
        if let Some(c) = self.state().as_mut()
            && !c.obs.apps.contains_key(name)
        {
            Arc::make_mut(&mut c.obs).apps.insert(
                name.to_string(),
                ObservedApp {
                    name: name.to_string(),
                    machines: vec![],
                },
            );
            self.bump();
        }
    }

    /// An executor deleted `name` and saw it answer 404.
    pub(crate) async fn app_deleted(&self, name: &str) {
        if let Some(c) = self.state().as_mut()
            && c.obs.apps.contains_key(name)
            && let Some(app) = Arc::make_mut(&mut c.obs).apps.remove(name)
        {
            c.buried.extend(app.machines.into_iter().map(|m| m.id));
            self.bump();
        }
    }

    /// RESYNC_INTERVAL: how long a full list stays the base of the deltas.
    pub(crate) fn resync_interval(&self) -> Duration {
        self.resync_interval
    }

    /// The prober's view (`prober.rs`): every cached machine, without a Fly call, unless the
    /// cache has not changed since generation `seen` (`Unchanged`); `None` until a full list of
    /// `term` has completed.
    pub(crate) async fn machines_seen(&self, term: i64, seen: Option<u64>) -> Option<Seen> {
        let guard = self.state();
        let c = guard.as_ref().filter(|c| c.term == term)?;
        let generation = self.generation.load(Ordering::Relaxed);
        if seen == Some(generation) {
            return Some(Seen::Unchanged);
        }
        let machines = c
            .obs
            .apps
            .values()
            .flat_map(|a| a.machines.iter().map(move |m| (a, m)))
            .map(|(a, m)| super::prober::Seen {
                app: a.name.clone(),
                machine: m.id.clone(),
                started: m.state == crate::fly::MachineState::Started.as_str(),
                version: m.version.clone(),
            })
            .collect();
        Some(Seen::Machines {
            generation,
            machines,
        })
    }
}

/// [`ObserveCache::machines_seen`]'s answer.
#[derive(Debug)]
pub(crate) enum Seen {
    Unchanged,
    Machines {
        generation: u64,
        machines: Vec<super::prober::Seen>,
    },
}

/// A list reported `error_regions` is used for its pass only (the planner holds the apps
/// in those regions back); the cache never keeps it.
fn with_errors(obs: Arc<Observation>, error_regions: Vec<String>) -> Arc<Observation> {
    let mut obs = Arc::unwrap_or_clone(obs);
    obs.error_regions = error_regions.into_iter().collect();
    Arc::new(obs)
}

#[cfg(test)]
mod tests;
