//! The full list: a new state built aside, or the cached one refreshed in place page by page.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;
use tracing::warn;

use super::{Cached, ObserveCache, ObserveKind, with_errors};
use crate::fly::{App, FlyClient, FlyError, OrgMachine};
use crate::reconcile::observe::{ListOutcome, ListSink, full_list};
use crate::reconcile::observed::Observation;

impl ObserveCache {
    /// A full list (the caller holds `listing`). A cache of this term is refreshed in place, page
    /// by page, and what the list no longer shows is dropped at its end: one copy of the fleet in
    /// memory, never two. Otherwise (a new term, no cache) a new state is built aside and swapped
    /// in once complete. A failed or partial list leaves no state: the next pass lists again.
    pub(super) async fn full(
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
    fn refreshed(&self, sink: Refresh<'_>, outcome: ListOutcome) -> Arc<Observation> {
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

/// `interval` shortened by up to 10%, so restarts and replicas do not relist in step.
pub(super) fn jittered(interval: Duration) -> Duration {
    let cut = rand::rng().random_range(0.0..0.1);
    interval.mul_f64(1.0 - cut)
}
