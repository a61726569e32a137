//! The daemon's own liveness and readiness: the controller loop reports into it, the operator
//! endpoints (`/healthz`, `/readyz`, in `http`) read it.
//!
//! Its own module, at the bottom of the layering, because both sides need it and neither may
//! depend on the other: the loop must not reach up into the HTTP server, and the server only reads.
//! Not in `model`: this is the process's state (a clock and a lock), not the fleet's.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Shared liveness/readiness state. The controller loop calls [`Health::heartbeat`] every
/// iteration (including when waiting as a standby) and reports each database check and lease
/// change; the HTTP handlers read it. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Health {
    inner: Arc<Mutex<Beats>>,
    staleness: Duration,
}

#[derive(Debug)]
struct Beats {
    /// Start-up time until the first heartbeat.
    last_heartbeat: Instant,
    heartbeats: u64,
    /// `(when, reachable)` of the last database check.
    database: Option<(Instant, bool)>,
    leader: bool,
}

impl Health {
    /// `staleness`: how long without a heartbeat before `/healthz` fails, e.g.
    /// [`crate::config::Settings::heartbeat_staleness`] (3 × interval + 60 s). The same window
    /// bounds how old the last database check may be for `/readyz`.
    pub fn new(staleness: Duration) -> Self {
        Health {
            inner: Arc::new(Mutex::new(Beats {
                last_heartbeat: Instant::now(),
                heartbeats: 0,
                database: None,
                leader: false,
            })),
            staleness,
        }
    }

    /// How long since the last heartbeat (or start-up) at `now`, and how many there were.
    pub(crate) fn since_heartbeat(&self, now: Instant) -> (Duration, u64) {
        let s = self.state();
        (
            now.saturating_duration_since(s.last_heartbeat),
            s.heartbeats,
        )
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Beats> {
        // A panic while holding this lock leaves plain data behind; keep serving it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The loop is alive.
    pub fn heartbeat(&self) {
        let mut s = self.state();
        s.last_heartbeat = Instant::now();
        s.heartbeats += 1;
    }

    /// Result of the latest database round trip (lease renewal, a pass's queries, or a ping).
    pub fn set_database_reachable(&self, reachable: bool) {
        self.state().database = Some((Instant::now(), reachable));
    }

    /// Alias of [`Health::set_database_reachable`].
    pub fn set_db_ok(&self, ok: bool) {
        self.set_database_reachable(ok);
    }

    pub fn set_leader(&self, leader: bool) {
        self.state().leader = leader;
    }

    pub fn is_leader(&self) -> bool {
        self.state().leader
    }

    pub fn staleness(&self) -> Duration {
        self.staleness
    }

    pub fn is_alive(&self) -> bool {
        self.alive_at(Instant::now())
    }

    pub fn is_ready(&self) -> bool {
        self.readiness_at(Instant::now()).is_ok()
    }

    pub(crate) fn alive_at(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.state().last_heartbeat) <= self.staleness
    }

    /// `Ok(())` or why not ready.
    pub(crate) fn readiness_at(&self, now: Instant) -> Result<(), &'static str> {
        if !self.alive_at(now) {
            return Err("controller loop stalled");
        }
        match self.state().database {
            None => Err("database not checked yet"),
            Some((_, false)) => Err("database unreachable on the last check"),
            Some((at, true)) if now.saturating_duration_since(at) > self.staleness => {
                Err("last successful database check is too old")
            }
            Some(_) => Ok(()),
        }
    }

    #[cfg(test)]
    pub(crate) fn backdate(&self, by: Duration) {
        let mut s = self.state();
        s.last_heartbeat = s.last_heartbeat.checked_sub(by).expect("backdate");
        if let Some((at, ok)) = s.database {
            s.database = Some((at.checked_sub(by).expect("backdate"), ok));
        }
    }
}
