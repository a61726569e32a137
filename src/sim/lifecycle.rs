//! Asynchronous machine state transitions and app removal, on tokio timers [S6b].
//!
//! Every user action bumps the machine's `generation`; a transition scheduled under an older
//! generation finds it changed and does nothing, so a stop issued while a start is in flight wins.

use std::sync::Arc;

use chrono::Utc;
use serde_json::json;

use super::images::{ImageBehaviour, restarts_allowed};
use super::routes::validate::check_names;
use super::server::{Shared, lock};
use super::state::CheckStatus;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Step {
    /// `created` -> `starting` (after create without `skip_launch`).
    Boot,
    /// `replacing`/`updating` -> `starting` (after an update).
    Replaced,
    /// `starting` -> `started`, or `failed` for an image that fails.
    Started,
    /// Checks settle: `passing`, or `critical` for images whose checks fail.
    Settle,
    /// `stopping` -> `stopped`.
    Stopped,
    /// `destroying` -> `destroyed`.
    Destroyed,
    /// The process of an image that exits at once ends: `started` -> `stopped` (`images.rs`).
    Exit,
    /// flyd boots a machine whose process exited, under its restart policy: `stopped` ->
    /// `starting`.
    Restart,
}

pub(crate) fn schedule(sh: &Arc<Shared>, app: &str, id: &str, generation: u64, step: Step) {
    let t = sh.timings();
    let delay = match step {
        Step::Boot => t.machine_create,
        Step::Replaced => t.machine_update,
        Step::Started | Step::Exit | Step::Restart => t.machine_start,
        Step::Settle => t.checks_settle,
        Step::Stopped => t.machine_stop,
        Step::Destroyed => t.machine_destroy,
    };
    let sh = sh.clone();
    let (app, id) = (app.to_string(), id.to_string());
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        apply(&sh, &app, &id, generation, step);
        sh.notify();
    });
}

fn critical(c: &mut CheckStatus, now: chrono::DateTime<Utc>) {
    c.status = "critical".into();
    c.output = "dial tcp: connection refused".into();
    c.updated_at = now;
}

fn apply(sh: &Arc<Shared>, app: &str, id: &str, generation: u64, step: Step) {
    let images = lock(&sh.images).clone();
    let secrets_lag = sh.secrets_lag();
    let mut world = lock(&sh.world);
    let Some(a) = world.apps.get_mut(app) else {
        return;
    };
    let secrets_version = a.replica_secrets_version(secrets_lag);
    let Some(m) = a.machines.get_mut(id) else {
        return;
    };
    if m.generation != generation {
        return;
    }
    m.remember();
    let behaviour = images.of(m.image());
    let next = match step {
        Step::Boot | Step::Replaced | Step::Restart => {
            m.boot(secrets_version, "start", "flyd");
            Some(Step::Started)
        }
        Step::Started if behaviour == ImageBehaviour::Fails => {
            // The VM never ran: `failed` is persistent until a start or a destroy [S6b].
            m.set_state_because(
                "failed",
                "start",
                "flyd",
                Some(json!({"error": "failed to start VM: machine failed to boot"})),
            );
            m.checks.clear();
            None
        }
        Step::Started => {
            m.set_state("started", "start", "flyd");
            let now = m.now();
            // `started` only means the VM booted; checks report later [S24].
            m.checks = check_names(&m.config)
                .into_iter()
                .map(|name| CheckStatus {
                    name,
                    status: "warning".into(),
                    output: "waiting for status update".into(),
                    updated_at: now,
                })
                .collect();
            if behaviour == ImageBehaviour::ExitsAtOnce {
                // Dies before its first check runs.
                Some(Step::Exit)
            } else {
                (!m.checks.is_empty()).then_some(Step::Settle)
            }
        }
        Step::Settle if m.state != "started" => None,
        Step::Settle => {
            let now = m.now();
            for c in &mut m.checks {
                if behaviour == ImageBehaviour::Healthy {
                    c.status = "passing".into();
                    c.output = "OK".into();
                    c.updated_at = now;
                } else {
                    critical(c, now);
                }
            }
            None
        }
        Step::Exit => {
            let restarting = m.restarts < restarts_allowed(&m.config);
            // flyd acts on its own here: whatever was scheduled for the run that ended is void.
            m.generation += 1;
            m.checks.clear();
            m.set_state_because(
                "stopped",
                "exit",
                "flyd",
                Some(json!({"exit_event": {
                    "exit_code": 1,
                    "guest_exit_code": 1,
                    "oom_killed": false,
                    "requested_stop": false,
                    "restarting": restarting,
                }})),
            );
            if restarting {
                m.restarts += 1;
                Some(Step::Restart)
            } else {
                None
            }
        }
        Step::Stopped => {
            m.set_state("stopped", "exit", "flyd");
            m.checks.clear();
            None
        }
        Step::Destroyed => {
            m.set_state("destroyed", "destroy", "flyd");
            m.checks.clear();
            None
        }
    };
    let generation = m.generation;
    drop(world);
    if let Some(next) = next {
        schedule(sh, app, id, generation, next);
    }
}

/// Re-evaluates settled checks of running machines after the image behaviours changed.
pub(crate) fn refresh_checks(sh: &Shared) {
    let images = lock(&sh.images).clone();
    let mut world = lock(&sh.world);
    for app in world.apps.values_mut() {
        for m in app.machines.values_mut() {
            let now = m.now();
            let bad = images.of(m.image()) == ImageBehaviour::ChecksCritical;
            for c in m.checks.iter_mut().filter(|c| c.status != "warning") {
                let want = if bad { "critical" } else { "passing" };
                if c.status != want {
                    if bad {
                        critical(c, now);
                    } else {
                        c.status = "passing".into();
                        c.output = "OK".into();
                        c.updated_at = now;
                    }
                }
            }
        }
    }
}

/// After the delete delay, the app and everything in it disappear [S1][S5]. The id guards against
/// removing a same-named app created after this one.
pub(crate) fn schedule_app_removal(sh: &Arc<Shared>, name: String, app_id: String) {
    let delay = sh.timings().app_delete;
    let sh = sh.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        {
            let mut world = lock(&sh.world);
            if world.apps.get(&name).is_some_and(|a| a.id == app_id) {
                world.apps.remove(&name);
            }
        }
        sh.notify();
    });
}
