//! Garbage in, 4xx out: no input makes the simulator answer 5xx or fall over.

mod sim_support;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};
use sim_support::{Api, ORG, machine_body};

const KEYS: &[&str] = &[
    "config",
    "image",
    "guest",
    "memory_mb",
    "cpus",
    "cpu_kind",
    "region",
    "name",
    "values",
    "type",
    "signal",
    "timeout",
    "current_version",
    "metadata",
    "services",
    "checks",
    "restart",
    "policy",
    "org_slug",
    "app_name",
    "network",
    "skip_launch",
    "min_secrets_version",
    "lease_ttl",
    "idempotency_key",
    "max_retries",
    "env",
    "internal_port",
    "port",
];

fn value(rng: &mut StdRng, depth: u32) -> Value {
    match rng.random_range(0..if depth > 3 { 6 } else { 8 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.random()),
        2 => json!(rng.random_range(-5i64..5000)),
        3 => json!(rng.random::<f64>() * 1e6),
        4 => json!(
            [
                "shared",
                "performance",
                "sin",
                "xyz",
                "always",
                "on-fail",
                "SIGTERM",
                "10s",
                "",
                "v6",
                "vyx-test",
                "personal",
                "a-b"
            ][rng.random_range(0..13)]
        ),
        5 => json!(u64::MAX),
        6 => Value::Array(
            (0..rng.random_range(0..4))
                .map(|_| value(rng, depth + 1))
                .collect(),
        ),
        _ => {
            let mut m = Map::new();
            for _ in 0..rng.random_range(0..6) {
                let k = KEYS[rng.random_range(0..KEYS.len())];
                m.insert(k.to_string(), value(rng, depth + 1));
            }
            Value::Object(m)
        }
    }
}

fn query(rng: &mut StdRng) -> String {
    let parts = [
        "state=started",
        "state=bogus,stopped",
        "limit=0",
        "limit=2",
        "limit=abc",
        "cursor=zz",
        "cursor=c1.ffffffffffffffffff",
        "include_deleted=maybe",
        "summary=true",
        "metadata.a=b",
        "force=true",
        "kill=1",
        "version=X",
        "show_secrets=yes",
        "%zz=%",
        "org_slug=vyx-test",
        "updated_after=yesterday",
        "region=sin",
    ];
    (0..rng.random_range(0..4))
        .map(|_| parts[rng.random_range(0..parts.len())])
        .collect::<Vec<_>>()
        .join("&")
}

#[tokio::test]
async fn random_requests_never_5xx() {
    let api = Api::fast().await;
    api.create_app("vyx-user-fuzz").await;
    let m = api.create_machine("vyx-user-fuzz", machine_body("i")).await;
    let id = m["id"].as_str().expect("id").to_string();
    let routes: Vec<(Method, String)> = vec![
        (Method::POST, "/v1/apps".into()),
        (Method::GET, "/v1/apps".into()),
        (Method::GET, "/v1/apps/vyx-user-fuzz".into()),
        (Method::POST, "/v1/apps/vyx-user-fuzz/machines".into()),
        (Method::GET, "/v1/apps/vyx-user-fuzz/machines".into()),
        (Method::GET, format!("/v1/apps/vyx-user-fuzz/machines/{id}")),
        (
            Method::POST,
            format!("/v1/apps/vyx-user-fuzz/machines/{id}"),
        ),
        (
            Method::POST,
            format!("/v1/apps/vyx-user-fuzz/machines/{id}/stop"),
        ),
        (
            Method::POST,
            format!("/v1/apps/vyx-user-fuzz/machines/{id}/start"),
        ),
        (
            Method::GET,
            format!("/v1/apps/vyx-user-fuzz/machines/{id}/wait?timeout=0"),
        ),
        (Method::POST, "/v1/apps/vyx-user-fuzz/secrets".into()),
        (Method::GET, "/v1/apps/vyx-user-fuzz/secrets".into()),
        (Method::POST, "/v1/apps/vyx-user-fuzz/ip_assignments".into()),
        (Method::GET, format!("/v1/orgs/{ORG}/machines")),
        (Method::PUT, "/v1/apps".into()),
        (Method::GET, "/v1/nothing/here".into()),
    ];
    let mut rng = StdRng::seed_from_u64(1234);
    for i in 0..400 {
        let (method, path) = &routes[rng.random_range(0..routes.len())];
        let q = query(&mut rng);
        let url = if q.is_empty() {
            format!("{}{}", api.base, path)
        } else if path.contains('?') {
            format!("{}{}&{q}", api.base, path)
        } else {
            format!("{}{}?{q}", api.base, path)
        };
        let body: Vec<u8> = if rng.random_bool(0.2) {
            (0..rng.random_range(0..40)).map(|_| rng.random()).collect()
        } else {
            serde_json::to_vec(&value(&mut rng, 0)).expect("ser")
        };
        let r = api
            .http
            .request(method.clone(), &url)
            .bearer_auth("t")
            .body(body.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("#{i} {method} {url}: transport error {e}"));
        let status = r.status();
        let text = r.text().await.expect("body");
        assert!(
            !status.is_server_error(),
            "#{i} {method} {url} {:?} -> {status} {text}",
            String::from_utf8_lossy(&body)
        );
        if status.is_client_error() {
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("#{i} {url}: not JSON: {text}"));
            assert!(v["error"].is_string(), "#{i} {url}: {text}");
        }
    }
    // Still serving.
    assert_eq!(
        api.get("/v1/apps/vyx-user-fuzz").await.status,
        StatusCode::OK
    );
}
