//! HTTP-level tests against a tiny axum stub on 127.0.0.1:0 (canned answers, recorded requests).
//!
//! `retries`: retry policy, timeouts, hostile answers, redaction. `endpoints`: paths, bodies,
//! pagination and decoding per call.

mod endpoints;
mod retries;

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
        list_page_size: crate::fly::client::DEFAULT_LIST_PAGE_SIZE,
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

fn machine_json(id: &str, state: &str) -> String {
    format!(
        r#"{{"id":"{id}","state":"{state}","region":"sin","version":"v1","config":{{"image":"img"}}}}"#
    )
}
