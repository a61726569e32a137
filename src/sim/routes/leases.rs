//! Machine leases, `/v1/apps/{app}/machines/{id}/lease` (REFERENCE §3.10) [S1][S4][S9]: an
//! exclusive lock on changing a machine, e.g. the one an operator's `fly deploy` takes.
//!
//! - `POST` `{"ttl": <s>, "description"}` (or `?ttl=`, as fly-go sends it) → 201 `Lease`; with the
//!   holder's nonce in `fly-machine-lease-nonce` it extends the lease; anyone else gets 409.
//! - `GET` → 200 `Lease` (the spec's flat shape), 404 when none is held.
//! - `DELETE` with the nonce header (required) → 200.
//!
//! While a lease is held, update, start, stop and destroy without its nonce answer 409, nothing
//! applied: the docs say so of updates, and fly-go forwards the nonce on the others too. A lease ends
//! at `expires_at` on its own. `GET` leaves the nonce out: a caller that could read it could act
//! under someone else's lease, and no source says Fly hands it out.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{
    ApiError, ApiResult, Caller, app_for, app_for_mut, parse_body, parse_query, query_get,
};
use crate::sim::server::{Shared, lock};
use crate::sim::state::{Lease, Machine, rfc3339};

pub(crate) const NONCE_HEADER: &str = "fly-machine-lease-nonce";

pub(crate) fn nonce(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(NONCE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|n| !n.is_empty())
}

fn held_by_other(l: &Lease) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        format!(
            "lease currently held by {}, expires at {}",
            l.owner,
            rfc3339(l.expires_at)
        ),
    )
}

/// Nothing changes a leased machine but its holder: 409 unless `nonce` is the active lease's.
pub(crate) fn check(m: &Machine, nonce: Option<&str>) -> Result<(), ApiError> {
    match m.active_lease() {
        Some(l) if nonce != Some(l.nonce.as_str()) => Err(held_by_other(l)),
        _ => Ok(()),
    }
}

/// Takes (or, with the holder's nonce, extends) the lease on `m`.
pub(crate) fn acquire(
    m: &mut Machine,
    nonce: Option<&str>,
    owner: &str,
    description: &str,
    ttl: Duration,
) -> Result<Lease, ApiError> {
    check(m, nonce)?;
    // A year is as good as forever here, and keeps the clock arithmetic in range.
    let ttl = ttl.min(Duration::from_secs(365 * 86_400));
    let expires = Instant::now() + ttl;
    // On the platform's clock, like the `Date` the caller compares it with.
    let expires_at = m.clock.now() + chrono::Duration::from_std(ttl).unwrap_or_default();
    let lease = match m.active_lease() {
        Some(l) => Lease {
            expires,
            expires_at,
            ..l.clone()
        },
        None => Lease {
            nonce: uuid::Uuid::new_v4().simple().to_string(),
            owner: owner.to_string(),
            description: description.to_string(),
            expires,
            expires_at,
            version: m.version.clone(),
        },
    };
    m.lease = Some(lease.clone());
    Ok(lease)
}

/// A lease taken out of band by `owner`; its nonce, unless the machine is missing or leased.
pub(crate) fn take_out_of_band(
    sh: &Shared,
    app: &str,
    id: &str,
    owner: &str,
    ttl: Duration,
) -> Option<String> {
    let mut world = lock(&sh.world);
    let m = world
        .apps
        .get_mut(app)?
        .machines
        .get_mut(id)
        .filter(|m| m.state != "destroyed")?;
    if m.active_lease().is_some() {
        return None;
    }
    let lease = acquire(m, None, owner, "taken out of band", ttl).ok()?;
    drop(world);
    sh.notify();
    Some(lease.nonce)
}

pub(crate) fn end_out_of_band(sh: &Shared, app: &str, id: &str) -> bool {
    let mut world = lock(&sh.world);
    let Some(m) = world.apps.get_mut(app).and_then(|a| a.machines.get_mut(id)) else {
        return false;
    };
    let had = m.active_lease().is_some();
    m.lease = None;
    drop(world);
    sh.notify();
    had
}

/// The spec's flat `Lease` [S1]; `with_nonce` only for its holder.
pub(crate) fn lease_json(l: &Lease, with_nonce: bool) -> Value {
    let mut v = json!({
        "owner": l.owner,
        "description": l.description,
        "expires_at": l.expires_at.timestamp(),
        "version": l.version,
    });
    if with_nonce {
        v["nonce"] = Value::from(l.nonce.as_str());
    }
    v
}

fn live(m: Option<&mut Machine>) -> Result<&mut Machine, ApiError> {
    m.filter(|m| m.state != "destroyed")
        .ok_or_else(ApiError::machine_not_found)
}

pub(crate) async fn show(
    State(sh): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path((app, id)): Path<(String, String)>,
) -> ApiResult {
    let world = lock(&sh.world);
    let a = app_for(&world, &caller, &app)?;
    let m = a
        .machines
        .get(&id)
        .filter(|m| m.state != "destroyed")
        .ok_or_else(ApiError::machine_not_found)?;
    let l = m
        .active_lease()
        .ok_or_else(|| ApiError::not_found(format!("no lease found for machine {id}")))?;
    Ok(Json(lease_json(l, false)).into_response())
}

pub(crate) async fn create(
    State(sh): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path((app, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let body = parse_body(&body, true)?;
    let q = parse_query(raw.as_deref());
    let ttl = match (
        body.get("ttl").filter(|t| !t.is_null()),
        query_get(&q, "ttl"),
    ) {
        (Some(t), _) => t.as_u64(),
        (None, Some(t)) => t.parse::<u64>().ok(),
        (None, None) => None,
    }
    .filter(|t| *t > 0)
    .ok_or_else(|| ApiError::bad_request("ttl must be a positive number of seconds"))?;
    let description = body
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut world = lock(&sh.world);
    let a = app_for_mut(&mut world, &caller, &app)?;
    let m = live(a.machines.get_mut(&id))?;
    let lease = acquire(
        m,
        nonce(&headers),
        &caller.owner,
        description,
        Duration::from_secs(ttl),
    )?;
    drop(world);
    sh.notify();
    Ok((StatusCode::CREATED, Json(lease_json(&lease, true))).into_response())
}

pub(crate) async fn release(
    State(sh): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    let Some(n) = nonce(&headers) else {
        return Err(ApiError::bad_request(format!(
            "{NONCE_HEADER} header is required"
        )));
    };
    let mut world = lock(&sh.world);
    let a = app_for_mut(&mut world, &caller, &app)?;
    let m = live(a.machines.get_mut(&id))?;
    if m.active_lease().is_none() {
        return Err(ApiError::not_found(format!(
            "no lease found for machine {id}"
        )));
    }
    check(m, Some(n))?;
    m.lease = None;
    drop(world);
    sh.notify();
    Ok(Json(json!({"ok": true})).into_response())
}
