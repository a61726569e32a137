//! Inspection: snapshot of the whole platform and the call log, in process and under `/_sim/`
//! (unauthenticated; test and demo plumbing, not part of the Fly API).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::faults::Faults;
use super::images::ImageBehaviour;
use super::routes::apps::{insert_app, valid_app_name};
use super::routes::{ApiError, leases};
use super::server::{Shared, lock};
use super::state::{CheckStatus, IpEntry, sha256_hex};

/// One `/v1` call as the simulator saw it. Never holds the Authorization header.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallRecord {
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub method: String,
    /// Path with query string.
    pub path: String,
    /// Route class, e.g. `machines.create` (`other` when unmatched).
    pub class: String,
    /// `None` when the connection was dropped (no HTTP answer).
    pub status: Option<u16>,
    /// Injected fault, if any (`server_error 503`, `timeout`, `not_found`, `drop`, `lost_answer 502`,
    /// `lost_answer drop`, `latency 200ms`, `burst_429`).
    pub fault: Option<String>,
    /// A mutating call whose handler succeeded (true even if its answer was then lost).
    pub write_applied: bool,
    pub request_id: String,
    /// The caller's `User-Agent`, which tells replicas apart when each sends its own.
    #[serde(default)]
    pub user_agent: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MachineSnapshot {
    pub id: String,
    pub name: String,
    pub state: String,
    pub version: String,
    pub region: String,
    pub config: Value,
    pub checks: Vec<CheckStatus>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// `min_secrets_version` of the create/update that made the current version.
    #[serde(default)]
    pub min_secrets_version: Option<u64>,
    /// The app's secrets version this machine last booted with (secrets are read at boot and a
    /// running machine keeps them until it is updated or restarted, REFERENCE §4.3). `None`: it
    /// never booted, or booted with `skip_secrets`.
    #[serde(default)]
    pub secrets_version: Option<u64>,
    /// Restarts flyd made after the process exited, since the last create, update or start
    /// (`images.rs`).
    #[serde(default)]
    pub restarts: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IpSnapshot {
    pub ip: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub shared: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretSnapshot {
    pub name: String,
    /// sha256 hex of the value; the value itself never leaves the simulator's state.
    pub value_sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppSnapshot {
    pub name: String,
    pub id: String,
    pub org: String,
    pub status: String,
    pub network: String,
    /// Creation order across all orgs (1-based, increasing).
    pub created_seq: u64,
    pub created_at: DateTime<Utc>,
    /// `DELETE` accepted, removal pending.
    pub deleting: bool,
    pub machines: Vec<MachineSnapshot>,
    pub ips: Vec<IpSnapshot>,
    pub secrets: Vec<SecretSnapshot>,
    pub secrets_version: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub orgs: Vec<String>,
    /// In creation order.
    pub apps: Vec<AppSnapshot>,
}

impl Snapshot {
    pub fn app(&self, name: &str) -> Option<&AppSnapshot> {
        self.apps.iter().find(|a| a.name == name)
    }
}

impl AppSnapshot {
    /// Machines not destroyed.
    pub fn live_machines(&self) -> impl Iterator<Item = &MachineSnapshot> {
        self.machines.iter().filter(|m| m.state != "destroyed")
    }

    /// Live machines that did not boot with the app's current secrets version (secrets not applied,
    /// REFERENCE §7). Machines still booting or parked count too: they would run old secrets.
    pub fn machines_on_stale_secrets(&self) -> Vec<&MachineSnapshot> {
        self.live_machines()
            .filter(|m| m.secrets_version != Some(self.secrets_version))
            .collect()
    }
}

pub(crate) fn snapshot(sh: &Shared) -> Snapshot {
    let world = lock(&sh.world);
    let mut apps: Vec<AppSnapshot> = world
        .apps
        .values()
        .map(|a| {
            let mut machines: Vec<_> = a.machines.values().collect();
            machines.sort_by_key(|m| m.seq);
            AppSnapshot {
                name: a.name.clone(),
                id: a.id.clone(),
                org: a.org.clone(),
                status: a.status().to_string(),
                network: a.network.clone(),
                created_seq: a.seq,
                created_at: a.created_at,
                deleting: a.deleting,
                machines: machines
                    .into_iter()
                    .map(|m| MachineSnapshot {
                        id: m.id.clone(),
                        name: m.name.clone(),
                        state: m.state.clone(),
                        version: m.version.clone(),
                        region: m.region.clone(),
                        config: m.config.clone(),
                        checks: m.checks.clone(),
                        created_at: m.created_at,
                        updated_at: m.updated_at,
                        min_secrets_version: m.min_secrets_version,
                        secrets_version: m.booted_secrets_version,
                        restarts: m.restarts,
                    })
                    .collect(),
                ips: a
                    .ips
                    .iter()
                    .map(|i: &IpEntry| IpSnapshot {
                        ip: i.ip.clone(),
                        kind: i.kind.clone(),
                        shared: i.shared,
                    })
                    .collect(),
                secrets: a
                    .secrets
                    .iter()
                    .map(|(k, v)| SecretSnapshot {
                        name: k.clone(),
                        value_sha256: sha256_hex(&v.value),
                    })
                    .collect(),
                secrets_version: a.secrets_version,
            }
        })
        .collect();
    apps.sort_by_key(|a| a.created_seq);
    Snapshot {
        orgs: world.orgs.keys().cloned().collect(),
        apps,
    }
}

/// Seeds an app directly (no window, no rate limit): e.g. a name squatted by another customer.
pub(crate) fn seed(sh: &Shared, org: &str, name: &str) -> bool {
    let mut world = lock(&sh.world);
    if world.apps.contains_key(name) {
        return false;
    }
    insert_app(sh, &mut world, org, name, "");
    if let Some(a) = world.apps.get_mut(name) {
        let now = tokio::time::Instant::now();
        a.visible_at = now;
        a.listed_at = now;
    }
    drop(world);
    sh.notify();
    true
}

/// Removes an app and everything in it at once, as a delete made outside the controller (flyctl by
/// hand, or lost on Fly's side) looks once it has completed. False if there was no such app.
pub(crate) fn remove_app(sh: &Shared, name: &str) -> bool {
    let removed = lock(&sh.world).apps.remove(name).is_some();
    if removed {
        sh.notify();
    }
    removed
}

#[derive(Deserialize)]
struct LeaseReq {
    owner: String,
    ttl: u64,
}

async fn post_lease(
    State(sh): State<Arc<Shared>>,
    axum::extract::Path((app, id)): axum::extract::Path<(String, String)>,
    body: Bytes,
) -> Response {
    let req: LeaseReq = match json_body(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let ttl = std::time::Duration::from_secs(req.ttl);
    match leases::take_out_of_band(&sh, &app, &id, &req.owner, ttl) {
        Some(nonce) => (StatusCode::CREATED, Json(json!({"nonce": nonce}))).into_response(),
        None => {
            ApiError::new(StatusCode::CONFLICT, "no such machine, or it is leased").into_response()
        }
    }
}

async fn delete_lease(
    State(sh): State<Arc<Shared>>,
    axum::extract::Path((app, id)): axum::extract::Path<(String, String)>,
) -> Response {
    if leases::end_out_of_band(&sh, &app, &id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        ApiError::not_found("no lease").into_response()
    }
}

async fn delete_app(
    State(sh): State<Arc<Shared>>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    if remove_app(&sh, &name) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        ApiError::app_not_found().into_response()
    }
}

fn json_body<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(b).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

async fn get_snapshot(State(sh): State<Arc<Shared>>) -> Response {
    Json(snapshot(&sh)).into_response()
}

async fn get_calls(State(sh): State<Arc<Shared>>) -> Response {
    let calls: Vec<CallRecord> = lock(&sh.calls).iter().cloned().collect();
    Json(calls).into_response()
}

/// Requests the apps' own `/health` endpoints served (not Fly API calls, so not in the call log).
async fn get_health_hits(State(sh): State<Arc<Shared>>) -> Response {
    let hits = sh.health_hits.load(std::sync::atomic::Ordering::Relaxed);
    Json(serde_json::json!({ "hits": hits })).into_response()
}

async fn clear_calls(State(sh): State<Arc<Shared>>) -> Response {
    lock(&sh.calls).clear();
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
struct SeedReq {
    org: String,
    name: String,
}

async fn post_app(State(sh): State<Arc<Shared>>, body: Bytes) -> Response {
    let req: SeedReq = match json_body(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if !valid_app_name(&req.name) || req.org.is_empty() {
        return ApiError::bad_request("invalid org or app name").into_response();
    }
    if seed(&sh, &req.org, &req.name) {
        (
            StatusCode::CREATED,
            Json(json!({"name": req.name, "org": req.org})),
        )
            .into_response()
    } else {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Name has already been taken",
        )
        .with_status("name_taken")
        .into_response()
    }
}

async fn get_faults(State(sh): State<Arc<Shared>>) -> Response {
    Json(lock(&sh.faults).faults.clone()).into_response()
}

async fn put_faults(State(sh): State<Arc<Shared>>, body: Bytes) -> Response {
    match json_body::<Faults>(&body) {
        Ok(f) => {
            lock(&sh.faults).set(f);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn get_image_behaviours(State(sh): State<Arc<Shared>>) -> Response {
    let all: BTreeMap<String, ImageBehaviour> = lock(&sh.images)
        .behaviours
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    Json(all).into_response()
}

async fn put_image_behaviours(State(sh): State<Arc<Shared>>, body: Bytes) -> Response {
    match json_body::<BTreeMap<String, ImageBehaviour>>(&body) {
        Ok(all) => {
            super::set_image_behaviours(&sh, all);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn put_failing_images(State(sh): State<Arc<Shared>>, body: Bytes) -> Response {
    match json_body::<Vec<String>>(&body) {
        Ok(images) => {
            super::set_failing_images(&sh, images);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => e.into_response(),
    }
}

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/_sim/snapshot", get(get_snapshot))
        .route("/_sim/calls", get(get_calls).delete(clear_calls))
        .route("/_sim/calls/clear", post(clear_calls))
        .route("/_sim/health_hits", get(get_health_hits))
        .route("/_sim/apps", post(post_app))
        .route("/_sim/apps/{name}", axum::routing::delete(delete_app))
        .route(
            "/_sim/apps/{name}/machines/{id}/lease",
            post(post_lease).delete(delete_lease),
        )
        .route(
            "/_sim/faults",
            get(get_faults).put(put_faults).post(put_faults),
        )
        .route(
            "/_sim/failing_images",
            put(put_failing_images).post(put_failing_images),
        )
        .route(
            "/_sim/image_behaviours",
            get(get_image_behaviours)
                .put(put_image_behaviours)
                .post(put_image_behaviours),
        )
}
