//! Following the fleet by deltas: one changed-machine list from the watermark, merged into the
//! cached state.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::debug;

use super::{ObserveCache, with_errors};
use crate::fly::{FlyClient, FlyError, ListOrgMachines, OrgMachineList};
use crate::reconcile::observed::Observation;

impl ObserveCache {
    /// A delta into the state of `term`; `None` if there is none.
    pub(super) fn merge_delta(&self, term: i64, delta: OrgMachineList) -> Option<Arc<Observation>> {
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
    pub(super) async fn delta(
        &self,
        fly: &FlyClient,
        org: &str,
        watermark: Option<DateTime<Utc>>,
    ) -> Result<OrgMachineList, FlyError> {
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
