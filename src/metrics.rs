//! Prometheus metrics (OpenMetrics text on `/metrics`), scraped by Fly every 15 s.
//!
//! Every label has a fixed, small set of values chosen in code (`&'static str`): never a user id,
//! an app name or an error message. Fly adds `app`, `region`, `host`, `instance` to every series
//! and overwrites same-named labels, so none of ours use those names.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `vyx_fleet_passes_total` | counter | `outcome` = ok, error, skipped |
//! | `vyx_fleet_pass_duration_seconds` | histogram | |
//! | `vyx_fleet_actions_total` | counter | `action` (see [`action`]), `outcome` (see [`outcome`]) |
//! | `vyx_fleet_fly_errors_total` | counter | `kind` (e.g. rate_limited, server, timeout, network) |
//! | `vyx_fleet_apps` | gauge | `status` = provisioning, active, error, deprovisioning, deleted |
//! | `vyx_fleet_desired_apps` | gauge | |
//! | `vyx_fleet_is_leader` | gauge | 1 on the replica holding the lease |
//! | `vyx_fleet_deletions_blocked` | gauge | deletions held back by the blast-radius breaker (0 = none) |
//! | `vyx_fleet_rollout_apps` | gauge | `state` (see [`ROLLOUT_STATES`]): apps of the current rollout |
//! | `vyx_fleet_rollout_halted` | gauge | 1 while the current rollout is halted |
//! | `vyx_fleet_last_pass_timestamp_seconds` | gauge | Unix time of the last completed pass |
//! | `vyx_fleet_build_info` | gauge | `version` (always 1) |

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

/// Pass outcomes.
pub mod pass {
    pub const OK: &str = "ok";
    pub const ERROR: &str = "error";
    /// Not the leader, or nothing could be observed safely.
    pub const SKIPPED: &str = "skipped";
}

/// Action kinds (label `action`).
pub mod action {
    pub const PROVISION: &str = "provision";
    pub const DEPROVISION: &str = "deprovision";
    pub const UPDATE: &str = "update";
    pub const REPAIR: &str = "repair";
    pub const SCHEDULE_DEPROVISION: &str = "schedule_deprovision";
    pub const CANCEL_DEPROVISION: &str = "cancel_deprovision";
    pub const ORPHAN_DELETE: &str = "orphan_delete";
}

/// Action outcomes (label `outcome`).
pub mod outcome {
    pub const OK: &str = "ok";
    /// Failed in a way that will be retried after backoff.
    pub const RETRY: &str = "retry";
    /// Gave up (or needs an operator).
    pub const FAILED: &str = "failed";
    /// Lost the lease mid-action; a deposed leader's write was refused.
    pub const FENCED: &str = "fenced";
    /// Planned by a full pass from an older read and dropped under the user's claim: the user's
    /// facts (subscription, override) no longer call for it.
    pub const STALE: &str = "stale";
}

/// The `user_fly_apps.status` values, each always exported (0 when absent).
pub const APP_STATUSES: [&str; 5] = [
    "provisioning",
    "active",
    "error",
    "deprovisioning",
    "deleted",
];

/// Per-app states of a rollout (label `state`), each always exported (0 when absent or not wired).
pub const ROLLOUT_STATES: [&str; 6] = [
    "pending",
    "moving",
    "soaking",
    "healthy",
    "failed",
    "rolled_back",
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
        for state in ROLLOUT_STATES {
            rollout_apps.get_or_create(&[("state", state)]).set(0);
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
        for status in APP_STATUSES {
            apps.get_or_create(&[("status", status)]).set(0);
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
    pub fn record_pass(&self, outcome: &'static str, duration: Duration) {
        let i = &self.inner;
        i.passes.get_or_create(&[("outcome", outcome)]).inc();
        i.pass_duration.observe(duration.as_secs_f64());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        i.last_pass_timestamp.set(now);
    }

    pub fn record_action(&self, action: &'static str, outcome: &'static str) {
        self.inner
            .actions
            .get_or_create(&[("action", action), ("outcome", outcome)])
            .inc();
    }

    pub fn record_fly_error(&self, kind: &'static str) {
        self.inner.fly_errors.get_or_create(&[("kind", kind)]).inc();
    }

    /// Sets `vyx_fleet_apps{status}` from `(status, count)` pairs. Every known status missing from
    /// `counts` is set to 0 (a status that emptied must not keep its old value); statuses outside
    /// [`APP_STATUSES`] are summed under `other`.
    pub fn set_app_counts(&self, counts: &[(&str, i64)]) {
        let mut known = [0i64; APP_STATUSES.len()];
        let mut other = 0i64;
        for (status, n) in counts {
            match APP_STATUSES.iter().position(|s| s == status) {
                Some(i) => known[i] += n,
                None => other += n,
            }
        }
        for (status, n) in APP_STATUSES.iter().zip(known) {
            self.inner.apps.get_or_create(&[("status", status)]).set(n);
        }
        if other != 0 || self.inner.apps.get(&[("status", "other")]).is_some() {
            self.inner
                .apps
                .get_or_create(&[("status", "other")])
                .set(other);
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

    /// The current rollout: `(state, count)` pairs from [`ROLLOUT_STATES`] (a state missing is 0;
    /// an unknown one is ignored: the label set stays fixed), and whether it is halted.
    pub fn set_rollout(&self, counts: &[(&str, i64)], halted: bool) {
        for state in ROLLOUT_STATES {
            let n = counts
                .iter()
                .filter(|(s, _)| *s == state)
                .map(|(_, n)| n)
                .sum();
            self.inner
                .rollout_apps
                .get_or_create(&[("state", state)])
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
mod tests {
    use super::*;

    /// The value of the sample line starting with `series ` (name plus labels, exactly).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(|v| v.parse().unwrap())
    }

    #[test]
    fn every_family_is_exported_with_help_and_type() {
        let text = Metrics::new().encode();
        for name in [
            "vyx_fleet_passes",
            "vyx_fleet_pass_duration_seconds",
            "vyx_fleet_actions",
            "vyx_fleet_fly_errors",
            "vyx_fleet_apps",
            "vyx_fleet_desired_apps",
            "vyx_fleet_is_leader",
            "vyx_fleet_deletions_blocked",
            "vyx_fleet_rollout_apps",
            "vyx_fleet_rollout_halted",
            "vyx_fleet_last_pass_timestamp_seconds",
            "vyx_fleet_build_info",
        ] {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}:\n{text}");
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
        }
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(sample(&text, "vyx_fleet_is_leader"), Some(0.0));
        assert_eq!(
            sample(&text, "vyx_fleet_apps{status=\"active\"}"),
            Some(0.0)
        );
    }

    #[test]
    fn passes_and_actions_count() {
        let m = Metrics::new();
        let clone = m.clone();
        m.record_pass(pass::OK, Duration::from_millis(200));
        clone.record_pass(pass::OK, Duration::from_secs(3));
        m.record_pass(pass::ERROR, Duration::from_secs(1));
        m.record_action(action::PROVISION, outcome::OK);
        m.record_action(action::PROVISION, outcome::OK);
        m.record_action(action::DEPROVISION, outcome::FENCED);
        m.record_fly_error("rate_limited");
        let text = m.encode();
        assert_eq!(
            sample(&text, "vyx_fleet_passes_total{outcome=\"ok\"}"),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, "vyx_fleet_passes_total{outcome=\"error\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "vyx_fleet_pass_duration_seconds_count"),
            Some(3.0)
        );
        assert_eq!(
            sample(&text, "vyx_fleet_pass_duration_seconds_bucket{le=\"0.25\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "vyx_fleet_actions_total{action=\"provision\",outcome=\"ok\"}"
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &text,
                "vyx_fleet_actions_total{action=\"deprovision\",outcome=\"fenced\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "vyx_fleet_fly_errors_total{kind=\"rate_limited\"}"),
            Some(1.0)
        );
        let stamp = sample(&text, "vyx_fleet_last_pass_timestamp_seconds").unwrap();
        assert!(stamp > 1.7e9, "{stamp}");
    }

    #[test]
    fn app_counts_reset_missing_statuses() {
        let m = Metrics::new();
        m.set_app_counts(&[("active", 7), ("error", 2)]);
        m.set_app_counts(&[("active", 5), ("weird", 1)]);
        let text = m.encode();
        assert_eq!(
            sample(&text, "vyx_fleet_apps{status=\"active\"}"),
            Some(5.0)
        );
        assert_eq!(sample(&text, "vyx_fleet_apps{status=\"error\"}"), Some(0.0));
        assert_eq!(sample(&text, "vyx_fleet_apps{status=\"other\"}"), Some(1.0));
        m.set_app_counts(&[]);
        let text = m.encode();
        assert_eq!(sample(&text, "vyx_fleet_apps{status=\"other\"}"), Some(0.0));
        assert_eq!(
            sample(&text, "vyx_fleet_apps{status=\"active\"}"),
            Some(0.0)
        );
    }

    #[test]
    fn gauges_set() {
        let m = Metrics::new();
        m.set_leader(true);
        m.set_desired_apps(12);
        m.set_deletions_blocked(40);
        let text = m.encode();
        assert_eq!(sample(&text, "vyx_fleet_is_leader"), Some(1.0));
        assert_eq!(sample(&text, "vyx_fleet_desired_apps"), Some(12.0));
        assert_eq!(sample(&text, "vyx_fleet_deletions_blocked"), Some(40.0));
        m.set_leader(false);
        m.set_deletions_blocked(false);
        let text = m.encode();
        assert_eq!(sample(&text, "vyx_fleet_is_leader"), Some(0.0));
        assert_eq!(sample(&text, "vyx_fleet_deletions_blocked"), Some(0.0));
        m.set_deletions_blocked(true);
        assert_eq!(
            sample(&m.encode(), "vyx_fleet_deletions_blocked"),
            Some(1.0)
        );
    }

    #[test]
    fn rollout_gauges_start_at_zero_and_follow_the_counts() {
        let m = Metrics::new();
        let text = m.encode();
        for state in ROLLOUT_STATES {
            let series = format!("vyx_fleet_rollout_apps{{state=\"{state}\"}}");
            assert_eq!(sample(&text, &series), Some(0.0), "{series}");
        }
        assert_eq!(sample(&text, "vyx_fleet_rollout_halted"), Some(0.0));
        m.set_rollout(&[("moving", 3), ("failed", 1), ("bogus", 9)], true);
        let text = m.encode();
        assert_eq!(
            sample(&text, "vyx_fleet_rollout_apps{state=\"moving\"}"),
            Some(3.0)
        );
        assert_eq!(
            sample(&text, "vyx_fleet_rollout_apps{state=\"failed\"}"),
            Some(1.0)
        );
        assert!(!text.contains("bogus"));
        assert_eq!(sample(&text, "vyx_fleet_rollout_halted"), Some(1.0));
        m.set_rollout(&[], false);
        let text = m.encode();
        assert_eq!(
            sample(&text, "vyx_fleet_rollout_apps{state=\"moving\"}"),
            Some(0.0)
        );
        assert_eq!(sample(&text, "vyx_fleet_rollout_halted"), Some(0.0));
    }
}
