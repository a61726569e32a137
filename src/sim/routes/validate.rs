//! Machine config validation (§3.2/§3.3) and small parsers shared by machine routes.

use std::time::Duration;

use serde_json::{Value, json};

use super::ApiError;

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg)
}

/// Allowed `cpus` per `cpu_kind` (the shared-cpu-Nx / performance-Nx presets).
fn allowed_cpus(kind: &str) -> &'static [u64] {
    match kind {
        "performance" => &[1, 2, 4, 8, 16],
        _ => &[1, 2, 4, 6, 8],
    }
}

/// Validates a `MachineConfig` in place. Unknown fields are kept untouched (round-trip); only
/// `guest` is filled in when absent, since the platform always reports one.
pub(crate) fn validate_config(cfg: &mut Value) -> Result<(), ApiError> {
    let obj = cfg
        .as_object_mut()
        .ok_or_else(|| bad("config must be an object"))?;
    // Only `config.image` is mandatory [S1][S4].
    match obj.get("image") {
        Some(Value::String(s)) if !s.trim().is_empty() => {}
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err(bad("config.image is required"));
        }
        Some(_) => return Err(bad("config.image must be a string")),
    }
    match obj.get_mut("guest") {
        None | Some(Value::Null) => {
            obj.insert(
                "guest".into(),
                json!({"cpu_kind": "shared", "cpus": 1, "memory_mb": 256}),
            );
        }
        Some(g) => validate_guest(g)?,
    }
    if let Some(r) = obj.get("restart").filter(|r| !r.is_null()) {
        let r = r
            .as_object()
            .ok_or_else(|| bad("config.restart must be an object"))?;
        // API spelling is `on-failure`; the CLI's `on-fail` is not accepted here [S1][S19].
        match r.get("policy") {
            None | Some(Value::Null) => {}
            Some(Value::String(p)) if ["no", "always", "on-failure"].contains(&p.as_str()) => {}
            Some(p) => {
                return Err(bad(format!(
                    "invalid restart policy {p}: expected no, always or on-failure"
                )));
            }
        }
        if let Some(m) = r.get("max_retries").filter(|m| !m.is_null())
            && m.as_u64().is_none()
        {
            return Err(bad(
                "config.restart.max_retries must be a non-negative integer",
            ));
        }
    }
    for key in ["metadata", "env"] {
        if let Some(m) = obj.get(key).filter(|m| !m.is_null()) {
            let m = m
                .as_object()
                .ok_or_else(|| bad(format!("config.{key} must be an object")))?;
            if let Some((k, _)) = m.iter().find(|(_, v)| !v.is_string()) {
                return Err(bad(format!("config.{key}.{k} must be a string")));
            }
        }
    }
    if let Some(s) = obj.get("services").filter(|s| !s.is_null()) {
        let services = s
            .as_array()
            .ok_or_else(|| bad("config.services must be an array"))?;
        for svc in services {
            if let Some(c) = svc.get("checks").filter(|c| !c.is_null())
                && !c.as_array().is_some_and(|a| a.iter().all(Value::is_object))
            {
                return Err(bad("config.services[].checks must be an array of objects"));
            }
        }
    }
    if let Some(c) = obj.get("checks").filter(|c| !c.is_null())
        && !c
            .as_object()
            .is_some_and(|m| m.values().all(Value::is_object))
    {
        return Err(bad("config.checks must be an object of named checks"));
    }
    Ok(())
}

/// `guest`: `cpu_kind` shared|performance, `memory_mb` in 256 MB steps within the per-CPU range
/// (shared 256 MB–2 GB, performance 2–8 GB per CPU) [S18].
fn validate_guest(g: &mut Value) -> Result<(), ApiError> {
    let g = g
        .as_object_mut()
        .ok_or_else(|| bad("config.guest must be an object"))?;
    let kind = match g.get("cpu_kind") {
        None | Some(Value::Null) => "shared".to_string(),
        Some(Value::String(k)) if k == "shared" || k == "performance" => k.clone(),
        Some(k) => {
            return Err(bad(format!(
                "invalid cpu_kind {k}: expected shared or performance"
            )));
        }
    };
    let cpus = match g.get("cpus") {
        None | Some(Value::Null) => 1,
        Some(c) => c
            .as_u64()
            .ok_or_else(|| bad("config.guest.cpus must be a positive integer"))?,
    };
    if !allowed_cpus(&kind).contains(&cpus) {
        return Err(bad(format!(
            "invalid number of CPUs {cpus} for {kind} cpu_kind"
        )));
    }
    let (lo, hi) = if kind == "performance" {
        (2048 * cpus, 8192 * cpus)
    } else {
        (256 * cpus, 2048 * cpus)
    };
    let mem = match g.get("memory_mb") {
        None | Some(Value::Null) => lo,
        Some(m) => m
            .as_u64()
            .ok_or_else(|| bad("config.guest.memory_mb must be a positive integer"))?,
    };
    if mem % 256 != 0 {
        return Err(bad(format!("memory_mb {mem} must be a multiple of 256")));
    }
    if mem < lo || mem > hi {
        return Err(bad(format!(
            "invalid memory size {mem}MB for {cpus} {kind} CPU(s): must be between {lo} and {hi}"
        )));
    }
    g.insert("cpu_kind".into(), Value::from(kind));
    g.insert("cpus".into(), Value::from(cpus));
    g.insert("memory_mb".into(), Value::from(mem));
    Ok(())
}

/// Names of the checks a config defines: service checks get flyd's `servicecheck-NN-<type>-<port>`
/// names, top-level checks keep their map key [S1].
pub(crate) fn check_names(cfg: &Value) -> Vec<String> {
    let mut names = Vec::new();
    let mut n = 0;
    for svc in cfg
        .get("services")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for c in svc
            .get("checks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let kind = c.get("type").and_then(Value::as_str).unwrap_or("tcp");
            let port = c
                .get("port")
                .or_else(|| svc.get("internal_port"))
                .and_then(Value::as_u64)
                .unwrap_or(0);
            names.push(format!("servicecheck-{n:02}-{kind}-{port}"));
            n += 1;
        }
    }
    if let Some(m) = cfg.get("checks").and_then(Value::as_object) {
        names.extend(m.keys().cloned());
    }
    names
}

/// A Go duration string (`"10s"`, `"1m30s"`, `"500ms"`), or an integer: durations are strings in
/// the spec but nanoseconds in an older docs page [S1][S4][S9].
pub(crate) fn parse_duration(v: &Value) -> Option<Duration> {
    if let Some(n) = v.as_u64() {
        return Some(Duration::from_nanos(n));
    }
    let s = v.as_str()?.trim();
    if s.is_empty() {
        return None;
    }
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += num * mult;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).ok()
}

/// Signals a stop may carry [S1][S4].
pub(crate) const SIGNALS: &[&str] = &[
    "SIGHUP", "SIGINT", "SIGQUIT", "SIGKILL", "SIGUSR1", "SIGUSR2", "SIGTERM",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_rules() {
        let ok = |g: Value| validate_config(&mut json!({"image": "x", "guest": g})).is_ok();
        assert!(ok(
            json!({"cpu_kind": "shared", "cpus": 2, "memory_mb": 512})
        ));
        assert!(ok(
            json!({"cpu_kind": "shared", "cpus": 1, "memory_mb": 2048})
        ));
        assert!(!ok(
            json!({"cpu_kind": "shared", "cpus": 1, "memory_mb": 4096})
        ));
        assert!(!ok(
            json!({"cpu_kind": "shared", "cpus": 2, "memory_mb": 256})
        ));
        assert!(!ok(
            json!({"cpu_kind": "shared", "cpus": 1, "memory_mb": 300})
        ));
        assert!(ok(
            json!({"cpu_kind": "performance", "cpus": 1, "memory_mb": 2048})
        ));
        assert!(!ok(
            json!({"cpu_kind": "performance", "cpus": 1, "memory_mb": 1024})
        ));
        assert!(!ok(
            json!({"cpu_kind": "gpu", "cpus": 1, "memory_mb": 1024})
        ));
        assert!(!ok(json!({"cpus": "two"})));
    }

    #[test]
    fn image_restart_and_round_trip() {
        assert!(validate_config(&mut json!({"env": {}})).is_err());
        assert!(validate_config(&mut json!({"image": ""})).is_err());
        let bad_policy = json!({"image": "x", "restart": {"policy": "on-fail"}});
        assert!(validate_config(&mut bad_policy.clone()).is_err());
        let mut cfg = json!({"image": "x", "restart": {"policy": "always"}, "zzz": [1, {"a": 2}]});
        validate_config(&mut cfg).expect("valid");
        assert_eq!(cfg["zzz"], json!([1, {"a": 2}]));
        assert_eq!(cfg["guest"]["memory_mb"], json!(256));
    }

    #[test]
    fn names_of_checks() {
        let cfg = json!({"services": [{"internal_port": 8080, "checks": [{"type": "http", "port": 8080}]}],
                         "checks": {"alive": {"type": "tcp"}}});
        assert_eq!(
            check_names(&cfg),
            vec!["servicecheck-00-http-8080", "alive"]
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration(&json!("10s")), Some(Duration::from_secs(10)));
        assert_eq!(
            parse_duration(&json!("1m30s")),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_duration(&json!("500ms")),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            parse_duration(&json!(1_000_000_000u64)),
            Some(Duration::from_secs(1))
        );
        assert_eq!(parse_duration(&json!("ten")), None);
        assert_eq!(parse_duration(&json!("10")), None);
        assert_eq!(parse_duration(&json!("99999999999999999999999999h")), None);
        assert_eq!(parse_duration(&json!("1..5s")), None);
    }

    use proptest::prelude::*;

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| json!(f)),
            "[a-z0-9 -]{0,8}".prop_map(Value::from),
            Just(json!("shared")),
            Just(json!("performance")),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            let keys = prop_oneof![
                Just("image".to_string()),
                Just("guest".to_string()),
                Just("cpu_kind".to_string()),
                Just("cpus".to_string()),
                Just("memory_mb".to_string()),
                Just("restart".to_string()),
                Just("policy".to_string()),
                Just("metadata".to_string()),
                Just("services".to_string()),
                Just("checks".to_string()),
                "[a-z]{1,4}",
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(keys, inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn validate_never_panics_and_keeps_what_it_accepts(v in arb_json()) {
            let mut cfg = v.clone();
            if validate_config(&mut cfg).is_ok() {
                // Accepted configs keep every field they came with.
                if let (Some(before), Some(after)) = (v.as_object(), cfg.as_object()) {
                    for (k, val) in before {
                        if k != "guest" {
                            prop_assert_eq!(after.get(k), Some(val));
                        }
                    }
                }
                prop_assert!(cfg["guest"]["memory_mb"].as_u64().is_some_and(|m| m % 256 == 0));
            }
        }

        #[test]
        fn durations_never_panic(s in "\\PC{0,12}") {
            let _ = parse_duration(&Value::from(s));
        }

        #[test]
        fn queries_never_panic(s in "\\PC{0,40}") {
            let _ = crate::sim::routes::parse_query(Some(&s));
        }
    }
}
