//! The operator endpoints on `HTTP_ADDR` (default `0.0.0.0:9090`):
//!
//! - `GET /healthz`: 200 while the controller loop is alive, i.e. it called [`Health::heartbeat`]
//!   within the staleness window (counted from start-up before the first heartbeat); else 503.
//!   Fly's top-level check points here. A failing check does not restart a Machine, so the loop
//!   should also exit non-zero when it is truly stuck; this endpoint is for eyes and alerts.
//! - `GET /readyz`: 200 when the database answered on the last check, that check is recent, and the
//!   loop is alive, on the leader **and on standbys** ("ready" means "can take over", DEPLOYING.md
//!   pitfall 4: a 503 on the standby would hang `fly deploy`). The JSON body says `leader`/`standby`.
//! - `GET /metrics`: OpenMetrics text from [`Metrics`].
//! - everything else: the admin console ([`crate::admin`]), when the state carries one.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;

use crate::liveness::Health;
use crate::metrics::{self, Metrics};

/// What the handlers need.
#[derive(Clone, Debug)]
pub struct HttpState {
    pub health: Health,
    pub metrics: Metrics,
    /// The dashboard at `/` (the daemon always has one; unit tests of the probes need none).
    pub console: Option<crate::admin::ConsoleState>,
}

impl HttpState {
    pub fn new(health: Health, metrics: Metrics) -> Self {
        HttpState {
            health,
            metrics,
            console: None,
        }
    }

    pub fn with_console(mut self, console: crate::admin::ConsoleState) -> Self {
        self.console = Some(console);
        self
    }
}

pub fn router(state: HttpState) -> Router {
    let console = state.console.clone();
    let probes = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .with_state(state);
    let all = match console {
        Some(c) => probes.merge(crate::admin::router(c)),
        None => probes,
    };
    all.layer(axum::middleware::from_fn(crate::admin::security_headers))
}

/// Binds `addr` and serves until `shutdown` completes (then finishes in-flight requests).
pub async fn serve(
    addr: SocketAddr,
    state: HttpState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    serve_listener(listener, state, shutdown).await
}

/// [`serve`] on an already bound listener (bind first to fail fast, or to learn the port of
/// `127.0.0.1:0` in tests).
pub async fn serve_listener(
    listener: TcpListener,
    state: HttpState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(addr = %addr, "http: serving /healthz /readyz /metrics and the console at /");
    }
    // The peer address keys the console's sign-in throttle.
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

fn json_response(code: StatusCode, body: serde_json::Value) -> Response {
    (
        code,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(body),
    )
        .into_response()
}

fn role(health: &Health) -> &'static str {
    if health.is_leader() {
        "leader"
    } else {
        "standby"
    }
}

async fn healthz(State(state): State<HttpState>) -> Response {
    let now = Instant::now();
    let h = &state.health;
    let (since, heartbeats) = h.since_heartbeat(now);
    let alive = h.alive_at(now);
    let body = json!({
        "status": if alive { "alive" } else { "stalled" },
        "role": role(h),
        "seconds_since_heartbeat": (since.as_secs_f64() * 1000.0).round() / 1000.0,
        "heartbeats": heartbeats,
        "staleness_seconds": h.staleness().as_secs_f64(),
    });
    let code = if alive {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(code, body)
}

async fn readyz(State(state): State<HttpState>) -> Response {
    let h = &state.health;
    match h.readiness_at(Instant::now()) {
        Ok(()) => json_response(
            StatusCode::OK,
            json!({ "status": "ready", "role": role(h), "database": "reachable" }),
        ),
        Err(reason) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "status": "not_ready", "role": role(h), "reason": reason }),
        ),
    }
}

async fn metrics_handler(State(state): State<HttpState>) -> Response {
    // The leader gauge is derived from the one source of truth at scrape time.
    state.metrics.set_leader(state.health.is_leader());
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        state.metrics.encode(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    struct Server {
        base: String,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<std::io::Result<()>>,
    }

    impl Server {
        async fn start(state: HttpState) -> Server {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(serve_listener(listener, state, async {
                let _ = rx.await;
            }));
            Server {
                base,
                stop: Some(tx),
                task,
            }
        }

        async fn get(&self, path: &str) -> (u16, String, String) {
            // No proxy: a proxy from the environment must not intercept loopback.
            let client = reqwest::Client::builder().no_proxy().build().unwrap();
            let resp = client
                .get(format!("{}{path}", self.base))
                .send()
                .await
                .unwrap();
            let code = resp.status().as_u16();
            let ctype = resp
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            (code, ctype, resp.text().await.unwrap())
        }

        async fn stop(mut self) {
            self.stop.take().unwrap().send(()).unwrap();
            self.task.await.unwrap().unwrap();
        }
    }

    fn state() -> HttpState {
        HttpState::new(Health::new(Duration::from_secs(150)), Metrics::new())
    }

    fn body(text: &str) -> serde_json::Value {
        serde_json::from_str(text).unwrap()
    }

    #[tokio::test]
    async fn healthz_follows_heartbeats() {
        let st = state();
        let server = Server::start(st.clone()).await;

        // Start-up grace: alive before the first heartbeat.
        let (code, ctype, text) = server.get("/healthz").await;
        assert_eq!(code, 200, "{text}");
        assert!(ctype.starts_with("application/json"), "{ctype}");
        assert_eq!(body(&text)["status"], "alive");
        assert_eq!(body(&text)["heartbeats"], 0);

        // Silent for longer than the staleness window: 503.
        st.health.backdate(Duration::from_secs(151));
        let (code, _, text) = server.get("/healthz").await;
        assert_eq!(code, 503, "{text}");
        assert_eq!(body(&text)["status"], "stalled");

        // A heartbeat brings it back.
        st.health.heartbeat();
        let (code, _, text) = server.get("/healthz").await;
        assert_eq!(code, 200, "{text}");
        assert_eq!(body(&text)["heartbeats"], 1);

        server.stop().await;
    }

    #[tokio::test]
    async fn readyz_means_can_take_over() {
        let st = state();
        let server = Server::start(st.clone()).await;

        let (code, _, text) = server.get("/readyz").await;
        assert_eq!(code, 503, "{text}");
        assert_eq!(body(&text)["reason"], "database not checked yet");

        // A standby with a reachable database is ready.
        st.health.heartbeat();
        st.health.set_database_reachable(true);
        let (code, _, text) = server.get("/readyz").await;
        assert_eq!(code, 200, "{text}");
        assert_eq!(body(&text)["role"], "standby");

        st.health.set_leader(true);
        let (code, _, text) = server.get("/readyz").await;
        assert_eq!(code, 200, "{text}");
        assert_eq!(body(&text)["role"], "leader");

        st.health.set_database_reachable(false);
        let (code, _, text) = server.get("/readyz").await;
        assert_eq!(code, 503, "{text}");
        assert_eq!(body(&text)["role"], "leader");

        // Reachable, but the check (and the loop) went quiet long ago.
        st.health.set_database_reachable(true);
        st.health.backdate(Duration::from_secs(151));
        let (code, _, _) = server.get("/readyz").await;
        assert_eq!(code, 503);
        st.health.heartbeat();
        let (code, _, text) = server.get("/readyz").await;
        assert_eq!(code, 503, "{text}");
        assert_eq!(
            body(&text)["reason"],
            "last successful database check is too old"
        );

        server.stop().await;
    }

    #[tokio::test]
    async fn metrics_endpoint_serves_openmetrics() {
        let st = state();
        st.metrics
            .record_pass(metrics::PassOutcome::Ok, Duration::from_millis(10));
        st.health.set_leader(true);
        let server = Server::start(st.clone()).await;
        let (code, ctype, text) = server.get("/metrics").await;
        assert_eq!(code, 200);
        assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
        assert!(
            text.contains("vyx_fleet_passes_total{outcome=\"ok\"} 1"),
            "{text}"
        );
        assert!(text.lines().any(|l| l == "vyx_fleet_is_leader 1"), "{text}");
        assert!(text.ends_with("# EOF\n"));

        let (code, _, _) = server.get("/nope").await;
        assert_eq!(code, 404);
        server.stop().await;
    }

    #[tokio::test]
    async fn serve_reports_bind_errors_and_stops_on_shutdown() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let err = serve(addr, state(), std::future::ready(())).await;
        assert!(err.is_err(), "binding a taken port must fail");

        // An already-complete shutdown future: serve returns Ok promptly.
        let free: SocketAddr = "127.0.0.1:0".parse().unwrap();
        serve(free, state(), std::future::ready(())).await.unwrap();
    }
}
