//! The machine the figures come from, and the printed table.

use serde_json::{Value, json};

pub fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown".into());
    let mem_gb = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| (kb / 1024.0 / 1024.0 * 10.0).round() / 10.0);
    let os = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string());
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": model,
        "memory_gb": mem_gb,
        "os": os,
        "postgres": "15 (throwaway cluster, fsync off)",
    })
}

fn f(v: &Value, k: &str) -> String {
    match &v[k] {
        Value::Null => "-".into(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

pub fn table(doc: &Value) -> String {
    let mut s = format!(
        "fleet bench ({} mode, time scale {}, db queries: {})\n",
        f(doc, "mode"),
        f(doc, "scale"),
        doc["db_queries_counted_by"].as_str().unwrap_or("?")
    );
    s += "\nmigration    users   wall_s  bound_s  ratio  fly_calls  calls/app  429s\n";
    for m in doc["migration"].as_array().into_iter().flatten() {
        s += &format!(
            "          {:>7} {:>8} {:>8} {:>6} {:>10} {:>10} {:>5}\n",
            f(m, "users"),
            f(m, "wall_s"),
            f(m, "bound_s"),
            f(m, "ratio"),
            f(m, "fly_calls_total"),
            f(m, "fly_calls_per_app"),
            f(m, "throttled")
        );
    }
    s += "\nsteady (one quiet tick = sweep; req/s over a resync cycle; full = the term's first full pass)\n     apps fly_calls db_queries rows_read  cpu_ms   wall_ms  rss_mb fly_rps health_rps probe_rps | full: calls queries cpu_ms\n";
    for m in doc["steady"].as_array().into_iter().flatten() {
        s += &format!(
            "{:>9} {:>9} {:>10} {:>9} {:>7} {:>9} {:>7} {:>7} {:>10} {:>9} | {:>11} {:>7} {:>6}\n",
            f(m, "apps"),
            f(m, "fly_calls"),
            f(m, "db_queries"),
            f(m, "rows_read"),
            f(m, "cpu_ms"),
            f(m, "wall_ms"),
            f(m, "rss_mb"),
            f(m, "fly_rps"),
            f(m, "health_http_rps"),
            f(m, "probe_http_rps"),
            f(&m["full_pass"], "fly_calls"),
            f(&m["full_pass"], "db_queries"),
            f(&m["full_pass"], "cpu_ms")
        );
    }
    s += "\nreaction (commit -> first Fly call, ms; Fly time = wall x scale, and wall)\n     apps  during     flips  notify p50/p99        notify wall p50/p99  polling p50/p99\n";
    for m in doc["reaction"].as_array().into_iter().flatten() {
        let pair = |x: &Value| {
            if x.is_null() {
                "-".to_string()
            } else {
                format!("{} / {}", f(x, "p50_ms"), f(x, "p99_ms"))
            }
        };
        let n = &m["notify"];
        s += &format!(
            "{:>9}  {:<9} {:>5}  {:<22} {:<20} {}\n",
            f(m, "apps"),
            m["during"].as_str().unwrap_or(""),
            f(m, "flips"),
            pair(n),
            format!("{} / {}", f(n, "p50_ms_real"), f(n, "p99_ms_real")),
            pair(&m["polling"])
        );
    }
    let d = &doc["deprovision"];
    s += &format!(
        "\ndeprovision  users {}  wall_s {}  bound_s {}  ratio {}  429s {}\n",
        f(d, "users"),
        f(d, "wall_s"),
        f(d, "bound_s"),
        f(d, "ratio"),
        f(d, "throttled")
    );
    let r = &doc["rollout"];
    s += &format!(
        "rollout      apps {}  waves {} (bound {})  wall_s {}  bound_s {}  ratio {}  fly_calls {}  429s {}  completed {}\n",
        f(r, "apps"),
        f(r, "waves"),
        f(r, "waves_bound"),
        f(r, "wall_s"),
        f(r, "bound_s"),
        f(r, "ratio"),
        f(r, "fly_calls_total"),
        f(r, "throttled"),
        f(r, "completed")
    );
    s
}
