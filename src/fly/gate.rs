//! [`WriteGate`]: the instant after which this replica sends no more Fly writes.
//!
//! The lease keeper stops a leader `act_margin` after its last successful renewal, by cancelling
//! the pass. Cancellation is cooperative: a replica frozen (SIGSTOP, a long GC-like stall, a VM
//! pause) and then woken runs its ready tasks in no set order, so a task woken from a rate-limit
//! wait could send a write before the lease keeper's timer fires. The gate closes that gap: the
//! client reads it synchronously right before each write leaves, so a write after the deadline is
//! never sent, whatever the scheduler does. Reads stay allowed (they change nothing).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Shared deadline for writes; clones share it. Starts closed until [`WriteGate::open_until`].
#[derive(Debug, Clone)]
pub struct WriteGate {
    base: Instant,
    /// Nanoseconds after `base` until which writes may leave; 0 = closed.
    until_ns: Arc<AtomicU64>,
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
