//! What exists in Fly, as the planner sees it: managed apps of our org and their machines, built from
//! the two list endpoints only (apps by org, machines by org).

use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use uuid::Uuid;

pub use crate::model::shared_str::SharedStr;

/// Machine metadata keys vyx-fleet writes. Un-prefixed by `fly_` (REFERENCE §3.3: that prefix is the
/// platform's).
pub(crate) const META_MANAGED_BY: &str = "vyx_managed_by";
pub(crate) const META_MANAGED_BY_VALUE: &str = "vyx-fleet";
pub(crate) const META_USER_ID: &str = "vyx_user_id";
pub(crate) const META_OP: &str = "vyx_op";

#[derive(Debug, Clone, PartialEq)]
pub struct ObservedMachine {
    pub id: String,
    // Shared with every other machine of the same value (`observe::shared`): the cache holds a
    // machine per app for as long as the term lasts.
    pub state: SharedStr,
    pub region: SharedStr,
    pub image: SharedStr,
    pub cpus: Option<u32>,
    pub memory_mb: Option<u32>,
    pub cpu_kind: Option<SharedStr>,
    pub user_id: Option<Uuid>,
    pub op: Option<String>,
    /// Fly's machine version (the prober tells config drift by it).
    pub version: Option<String>,
    /// Fly's `updated_at`: the observation cache never lets an older copy replace a newer one.
    pub updated_at: Option<DateTime<Utc>>,
}

impl ObservedMachine {
    /// Destroyed machines linger in lists (REFERENCE §3.6); they are history, not machines.
    pub(crate) fn is_gone(&self) -> bool {
        matches!(
            self.state.as_str(),
            "destroyed" | "destroying" | "replaced" | "migrated"
        )
    }

    /// States a converge fixes by starting the machine.
    pub(crate) fn is_down(&self) -> bool {
        matches!(
            self.state.as_str(),
            "stopped" | "suspended" | "failed" | "created"
        )
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ObservedApp {
    pub name: String,
    pub machines: Vec<ObservedMachine>,
}

impl ObservedApp {
    pub(crate) fn live_machines(&self) -> impl Iterator<Item = &ObservedMachine> {
        self.machines.iter().filter(|m| !m.is_gone())
    }
}

/// Managed-prefix apps in `FLY_ORG_SLUG`, by name. Everything else was filtered out on the way in
/// (invariant 1), so the planner cannot even see `vyx-app`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    pub apps: BTreeMap<String, ObservedApp>,
    /// Regions Fly could not list machines for: machines there are missing from `apps`, so an
    /// app with a machine in one of them may look machineless. The planner leaves such apps alone.
    pub error_regions: std::collections::BTreeSet<String>,
}
