//! Acting under the lease: keep it renewed, and stop acting before it could expire.
//!
//! # Expected flow
//! 1. The lease is taken ([`crate::db::lease::try_acquire`]); the time the request was *sent* is
//!    when its validity is counted from (the database set the expiry no earlier than that).
//! 2. [`keep_lease`] renews every `renew_every`. A renewal that succeeds moves the validity to the
//!    time it was sent, never to when its answer arrived.
//! 3. When the lease is taken over, or no renewal sent within the last `act_margin` has succeeded,
//!    `lost` is signalled at once (a timer, not the next loop turn) and the work is dropped: no new
//!    Fly call starts after that.
//!
//! # Guarantees
//! - `lost` fires no later than `act_margin` after the send time of the last successful renewal,
//!   while the lease itself lasts `ttl` from that instant: `ttl - act_margin` is the margin left for
//!   Fly calls already in flight to finish, and for the local and database clocks to drift.
//!
//! # Caveats
//! - A Fly call already sent when `lost` fires is not recalled: it may still complete at Fly (an
//!   app or machine created, updated, stopped or deleted) after a successor has started. Its record
//!   in the database is fenced and does not land; the successor finds the result on Fly and adopts or
//!   corrects it (creates are found again by name and by the `vyx_op` marker).

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::warn;

use crate::fly::WriteGate;

use super::execute::Ctx;
use super::pass::{PassConfig, PassReport, run_pass};
use crate::db::{DbError, apps, lease};
use crate::metrics::Metrics;

/// How a holder keeps its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenewConfig {
    pub ttl: Duration,
    pub renew_every: Duration,
    /// Stop acting when the last successful renewal was *sent* longer ago than this. Keep it well
    /// under `ttl`: `ttl - act_margin` is the time in-flight calls have once the holder stops.
    pub act_margin: Duration,
}

impl RenewConfig {
    /// What is left of the lease when the holder stops acting: the time in-flight calls have.
    #[cfg(test)]
    pub(crate) fn margin(&self) -> Duration {
        self.ttl.saturating_sub(self.act_margin)
    }
}

/// Renew with `renew` every `renew_every`; signal `lost` when the lease is taken over or no renewal
/// sent within `act_margin` has succeeded. `held_since` is when the acquiring request was sent.
/// `gate` follows the same deadline, so the Fly client refuses writes at the deadline even before
/// this task (or the pass's cancellation) gets to run.
pub(crate) async fn keep_lease<F, Fut>(
    mut renew: F,
    cfg: RenewConfig,
    held_since: Instant,
    lost: watch::Sender<bool>,
    gate: WriteGate,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, DbError>>,
{
    // Send time of the last renewal that succeeded: the lease lasts `ttl` from (at least) there.
    let mut valid_from = held_since;
    gate.open_until(held_since + cfg.act_margin);
    loop {
        let deadline = valid_from + cfg.act_margin;
        let attempt = async {
            tokio::time::sleep(cfg.renew_every).await;
            let sent = Instant::now();
            (sent, tokio::time::timeout(cfg.renew_every, renew()).await)
        };
        // The deadline is watched while waiting and while a renewal is under way: a slow answer
        // must not carry the holder past it.
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                warn!("no lease renewal succeeded within the acting margin; stopping before it can expire");
                gate.close();
                let _ = lost.send(true);
                return;
            }
            (sent, outcome) = attempt => match outcome {
                Ok(Ok(true)) => {
                    valid_from = sent;
                    gate.open_until(sent + cfg.act_margin);
                }
                Ok(Ok(false)) => {
                    warn!("lease taken over by another replica");
                    gate.close();
                    let _ = lost.send(true);
                    return;
                }
                Ok(Err(e)) => warn!(error = %e, "lease renewal failed"),
                Err(_) => warn!("lease renewal timed out"),
            },
        }
    }
}

/// [`keep_lease`] against the database.
pub(crate) async fn keep_db_lease(
    pool: sqlx::PgPool,
    holder: String,
    term: i64,
    cfg: RenewConfig,
    held_since: Instant,
    lost: watch::Sender<bool>,
    gate: WriteGate,
) {
    let renew = || lease::renew(&pool, &holder, term, cfg.ttl);
    keep_lease(renew, cfg, held_since, lost, gate).await
}

#[derive(Debug, thiserror::Error)]
pub enum OnceError {
    /// Another replica leads; a one-off pass must not run alongside it.
    #[error("another replica holds the leader lease; not reconciling alongside it")]
    LeaseHeld,
    /// The lease was lost mid-pass; the pass was abandoned (the leader resumes the work).
    #[error("the leader lease was lost mid-pass; the pass was abandoned")]
    LeaseLost,
    #[error("cannot take the leader lease: {0}")]
    Lease(#[from] DbError),
    #[error(transparent)]
    Pass(#[from] super::pass::PassError),
}

/// One pass under a lease of its own (`reconcile --once`), abandoned as soon as the lease is lost.
pub async fn run_once(
    ctx: &Ctx,
    cfg: &PassConfig,
    metrics: &Metrics,
    holder: &str,
    renew: RenewConfig,
) -> Result<PassReport, OnceError> {
    let pool = ctx.store.pool().clone();
    let sent = Instant::now();
    let term = lease::try_acquire(&pool, holder, renew.ttl)
        .await?
        .ok_or(OnceError::LeaseHeld)?;
    let gate = WriteGate::new().with_verifier(fence_verifier(pool.clone(), term), VERIFY_FRESH);
    gate.open_until(sent + renew.act_margin);
    let ctx = Ctx {
        store: apps::Store::new(pool.clone(), term),
        fly: ctx.fly.with_write_gate(gate.clone()),
        ..ctx.clone()
    };
    let (lost_tx, mut lost_rx) = watch::channel(false);
    let renewer = tokio::spawn(keep_db_lease(
        pool.clone(),
        holder.to_string(),
        term,
        renew,
        sent,
        lost_tx,
        gate,
    ));
    let result = tokio::select! {
        r = run_pass(&ctx, cfg, metrics) => r.map_err(OnceError::from),
        // Dropping the pass drops its in-flight calls; nothing new starts.
        _ = lost_rx.changed() => Err(OnceError::LeaseLost),
    };
    renewer.abort();
    if let Err(e) = lease::release(&pool, holder, term).await {
        warn!(error = %e, "could not release the lease; it expires by itself");
    }
    result
}

/// How recently the lease must have been confirmed for a Fly write to leave without asking the
/// database first. Shorter than any freeze worth fearing, long enough that a burst of writes costs
/// one fence query per half second, not one per write.
pub(crate) const VERIFY_FRESH: std::time::Duration = std::time::Duration::from_millis(500);

/// The write gate's verifier: the lease's fence for `term`. A database error is "unknown" (that
/// write is refused, the gate stays open for the keeper to decide).
pub(crate) fn fence_verifier(pool: sqlx::PgPool, term: i64) -> crate::fly::Verifier {
    std::sync::Arc::new(move || {
        let pool = pool.clone();
        Box::pin(async move { lease::fence_holds(&pool, term).await.ok() })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A lease the database would keep: a renewal executes when sent (setting the expiry to
    /// `sent + ttl`) and its answer arrives `delay` later; from `fail_after` on, renewals time out.
    #[tokio::test(start_paused = true)]
    async fn the_holder_stops_acting_with_a_real_margin_before_its_lease_expires() {
        let cfg = RenewConfig {
            ttl: Duration::from_secs(15),
            renew_every: Duration::from_secs(3),
            act_margin: Duration::from_secs(10),
        };
        let start = Instant::now();
        let expires = Arc::new(Mutex::new(start + cfg.ttl));
        let fail_after = start + Duration::from_secs(20);
        let renew = {
            let expires = expires.clone();
            move || {
                let expires = expires.clone();
                async move {
                    let sent = Instant::now();
                    if sent >= fail_after {
                        std::future::pending::<()>().await;
                    }
                    *expires.lock().unwrap() = sent + cfg.ttl;
                    // The answer comes back just inside the renewal timeout.
                    tokio::time::sleep(Duration::from_millis(2_900)).await;
                    Ok(true)
                }
            }
        };
        let (tx, mut rx) = watch::channel(false);
        let gate = WriteGate::new();
        tokio::spawn(keep_lease(renew, cfg, start, tx, gate.clone()));
        // While the holder acts, its Fly writes may leave; the gate never outlives the margin.
        // (A sleep, not `advance`: paused time steps through the keeper's timers in order.)
        // 12 s in: past the first deadline (10 s), so open only because renewals moved it on.
        tokio::time::sleep(Duration::from_secs(12)).await;
        assert!(gate.is_open(), "renewals succeed: writes are allowed");
        rx.changed().await.unwrap();
        let stopped = Instant::now();
        assert!(!gate.is_open(), "no Fly write leaves once the holder stops");
        let expiry = *expires.lock().unwrap();
        assert!(
            expiry >= stopped + cfg.margin(),
            "stopped {:?} before expiry; wanted at least {:?}",
            expiry - stopped,
            cfg.margin()
        );
    }
}
