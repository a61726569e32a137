//! Client-side token buckets, so the daemon stays inside Fly's documented limits (REFERENCE §6)
//! instead of discovering them through 429s.
//!
//! Buckets are keyed by route class and identifier (app name, machine id or org slug). A request
//! *reserves* a token (the count may go negative) and then sleeps until its slot: waiters are
//! served in order, and the lock is never held across an await. Idle buckets refill to full, and
//! a full bucket is indistinguishable from a fresh one, so evicting them loses nothing; eviction
//! runs whenever the map has doubled since the last sweep.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::route::Route;
use super::window::{WindowLog, WindowSpec};

/// Sustained rate and burst of one bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketSpec {
    /// Tokens added per second. `<= 0` or non-finite means "no limit".
    pub per_second: f64,
    /// Bucket size (at least 1).
    pub burst: u32,
}

impl BucketSpec {
    pub const fn new(per_second: f64, burst: u32) -> Self {
        BucketSpec { per_second, burst }
    }

    fn limited(&self) -> bool {
        self.per_second.is_finite() && self.per_second > 0.0
    }

    fn capacity(&self) -> f64 {
        f64::from(self.burst.max(1))
    }
}

/// Client-side limits. [`RateLimits::documented`] is the default.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimits {
    /// Master switch (tests may turn limiting off).
    pub enabled: bool,
    /// Any action per identifier (app name or machine id): documented 1 req/s, burst 3.
    pub per_action: BucketSpec,
    /// `GET machine` per machine id: documented 5 req/s, burst 10.
    pub get_machine: BucketSpec,
    /// App deletions, one sliding window for the whole client: documented 100 per minute.
    pub app_deletes: WindowSpec,
    /// List calls (`list_apps`, `list_org_machines`) per org slug.
    pub org_lists: BucketSpec,
    /// Idle buckets are swept once more than this many are tracked (and the map has doubled).
    pub sweep_threshold: usize,
}

impl RateLimits {
    /// Fly's documented limits.
    pub fn documented() -> Self {
        RateLimits {
            enabled: true,
            per_action: BucketSpec::new(1.0, 3),
            get_machine: BucketSpec::new(5.0, 10),
            app_deletes: WindowSpec::new(100, Duration::from_secs(60)),
            org_lists: BucketSpec::new(1.0, 3),
            sweep_threshold: 1024,
        }
    }

    /// The documented limits with a safety margin: 5-10 % under the rates and one below the bursts
    /// (app creations per org 0.95/s: that bucket alone paces a migration).
    /// Requests leave here spaced by our clock but arrive spaced by the network's, and a 429 costs
    /// a retry (or a user's backoff) while the margin costs a few percent of throughput. What the
    /// daemon runs with.
    pub fn with_margin() -> Self {
        RateLimits {
            enabled: true,
            per_action: BucketSpec::new(0.95, 2),
            get_machine: BucketSpec::new(4.5, 9),
            // At most 100 in any 61 s: under Fly's 100 a minute whichever way Fly counts it
            // (sliding or fixed windows, or a bucket of 100), with a second for the network.
            app_deletes: WindowSpec::new(100, Duration::from_secs(61)),
            org_lists: BucketSpec::new(0.9, 2),
            sweep_threshold: 1024,
        }
    }

    /// No client-side limiting.
    pub fn disabled() -> Self {
        RateLimits {
            enabled: false,
            ..RateLimits::documented()
        }
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits::documented()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Route(Route, String),
}

#[derive(Debug)]
struct Bucket {
    spec: BucketSpec,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.spec.per_second).min(self.spec.capacity());
        self.last = now;
    }

    /// Take one token; how long the caller must wait for it.
    fn reserve(&mut self, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::try_from_secs_f64(-self.tokens / self.spec.per_second)
                .unwrap_or(Duration::MAX)
        }
    }

    fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.spec.capacity()
    }
}

#[derive(Debug)]
struct Buckets {
    map: HashMap<Key, Bucket>,
    sweep_at: usize,
    /// App deletions across the client (`RateLimits::app_deletes`).
    deletes: WindowLog,
}

/// Token buckets per (route class, identifier).
#[derive(Debug)]
pub struct RateLimiter {
    limits: RateLimits,
    buckets: Mutex<Buckets>,
}

impl RateLimiter {
    pub fn new(limits: RateLimits) -> Self {
        let sweep_at = limits.sweep_threshold.max(1);
        RateLimiter {
            limits,
            buckets: Mutex::new(Buckets {
                map: HashMap::new(),
                sweep_at,
                deletes: WindowLog::default(),
            }),
        }
    }

    fn specs(&self, route: Route, id: &str) -> Vec<(Key, BucketSpec)> {
        let l = &self.limits;
        let key = Key::Route(route, id.to_owned());
        match route {
            Route::GetMachine => vec![(key, l.get_machine)],
            Route::ListApps | Route::ListOrgMachines => vec![(key, l.org_lists)],
            _ => vec![(key, l.per_action)],
        }
    }

    /// Reserve tokens for one request and return how long to wait before sending it.
    pub fn reserve(&self, route: Route, id: &str) -> Duration {
        self.reserve_at(route, id, Instant::now())
    }

    /// [`RateLimiter::reserve`] at an explicit instant (the clock is a parameter so the bucket
    /// arithmetic is testable without sleeping).
    pub fn reserve_at(&self, route: Route, id: &str, now: Instant) -> Duration {
        if !self.limits.enabled {
            return Duration::ZERO;
        }
        let specs = self.specs(route, id);
        // A poisoned lock only means another task panicked mid-update; the buckets are still
        // usable numbers.
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let mut wait = Duration::ZERO;
        for (key, spec) in specs {
            if !spec.limited() {
                continue;
            }
            let bucket = b.map.entry(key).or_insert_with(|| Bucket {
                spec,
                tokens: spec.capacity(),
                last: now,
            });
            wait = wait.max(bucket.reserve(now));
        }
        if route == Route::DeleteApp && self.limits.app_deletes.limited() {
            wait = wait.max(b.deletes.reserve(self.limits.app_deletes, now));
        }
        if b.map.len() > b.sweep_at {
            b.map.retain(|_, bucket| !bucket.is_full(now));
            b.sweep_at = (b.map.len() * 2).max(self.limits.sweep_threshold.max(1));
        }
        wait
    }

    /// Wait (on tokio's clock) until a request on `route` for `id` may be sent.
    pub async fn acquire(&self, route: Route, id: &str) {
        let wait = self.reserve(route, id);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Number of buckets currently tracked.
    pub fn tracked(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> RateLimiter {
        RateLimiter::new(RateLimits::documented())
    }

    fn secs(n: f64) -> Duration {
        Duration::from_secs_f64(n)
    }

    #[test]
    fn per_action_bucket_allows_a_burst_of_three_then_one_per_second() {
        let rl = limiter();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(rl.reserve_at(Route::StopMachine, "m1", t0), Duration::ZERO);
        }
        assert_eq!(rl.reserve_at(Route::StopMachine, "m1", t0), secs(1.0));
        assert_eq!(rl.reserve_at(Route::StopMachine, "m1", t0), secs(2.0));
        // Other identifiers and other actions have their own buckets.
        assert_eq!(rl.reserve_at(Route::StopMachine, "m2", t0), Duration::ZERO);
        assert_eq!(rl.reserve_at(Route::StartMachine, "m1", t0), Duration::ZERO);
    }

    #[test]
    fn bucket_refills_at_the_sustained_rate_up_to_the_burst() {
        let rl = limiter();
        let t0 = Instant::now();
        for _ in 0..3 {
            rl.reserve_at(Route::CreateMachine, "app", t0);
        }
        // Half a second later half a token is back: wait the other half.
        assert_eq!(
            rl.reserve_at(Route::CreateMachine, "app", t0 + secs(0.5)),
            secs(0.5)
        );
        // Long idle: full burst again, never more.
        let later = t0 + secs(100.0);
        for _ in 0..3 {
            assert_eq!(
                rl.reserve_at(Route::CreateMachine, "app", later),
                Duration::ZERO
            );
        }
        assert_eq!(rl.reserve_at(Route::CreateMachine, "app", later), secs(1.0));
    }

    #[test]
    fn get_machine_has_its_own_faster_bucket() {
        let rl = limiter();
        let t0 = Instant::now();
        for _ in 0..10 {
            assert_eq!(rl.reserve_at(Route::GetMachine, "m", t0), Duration::ZERO);
        }
        assert_eq!(rl.reserve_at(Route::GetMachine, "m", t0), secs(0.2));
    }

    #[test]
    fn app_deletes_share_one_window_across_apps() {
        let rl = RateLimiter::new(RateLimits::with_margin());
        let t0 = Instant::now();
        for i in 0..100 {
            assert_eq!(
                rl.reserve_at(Route::DeleteApp, &format!("a{i}"), t0),
                Duration::ZERO
            );
        }
        // The 101st deletion, of yet another app, waits for the window: 61 s with the margin.
        assert_eq!(rl.reserve_at(Route::DeleteApp, "a100", t0), secs(61.0));
        // Once the window has passed, deletions go at once again.
        let later = rl.reserve_at(Route::DeleteApp, "a101", t0 + secs(200.0));
        assert_eq!(later, Duration::ZERO);
    }

    #[test]
    fn lists_are_limited_per_org() {
        let rl = limiter();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(rl.reserve_at(Route::ListApps, "org", t0), Duration::ZERO);
        }
        assert_eq!(rl.reserve_at(Route::ListApps, "org", t0), secs(1.0));
        assert_eq!(
            rl.reserve_at(Route::ListOrgMachines, "org", t0),
            Duration::ZERO
        );
    }

    #[test]
    fn disabled_limits_never_wait() {
        let rl = RateLimiter::new(RateLimits::disabled());
        for _ in 0..100 {
            assert_eq!(rl.reserve(Route::StopMachine, "m"), Duration::ZERO);
        }
        assert_eq!(rl.tracked(), 0);
    }

    #[test]
    fn zero_rate_means_unlimited_rather_than_forever() {
        let rl = RateLimiter::new(RateLimits {
            per_action: BucketSpec::new(0.0, 0),
            ..RateLimits::documented()
        });
        for _ in 0..10 {
            assert_eq!(rl.reserve(Route::StopMachine, "m"), Duration::ZERO);
        }
    }

    #[test]
    fn idle_buckets_are_evicted_and_memory_stays_bounded() {
        let rl = RateLimiter::new(RateLimits {
            sweep_threshold: 8,
            ..RateLimits::documented()
        });
        let t0 = Instant::now();
        for i in 0..1000 {
            rl.reserve_at(
                Route::GetMachine,
                &format!("n{i}"),
                t0 + secs(3.0 * f64::from(i)),
            );
        }
        assert!(rl.tracked() <= 16, "tracked {}", rl.tracked());
    }

    #[test]
    fn eviction_keeps_busy_buckets() {
        let rl = RateLimiter::new(RateLimits {
            sweep_threshold: 1,
            ..RateLimits::documented()
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            rl.reserve_at(Route::StopMachine, "busy", t0);
        }
        for i in 0..50 {
            rl.reserve_at(Route::StopMachine, &format!("x{i}"), t0);
        }
        // "busy" was never full, so it survived every sweep with its debt.
        assert_eq!(rl.reserve_at(Route::StopMachine, "busy", t0), secs(1.0));
    }

    /// Polls `f` once: `Some` if it completed without waiting on anything.
    fn poll_once<F: std::future::Future>(f: F) -> Option<F::Output> {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }

    #[tokio::test]
    async fn acquire_returns_at_once_within_the_burst_then_waits() {
        // Completing on the first poll is "at once" exactly, not a wall-clock bound that a loaded
        // machine could break.
        let rl = limiter();
        for n in 0..3 {
            assert!(
                poll_once(rl.acquire(Route::GetApp, "a")).is_some(),
                "call {n} of the burst waited"
            );
        }
        assert!(
            poll_once(rl.acquire(Route::GetApp, "a")).is_none(),
            "the 4th waits for a token"
        );
    }
}
