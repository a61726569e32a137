//! The pass's times: the database's clock as the pass read it, a due time it plans no sooner
//! than, and where its time went before it acted.

use std::time::Duration;
use tokio::time::Instant;

/// The database's clock as read once, and when on this host's monotonic clock: a time the
/// database judges (a soak's end) comes `t - now` after `at`, whatever this host's wall clock says.
#[derive(Debug, Clone, Copy)]
pub struct DbClock {
    pub now: chrono::DateTime<chrono::Utc>,
    pub at: Instant,
}

impl DbClock {
    /// The database's time now, as this host's monotonic clock carries it forward.
    pub(crate) fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.now + chrono::Duration::from_std(self.at.elapsed()).unwrap_or_default()
    }
}

/// Where a pass's time went before it acted, for its `planned` log line.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Stages {
    pub observe: Duration,
    pub read: Duration,
    pub hold: Duration,
    pub plan: Duration,
}

/// A time the plan should not be made before: work falls due then (a rollout's soak end), and
/// the loop started the pass early so that its reads are done by then. The pass waits, at most
/// `max_hold`, between its reads and its read of the database clock; a due time further away is
/// not waited for (the pass plans at once, as an interval's pass would).
#[derive(Debug, Clone, Copy)]
pub struct PlanAt {
    pub at: Instant,
    pub max_hold: Duration,
}

impl PlanAt {
    /// When the pass whose reads ended at `now` plans: at `at` if that is ahead and within
    /// `max_hold`, else at once (`None`).
    pub(crate) fn hold_until(&self, now: Instant) -> Option<Instant> {
        (self.at > now && self.at - now <= self.max_hold).then_some(self.at)
    }

    /// Whether a tick starting at `now` is the one woken for this due time: it is past, or within
    /// the hold. An interval's or a NOTIFY's tick long before it is not.
    pub(crate) fn is_this_tick(&self, now: Instant) -> bool {
        self.at.saturating_duration_since(now) <= self.max_hold
    }
}

/// The most an early wake comes before its due time (a read slower than this is not waited out).
pub(crate) const MAX_LEAD: Duration = Duration::from_secs(5);

/// How long a tick takes from its start to its read of the database clock, by whether it lists
/// Fly in full (a resync: seconds at 10,000 apps) or by a delta: the last of each, as measured.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Leads {
    delta: Option<Duration>,
    full: Duration,
}

impl Leads {
    /// The lead for a tick that lists in full (`full`) or by a delta. Before any delta tick was
    /// measured (a term's first pass lists in full, and its first wave's soak end comes next),
    /// the full read stands in: a pass that starts early holds until its due time, one that
    /// starts late costs the wave the difference.
    pub(crate) fn get(&self, full: bool) -> Duration {
        match (full, self.delta) {
            (false, Some(delta)) => delta,
            (true, Some(delta)) => self.full.max(delta),
            (_, None) => self.full,
        }
    }

    pub(crate) fn record(&mut self, full: bool, took: Duration) {
        let took = took.min(MAX_LEAD);
        if full {
            self.full = took;
        } else {
            self.delta = Some(took);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_due_time_is_waited_for_only_when_near() {
        let now = Instant::now();
        let p = |ms: u64, hold: u64| PlanAt {
            at: now + Duration::from_millis(ms),
            max_hold: Duration::from_millis(hold),
        };
        assert_eq!(
            p(300, 500).hold_until(now),
            Some(now + Duration::from_millis(300))
        );
        assert_eq!(
            p(500, 500).hold_until(now),
            Some(now + Duration::from_millis(500))
        );
        // Further than the hold: plan now, as an interval's pass does.
        assert_eq!(p(501, 500).hold_until(now), None);
        // Already past (the reads took longer than the lead): plan now.
        assert_eq!(
            p(300, 500).hold_until(now + Duration::from_millis(300)),
            None
        );
        assert_eq!(p(300, 500).hold_until(now + Duration::from_secs(2)), None);
    }

    #[test]
    fn only_the_tick_woken_for_a_due_time_is_its_tick() {
        let now = Instant::now();
        let p = |ms: u64| PlanAt {
            at: now + Duration::from_millis(ms),
            max_hold: Duration::from_millis(500),
        };
        assert!(p(400).is_this_tick(now));
        assert!(p(500).is_this_tick(now));
        assert!(!p(501).is_this_tick(now));
        assert!(p(0).is_this_tick(now + Duration::from_secs(1)), "past due");
    }

    #[test]
    fn before_a_delta_tick_is_measured_the_full_read_stands_in() {
        let mut leads = Leads::default();
        assert_eq!(leads.get(false), Duration::ZERO);
        leads.record(true, Duration::from_millis(1_200));
        assert_eq!(leads.get(false), Duration::from_millis(1_200));
        leads.record(false, Duration::from_millis(400));
        assert_eq!(leads.get(false), Duration::from_millis(400));
        assert_eq!(leads.get(true), Duration::from_millis(1_200));
    }

    #[test]
    fn a_tick_that_lists_in_full_leads_by_the_last_full_read() {
        let mut leads = Leads::default();
        leads.record(false, Duration::from_millis(600));
        // No full list measured yet: at least the delta's read.
        assert_eq!(leads.get(true), Duration::from_millis(600));
        leads.record(true, Duration::from_millis(2_700));
        assert_eq!(leads.get(true), Duration::from_millis(2_700));
        assert_eq!(leads.get(false), Duration::from_millis(600));
        // A read slower than the cap (a full list at 100,000 apps) is not waited out.
        leads.record(true, Duration::from_secs(300));
        assert_eq!(leads.get(true), MAX_LEAD);
    }
}
