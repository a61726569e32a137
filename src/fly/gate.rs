//! [`WriteGate`]: the instant after which this replica sends no more Fly writes.
//!
//! The lease keeper stops a leader `act_margin` after its last successful renewal, by cancelling
//! the pass. Cancellation is cooperative: a replica frozen (SIGSTOP, a long GC-like stall, a VM
//! pause) and then woken runs its ready tasks in no set order, so a task woken from a rate-limit
//! wait could send a write before the lease keeper's timer fires. The gate closes that gap: the
//! client reads it synchronously right before each write leaves, so a write after the deadline is
//! never sent, whatever the scheduler does. Reads stay allowed (they change nothing).
//!
//! The deadline alone still lets a replica frozen for less than `act_margin` write once woken,
//! before its keeper learns the lease is gone (an operator or a failover can end it sooner than
//! its expiry, and the keeper renews only every few seconds). So the gate may also carry a
//! *verifier* (the lease's fence, asked of the database): a write leaves only if the lease was
//! confirmed within [`WriteGate::with_verifier`]'s freshness, else the verifier is asked first.
//! A freeze longer than that freshness is therefore always followed by a check before a write.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Answers whether this replica still holds its lease: `Some(true)` yes, `Some(false)` no (the
/// gate closes), `None` unknown (this write is refused, the gate stays as it is).
pub type Verifier =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Option<bool>> + Send>> + Send + Sync>;

/// Shared deadline for writes; clones share it. Starts closed until [`WriteGate::open_until`].
#[derive(Clone)]
pub struct WriteGate {
    base: Instant,
    /// Nanoseconds after `base` until which writes may leave; 0 = closed.
    until_ns: Arc<AtomicU64>,
    /// Nanoseconds after `base` of the last confirmation that the lease is held.
    confirmed_ns: Arc<AtomicU64>,
    verifier: Option<(Verifier, Duration)>,
}

impl std::fmt::Debug for WriteGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteGate")
            .field("open", &self.is_open())
            .field("verified", &self.verifier.is_some())
            .finish()
    }
}

impl Default for WriteGate {
    fn default() -> Self {
        WriteGate::new()
    }
}

impl WriteGate {
    pub fn new() -> WriteGate {
        WriteGate {
            base: Instant::now(),
            until_ns: Arc::new(AtomicU64::new(0)),
            confirmed_ns: Arc::new(AtomicU64::new(0)),
            verifier: None,
        }
    }

    /// This gate, also asking `verify` before a write when the lease was last confirmed more
    /// than `fresh` ago (a renewal or an earlier verification confirms it).
    pub fn with_verifier(mut self, verify: Verifier, fresh: Duration) -> WriteGate {
        self.verifier = Some((verify, fresh));
        self
    }

    fn now_ns(&self) -> u64 {
        Instant::now().duration_since(self.base).as_nanos() as u64
    }

    /// The lease was just confirmed held (a renewal or a verification succeeded).
    pub fn confirmed(&self) {
        self.confirmed_ns.fetch_max(self.now_ns(), Ordering::SeqCst);
    }

    /// May a write leave now? The deadline first; then, if the lease's last confirmation is older
    /// than the verifier's freshness, the verifier.
    pub async fn admit(&self) -> bool {
        if !self.is_open() {
            return false;
        }
        let Some((verify, fresh)) = &self.verifier else {
            return true;
        };
        let age = self
            .now_ns()
            .saturating_sub(self.confirmed_ns.load(Ordering::SeqCst));
        if u128::from(age) <= fresh.as_nanos() {
            return true;
        }
        match verify().await {
            Some(true) => {
                self.confirmed();
                self.is_open()
            }
            Some(false) => {
                self.close();
                false
            }
            None => false,
        }
    }

    /// Allow writes until `until` (later renewals move it on; it never moves back except by
    /// [`WriteGate::close`]).
    pub fn open_until(&self, until: Instant) {
        let ns = until
            .checked_duration_since(self.base)
            .unwrap_or(Duration::ZERO)
            .as_nanos()
            .min(u64::MAX as u128) as u64;
        self.until_ns.fetch_max(ns, Ordering::SeqCst);
        self.confirmed();
    }

    /// No write leaves from now on.
    pub fn close(&self) {
        self.until_ns.store(0, Ordering::SeqCst);
    }

    pub fn is_open(&self) -> bool {
        let now = Instant::now().duration_since(self.base).as_nanos() as u64;
        now < self.until_ns.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_write_after_a_freeze_asks_the_lease_first_and_a_lost_lease_closes_the_gate() {
        let asked = Arc::new(AtomicU64::new(0));
        let held = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (a, h) = (asked.clone(), held.clone());
        let verify: Verifier = Arc::new(move || {
            a.fetch_add(1, Ordering::SeqCst);
            let held = h.load(Ordering::SeqCst);
            Box::pin(async move { Some(held) })
        });
        let gate = WriteGate::new().with_verifier(verify, Duration::from_millis(500));
        gate.open_until(Instant::now() + Duration::from_secs(10));
        assert!(gate.admit().await, "just confirmed: no question asked");
        assert_eq!(asked.load(Ordering::SeqCst), 0);
        // Frozen for a second, well inside the deadline: the lease is asked about first.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(gate.admit().await);
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        assert!(gate.admit().await, "confirmed again: no second question");
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        // Taken over meanwhile: the write is refused and the gate closes.
        held.store(false, Ordering::SeqCst);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!gate.admit().await);
        assert!(!gate.is_open(), "closed until a renewal opens it again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_gate_lets_writes_out_only_until_its_deadline() {
        let gate = WriteGate::new();
        assert!(!gate.is_open(), "a fresh gate is closed");
        gate.open_until(Instant::now() + Duration::from_secs(10));
        assert!(gate.is_open());
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(gate.is_open());
        // An older deadline arriving late does not shorten a newer one.
        gate.open_until(Instant::now());
        assert!(gate.is_open());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            !gate.is_open(),
            "closed at the deadline, with no task having to run"
        );
        gate.open_until(Instant::now() + Duration::from_secs(5));
        assert!(gate.is_open());
        gate.close();
        assert!(!gate.is_open(), "closed at once on a lost lease");
    }
}
