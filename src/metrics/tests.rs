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

const MODULE_DOC: &str = include_str!("mod.rs");
const README: &str = include_str!("../../README.md");

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
        include_str!("../../deploy/grafana/vyx-fleet-dashboard.json"),
        include_str!("../../deploy/prometheus/vyx-fleet-rules.yml"),
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
