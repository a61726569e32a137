//! `/v1/apps/{app}/secrets` [S1][S9][S28]: names and digests out, values only on request.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use chrono::Utc;
use serde_json::{Value, json};

use super::{
    ApiError, ApiResult, Caller, app_for, app_for_mut, parse_body, parse_query, query_bool,
};
use crate::sim::server::{Shared, lock};
use crate::sim::state::{App, SecretEntry, rfc3339, sha256_hex};

fn valid_secret_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn secrets_json(app: &App, show: bool) -> Vec<Value> {
    app.secrets
        .iter()
        .map(|(name, s)| {
            let mut v = json!({
                "name": name,
                "digest": &sha256_hex(&s.value)[..16],
                "created_at": rfc3339(s.created_at),
                "updated_at": rfc3339(s.updated_at),
            });
            if show {
                v["value"] = Value::from(s.value.as_str());
            }
            v
        })
        .collect()
}

/// `GET /v1/apps/{app}/secrets[?show_secrets=true]`.
pub(crate) async fn list(
    State(sh): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(app): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let q = parse_query(raw.as_deref());
    let show = query_bool(&q, "show_secrets")?;
    let world = lock(&sh.world);
    let a = app_for(&world, &caller, &app)?;
    Ok(Json(json!({"secrets": secrets_json(a, show)})).into_response())
}

/// `POST /v1/apps/{app}/secrets` `{"values": {"K": "v", "OLD": null}}`: null deletes; every write
/// bumps the app's secrets `version` (also sent as deprecated `Version`) [S1][S29].
pub(crate) async fn set(
    State(sh): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(app): Path<String>,
    body: Bytes,
) -> ApiResult {
    let body = parse_body(&body, false)?;
    let values = body
        .get("values")
        .and_then(Value::as_object)
        .ok_or_else(|| ApiError::bad_request("values must be an object of secret names"))?;
    for (k, v) in values {
        if !valid_secret_name(k) {
            return Err(ApiError::bad_request(format!("invalid secret name {k:?}")));
        }
        if !(v.is_string() || v.is_null()) {
            return Err(ApiError::bad_request(format!(
                "value of {k} must be a string or null"
            )));
        }
    }
    let lag = sh.secrets_lag();
    let mut world = lock(&sh.world);
    let a = app_for_mut(&mut world, &caller, &app)?;
    let now = Utc::now();
    for (k, v) in values {
        match v.as_str() {
            None => {
                a.secrets.remove(k);
            }
            Some(val) => {
                let e = a.secrets.entry(k.clone()).or_insert_with(|| SecretEntry {
                    value: String::new(),
                    created_at: now,
                    updated_at: now,
                });
                e.value = val.to_string();
                e.updated_at = now;
            }
        }
    }
    a.bump_secrets_version(lag);
    let body = json!({
        "secrets": secrets_json(a, false),
        "version": a.secrets_version,
        "Version": a.secrets_version,
    });
    drop(world);
    sh.notify();
    Ok(Json(body).into_response())
}
