//! The planner: a pure function from (desired, recorded, observed) to actions. No I/O, no clock: `now`
//! comes in as an argument, so every decision is reproducible in a unit or property test.
//!
//! One action at most per user per pass; the next pass (level-triggered) picks up what remains.
//!
//! A public module, unlike its neighbours: the CLI's `plan` command prints a [`Plan`], and the
//! contract and property tests build a [`PlanInput`] and match on [`Action`] and [`Finding`], so
//! the planner's inputs and outputs are public here, under the planner's name.

use chrono::{DateTime, Duration, Utc};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

mod action;
mod fleet;
mod row;

use super::breaker::{self, BreakerInput};
use super::observed::Observation;
use super::plan_health::{HealthSettings, plan_health};
use super::plan_rollout::plan_rollout_part;
use super::recorded::{AppRow, RowStatus};
use super::rollout::AppState;
use fleet::{claim_names_about_to_be_adopted, hold_back_unlisted_regions, plan_orphans};
use row::{check_row, drift_reason};
// The tests take the planner's neighbours from here, with `super::*`.
#[cfg(test)]
use super::{naming, observed::ObservedApp};

pub use action::{Action, ConvergeReason, ConvergeTo, Finding};

// The types of the planner's input and output that are defined beside the modules computing them.
pub use super::breaker::HeldChange;
pub use super::desired::{Intent, IntentSource, UserIntent};
pub use super::plan_health::RepairStep;
pub use super::plan_rollout::{RolloutInput, RolloutPlan, RolloutStep, Standing};

/// The settings the planner needs, already derived (digests computed once per pass).
#[derive(Debug, Clone)]
pub struct PlanSettings {
    pub prefix: String,
    pub org_slug: String,
    pub image: String,
    pub region: String,
    pub cpus: u32,
    pub memory_mb: u32,
    pub config_digest: String,
    pub secrets_digest: String,
    pub deprovision_grace: Duration,
    pub orphan_grace: Duration,
    /// Unhealthy this long → restart; as long again → replace (`plan_health`).
    pub repair_after: Duration,
    pub repair_max_per_pass: usize,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub findings: Vec<Finding>,
    /// Deletions the breaker holds back now, and held ones to forget (DB only, before the actions).
    pub held: HeldChange,
    /// The rollout's decision this pass (the pass persists the halt, progress and gauges).
    pub rollout: Option<RolloutPlan>,
}

pub struct PlanInput<'a> {
    /// The database's clock, read once per pass: every grace and backoff stored in rows was
    /// written with it, so a replica's skewed clock cannot shorten them.
    pub now: DateTime<Utc>,
    pub settings: &'a PlanSettings,
    pub desired: &'a BTreeMap<Uuid, UserIntent>,
    pub rows: &'a [AppRow],
    pub observed: &'a Observation,
    /// `vyx_fleet.orphans.first_seen_at` by app name.
    pub orphans_first_seen: &'a BTreeMap<String, DateTime<Utc>>,
    /// Apps deleted within the breaker's sliding window.
    pub recent_deletions: &'a BTreeSet<String>,
    /// The breaker's held set: app → a valid confirmation covers it.
    pub held_deletions: &'a BTreeMap<String, bool>,
    /// The current rollout (target = the configured spec) and each row's recorded progress in it.
    pub rollout: &'a RolloutInput,
    /// Repair state by row id, of the rows in an unhealthy spell (`db::health`); a row not in it
    /// has none.
    pub health: &'a BTreeMap<Uuid, crate::model::health::HealthState>,
}

pub fn plan(input: &PlanInput<'_>) -> Plan {
    let s = input.settings;
    let mut out = Plan::default();
    let mut rows_by_user: BTreeMap<Uuid, &AppRow> = BTreeMap::new();
    // Borrowed from the rows (a copy of every name was 1.8 MB of the pass's peak at 100,000 rows);
    // owned only for the names a converge would give a user without a row.
    let mut owned_names: BTreeSet<Cow<'_, str>> = BTreeSet::new();

    for row in input.rows {
        // Names of every row that is not soft-deleted are owned, even rows we refuse to act on:
        // an app a row names is never an orphan.
        if row.is_live() {
            owned_names.insert(Cow::Borrowed(&row.fly_app_name));
        }
        match check_row(row, s) {
            Ok(()) => {
                rows_by_user.insert(row.user_id, row);
            }
            Err(f) => out.findings.push(f),
        }
    }
    let skipped_users: BTreeSet<Uuid> = input
        .rows
        .iter()
        .filter(|r| !rows_by_user.contains_key(&r.user_id))
        .map(|r| r.user_id)
        .collect();

    let halted = input.rollout.rollout.halted.is_some();
    // Rows the rollout sees, in canary order (`rows` come oldest first).
    let mut standings: BTreeMap<Uuid, Standing> = BTreeMap::new();
    let mut probe_candidates: Vec<&AppRow> = Vec::new();
    // Apps whose deletion is wanted, planned this pass or waiting out a backoff: what the breaker's
    // held set may keep.
    let mut pending: BTreeSet<String> = BTreeSet::new();

    let users: BTreeSet<Uuid> = input
        .desired
        .keys()
        .chain(rows_by_user.keys())
        .copied()
        .filter(|u| !skipped_users.contains(u))
        .collect();

    for user_id in users {
        let intent = input
            .desired
            .get(&user_id)
            .map(|i| i.intent)
            .unwrap_or(Intent::Absent);
        let row = rows_by_user.get(&user_id).copied();
        let observed = row.and_then(|r| input.observed.apps.get(&r.fly_app_name));
        let in_backoff = row
            .and_then(|r| r.next_attempt_at)
            .is_some_and(|t| t > input.now);

        match intent {
            Intent::Paused => {
                let drift = row.is_some_and(|r| {
                    r.is_live() && drift_reason(r, observed, s, &s.image).is_some()
                });
                out.findings.push(Finding::Paused { user_id, drift });
            }
            Intent::Present => {
                let Some(row) = row else {
                    // A new user (no row yet) counts in the live total only from its first row.
                    out.actions.push(Action::Converge {
                        user_id,
                        row_id: None,
                        reason: ConvergeReason::New,
                        to: if halted {
                            ConvergeTo::LastHealthy
                        } else {
                            ConvergeTo::Target
                        },
                    });
                    continue;
                };
                let status = row.status().expect("checked by check_row");
                if row.unwanted_since.is_some()
                    && row.is_live()
                    && status != RowStatus::Deprovisioning
                {
                    out.actions.push(Action::CancelDeprovision {
                        user_id,
                        row_id: row.id,
                    });
                    continue;
                }
                let drift = (status == RowStatus::Active)
                    .then(|| drift_reason(row, observed, s, &s.image))
                    .flatten();
                // An app this rollout moved and has not settled is the rollout's, whatever the
                // list shows: a machine down, missing or duplicated on the new spec is that spec
                // failing (judged, and rolled back, by its rollout step), never a repair that
                // would forget the move, stop counting it against the cap and converge it onto
                // the spec that broke it. Only a vanished app is rebuilt first.
                let recorded = input.rollout.recorded.get(&row.id);
                let in_wave = matches!(
                    recorded,
                    Some(
                        AppState::Moving { .. }
                            | AppState::Soaking { .. }
                            | AppState::Failed { .. }
                    )
                ) && !matches!(drift, Some(ConvergeReason::AppMissing))
                    && status != RowStatus::Deprovisioning;
                let standing = match (&status, &drift) {
                    _ if in_wave => Standing::Drifted,
                    (RowStatus::Active, None) => Standing::OnTarget,
                    (RowStatus::Active, Some(r)) if r.is_spec_change() => Standing::Drifted,
                    (RowStatus::Active, Some(_)) => Standing::Repair,
                    _ => Standing::New,
                };
                if row.is_live() {
                    standings.insert(row.id, standing);
                }
                if in_backoff {
                    continue;
                }
                // A repair keeps the spec the app runs unless the app is on the target already,
                // and keeps it whatever it is while the rollout is halted: repairs never carry a
                // change outside the waves, nor one the rollout halted.
                let on_target = row.docker_image.as_deref() == Some(s.image.as_str())
                    && row.config_digest.as_deref() == Some(s.config_digest.as_str())
                    && row.secrets_digest.as_deref() == Some(s.secrets_digest.as_str());
                let repair_to = if halted || !on_target {
                    ConvergeTo::Current
                } else {
                    ConvergeTo::Target
                };
                let converge = |reason, to| Action::Converge {
                    user_id,
                    row_id: Some(row.id),
                    reason,
                    to,
                };
                match status {
                    // A deprovision that started runs to completion; the next pass re-provisions.
                    RowStatus::Deprovisioning => {
                        pending.insert(row.fly_app_name.clone());
                        out.actions.push(Action::Deprovision {
                            user_id,
                            row_id: row.id,
                            app: row.fly_app_name.clone(),
                        })
                    }
                    RowStatus::Deleted => {
                        let to = if halted {
                            ConvergeTo::LastHealthy
                        } else {
                            ConvergeTo::Target
                        };
                        out.actions.push(converge(ConvergeReason::Reupgrade, to));
                    }
                    // A row in error on the rollout's spec is its rollout's to roll back.
                    RowStatus::Provisioning | RowStatus::Error if in_wave => {}
                    // An app that once ran healthily resumes on what it ran while the rollout is
                    // halted; one that never did has nothing older to run.
                    RowStatus::Provisioning | RowStatus::Error => {
                        let to = match (halted, row.docker_image.is_some()) {
                            (true, true) => ConvergeTo::Current,
                            (true, false) => ConvergeTo::LastHealthy,
                            (false, _) => ConvergeTo::Target,
                        };
                        out.actions.push(converge(ConvergeReason::Resume, to))
                    }
                    RowStatus::Active => match (standing, drift) {
                        (Standing::Repair, Some(reason)) => {
                            out.actions.push(converge(reason, repair_to))
                        }
                        // Apps in a wave are read by their rollout step instead.
                        (Standing::OnTarget, _) if !in_wave => probe_candidates.push(row),
                        // The rollout moves it, in its wave (`plan_rollout` below).
                        _ => {}
                    },
                }
            }
            Intent::Absent => {
                let Some(row) = row else { continue };
                let status = row.status().expect("checked by check_row");
                match status {
                    RowStatus::Deleted => {}
                    RowStatus::Deprovisioning => {
                        pending.insert(row.fly_app_name.clone());
                        if !in_backoff {
                            out.actions.push(Action::Deprovision {
                                user_id,
                                row_id: row.id,
                                app: row.fly_app_name.clone(),
                            });
                        }
                    }
                    RowStatus::Provisioning | RowStatus::Active | RowStatus::Error => {
                        match row.unwanted_since {
                            None => out.actions.push(Action::MarkUnwanted {
                                user_id,
                                row_id: row.id,
                            }),
                            Some(since) if since + s.deprovision_grace <= input.now => {
                                pending.insert(row.fly_app_name.clone());
                                if !in_backoff {
                                    out.actions.push(Action::Deprovision {
                                        user_id,
                                        row_id: row.id,
                                        app: row.fly_app_name.clone(),
                                    });
                                }
                            }
                            Some(_) => {}
                        }
                    }
                }
            }
        }
    }

    let (health_actions, repairing) = plan_health(
        &probe_candidates,
        input.health,
        &HealthSettings {
            repair_after: s.repair_after,
            repair_max_per_pass: s.repair_max_per_pass,
        },
        input.now,
    );
    // Repairs are never held back by a rollout, nor counted in its waves.
    for id in &repairing {
        standings.insert(*id, Standing::Repair);
    }
    plan_rollout_part(&mut out, &standings, input);
    out.actions.extend(health_actions);
    hold_back_unlisted_regions(&mut out, &rows_by_user, input);
    claim_names_about_to_be_adopted(&mut owned_names, input);
    plan_orphans(&mut out, &owned_names, &mut pending, input);
    let nobody_wanted = !input
        .desired
        .values()
        .any(|i| matches!(i.intent, Intent::Present | Intent::Paused));
    breaker::apply(
        &mut out,
        &BreakerInput {
            observed: input.observed,
            recent: input.recent_deletions,
            held: input.held_deletions,
            pending: &pending,
            nobody_wanted,
        },
    );
    out
}

#[cfg(test)]
#[path = "../plan_tests.rs"]
mod tests;
