//! The Grafana dashboard and Prometheus rules under `deploy/` name only metrics that `/metrics`
//! serves, with the suffix their type gives them: a renamed metric breaks this test, not an
//! operator's dashboard at 3 a.m.

mod bin_support;
mod console_support;
mod support;

use std::collections::BTreeSet;

use bin_support::{Daemon, secs, wait_until};
use console_support::inert_env;
use support::migrated_db;

/// Every `vyx_fleet_...` name in `text`.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("vyx_fleet_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// The series names a scrape can hold: counters as `_total`, histograms as `_bucket`, `_sum`,
/// `_count`, gauges as they are (from the `# TYPE` lines, so families without a sample yet count).
fn served(scrape: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in scrape.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        match kind {
            "counter" => {
                out.insert(format!("{name}_total"));
            }
            "histogram" => {
                for s in ["_bucket", "_sum", "_count"] {
                    out.insert(format!("{name}{s}"));
                }
            }
            _ => {
                out.insert(name.to_string());
            }
        }
    }
    out
}

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

#[tokio::test]
async fn every_metric_the_dashboard_and_the_rules_name_is_served_by_metrics() {
    let db = migrated_db().await;
    let d = Daemon::spawn(&inert_env(&db.url), "deploy-metrics");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://{}/metrics", d.http_addr);
    let scrape = wait_until("/metrics answers", secs(60), || async {
        match http.get(&url).send().await {
            Ok(r) if r.status().is_success() => r.text().await.map_err(|e| e.to_string()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let served = served(&scrape);
    assert!(served.contains("vyx_fleet_passes_total"), "{served:?}");
    let dashboard = repo_file("deploy/grafana/vyx-fleet-dashboard.json");
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).expect("valid JSON");
    assert!(parsed["panels"].as_array().is_some_and(|p| p.len() >= 8));
    let rules = repo_file("deploy/prometheus/vyx-fleet-rules.yml");
    for (file, text) in [("dashboard", &dashboard), ("rules", &rules)] {
        let named = names_in(text);
        assert!(!named.is_empty(), "{file} names no metric");
        let unknown: Vec<&String> = named.iter().filter(|n| !served.contains(*n)).collect();
        assert!(
            unknown.is_empty(),
            "{file} names metrics /metrics does not serve: {unknown:?}"
        );
    }
}
