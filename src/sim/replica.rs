//! List reads served by a lagging replica (REFERENCE §3.9, §7: lists come from a replicated store,
//! Corrosion; the org-wide list is explicitly point-in-time and eventually consistent).
//!
//! New machines have always been missing from lists for `machine_list_lag` (`Machine::listed_at`).
//! With `SimConfig::stale_list_reads` = p > 0, updates and destroys lag too: each list call is, with
//! probability p (seeded, apart from the faults' sequence), served by a replica `machine_list_lag` behind, which shows every
//! machine as it was then: the old version and state after an update, `started` after a destroy.
//! The other calls see the present, so a stale copy can follow a newer one, as with reads that
//! land on different replicas. A GET by id always reads the present.
//!
//! To serve the past, each machine keeps copies of itself from before each change, for as long
//! as a lagging read could want them; only while p > 0, so a large fleet pays nothing by default.

use std::time::Duration;

use tokio::time::Instant;

use super::server::{Shared, lock};
use super::state::{Machine, Past};

impl Machine {
    /// Call before changing the machine: keeps the copy a lagging replica would still serve.
    pub fn remember(&mut self) {
        let Some(mut past) = self.past.take() else {
            return;
        };
        let now = Instant::now();
        let mut copy = self.clone();
        copy.history.clear();
        past.copies.push((now, copy));
        if let Some(horizon) = now.checked_sub(past.keep) {
            past.copies.retain(|(until, _)| *until > horizon);
        }
        self.past = Some(past);
    }

    /// The machine as a replica `lag` behind sees it.
    pub fn as_of(&self, lag: Duration) -> &Machine {
        let (Some(past), Some(then)) = (&self.past, Instant::now().checked_sub(lag)) else {
            return self;
        };
        past.copies
            .iter()
            .find(|(until, _)| *until > then)
            .map_or(self, |(_, m)| m)
    }
}

/// Starts (`keep` > 0) or stops keeping past copies of every machine.
pub(crate) fn keep_past(sh: &Shared, on: bool) {
    let keep = sh.timings().machine_list_lag;
    let mut world = lock(&sh.world);
    for a in world.apps.values_mut() {
        for m in a.machines.values_mut() {
            m.past = on.then(|| past(keep));
        }
    }
}

pub(crate) fn past(keep: Duration) -> Box<Past> {
    Box::new(Past {
        keep,
        copies: Vec::new(),
    })
}

/// How far behind this list call's replica is: `machine_list_lag` for a stale read, else zero.
pub(crate) fn read_lag(sh: &Shared) -> Duration {
    let p = *lock(&sh.stale_list_reads);
    if p > 0.0 && rand::Rng::random_bool(&mut *lock(&sh.replica_rng), p.min(1.0)) {
        sh.timings().machine_list_lag
    } else {
        Duration::ZERO
    }
}
