//! The fleet benchmark (`cargo bench --bench fleet`) in `--quick` mode, so it cannot rot: every
//! key of `bench-results.json` is present with sane values. Timings are never asserted.

#[allow(dead_code)]
#[path = "../benches/fleet.rs"]
mod fleet_bench;

use fleet_bench::simproc::Launcher;
use serde_json::Value;

const CHILD_ENV: &str = "VYX_FLEET_BENCH_SIM_CHILD";

/// The simulator's child process when this binary is started by the bench (a no-op otherwise).
#[test]
fn sim_child_entry() {
    if std::env::var_os(CHILD_ENV).is_some() {
        fleet_bench::simproc::child_main();
    }
}

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

fn non_negative(v: &Value, keys: &[&str]) {
    for k in keys {
        assert!(num(v, k) >= 0.0, "{k} negative in {v}");
    }
}

/// `ratio` is bound / wall, the bound being the least time the documented limits allow (the
/// simulator's delays have no jitter): a run faster than its bound means the bound or the
/// measurement is wrong, so the ratio is at most 1 (rounded to three places). A run that did not
/// finish would measure its timeout, not the work: it must have completed.
fn sane_ratio(v: &Value) {
    let r = num(v, "ratio");
    assert!(r > 0.0 && r <= 1.0, "ratio out of (0, 1]: {v}");
    assert_eq!(v["completed"], true, "did not complete: {v}");
}

fn latency(v: &Value) {
    non_negative(v, &["p50_ms", "p99_ms"]);
    assert!(num(v, "p50_ms") <= num(v, "p99_ms"), "{v}");
    assert!(num(v, "samples") > 0.0, "no samples: {v}");
    // Every user the run flipped was served: a percentile over the ones that made it would hide
    // the ones that never did.
    assert_eq!(num(v, "missed"), 0.0, "users never served: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_bench_writes_every_key_with_sane_values() {
    let dir = std::env::temp_dir().join(format!("vyx-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("bench-results.json");
    let args: Vec<String> = ["--quick", "--out", out.to_str().unwrap()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let opts = fleet_bench::Opts::parse(&args).unwrap();
    let launcher = Launcher {
        exe: std::env::current_exe().unwrap(),
        args: [
            "sim_child_entry",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        env: vec![(CHILD_ENV.into(), "1".into())],
    };
    fleet_bench::run(&opts, launcher).await.expect("bench runs");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);

    assert!(doc["machine"].is_object());
    assert!(num(&doc, "scale") > 0.0);

    let migration = doc["migration"].as_array().expect("migration list");
    assert!(!migration.is_empty());
    for m in migration {
        non_negative(m, &["users", "wall_s", "bound_s", "throttled"]);
        sane_ratio(m);
        let calls = m["fly_calls"].as_object().expect("calls by class");
        for class in ["apps.create", "machines.create"] {
            assert!(
                calls[class].as_u64().unwrap_or(0) >= m["users"].as_u64().unwrap(),
                "{m}"
            );
        }
    }

    let steady = doc["steady"].as_array().expect("steady list");
    assert!(!steady.is_empty());
    for s in steady {
        let keys = [
            "apps",
            "fly_calls",
            "fly_rps",
            "db_queries",
            "rows_read",
            "cpu_ms",
        ];
        non_negative(s, &keys);
        non_negative(
            s,
            &[
                "wall_ms",
                "rss_mb",
                "health_http_rps",
                "probe_http_rps",
                "window_s",
            ],
        );
        // A quiet pass reads the changed machines and the database; the resync cycle's window
        // holds the leader's one full list.
        for k in ["fly_calls", "db_queries", "rss_mb", "fly_rps", "window_s"] {
            assert!(num(s, k) > 0.0, "{k} in {s}");
        }
        let pass = s["fly_calls_by_class"].as_object().expect("calls by class");
        assert!(
            pass.contains_key("orgs.machines"),
            "no changed-machine list: {s}"
        );
        assert!(
            !pass.contains_key("apps.list"),
            "a quiet pass listed apps: {s}"
        );
        assert_eq!(num(s, "window_full_lists"), 1.0, "{s}");
        // A converged fleet: the quiet tick is a sweep that finds nobody to queue.
        assert_eq!(s["tick"], "sweep", "{s}");
        assert_eq!(num(s, "work"), 0.0, "seeded fleet not converged: {s}");
        assert_eq!(s["full_pass"]["tick"], "full_pass", "{s}");
        assert_eq!(num(&s["full_pass"], "work"), 0.0, "{s}");
    }

    let reaction = doc["reaction"].as_array().expect("reaction list");
    assert!(reaction.iter().any(|r| r["during"] == "converged"));
    for during in ["migration", "rollout"] {
        assert!(reaction.iter().any(|r| r["during"] == during), "{during}");
    }
    for r in reaction {
        assert!(num(r, "apps") > 0.0);
        latency(&r["notify"]);
        match r["during"].as_str() {
            // Polling-only is measured on converged fleets; a second migration or rollout would
            // double the run.
            Some("migration" | "rollout") => assert!(r["polling"].is_null()),
            _ => latency(&r["polling"]),
        }
    }

    let r = &doc["rollout"];
    non_negative(r, &["apps", "wall_s", "bound_s", "throttled", "waves"]);
    sane_ratio(r);
    assert_eq!(r["completed"], true, "{r}");
    // One canary, then doubling waves: never fewer waves than the wave rule allows.
    assert!(num(r, "waves") >= num(r, "waves_bound"), "{r}");
    let updates = r["fly_calls"]["machines.update"].as_u64().unwrap_or(0);
    assert!(
        updates >= r["apps"].as_u64().unwrap(),
        "every app updated: {r}"
    );

    let d = &doc["deprovision"];
    non_negative(d, &["users", "wall_s", "bound_s"]);
    sane_ratio(d);
    assert!(d["fly_calls"]["apps.delete"].as_u64().unwrap_or(0) >= d["users"].as_u64().unwrap());
}
