//! A sliding-window log: at most `max` requests in any `window`, for the one limit Fly states per
//! minute without a burst (app deletions: "100 per minute", REFERENCE §6).
//!
//! A token bucket cannot follow such a limit closely: to keep every 60 s window at 100 or fewer
//! whichever way Fly counts (sliding or fixed windows, or a bucket), its burst plus a minute's
//! refill must stay under 100, which caps a long run at about 0.9 of the limit (1,000 deletions:
//! 600 s or more, against 540 s if 100 may go at once and 100 more each following minute). The log
//! reserves each request a slot no earlier than `window` after the slot `max` requests before it,
//! which is exactly "at most `max` in any `window`", so it may use the whole limit.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// At most `max` requests in any `window`. `max == 0` means "no limit".
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowSpec {
    pub max: u32,
    pub window: Duration,
}

impl WindowSpec {
    pub const fn new(max: u32, window: Duration) -> Self {
        WindowSpec { max, window }
    }

    pub(super) fn limited(&self) -> bool {
        self.max > 0 && !self.window.is_zero()
    }
}

/// The reserved send slots of the last `max` requests, oldest first (slots never decrease).
#[derive(Debug, Default)]
pub(super) struct WindowLog {
    slots: VecDeque<Instant>,
}

impl WindowLog {
    /// Reserve the next slot at or after `now`; how long the caller waits for it.
    pub(super) fn reserve(&mut self, spec: WindowSpec, now: Instant) -> Duration {
        let max = spec.max as usize;
        let slot = match self.slots.len().checked_sub(max) {
            Some(i) => now.max(self.slots[i] + spec.window),
            None => now,
        };
        let slot = self.slots.back().map_or(slot, |last| slot.max(*last));
        self.slots.push_back(slot);
        while self.slots.len() > max {
            self.slots.pop_front();
        }
        slot.saturating_duration_since(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: f64) -> Duration {
        Duration::from_secs_f64(n)
    }

    #[test]
    fn a_window_admits_its_maximum_at_once_and_the_next_ones_a_window_after_theirs() {
        let spec = WindowSpec::new(100, secs(61.0));
        let mut log = WindowLog::default();
        let t0 = Instant::now();
        let waits: Vec<Duration> = (0..1000).map(|_| log.reserve(spec, t0)).collect();
        assert!(waits[..100].iter().all(|w| w.is_zero()));
        assert_eq!(waits[100], secs(61.0));
        assert_eq!(waits[999], secs(9.0 * 61.0), "1,000 deletions in 9 windows");
        // No window of 60 s (or of the margin's 61 s, half-open) holds more than 100 slots.
        let slots: Vec<f64> = waits.iter().map(|w| w.as_secs_f64()).collect();
        for (i, s) in slots.iter().enumerate() {
            let inside = slots[i..].iter().take_while(|t| **t < s + 61.0).count();
            assert!(
                inside <= 100,
                "{inside} slots in the window starting at {s}"
            );
        }
    }

    #[test]
    fn requests_spread_over_time_never_wait() {
        let spec = WindowSpec::new(3, secs(10.0));
        let mut log = WindowLog::default();
        let t0 = Instant::now();
        for i in 0..10 {
            assert_eq!(log.reserve(spec, t0 + secs(4.0 * i as f64)), Duration::ZERO);
        }
        // A burst after that waits only for the window its last slots (28, 32, 36 s) still fill.
        let t = t0 + secs(40.0);
        assert_eq!(log.reserve(spec, t), Duration::ZERO, "28 s + 10 s is past");
        assert_eq!(log.reserve(spec, t), secs(2.0), "32 s + 10 s");
        assert_eq!(log.reserve(spec, t), secs(6.0), "36 s + 10 s");
    }
}
