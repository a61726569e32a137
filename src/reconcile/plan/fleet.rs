//! The fleet-wide steps after the per-user decisions: users in unlisted regions held back, and
//! the orphans.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

use super::{Action, Finding, Intent, Plan, PlanInput};
use crate::reconcile::naming;
use crate::reconcile::recorded::AppRow;

/// Apps in a region Fly could not list look machineless: a converge would create a second machine
/// and a probe would misjudge them. Their users are left alone this pass (DB-only bookkeeping and
/// deletions, which do not rely on the machine list, go on); everything elsewhere proceeds.
pub(super) fn hold_back_unlisted_regions(
    out: &mut Plan,
    rows: &BTreeMap<Uuid, &AppRow>,
    input: &PlanInput<'_>,
) {
    let failed = &input.observed.error_regions;
    if failed.is_empty() {
        return;
    }
    let configured = &input.settings.region;
    let affected = |user_id: &Uuid| {
        let recorded = rows.get(user_id).and_then(|r| r.region.as_deref());
        failed.contains(configured) || recorded.is_some_and(|r| failed.contains(r))
    };
    let before = out.actions.len();
    out.actions.retain(|a| match a {
        Action::Converge { user_id, .. }
        | Action::Repair { user_id, .. }
        | Action::Rollout { user_id, .. } => !affected(user_id),
        _ => true,
    });
    out.findings.push(Finding::RegionsUnavailable {
        regions: failed.iter().cloned().collect(),
        held_back: before - out.actions.len(),
    });
}

/// A wanted user's converge adopts an existing app of our org under the name it would use: the
/// soft-deleted row's name on a re-upgrade, the first candidate for a user without a row. Such an
/// app is no orphan, even before the converge has made its row live, or the same pass could delete
/// the app the converge adopts.
pub(super) fn claim_names_about_to_be_adopted<'a>(
    owned: &mut BTreeSet<Cow<'a, str>>,
    input: &PlanInput<'a>,
) {
    let rows: BTreeMap<Uuid, &AppRow> = input.rows.iter().map(|r| (r.user_id, r)).collect();
    for (user_id, intent) in input.desired {
        if intent.intent != Intent::Present {
            continue;
        }
        match rows.get(user_id) {
            Some(row) => owned.insert(Cow::Borrowed(row.fly_app_name.as_str())),
            None => owned.insert(Cow::Owned(naming::candidate(
                &input.settings.prefix,
                *user_id,
                0,
            ))),
        };
    }
}

pub(super) fn plan_orphans(
    out: &mut Plan,
    owned: &BTreeSet<Cow<'_, str>>,
    pending: &mut BTreeSet<String>,
    input: &PlanInput<'_>,
) {
    let s = input.settings;
    let orphans: Vec<String> = input
        .observed
        .apps
        .keys()
        .filter(|name| naming::is_managed(&s.prefix, name) && !owned.contains(name.as_str()))
        .cloned()
        .collect();
    for name in &orphans {
        let since = input
            .orphans_first_seen
            .get(name)
            .copied()
            .unwrap_or(input.now);
        out.findings.push(Finding::Orphan {
            app: name.clone(),
            since,
        });
        if since + s.orphan_grace <= input.now && input.orphans_first_seen.contains_key(name) {
            pending.insert(name.clone());
            out.actions.push(Action::DeleteOrphan { app: name.clone() });
        }
    }
    let known: Vec<&String> = input.orphans_first_seen.keys().collect();
    if orphans.iter().collect::<Vec<_>>() != known {
        out.actions.push(Action::SyncOrphans { names: orphans });
    }
}
