//! Per-row judgments: which rows the planner refuses, and why an active row needs a converge.

use super::{ConvergeReason, Finding, PlanSettings};
use crate::reconcile::naming;
use crate::reconcile::observed::ObservedApp;
use crate::reconcile::recorded::AppRow;

/// A row the controller refuses to act on is reported instead (invariant 1, issue "bad input").
pub(super) fn check_row(row: &AppRow, s: &PlanSettings) -> Result<(), Finding> {
    if row.status().is_none() {
        return Err(Finding::UnknownStatus {
            row_id: row.id,
            status: row.status.to_string(),
        });
    }
    if !naming::is_managed(&s.prefix, &row.fly_app_name) {
        return Err(Finding::UnmanagedRowName {
            row_id: row.id,
            name: row.fly_app_name.clone(),
        });
    }
    if let Some(org) = &row.fly_org_slug
        && !org.is_empty()
        && org != &s.org_slug
    {
        return Err(Finding::ForeignOrgRow {
            row_id: row.id,
            org: org.to_string(),
        });
    }
    if !row.user_exists {
        return Err(Finding::UserMissing {
            row_id: row.id,
            user_id: row.user_id,
        });
    }
    Ok(())
}

/// Why an active row needs a converge, judged from the row and the list observation only.
pub(super) fn drift_reason(
    row: &AppRow,
    observed: Option<&ObservedApp>,
    s: &PlanSettings,
    image: &str,
) -> Option<ConvergeReason> {
    let Some(app) = observed else {
        return Some(ConvergeReason::AppMissing);
    };
    let machines: Vec<_> = app.live_machines().collect();
    let m = match machines.as_slice() {
        [] => return Some(ConvergeReason::MachineMissing),
        [m] => *m,
        _ => return Some(ConvergeReason::DuplicateMachines),
    };
    if row.machine_id.as_deref() != Some(m.id.as_str()) {
        return Some(ConvergeReason::Resume);
    }
    if m.is_down() {
        return Some(ConvergeReason::MachineDown);
    }
    if m.image != image {
        return Some(ConvergeReason::ImageDrift);
    }
    if row.docker_image.as_deref() != Some(image) {
        // Fly already runs it but the row does not say so: a rollout interrupted before its record.
        return Some(ConvergeReason::Resume);
    }
    let guest_ok = m.cpus.is_none_or(|c| c == s.cpus)
        && m.memory_mb.is_none_or(|mb| mb == s.memory_mb)
        && m.cpu_kind.as_deref().is_none_or(|k| k == "shared");
    if !guest_ok || m.region != s.region || row.config_digest.as_deref() != Some(&s.config_digest) {
        return Some(ConvergeReason::ConfigDrift);
    }
    if row.secrets_digest.as_deref() != Some(&s.secrets_digest) {
        return Some(ConvergeReason::SecretsDrift);
    }
    if !row.ips_ready {
        return Some(ConvergeReason::Resume);
    }
    None
}
