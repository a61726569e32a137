//! POST handlers: sign-in/out and the controls. Every control checks, in this order, that controls
//! are on (`ADMIN_TOKEN` set), that the request comes from this origin, that a session cookie
//! verifies and that the form's CSRF token is that session's; any failure answers 403 before anything
//! is read from or written to the database. The admin's name goes into the row (`created_by`,
//! `confirmed_by`) and into the log line.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use tracing::{info, warn};
use uuid::Uuid;

use super::auth::{self, Session};
use super::pages::{html_response, session, signin_page};
use super::{ConsoleState, unavailable};
use crate::db::breaker;
use crate::db::console_user::{self, Desired};

/// Longest reason accepted for an override.
const REASON_MAX: usize = 500;

fn form(body: &Bytes) -> HashMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

fn forbidden(why: &'static str) -> Response {
    (
        StatusCode::FORBIDDEN,
        [(header::CACHE_CONTROL, "no-store")],
        format!("forbidden: {why}"),
    )
        .into_response()
}

fn bad_request(why: String) -> Response {
    (StatusCode::BAD_REQUEST, format!("bad request: {why}")).into_response()
}

/// Why a control was refused before it did anything (small, so `Result`s stay cheap).
enum Refusal {
    Forbidden(&'static str),
    BadRequest(&'static str),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Forbidden(why) => forbidden(why),
            Refusal::BadRequest(why) => bad_request(why.to_string()),
        }
    }
}

/// The checks every control makes before touching anything; `Err` is the reply.
fn guard(
    state: &ConsoleState,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<Session, Refusal> {
    if state.keys.is_none() {
        return Err(Refusal::Forbidden(
            "controls are off (ADMIN_TOKEN is not set)",
        ));
    }
    if !auth::same_origin(headers) {
        warn!("console: control refused: cross-origin or origin-less request");
        return Err(Refusal::Forbidden("cross-origin request"));
    }
    let Some(session) = session(state, headers) else {
        return Err(Refusal::Forbidden("not signed in"));
    };
    let sent = form.get("csrf").map(String::as_str).unwrap_or("");
    if !auth::csrf_matches(&session, sent) {
        warn!(admin = %session.name, "console: control refused: missing or wrong CSRF token");
        return Err(Refusal::Forbidden("missing or wrong CSRF token"));
    }
    Ok(session)
}

fn user_id(form: &HashMap<String, String>) -> Result<Uuid, Refusal> {
    form.get("user_id")
        .and_then(|u| Uuid::parse_str(u.trim()).ok())
        .ok_or(Refusal::BadRequest("user_id is not a user id"))
}

/// The signed-in admin and the form's user, for the controls that act on one user.
fn admin_and_user(
    state: &ConsoleState,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<(Session, Uuid), Refusal> {
    Ok((guard(state, headers, form)?, user_id(form)?))
}

fn back_to_user(user: Uuid) -> Response {
    Redirect::to(&format!("/users/{user}")).into_response()
}

pub(crate) async fn signin(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(keys) = state.keys.clone() else {
        return forbidden("controls are off (ADMIN_TOKEN is not set)");
    };
    if !auth::same_origin(&headers) {
        return forbidden("cross-origin request");
    }
    if !state.limiter.allow() {
        warn!("console: sign-in refused: too many attempts");
        return html_response(
            StatusCode::TOO_MANY_REQUESTS,
            signin_page(Some("Too many sign-in attempts; wait a minute.")),
        );
    }
    let form = form(&body);
    let name = form.get("name").map(|n| n.trim()).unwrap_or("");
    let token = form.get("token").map(String::as_str).unwrap_or("");
    if !auth::valid_name(name) {
        return html_response(
            StatusCode::BAD_REQUEST,
            signin_page(Some("Give your name (one line, at most 64 characters).")),
        );
    }
    if !keys.token_matches(token) {
        warn!(admin = %name, "console: sign-in refused: wrong token");
        return html_response(StatusCode::UNAUTHORIZED, signin_page(Some("Wrong token.")));
    }
    info!(admin = %name, "console: admin signed in");
    let cookie = auth::set_cookie(&keys.issue(name));
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

pub(crate) async fn signout(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let session = match guard(&state, &headers, &form(&body)) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    info!(admin = %session.name, "console: admin signed out");
    (
        [(header::SET_COOKIE, auth::clear_cookie())],
        Redirect::to("/"),
    )
        .into_response()
}

pub(crate) async fn set_override(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = form(&body);
    let (admin, user) = match admin_and_user(&state, &headers, &form) {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let Some(desired) = form.get("desired").and_then(|d| Desired::parse(d)) else {
        return bad_request("desired must be present, absent or paused".into());
    };
    let reason = form.get("reason").map(|r| r.trim()).unwrap_or("");
    // One line: the reason goes into the log line too, where a newline could fake another entry.
    if reason.is_empty()
        || reason.chars().count() > REASON_MAX
        || reason.chars().any(char::is_control)
    {
        return bad_request(format!(
            "a reason is required (one line, at most {REASON_MAX} characters)"
        ));
    }
    match console_user::user_exists(&state.pool, user).await {
        Ok(true) => {}
        Ok(false) => return bad_request("no such user".into()),
        Err(e) => return unavailable("override", e),
    }
    if let Err(e) =
        console_user::set_override(&state.pool, user, desired, reason, &admin.name).await
    {
        return unavailable("override", e);
    }
    info!(admin = %admin.name, user_id = %user, desired = desired.as_str(), reason, "console: override set");
    back_to_user(user)
}

pub(crate) async fn clear_override(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = form(&body);
    let (admin, user) = match admin_and_user(&state, &headers, &form) {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    match console_user::clear_override(&state.pool, user).await {
        Ok(removed) => {
            info!(admin = %admin.name, user_id = %user, removed, "console: override cleared");
            back_to_user(user)
        }
        Err(e) => unavailable("clear override", e),
    }
}

pub(crate) async fn retry(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = form(&body);
    let (admin, user) = match admin_and_user(&state, &headers, &form) {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    match console_user::retry_now(&state.pool, user).await {
        Ok(cleared) => {
            info!(admin = %admin.name, user_id = %user, cleared, "console: retry now");
            back_to_user(user)
        }
        Err(e) => unavailable("retry", e),
    }
}

pub(crate) async fn confirm_deletions(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let admin = match guard(&state, &headers, &form(&body)) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    match breaker::confirm_held(&state.pool, &admin.name).await {
        Ok(count) => {
            info!(admin = %admin.name, count, "console: held deletions confirmed");
            Redirect::to("/").into_response()
        }
        Err(e) => unavailable("confirm deletions", e),
    }
}
