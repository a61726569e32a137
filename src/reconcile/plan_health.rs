//! The planner's health part: which unhealthy apps to repair. Probing is not
//! planned: the prober (`prober.rs`) probes beside the passes and records the verdicts this reads.
//! Pure: the pass reads each row's repair state (`db::health`) and passes it in.
//!
//! Repair ladder, per unhealthy spell (it ends when a probe sees the app healthy again):
//! unhealthy for `REPAIR_AFTER` → restart; still unhealthy `REPAIR_AFTER` after that → replace
//! the machine (make-before-break); still unhealthy `REPAIR_AFTER` after the replace → restart
//! again, and so on. At most `REPAIR_MAX_PER_PASS` steps a pass, longest-unhealthy first, so a
//! Fly-wide incident does not become a replace storm.

use chrono::{DateTime, Duration, Utc};
use std::collections::BTreeMap;
use uuid::Uuid;

use super::plan::Action;
use super::recorded::AppRow;
use crate::model::health::HealthState;

/// A repair step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairStep {
    /// Stop and start the machine: clears a wedged process, keeps the machine.
    Restart,
    /// A new machine beside the old one; the old one goes once the new one passes its checks.
    Replace,
}

impl RepairStep {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Restart => "restart",
            Self::Replace => "replace",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct HealthSettings {
    pub repair_after: Duration,
    pub repair_max_per_pass: usize,
}

/// The next repair step `row` is due for at `now`, if any.
pub(crate) fn due_step(
    row: &AppRow,
    h: &HealthState,
    s: &HealthSettings,
    now: DateTime<Utc>,
) -> Option<RepairStep> {
    if row.health_status.as_deref() != Some("unhealthy") {
        return None;
    }
    let since = h.unhealthy_since?;
    match (h.repair_step.as_deref(), h.repair_step_at) {
        (Some("restart"), Some(at)) => (at + s.repair_after <= now).then_some(RepairStep::Replace),
        (Some(_), Some(at)) => (at + s.repair_after <= now).then_some(RepairStep::Restart),
        _ => (since + s.repair_after <= now).then_some(RepairStep::Restart),
    }
}

/// Repairs for `rows` (active apps on the target, not in a rollout wave). Returns the actions and
/// the rows under repair (the rollout treats them as bypassed).
pub(crate) fn plan_health(
    rows: &[&AppRow],
    health: &BTreeMap<Uuid, HealthState>,
    s: &HealthSettings,
    now: DateTime<Utc>,
) -> (Vec<Action>, Vec<Uuid>) {
    let none = HealthState::default();
    let state = |r: &AppRow| health.get(&r.id).unwrap_or(&none);
    let mut due: Vec<(&AppRow, RepairStep, DateTime<Utc>)> = rows
        .iter()
        .filter(|r| r.next_attempt_at.is_none_or(|t| t <= now))
        .filter_map(|r| {
            let h = state(r);
            due_step(r, h, s, now).map(|step| (*r, step, h.unhealthy_since.unwrap_or(now)))
        })
        .collect();
    due.sort_by_key(|(r, _, since)| (*since, r.id));
    due.truncate(s.repair_max_per_pass);
    let repairing: Vec<Uuid> = due.iter().map(|(r, ..)| r.id).collect();
    let actions: Vec<Action> = due
        .iter()
        .map(|(r, step, _)| Action::Repair {
            user_id: r.user_id,
            row_id: r.id,
            step: *step,
        })
        .collect();
    (actions, repairing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::recorded::RowStatus;
    use crate::reconcile::recorded::fixture::RowFixture;

    fn t(min: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
            + Duration::minutes(min)
    }

    fn settings(max: usize) -> HealthSettings {
        HealthSettings {
            repair_after: Duration::minutes(5),
            repair_max_per_pass: max,
        }
    }

    fn unhealthy(n: u128) -> AppRow {
        RowFixture::new(
            Uuid::from_u128(n),
            &format!("vyx-user-{n}"),
            RowStatus::Active,
        )
        .with(|r| {
            r.health_status = Some("unhealthy".into());
            r.machine_id = Some("m".into());
        })
        .build()
    }

    fn spell(since: i64, step: Option<(&str, i64)>) -> HealthState {
        HealthState {
            unhealthy_since: Some(t(since)),
            last_probed_at: Some(t(0)),
            repair_step: step.map(|(s, _)| s.to_string()),
            repair_step_at: step.map(|(_, at)| t(at)),
        }
    }

    #[test]
    fn the_ladder_restarts_after_repair_after_then_replaces_after_as_long_again() {
        let row = unhealthy(1);
        let s = settings(5);
        assert_eq!(due_step(&row, &spell(0, None), &s, t(4)), None);
        assert_eq!(
            due_step(&row, &spell(0, None), &s, t(5)),
            Some(RepairStep::Restart)
        );
        let restarted = spell(0, Some(("restart", 5)));
        assert_eq!(due_step(&row, &restarted, &s, t(9)), None);
        assert_eq!(
            due_step(&row, &restarted, &s, t(10)),
            Some(RepairStep::Replace)
        );
        let replaced = spell(0, Some(("replace", 10)));
        assert_eq!(
            due_step(&row, &replaced, &s, t(15)),
            Some(RepairStep::Restart)
        );
        let mut healthy = row.clone();
        healthy.health_status = Some("healthy".into());
        assert_eq!(due_step(&healthy, &spell(0, None), &s, t(60)), None);
    }

    #[test]
    fn repairs_per_pass_are_bounded_longest_unhealthy_first() {
        let rows: Vec<AppRow> = (1..=4).map(unhealthy).collect();
        let refs: Vec<&AppRow> = rows.iter().collect();
        let health: BTreeMap<Uuid, HealthState> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id, spell(-(i as i64), None)))
            .collect();
        let (actions, repairing) = plan_health(&refs, &health, &settings(2), t(10));
        assert_eq!(repairing, vec![rows[3].id, rows[2].id]);
        assert_eq!(actions.len(), 2, "{actions:?}");
    }
}
