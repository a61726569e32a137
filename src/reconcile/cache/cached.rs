//! One term's cached observation, and how a listed app or machine merges into it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;
use tracing::info;

use crate::fly::{App, OrgMachine};
use crate::reconcile::naming;
use crate::reconcile::observe::{ListSink, Merge, add_app, merge_machine, parse_time};
use crate::reconcile::observed::Observation;

/// One term's observation and what following it by deltas needs.
pub(super) struct Cached {
    pub(super) term: i64,
    pub(super) org: String,
    pub(super) prefix: String,
    /// The planner's view itself, shared with the pass that plans from it (no copy of the fleet
    /// per pass). Merges copy it only if a pass still holds it, which passes do only while they
    /// plan. Never carries `error_regions`: a list that reports any is not kept.
    pub(super) obs: Arc<Observation>,
    /// Ids of machines of apps the executors deleted: a late delta that still lists one must not
    /// bring the app back (a re-created app has new machines, so it is not hidden).
    pub(super) buried: HashSet<String>,
    pub(super) watermark: Option<DateTime<Utc>>,
    pub(super) resync_at: Instant,
}

impl Cached {
    pub(super) fn new(term: i64, org: &str, prefix: &str, resync_in: Duration) -> Cached {
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
    pub(super) fn apply(&mut self, m: OrgMachine) -> bool {
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
    pub(super) fn bound_watermark(&mut self, served_at: Option<DateTime<Utc>>) {
        if let (Some(w), Some(at)) = (self.watermark, served_at)
            && w > at
        {
            self.watermark = Some(at);
        }
    }

    pub(super) fn add_apps(&mut self, page: &[App]) {
        let obs = Arc::make_mut(&mut self.obs);
        for app in page {
            add_app(obs, &self.org, &self.prefix, app);
        }
    }

    pub(super) fn log_full(&self) {
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
