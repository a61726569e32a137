//! When each app is next probed (the prober's schedule): every app once per `interval`, new apps
//! spread evenly over it, never in a burst.
//!
//! Kept as a queue ordered by due time, so a round costs the apps due in it, not the fleet: the
//! prober runs a few hundred rounds an interval, and scanning 100,000 entries in each was a
//! steady share of a core.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug)]
pub(crate) struct Schedule {
    interval: Duration,
    due: HashMap<String, Instant>,
    /// The same slots, by time (then name, so equal times stay distinct and ordered).
    queue: BTreeSet<(Instant, String)>,
}

impl Schedule {
    pub(crate) fn new(interval: Duration) -> Schedule {
        Schedule {
            interval: interval.max(Duration::from_millis(1)),
            due: HashMap::new(),
            queue: BTreeSet::new(),
        }
    }

    /// The apps to probe are `apps`: forget the others; the `n` new ones get slots `interval / n`
    /// apart from `now` on (by name, so the order is stable).
    pub(crate) fn sync(&mut self, apps: &HashSet<String>, now: Instant) {
        let queue = &mut self.queue;
        self.due.retain(|a, at| {
            let keep = apps.contains(a);
            if !keep {
                queue.remove(&(*at, a.clone()));
            }
            keep
        });
        let mut new: Vec<&String> = apps.iter().filter(|a| !self.due.contains_key(*a)).collect();
        new.sort();
        let n = new.len() as u32;
        for (i, a) in new.into_iter().enumerate() {
            let at = now + self.interval * i as u32 / n.max(1);
            self.due.insert(a.clone(), at);
            self.queue.insert((at, a.clone()));
        }
    }

    /// The apps whose slot has come; each moves one interval on (keeping its place in the spread,
    /// also after a stall).
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(first) = self.queue.first()
            && first.0 <= now
        {
            let Some((mut at, app)) = self.queue.pop_first() else {
                break;
            };
            while at <= now {
                at += self.interval;
            }
            self.due.insert(app.clone(), at);
            out.push(app);
        }
        // Re-queued after the loop: an app probed now is never due again in the same round.
        for app in &out {
            if let Some(at) = self.due.get(app) {
                self.queue.insert((*at, app.clone()));
            }
        }
        out.sort();
        out
    }

    pub(crate) fn len(&self) -> usize {
        self.due.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> HashSet<String> {
        (0..n).map(|i| format!("vyx-user-{i:04}")).collect()
    }

    #[test]
    fn a_fleet_is_probed_once_per_interval_spread_evenly_never_in_a_burst() {
        let interval = Duration::from_secs(300);
        let start = Instant::now();
        let mut s = Schedule::new(interval);
        s.sync(&names(1000), start);
        // Ten-second windows over two intervals: each holds its share (1000 * 10 / 300 ≈ 33).
        let mut per_app: HashMap<String, usize> = HashMap::new();
        for w in 0..60u32 {
            let now = start + Duration::from_secs(10) * w + Duration::from_millis(9_999);
            let due = s.take_due(now);
            assert!((33..=34).contains(&due.len()), "window {w}: {}", due.len());
            for a in due {
                *per_app.entry(a).or_default() += 1;
            }
        }
        assert_eq!(per_app.len(), 1000);
        assert!(
            per_app.values().all(|&n| n == 2),
            "each app twice in two intervals"
        );
    }

    #[test]
    fn apps_joining_later_are_spread_too_and_gone_apps_are_dropped() {
        let interval = Duration::from_secs(60);
        let start = Instant::now();
        let mut s = Schedule::new(interval);
        s.sync(&names(10), start);
        let mut more = names(10);
        more.extend((0..60).map(|i| format!("vyx-user-new-{i:02}")));
        more.remove("vyx-user-0000");
        let later = start + Duration::from_secs(5);
        s.sync(&more, later);
        assert_eq!(s.len(), 69);
        // The 60 newcomers take one slot a second from their arrival, not all at once.
        let first = s.take_due(later);
        assert!(first.len() <= 2, "{first:?}");
        assert!(!first.contains(&"vyx-user-0000".to_string()));
        let rest = s.take_due(later + interval * 2);
        assert_eq!(rest.len(), 69, "every app still scheduled, once a round");
        assert!(
            !rest.contains(&"vyx-user-0000".to_string()),
            "a gone app is never probed"
        );
    }

    #[test]
    fn after_a_stall_each_app_is_probed_once_and_keeps_its_place() {
        let interval = Duration::from_secs(10);
        let start = Instant::now();
        let mut s = Schedule::new(interval);
        s.sync(&names(10), start);
        assert_eq!(s.take_due(start + Duration::from_secs(35)).len(), 10);
        assert_eq!(s.take_due(start + Duration::from_secs(35)).len(), 0);
        assert_eq!(s.take_due(start + Duration::from_millis(36_500)).len(), 1);
    }
}
