//! Each app's own health endpoint, `GET /_sim/apps/{app}/health`: what `https://{app}.fly.dev/health`
//! answers in production (the app's service behind Fly's proxy), not the Machines API. So it sits
//! outside the `/v1` pipeline: no token, no rate limit, not in the call log; [`Sim::health_hits`]
//! counts it instead, so tests can tell probes from API calls.
//!
//! 200 when the app has a `started` machine whose checks all pass, 503 otherwise (small JSON body),
//! 404 for an unknown app. [`Sim::set_app_health`] overrides one app's answer, so a test can make
//! the endpoint fail while Fly's checks pass, or pass while they fail.
//!
//! [`Sim::health_hits`]: super::Sim::health_hits
//! [`Sim::set_app_health`]: super::Sim::set_app_health

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::server::{Shared, lock};

async fn app_health(State(sh): State<Arc<Shared>>, Path(app): Path<String>) -> Response {
    sh.health_hits.fetch_add(1, Ordering::Relaxed);
    let forced = lock(&sh.health_overrides).get(&app).copied();
    let verdict = {
        let world = lock(&sh.world);
        let Some(a) = world.apps.get(&app) else {
            return (
                StatusCode::NOT_FOUND,
                Json(json!({"error": "app not found"})),
            )
                .into_response();
        };
        a.machines
            .values()
            .any(|m| m.state == "started" && m.checks.iter().all(|c| c.status == "passing"))
    };
    if forced.unwrap_or(verdict) {
        (StatusCode::OK, Json(json!({"status": "ok"}))).into_response()
    } else {
        let body = json!({"status": "unavailable", "forced": forced.is_some()});
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new().route("/_sim/apps/{name}/health", get(app_health))
}
