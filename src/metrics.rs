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

/// One label's values: a fieldless enum, `ALL` in declaration order and `as_str`, the word exported.
macro_rules! label_values {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $value:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The label value as exported.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $value,)+
                }
            }
        }
    };
}

label_values! {
    /// How a pass or an interval tick ended (`vyx_fleet_passes_total{outcome}`).
    pub enum PassOutcome {
        /// A full pass whose every action finished.
        Ok => "ok",
        /// A full pass in which some actions failed; they retry after their backoff.
        Partial => "partial",
        /// The lease was lost mid-pass; this replica stopped acting.
        Fenced => "fenced",
        /// The database or the Fly observation failed: nothing was acted on.
        Error => "error",
        /// An interval tick that needed no full pass; its users, if any, went to the work queue.
        Sweep => "sweep",
    }
}

label_values! {
    /// An action's kind (`vyx_fleet_actions_total{action}`), one per planned action and rollout
    /// or repair step.
    pub enum ActionKind {
        Converge => "converge",
        RolloutMove => "rollout_move",
        RolloutCheck => "rollout_check",
        RolloutSettle => "rollout_settle",
        RolloutBack => "rollout_back",
        /// The start of a deprovision grace (database only).
        ScheduleDeprovision => "schedule_deprovision",
        CancelDeprovision => "cancel_deprovision",
        Deprovision => "deprovision",
        RepairRestart => "repair_restart",
        RepairReplace => "repair_replace",
        SyncOrphans => "sync_orphans",
        OrphanDelete => "orphan_delete",
    }
}

label_values! {
    /// How an action ended (`vyx_fleet_actions_total{outcome}`).
    pub enum ActionOutcome {
        Ok => "ok",
        /// Failed in a way that will be retried after backoff.
        Retry => "retry",
        /// Lost the lease mid-action; a deposed leader's write was refused.
        Fenced => "fenced",
        /// Planned by a full pass from an older read and dropped under the user's claim: the user's
        /// facts (subscription, override) no longer call for it.
        Stale => "stale",
    }
}

label_values! {
    /// The class of a Fly answer that failed an action (`vyx_fleet_fly_errors_total{kind}`), the
    /// same word the Fly client's error reports as its kind. A write refused because this replica
    /// was deposed is not among them: it counts as a `fenced` action.
    pub enum FlyErrorKind {
        Unauthorized => "unauthorized",
        Forbidden => "forbidden",
        NotFound => "not_found",
        Timeout => "timeout",
        Conflict => "conflict",
        PreconditionFailed => "precondition_failed",
        NameTaken => "name_taken",
        InsufficientCapacity => "insufficient_capacity",
        Invalid => "invalid",
        RateLimited => "rate_limited",
        Server => "server",
        Transport => "transport",
        Decode => "decode",
        BodyTooLarge => "body_too_large",
        Incomplete => "incomplete",
        UnexpectedStatus => "unexpected_status",
        Config => "config",
    }
}

label_values! {
    /// A `user_fly_apps.status` (`vyx_fleet_apps{status}`).
    pub enum AppStatus {
        Provisioning => "provisioning",
        Active => "active",
        Error => "error",
        Deprovisioning => "deprovisioning",
        Deleted => "deleted",
        /// A status the controller does not know (written by something else); exported only once
        /// such a row has been seen.
        Other => "other",
    }
}

label_values! {
    /// An app's state in the current rollout (`vyx_fleet_rollout_apps{state}`).
    pub enum RolloutState {
        Pending => "pending",
        Moving => "moving",
        Soaking => "soaking",
        /// Including apps already on the target when the rollout started.
        Healthy => "healthy",
        Failed => "failed",
        RolledBack => "rolled_back",
    }
}

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
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    /// The value of the sample line starting with `series ` (name plus labels, exactly).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(|v| v.parse().unwrap())
    }

    /// Each labelled series, its label and the values the label's enum holds.
    fn label_sets() -> Vec<(&'static str, &'static str, Vec<&'static str>)> {
        fn words<T: Copy>(all: &[T], as_str: fn(T) -> &'static str) -> Vec<&'static str> {
            all.iter().map(|v| as_str(*v)).collect()
        }
        vec![
            (
                "vyx_fleet_passes_total",
                "outcome",
                words(PassOutcome::ALL, PassOutcome::as_str),
            ),
            (
                "vyx_fleet_actions_total",
                "action",
                words(ActionKind::ALL, ActionKind::as_str),
            ),
            (
                "vyx_fleet_actions_total",
                "outcome",
                words(ActionOutcome::ALL, ActionOutcome::as_str),
            ),
            (
                "vyx_fleet_fly_errors_total",
                "kind",
                words(FlyErrorKind::ALL, FlyErrorKind::as_str),
            ),
            (
                "vyx_fleet_apps",
                "status",
                words(AppStatus::ALL, AppStatus::as_str),
            ),
            (
                "vyx_fleet_rollout_apps",
                "state",
                words(RolloutState::ALL, RolloutState::as_str),
            ),
        ]
    }

    /// The words in backquotes in the labels column of `series`'s row of the metrics table in
    /// `doc`; names with anything but lowercase letters and `_` are prose, not labels.
    fn documented(doc: &str, series: &str) -> BTreeSet<String> {
        let cell = format!("| `{series}` |");
        let row = doc
            .lines()
            .find(|l| l.contains(&cell))
            .unwrap_or_else(|| panic!("no row for {series}"));
        let labels = row.split('|').skip(3).collect::<Vec<_>>().join("|");
        labels
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
            .map(str::to_string)
            .collect()
    }

    const MODULE_DOC: &str = include_str!("metrics.rs");
    const README: &str = include_str!("../README.md");

    #[test]
    fn every_label_value_is_distinct_within_its_label() {
        for (series, label, values) in label_sets() {
            let distinct: BTreeSet<_> = values.iter().collect();
            assert_eq!(
                distinct.len(),
                values.len(),
                "{series}{{{label}}}: {values:?}"
            );
        }
    }

    #[test]
    fn the_docs_list_exactly_the_label_values_the_enums_hold() {
        let mut expected: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        for (series, label, values) in label_sets() {
            let e = expected.entry(series).or_default();
            e.insert(label.to_string());
            e.extend(values.iter().map(|v| v.to_string()));
        }
        for (doc, name) in [(MODULE_DOC, "src/metrics.rs"), (README, "README.md")] {
            for (series, words) in &expected {
                assert_eq!(&documented(doc, series), words, "{name}, {series}");
            }
        }
    }

    #[test]
    fn a_scrape_holds_only_documented_label_values() {
        let m = Metrics::new();
        for &o in PassOutcome::ALL {
            m.record_pass(o, Duration::from_millis(1));
        }
        for &a in ActionKind::ALL {
            for &o in ActionOutcome::ALL {
                m.record_action(a, o);
            }
        }
        for &k in FlyErrorKind::ALL {
            m.record_fly_error(k);
        }
        let statuses: Vec<_> = AppStatus::ALL.iter().map(|s| (*s, 1)).collect();
        m.set_app_counts(&statuses);
        let states: Vec<_> = RolloutState::ALL.iter().map(|s| (*s, 1)).collect();
        m.set_rollout(&states, false);
        let text = m.encode();
        let mut seen = 0;
        for line in text.lines().filter(|l| l.starts_with("vyx_fleet_")) {
            let Some((series, rest)) = line.split_once('{') else {
                continue;
            };
            let (labels, _) = rest.split_once('}').unwrap();
            for pair in labels.split(',') {
                let (label, value) = pair.split_once('=').unwrap();
                let value = value.trim_matches('"');
                if label == "le" || series == "vyx_fleet_build_info" {
                    continue;
                }
                for (doc, name) in [(MODULE_DOC, "src/metrics.rs"), (README, "README.md")] {
                    assert!(
                        documented(doc, series).contains(value),
                        "{name} does not document {series}{{{label}=\"{value}\"}}"
                    );
                }
                seen += 1;
            }
        }
        assert!(
            seen > ActionKind::ALL.len() * ActionOutcome::ALL.len(),
            "{text}"
        );
    }

    /// The `label op "value"` matchers after each `vyx_fleet_...{` in `text` (JSON quotes
    /// unescaped), each regex alternative apart: `(series, label, value)`.
    fn matchers(text: &str) -> Vec<(String, String, String)> {
        let text = text.replace("\\\"", "\"");
        let mut out = Vec::new();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("vyx_fleet_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let series = &tail[..end];
            rest = &tail[end..];
            let Some(body) = rest.strip_prefix('{') else {
                continue;
            };
            let close = body.find('}').unwrap();
            for m in body[..close].split(',') {
                let op = m.find(['=', '!']).unwrap();
                let label = m[..op].trim();
                let value = m[op..]
                    .trim_start_matches(['=', '!', '~'])
                    .trim()
                    .trim_matches('"');
                for alt in value.split('|') {
                    out.push((series.to_string(), label.to_string(), alt.to_string()));
                }
            }
            rest = &body[close..];
        }
        out
    }

    #[test]
    fn the_dashboard_and_the_rules_match_only_values_a_label_holds() {
        let sets = label_sets();
        let mut checked = 0;
        for file in [
            include_str!("../deploy/grafana/vyx-fleet-dashboard.json"),
            include_str!("../deploy/prometheus/vyx-fleet-rules.yml"),
        ] {
            for (series, label, value) in matchers(file) {
                let values = sets
                    .iter()
                    .find(|(s, l, _)| *s == series && *l == label)
                    .map(|(_, _, v)| v)
                    .unwrap_or_else(|| panic!("{series} has no label {label}"));
                assert!(
                    values.contains(&value.as_str()),
                    "{series}{{{label}=\"{value}\"}}"
                );
                checked += 1;
            }
        }
        assert!(checked >= 5, "the matchers were not found");
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
        m.record_pass(PassOutcome::Ok, Duration::from_millis(200));
        clone.record_pass(PassOutcome::Ok, Duration::from_secs(3));
        m.record_pass(PassOutcome::Error, Duration::from_secs(1));
        m.record_action(ActionKind::Converge, ActionOutcome::Ok);
        m.record_action(ActionKind::Converge, ActionOutcome::Ok);
        m.record_action(ActionKind::Deprovision, ActionOutcome::Fenced);
        m.record_fly_error(FlyErrorKind::RateLimited);
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
                "vyx_fleet_actions_total{action=\"converge\",outcome=\"ok\"}"
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
        m.set_app_counts(&[(AppStatus::Active, 7), (AppStatus::Error, 2)]);
        let text = m.encode();
        assert!(!text.contains("status=\"other\""), "{text}");
        m.set_app_counts(&[(AppStatus::Active, 5), (AppStatus::Other, 1)]);
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
        for state in RolloutState::ALL {
            let series = format!("vyx_fleet_rollout_apps{{state=\"{}\"}}", state.as_str());
            assert_eq!(sample(&text, &series), Some(0.0), "{series}");
        }
        assert_eq!(sample(&text, "vyx_fleet_rollout_halted"), Some(0.0));
        m.set_rollout(
            &[
                (RolloutState::Moving, 2),
                (RolloutState::Failed, 1),
                (RolloutState::Moving, 1),
            ],
            true,
        );
        let text = m.encode();
        assert_eq!(
            sample(&text, "vyx_fleet_rollout_apps{state=\"moving\"}"),
            Some(3.0)
        );
        assert_eq!(
            sample(&text, "vyx_fleet_rollout_apps{state=\"failed\"}"),
            Some(1.0)
        );
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
