//! The planner: a pure function from (desired, recorded, observed) to actions. No I/O, no clock: `now`
//! comes in as an argument, so every decision is reproducible in a unit or property test.
//!
//! One action at most per user per pass; the next pass (level-triggered) picks up what remains.
//!
//! A public module, unlike its neighbours: the CLI's `plan` command prints a [`Plan`], and the
//! contract and property tests build a [`PlanInput`] and match on [`Action`] and [`Finding`], so
//! the planner's inputs and outputs are public here, under the planner's name.

use chrono::{DateTime, Duration, Utc};
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

use super::breaker::{self, BreakerInput};
use super::naming;
use super::observed::{Observation, ObservedApp};
use super::plan_health::{HealthSettings, plan_health};
use super::plan_rollout::plan_rollout_part;
use super::recorded::{AppRow, RowStatus};
use super::rollout::AppState;
use crate::metrics::ActionKind;

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConvergeReason {
    /// First provision of this user.
    New,
    /// A soft-deleted row comes back (re-upgrade): same row, same name.
    Reupgrade,
    /// A provision that did not finish (crash, error, backoff expired).
    Resume,
    AppMissing,
    MachineMissing,
    MachineDown,
    DuplicateMachines,
    ImageDrift,
    ConfigDrift,
    SecretsDrift,
}

impl ConvergeReason {
    /// A difference a rollout carries (image, guest, region, env, layout, secrets), as opposed to
    /// something broken that a repair fixes at once.
    pub(crate) fn is_spec_change(&self) -> bool {
        matches!(
            self,
            Self::ImageDrift | Self::ConfigDrift | Self::SecretsDrift
        )
    }

    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Reupgrade => "reupgrade",
            Self::Resume => "resume",
            Self::AppMissing => "app_missing",
            Self::MachineMissing => "machine_missing",
            Self::MachineDown => "machine_down",
            Self::DuplicateMachines => "duplicate_machines",
            Self::ImageDrift => "image_drift",
            Self::ConfigDrift => "config_drift",
            Self::SecretsDrift => "secrets_drift",
        }
    }
}

/// Which spec a converge brings the app to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvergeTo {
    /// The configured spec, whole: new users, re-upgrades, apps already on it.
    Target,
    /// The spec the app runs (its last healthy spec when its machine is gone): a repair of an app
    /// the rollout has not moved yet, or of any app while the rollout is halted. Repairing onto the
    /// target would move the app outside the waves, or spread a change the rollout halted.
    Current,
    /// The spec the fleet last ran healthily (the halted rollout's base): a user who never ran
    /// anything, while the rollout is halted. The target when no base is recorded.
    LastHealthy,
}

impl ConvergeTo {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Target => "target",
            Self::Current => "current",
            Self::LastHealthy => "last_healthy",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Bring the user's app to the spec: create, adopt, repair or roll, whatever is missing.
    Converge {
        user_id: Uuid,
        row_id: Option<Uuid>,
        reason: ConvergeReason,
        to: ConvergeTo,
    },
    /// One app's step in the current rollout (waves, soak, rollback: `plan_rollout`).
    Rollout {
        user_id: Uuid,
        row_id: Uuid,
        rollout_id: i64,
        wave: u32,
        step: RolloutStep,
    },
    /// The user stopped being wanted: start the deprovision grace (DB only).
    MarkUnwanted { user_id: Uuid, row_id: Uuid },
    /// The user is wanted again within the grace: nothing gets deleted (DB only).
    CancelDeprovision { user_id: Uuid, row_id: Uuid },
    /// Stop, delete, confirm gone, soft-delete the row.
    Deprovision {
        user_id: Uuid,
        row_id: Uuid,
        app: String,
    },
    /// A step of the repair ladder for an app unhealthy for `REPAIR_AFTER` (`plan_health`).
    Repair {
        user_id: Uuid,
        row_id: Uuid,
        step: RepairStep,
    },
    /// Record which managed apps no live row owns (first seen / still seen); one DB statement.
    SyncOrphans { names: Vec<String> },
    /// An orphan that stayed orphaned for `ORPHAN_GRACE`.
    DeleteOrphan { app: String },
}

impl Action {
    /// The action's kind, as its metrics and log lines name it.
    pub(crate) fn label(&self) -> ActionKind {
        match self {
            Self::Converge { .. } => ActionKind::Converge,
            Self::Rollout { step, .. } => step.label(),
            Self::MarkUnwanted { .. } => ActionKind::ScheduleDeprovision,
            Self::CancelDeprovision { .. } => ActionKind::CancelDeprovision,
            Self::Deprovision { .. } => ActionKind::Deprovision,
            Self::Repair { step, .. } => match step {
                RepairStep::Restart => ActionKind::RepairRestart,
                RepairStep::Replace => ActionKind::RepairReplace,
            },
            Self::SyncOrphans { .. } => ActionKind::SyncOrphans,
            Self::DeleteOrphan { .. } => ActionKind::OrphanDelete,
        }
    }

    pub fn kind(&self) -> &'static str {
        self.label().as_str()
    }

    #[cfg(test)]
    pub(crate) fn is_deletion(&self) -> bool {
        matches!(self, Self::Deprovision { .. } | Self::DeleteOrphan { .. })
    }
}

/// Something an operator should know that needs no action (or that the controller refuses to act on).
#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    Paused {
        user_id: Uuid,
        drift: bool,
    },
    UnmanagedRowName {
        row_id: Uuid,
        name: String,
    },
    ForeignOrgRow {
        row_id: Uuid,
        org: String,
    },
    UnknownStatus {
        row_id: Uuid,
        status: String,
    },
    UserMissing {
        row_id: Uuid,
        user_id: Uuid,
    },
    Orphan {
        app: String,
        since: DateTime<Utc>,
    },
    /// The current rollout is halted; `newly` = this pass found it (persist, `ALERT rollout halted`).
    RolloutHalted {
        image: String,
        reason: String,
        newly: bool,
    },
    DeletionsBlocked {
        would_delete: usize,
        live: usize,
    },
    /// Fly could not list machines in `regions`; `held_back` users there were left alone.
    RegionsUnavailable {
        regions: Vec<String>,
        held_back: usize,
    },
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
    /// Probe and repair state by row id (`db::health`).
    pub health: &'a BTreeMap<Uuid, crate::model::health::HealthState>,
}

pub fn plan(input: &PlanInput<'_>) -> Plan {
    let s = input.settings;
    let mut out = Plan::default();
    let mut rows_by_user: BTreeMap<Uuid, &AppRow> = BTreeMap::new();
    let mut owned_names: BTreeSet<String> = BTreeSet::new();

    for row in input.rows {
        // Names of every row that is not soft-deleted are owned, even rows we refuse to act on:
        // an app a row names is never an orphan.
        if row.is_live() {
            owned_names.insert(row.fly_app_name.clone());
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

/// A row the controller refuses to act on is reported instead (invariant 1, issue "bad input").
fn check_row(row: &AppRow, s: &PlanSettings) -> Result<(), Finding> {
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
fn drift_reason(
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

/// Apps in a region Fly could not list look machineless: a converge would create a second machine
/// and a probe would misjudge them. Their users are left alone this pass (DB-only bookkeeping and
/// deletions, which do not rely on the machine list, go on); everything elsewhere proceeds.
fn hold_back_unlisted_regions(
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
fn claim_names_about_to_be_adopted(owned: &mut BTreeSet<String>, input: &PlanInput<'_>) {
    let rows: BTreeMap<Uuid, &AppRow> = input.rows.iter().map(|r| (r.user_id, r)).collect();
    for (user_id, intent) in input.desired {
        if intent.intent != Intent::Present {
            continue;
        }
        match rows.get(user_id) {
            Some(row) => owned.insert(row.fly_app_name.clone()),
            None => owned.insert(naming::candidate(&input.settings.prefix, *user_id, 0)),
        };
    }
}

fn plan_orphans(
    out: &mut Plan,
    owned: &BTreeSet<String>,
    pending: &mut BTreeSet<String>,
    input: &PlanInput<'_>,
) {
    let s = input.settings;
    let orphans: Vec<String> = input
        .observed
        .apps
        .keys()
        .filter(|name| naming::is_managed(&s.prefix, name) && !owned.contains(*name))
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

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
