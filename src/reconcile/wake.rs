//! Fleet-level work that falls due outside the loop's own schedule, so the leader sweeps then
//! instead of up to a `RECONCILE_INTERVAL` later.
//!
//! # Expected flow
//! 1. A deprovision grace starts (a targeted run's or a pass's mark): a deletion is due at its end
//!    → [`FleetWake::at`] `now + DEPROVISION_GRACE`.
//! 2. An operator confirms held deletions (`confirm-deletions`, the console): `confirm_held` sends
//!    `NOTIFY vyx_fleet` with
//!    [`DELETIONS_CONFIRMED`](crate::db::notify::DELETIONS_CONFIRMED) → [`FleetWake::at`] now.
//! 3. The loop waits on [`FleetWake::due`] beside its interval and sweeps when it fires; the sweep
//!    finds the deletion (or the confirmed held set) on its work list and runs the full pass, where
//!    the breaker judges as always.
//!
//! # Guarantees
//! - Only a hint: a wake that comes early or finds nothing costs one quiet sweep; a lost one (a
//!   later time behind an earlier pending one, a NOTIFY missed) waits for the interval, as before.
//! - A burst (a mass downgrade marks users one by one) wakes the loop at most once per `spacing`
//!   after its last pass, not once per user.

use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::execute::Outcome;
use crate::metrics::ActionKind;

/// The earliest time fleet-level work is known to fall due; the loop takes it when it fires.
#[derive(Debug, Default)]
pub(crate) struct FleetWake {
    at: Mutex<Option<Instant>>,
    changed: Notify,
}

impl FleetWake {
    /// Work falls due at `when`; an earlier pending time stays.
    pub(crate) fn at(&self, when: Instant) {
        let mut at = self.at.lock().unwrap_or_else(|e| e.into_inner());
        if at.is_none_or(|t| when < t) {
            *at = Some(when);
            drop(at);
            self.changed.notify_one();
        }
    }

    /// A deprovision grace started if `outcomes` (a pass's or a targeted run's) include a done mark.
    pub(crate) fn after(&self, outcomes: &[(ActionKind, Outcome)], grace: Duration) {
        if outcomes
            .iter()
            .any(|(kind, o)| *kind == ActionKind::ScheduleDeprovision && *o == Outcome::Done)
        {
            self.at(Instant::now() + grace);
        }
    }

    /// Resolves when the pending time has come, and not before `not_before`; clears it.
    pub(crate) async fn due(&self, not_before: Instant) {
        loop {
            let at = *self.at.lock().unwrap_or_else(|e| e.into_inner());
            match at {
                Some(t) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(t.max(not_before)) => {
                            // Pending times only move earlier until taken, so this one has come.
                            *self.at.lock().unwrap_or_else(|e| e.into_inner()) = None;
                            return;
                        }
                        _ = self.changed.notified() => {}
                    }
                }
                None => self.changed.notified().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_earliest_time_wins_and_a_burst_waits_for_the_spacing() {
        let wake = FleetWake::default();
        let t0 = Instant::now();
        wake.at(t0 + Duration::from_secs(600));
        wake.at(t0 + Duration::from_secs(5));
        wake.at(t0 + Duration::from_secs(60));
        wake.due(t0).await;
        assert_eq!(t0.elapsed(), Duration::from_secs(5));

        let t1 = Instant::now();
        wake.at(t1);
        wake.due(t1 + Duration::from_millis(300)).await;
        assert_eq!(t1.elapsed(), Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_pending_waits_until_work_falls_due() {
        let wake = std::sync::Arc::new(FleetWake::default());
        let t0 = Instant::now();
        let w = wake.clone();
        let waiter = tokio::spawn(async move { w.due(t0).await });
        tokio::time::sleep(Duration::from_secs(7)).await;
        assert!(!waiter.is_finished());
        wake.after(&[(ActionKind::Converge, Outcome::Done)], Duration::ZERO);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiter.is_finished(), "no grace started");
        wake.after(
            &[(ActionKind::ScheduleDeprovision, Outcome::Done)],
            Duration::ZERO,
        );
        waiter.await.unwrap();
        assert_eq!(t0.elapsed(), Duration::from_secs(8));
    }
}
