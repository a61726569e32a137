//! Prometheus metrics (OpenMetrics text on `/metrics`), scraped by Fly every 15 s.
//!
//! Every label value is a variant of one of the enums below, one enum per label: the recording
//! functions take the enum, so a series can carry no user id, app name or error message, and
//! the values listed here (and in README.md, "Metrics") are all there are; a unit test holds both
//! lists to the enums. Fly adds `app`, `region`, `host`, `instance` to every series and
//! overwrites same-named labels, so none of ours use those names.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `vyx_fleet_passes_total` | counter | `outcome` ([`PassOutcome`]): `ok`, `partial`, `fenced`, `error`, `sweep` |
//! | `vyx_fleet_pass_duration_seconds` | histogram | |
//! | `vyx_fleet_actions_total` | counter | `action` ([`ActionKind`]): `converge`, `rollout_move`, `rollout_check`, `rollout_settle`, `rollout_back`, `schedule_deprovision`, `cancel_deprovision`, `deprovision`, `repair_restart`, `repair_replace`, `sync_orphans`, `orphan_delete`; `outcome` ([`ActionOutcome`]): `ok`, `retry`, `fenced`, `stale` |
//! | `vyx_fleet_fly_errors_total` | counter | `kind` ([`FlyErrorKind`]): `unauthorized`, `forbidden`, `not_found`, `timeout`, `conflict`, `precondition_failed`, `name_taken`, `insufficient_capacity`, `invalid`, `rate_limited`, `server`, `transport`, `decode`, `body_too_large`, `incomplete`, `unexpected_status`, `config` |
//! | `vyx_fleet_apps` | gauge | `status` ([`AppStatus`]): `provisioning`, `active`, `error`, `deprovisioning`, `deleted`, `other` |
//! | `vyx_fleet_desired_apps` | gauge | |
//! | `vyx_fleet_is_leader` | gauge | 1 on the replica holding the lease |
//! | `vyx_fleet_deletions_blocked` | gauge | deletions held back by the blast-radius breaker (0 = none) |
//! | `vyx_fleet_rollout_apps` | gauge | `state` ([`RolloutState`]): `pending`, `moving`, `soaking`, `healthy`, `failed`, `rolled_back` |
//! | `vyx_fleet_rollout_halted` | gauge | 1 while the current rollout is halted |
//! | `vyx_fleet_last_pass_timestamp_seconds` | gauge | Unix time of the last completed pass |
//! | `vyx_fleet_build_info` | gauge | `version` (the crate's version; always 1) |

mod labels;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub use labels::{ActionKind, ActionOutcome, AppStatus, FlyErrorKind, PassOutcome, RolloutState};

/// The statuses always exported (0 when absent): every [`AppStatus`] but `Other`.
const KNOWN_APP_STATUSES: [AppStatus; 5] = [
    AppStatus::Provisioning,
    AppStatus::Active,
    AppStatus::Error,
    AppStatus::Deprovisioning,
    AppStatus::Deleted,
];

/// Pass-duration buckets, seconds: a quiet pass is two list calls; a rollout can take minutes.
const PASS_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

type Labels1 = [(&'static str, &'static str); 1];
type Labels2 = [(&'static str, &'static str); 2];

/// Cheap to clone; every clone updates the same series.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    passes: Family<Labels1, Counter>,
    pass_duration: Histogram,
    actions: Family<Labels2, Counter>,
    fly_errors: Family<Labels1, Counter>,
    apps: Family<Labels1, Gauge>,
    desired_apps: Gauge,
    is_leader: Gauge,
    deletions_blocked: Gauge,
    rollout_apps: Family<Labels1, Gauge>,
    rollout_halted: Gauge,
    last_pass_timestamp: Gauge<f64, AtomicU64>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry (no global state: tests can make as many as they like).
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let passes = Family::<Labels1, Counter>::default();
        // prometheus-client appends `_total` to counter names.
        registry.register(
            "vyx_fleet_passes",
            "Reconcile passes by outcome",
            passes.clone(),
        );
        let pass_duration = Histogram::new(PASS_BUCKETS);
        registry.register(
            "vyx_fleet_pass_duration_seconds",
            "Wall time of a reconcile pass",
            pass_duration.clone(),
        );
        let actions = Family::<Labels2, Counter>::default();
        registry.register(
            "vyx_fleet_actions",
            "Actions executed, by kind and outcome",
            actions.clone(),
        );
        let fly_errors = Family::<Labels1, Counter>::default();
        registry.register(
            "vyx_fleet_fly_errors",
            "Failed Fly Machines API calls, by error kind",
            fly_errors.clone(),
        );
        let apps = Family::<Labels1, Gauge>::default();
        registry.register(
            "vyx_fleet_apps",
            "Recorded user apps (user_fly_apps rows) by status",
            apps.clone(),
        );
        let desired_apps = Gauge::default();
        registry.register(
            "vyx_fleet_desired_apps",
            "Users who should have an app, per the last pass",
            desired_apps.clone(),
        );
        let is_leader = Gauge::default();
        registry.register(
            "vyx_fleet_is_leader",
            "1 while this replica holds the leader lease",
            is_leader.clone(),
        );
        let deletions_blocked = Gauge::default();
        registry.register(
            "vyx_fleet_deletions_blocked",
            "Deletions held back by the blast-radius breaker in the last pass (0 = not tripped)",
            deletions_blocked.clone(),
        );
        let rollout_apps = Family::<Labels1, Gauge>::default();
        registry.register(
            "vyx_fleet_rollout_apps",
            "Apps of the current rollout by state (pending, moving, soaking, healthy, failed, rolled_back)",
            rollout_apps.clone(),
        );
        for state in RolloutState::ALL {
            rollout_apps
                .get_or_create(&[("state", state.as_str())])
                .set(0);
        }
        let rollout_halted = Gauge::default();
        registry.register(
            "vyx_fleet_rollout_halted",
            "1 while the current rollout is halted (until the spec changes or `rollout resume`)",
            rollout_halted.clone(),
        );
        let last_pass_timestamp = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "vyx_fleet_last_pass_timestamp_seconds",
            "Unix time at which the last reconcile pass finished",
            last_pass_timestamp.clone(),
        );
        let build_info = Family::<Labels1, Gauge>::default();
        registry.register(
            "vyx_fleet_build_info",
            "Always 1; the version label names the running build",
            build_info.clone(),
        );
        build_info
            .get_or_create(&[("version", env!("CARGO_PKG_VERSION"))])
            .set(1);
        for status in KNOWN_APP_STATUSES {
            apps.get_or_create(&[("status", status.as_str())]).set(0);
        }
        Metrics {
            inner: Arc::new(Inner {
                registry,
                passes,
                pass_duration,
                actions,
                fly_errors,
                apps,
                desired_apps,
                is_leader,
                deletions_blocked,
                rollout_apps,
                rollout_halted,
                last_pass_timestamp,
            }),
        }
    }

    /// One finished pass: counts it, observes its duration and stamps the time.
    pub fn record_pass(&self, outcome: PassOutcome, duration: Duration) {
        let i = &self.inner;
        i.passes
            .get_or_create(&[("outcome", outcome.as_str())])
            .inc();
        i.pass_duration.observe(duration.as_secs_f64());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        i.last_pass_timestamp.set(now);
    }

    pub fn record_action(&self, action: ActionKind, outcome: ActionOutcome) {
        self.inner
            .actions
            .get_or_create(&[("action", action.as_str()), ("outcome", outcome.as_str())])
            .inc();
    }

    pub fn record_fly_error(&self, kind: FlyErrorKind) {
        self.inner
            .fly_errors
            .get_or_create(&[("kind", kind.as_str())])
            .inc();
    }

    /// Sets `vyx_fleet_apps{status}` from `(status, count)` pairs (a status may repeat: its counts
    /// add up). Every status but `other` missing from `counts` is set to 0 (a status that emptied
    /// must not keep its old value); `other` appears once it was non-zero and stays, at 0, after.
    pub fn set_app_counts(&self, counts: &[(AppStatus, i64)]) {
        let total = |status: AppStatus| -> i64 {
            counts
                .iter()
                .filter(|(s, _)| *s == status)
                .map(|(_, n)| n)
                .sum()
        };
        for status in KNOWN_APP_STATUSES {
            self.inner
                .apps
                .get_or_create(&[("status", status.as_str())])
                .set(total(status));
        }
        let other = [("status", AppStatus::Other.as_str())];
        let n = total(AppStatus::Other);
        if n != 0 || self.inner.apps.get(&other).is_some() {
            self.inner.apps.get_or_create(&other).set(n);
        }
    }

    pub fn set_desired_apps(&self, n: i64) {
        self.inner.desired_apps.set(n);
    }

    pub fn set_leader(&self, leader: bool) {
        self.inner.is_leader.set(i64::from(leader));
    }

    /// Whether (`true` = 1) or how many deletions the blast-radius breaker held back in the last
    /// pass; 0 when it did not trip. Alert on `> 0`.
    pub fn set_deletions_blocked(&self, n: impl Into<i64>) {
        self.inner.deletions_blocked.set(n.into());
    }

    /// The current rollout: `(state, count)` pairs (a state missing is 0), and whether it is
    /// halted.
    pub fn set_rollout(&self, counts: &[(RolloutState, i64)], halted: bool) {
        for &state in RolloutState::ALL {
            let n = counts
                .iter()
                .filter(|(s, _)| *s == state)
                .map(|(_, n)| n)
                .sum();
            self.inner
                .rollout_apps
                .get_or_create(&[("state", state.as_str())])
                .set(n);
        }
        self.inner.rollout_halted.set(i64::from(halted));
    }

    /// The OpenMetrics text exposition of every series.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.inner.registry);
        out
    }
}

#[cfg(test)]
mod tests;
