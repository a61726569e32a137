//! A deduplicated per-user work queue with bounded concurrency, modelled on
//! client-go's `workqueue` (queue, dirty and processing sets) and kube-rs's `controller::runner`
//! (never the same object twice at once).
//!
//! # Expected flow
//! 1. [`WorkQueue::add`] a user (a NOTIFY names one; a full pass adds whoever needs work). A user
//!    already queued is not queued again; a user being worked on is marked *dirty* instead.
//! 2. [`run`] takes users in arrival order and works on at most `max` at once, each in its own
//!    task, so a slow user (a two-minute health wait) holds only its own slot.
//! 3. When a user's work ends ([`WorkQueue::done`]), a dirty user goes back to the end of the
//!    queue once: whatever changed while it was worked on is read afresh.
//!
//! # Guarantees
//! - A user is never worked on by two tasks at once, and never queued twice.
//! - At most `max` users are in progress; the others wait in the queue.
//! - Every `add` is followed by at least one run that *starts* after it (dirty re-queue).
//!
//! # Assumptions
//! - The work itself reads the database and Fly afresh (level-triggered): running a user again is
//!   always safe, running it less often than it was added is the point.
//!
//! # Caveats
//! - The queue lives in memory: a crash loses it, and the periodic full pass (the safety net)
//!   finds whatever was pending.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use uuid::Uuid;

#[derive(Default)]
struct Inner {
    queue: VecDeque<Uuid>,
    queued: HashSet<Uuid>,
    processing: HashSet<Uuid>,
    dirty: HashSet<Uuid>,
    closed: bool,
}

/// Users waiting for work, deduplicated; see the module docs.
#[derive(Default)]
pub struct WorkQueue {
    inner: Mutex<Inner>,
    wake: Notify,
}

impl WorkQueue {
    pub fn new() -> Arc<WorkQueue> {
        Arc::new(WorkQueue::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves the sets consistent (every change is one step).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue `user` unless it is queued already; if it is being worked on, run it once more after.
    pub(crate) fn add(&self, user: Uuid) {
        let mut g = self.lock();
        if g.closed {
            return;
        }
        if g.processing.contains(&user) {
            g.dirty.insert(user);
            return;
        }
        if g.queued.insert(user) {
            g.queue.push_back(user);
            drop(g);
            self.wake.notify_one();
        }
    }

    /// The next user to work on, marked in progress; `None` once closed and empty.
    pub async fn next(&self) -> Option<Uuid> {
        loop {
            let notified = self.wake.notified();
            {
                let mut g = self.lock();
                while let Some(user) = g.queue.pop_front() {
                    g.queued.remove(&user);
                    // Claimed meanwhile by a full pass ([`WorkQueue::try_claim`]): run it after.
                    if g.processing.contains(&user) {
                        g.dirty.insert(user);
                        continue;
                    }
                    g.processing.insert(user);
                    return Some(user);
                }
                if g.closed {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Mark `user` in progress for work done outside the runner (a full pass's action): false if
    /// it is in progress already, and the caller must leave it alone. Release with
    /// [`WorkQueue::done`].
    pub(crate) fn try_claim(&self, user: Uuid) -> bool {
        self.lock().processing.insert(user)
    }

    /// [`WorkQueue::try_claim`] whose release happens on drop (also when the work is aborted).
    pub fn claim(self: &Arc<Self>, user: Uuid) -> Option<Claim> {
        self.try_claim(user).then(|| Claim(self.clone(), user))
    }

    /// The work on `user` ended (whatever its outcome).
    pub fn done(&self, user: Uuid) {
        let mut g = self.lock();
        g.processing.remove(&user);
        if g.dirty.remove(&user) && !g.closed && g.queued.insert(user) {
            g.queue.push_back(user);
            drop(g);
            self.wake.notify_one();
        }
    }

    /// Take no new users; [`WorkQueue::next`] drains what is queued, then answers `None`.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_waiters();
    }

    /// Users waiting (not in progress).
    pub(crate) fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A user held in progress; released (and re-queued if added meanwhile) on drop.
pub struct Claim(Arc<WorkQueue>, Uuid);

impl Drop for Claim {
    fn drop(&mut self) {
        self.0.done(self.1);
    }
}

/// Work the queue with at most `max` users at once until it is closed and drained.
pub(crate) async fn run<F, Fut>(queue: Arc<WorkQueue>, max: usize, work: F)
where
    F: Fn(Uuid) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max.max(1)));
    let mut tasks = JoinSet::new();
    loop {
        // A slot first, then a user: a user is only taken off the queue when it can start.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let user = tokio::select! {
            u = queue.next() => u,
            // Reap finished tasks meanwhile so the set does not grow without bound.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {
                drop(slot);
                continue;
            }
        };
        let Some(user) = user else { break };
        let fut = work(user);
        let q = queue.clone();
        tasks.spawn(async move {
            // Released even if the work panics or is aborted: a user must not stay "in progress".
            let _claim = Claim(q, user);
            let _slot = slot;
            fut.await;
        });
    }
    while tasks.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;
    use tokio::time::Instant;

    fn users(n: u128) -> Vec<Uuid> {
        (1..=n).map(Uuid::from_u128).collect()
    }

    #[test]
    fn a_user_added_many_times_is_queued_once() {
        let q = WorkQueue::new();
        let u = Uuid::from_u128(7);
        q.add(u);
        q.add(u);
        q.add(Uuid::from_u128(8));
        q.add(u);
        assert_eq!(q.len(), 2);
    }

    #[tokio::test]
    async fn a_user_added_while_in_progress_runs_once_more_after_never_alongside() {
        let q = WorkQueue::new();
        let u = Uuid::from_u128(1);
        q.add(u);
        assert_eq!(q.next().await, Some(u));
        q.add(u);
        q.add(u);
        assert!(q.is_empty(), "not queued while in progress");
        q.done(u);
        assert_eq!(q.len(), 1, "re-queued once");
        assert_eq!(q.next().await, Some(u));
        q.done(u);
        assert!(q.is_empty());
    }

    /// The problem this solves, measured: one machine slow to start held every other user for two
    /// minutes. Here it holds one of two slots; the other nine users finish in a few seconds.
    #[tokio::test(start_paused = true)]
    async fn a_slow_user_holds_only_its_own_slot_and_at_most_max_run_at_once() {
        let q = WorkQueue::new();
        let all = users(10);
        let slow = all[0];
        for u in &all {
            q.add(*u);
        }
        let start = Instant::now();
        let finished: Arc<Mutex<HashMap<Uuid, Duration>>> = Default::default();
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let runner = {
            let (finished, running, peak) = (finished.clone(), running.clone(), peak.clone());
            tokio::spawn(run(q.clone(), 2, move |u| {
                let (finished, running, peak) = (finished.clone(), running.clone(), peak.clone());
                async move {
                    use std::sync::atomic::Ordering::SeqCst;
                    let now = running.fetch_add(1, SeqCst) + 1;
                    peak.fetch_max(now, SeqCst);
                    let d = if u == slow { 120 } else { 1 };
                    tokio::time::sleep(Duration::from_secs(d)).await;
                    running.fetch_sub(1, SeqCst);
                    finished.lock().unwrap().insert(u, start.elapsed());
                }
            }))
        };
        tokio::time::sleep(Duration::from_secs(15)).await;
        {
            let f = finished.lock().unwrap();
            assert_eq!(
                f.len(),
                9,
                "every fast user is done while the slow one runs"
            );
            assert!(f.values().all(|d| *d <= Duration::from_secs(10)), "{f:?}");
        }
        q.close();
        runner.await.unwrap();
        assert_eq!(finished.lock().unwrap().len(), 10);
        assert_eq!(peak.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_user_claimed_by_a_pass_is_not_handed_out_until_released() {
        let q = WorkQueue::new();
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        q.add(a);
        q.add(b);
        assert!(q.try_claim(a));
        assert!(!q.try_claim(a), "one claim at a time");
        assert_eq!(q.next().await, Some(b), "the claimed user is skipped");
        q.done(a);
        assert_eq!(q.next().await, Some(a), "and runs once released");
    }

    #[tokio::test(start_paused = true)]
    async fn the_runner_never_works_one_user_twice_at_once() {
        let q = WorkQueue::new();
        let u = Uuid::from_u128(3);
        let overlap = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let busy = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let runner = {
            let (overlap, busy, runs) = (overlap.clone(), busy.clone(), runs.clone());
            tokio::spawn(run(q.clone(), 4, move |_| {
                let (overlap, busy, runs) = (overlap.clone(), busy.clone(), runs.clone());
                async move {
                    use std::sync::atomic::Ordering::SeqCst;
                    if busy.swap(true, SeqCst) {
                        overlap.store(true, SeqCst);
                    }
                    runs.fetch_add(1, SeqCst);
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    busy.store(false, SeqCst);
                }
            }))
        };
        for _ in 0..5 {
            q.add(u);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        tokio::time::sleep(Duration::from_secs(20)).await;
        q.close();
        runner.await.unwrap();
        use std::sync::atomic::Ordering::SeqCst;
        assert!(!overlap.load(SeqCst));
        assert_eq!(
            runs.load(SeqCst),
            2,
            "the adds during the first run coalesce into one more"
        );
    }
}
