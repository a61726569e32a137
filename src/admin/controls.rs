//! POST handlers: sign-in/out and the controls. Every control checks, in this order, that the request
//! comes from the console's own origin, that its cookie names a live session and that the form's CSRF
//! token is that session's; any failure answers 403 before anything is written. The admin's name goes
//! into the trail row written with the effect (`vyx_fleet.admin_actions`) and into the log line.

use std::net::SocketAddr;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use tracing::{info, warn};
use uuid::Uuid;

use super::auth::{self, Session};
use super::hosts;
use super::pages::{html_response, safe_next, session, signin_page};
use super::view::page;
use super::{ConsoleState, unavailable};
use crate::db::admins::{self, Principal};
use crate::db::console_user::{self, Desired};

/// Longest reason accepted for an override.
pub(crate) const REASON_MAX: usize = 500;

/// A form's fields in order; a name may repeat (the held set's `app`).
pub(crate) struct Form(Vec<(String, String)>);

impl Form {
    pub fn parse(body: &Bytes) -> Form {
        Form(form_urlencoded::parse(body).into_owned().collect())
    }
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    pub fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

pub(crate) fn forbidden(why: &'static str) -> Response {
    (
        StatusCode::FORBIDDEN,
        [(header::CACHE_CONTROL, "no-store")],
        format!("forbidden: {why}"),
    )
        .into_response()
}

pub(crate) fn bad_request(why: String) -> Response {
    (StatusCode::BAD_REQUEST, format!("bad request: {why}")).into_response()
}

/// A session that ended between drawing the form and posting it: say so, and give back what was
/// typed so the admin does not lose it.
fn session_ended(form: &Form) -> Response {
    let reason = form.get("reason").filter(|r| !r.trim().is_empty());
    html_response(
        StatusCode::FORBIDDEN,
        page(
            "Session ended",
            None,
            None,
            html! {
                h1 { "Your session has ended" }
                p { "Nothing was changed. " a href="/signin" { "Sign in again" } ", then submit the form once more." }
                @if let Some(r) = reason {
                    p { "The reason you typed:" }
                    pre #typed-reason { (r) }
                }
            },
        ),
    )
}

/// The checks every control makes before touching anything; `Err` is the reply.
pub(crate) async fn guard(
    state: &ConsoleState,
    headers: &HeaderMap,
    form: &Form,
) -> Result<Session, Response> {
    if !hosts::same_origin(headers, &state.hosts) {
        warn!("console: control refused: cross-origin or origin-less request");
        return Err(forbidden("cross-origin request"));
    }
    let session = match session(state, headers).await {
        Ok(Some(s)) => s,
        Ok(None) => return Err(session_ended(form)),
        Err(e) => return Err(unavailable("session", e)),
    };
    if !auth::csrf_matches(&session, form.get("csrf").unwrap_or("")) {
        warn!(admin = %session.name, "console: control refused: missing or wrong CSRF token");
        return Err(forbidden("missing or wrong CSRF token"));
    }
    Ok(session)
}

/// A form field that does not hold what the control needs (small, so `Result`s stay cheap).
pub(crate) struct BadField(String);

impl IntoResponse for BadField {
    fn into_response(self) -> Response {
        bad_request(self.0)
    }
}

pub(crate) fn user_id(form: &Form) -> Result<Uuid, BadField> {
    form.get("user_id")
        .and_then(|u| Uuid::parse_str(u.trim()).ok())
        .ok_or_else(|| BadField("user_id is not a user id".into()))
}

/// A required one-line reason: it goes into the trail and the log line, where a newline could fake
/// another entry.
pub(crate) fn reason(form: &Form) -> Result<&str, BadField> {
    let r = form.get("reason").map(str::trim).unwrap_or("");
    if r.is_empty() || r.chars().count() > REASON_MAX || r.chars().any(char::is_control) {
        return Err(BadField(format!(
            "a reason is required (one line, at most {REASON_MAX} characters)"
        )));
    }
    Ok(r)
}

pub(crate) fn back_to_user(user: Uuid, done: &str) -> Response {
    Redirect::to(&format!("/users/{user}?done={done}")).into_response()
}

pub(crate) async fn signin(
    State(state): State<ConsoleState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !hosts::same_origin(&headers, &state.hosts) {
        return forbidden("cross-origin request");
    }
    let form = Form::parse(&body);
    let next = safe_next(form.get("next")).to_string();
    let break_glass = state.keys.is_some();
    let client = state
        .throttle
        .client(&headers, peer.map(|Extension(ConnectInfo(addr))| addr));
    if !state.throttle.may_try(client) {
        if let Some(dropped) = state.throttle.log_refusal() {
            warn!(client = ?client, dropped, "console: sign-in refused: too many wrong tokens from this client");
        }
        return html_response(
            StatusCode::TOO_MANY_REQUESTS,
            signin_page(
                Some("Too many wrong tokens from here; wait a minute."),
                &next,
                break_glass,
            ),
        );
    }
    let token = form.get("token").unwrap_or("");
    let who = match admins::admin_for_token(&state.pool, token).await {
        Ok(Some(name)) => Some(Principal::Named(name)),
        Ok(None) => match &state.keys {
            Some(k) if k.token_matches(token) => {
                let typed = form.get("name").map(str::trim).unwrap_or("");
                if !auth::valid_name(typed) {
                    return html_response(
                        StatusCode::BAD_REQUEST,
                        signin_page(
                            Some(
                                "The break-glass token needs your name (one line, at most 64 characters).",
                            ),
                            &next,
                            break_glass,
                        ),
                    );
                }
                Some(Principal::BreakGlass {
                    display: format!("{typed} (break-glass)"),
                    key: k.session_key().to_vec(),
                })
            }
            _ => None,
        },
        Err(e) => return unavailable("sign-in", e),
    };
    let Some(who) = who else {
        state.throttle.failed(client);
        if let Some(dropped) = state.throttle.log_refusal() {
            warn!(client = ?client, dropped, "console: sign-in refused: wrong token");
        }
        return html_response(
            StatusCode::UNAUTHORIZED,
            signin_page(Some("Wrong token."), &next, break_glass),
        );
    };
    let ttl = auth::SESSION_TTL.as_secs() as i64;
    let cookie = match admins::open_session(&state.pool, &who, ttl).await {
        Ok(c) => c,
        Err(e) => return unavailable("sign-in", e),
    };
    let name = match &who {
        Principal::Named(n) => n.as_str(),
        Principal::BreakGlass { display, .. } => display.as_str(),
    };
    info!(admin = %name, "console: admin signed in");
    let secure = hosts::request_scheme(&headers) == "https";
    (
        [(header::SET_COOKIE, auth::set_cookie(&cookie, secure))],
        Redirect::to(&next),
    )
        .into_response()
}

pub(crate) async fn signout(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let session = match guard(&state, &headers, &Form::parse(&body)).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Some(cookie) = auth::cookie_value(&headers)
        && let Err(e) = admins::end_session(&state.pool, cookie).await
    {
        return unavailable("sign-out", e);
    }
    info!(admin = %session.name, "console: admin signed out");
    let secure = hosts::request_scheme(&headers) == "https";
    (
        [(header::SET_COOKIE, auth::clear_cookie(secure))],
        Redirect::to("/signin"),
    )
        .into_response()
}

pub(crate) async fn set_override(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = Form::parse(&body);
    let admin = match guard(&state, &headers, &form).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (user, reason) = match (user_id(&form), reason(&form)) {
        (Ok(u), Ok(r)) => (u, r),
        (Err(r), _) | (_, Err(r)) => return r.into_response(),
    };
    let Some(desired) = form.get("desired").and_then(Desired::parse) else {
        return bad_request("desired must be present, absent or paused".into());
    };
    match console_user::user_exists(&state.pool, user).await {
        Ok(true) => {}
        Ok(false) => return bad_request("no such user".into()),
        Err(e) => return unavailable("override", e),
    }
    // Deprovisioning deletes the user's app: one more page, with what will happen, before it does.
    if desired == Desired::Absent && form.get("confirmed") != Some("yes") {
        return confirm_absent(&admin, user, reason);
    }
    if let Err(e) =
        console_user::set_override(&state.pool, user, desired, reason, &admin.name, "override")
            .await
    {
        return unavailable("override", e);
    }
    info!(admin = %admin.name, user_id = %user, desired = desired.as_str(), reason, "console: override set");
    back_to_user(user, "override")
}

pub(crate) async fn clear_override(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = Form::parse(&body);
    let admin = match guard(&state, &headers, &form).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let user = match user_id(&form) {
        Ok(u) => u,
        Err(r) => return r.into_response(),
    };
    let why = form.get("reason").map(str::trim).filter(|r| {
        !r.is_empty() && r.chars().count() <= REASON_MAX && !r.chars().any(char::is_control)
    });
    match console_user::clear_override(&state.pool, user, why, &admin.name).await {
        Ok(removed) => {
            info!(admin = %admin.name, user_id = %user, removed, "console: override cleared");
            back_to_user(user, "cleared")
        }
        Err(e) => unavailable("clear override", e),
    }
}

pub(crate) async fn retry(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = Form::parse(&body);
    let admin = match guard(&state, &headers, &form).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let user = match user_id(&form) {
        Ok(u) => u,
        Err(r) => return r.into_response(),
    };
    match console_user::retry_now(&state.pool, user, &admin.name).await {
        Ok(cleared) => {
            info!(admin = %admin.name, user_id = %user, cleared, "console: retry now");
            back_to_user(user, if cleared { "retry" } else { "no-backoff" })
        }
        Err(e) => unavailable("retry", e),
    }
}

/// Resume: clears the current rollout's halt, recorded with what the halt said.
pub(crate) async fn rollout_resume(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = Form::parse(&body);
    let admin = match guard(&state, &headers, &form).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let reason = match reason(&form) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    match resume_recorded(&state, &admin.name, reason).await {
        Ok(Some(image)) => {
            info!(admin = %admin.name, image, reason, "console: rollout resumed");
            Redirect::to("/?done=resumed").into_response()
        }
        Ok(None) => Redirect::to("/?done=not-halted").into_response(),
        Err(e) => unavailable("rollout resume", e),
    }
}

async fn resume_recorded(
    state: &ConsoleState,
    by: &str,
    reason: &str,
) -> Result<Option<String>, sqlx::Error> {
    let mut tx = crate::db::begin(&state.pool).await?;
    let before: Option<String> = sqlx::query_scalar(
        "SELECT coalesce(halt_reason, 'halted') FROM vyx_fleet.rollout
          WHERE id = (SELECT max(id) FROM vyx_fleet.rollout) AND halted FOR UPDATE",
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(before) = before else {
        return Ok(None);
    };
    let Some(r) = crate::db::rollout::resume(&mut *tx, by).await? else {
        return Ok(None);
    };
    let a = admins::Action::new(by, "rollout_resume")
        .reason(reason)
        .before(&format!("halted: {before}"))
        .after(&format!("resumed {}", r.target_image));
    admins::record(&mut tx, &a).await?;
    tx.commit().await?;
    Ok(Some(r.target_image))
}

/// The confirm step of an override `absent`: says what it does and re-posts the same form.
fn confirm_absent(admin: &Session, user: Uuid, reason: &str) -> Response {
    html_response(
        StatusCode::OK,
        page(
            "Confirm deprovision",
            Some(admin),
            None,
            html! {
                h1 { "Deprovision this user's app?" }
                p.bad #confirm-absent {
                    "An override " code { "absent" } " deletes the user's Fly app (after "
                    code { "DEPROVISION_GRACE" } "), whatever their subscription, until it is cleared."
                }
                p { "User " a href={ "/users/" (user) } { code { (user) } } ". Reason: " q { (reason) } }
                form.controls method="post" action="/controls/override" {
                    (super::view::csrf_field(admin))
                    input type="hidden" name="user_id" value=(user);
                    input type="hidden" name="desired" value="absent";
                    input type="hidden" name="reason" value=(reason);
                    input type="hidden" name="confirmed" value="yes";
                    button.danger #confirm-absent-button type="submit" { "Yes, deprovision" }
                    a href={ "/users/" (user) } { "Cancel" }
                }
            },
        ),
    )
}
