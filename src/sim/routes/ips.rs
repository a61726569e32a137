//! `/v1/apps/{app}/ip_assignments` [S1][S9]: fabricated addresses, no real allocation.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use chrono::Utc;
use serde_json::{Value, json};

use super::{ApiError, ApiResult, Caller, app_for, app_for_mut, parse_body};
use crate::sim::faults::IpRepeat;
use crate::sim::server::{Shared, lock};
use crate::sim::state::{IpEntry, rfc3339};

/// The one shared IPv4 every app with `shared_v4` gets (shared IPv4 routes by hostname [S8]).
const SHARED_V4: &str = "66.241.124.10";

pub(crate) fn ip_json(ip: &IpEntry, org: &str) -> Value {
    json!({
        "ip": ip.ip,
        "region": ip.region,
        "created_at": rfc3339(ip.created_at),
        "shared": ip.shared,
        "service_name": ip.service_name,
        "egress": false,
        "network": ip.network.as_ref().map(|n| json!({"name": n, "org_slug": org})),
    })
}

pub(crate) async fn list(
    State(sh): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(app): Path<String>,
) -> ApiResult {
    let world = lock(&sh.world);
    let a = app_for(&world, &caller, &app)?;
    let ips: Vec<Value> = a.ips.iter().map(|i| ip_json(i, &a.org)).collect();
    Ok(Json(json!({"ips": ips})).into_response())
}

/// `POST /v1/apps/{app}/ip_assignments` `{"type": "v4|v6|shared_v4|private_v6", ...}`.
/// Egress types exist in the spec but are not simulated (400).
pub(crate) async fn create(
    State(sh): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(app): Path<String>,
    body: Bytes,
) -> ApiResult {
    let body = parse_body(&body, false)?;
    let kind = body
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("type is required"))?
        .to_string();
    let opt = |k: &str| {
        body.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (region, service_name, network) = (opt("region"), opt("service_name"), opt("network"));
    let repeat = lock(&sh.faults).faults.ip_repeat;
    let mut world = lock(&sh.world);
    world.ip_seq += 1;
    let n = world.ip_seq;
    let a = app_for_mut(&mut world, &caller, &app)?;
    let (ip, shared, net) = match kind.as_str() {
        "v4" => (
            format!("137.66.{}.{}", (n / 250) % 250, n % 250 + 1),
            false,
            None,
        ),
        "v6" => (format!("2a09:8280:1::{n:x}"), false, None),
        "shared_v4" => (SHARED_V4.to_string(), true, None),
        "private_v6" => (
            format!("fdaa:0:{:x}:0:1::{n:x}", a.numeric_id & 0xffff),
            false,
            Some(network),
        ),
        other => {
            return Err(ApiError::bad_request(format!(
                "unsupported IP type {other:?}: expected v4, v6, shared_v4 or private_v6"
            )));
        }
    };
    // A repeat of a type the app has (REFERENCE §5): answered as configured.
    if let Some(existing) = a.ips.iter().find(|i| i.kind == kind) {
        match repeat {
            IpRepeat::Conflict => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!("an IP of type {kind} is already allocated to this app"),
                ));
            }
            IpRepeat::Unprocessable => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("an IP of type {kind} is already allocated to this app"),
                ));
            }
            IpRepeat::Allocate if shared => {
                return Ok(Json(ip_json(existing, &a.org)).into_response());
            }
            IpRepeat::Allocate => {}
        }
    }
    let entry = IpEntry {
        ip,
        kind,
        region: if region.is_empty() {
            "global".into()
        } else {
            region
        },
        shared,
        service_name,
        network: net,
        created_at: Utc::now(),
    };
    let body = ip_json(&entry, &a.org);
    a.ips.push(entry);
    drop(world);
    sh.notify();
    Ok(Json(body).into_response())
}

/// `DELETE /v1/apps/{app}/ip_assignments/{ip}` → 204.
pub(crate) async fn destroy(
    State(sh): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path((app, ip)): Path<(String, String)>,
) -> ApiResult {
    let mut world = lock(&sh.world);
    let a = app_for_mut(&mut world, &caller, &app)?;
    let before = a.ips.len();
    a.ips.retain(|i| i.ip != ip);
    if a.ips.len() == before {
        return Err(ApiError::not_found("ip assignment not found"));
    }
    drop(world);
    sh.notify();
    Ok(StatusCode::NO_CONTENT.into_response())
}
