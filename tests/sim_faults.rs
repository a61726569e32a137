//! Fault injection, rate limits, the call log.

mod sim_support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;
use sim_support::{Api, ORG, machine_body, poll_until};
use vyx_fleet::sim::{FaultKind, FaultRule, Faults, RateLimitConfig, SimConfig, Timings};

fn only(class: &str, kind: FaultKind) -> Faults {
    Faults {
        rules: vec![FaultRule::new(class, 1.0, kind)],
        ..Faults::default()
    }
}

#[tokio::test]
async fn server_error_and_timeout_apply_nothing() {
    let api = Api::fast().await;
    api.create_app("vyx-user-f").await;
    api.sim.set_faults(only(
        "machines.create",
        FaultKind::ServerError { status: 503 },
    ));
    let r = api
        .post("/v1/apps/vyx-user-f/machines", machine_body("i"))
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.body["error"].is_string());
    api.sim.set_faults(only("*", FaultKind::Timeout));
    let r = api
        .post("/v1/apps/vyx-user-f/machines", machine_body("i"))
        .await;
    assert_eq!(r.status, StatusCode::REQUEST_TIMEOUT);
    assert!(r.body["error"].is_string());
    assert!(
        api.sim
            .snapshot()
            .app("vyx-user-f")
            .expect("app")
            .machines
            .is_empty()
    );
    // Other classes are untouched by a class-specific rule.
    api.sim.set_faults(only(
        "machines.create",
        FaultKind::ServerError { status: 500 },
    ));
    assert_eq!(api.get("/v1/apps/vyx-user-f").await.status, StatusCode::OK);
    let calls = api.sim.calls();
    let faulted: Vec<_> = calls
        .iter()
        .filter(|c| c.class == "machines.create")
        .collect();
    assert_eq!(faulted.len(), 2);
    assert!(faulted.iter().all(|c| !c.write_applied));
    assert_eq!(faulted[0].fault.as_deref(), Some("server_error 503"));
    assert_eq!(faulted[1].fault.as_deref(), Some("timeout"));
}

#[tokio::test]
async fn dropped_connection_is_a_transport_error() {
    let api = Api::fast().await;
    api.sim.set_faults(only("apps.list", FaultKind::Drop));
    let err = api
        .try_send(Method::GET, &format!("/v1/apps?org_slug={ORG}"), None)
        .await
        .err()
        .expect("no HTTP answer");
    assert!(!err.is_status(), "{err}");
    let last = api.sim.calls().pop().expect("logged");
    assert_eq!(last.status, None);
    assert_eq!(last.fault.as_deref(), Some("drop"));
    // Also for a write with a body: no answer, nothing applied.
    api.sim.set_faults(only("apps.create", FaultKind::Drop));
    let r = api
        .try_send(
            Method::POST,
            "/v1/apps",
            Some(json!({"name": "vyx-user-drop", "org_slug": ORG})),
        )
        .await;
    assert!(r.is_err());
    assert!(api.sim.snapshot().app("vyx-user-drop").is_none());
    api.sim.set_faults(Faults::default());
    assert_eq!(
        api.get(&format!("/v1/apps?org_slug={ORG}")).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn spurious_not_found_for_a_live_app() {
    let api = Api::fast().await;
    api.create_app("vyx-user-nf").await;
    api.sim
        .set_faults(only("machines.list", FaultKind::NotFound));
    let r = api.get("/v1/apps/vyx-user-nf/machines").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.body["error"].is_string());
    assert_eq!(
        api.sim.calls().pop().and_then(|c| c.fault),
        Some("not_found".into())
    );
    assert_eq!(api.get("/v1/apps/vyx-user-nf").await.status, StatusCode::OK);
}

#[tokio::test]
async fn lost_answer_create_really_creates() {
    let api = Api::fast().await;
    api.sim.set_faults(only(
        "apps.create",
        FaultKind::LostAnswer { status: Some(502) },
    ));
    let r = api
        .post(
            "/v1/apps",
            json!({"name": "vyx-user-lost", "org_slug": ORG}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(r.body["error"].is_string());
    assert!(
        api.sim.snapshot().app("vyx-user-lost").is_some(),
        "the write landed"
    );
    let last = api.sim.calls().pop().expect("logged");
    assert!(last.write_applied);
    assert_eq!(last.fault.as_deref(), Some("lost_answer 502"));
    api.sim.set_faults(Faults::default());
    // The naive retry now meets its own app.
    let r = api
        .post(
            "/v1/apps",
            json!({"name": "vyx-user-lost", "org_slug": ORG}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.body["status"], "name_taken");
    assert_eq!(
        api.get("/v1/apps/vyx-user-lost").await.status,
        StatusCode::OK
    );

    // Lost answer as a dropped connection: transport error, machine exists anyway.
    api.sim.set_faults(only(
        "machines.create",
        FaultKind::LostAnswer { status: None },
    ));
    let err = api
        .try_send(
            Method::POST,
            "/v1/apps/vyx-user-lost/machines",
            Some(machine_body("i")),
        )
        .await;
    assert!(err.is_err(), "answer was dropped");
    api.sim.set_faults(Faults::default());
    let snap = api.sim.snapshot();
    assert_eq!(snap.app("vyx-user-lost").expect("app").machines.len(), 1);
    let last = api.sim.calls().pop().expect("logged");
    assert_eq!(last.status, None);
    assert!(last.write_applied);
}

#[tokio::test]
async fn latency_and_429_bursts() {
    let api = Api::fast().await;
    api.sim
        .set_faults(only("apps.list", FaultKind::Latency { ms: 400 }));
    let t = Instant::now();
    assert_eq!(
        api.get(&format!("/v1/apps?org_slug={ORG}")).await.status,
        StatusCode::OK
    );
    assert!(t.elapsed() >= Duration::from_millis(400));

    // Inside a burst every call is a 429 (a burst long enough that no scheduling delay ends it).
    api.sim.set_faults(Faults {
        burst_429_ms: Some(60_000),
        ..Faults::default()
    });
    let r = api.get(&format!("/v1/apps?org_slug={ORG}")).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.body["error"].is_string());
    // A short burst ends by itself.
    let t = Instant::now();
    api.sim.set_faults(Faults {
        burst_429_ms: Some(600),
        ..Faults::default()
    });
    poll_until(Duration::from_secs(30), || async {
        api.get(&format!("/v1/apps?org_slug={ORG}")).await.status == StatusCode::OK
    })
    .await;
    eprintln!(
        "measured: a 600 ms burst answered 429 for {:?}",
        t.elapsed()
    );

    // A probabilistic rule can start a burst that then hits every class.
    api.sim
        .set_faults(only("apps.get", FaultKind::Burst429 { ms: 60_000 }));
    assert_eq!(
        api.get("/v1/apps/x").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        api.get(&format!("/v1/apps?org_slug={ORG}")).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    api.sim.set_faults(Faults::default());
    assert_eq!(
        api.get(&format!("/v1/apps?org_slug={ORG}")).await.status,
        StatusCode::OK
    );
}

async fn statuses(seed: u64) -> Vec<u16> {
    let api = Api::start(SimConfig {
        seed,
        faults: Faults {
            rules: vec![FaultRule::new(
                "*",
                0.5,
                FaultKind::ServerError { status: 500 },
            )],
            ..Faults::default()
        },
        ..SimConfig::fast()
    })
    .await;
    let mut out = Vec::new();
    for _ in 0..40 {
        out.push(
            api.get(&format!("/v1/apps?org_slug={ORG}"))
                .await
                .status
                .as_u16(),
        );
    }
    out
}

#[tokio::test]
async fn seeded_faults_are_reproducible() {
    let a = statuses(7).await;
    assert_eq!(a, statuses(7).await);
    assert!(a.contains(&500) && a.contains(&200), "{a:?}");
    assert_ne!(a, statuses(8).await);
}

#[tokio::test]
async fn faults_over_http() {
    let api = Api::fast().await;
    let url = format!("{}/_sim/faults", api.base);
    let body = json!({"rules": [{"class": "apps.get", "probability": 1.0, "kind": "server_error", "status": 502}]});
    let r = api.http.put(&url).json(&body).send().await.expect("put");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let got: serde_json::Value = api
        .http
        .get(&url)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(got["rules"][0]["status"], 502);
    assert_eq!(api.get("/v1/apps/x").await.status, StatusCode::BAD_GATEWAY);
    let r = api.http.put(&url).body("{bad").send().await.expect("put");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn documented_rate_limits_answer_429() {
    let api = Api::start(SimConfig {
        timings: Timings::instant(),
        ..SimConfig::default()
    })
    .await;
    // Apps: 1 req/s, burst 3, per app.
    let got: Vec<u16> = futures_statuses(&api, "/v1/apps/vyx-user-rl", 4).await;
    assert_eq!(got[..3], [404, 404, 404]);
    assert_eq!(got[3], 429);
    // Another identifier has its own bucket.
    assert_eq!(
        api.get("/v1/apps/vyx-user-rl2").await.status,
        StatusCode::NOT_FOUND
    );

    // Get-machine: burst 10.
    api.sim.set_rate_limits(RateLimitConfig::default());
    let path = "/v1/apps/vyx-user-rl/machines/abc";
    let got = futures_statuses(&api, path, 11).await;
    assert!(got[..10].iter().all(|s| *s == 404), "{got:?}");
    assert_eq!(got[10], 429);

    // Retry-After when asked for; a 429 carries an error body.
    api.sim.set_rate_limits(RateLimitConfig {
        retry_after: true,
        ..RateLimitConfig::default()
    });
    let mut last = None;
    for _ in 0..4 {
        last = Some(api.get("/v1/apps/vyx-user-rl3").await);
    }
    let last = last.expect("sent");
    assert_eq!(last.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(last.body["error"].is_string());
    assert_eq!(
        last.headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );

    api.sim.set_rate_limits(RateLimitConfig::disabled());
    let got = futures_statuses(&api, "/v1/apps/vyx-user-rl3", 10).await;
    assert!(got.iter().all(|s| *s == 404));
}

async fn futures_statuses(api: &Api, path: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(api.get(path).await.status.as_u16());
    }
    out
}

#[tokio::test]
async fn call_log_and_request_ids() {
    let api = Api::fast().await;
    api.create_app("vyx-user-log").await;
    let mut ids = HashSet::new();
    for _ in 0..5 {
        let r = api.get("/v1/apps/vyx-user-log?x=1").await;
        let id = r
            .headers
            .get("fly-request-id")
            .expect("request id")
            .to_str()
            .expect("ascii")
            .to_string();
        assert!(ids.insert(id), "request ids are unique");
    }
    let calls = api.sim.calls();
    let last = calls.last().expect("calls");
    assert_eq!(last.method, "GET");
    assert_eq!(last.path, "/v1/apps/vyx-user-log?x=1");
    assert_eq!(last.class, "apps.get");
    assert_eq!(last.status, Some(200));
    assert!(!last.write_applied);
    let create = calls
        .iter()
        .find(|c| c.class == "apps.create")
        .expect("create logged");
    assert!(create.write_applied);
    assert_eq!(create.status, Some(201));
    let text = serde_json::to_string(&calls).expect("ser");
    assert!(
        !text.contains(sim_support::TOKEN),
        "no Authorization in the log"
    );

    let over_http: Vec<serde_json::Value> = api
        .http
        .get(format!("{}/_sim/calls", api.base))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(over_http.len(), calls.len());
    let r = api
        .http
        .delete(format!("{}/_sim/calls", api.base))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(api.sim.calls().is_empty());
    let snap: serde_json::Value = api
        .http
        .get(format!("{}/_sim/snapshot", api.base))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(snap["apps"][0]["name"], "vyx-user-log");
    assert_eq!(snap["apps"][0]["org"], ORG);
    api.sim.shutdown().await;
}

#[tokio::test]
async fn app_deletions_share_one_org_budget() {
    let mut rl = RateLimitConfig::disabled();
    rl.enabled = true;
    rl.default = None;
    rl.classes.clear();
    rl.classes.insert(
        "apps.delete".into(),
        vyx_fleet::sim::BucketConfig {
            per_second: 0.0,
            burst: 2,
        },
    );
    let api = Api::start(SimConfig {
        rate_limits: rl,
        ..SimConfig::fast()
    })
    .await;
    for i in 0..3 {
        api.create_app(&format!("vyx-user-d{i}")).await;
    }
    assert_eq!(
        api.delete("/v1/apps/vyx-user-d0").await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        api.delete("/v1/apps/vyx-user-d1").await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        api.delete("/v1/apps/vyx-user-d2").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Unlimited classes stay unlimited.
    for _ in 0..10 {
        assert_eq!(api.get("/v1/apps/vyx-user-d2").await.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn no_capacity_regions_fail_machine_create() {
    let api = Api::fast().await;
    api.create_app("vyx-user-cap").await;
    api.sim.set_faults(Faults {
        no_capacity_regions: vec!["sin".into()],
        ..Faults::default()
    });
    let r = api
        .post("/v1/apps/vyx-user-cap/machines", machine_body("i"))
        .await;
    assert_eq!(r.body["status"], "insufficient_capacity");
    assert!(r.status.is_client_error());
    let mut other = machine_body("i");
    other["region"] = json!("ams");
    assert_eq!(
        api.post("/v1/apps/vyx-user-cap/machines", other)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn capacity_errors_carry_the_insufficient_capacity_status_in_the_regions_set_at_run_time() {
    let api = Api::fast().await;
    api.create_app("vyx-user-cap2").await;
    let path = "/v1/apps/vyx-user-cap2/machines";
    assert_eq!(
        api.post(path, machine_body("i")).await.status,
        StatusCode::OK
    );
    // Set over HTTP, as a black-box test would.
    let r = api
        .http
        .put(format!("{}/_sim/faults", api.base))
        .json(&json!({"no_capacity_regions": ["sin", "syd"]}))
        .send()
        .await
        .expect("put faults");
    assert!(r.status().is_success());
    let before = api
        .sim
        .snapshot()
        .app("vyx-user-cap2")
        .expect("app")
        .machines
        .len();
    for region in ["sin", "syd"] {
        let mut body = machine_body("i");
        body["region"] = json!(region);
        let r = api.post(path, body).await;
        assert!(r.status.is_client_error(), "{region}: {}", r.status);
        assert_eq!(r.body["status"], "insufficient_capacity", "{region}");
        assert!(r.body["error"].is_string());
    }
    let after = api
        .sim
        .snapshot()
        .app("vyx-user-cap2")
        .expect("app")
        .machines
        .len();
    assert_eq!(before, after, "nothing created");
}

#[tokio::test]
async fn the_peak_of_concurrent_writes_and_each_callers_user_agent_are_recorded() {
    let api = Api::fast().await;
    api.create_app("vyx-user-peak").await;
    api.sim
        .set_faults(only("secrets.set", FaultKind::Latency { ms: 300 }));
    api.sim.reset_peak_in_flight_writes();
    assert_eq!(api.sim.peak_in_flight_writes(), 0);
    let path = "/v1/apps/vyx-user-peak/secrets";
    let write = || async {
        api.http
            .post(format!("{}{path}", api.base))
            .header("authorization", "Bearer t")
            .header("user-agent", "replica-a")
            .json(&json!({"values": {"K": "v"}}))
            .send()
            .await
            .expect("post")
            .status()
    };
    // Three writes at once, plus reads that must not count.
    let (a, b, c, _, _) = tokio::join!(write(), write(), write(), api.get(path), api.get(path));
    assert!(a.is_success() && b.is_success() && c.is_success());
    assert_eq!(api.sim.peak_in_flight_writes(), 3);
    api.sim.reset_peak_in_flight_writes();
    write().await;
    assert_eq!(api.sim.peak_in_flight_writes(), 1);
    let agents: HashSet<Option<String>> = api
        .sim
        .calls()
        .iter()
        .filter(|c| c.class == "secrets.set")
        .map(|c| c.user_agent.clone())
        .collect();
    assert_eq!(
        agents,
        [Some("replica-a".to_string())].into_iter().collect()
    );
}
