//! Token buckets per (route class, identifier), as the docs describe Fly's limits: per action type,
//! per Machine or app [S2][S32][S33].

use std::collections::HashMap;

use tokio::time::{Duration, Instant};

use super::config::BucketConfig;

#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    cfg: BucketConfig,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(cfg: BucketConfig, now: Instant) -> Self {
        TokenBucket {
            cfg,
            tokens: f64::from(cfg.burst),
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        let rate = self.cfg.per_second.max(0.0);
        self.tokens = (self.tokens + dt * rate).min(f64::from(self.cfg.burst));
    }

    /// Takes one token at `now`, or says how long until one is available.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let never = Duration::from_secs(3600);
        if self.cfg.per_second.is_nan() || self.cfg.per_second <= 0.0 {
            return Err(never);
        }
        let missing = 1.0 - self.tokens;
        Err(Duration::try_from_secs_f64(missing / self.cfg.per_second).unwrap_or(never))
    }
}

#[derive(Debug, Default)]
pub(crate) struct RateLimiter {
    buckets: HashMap<(String, String), TokenBucket>,
}

impl RateLimiter {
    /// One call of `class` on `ident`; `Err(retry_in)` means answer 429.
    pub fn check(&mut self, class: &str, ident: &str, cfg: BucketConfig) -> Result<(), Duration> {
        self.check_at(class, ident, cfg, Instant::now())
    }

    pub fn check_at(
        &mut self,
        class: &str,
        ident: &str,
        cfg: BucketConfig,
        now: Instant,
    ) -> Result<(), Duration> {
        let bucket = self
            .buckets
            .entry((class.to_string(), ident.to_string()))
            .or_insert_with(|| TokenBucket::new(cfg, now));
        if bucket.cfg != cfg {
            *bucket = TokenBucket::new(cfg, now);
        }
        bucket.try_take(now)
    }

    pub fn reset(&mut self) {
        self.buckets.clear();
    }
}

#[cfg(test)]
mod tests {
    //! Time is passed in explicitly (tokio's `test-util`/`pause()` is not enabled in this crate).
    use super::*;

    const DOC: BucketConfig = BucketConfig {
        per_second: 1.0,
        burst: 3,
    };

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn burst_then_sustained_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(DOC, t0);
        for _ in 0..3 {
            assert!(b.try_take(t0).is_ok());
        }
        let wait = b.try_take(t0).expect_err("burst of 3 exhausted");
        assert!(wait <= ms(1000) && wait > ms(900), "{wait:?}");
        assert!(
            b.try_take(t0 + ms(500)).is_err(),
            "half a token is not a token"
        );
        assert!(b.try_take(t0 + ms(1000)).is_ok());
        assert!(b.try_take(t0 + ms(1000)).is_err());
        // Long idle refills only up to the burst.
        let later = t0 + Duration::from_secs(100);
        for _ in 0..3 {
            assert!(b.try_take(later).is_ok());
        }
        assert!(b.try_take(later).is_err());
    }

    #[test]
    fn sustained_rate_over_time() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(
            BucketConfig {
                per_second: 5.0,
                burst: 10,
            },
            t0,
        );
        // Over 10 s at one call per 10 ms: burst 10 + 5/s * 10 s = 60 accepted.
        let ok = (0..1000)
            .filter(|i| b.try_take(t0 + ms(i * 10)).is_ok())
            .count();
        assert!((59..=61).contains(&ok), "accepted {ok}");
    }

    #[test]
    fn identifiers_and_classes_are_independent() {
        let t0 = Instant::now();
        let mut l = RateLimiter::default();
        for _ in 0..3 {
            assert!(l.check_at("machines.start", "m1", DOC, t0).is_ok());
        }
        assert!(l.check_at("machines.start", "m1", DOC, t0).is_err());
        assert!(l.check_at("machines.start", "m2", DOC, t0).is_ok());
        assert!(l.check_at("machines.stop", "m1", DOC, t0).is_ok());
    }

    #[test]
    fn changed_config_resets_bucket() {
        let t0 = Instant::now();
        let mut l = RateLimiter::default();
        let tight = BucketConfig {
            per_second: 0.0,
            burst: 1,
        };
        assert!(l.check_at("apps.get", "a", tight, t0).is_ok());
        assert!(l.check_at("apps.get", "a", tight, t0).is_err());
        assert!(l.check_at("apps.get", "a", DOC, t0).is_ok());
    }
}
