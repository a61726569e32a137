//! Sign-in throttling per client, and rate-limited refusal log lines.
//!
//! Only wrong tokens count: each one takes a cell from the client's bucket (`governor`'s GCRA,
//! keyed by client address). A client whose bucket is empty is refused unchecked until governor
//! says a cell is back, so it can guess at most [`FAILURES_PER_MINUTE`] tokens a minute. Another
//! client's bucket is untouched, and a successful sign-in costs nothing: a wrong-token flood from one
//! place cannot lock an admin out from another.
//!
//! The client is the TCP peer, or `Fly-Client-IP` when `ADMIN_TRUST_FLY_CLIENT_IP` says the daemon
//! sits behind Fly's proxy (which sets it; anywhere else a client could choose its own bucket).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::http::HeaderMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};

/// Wrong tokens a client may send in a burst, and per minute after it.
pub(crate) const FAILURE_BURST: u32 = 10;
pub(crate) const FAILURES_PER_MINUTE: u32 = 5;

/// Refusal log lines per minute, for the whole replica (a flood logs a summary, not a line each).
const REFUSAL_LINES_PER_MINUTE: u32 = 6;

pub(crate) struct SignInThrottle {
    failures: DefaultKeyedRateLimiter<IpAddr>,
    /// Clients refused until the given time (governor's answer when their bucket ran dry).
    blocked: Mutex<HashMap<IpAddr, Instant>>,
    trust_fly_client_ip: bool,
    log_lines: DefaultDirectRateLimiter,
    suppressed: AtomicU64,
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

impl SignInThrottle {
    pub fn new(trust_fly_client_ip: bool) -> SignInThrottle {
        let quota = Quota::per_minute(nz(FAILURES_PER_MINUTE)).allow_burst(nz(FAILURE_BURST));
        SignInThrottle {
            failures: governor::RateLimiter::keyed(quota),
            blocked: Mutex::new(HashMap::new()),
            trust_fly_client_ip,
            log_lines: governor::RateLimiter::direct(Quota::per_minute(nz(
                REFUSAL_LINES_PER_MINUTE,
            ))),
            suppressed: AtomicU64::new(0),
        }
    }

    /// The client a request comes from.
    pub fn client(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> Option<IpAddr> {
        if self.trust_fly_client_ip
            && let Some(ip) = headers
                .get("fly-client-ip")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok())
        {
            return Some(ip);
        }
        peer.map(|p| p.ip())
    }

    fn blocked(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Instant>> {
        self.blocked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `false`: the client used up its wrong tokens; refuse without looking at this one.
    pub fn may_try(&self, client: Option<IpAddr>) -> bool {
        let Some(ip) = client else { return true };
        let now = Instant::now();
        let mut blocked = self.blocked();
        match blocked.get(&ip) {
            Some(until) if *until > now => false,
            Some(_) => {
                blocked.remove(&ip);
                true
            }
            None => true,
        }
    }

    /// Counts a wrong token against the client.
    pub fn failed(&self, client: Option<IpAddr>) {
        let Some(ip) = client else { return };
        if let Err(not_until) = self.failures.check_key(&ip) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let mut blocked = self.blocked();
            blocked.insert(ip, Instant::now() + wait);
            // Forget clients whose block ended, so a scan from many addresses cannot grow this.
            let now = Instant::now();
            blocked.retain(|_, until| *until > now);
        }
        self.failures.retain_recent();
    }

    /// Whether a refusal may be logged now; `Some(n)`: yes, and `n` lines were dropped since the last.
    pub fn log_refusal(&self) -> Option<u64> {
        if self.log_lines.check().is_ok() {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_clients_wrong_tokens_never_block_another_client() {
        let t = SignInThrottle::new(false);
        let flood: Option<IpAddr> = "10.0.0.1".parse().ok();
        let admin: Option<IpAddr> = "10.0.0.2".parse().ok();
        for _ in 0..(FAILURE_BURST * 3) {
            if t.may_try(flood) {
                t.failed(flood);
            }
        }
        assert!(!t.may_try(flood), "the flooding client is held back");
        assert!(t.may_try(admin), "another client is not");
    }

    #[test]
    fn fly_client_ip_is_the_client_only_when_trusted() {
        let mut h = HeaderMap::new();
        h.insert("fly-client-ip", "203.0.113.7".parse().unwrap());
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let trusting = SignInThrottle::new(true);
        let wary = SignInThrottle::new(false);
        assert_eq!(trusting.client(&h, Some(peer)), "203.0.113.7".parse().ok());
        assert_eq!(wary.client(&h, Some(peer)), Some(peer.ip()));
    }
}
