//! Raw-HTTP helpers for the simulator tests (deliberately not the project's Fly client).
#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode, header::HeaderMap};
use serde_json::{Value, json};
use vyx_fleet::sim::{Sim, SimConfig};

pub const TOKEN: &str = "test-token";
pub const ORG: &str = "vyx-test";

pub struct Api {
    pub sim: Sim,
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

pub struct Resp {
    pub status: StatusCode,
    pub body: Value,
    pub headers: HeaderMap,
}

impl Api {
    pub async fn start(cfg: SimConfig) -> Api {
        let sim = Sim::start("127.0.0.1:0".parse().expect("addr"), cfg)
            .await
            .expect("sim starts");
        let base = sim.base_url();
        Api {
            sim,
            http: reqwest::Client::new(),
            base,
            token: TOKEN.to_string(),
        }
    }

    /// Fast config: no delays, no windows, no rate limits.
    pub async fn fast() -> Api {
        Api::start(SimConfig::fast()).await
    }

    pub async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        self.try_send(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("transport error on {path}: {e}"))
    }

    pub async fn try_send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Resp, reqwest::Error> {
        self.try_send_with(method, path, body, &[]).await
    }

    /// A call with extra request headers (e.g. `fly-machine-lease-nonce`).
    pub async fn send_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        self.try_send_with(method, path, body, headers)
            .await
            .unwrap_or_else(|e| panic!("transport error on {path}: {e}"))
    }

    pub async fn try_send_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Result<Resp, reqwest::Error> {
        let mut rb = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .header("authorization", format!("Bearer {}", self.token));
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await?;
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await?;
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok(Resp {
            status,
            body,
            headers,
        })
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.send(Method::POST, path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> Resp {
        self.send(Method::DELETE, path, None).await
    }

    /// POST /v1/apps, then poll GET until it answers 200 (the post-create window).
    pub async fn create_app(&self, name: &str) {
        let r = self
            .post(
                "/v1/apps",
                json!({"name": name, "org_slug": ORG, "network": name}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "create {name}: {:?}", r.body);
        poll_until(Duration::from_secs(10), || async {
            self.get(&format!("/v1/apps/{name}")).await.status == StatusCode::OK
        })
        .await;
    }

    pub async fn create_machine(&self, app: &str, body: Value) -> Value {
        let r = self.post(&format!("/v1/apps/{app}/machines"), body).await;
        assert_eq!(r.status, StatusCode::OK, "create machine: {:?}", r.body);
        r.body
    }

    pub async fn wait_state(&self, app: &str, id: &str, state: &str) -> Resp {
        self.get(&format!(
            "/v1/apps/{app}/machines/{id}/wait?state={state}&timeout=10"
        ))
        .await
    }
}

pub fn machine_body(image: &str) -> Value {
    json!({
        "region": "sin",
        "config": {
            "image": image,
            "env": {"USER_ID": "u1"},
            "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 512},
            "metadata": {"vyx_user_id": "u1"},
            "restart": {"policy": "always"},
            "services": [{
                "protocol": "tcp", "internal_port": 8080,
                "ports": [{"port": 443, "handlers": ["tls", "http"]}],
                "checks": [{"type": "http", "port": 8080, "method": "GET", "path": "/health",
                            "interval": "15s", "timeout": "2s"}]
            }]
        }
    })
}

/// Polls `f` until true; panics at the deadline.
pub async fn poll_until<F, Fut>(deadline: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    loop {
        if f().await {
            return;
        }
        assert!(
            Instant::now() < end,
            "condition not met within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
