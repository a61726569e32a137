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

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::naming;
use super::observe::{
    ListSink, Merge, add_app, full_list, merge_machine, observe_names, parse_time,
};
use super::observed::{Observation, ObservedApp};
use crate::fly::{App, FlyClient, FlyError, ListOrgMachines, OrgMachine};

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

/// One term's observation and what following it by deltas needs.
struct Cached {
    term: i64,
    org: String,
    prefix: String,
    /// The planner's view itself, shared with the pass that plans from it (no copy of the fleet
    /// per pass). Merges copy it only if a pass still holds it, which passes do only while they
    /// plan. Never carries `error_regions`: a list that reports any is not kept.
    obs: Arc<Observation>,
    /// Ids of machines of apps the executors deleted: a late delta that still lists one must not
    /// bring the app back (a re-created app has new machines, so it is not hidden).
    buried: HashSet<String>,
    watermark: Option<DateTime<Utc>>,
    resync_at: Instant,
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

    /// A delta into the state of `term`; `None` if there is none.
    fn merge_delta(
        &self,
        term: i64,
        delta: crate::fly::OrgMachineList,
    ) -> Option<Arc<Observation>> {
        let mut guard = self.state();
        let cached = guard.as_mut().filter(|c| c.term == term)?;
        let listed = delta.machines.len();
        let mut changed = false;
        for m in delta.machines {
            changed |= cached.apply(m);
        }
        cached.bound_watermark(delta.served_at);
        if changed {
            self.bump();
        }
        debug!(
            listed,
            apps = cached.obs.apps.len(),
            "observed fly by delta"
        );
        if !delta.error_regions.is_empty() {
            let taken = guard.take().map(|c| c.obs).unwrap_or_default();
            return Some(with_errors(taken, delta.error_regions));
        }
        Some(cached.obs.clone())
    }

    /// One changed-machine list from `watermark - OVERLAP` (the caller holds `listing`, never the
    /// state). A failed delta empties the cache: the next observer lists in full.
    async fn delta(
        &self,
        fly: &FlyClient,
        org: &str,
        watermark: Option<DateTime<Utc>>,
    ) -> Result<crate::fly::OrgMachineList, FlyError> {
        match fly
            .list_org_machines_partial_with(org, &delta_query(watermark, self.overlap))
            .await
        {
            Ok(d) => Ok(d),
            Err(e) => {
                *self.state() = None;
                Err(e)
            }
        }
    }

    /// The watermark of a cache valid for `term` whose resync is not due (`None`: list in full).
    /// Whether the next observation for `term` is a full list (a new term, a resync due, an
    /// invalidated state): the sweep serves the work list beside it, since it may take minutes.
    pub(crate) fn full_list_due(&self, term: i64) -> bool {
        self.valid_watermark(term).is_none()
    }

    fn valid_watermark(&self, term: i64) -> Option<Option<DateTime<Utc>>> {
        self.state()
            .as_ref()
            .filter(|c| c.term == term && Instant::now() < c.resync_at)
            .map(|c| c.watermark)
    }

    /// A full list (the caller holds `listing`). A cache of this term is refreshed in place, page
    /// by page, and what the list no longer shows is dropped at its end: one copy of the fleet in
    /// memory, never two. Otherwise (a new term, no cache) a new state is built aside and swapped
    /// in once complete. A failed or partial list leaves no state: the next pass lists again.
    async fn full(
        &self,
        fly: &FlyClient,
        org: &str,
        prefix: &str,
        term: i64,
    ) -> Result<(Arc<Observation>, ObserveKind), FlyError> {
        let refresh = {
            let mut guard = self.state();
            let refresh = guard.as_ref().is_some_and(|c| c.term == term);
            if !refresh && guard.is_some() {
                // Another term's state serves nobody now (every reader asks for its own term):
                // let it go before the new one is built, not after.
                *guard = None;
                self.bump();
            }
            refresh
        };
        if refresh {
            let mut sink = Refresh {
                cache: self,
                term,
                apps: HashSet::new(),
                machines: HashSet::new(),
                lost: false,
            };
            let outcome = self.listed(full_list(fly, org, prefix, &mut sink).await)?;
            if !sink.lost {
                return Ok((self.refreshed(sink, outcome), ObserveKind::Full));
            }
            // Invalidated while listing: what was merged went with it; list again, aside.
        }
        let mut fresh = Cached::new(term, org, prefix, jittered(self.resync_interval));
        let outcome = self.listed(full_list(fly, org, prefix, &mut fresh).await)?;
        let mut guard = self.state();
        self.bump();
        if !outcome.error_regions.is_empty() || outcome.per_app {
            warn!("the full list was incomplete; listing everything again next pass");
            *guard = None;
            return Ok((
                with_errors(fresh.obs, outcome.error_regions),
                ObserveKind::Full,
            ));
        }
        fresh.bound_watermark(outcome.served_at);
        fresh.log_full();
        let obs = fresh.obs.clone();
        *guard = Some(fresh);
        Ok((obs, ObserveKind::Full))
    }

    /// A failed full list empties the cache.
    fn listed<T>(&self, r: Result<T, FlyError>) -> Result<T, FlyError> {
        if r.is_err() {
            *self.state() = None;
        }
        r
    }

    /// The end of an in-place refresh: drop what the list did not show, set the next resync.
    fn refreshed(
        &self,
        sink: Refresh<'_>,
        outcome: super::observe::ListOutcome,
    ) -> Arc<Observation> {
        let mut guard = self.state();
        self.bump();
        let partial = !outcome.error_regions.is_empty() || outcome.per_app;
        let Some(c) = guard.as_mut().filter(|c| c.term == sink.term && !partial) else {
            warn!("the full list was incomplete; listing everything again next pass");
            let taken = guard.take().map(|c| c.obs).unwrap_or_default();
            return with_errors(taken, outcome.error_regions);
        };
        let obs = Arc::make_mut(&mut c.obs);
        obs.apps.retain(|name, _| sink.apps.contains(name));
        for app in obs.apps.values_mut() {
            app.machines.retain(|m| sink.machines.contains(&m.id));
        }
        c.bound_watermark(outcome.served_at);
        c.resync_at = Instant::now() + jittered(self.resync_interval);
        c.log_full();
        c.obs.clone()
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

    /// For the sweep: one delta on a valid cache, answering the managed apps whose machines
    /// changed (appeared, changed, went). `None` when the cache cannot answer by a delta (a new
    /// term, a resync due, a region Fly could not list): the caller runs a full pass, whose
    /// observation is the full list.
    pub(crate) async fn changes(
        &self,
        fly: &FlyClient,
        org: &str,
        term: i64,
    ) -> Result<Option<Vec<String>>, FlyError> {
        let _turn = self.listing.lock().await;
        let Some(watermark) = self.valid_watermark(term) else {
            return Ok(None);
        };
        let delta = self.delta(fly, org, watermark).await?;
        let mut guard = self.state();
        let Some(cached) = guard.as_mut().filter(|c| c.term == term) else {
            return Ok(None);
        };
        let mut changed = BTreeSet::new();
        for m in delta.machines {
            let app = m.app_name.clone();
            if cached.apply(m) {
                changed.insert(app);
            }
        }
        cached.bound_watermark(delta.served_at);
        if !delta.error_regions.is_empty() {
            *guard = None;
            self.bump();
            return Ok(None);
        }
        if !changed.is_empty() {
            self.bump();
        }
        debug!(changed = changed.len(), "observed fly by delta (sweep)");
        Ok(Some(changed.into_iter().collect()))
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

impl Cached {
    fn new(term: i64, org: &str, prefix: &str, resync_in: Duration) -> Cached {
        Cached {
            term,
            org: org.to_string(),
            prefix: prefix.to_string(),
            obs: Arc::default(),
            buried: HashSet::new(),
            watermark: None,
            resync_at: Instant::now() + resync_in,
        }
    }

    /// Merge one listed machine (full list or delta). True if the observation changed: the
    /// overlap of consecutive deltas lists the same copy again, which changes nothing.
    fn apply(&mut self, m: OrgMachine) -> bool {
        if !naming::is_managed(&self.prefix, &m.app_name) || self.buried.contains(&m.id) {
            return false;
        }
        if let Some(t) = parse_time(m.updated_at.as_deref()) {
            self.watermark = Some(self.watermark.map_or(t, |w| w.max(t)));
        }
        merge_machine(Arc::make_mut(&mut self.obs), &self.prefix, m) == Merge::Changed
    }

    /// After a listing: the watermark never runs ahead of the API's clock when the listing began
    /// (`served_at`, its `Date`). Hosts stamp `updated_at`; one stamping from a clock far ahead
    /// would otherwise start every later delta past the changes made meanwhile, until the resync.
    /// A change the listing shows cannot have happened after it was served.
    fn bound_watermark(&mut self, served_at: Option<DateTime<Utc>>) {
        if let (Some(w), Some(at)) = (self.watermark, served_at)
            && w > at
        {
            self.watermark = Some(at);
        }
    }

    fn add_apps(&mut self, page: &[App]) {
        let obs = Arc::make_mut(&mut self.obs);
        for app in page {
            add_app(obs, &self.org, &self.prefix, app);
        }
    }

    fn log_full(&self) {
        let machines: usize = self.obs.apps.values().map(|a| a.machines.len()).sum();
        info!(apps = self.obs.apps.len(), machines, "observed fly in full");
    }
}

/// A new state, built aside.
impl ListSink for Cached {
    fn apps(&mut self, page: Vec<App>) {
        self.add_apps(&page);
    }

    fn machines(&mut self, page: Vec<OrgMachine>) {
        for m in page {
            self.apply(m);
        }
    }
}

/// A resync merging into the cached state page by page (each page under the lock, never across
/// a Fly call), remembering what it saw so the rest can be dropped at the end.
struct Refresh<'a> {
    cache: &'a ObserveCache,
    term: i64,
    /// Managed apps of our org listed, and apps of listed machines.
    apps: HashSet<String>,
    machines: HashSet<String>,
    /// The state went away (invalidated) or changed term meanwhile.
    lost: bool,
}

impl Refresh<'_> {
    fn with(&mut self, f: impl FnOnce(&mut Cached)) {
        let mut guard = self.cache.state();
        match guard.as_mut().filter(|c| c.term == self.term) {
            Some(c) => f(c),
            None => self.lost = true,
        }
    }
}

impl ListSink for Refresh<'_> {
    fn apps(&mut self, page: Vec<App>) {
        self.with(|c| c.add_apps(&page));
        let kept = page.into_iter().map(|a| a.name);
        self.apps.extend(kept.filter(|n| !n.is_empty()));
    }

    fn machines(&mut self, page: Vec<OrgMachine>) {
        for m in &page {
            if !m.state.is_gone() {
                self.apps.insert(m.app_name.clone());
                self.machines.insert(m.id.clone());
            }
        }
        self.with(|c| {
            for m in page {
                c.apply(m);
            }
        });
    }
}

/// A list that reported `error_regions` is used for its pass only (the planner holds the apps
/// in those regions back); the cache never keeps it.
fn with_errors(obs: Arc<Observation>, error_regions: Vec<String>) -> Arc<Observation> {
    let mut obs = Arc::unwrap_or_clone(obs);
    obs.error_regions = error_regions.into_iter().collect();
    Arc::new(obs)
}

/// The delta list from `watermark - overlap`, destroyed machines included.
fn delta_query(watermark: Option<DateTime<Utc>>, overlap: Duration) -> ListOrgMachines {
    ListOrgMachines {
        updated_after: watermark.map(|w| {
            let from = w - chrono::Duration::from_std(overlap).unwrap_or_default();
            from.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        }),
        include_deleted: Some(true),
        ..Default::default()
    }
}

/// `interval` shortened by up to 10%, so restarts and replicas do not relist in step.
fn jittered(interval: Duration) -> Duration {
    let cut = rand::rng().random_range(0.0..0.1);
    interval.mul_f64(1.0 - cut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fly::{MachineState, OrgMachineConfig, Organization};

    fn machine(app: &str, id: &str, state: MachineState, at: &str) -> OrgMachine {
        OrgMachine {
            app_name: app.into(),
            id: id.into(),
            state,
            updated_at: Some(at.into()),
            config: Some(OrgMachineConfig::default()),
            ..Default::default()
        }
    }

    fn app(name: &str, org: &str) -> App {
        App {
            name: name.into(),
            organization: Some(Organization {
                slug: org.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn cache() -> Cached {
        let mut c = Cached::new(1, "vyx", "vyx-user-", Duration::from_secs(600));
        c.apps(vec![
            app("vyx-user-aaaa", "vyx"),
            app("vyx-app", "vyx"),
            app("vyx-user-else", "another-org"),
        ]);
        c.machines(vec![machine(
            "vyx-user-aaaa",
            "m1",
            MachineState::Started,
            "2026-11-30T09:00:00Z",
        )]);
        c
    }

    #[test]
    fn only_managed_apps_of_our_org_are_kept() {
        let c = cache();
        assert_eq!(c.obs.apps.keys().collect::<Vec<_>>(), vec!["vyx-user-aaaa"]);
        assert_eq!(c.obs.apps["vyx-user-aaaa"].machines.len(), 1);
    }

    #[test]
    fn a_destroyed_machine_in_a_delta_leaves_the_cache_and_moves_the_watermark() {
        let mut c = cache();
        assert!(c.apply(machine(
            "vyx-user-aaaa",
            "m1",
            MachineState::Destroyed,
            "2026-11-30T09:01:00Z",
        )));
        assert!(
            c.obs.apps["vyx-user-aaaa"].machines.is_empty(),
            "the app stays"
        );
        assert_eq!(c.watermark, parse_time(Some("2026-11-30T09:01:00Z")));
    }

    #[test]
    fn an_older_copy_of_a_machine_never_replaces_a_newer_one() {
        let mut c = cache();
        assert!(!c.apply(machine(
            "vyx-user-aaaa",
            "m1",
            MachineState::Stopped,
            "2026-11-30T08:59:00Z",
        )));
        assert_eq!(c.obs.apps["vyx-user-aaaa"].machines[0].state, "started");
    }

    #[test]
    fn the_same_copy_listed_again_by_an_overlapping_delta_is_no_change() {
        let mut c = cache();
        let again = machine(
            "vyx-user-aaaa",
            "m1",
            MachineState::Started,
            "2026-11-30T09:00:00Z",
        );
        assert!(!c.apply(again));
    }

    #[tokio::test]
    async fn a_deleted_apps_machines_stay_buried_when_a_late_delta_lists_them() {
        let oc = ObserveCache::new(Duration::from_secs(600));
        *oc.state() = Some(cache());
        oc.app_deleted("vyx-user-aaaa").await;
        let mut guard = oc.state();
        let c = guard.as_mut().expect("state");
        assert!(!c.apply(machine(
            "vyx-user-aaaa",
            "m1",
            MachineState::Started,
            "2026-11-30T09:02:00Z",
        )));
        assert!(!c.obs.apps.contains_key("vyx-user-aaaa"));
    }

    #[tokio::test]
    async fn a_merge_while_a_pass_holds_the_observation_leaves_the_pass_its_copy() {
        let oc = ObserveCache::new(Duration::from_secs(600));
        *oc.state() = Some(cache());
        let held = oc.state().as_ref().unwrap().obs.clone();
        oc.app_deleted("vyx-user-aaaa").await;
        assert!(
            held.apps.contains_key("vyx-user-aaaa"),
            "what the pass planned from"
        );
        let guard = oc.state();
        assert!(
            !guard
                .as_ref()
                .unwrap()
                .obs
                .apps
                .contains_key("vyx-user-aaaa")
        );
    }

    #[tokio::test]
    async fn a_targeted_snapshot_holds_only_the_users_apps_and_is_served_while_a_list_runs() {
        let oc = ObserveCache::new(Duration::from_secs(600));
        let mut c = cache();
        c.apply(machine(
            "vyx-user-bbbb",
            "m2",
            MachineState::Started,
            "2026-11-30T09:00:00Z",
        ));
        *oc.state() = Some(c);
        // An observer is at work (a resync's full list takes minutes at 100,000 apps).
        let _turn = oc.listing.lock().await;
        let names = vec!["vyx-user-bbbb".to_string(), "vyx-user-none".to_string()];
        let obs = oc
            .snapshot_for(1, &names)
            .expect("the last complete state answers meanwhile");
        assert_eq!(obs.apps.keys().collect::<Vec<_>>(), vec!["vyx-user-bbbb"]);
        assert_eq!(obs.apps["vyx-user-bbbb"].machines.len(), 1);
        assert!(
            oc.snapshot_for(2, &names).is_none(),
            "never another term's state"
        );
    }

    #[tokio::test]
    async fn the_prober_is_shown_the_fleet_again_only_after_something_changed() {
        let oc = ObserveCache::new(Duration::from_secs(600));
        assert!(
            oc.machines_seen(1, None).await.is_none(),
            "no full list yet"
        );
        *oc.state() = Some(cache());
        oc.bump();
        let Some(Seen::Machines {
            generation,
            machines,
        }) = oc.machines_seen(1, None).await
        else {
            panic!("a first look shows every machine");
        };
        assert_eq!(machines.len(), 1);
        assert!(matches!(
            oc.machines_seen(1, Some(generation)).await,
            Some(Seen::Unchanged)
        ));
        oc.app_seen("vyx-user-aaaa").await;
        assert!(
            matches!(
                oc.machines_seen(1, Some(generation)).await,
                Some(Seen::Unchanged)
            ),
            "an app already known is no change"
        );
        oc.app_seen("vyx-user-cccc").await;
        assert!(matches!(
            oc.machines_seen(1, Some(generation)).await,
            Some(Seen::Machines { .. })
        ));
    }

    #[test]
    fn the_resync_is_due_within_the_interval_and_not_much_earlier() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(600));
            assert!(d <= Duration::from_secs(600) && d >= Duration::from_secs(540));
        }
    }
}
