//! Machine actions: stop, start, destroy, wait [S1][S4][S6b].

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::leases;
use super::validate::{SIGNALS, parse_duration};
use super::{
    ApiError, ApiResult, Caller, app_for, app_for_mut, parse_body, parse_query, query_bool,
};
use crate::sim::lifecycle::{self, Step};
use crate::sim::server::{Shared, lock};
use crate::sim::state::Machine;

fn precondition(msg: String) -> ApiError {
    ApiError::new(StatusCode::PRECONDITION_FAILED, msg)
}

/// Runs `f` on a live (not destroyed) machine of a visible app, unless another holder's lease
/// forbids it (REFERENCE §3.10), then schedules what `f` returns.
fn act(
    sh: &Arc<Shared>,
    caller: &Caller,
    (app, id): (&str, &str),
    headers: &HeaderMap,
    f: impl FnOnce(&mut Machine, u64) -> Result<(Value, Option<Step>), ApiError>,
) -> ApiResult {
    let secrets_lag = sh.secrets_lag();
    let mut world = lock(&sh.world);
    let a = app_for_mut(&mut world, caller, app)?;
    let secrets_version = a.replica_secrets_version(secrets_lag);
    // Acting on a destroyed machine gives "machine not found" [S25].
    let m = a
        .machines
        .get_mut(id)
        .filter(|m| m.state != "destroyed")
        .ok_or_else(ApiError::machine_not_found)?;
    leases::check(m, leases::nonce(headers))?;
    m.remember();
    let (body, step) = f(m, secrets_version)?;
    let generation = m.generation;
    drop(world);
    if let Some(step) = step {
        lifecycle::schedule(sh, app, id, generation, step);
    }
    sh.notify();
    Ok(Json(body).into_response())
}

/// `POST .../stop`, optional body `{"signal", "timeout"}` [S1][S4]. Stopping an already parked
/// machine is a no-op.
pub(crate) async fn stop(
    State(sh): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let body = parse_body(&body, true)?;
    match body.get("signal") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if SIGNALS.contains(&s.as_str()) => {}
        Some(s) => return Err(ApiError::bad_request(format!("invalid signal {s}"))),
    }
    if let Some(t) = body.get("timeout").filter(|t| !t.is_null())
        && parse_duration(t).is_none()
    {
        return Err(ApiError::bad_request(format!("invalid timeout {t}")));
    }
    act(&sh, &caller, (&app, &id), &headers, |m, _| {
        match m.state.as_str() {
            "started" | "starting" | "replacing" | "updating" => {
                m.generation += 1;
                m.set_state("stopping", "stop", "user");
                Ok((json!({"ok": true}), Some(Step::Stopped)))
            }
            "destroying" => Err(precondition(
                "failed_precondition: unable to stop machine, it is being destroyed".into(),
            )),
            _ => Ok((json!({"ok": true}), None)),
        }
    })
}

/// `POST .../start`; fly-go decodes `{message, status, previous_state}` [S9].
pub(crate) async fn start(
    State(sh): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    act(&sh, &caller, (&app, &id), &headers, |m, secrets_version| {
        let prev = m.state.clone();
        match prev.as_str() {
            "stopped" | "created" | "suspended" | "failed" => {
                m.generation += 1;
                m.restarts = 0;
                // A (re)start boots again and reads the app's current secrets [S3][S7].
                m.boot(secrets_version, "start", "user");
                Ok((json!({"previous_state": prev}), Some(Step::Started)))
            }
            "started" | "starting" => Ok((json!({"previous_state": prev}), None)),
            other => Err(precondition(format!(
                "failed_precondition: unable to start machine, currently {other}"
            ))),
        }
    })
}

/// `DELETE .../{id}[?force=true|?kill=true]`: parked machines go at once; a running one needs
/// force (spec/docs) or kill (fly-go) [S1][S9][S26].
pub(crate) async fn destroy(
    State(sh): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path((app, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> ApiResult {
    let q = parse_query(raw.as_deref());
    let force = query_bool(&q, "force")? || query_bool(&q, "kill")?;
    act(&sh, &caller, (&app, &id), &headers, |m, _| {
        match m.state.as_str() {
        "destroying" => Ok((json!({"ok": true}), None)),
        "stopped" | "suspended" | "created" | "failed" => {
            m.generation += 1;
            m.set_state("destroying", "destroy", "user");
            Ok((json!({"ok": true}), Some(Step::Destroyed)))
        }
        _ if force => {
            m.generation += 1;
            m.set_state("destroying", "destroy", "user");
            Ok((json!({"ok": true}), Some(Step::Destroyed)))
        }
        _ => Err(precondition(
            "failed_precondition: unable to destroy machine, not currently stopped or suspended"
                .into(),
        )),
    }
    })
}

const WAIT_STATES: &[&str] = &[
    "started",
    "stopped",
    "suspended",
    "destroyed",
    "failed",
    "settled",
];
const SETTLED: &[&str] = &[
    "created",
    "started",
    "stopped",
    "suspended",
    "failed",
    "destroyed",
];

/// `GET .../wait?state=&timeout=&version=&from_event_id=`: long-poll; 200 `{ok, state, version,
/// event_id}`, 408 on timeout, 400 bad params. Timeout in seconds, default and maximum 60
/// [S1][S4][S9].
pub(crate) async fn wait(
    State(sh): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path((app, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let q = parse_query(raw.as_deref());
    let mut states: Vec<String> = Vec::new();
    for (k, v) in &q {
        if k == "state" {
            states.extend(
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            );
        }
    }
    if states.is_empty() {
        states.push("started".into());
    }
    if let Some(bad) = states.iter().find(|s| !WAIT_STATES.contains(&s.as_str())) {
        return Err(ApiError::bad_request(format!("invalid state {bad:?}")));
    }
    let timeout = match super::query_get(&q, "timeout").filter(|t| !t.is_empty()) {
        None => 60,
        Some(t) => match t.parse::<u64>() {
            Ok(n) => n.min(60),
            Err(_) => {
                return Err(ApiError::bad_request(format!(
                    "invalid timeout {t:?}: expected whole seconds"
                )));
            }
        },
    };
    let version = super::query_get(&q, "version")
        .or_else(|| super::query_get(&q, "instance_id"))
        .filter(|v| !v.is_empty())
        .map(str::to_string);
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let mut changed = sh.changed.subscribe();
    let mut shutdown = sh.shutdown.subscribe();
    // Only events after this one count [S1]; without `from_event_id`, events after the call began.
    // A wait answers for a state the machine reached meanwhile even if it has left it since: a
    // process that exits at once is `started` for a moment, and the waiter saw it boot.
    let mut from = super::query_get(&q, "from_event_id")
        .filter(|e| !e.is_empty())
        .map(str::to_string);
    let wanted = |state: &str| {
        states
            .iter()
            .any(|s| s == state || (s == "settled" && SETTLED.contains(&state)))
    };
    loop {
        {
            let world = lock(&sh.world);
            let a = app_for(&world, &caller, &app)?;
            let m = a
                .machines
                .get(&id)
                .ok_or_else(ApiError::machine_not_found)?;
            if let Some(v) = &version
                && *v != m.version
            {
                // flyd answers 400 "currently replaced" for a version an update replaced, which
                // flyctl retries after a fresh GET [S15].
                return Err(if m.history.iter().any(|(hv, _)| hv == v) {
                    ApiError::bad_request(format!("machine {id} version {v} is currently replaced"))
                } else {
                    ApiError::not_found(format!("machine {id} version {v} not found"))
                });
            }
            let from_id = from
                .get_or_insert_with(|| m.events.last().map(|e| e.id.clone()).unwrap_or_default());
            let since = m
                .events
                .iter()
                .position(|e| e.id == *from_id)
                .map_or(m.events.len(), |i| i + 1);
            let reached = if wanted(&m.state) {
                m.events.last().map(|e| (m.state.as_str(), e.id.as_str()))
            } else {
                m.events[since..]
                    .iter()
                    .find(|e| wanted(&e.status))
                    .map(|e| (e.status.as_str(), e.id.as_str()))
            };
            if let Some((state, event_id)) = reached {
                let body = json!({
                    "ok": true,
                    "state": state,
                    "version": m.version,
                    "event_id": event_id,
                });
                return Ok(Json(body).into_response());
            }
        }
        tokio::select! {
            r = changed.changed() => if r.is_err() { break },
            _ = tokio::time::sleep_until(deadline) => break,
            _ = shutdown.changed() => {
                return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "simulator shutting down"));
            }
        }
    }
    Err(ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        format!(
            "deadline_exceeded: machine did not reach state {} within {timeout}s",
            states.join(",")
        ),
    ))
}
