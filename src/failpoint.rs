//! Failpoints: the named instants between a Fly call and the database write that records it, where
//! a crash test stops the controller dead (invariant 3).
//!
//! Unarmed, a failpoint is one relaxed atomic load. Tests arm them in-process (the action then hangs
//! until the test aborts the controller task, which is what a kill looks like from outside), or for
//! a real process through `VYX_FLEET_FAILPOINTS=name=abort[,name=abort…]`, which aborts the process
//! on the spot: no destructors, no cleanup.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::ThreadId;
use tokio::sync::Notify;

/// Every failpoint, in the order the operations pass them.
pub const ALL: &[&str] = &[
    PASS_ACTION_BEFORE_CLAIM,
    PROVISION_ROW_RESERVED,
    PROVISION_APP_CREATE_BEFORE,
    PROVISION_APP_CREATE_AFTER_CALL,
    PROVISION_APP_CREATE_AFTER_RECORD,
    PROVISION_SECRETS_BEFORE,
    PROVISION_SECRETS_AFTER_CALL,
    PROVISION_SECRETS_AFTER_RECORD,
    PROVISION_IPS_BEFORE,
    PROVISION_IPS_AFTER_CALL,
    PROVISION_IPS_AFTER_RECORD,
    PROVISION_MACHINE_CREATE_BEFORE,
    PROVISION_MACHINE_CREATE_AFTER_CALL,
    PROVISION_MACHINE_CREATE_AFTER_RECORD,
    CONVERGE_HEALTHY_BEFORE_RECORD,
    CONVERGE_AFTER_RECORD,
    UPDATE_MACHINE_BEFORE,
    UPDATE_MACHINE_AFTER_CALL,
    ROLLOUT_MOVING_RECORDED,
    ROLLOUT_VERDICT_BEFORE_RECORD,
    DEPROVISION_MARKED,
    DEPROVISION_STOP_BEFORE,
    DEPROVISION_STOP_AFTER_CALL,
    DEPROVISION_DELETE_BEFORE,
    DEPROVISION_DELETE_AFTER_CALL,
    DEPROVISION_GONE_BEFORE_RECORD,
    DEPROVISION_AFTER_RECORD,
    ORPHAN_DELETE_BEFORE,
    ORPHAN_DELETE_AFTER_CALL,
    ORPHAN_DELETE_AFTER_RECORD,
];

/// A full pass holds a concurrency slot for its next action and has not yet claimed the action's
/// user: where a planned action waits while the world moves on (a re-upgrade, an override).
pub const PASS_ACTION_BEFORE_CLAIM: &str = "pass.action.before_claim";
pub const PROVISION_ROW_RESERVED: &str = "provision.row.after_record";
pub const PROVISION_APP_CREATE_BEFORE: &str = "provision.app_create.before_call";
pub const PROVISION_APP_CREATE_AFTER_CALL: &str = "provision.app_create.after_call";
pub const PROVISION_APP_CREATE_AFTER_RECORD: &str = "provision.app_create.after_record";
pub const PROVISION_SECRETS_BEFORE: &str = "provision.secrets.before_call";
pub const PROVISION_SECRETS_AFTER_CALL: &str = "provision.secrets.after_call";
pub const PROVISION_SECRETS_AFTER_RECORD: &str = "provision.secrets.after_record";
pub const PROVISION_IPS_BEFORE: &str = "provision.ips.before_call";
pub const PROVISION_IPS_AFTER_CALL: &str = "provision.ips.after_call";
pub const PROVISION_IPS_AFTER_RECORD: &str = "provision.ips.after_record";
pub const PROVISION_MACHINE_CREATE_BEFORE: &str = "provision.machine_create.before_call";
pub const PROVISION_MACHINE_CREATE_AFTER_CALL: &str = "provision.machine_create.after_call";
pub const PROVISION_MACHINE_CREATE_AFTER_RECORD: &str = "provision.machine_create.after_record";
pub const CONVERGE_HEALTHY_BEFORE_RECORD: &str = "converge.healthy.before_record";
pub const CONVERGE_AFTER_RECORD: &str = "converge.active.after_record";
pub const UPDATE_MACHINE_BEFORE: &str = "update.machine_update.before_call";
pub const UPDATE_MACHINE_AFTER_CALL: &str = "update.machine_update.after_call";
/// A rollout move: `moving` recorded, nothing sent to Fly yet.
pub const ROLLOUT_MOVING_RECORDED: &str = "rollout.moving.after_record";
/// A rollout move: the update sent and its version recorded, the verdict not yet recorded.
pub const ROLLOUT_VERDICT_BEFORE_RECORD: &str = "rollout.verdict.before_record";
pub const DEPROVISION_MARKED: &str = "deprovision.marked.after_record";
pub const DEPROVISION_STOP_BEFORE: &str = "deprovision.stop.before_call";
pub const DEPROVISION_STOP_AFTER_CALL: &str = "deprovision.stop.after_call";
pub const DEPROVISION_DELETE_BEFORE: &str = "deprovision.app_delete.before_call";
pub const DEPROVISION_DELETE_AFTER_CALL: &str = "deprovision.app_delete.after_call";
pub const DEPROVISION_GONE_BEFORE_RECORD: &str = "deprovision.gone.before_record";
pub const DEPROVISION_AFTER_RECORD: &str = "deprovision.deleted.after_record";
pub const ORPHAN_DELETE_BEFORE: &str = "orphan.app_delete.before_call";
pub const ORPHAN_DELETE_AFTER_CALL: &str = "orphan.app_delete.after_call";
pub const ORPHAN_DELETE_AFTER_RECORD: &str = "orphan.app_delete.after_record";

#[derive(Clone)]
enum Armed {
    /// Signal the test, then never return (the test aborts the controller).
    Hang(Arc<Notify>),
    /// `std::process::abort()`: a real crash of a real process.
    Abort,
    /// Signal the test, then wait until it lets go (see [`Paused`]).
    Pause(Paused),
}

/// A failpoint armed to pause: tasks that reach it wait until [`Paused::release`], then go on as if
/// nothing were armed. Lets a test change the world at a named instant and then watch what the
/// controller does with a decision made before the change.
#[derive(Clone)]
pub struct Paused {
    reached: Arc<Notify>,
    go: Arc<tokio::sync::Semaphore>,
}

impl Paused {
    /// Returns once a task has reached the failpoint (at once if one already did).
    pub async fn reached(&self) {
        self.reached.notified().await
    }

    /// Lets every waiting task, and every later one, through.
    pub fn release(&self) {
        self.go.close();
    }
}

static ANY_ARMED: AtomicBool = AtomicBool::new(false);

/// Armed failpoints by (scope, name): `None` is the whole process, `Some(thread)` only tasks polled
/// on that thread (see [`arm_hang_on_this_thread`]).
type Registry = HashMap<(Option<ThreadId>, String), Armed>;

fn registry() -> &'static Mutex<Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Called at each failpoint. Cheap when nothing is armed.
pub async fn hit(name: &'static str) {
    if !ANY_ARMED.load(Ordering::Relaxed) {
        return;
    }
    let armed = {
        let r = registry().lock().unwrap_or_else(|p| p.into_inner());
        r.get(&(None, name.to_string()))
            .or_else(|| r.get(&(Some(std::thread::current().id()), name.to_string())))
            .cloned()
    };
    match armed {
        None => {}
        Some(Armed::Abort) => {
            eprintln!("failpoint {name}: aborting the process");
            std::process::abort();
        }
        Some(Armed::Hang(notify)) => {
            notify.notify_one();
            std::future::pending::<()>().await;
        }
        Some(Armed::Pause(paused)) => {
            paused.reached.notify_one();
            // Closed by `release`: the acquire then fails at once, for this task and every later one.
            let _ = paused.go.acquire().await;
        }
    }
}

/// Arm `name` to hang; the returned `Notify` fires when a task reaches it.
pub fn arm_hang(name: &str) -> Arc<Notify> {
    let notify = Arc::new(Notify::new());
    set(None, name, Armed::Hang(notify.clone()));
    notify
}

/// [`arm_hang`] for tasks polled on the calling thread only. Test-only: a crash scenario that runs
/// its controller and simulator on a current-thread runtime of its own thread can then crash at a
/// failpoint while other scenarios pass the same failpoint untouched on theirs, so a test binary
/// runs its scenarios side by side instead of one at a time.
pub fn arm_hang_on_this_thread(name: &str) -> Arc<Notify> {
    let notify = Arc::new(Notify::new());
    set(
        Some(std::thread::current().id()),
        name,
        Armed::Hang(notify.clone()),
    );
    notify
}

/// Arm `name` to pause, for tasks polled on the calling thread only (as [`arm_hang_on_this_thread`]).
pub fn arm_pause_on_this_thread(name: &str) -> Paused {
    let paused = Paused {
        reached: Arc::new(Notify::new()),
        go: Arc::new(tokio::sync::Semaphore::new(0)),
    };
    set(
        Some(std::thread::current().id()),
        name,
        Armed::Pause(paused.clone()),
    );
    paused
}

pub fn arm_abort(name: &str) {
    set(None, name, Armed::Abort);
}

fn set(scope: Option<ThreadId>, name: &str, armed: Armed) {
    registry()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert((scope, name.to_string()), armed);
    ANY_ARMED.store(true, Ordering::SeqCst);
}

pub fn disarm_all() {
    let mut r = registry().lock().unwrap_or_else(|p| p.into_inner());
    r.clear();
    ANY_ARMED.store(false, Ordering::SeqCst);
}

/// Disarm what [`arm_hang_on_this_thread`] armed on the calling thread; other threads' stay armed.
pub fn disarm_this_thread() {
    let mut r = registry().lock().unwrap_or_else(|p| p.into_inner());
    let me = Some(std::thread::current().id());
    r.retain(|(scope, _), _| *scope != me);
    ANY_ARMED.store(!r.is_empty(), Ordering::SeqCst);
}

/// Arm failpoints named in `VYX_FLEET_FAILPOINTS` (`name=abort,…`). Unknown names are an error, so
/// a typo in a crash test fails loudly instead of testing nothing.
pub fn arm_from_env() -> Result<(), String> {
    let Ok(spec) = std::env::var("VYX_FLEET_FAILPOINTS") else {
        return Ok(());
    };
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, action) = item.split_once('=').unwrap_or((item, "abort"));
        if !ALL.contains(&name) {
            return Err(format!("VYX_FLEET_FAILPOINTS: unknown failpoint {name:?}"));
        }
        match action {
            "abort" => arm_abort(name),
            other => {
                return Err(format!(
                    "VYX_FLEET_FAILPOINTS: unknown action {other:?} for {name}"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let set: std::collections::HashSet<_> = ALL.iter().collect();
        assert_eq!(set.len(), ALL.len());
    }

    #[test]
    fn a_failpoint_armed_for_one_thread_lets_other_threads_through() {
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        let _reached = arm_hang_on_this_thread(DEPROVISION_MARKED);
        let other = std::thread::spawn(move || runtime().block_on(hit(DEPROVISION_MARKED)));
        other.join().expect("another thread passes the failpoint");
        let here = runtime().block_on(async {
            tokio::time::timeout(
                std::time::Duration::from_millis(50),
                hit(DEPROVISION_MARKED),
            )
            .await
        });
        assert!(here.is_err(), "the arming thread hangs at the failpoint");
        disarm_this_thread();
        runtime().block_on(hit(DEPROVISION_MARKED));
    }
}
