//! The planner's rollout part: turns each live row's standing (new, under repair, on the
//! target, drifted from it) and its recorded progress into the wave decision's input, calls
//! [`decide`](super::rollout::decide), and turns the decision into actions. Pure like the planner:
//! the pass loads the rollout row and the per-app progress and passes them in.
//!
//! Which rows the rollout owns: an active row whose machine differs from the target only in what a
//! rollout changes (image, guest, region, env, layout, secrets). Rows still being provisioned get
//! the target directly (`Bypass::New`); rows with a missing app, a missing, stopped or duplicated
//! machine are repaired at once (`Bypass::Repair`). Neither waits for a wave nor holds one back.

use std::collections::BTreeMap;
use uuid::Uuid;

use super::plan::{Action, ConvergeReason, ConvergeTo, Finding, Plan, PlanInput};
use super::recorded::AppRow;
use super::rollout::{AppState, Bypass, Decision, Rollout, RolloutApp, Step, WaveSettings, decide};
use crate::metrics::ActionKind;

/// What the pass read about the current rollout.
#[derive(Debug, Clone)]
pub struct RolloutInput {
    /// `vyx_fleet.rollout.id`; 0 when the target has no row yet (a dry run before the first pass).
    pub id: i64,
    pub rollout: Rollout,
    pub target_image: String,
    pub settings: WaveSettings,
    /// Recorded progress of rows that belong to this rollout (`rollout_id = id`).
    pub recorded: BTreeMap<Uuid, AppState>,
}

/// Where a live row stands against the target, as the planner judged it from the row and the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    New,
    Repair,
    OnTarget,
    /// Runs an older spec: the rollout's to move.
    Drifted,
}

/// What the rollout adds to the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutPlan {
    pub id: i64,
    pub target_image: String,
    pub decision: Decision,
}

/// The step an executor takes for one app of the rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutStep {
    /// Record `moving`, update the machine, wait for the new version's verdict (also resumes a
    /// move a crash interrupted: the update is not sent again once the machine runs the target).
    Move,
    /// A soaking app: read its machine; a check not passing on the new version fails it.
    Check,
    /// Soaked: record `healthy` and the spec as the app's new rollback point.
    Settle,
    /// Failed: put the app back on the last spec it ran healthily.
    Back,
}

impl RolloutStep {
    pub(crate) fn label(self) -> ActionKind {
        match self {
            Self::Move => ActionKind::RolloutMove,
            Self::Check => ActionKind::RolloutCheck,
            Self::Settle => ActionKind::RolloutSettle,
            Self::Back => ActionKind::RolloutBack,
        }
    }

    pub(crate) fn kind(self) -> &'static str {
        self.label().as_str()
    }
}

/// Decide this pass's rollout actions. `rows` are the live, actionable rows with their standing,
/// in canary order (oldest first). Returns the actions and, for the pass, the decision; rows a
/// rollout moved that drifted again afterwards are returned in `repair` (converge them as repairs).
pub(crate) fn plan_rollout(
    input: &RolloutInput,
    rows: &[(&AppRow, Standing)],
    now: chrono::DateTime<chrono::Utc>,
) -> (Vec<Action>, RolloutPlan, Vec<Uuid>) {
    let mut apps = Vec::with_capacity(rows.len());
    let mut repair = Vec::new();
    for (row, standing) in rows {
        let recorded = input.recorded.get(&row.id).copied();
        let (state, bypass) = match standing {
            Standing::New => (AppState::Pending, Some(Bypass::New)),
            Standing::Repair => (AppState::Pending, Some(Bypass::Repair)),
            Standing::OnTarget => (recorded.unwrap_or(AppState::Healthy { wave: 0 }), None),
            Standing::Drifted => match recorded {
                // Moved and settled, then changed behind our back: a repair, not a second move.
                Some(AppState::Healthy { .. }) => {
                    repair.push(row.id);
                    (AppState::Pending, Some(Bypass::Repair))
                }
                Some(s) => (s, None),
                None => (AppState::Pending, None),
            },
        };
        apps.push(RolloutApp {
            id: row.id,
            state,
            bypass,
        });
    }
    let decision = decide(&input.rollout, &apps, &input.settings, now);
    let users: BTreeMap<Uuid, Uuid> = rows.iter().map(|(r, _)| (r.id, r.user_id)).collect();
    let action = |row_id: Uuid, wave: u32, step: RolloutStep| Action::Rollout {
        user_id: users[&row_id],
        row_id,
        rollout_id: input.id,
        wave,
        step,
    };
    // A step that failed on a Fly error waits out its backoff (the app stays where it is in its
    // wave, still counted in transition).
    let waiting: Vec<Uuid> = rows
        .iter()
        .filter(|(r, _)| r.next_attempt_at.is_some_and(|t| t > now))
        .map(|(r, _)| r.id)
        .collect();
    let mut actions = Vec::new();
    for app in apps
        .iter()
        .filter(|a| a.bypass.is_none() && !waiting.contains(&a.id))
    {
        match app.state {
            // A move a crash or a timeout interrupted: resume it (no second update).
            AppState::Moving { wave } => actions.push(action(app.id, wave, RolloutStep::Move)),
            AppState::Soaking { wave, since } if now - since >= input.settings.soak => {
                actions.push(action(app.id, wave, RolloutStep::Settle))
            }
            AppState::Soaking { wave, .. } => {
                actions.push(action(app.id, wave, RolloutStep::Check))
            }
            AppState::Failed { wave } if decision.roll_back.contains(&app.id) => {
                actions.push(action(app.id, wave, RolloutStep::Back))
            }
            _ => {}
        }
    }
    if let Step::Advance { wave, apps: moving } = &decision.step {
        for id in moving.iter().filter(|id| !waiting.contains(id)) {
            actions.push(action(*id, *wave, RolloutStep::Move));
        }
    }
    let plan = RolloutPlan {
        id: input.id,
        target_image: input.target_image.clone(),
        decision,
    };
    (actions, plan, repair)
}

/// The rollout's actions, its decision, and the halt finding. Rows a rollout moved that drifted
/// again after they settled are converged as repairs.
pub(super) fn plan_rollout_part(
    out: &mut Plan,
    standings: &BTreeMap<Uuid, Standing>,
    input: &PlanInput<'_>,
) {
    let rows: Vec<(&AppRow, Standing)> = input
        .rows
        .iter()
        .filter_map(|r| standings.get(&r.id).map(|st| (r, *st)))
        .collect();
    let (actions, rollout, repair) = plan_rollout(input.rollout, &rows, input.now);
    for row in rows
        .iter()
        .map(|(r, _)| *r)
        .filter(|r| repair.contains(&r.id))
    {
        if row.next_attempt_at.is_none_or(|t| t <= input.now) {
            out.actions.push(Action::Converge {
                user_id: row.user_id,
                row_id: Some(row.id),
                reason: ConvergeReason::ConfigDrift,
                to: ConvergeTo::Target,
            });
        }
    }
    out.actions.extend(actions);
    if let Step::Halted { halt, newly } = &rollout.decision.step {
        out.findings.push(Finding::RolloutHalted {
            image: rollout.target_image.clone(),
            reason: halt.reason.to_string(),
            newly: *newly,
        });
    }
    out.rollout = Some(rollout);
}
