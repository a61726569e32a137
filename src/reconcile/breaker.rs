//! The blast-radius breaker (invariant 6), pure: which planned deletions wait for an operator.
//!
//! # Expected flow
//! 1. The pass reads the apps deleted within the sliding window (`vyx_fleet.deletions`, the last
//!    hour) and the held set (`vyx_fleet.held_deletions`, each entry with its confirmation).
//! 2. [`apply`] judges the deletions the planner wants of apps that exist. Those covered by a valid
//!    confirmation go ahead. The others trip the breaker when the window plus them would exceed
//!    `max(5, 10 % of live)`, when they would delete every live app, or when nobody is wanted at all;
//!    tripped, all of them are held (and persisted as the held set). An entry already held and not
//!    confirmed stays held, whatever the window says: only an operator lets it go.
//! 3. `confirm-deletions` stamps the held entries present at that moment; from then on those apps
//!    (and no others) may be deleted, across as many passes as it takes, for 15 minutes.
//! 4. An entry leaves the held set when its app is gone or its deletion is no longer wanted (the user
//!    upgraded again, the orphan was adopted).
//!
//! # Guarantees
//! - A deletion outside the held set is never covered by a confirmation given before it was held.
//! - Deletions are counted across passes and replicas (the window lives in the database), so frequent
//!   passes cannot drain a mass deletion a few at a time.
//!
//! # Caveats
//! - A deletion is logged before its `DELETE` call, so a call that never went out still counts for
//!   an hour: the breaker errs towards holding.

use std::collections::{BTreeMap, BTreeSet};

use super::observed::Observation;
use super::plan::{Action, Finding, Plan};
use crate::db::breaker::Hold;

/// What the pass must persist about the held set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeldChange {
    pub hold: Vec<Hold>,
    pub release: Vec<String>,
}

impl HeldChange {
    pub(crate) fn is_empty(&self) -> bool {
        self.hold.is_empty() && self.release.is_empty()
    }
}

pub(crate) struct BreakerInput<'a> {
    pub observed: &'a Observation,
    /// Apps deleted within the window.
    pub recent: &'a BTreeSet<String>,
    /// Held apps → a valid confirmation covers them.
    pub held: &'a BTreeMap<String, bool>,
    /// Apps whose deletion is still wanted (planned now, or waiting out a backoff).
    pub pending: &'a BTreeSet<String>,
    pub nobody_wanted: bool,
}

/// The most deletions allowed within the window without a confirmation.
pub(crate) fn limit(live: usize) -> usize {
    std::cmp::max(5, live / 10)
}

pub(crate) fn apply(out: &mut Plan, input: &BreakerInput<'_>) {
    let exists = |app: &str| input.observed.apps.contains_key(app);
    // Only deletions of apps that exist count: finishing a deprovision whose app is already gone
    // removes nothing.
    let planned: Vec<Hold> = out
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Deprovision { app, user_id, .. } if exists(app) => Some(Hold {
                app_name: app.clone(),
                user_id: Some(*user_id),
                kind: "deprovision",
            }),
            Action::DeleteOrphan { app } if exists(app) => Some(Hold {
                app_name: app.clone(),
                user_id: None,
                kind: "orphan",
            }),
            _ => None,
        })
        .collect();
    out.held.release = input
        .held
        .keys()
        .filter(|app| !exists(app) || !input.pending.contains(*app))
        .cloned()
        .collect();
    let confirmed = |app: &str| input.held.get(app).copied().unwrap_or(false);
    let unconfirmed: Vec<&Hold> = planned.iter().filter(|h| !confirmed(&h.app_name)).collect();
    if unconfirmed.is_empty() {
        return;
    }
    let live = input.observed.apps.len();
    let in_window: BTreeSet<&str> = input
        .recent
        .iter()
        .map(String::as_str)
        .chain(planned.iter().map(|h| h.app_name.as_str()))
        .collect();
    let trips = in_window.len() > limit(live) || planned.len() >= live || input.nobody_wanted;
    let to_hold: Vec<Hold> = unconfirmed
        .into_iter()
        .filter(|h| trips || input.held.contains_key(&h.app_name))
        .cloned()
        .collect();
    if to_hold.is_empty() {
        return;
    }
    let held_names: BTreeSet<&str> = to_hold.iter().map(|h| h.app_name.as_str()).collect();
    out.actions.retain(|a| match a {
        Action::Deprovision { app, .. } | Action::DeleteOrphan { app } => {
            !held_names.contains(app.as_str())
        }
        _ => true,
    });
    out.findings.push(Finding::DeletionsBlocked {
        would_delete: to_hold.len(),
        live,
    });
    out.held.hold = to_hold;
}
