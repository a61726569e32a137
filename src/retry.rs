//! Jittered exponential backoff: the only module that touches the `backoff` crate.
//!
//! `backoff` 0.4 is unmaintained (RUSTSEC-2025-0012, and it pulls `instant`, RUSTSEC-2024-0384).
//! Keeping it behind this tiny API means swapping it for `backon` (or a dozen lines of our own)
//! changes one file.
//!
//! Two shapes are offered:
//! - [`Backoff`]: a stateful sequence of delays for an in-process retry loop
//!   (`while let Some(d) = b.next_delay() { sleep(d) ... }`);
//! - [`RetryPolicy::delay_for_attempt`]: a pure function of the attempt number, for backoff whose
//!   state lives elsewhere (e.g. a per-user `retry_count` stored in Postgres).
//!
//! Neither reads the clock: deadlines are the caller's business (so `tokio::time::pause()` works).

use std::time::Duration;

use backoff::backoff::Backoff as _;
use rand::Rng;

/// Shape of an exponential backoff with jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Delay before the first retry (before jitter).
    pub initial: Duration,
    /// Cap on the un-jittered delay.
    pub max_interval: Duration,
    /// Growth factor per attempt (>= 1).
    pub multiplier: f64,
    /// Jitter: the delay is drawn uniformly from `d * (1 ± randomization_factor)`; 0 disables it.
    pub randomization_factor: f64,
    /// Maximum number of delays [`Backoff::next_delay`] hands out; `None` = unbounded.
    pub max_retries: Option<u32>,
}

impl RetryPolicy {
    /// 100 ms, doubling, capped at 10 s, ±50 % jitter, at most 3 retries (fly-go's transport retry
    /// uses 100 ms–1 s with 3 retries; we allow longer waits because we also back off on 429).
    pub const fn fly_default() -> Self {
        RetryPolicy {
            initial: Duration::from_millis(100),
            max_interval: Duration::from_secs(10),
            multiplier: 2.0,
            randomization_factor: 0.5,
            max_retries: Some(3),
        }
    }

    pub fn with_max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = Some(max_retries);
        self
    }

    /// Sanitised copy: finite, non-negative factors, `initial <= max_interval`.
    fn sane(self) -> Self {
        let multiplier = if self.multiplier.is_finite() && self.multiplier >= 1.0 {
            self.multiplier
        } else {
            1.0
        };
        let randomization_factor =
            if self.randomization_factor.is_finite() && self.randomization_factor >= 0.0 {
                self.randomization_factor.min(1.0)
            } else {
                0.0
            };
        let max_interval = self.max_interval.max(self.initial);
        RetryPolicy {
            multiplier,
            randomization_factor,
            max_interval,
            ..self
        }
    }

    /// Jittered delay before retry number `attempt` (0-based), without any state: `initial *
    /// multiplier^attempt`, capped at `max_interval`, then jittered. Ignores `max_retries`.
    pub fn delay_for_attempt(&self, attempt: u32) -> Duration {
        let p = self.sane();
        let base = p.initial.as_secs_f64() * p.multiplier.powi(attempt.min(64) as i32);
        let capped = base.min(p.max_interval.as_secs_f64());
        jitter(capped, p.randomization_factor)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::fly_default()
    }
}

fn jitter(secs: f64, factor: f64) -> Duration {
    if !(secs.is_finite() && secs > 0.0) {
        return Duration::ZERO;
    }
    let d = if factor > 0.0 {
        let lo = secs * (1.0 - factor);
        let hi = secs * (1.0 + factor);
        rand::rng().random_range(lo..=hi)
    } else {
        secs
    };
    Duration::try_from_secs_f64(d).unwrap_or(Duration::ZERO)
}

/// A sequence of jittered, exponentially growing delays.
#[derive(Debug)]
pub struct Backoff {
    inner: backoff::ExponentialBackoff,
    max_retries: Option<u32>,
    handed_out: u32,
}

impl Backoff {
    pub fn new(policy: RetryPolicy) -> Self {
        let p = policy.sane();
        let inner = backoff::ExponentialBackoffBuilder::new()
            .with_initial_interval(p.initial)
            .with_max_interval(p.max_interval)
            .with_multiplier(p.multiplier)
            .with_randomization_factor(p.randomization_factor)
            // The crate's elapsed-time limit reads the wall clock; deadlines are ours to enforce.
            .with_max_elapsed_time(None)
            .build();
        Backoff {
            inner,
            max_retries: p.max_retries,
            handed_out: 0,
        }
    }

    /// The next delay, or `None` once `max_retries` delays have been handed out.
    pub fn next_delay(&mut self) -> Option<Duration> {
        if self.max_retries.is_some_and(|m| self.handed_out >= m) {
            return None;
        }
        self.handed_out += 1;
        // With no elapsed-time limit the crate always yields Some; stay total anyway.
        Some(self.inner.next_backoff().unwrap_or(self.inner.max_interval))
    }

    /// Number of delays handed out so far.
    pub fn attempts(&self) -> u32 {
        self.handed_out
    }

    /// Start over (e.g. after a success in a long-lived loop).
    pub fn reset(&mut self) {
        self.inner.reset();
        self.handed_out = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_jitter() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(100),
            max_interval: Duration::from_secs(1),
            multiplier: 2.0,
            randomization_factor: 0.0,
            max_retries: Some(5),
        }
    }

    #[test]
    fn backoff_grows_exponentially_and_caps() {
        let mut b = Backoff::new(no_jitter());
        let got: Vec<_> = std::iter::from_fn(|| b.next_delay()).collect();
        let ms: Vec<u128> = got.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, vec![100, 200, 400, 800, 1000]);
    }

    #[test]
    fn backoff_stops_after_max_retries_and_reset_restarts() {
        let mut b = Backoff::new(no_jitter().with_max_retries(2));
        assert!(b.next_delay().is_some());
        assert!(b.next_delay().is_some());
        assert_eq!(b.next_delay(), None);
        assert_eq!(b.attempts(), 2);
        b.reset();
        assert_eq!(b.next_delay(), Some(Duration::from_millis(100)));
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let p = RetryPolicy {
            randomization_factor: 0.5,
            max_retries: None,
            ..no_jitter()
        };
        let mut b = Backoff::new(p);
        let first = b.next_delay().unwrap();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(151));
        for attempt in 0..40 {
            let d = p.delay_for_attempt(attempt);
            assert!(d <= Duration::from_millis(1500), "{d:?}");
        }
    }

    #[test]
    fn delay_for_attempt_is_pure_exponential_without_jitter() {
        let p = no_jitter();
        assert_eq!(p.delay_for_attempt(0), Duration::from_millis(100));
        assert_eq!(p.delay_for_attempt(3), Duration::from_millis(800));
        assert_eq!(p.delay_for_attempt(30), Duration::from_secs(1));
        assert_eq!(p.delay_for_attempt(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn nonsense_policies_do_not_panic() {
        let p = RetryPolicy {
            initial: Duration::from_secs(5),
            max_interval: Duration::ZERO,
            multiplier: f64::NAN,
            randomization_factor: -3.0,
            max_retries: Some(3),
        };
        let mut b = Backoff::new(p);
        assert_eq!(b.next_delay(), Some(Duration::from_secs(5)));
        assert_eq!(p.delay_for_attempt(9), Duration::from_secs(5));
    }
}
