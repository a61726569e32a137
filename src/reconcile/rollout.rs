//! The wave decision of a progressive rollout: given where each app stands on the target
//! spec, which apps move next, when to halt, which failed apps go back. Pure like the planner: no
//! I/O, no clock (`now` comes in), so every rule is a unit or property test. The executors that act
//! on it, and the wiring into the pass, are described in `docs/ROLLOUT.md`.
//!
//! # The model (Argo Rollouts' canary steps, Flagger's analysis)
//! - The target is a [`spec_digest`](super::spec::spec_digest). Apps move to it in waves: the first
//!   wave is exactly one app (the canary); each wave after a *clean* one (every app soaked healthy)
//!   is twice as large, capped at `ROLLOUT_MAX_UNAVAILABLE`. A wave with a tolerated failure does
//!   not grow the next one: growth needs healthy evidence.
//! - A wave starts only when no app is in transition: every app of the previous wave stayed
//!   healthy on the new machine version for `ROLLOUT_SOAK`, or failed.
//! - In transition = moving, soaking, or failed and not yet rolled back (a failed app is down).
//!   Never more than the cap at once.
//! - Halt: any failure before the first clean wave (the canary's); later, more failures than
//!   `ROLLOUT_FAILURE_THRESHOLD` of the moved apps. Failures an operator resumed past are forgiven.
//!   A halted rollout moves nothing until the target changes (a new rollout, new state) or an
//!   operator resumes (`vyx-fleet rollout resume` clears the halt in the table).
//! - Every failed app is rolled back, halted or not, so no user stays on a broken spec.
//! - Only a pending app moves, and a moved app never becomes pending again for the same target:
//!   no app moves twice. A rolled-back app waits for the next target.
//! - New users (provisioned on the target directly) and apps under repair bypass the rollout:
//!   they are never moved by it, never held back by it, and count only in the live total.

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use crate::config::CountOrPercent;
pub(crate) use crate::model::rollout::Rollout;
pub use crate::model::rollout::{AppState, Halt, HaltReason, Tally};

/// The rollout settings, as `Settings::operations` holds them.
#[derive(Debug, Clone, Copy)]
pub struct WaveSettings {
    pub max_unavailable: CountOrPercent,
    pub failure_threshold: CountOrPercent,
    pub soak: Duration,
}

/// Why an app is not the rollout's to move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bypass {
    /// Being provisioned: it gets the target spec directly.
    New,
    /// Broken: repairs are never held back by a rollout.
    Repair,
}

/// One live app. The caller passes every live app, in the order canaries should be picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RolloutApp {
    pub id: Uuid,
    pub state: AppState,
    pub bypass: Option<Bypass>,
}

/// What the rollout does this pass: exactly one of these.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Every app the rollout moves runs the target (rolled-back apps wait for the next one).
    Complete,
    /// Start wave `wave` with these apps (pending ones, in the caller's order).
    Advance { wave: u32, apps: Vec<Uuid> },
    /// Nothing may start yet: apps are in transition. `until` = when the last soaking app's soak
    /// ends (the next wave may start then, unless an app is still moving), if any soaks.
    Wait { until: Option<DateTime<Utc>> },
    /// Halted: move nothing. `newly` = this decision found it (persist, `ALERT rollout halted`).
    Halted { halt: Halt, newly: bool },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub step: Step,
    /// Failed apps to put back on their last healthy spec: every one, halted or not.
    pub roll_back: Vec<Uuid>,
    pub tally: Tally,
}

/// The most apps in transition at once: `ROLLOUT_MAX_UNAVAILABLE` of the live apps, at least one
/// (a percentage of a small fleet must still let the canary through).
pub fn max_in_transition(s: &WaveSettings, live: usize) -> usize {
    s.max_unavailable.of(live).max(1)
}

pub(crate) fn decide(
    rollout: &Rollout,
    apps: &[RolloutApp],
    s: &WaveSettings,
    now: DateTime<Utc>,
) -> Decision {
    let soaked = |since: DateTime<Utc>| now - since >= s.soak;
    let mut tally = Tally::default();
    let mut last_wave = 0u32;
    // Per wave up to `last_wave`: (still in flight, had a failure).
    let mut waves: std::collections::BTreeMap<u32, (bool, bool)> = Default::default();
    let mut soak_ends: Option<DateTime<Utc>> = None;
    // The failed app of the latest wave: after a resume, older failures are forgiven ones.
    let mut latest_failed: Option<(u32, Uuid)> = None;

    for app in apps.iter().filter(|a| a.bypass.is_none()) {
        let in_flight = match app.state {
            AppState::Pending => {
                tally.pending += 1;
                false
            }
            AppState::Moving { .. } => {
                tally.moving += 1;
                true
            }
            AppState::Soaking { since, .. } if !soaked(since) => {
                tally.soaking += 1;
                let end = since + s.soak;
                soak_ends = Some(soak_ends.map_or(end, |e| e.max(end)));
                true
            }
            AppState::Healthy { wave: 0 } => {
                tally.already_on_target += 1;
                false
            }
            AppState::Soaking { .. } | AppState::Healthy { .. } => {
                tally.healthy += 1;
                false
            }
            AppState::Failed { wave } | AppState::RolledBack { wave } => {
                if matches!(app.state, AppState::Failed { .. }) {
                    tally.failed += 1;
                } else {
                    tally.rolled_back += 1;
                }
                if latest_failed.is_none_or(|(w, _)| wave > w) {
                    latest_failed = Some((wave, app.id));
                }
                false
            }
        };
        if let Some(w) = app.state.wave().filter(|w| *w > 0) {
            last_wave = last_wave.max(w);
            let failed = matches!(
                app.state,
                AppState::Failed { .. } | AppState::RolledBack { .. }
            );
            let e = waves.entry(w).or_default();
            e.0 |= in_flight;
            e.1 |= failed;
        }
    }
    tally.bypassed = apps.len() - apps.iter().filter(|a| a.bypass.is_none()).count();
    tally.waves_done = waves.values().filter(|(busy, _)| !busy).count() as u32;
    // After a resume, growth starts again from one canary: only waves after the last forgiven
    // failure are evidence for the spec the operator let go on.
    let resumed_after = forgiven_up_to(apps, rollout.failures_forgiven);
    let clean_waves = waves
        .range(resumed_after + 1..)
        .filter(|(_, (busy, bad))| !busy && !bad)
        .count();
    let moved = tally.moved();

    let roll_back: Vec<Uuid> = apps
        .iter()
        .filter(|a| a.bypass.is_none() && matches!(a.state, AppState::Failed { .. }))
        .map(|a| a.id)
        .collect();

    let step = match halt_step(
        rollout,
        &tally,
        moved,
        clean_waves,
        latest_failed.map(|(_, id)| id),
        s,
        now,
    ) {
        Some(step) => step,
        None => next_wave(apps, &tally, last_wave, clean_waves, soak_ends, s),
    };
    Decision {
        step,
        roll_back,
        tally,
    }
}

/// The wave of the last failure an operator forgave (0 when none was): failures are forgiven in
/// wave order, oldest first.
fn forgiven_up_to(apps: &[RolloutApp], forgiven: usize) -> u32 {
    if forgiven == 0 {
        return 0;
    }
    let mut failed_waves: Vec<u32> = apps
        .iter()
        .filter(|a| a.bypass.is_none())
        .filter_map(|a| match a.state {
            AppState::Failed { wave } | AppState::RolledBack { wave } => Some(wave),
            _ => None,
        })
        .collect();
    failed_waves.sort_unstable();
    failed_waves
        .get(forgiven - 1)
        .or(failed_waves.last())
        .copied()
        .unwrap_or(0)
}

fn halt_step(
    rollout: &Rollout,
    tally: &Tally,
    moved: usize,
    clean_waves: usize,
    latest_failed: Option<Uuid>,
    s: &WaveSettings,
    now: DateTime<Utc>,
) -> Option<Step> {
    if let Some(halt) = &rollout.halted {
        return Some(Step::Halted {
            halt: halt.clone(),
            newly: false,
        });
    }
    let failed = tally.failed + tally.rolled_back;
    let unforgiven = failed.saturating_sub(rollout.failures_forgiven);
    if unforgiven == 0 {
        return None;
    }
    let reason = if clean_waves == 0 {
        HaltReason::CanaryFailed {
            app: latest_failed.unwrap_or_default(),
        }
    } else {
        let allowed = s.failure_threshold.of(moved);
        if unforgiven <= allowed {
            return None;
        }
        HaltReason::TooManyFailures {
            failed: unforgiven,
            moved,
            allowed,
        }
    };
    Some(Step::Halted {
        halt: Halt { reason, at: now },
        newly: true,
    })
}

fn next_wave(
    apps: &[RolloutApp],
    tally: &Tally,
    last_wave: u32,
    clean_waves: usize,
    soak_ends: Option<DateTime<Utc>>,
    s: &WaveSettings,
) -> Step {
    if tally.moving + tally.soaking > 0 {
        return Step::Wait { until: soak_ends };
    }
    if tally.pending == 0 {
        return if tally.failed == 0 {
            Step::Complete
        } else {
            // The last failures are still being rolled back.
            Step::Wait { until: None }
        };
    }
    let cap = max_in_transition(s, apps.len());
    let size = 1usize
        .checked_shl(clean_waves.min(63) as u32)
        .unwrap_or(usize::MAX)
        .min(cap);
    // Failed apps not yet rolled back are down: they use up room.
    let room = cap.saturating_sub(tally.failed).min(size);
    if room == 0 {
        return Step::Wait { until: None };
    }
    let chosen: Vec<Uuid> = apps
        .iter()
        .filter(|a| a.bypass.is_none() && a.state == AppState::Pending)
        .take(room)
        .map(|a| a.id)
        .collect();
    Step::Advance {
        wave: last_wave + 1,
        apps: chosen,
    }
}

#[cfg(test)]
#[path = "rollout_tests.rs"]
mod tests;
