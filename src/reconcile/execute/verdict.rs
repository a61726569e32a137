//! The verdict on a machine that was just given a new config (a rollout's move, a rollback, a
//! make-before-break replacement, a converge's health wait in `machine.rs`): one pure reading of
//! the machine, shared by every step that waits for one, so they cannot disagree on what "failed"
//! means.
//!
//! Judged on the version the update (or create) returned: checks of an earlier version never count.
//! A machine is **failed** as soon as the evidence says the spec does not run:
//! - it is `failed`, or `stopped`/`suspended` on the new version (the process exited: with restart
//!   policy `always` Fly restarts it a few times and then leaves it stopped, REFERENCE §3.6; the
//!   first exit is already the answer);
//! - a check is `critical` after the check's own grace period and two of its intervals, counted
//!   from the start of the move (a check that never passes is not worth the whole start budget).
//!
//! It is **healthy** when `started` with every configured check present and passing. Anything else
//! is still pending; the caller's deadline decides when pending becomes failed. [`wait_for`] is
//! that wait for the steps that hold their slot through it (a rollback, a replacement).

use std::time::Duration;

use super::{Ctx, ExecError, wait};
use crate::fly::{FlyError, Machine, MachineState};
use crate::reconcile::recorded::AppRow;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Healthy,
    Failed(String),
    Pending,
}

/// Without a configured grace period or interval, Fly's defaults for a service check.
const DEFAULT_GRACE: Duration = Duration::from_secs(10);
const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);
/// How many intervals a check may stay critical after its grace before it is a verdict.
const CRITICAL_INTERVALS: u32 = 2;

/// `elapsed`: time since the new version was asked for (the move recorded, the update sent).
pub(crate) fn judge(m: &Machine, version: Option<&str>, elapsed: Duration) -> Verdict {
    let on_version = version.is_none_or(|v| m.version.as_deref() == Some(v));
    if !on_version {
        return Verdict::Pending;
    }
    match m.state {
        MachineState::Failed | MachineState::LaunchFailed => {
            return Verdict::Failed(format!("machine {} on the new version", m.state.as_str()));
        }
        MachineState::Stopped | MachineState::Suspended => {
            return Verdict::Failed(format!(
                "machine {} on the new version (its process exited)",
                m.state.as_str()
            ));
        }
        _ => {}
    }
    if m.is_healthy() {
        return Verdict::Healthy;
    }
    let critical: Vec<&str> = m
        .checks
        .iter()
        .filter(|c| c.status == "critical")
        .map(|c| c.name.as_str())
        .collect();
    if m.state == MachineState::Started && !critical.is_empty() && elapsed >= critical_allowance(m)
    {
        return Verdict::Failed(format!(
            "checks critical past their grace period: {}",
            critical.join(", ")
        ));
    }
    Verdict::Pending
}

/// The longest grace period plus two intervals among the machine's checks.
pub(crate) fn critical_allowance(m: &Machine) -> Duration {
    let Some(config) = &m.config else {
        return DEFAULT_GRACE + DEFAULT_INTERVAL * CRITICAL_INTERVALS;
    };
    config
        .services
        .iter()
        .flat_map(|s| s.checks.iter())
        .chain(config.checks.values())
        .map(|c| {
            let grace = c.grace_period.as_ref().and_then(|d| d.as_duration());
            let interval = c.interval.as_ref().and_then(|d| d.as_duration());
            grace.unwrap_or(DEFAULT_GRACE)
                + interval.unwrap_or(DEFAULT_INTERVAL) * CRITICAL_INTERVALS
        })
        .max()
        .unwrap_or(DEFAULT_GRACE + DEFAULT_INTERVAL * CRITICAL_INTERVALS)
}

/// Why a machine is not healthy, for the row's event and the halt's reason.
pub(crate) fn describe(m: &Machine, version: Option<&str>) -> String {
    if let Some(v) = version
        && m.version.as_deref() != Some(v)
    {
        return format!("machine left version {v}");
    }
    let failing: Vec<String> = m
        .checks
        .iter()
        .filter(|c| !c.is_passing())
        .map(|c| format!("{}={}", c.name, c.status))
        .collect();
    if failing.is_empty() {
        return format!("state {}", m.state.as_str());
    }
    format!(
        "state {}, checks not passing: {}",
        m.state.as_str(),
        failing.join(", ")
    )
}

/// Wait for the machine to be `started` with every check passing on `version` (a rollback or a
/// replacement, which wait within their step). `Ok(Err(why))` is a verdict of failure; `Err` an
/// error to retry.
pub(super) async fn wait_for(
    ctx: &Ctx,
    row: &AppRow,
    machine_id: &str,
    version: Option<&str>,
) -> Result<Result<Machine, String>, ExecError> {
    let patience = ctx.timeouts.machine_started + ctx.timeouts.healthy;
    let started = tokio::time::Instant::now();
    let r = wait::until(patience, "the new version to pass its checks", || async {
        match ctx.fly.get_machine(&row.fly_app_name, machine_id).await {
            Ok(m) => Ok(match judge(&m, version, started.elapsed()) {
                Verdict::Healthy => Some(Ok(m)),
                Verdict::Failed(why) => Some(Err(why)),
                Verdict::Pending => None,
            }),
            Err(FlyError::NotFound { .. }) => Ok(Some(Err("machine vanished".to_string()))),
            Err(e) if e.is_transient() => Ok(None),
            Err(e) => Err(e.into()),
        }
    })
    .await;
    match r {
        Ok(v) => Ok(v),
        Err(ExecError::StillWaiting(_)) => {
            let m = super::rollout::get(ctx, row, machine_id).await?;
            Ok(Err(format!(
                "not healthy within {}s: {}",
                patience.as_secs(),
                describe(&m, version)
            )))
        }
        Err(e) => Err(e),
    }
}

/// Healthy on the version the update returned: `started`, every check present and passing.
pub(super) fn healthy_on(m: &Machine, version: Option<&str>) -> bool {
    let on_version = version.is_none_or(|v| m.version.as_deref() == Some(v));
    on_version && m.is_healthy()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A machine as Fly's GET answers it: one HTTP service check (grace 10 s, interval 15 s).
    fn machine(state: &str, version: &str, checks: &[&str]) -> Machine {
        let statuses: Vec<serde_json::Value> = checks
            .iter()
            .map(|s| serde_json::json!({"name": "servicecheck-00-http-8080", "status": s}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "id": "m1", "state": state, "region": "sin", "instance_id": version,
            "version": version,
            "config": {"image": "img:2", "services": [{"internal_port": 8080, "checks": [
                {"type": "http", "port": 8080, "path": "/health",
                 "interval": "15s", "grace_period": "10s"}]}]},
            "checks": statuses,
        }))
        .unwrap()
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_machine_that_exits_on_the_new_version_fails_at_once() {
        for state in ["stopped", "suspended", "failed"] {
            let v = judge(&machine(state, "v1", &[]), Some("v1"), S);
            assert!(matches!(v, Verdict::Failed(_)), "{state}: {v:?}");
        }
    }

    #[test]
    fn checks_of_another_version_never_count_either_way() {
        assert_eq!(
            judge(&machine("started", "v0", &["passing"]), Some("v1"), S),
            Verdict::Pending
        );
        assert_eq!(
            judge(&machine("stopped", "v0", &[]), Some("v1"), S),
            Verdict::Pending
        );
    }

    #[test]
    fn a_critical_check_is_a_verdict_only_after_its_grace_and_two_intervals() {
        let m = machine("started", "v1", &["critical"]);
        // The fixture's check: grace 10 s, interval 15 s.
        assert_eq!(critical_allowance(&m), Duration::from_secs(40));
        assert_eq!(
            judge(&m, Some("v1"), Duration::from_secs(39)),
            Verdict::Pending
        );
        assert!(matches!(
            judge(&m, Some("v1"), Duration::from_secs(40)),
            Verdict::Failed(_)
        ));
        // A warning (not yet run) is not critical.
        let w = machine("started", "v1", &["warning"]);
        assert_eq!(
            judge(&w, Some("v1"), Duration::from_secs(600)),
            Verdict::Pending
        );
    }

    #[test]
    fn started_with_every_check_passing_is_healthy() {
        assert_eq!(
            judge(&machine("started", "v1", &["passing"]), Some("v1"), S),
            Verdict::Healthy
        );
        assert_eq!(
            judge(&machine("starting", "v1", &[]), Some("v1"), S),
            Verdict::Pending
        );
    }
}
