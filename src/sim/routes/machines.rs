//! `/v1/apps/{app}/machines`: create, list, get, update [S1][S4].

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::leases;
use super::validate::validate_config;
use super::{
    ApiError, ApiResult, Caller, app_for, app_for_mut, decode_cursor, encode_cursor, parse_body,
    parse_query, query_bool, query_get, query_limit,
};
use crate::sim::lifecycle::{self, Step};
use crate::sim::replica;
use crate::sim::server::{Shared, lock};
use crate::sim::state::{App, Machine, new_machine_id, new_version_id, rfc3339, sha256_hex};

fn image_ref(image: &str) -> Value {
    let (registry, rest) = match image.split_once('/') {
        Some((first, rest)) if first.contains('.') || first.contains(':') => (first, rest),
        _ => ("docker-hub-mirror.fly.io", image),
    };
    let (repository, tag) = match rest.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r, t),
        _ => (rest, "latest"),
    };
    json!({
        "registry": registry,
        "repository": repository,
        "tag": tag,
        "digest": format!("sha256:{}", sha256_hex(image)),
        "labels": {},
    })
}

/// Machine JSON (§3.5). `summary` omits config, checks, events, host_status [S1]. The create
/// answer adds `nonce`, a read with `include_leases` adds `lease`.
pub(crate) fn machine_json(m: &Machine, summary: bool) -> Value {
    let mut v = json!({
        "id": m.id,
        "name": m.name,
        "state": m.state,
        "region": m.region,
        "version": m.version,
        "instance_id": m.version,
        "private_ip": m.private_ip,
        "created_at": rfc3339(m.created_at),
        "updated_at": rfc3339(m.updated_at),
    });
    if !summary {
        v["config"] = m.config.clone();
        v["incomplete_config"] = Value::Null;
        v["image_ref"] = image_ref(m.image());
        v["host_status"] = Value::from("ok");
        v["cordoned"] = Value::from(false);
        v["host_features"] = json!([]);
        v["events"] = json!(m.events.iter().rev().take(20).collect::<Vec<_>>());
        // `checks` may be absent until the first check runs [S1].
        if !m.checks.is_empty() {
            v["checks"] = json!(m.checks);
        }
    }
    v
}

fn get_bool(body: &Value, key: &str) -> Result<bool, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::bad_request(format!("{key} must be a boolean"))),
    }
}

fn get_str<'a>(body: &'a Value, key: &str) -> Result<Option<&'a str>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::bad_request(format!("{key} must be a string"))),
    }
}

/// `min_secrets_version` and `skip_secrets` of a create/update [S1]. A machine may only boot with
/// app secrets at least `min_secrets_version` (REFERENCE §3.2, §4.1): a version the app does not
/// have yet is refused, nothing created or changed.
fn secrets_request(app: &App, body: &Value) -> Result<(Option<u64>, bool), ApiError> {
    let skip = get_bool(body, "skip_secrets")?;
    match body.get("min_secrets_version") {
        None | Some(Value::Null) => Ok((None, skip)),
        Some(v) => match v.as_u64() {
            Some(n) if n <= app.secrets_version => Ok((Some(n), skip)),
            Some(n) => Err(ApiError::bad_request(format!(
                "min_secrets_version {n} is newer than the app's secrets version {}",
                app.secrets_version
            ))),
            None => Err(ApiError::bad_request(
                "min_secrets_version must be a non-negative integer",
            )),
        },
    }
}

fn take_config(body: &mut Value) -> Result<Value, ApiError> {
    let mut cfg = match body.get_mut("config").map(Value::take) {
        Some(c @ Value::Object(_)) => c,
        None | Some(Value::Null) => return Err(ApiError::bad_request("config is required")),
        Some(_) => return Err(ApiError::bad_request("config must be an object")),
    };
    validate_config(&mut cfg)?;
    Ok(cfg)
}

const ADJECTIVES: &[&str] = &[
    "quiet", "bold", "misty", "late", "young", "icy", "wild", "calm",
];
const NOUNS: &[&str] = &[
    "river", "sun", "leaf", "dawn", "frost", "pine", "sea", "moon",
];

fn machine_name(id: &str) -> String {
    let n = usize::from_str_radix(&id[..4.min(id.len())], 16).unwrap_or(0);
    format!(
        "{}-{}-{}",
        ADJECTIVES[n % ADJECTIVES.len()],
        NOUNS[(n / 8) % NOUNS.len()],
        n % 10_000
    )
}

/// `POST /v1/apps/{app}/machines`: 200 Machine in `created`, then `starting` -> `started`.
/// Not idempotent: every call makes a new machine [S4][S15].
pub(crate) async fn create(
    State(sh): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(app_name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let mut body = parse_body(&body, false)?;
    let cfg = take_config(&mut body)?;
    let region = match get_str(&body, "region")? {
        Some(r) if sh.regions.iter().any(|x| x == r) => r.to_string(),
        Some(r) => return Err(ApiError::bad_request(format!("unknown region {r:?}"))),
        None => sh.default_region.clone(),
    };
    if lock(&sh.faults)
        .faults
        .no_capacity_regions
        .contains(&region)
    {
        // Capacity failures carry status insufficient_capacity; retry or pick another region [S1][S4].
        return Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            format!("insufficient resources to create new machine in region {region}"),
        )
        .with_status("insufficient_capacity"));
    }
    let name = get_str(&body, "name")?.map(str::to_string);
    let skip_launch = get_bool(&body, "skip_launch")?;
    let lease_ttl = match body.get("lease_ttl") {
        None | Some(Value::Null) => None,
        Some(v) if v.as_u64().is_some_and(|t| t > 0) => v.as_u64(),
        Some(_) => {
            return Err(ApiError::bad_request(
                "lease_ttl must be a positive integer",
            ));
        }
    };
    let list_lag = sh.timings().machine_list_lag;
    let listed_at = Instant::now() + list_lag;
    let keep_past = *lock(&sh.stale_list_reads) > 0.0;

    let mut world = lock(&sh.world);
    let seq = world.next_seq();
    let org_num = world
        .apps
        .get(&app_name)
        .and_then(|a| world.orgs.get(&a.org))
        .map(|o| o.numeric_id)
        .unwrap_or_default();
    let app = app_for_mut(&mut world, &caller, &app_name)?;
    if app.deleting {
        return Err(ApiError::app_not_found());
    }
    let (min_secrets_version, skip_secrets) = secrets_request(app, &body)?;
    let id = new_machine_id();
    let now = chrono::SubsecRound::trunc_subsecs(sh.clock.now(), 3);
    let mut m = Machine {
        name: name.unwrap_or_else(|| machine_name(&id)),
        id: id.clone(),
        seq,
        region,
        state: String::new(),
        version: new_version_id(),
        private_ip: format!("fdaa:0:{:x}:a7b:{:x}:{}:2", org_num & 0xffff, seq, &id[..4]),
        config: cfg,
        history: Vec::new(),
        checks: Vec::new(),
        events: Vec::new(),
        created_at: now,
        updated_at: now,
        listed_at,
        generation: 1,
        lease: None,
        min_secrets_version,
        skip_secrets,
        booted_secrets_version: None,
        restarts: 0,
        past: keep_past.then(|| replica::past(list_lag)),
        clock: sh.clock.clone(),
        host_skew: chrono::TimeDelta::zero(),
    };
    m.set_state("created", "launch", "user");
    let mut json = machine_json(&m, false);
    if let Some(ttl) = lease_ttl {
        // `lease_ttl` takes a lease on the new machine; only this answer carries its nonce [S1].
        let lease = leases::acquire(&mut m, None, &caller.owner, "", Duration::from_secs(ttl))?;
        json["nonce"] = Value::from(lease.nonce);
    }
    app.machines.insert(id.clone(), m);
    drop(world);
    if !skip_launch {
        lifecycle::schedule(&sh, &app_name, &id, 1, Step::Boot);
    }
    sh.notify();
    Ok(Json(json).into_response())
}

/// `GET /v1/apps/{app}/machines` with `include_deleted`, `region`, `state`, `summary`,
/// `metadata.<k>=<v>` (all must match), `limit` + `cursor` (next in `fly-next-cursor`) [S1].
pub(crate) async fn list(
    State(sh): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(app_name): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let q = parse_query(raw.as_deref());
    let include_deleted = query_bool(&q, "include_deleted")?;
    let summary = query_bool(&q, "summary")?;
    let limit = query_limit(&q, 1000)?;
    let after = match query_get(&q, "cursor").filter(|c| !c.is_empty()) {
        Some(_) if limit.is_none() => return Err(ApiError::bad_request("cursor requires limit")),
        Some(c) => decode_cursor(c)?,
        None => 0,
    };
    let states: Vec<&str> = query_get(&q, "state")
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let region = query_get(&q, "region").filter(|r| !r.is_empty());
    let meta: Vec<(&str, &str)> = q
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("metadata.")?, v.as_str())))
        .collect();
    let now = Instant::now();
    let lag = replica::read_lag(&sh);
    let world = lock(&sh.world);
    let app = app_for(&world, &caller, &app_name)?;
    let mut ms: Vec<&Machine> = app
        .machines
        .values()
        .filter(|m| now >= m.listed_at) // list reads lag writes [S15]
        .map(|m| m.as_of(lag))
        .filter(|m| include_deleted || m.state != "destroyed") // [S25]
        .filter(|m| states.is_empty() || states.contains(&m.state.as_str()))
        .filter(|m| region.is_none_or(|r| r == m.region))
        .filter(|m| meta.iter().all(|(k, v)| m.metadata(k) == Some(*v)))
        .filter(|m| m.seq > after)
        .collect();
    ms.sort_by_key(|m| m.seq);
    let mut next = None;
    if let Some(l) = limit
        && ms.len() > l
    {
        ms.truncate(l);
        next = ms.last().map(|m| encode_cursor(m.seq));
    }
    let body: Vec<Value> = ms.iter().map(|m| machine_json(m, summary)).collect();
    let mut resp = Json(body).into_response();
    if let Some(c) = next.and_then(|c| HeaderValue::from_str(&c).ok()) {
        resp.headers_mut().insert("fly-next-cursor", c);
    }
    Ok(resp)
}

/// `GET /v1/apps/{app}/machines/{id}[?version=]`. A destroyed machine still reads back with
/// `state: destroyed`; acting on it is what gives "machine not found" [S25].
pub(crate) async fn show(
    State(sh): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path((app_name, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let q = parse_query(raw.as_deref());
    let world = lock(&sh.world);
    let app = app_for(&world, &caller, &app_name)?;
    let m = app
        .machines
        .get(&id)
        .ok_or_else(ApiError::machine_not_found)?;
    match query_get(&q, "version").filter(|v| !v.is_empty() && *v != m.version) {
        None => {
            let mut v = machine_json(m, false);
            if query_bool(&q, "include_leases")?
                && let Some(l) = m.active_lease()
            {
                v["lease"] = leases::lease_json(l, false);
            }
            Ok(Json(v).into_response())
        }
        Some(v) => {
            let (_, cfg) = m
                .history
                .iter()
                .find(|(hv, _)| hv == v)
                .ok_or_else(|| ApiError::not_found("machine version not found"))?;
            let mut old = m.clone();
            old.config = cfg.clone();
            old.version = v.to_string();
            old.state = "replaced".into();
            old.checks.clear();
            Ok(Json(machine_json(&old, false)).into_response())
        }
    }
}

/// `POST /v1/apps/{app}/machines/{id}`: full config; stale `current_version` → 409 and nothing
/// applied; a new `version` each time; a running machine reboots through `replacing` [S1][S4][S6b].
pub(crate) async fn update(
    State(sh): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path((app_name, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let mut body = parse_body(&body, false)?;
    let mut world = lock(&sh.world);
    let app = app_for_mut(&mut world, &caller, &app_name)?;
    let secrets_ok = secrets_request(app, &body);
    let m = app
        .machines
        .get_mut(&id)
        .filter(|m| m.state != "destroyed")
        .ok_or_else(ApiError::machine_not_found)?;
    if m.state == "destroying" {
        return Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "failed_precondition: machine is being destroyed",
        ));
    }
    leases::check(m, leases::nonce(&headers))?;
    if let Some(cv) = get_str(&body, "current_version")?
        && cv != m.version
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "current_version {cv} does not match the machine's version {}",
                m.version
            ),
        ));
    }
    let cfg = take_config(&mut body)?;
    let (min_secrets_version, skip_secrets) = secrets_ok?;
    if let Some(r) = get_str(&body, "region")?
        && r != m.region
    {
        return Err(ApiError::bad_request("region cannot be changed"));
    }
    if let Some(n) = get_str(&body, "name")?
        && n != m.name
    {
        return Err(ApiError::bad_request("name cannot be changed"));
    }
    let skip_launch = get_bool(&body, "skip_launch")?;
    m.remember();
    let old_version = std::mem::replace(&mut m.version, new_version_id());
    let old_cfg = std::mem::replace(&mut m.config, cfg);
    m.history.push((old_version, old_cfg));
    m.min_secrets_version = min_secrets_version;
    m.skip_secrets = skip_secrets;
    m.restarts = 0;
    m.generation += 1;
    let running = matches!(
        m.state.as_str(),
        "started" | "starting" | "replacing" | "updating" | "stopping"
    );
    let relaunch = running || !skip_launch;
    if relaunch {
        m.checks.clear();
        let state = if running { "replacing" } else { "updating" };
        m.set_state(state, "update", "user");
    } else {
        m.updated_at = m.now();
    }
    let (json, generation) = (machine_json(m, false), m.generation);
    drop(world);
    if relaunch {
        lifecycle::schedule(&sh, &app_name, &id, generation, Step::Replaced);
    }
    sh.notify();
    Ok(Json(json).into_response())
}
