//! HTTP-level tests against a tiny axum stub on 127.0.0.1:0 (canned answers, recorded requests).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::*;
use crate::retry::RetryPolicy;
use crate::secret::Secret;

const TOKEN: &str = "fm2_TOPSECRETTOKEN";

/// One canned answer.
#[derive(Clone)]
struct Canned {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

fn ok(body: &str) -> Canned {
    answer(200, body)
}

fn answer(status: u16, body: &str) -> Canned {
    Canned {
        status,
        headers: vec![("fly-request-id", format!("req-{status}"))],
        body: body.to_owned(),
    }
}

impl Canned {
    fn header(mut self, k: &'static str, v: &str) -> Self {
        self.headers.push((k, v.to_owned()));
        self
    }
}

/// A request as the stub saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path_and_query: String,
    auth: Option<String>,
    content_type: Option<String>,
    cookie: Option<String>,
    body: String,
}

#[derive(Clone, Default)]
struct Stub {
    answers: Arc<Mutex<VecDeque<Canned>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Stub {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn handle(
    State(stub): State<Stub>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let h = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    stub.seen.lock().unwrap().push(Seen {
        method,
        path_and_query: uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        auth: h("authorization"),
        content_type: h("content-type"),
        cookie: h("cookie"),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let next = stub.answers.lock().unwrap().pop_front();
    let c = next.unwrap_or_else(|| answer(599, r#"{"error":"stub has no more answers"}"#));
    let mut resp = (StatusCode::from_u16(c.status).unwrap(), c.body).into_response();
    for (k, v) in c.headers {
        resp.headers_mut().insert(k, v.parse().unwrap());
    }
    resp
}

/// Start a stub serving `answers` in order; returns it and a client pointed at it.
async fn stub(answers: Vec<Canned>) -> (Stub, FlyClient) {
    stub_with(answers, RateLimits::disabled(), 3).await
}

async fn stub_with(
    answers: Vec<Canned>,
    limits: RateLimits,
    max_retries: u32,
) -> (Stub, FlyClient) {
    let stub = Stub::default();
    stub.answers.lock().unwrap().extend(answers);
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(stub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let opts = ClientOptions {
        base_url: format!("http://{addr}"),
        token: Secret::new(TOKEN),
        rate_limits: limits,
        request_timeout: Duration::from_secs(5),
        max_retries,
        user_agent: "vyx-fleet-test".into(),
    };
    let fast = RetryPolicy {
        initial: Duration::from_millis(1),
        max_interval: Duration::from_millis(5),
        multiplier: 2.0,
        randomization_factor: 0.5,
        max_retries: None,
    };
    (stub.clone(), FlyClient::with_policy(opts, fast))
}

#[test]
fn client_debug_never_shows_the_token() {
    let c = FlyClient::new(ClientOptions::new(
        "https://api.machines.dev",
        Secret::new(TOKEN),
    ))
    .unwrap();
    let shown = format!(
        "{c:?} {:?}",
        ClientOptions::new("https://x", Secret::new(TOKEN))
    );
    assert!(!shown.contains("TOPSECRET"), "{shown}");
}

#[test]
fn bad_options_are_config_errors_without_the_token() {
    let bad = [
        ("not a url", TOKEN),
        ("ftp://x", TOKEN),
        ("https://user:pw@x", TOKEN),
        ("https://x", "  "),
        ("https://x", "fm2_TOPSECRET\nTOKEN"),
    ];
    for (url, token) in bad {
        let e = FlyClient::new(ClientOptions::new(url, Secret::new(token))).unwrap_err();
        assert_eq!(e.kind(), "config", "{url}");
        assert!(!format!("{e} {e:?}").contains("TOPSECRET"));
    }
}

#[tokio::test]
async fn get_app_sends_flyv1_auth_and_decodes() {
    let (stub, c) = stub(vec![ok(
        r#"{"id":"1","name":"vyx-user-a","status":"deployed"}"#,
    )])
    .await;
    let app = c.get_app("vyx-user-a").await.unwrap();
    assert_eq!(app.status, "deployed");
    let seen = stub.seen();
    assert_eq!(seen[0].path_and_query, "/v1/apps/vyx-user-a");
    assert_eq!(seen[0].auth.as_deref(), Some("FlyV1 fm2_TOPSECRETTOKEN"));
    assert_eq!(seen[0].content_type, None);
}

fn machine_json(id: &str, state: &str) -> String {
    format!(
        r#"{{"id":"{id}","state":"{state}","region":"sin","version":"v1","config":{{"image":"img"}}}}"#
    )
}

#[tokio::test]
async fn get_is_retried_on_503_and_502() {
    let (stub, c) = stub(vec![
        answer(503, ""),
        answer(502, "<html>bad gateway</html>"),
        ok(&machine_json("m1", "started")),
    ])
    .await;
    let m = c.get_machine("app", "m1").await.unwrap();
    assert_eq!(m.state, MachineState::Started);
    assert_eq!(stub.seen().len(), 3);
}

#[tokio::test]
async fn get_gives_up_after_max_retries() {
    let (stub, c) = stub_with(vec![answer(503, ""); 10], RateLimits::disabled(), 2).await;
    let e = c.get_app("a").await.unwrap_err();
    assert_eq!((e.kind(), e.status()), ("server", Some(503)));
    assert_eq!(e.request_id(), Some("req-503"));
    assert!(!e.write_outcome_unknown());
    assert_eq!(stub.seen().len(), 3);
}

#[tokio::test]
async fn get_is_not_retried_on_500_or_404() {
    let (stub, c) = stub(vec![
        answer(500, ""),
        answer(404, r#"{"error":"app not found"}"#),
    ])
    .await;
    assert_eq!(c.get_app("a").await.unwrap_err().kind(), "server");
    let e = c.get_app("a").await.unwrap_err();
    assert!(matches!(e, FlyError::NotFound { .. }), "{e:?}");
    assert_eq!(stub.seen().len(), 2);
}

#[tokio::test]
async fn post_is_never_retried_on_5xx_or_408() {
    let (stub, c) = stub(vec![answer(503, ""), answer(408, ""), ok("{}")]).await;
    let req = CreateMachineRequest {
        config: MachineConfig {
            image: "img".into(),
            ..Default::default()
        },
        region: Some("sin".into()),
        ..Default::default()
    };
    let e = c.create_machine("app", &req).await.unwrap_err();
    assert_eq!(e.kind(), "server");
    assert!(e.write_outcome_unknown());
    let e = c.create_machine("app", &req).await.unwrap_err();
    assert_eq!(e.kind(), "timeout");
    assert!(e.write_outcome_unknown());
    let seen = stub.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].method, Method::POST);
    assert_eq!(seen[0].content_type.as_deref(), Some("application/json"));
    let body: serde_json::Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"config": {"image": "img"}, "region": "sin"})
    );
}

#[tokio::test]
async fn post_is_retried_on_429_honouring_retry_after() {
    let (stub, c) = stub(vec![
        answer(429, r#"{"error":"slow down"}"#).header("retry-after", "1"),
        ok(&machine_json("m1", "created")),
    ])
    .await;
    let start = std::time::Instant::now();
    let req = CreateMachineRequest::default();
    let m = c.create_machine("app", &req).await.unwrap();
    assert_eq!(m.id, "m1");
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(stub.seen().len(), 2);
}

#[tokio::test]
async fn a_retry_after_beyond_the_deadline_is_returned_not_slept() {
    let (stub, c) = stub(vec![answer(429, "").header("retry-after", "3600")]).await;
    let e = c.delete_app("a").await.unwrap_err();
    assert_eq!(e.retry_after(), Some(Duration::from_secs(3600)));
    assert!(e.is_transient() && !e.write_outcome_unknown());
    assert_eq!(stub.seen().len(), 1);
}

#[tokio::test]
async fn transport_errors_are_classified_and_writes_flagged() {
    // A port that was just free: connection refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut opts = ClientOptions::new(format!("http://{addr}"), Secret::new(TOKEN));
    opts.rate_limits = RateLimits::disabled();
    opts.max_retries = 1;
    let c = FlyClient::with_policy(opts, RetryPolicy::fly_default());
    let e = c.get_app("a").await.unwrap_err();
    assert_eq!(e.kind(), "transport");
    assert!(!e.write_outcome_unknown() && e.is_transient());
    let e = c.start_machine("a", "m").await.unwrap_err();
    assert!(e.write_outcome_unknown());
    assert!(!format!("{e} {e:?}").contains("TOPSECRET"));
}

#[tokio::test]
async fn undecodable_and_oversized_success_bodies_are_errors() {
    let huge = format!(r#"{{"id":"m","name":"{}"}}"#, "x".repeat(MAX_BODY_BYTES));
    let (_stub, c) = stub(vec![
        ok(r#"{"id":"m1","state":"sta"#),
        ok("<html>hello</html>"),
        ok(r#"{"id":7}"#),
        ok(""),
        ok(&huge),
        ok(r#"{"id":"m1","state":"sta"#),
    ])
    .await;
    for _ in 0..4 {
        let e = c.get_machine("a", "m1").await.unwrap_err();
        assert_eq!(e.kind(), "decode", "{e}");
        assert!(e.to_string().len() < 400);
    }
    let e = c.get_machine("a", "m1").await.unwrap_err();
    assert_eq!(e.kind(), "body_too_large");
    let e = c
        .update_machine("a", "m1", &UpdateMachineRequest::default())
        .await
        .unwrap_err();
    assert!(e.kind() == "decode" && e.write_outcome_unknown());
}

#[tokio::test]
async fn create_app_maps_name_conflicts_and_sends_wait() {
    let (stub, c) = stub(vec![
        answer(
            422,
            r#"{"error":"Name has already been taken","status":"name_taken"}"#,
        ),
        answer(409, r#"{"error":"exists"}"#),
        answer(201, r#"{"id":"app_1","created_at":1}"#),
    ])
    .await;
    let req = CreateAppRequest {
        name: "vyx-user-a".into(),
        org_slug: "vyx".into(),
        network: Some("vyx-user-a".into()),
        idempotency_key: None,
    };
    assert!(matches!(
        c.create_app(&req).await,
        Err(FlyError::NameTaken { status: 422, .. })
    ));
    assert!(matches!(
        c.create_app(&req).await,
        Err(FlyError::NameTaken { status: 409, .. })
    ));
    assert_eq!(c.create_app(&req).await.unwrap().id, "app_1");
    let seen = stub.seen();
    assert_eq!(seen[0].path_and_query, "/v1/apps?wait=true");
    let body: serde_json::Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(body["name"], "vyx-user-a");
    assert_eq!(body["network"], "vyx-user-a");
}

#[tokio::test]
async fn get_app_distinguishes_forbidden_and_not_found() {
    let (_stub, c) = stub(vec![answer(403, ""), answer(404, ""), answer(401, "")]).await;
    assert!(matches!(
        c.get_app("x").await,
        Err(FlyError::Forbidden { .. })
    ));
    assert!(matches!(
        c.get_app("x").await,
        Err(FlyError::NotFound { .. })
    ));
    assert!(matches!(
        c.get_app("x").await,
        Err(FlyError::Unauthorized { .. })
    ));
}

#[tokio::test]
async fn list_apps_follows_next_cursor() {
    let (stub, c) = stub(vec![
        ok(r#"{"total_apps":3,"apps":[{"name":"a"},{"name":"b"}],"next_cursor":"c1"}"#),
        ok(r#"{"apps":[{"name":"c"}],"next_cursor":""}"#),
    ])
    .await;
    let apps = c.list_apps("vyx").await.unwrap();
    let names: Vec<_> = apps.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    let seen = stub.seen();
    assert_eq!(seen[0].path_and_query, "/v1/apps?org_slug=vyx&limit=500");
    assert_eq!(
        seen[1].path_and_query,
        "/v1/apps?org_slug=vyx&limit=500&cursor=c1"
    );
}

#[tokio::test]
async fn a_repeating_cursor_is_an_error_not_a_loop() {
    let page = ok(r#"{"apps":[{"name":"a"}],"next_cursor":"same"}"#);
    let (_stub, c) = stub(vec![page.clone(), page.clone(), page]).await;
    assert_eq!(c.list_apps("vyx").await.unwrap_err().kind(), "decode");
}

#[tokio::test]
async fn list_machines_sends_filters_and_follows_the_header_cursor() {
    let (stub, c) = stub(vec![
        ok(&format!("[{}]", machine_json("m1", "started"))).header("fly-next-cursor", "k2"),
        ok("[]").header("fly-next-cursor", "k3"),
        ok(&format!("[{}]", machine_json("m2", "stopped"))),
    ])
    .await;
    let q = ListMachines {
        metadata: [("vyx_user_id".to_owned(), "u 1".to_owned())].into(),
        include_deleted: Some(false),
        state: vec!["started".into(), "stopped".into()],
        ..Default::default()
    };
    let ms = c.list_machines("app", &q).await.unwrap();
    assert_eq!(ms.len(), 2);
    let seen = stub.seen();
    assert_eq!(
        seen[0].path_and_query,
        "/v1/apps/app/machines?metadata.vyx_user_id=u+1&include_deleted=false&state=started%2Cstopped&limit=500"
    );
    assert!(seen[1].path_and_query.ends_with("&cursor=k2"));
    assert!(seen[2].path_and_query.ends_with("&cursor=k3"));
}

#[tokio::test]
async fn org_machines_paginate_and_refuse_incomplete_answers() {
    let m = r#"{"app_name":"vyx-user-a","id":"m1","state":"started","config":{"image":"i","metadata":{"k":"v"}}}"#;
    let (stub, c) = stub(vec![
        ok(&format!(r#"{{"machines":[{m}],"next_cursor":"n1"}}"#)),
        ok(r#"{"machines":[],"next_cursor":null,"error_regions":null}"#),
        ok(&format!(r#"{{"machines":[{m}],"error_regions":["sin"]}}"#)),
    ])
    .await;
    let ms = c.list_org_machines("vyx").await.unwrap();
    assert_eq!(ms[0].app_name, "vyx-user-a");
    assert_eq!(
        stub.seen()[1].path_and_query,
        "/v1/orgs/vyx/machines?limit=500&cursor=n1"
    );
    let e = c.list_org_machines("vyx").await.unwrap_err();
    assert!(matches!(&e, FlyError::Incomplete { error_regions, .. } if error_regions == &["sin"]));
    assert!(e.is_transient());
}

#[tokio::test]
async fn wait_repolls_after_408_until_the_state_is_reached() {
    let (stub, c) = stub(vec![
        answer(408, r#"{"error":"deadline exceeded"}"#),
        ok(r#"{"ok":true,"state":"started","version":"v2"}"#),
    ])
    .await;
    let w = c
        .wait_machine(
            "app",
            "m1",
            &["started"],
            Some("v2"),
            Duration::from_secs(90),
        )
        .await
        .unwrap();
    assert_eq!(
        (w.ok, w.state, w.version.as_deref()),
        (true, MachineState::Started, Some("v2"))
    );
    let seen = stub.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[0].path_and_query,
        "/v1/apps/app/machines/m1/wait?timeout=60&state=started&version=v2"
    );
}

#[tokio::test]
async fn wait_returns_timeout_once_the_callers_deadline_passed() {
    let (stub, c) = stub(vec![answer(408, ""), answer(408, "")]).await;
    let e = c
        .wait_machine("app", "m1", &["stopped", "suspended"], None, Duration::ZERO)
        .await
        .unwrap_err();
    assert!(matches!(e, FlyError::Timeout { .. }));
    let seen = stub.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].path_and_query,
        "/v1/apps/app/machines/m1/wait?timeout=1&state=stopped%2Csuspended"
    );
}

#[tokio::test]
async fn machine_actions_hit_the_right_routes() {
    let (stub, c) = stub(vec![
        ok("{}"),
        ok(r#"{"previous_state":"stopped"}"#),
        ok(""),
        answer(202, ""),
    ])
    .await;
    let stop = StopMachineRequest {
        signal: Some("SIGTERM".into()),
        timeout: Some(FlyDuration::from_secs(10)),
    };
    c.stop_machine("app", "m1", &stop).await.unwrap();
    c.start_machine("app", "m1").await.unwrap();
    c.delete_machine("app", "m1", true).await.unwrap();
    c.delete_app("app").await.unwrap();
    let seen = stub.seen();
    let got: Vec<_> = seen
        .iter()
        .map(|s| (s.method.as_str(), s.path_and_query.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("POST", "/v1/apps/app/machines/m1/stop"),
            ("POST", "/v1/apps/app/machines/m1/start"),
            ("DELETE", "/v1/apps/app/machines/m1?force=true"),
            ("DELETE", "/v1/apps/app"),
        ]
    );
    assert_eq!(seen[0].body, r#"{"signal":"SIGTERM","timeout":"10s"}"#);
    assert_eq!(seen[1].content_type, None);
}

#[tokio::test]
async fn path_segments_are_escaped() {
    let (stub, c) = stub(vec![ok(r#"{"name":"x"}"#)]).await;
    let _ = c.get_app("../v1/orgs?x=1").await;
    assert_eq!(
        stub.seen()[0].path_and_query,
        "/v1/apps/..%2Fv1%2Forgs%3Fx=1"
    );
}

#[tokio::test]
async fn set_secrets_sends_values_and_nulls_and_never_leaks_them() {
    let (stub, c) = stub(vec![
        ok(r#"{"secrets":[{"name":"A","digest":"d"}],"version":7,"Version":7}"#),
        ok(r#"{"Version":8}"#),
        answer(
            400,
            r#"{"error":"invalid value s3cr3t-value for SUPABASE_KEY; token fm2_TOPSECRETTOKEN"}"#,
        ),
        ok(r#"{"secrets":[]}"#),
    ])
    .await;
    let values = [
        ("SUPABASE_KEY".to_owned(), Some(Secret::new("s3cr3t-value"))),
        ("OLD".to_owned(), None),
    ]
    .into_iter()
    .collect();
    assert_eq!(c.set_secrets("app", &values).await.unwrap(), 7);
    assert_eq!(c.set_secrets("app", &values).await.unwrap(), 8);
    let e = c.set_secrets("app", &values).await.unwrap_err();
    let shown = format!("{e} {e:?}");
    assert!(
        !shown.contains("s3cr3t") && !shown.contains("TOPSECRET"),
        "{shown}"
    );
    assert!(shown.contains("[redacted]"));
    assert_eq!(
        c.set_secrets("app", &values).await.unwrap_err().kind(),
        "decode"
    );
    let body: serde_json::Value = serde_json::from_str(&stub.seen()[0].body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"values": {"SUPABASE_KEY": "s3cr3t-value", "OLD": null}})
    );
}

#[tokio::test]
async fn ips_list_and_assign() {
    let (stub, c) = stub(vec![
        ok(r#"{"ips":[{"ip":"2a09::1","shared":false}]}"#),
        ok(r#"{"ip":"66.1.1.1","shared":true,"region":"global"}"#),
    ])
    .await;
    assert!(c.list_ips("app").await.unwrap()[0].is_public_v6());
    assert!(
        c.assign_ip("app", IpType::SharedV4)
            .await
            .unwrap()
            .is_shared_v4()
    );
    let seen = stub.seen();
    assert_eq!(seen[1].path_and_query, "/v1/apps/app/ip_assignments");
    assert_eq!(seen[1].body, r#"{"type":"shared_v4"}"#);
}

#[tokio::test]
async fn affinity_cookies_are_replayed_for_the_app() {
    let (stub, c) = stub(vec![
        answer(201, r#"{"id":"a1"}"#)
            .header("set-cookie", "fly-affinity=node7; Path=/v1/apps/vyx-user-a"),
        ok(r#"{"name":"vyx-user-a"}"#),
        ok(r#"{"name":"other"}"#),
    ])
    .await;
    let req = CreateAppRequest {
        name: "vyx-user-a".into(),
        org_slug: "vyx".into(),
        ..Default::default()
    };
    c.create_app(&req).await.unwrap();
    c.get_app("vyx-user-a").await.unwrap();
    c.get_app("other").await.unwrap();
    let seen = stub.seen();
    assert_eq!(seen[1].cookie.as_deref(), Some("fly-affinity=node7"));
    assert_eq!(seen[2].cookie, None);
}

#[tokio::test]
async fn legacy_tokens_are_sent_as_bearer() {
    let (stub2, c) = stub(vec![ok(r#"{"name":"a"}"#)]).await;
    let mut opts = ClientOptions::new(c.url(&[]).to_string(), Secret::new("Bearer oauth_abc"));
    opts.rate_limits = RateLimits::disabled();
    let legacy = FlyClient::new(opts).unwrap();
    legacy.get_app("a").await.unwrap();
    assert_eq!(stub2.seen()[0].auth.as_deref(), Some("Bearer oauth_abc"));
}
