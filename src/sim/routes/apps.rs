//! `/v1/apps` [S1][S3]: create, get, list, delete.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{
    ApiError, ApiResult, Caller, app_for, parse_body, parse_query, query_get, query_limit,
};
use crate::sim::lifecycle;
use crate::sim::server::{Shared, lock};
use crate::sim::state::{App, World};

/// §2.1: lowercase letters, digits and `-`, not starting/ending with `-`, at most 63 chars
/// (one DNS label, since the name becomes `<name>.fly.dev`) [S12][S20].
pub(crate) fn valid_app_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

pub(crate) fn app_json(world: &World, app: &App) -> Value {
    let org = world.orgs.get(&app.org);
    json!({
        "id": app.id,
        "name": app.name,
        "status": app.status(),
        "organization": {
            "name": org.map(|o| o.name.as_str()).unwrap_or(&app.org),
            "slug": app.org,
            "internal_numeric_id": org.map(|o| o.numeric_id).unwrap_or_default(),
        },
        "network": app.network,
        "network_cidr": format!("fdaa:0:{:x}::/48", app.numeric_id & 0xffff),
        "machine_count": app.machine_count(),
        "volume_count": 0,
        "internal_numeric_id": app.numeric_id,
    })
}

fn str_field<'a>(body: &'a Value, key: &str) -> Result<Option<&'a str>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(ApiError::bad_request(format!("{key} must be a string"))),
    }
}

/// Inserts a new app (also used by `seed_app`), visible after the post-create window.
pub(crate) fn insert_app(sh: &Shared, world: &mut World, org: &str, name: &str, network: &str) {
    let t = sh.timings();
    let now = Instant::now();
    let seq = world.next_seq();
    world.ensure_org(org, org);
    world.apps.insert(
        name.to_string(),
        App {
            id: crate::sim::state::new_version_id().to_lowercase(),
            name: name.to_string(),
            org: org.to_string(),
            network: network.to_string(),
            numeric_id: 500_000 + seq,
            seq,
            created_at: Utc::now(),
            visible_at: now + t.app_visible_after,
            listed_at: now + t.apps_list_lag,
            deleting: false,
            machines: Default::default(),
            secrets: Default::default(),
            secrets_version: 0,
            secrets_history: vec![(now, 0)],
            ips: Vec::new(),
            idempotency_key: None,
        },
    );
    world.apps_by_seq.insert(seq, name.to_string());
}

fn created(app: &App) -> Response {
    let body = json!({"id": app.id, "created_at": app.created_at.timestamp_millis()});
    let mut resp = (StatusCode::CREATED, Json(body)).into_response();
    // Path-scoped affinity cookie, as fly-go's cookie-jar fixture models it [S10].
    let cookie = format!(
        "fly-affinity={}; Path=/v1/apps/{}; HttpOnly",
        super::affinity_value(app),
        app.name
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert("set-cookie", v);
    }
    resp
}

/// `POST /v1/apps[?wait=true]` [S1][S3][S9]. `wait` is accepted and ignored: the post-create window
/// still applies, since flyctl polls `GET` afterwards anyway [S9][S12].
pub(crate) async fn create(
    State(sh): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult {
    let body = parse_body(&body, false)?;
    // Current spec says `name`; older docs/SDKs send `app_name` [S1][S3][S16].
    let name = match str_field(&body, "name")? {
        Some(n) => Some(n),
        None => str_field(&body, "app_name")?,
    };
    let idem = str_field(&body, "idempotency_key")?.filter(|k| !k.is_empty());
    let org_slug = str_field(&body, "org_slug")?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request("org_slug is required"))?;
    let org = if org_slug == "personal" {
        caller.orgs.first().cloned().unwrap_or_default()
    } else {
        org_slug.to_string()
    };
    if !caller.can_access(&org) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("unauthorized: token has no access to organization {org_slug}"),
        ));
    }
    let network = str_field(&body, "network")?.unwrap_or_default().to_string();

    let mut world = lock(&sh.world);
    // Idempotency key (new in the spec [S1]): same key + same or no name returns the first app;
    // same key + a different name is rejected.
    if let Some(key) = idem
        && let Some(prev) = world
            .apps
            .values()
            .find(|a| a.org == org && a.idempotency_key.as_deref() == Some(key))
    {
        if name.is_none_or(|n| n == prev.name) {
            return Ok(created(prev));
        }
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key was already used with a different app name",
        ));
    }
    let name = name.ok_or_else(|| ApiError::bad_request("name is required"))?;
    if !valid_app_name(name) {
        return Err(ApiError::bad_request(format!(
            "invalid app name {name:?}: use 1-63 lowercase letters, digits and dashes, \
             not starting or ending with a dash"
        )));
    }
    // Names are global across all customers; the answer is the same whoever holds it, including
    // an app still being deleted [S3][S13][S14].
    if world.apps.contains_key(name) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Name has already been taken",
        )
        .with_status("name_taken"));
    }
    insert_app(&sh, &mut world, &org, name, &network);
    let app = world
        .apps
        .get_mut(name)
        .ok_or_else(ApiError::app_not_found)?;
    app.idempotency_key = idem.map(str::to_string);
    let resp = created(app);
    drop(world);
    sh.notify();
    Ok(resp)
}

/// `GET /v1/apps/{name}`: 200 ours, 403 someone else's, 404 free or not yet propagated [S9].
pub(crate) async fn show(
    State(sh): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult {
    let world = lock(&sh.world);
    let app = app_for(&world, &caller, &name)?;
    Ok(Json(app_json(&world, app)).into_response())
}

/// Position in an app listing plus what its first page fixed: the last creation number it covers
/// and the `total_apps` it counted.
struct AppsCursor {
    after: u64,
    upto: u64,
    total: usize,
}

impl AppsCursor {
    fn encode(&self) -> String {
        format!("a1.{:x}.{:x}.{:x}", self.after, self.upto, self.total)
    }

    fn decode(c: &str) -> Result<AppsCursor, ApiError> {
        let bad = || ApiError::bad_request("invalid cursor");
        let parts: Vec<&str> = c.strip_prefix("a1.").ok_or_else(bad)?.split('.').collect();
        let [after, upto, total] = parts.as_slice() else {
            return Err(bad());
        };
        let hex = |s: &str| u64::from_str_radix(s, 16).map_err(|_| bad());
        Ok(AppsCursor {
            after: hex(after)?,
            upto: hex(upto)?,
            total: usize::try_from(hex(total)?).map_err(|_| bad())?,
        })
    }
}

/// `GET /v1/apps?org_slug=&limit=&cursor=` [S1]. Without `limit` everything comes back.
pub(crate) async fn list(
    State(sh): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let q = parse_query(raw.as_deref());
    let org_slug = query_get(&q, "org_slug")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request("org_slug is required"))?;
    let org = if org_slug == "personal" {
        caller.orgs.first().cloned().unwrap_or_default()
    } else {
        org_slug.to_string()
    };
    if !caller.can_access(&org) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("unauthorized: token has no access to organization {org_slug}"),
        ));
    }
    let limit = query_limit(&q, 5000)?;
    let cursor = match query_get(&q, "cursor").filter(|c| !c.is_empty()) {
        Some(_) if limit.is_none() => {
            return Err(ApiError::bad_request("cursor requires limit"));
        }
        Some(c) => Some(AppsCursor::decode(c)?),
        None => None,
    };
    let now = Instant::now();
    let mut world = lock(&sh.world);
    // The first page fixes what the listing covers: later pages only include apps that existed
    // then, and `total_apps` is counted once, then repeated, so apps deleted meanwhile stay
    // counted [S1].
    let snapshot = match &cursor {
        Some(c) => (c.upto, c.total),
        None => {
            let total = world
                .apps
                .values()
                .filter(|a| a.org == org && now >= a.listed_at)
                .count();
            (world.seq, total)
        }
    };
    let after = cursor.as_ref().map_or(0, |c| c.after);
    // Walk the creation-order index from the cursor and stop one past the page: a page costs its
    // own size (plus other orgs' and gone apps' entries on the way), not the fleet.
    let wanted = limit.map_or(usize::MAX, |l| l.saturating_add(1));
    let mut seqs = Vec::new();
    let mut stale = Vec::new();
    for (&seq, _) in world
        .apps_by_seq
        .range(after.saturating_add(1)..=snapshot.0)
    {
        if seqs.len() >= wanted {
            break;
        }
        match world.app_by_seq(seq) {
            None => stale.push(seq),
            Some(a) if a.org == org && now >= a.listed_at => seqs.push(seq),
            Some(_) => {}
        }
    }
    for seq in stale {
        world.apps_by_seq.remove(&seq);
    }
    let mut page: Vec<&App> = seqs.iter().filter_map(|s| world.app_by_seq(*s)).collect();
    let total = snapshot.1;
    let mut next = None;
    if let Some(l) = limit
        && page.len() > l
    {
        page.truncate(l);
        next = page.last().map(|a| {
            AppsCursor {
                after: a.seq,
                upto: snapshot.0,
                total,
            }
            .encode()
        });
    }
    let apps: Vec<Value> = page.iter().map(|a| app_json(&world, a)).collect();
    let mut body = json!({"total_apps": total, "apps": apps});
    if let Some(n) = next {
        body["next_cursor"] = Value::from(n);
    }
    Ok(Json(body).into_response())
}

/// `DELETE /v1/apps/{name}`: 202 at once, resources vanish later [S1][S3][S5].
pub(crate) async fn destroy(
    State(sh): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult {
    let mut world = lock(&sh.world);
    let app = super::app_for_mut(&mut world, &caller, &name)?;
    let first = !app.deleting;
    app.deleting = true;
    if first {
        for m in app.machines.values_mut() {
            if m.state != "destroyed" {
                m.generation += 1;
                m.set_state("destroying", "destroy", "user");
            }
        }
        let app_id = app.id.clone();
        drop(world);
        lifecycle::schedule_app_removal(&sh, name, app_id);
        sh.notify();
    }
    Ok(StatusCode::ACCEPTED.into_response())
}
