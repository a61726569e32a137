//! Retry policy, timeouts, hostile answers and redaction.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;

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
async fn legacy_tokens_are_sent_as_bearer() {
    let (stub2, c) = stub(vec![ok(r#"{"name":"a"}"#)]).await;
    let mut opts = ClientOptions::new(c.url(&[]).to_string(), Secret::new("Bearer oauth_abc"));
    opts.rate_limits = RateLimits::disabled();
    let legacy = FlyClient::new(opts).unwrap();
    legacy.get_app("a").await.unwrap();
    assert_eq!(stub2.seen()[0].auth.as_deref(), Some("Bearer oauth_abc"));
}

/// Collects formatted log lines.
#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn failures_are_logged_at_warn_with_request_id_and_without_secrets() {
    let logs = LogBuf::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::TRACE)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let canned = [
        answer(
            400,
            r#"{"error":"bad value s3cr3t-value, auth fm2_TOPSECRETTOKEN"}"#,
        ),
        answer(404, r#"{"error":"nope"}"#),
    ];
    let (_stub, c) = stub(canned.iter().cycle().take(4).cloned().collect()).await;
    let values = [("K".to_owned(), Some(Secret::new("s3cr3t-value")))].into();
    // tracing caches each callsite's interest when the callsite is first hit, from the dispatchers
    // alive at that instant, and a concurrent test thread can make that first registration cache
    // "nobody listens" for this thread's subscriber too. So: hit every callsite of both paths once
    // (registration done, whatever it cached), recompute every cached interest while this test's
    // subscriber is alive, then forget that warm-up and judge only the second, measured run. No
    // retry loop: the measured run is the only one asserted on.
    c.set_secrets("app", &values).await.unwrap_err();
    c.get_machine("app", "m1").await.unwrap_err();
    tracing::callsite::rebuild_interest_cache();
    logs.0.lock().unwrap().clear();
    c.set_secrets("app", &values).await.unwrap_err();
    c.get_machine("app", "m1").await.unwrap_err();
    let out = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(out.contains("WARN"), "{out}");
    assert!(
        out.contains("fly_request_id=\"req-400\"") || out.contains("fly_request_id=req-400"),
        "{out}"
    );
    assert!(
        out.contains("route=\"set_secrets\"") || out.contains("route=set_secrets"),
        "{out}"
    );
    assert!(out.contains("status=404"), "{out}");
    assert!(
        !out.contains("s3cr3t") && !out.contains("TOPSECRET"),
        "{out}"
    );
}
