//! GET handlers: read the query string, load through `db::console*`, hand the data to a template.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use maud::{Markup, html};
use uuid::Uuid;

use super::auth::{self, Session};
use super::view::{Viewer, page};
use super::{ConsoleState, QUERY_TIMEOUT, dashboard, unavailable, user_page};
use crate::db::breaker::{self, HeldDeletion};
use crate::db::console::{self, AppQuery, ConsoleRow, SortKey, Summary, UserHit};
use crate::db::console_user;

/// Row statuses the filter offers (`live` = every row not soft-deleted).
pub(crate) const STATUS_FILTERS: [&str; 6] = [
    "live",
    "provisioning",
    "active",
    "error",
    "deprovisioning",
    "deleted",
];
pub(crate) const HEALTH_FILTERS: [&str; 3] = ["healthy", "unhealthy", "unknown"];
/// Longest text filter accepted; longer input is cut (it cannot match a longer email anyway).
const TEXT_MAX: usize = 200;
/// Users without an app listed under the table when the text filter matches them.
const USER_HITS: i64 = 20;

/// The signed-in session, if the console has controls and the cookie verifies.
pub(crate) fn session(state: &ConsoleState, headers: &HeaderMap) -> Option<Session> {
    let keys = state.keys.as_ref()?;
    keys.verify(auth::cookie_value(headers)?)
}

pub(crate) fn viewer<'a>(state: &ConsoleState, session: Option<&'a Session>) -> Viewer<'a> {
    match (state.keys.is_some(), session) {
        (false, _) => Viewer::ReadOnly,
        (true, None) => Viewer::Anonymous,
        (true, Some(s)) => Viewer::Admin(s),
    }
}

pub(crate) fn html_response(code: StatusCode, markup: Markup) -> Response {
    (
        code,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            // Nothing on these pages is meant to run script or be framed.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                 frame-ancestors 'none'; base-uri 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "same-origin"),
        ],
        markup.into_string(),
    )
        .into_response()
}

/// The table's state as parsed from the query string; unknown values fall back to the defaults.
pub(crate) fn parse_query(params: &HashMap<String, String>) -> AppQuery {
    let pick = |key: &str, allowed: &[&str]| {
        params
            .get(key)
            .filter(|v| allowed.contains(&v.as_str()))
            .cloned()
    };
    let text = params
        .get("q")
        .map(|q| q.trim().chars().take(TEXT_MAX).collect::<String>())
        .filter(|q| !q.is_empty());
    AppQuery {
        status: pick("status", &STATUS_FILTERS),
        health: pick("health", &HEALTH_FILTERS),
        text,
        sort: params
            .get("sort")
            .and_then(|s| SortKey::parse(s))
            .unwrap_or_default(),
        desc: params.get("dir").is_some_and(|d| d == "desc"),
        page: params
            .get("page")
            .and_then(|p| p.parse::<i64>().ok())
            .unwrap_or(0)
            .clamp(0, 1_000_000),
    }
}

pub(crate) struct DashboardData {
    pub summary: Summary,
    pub held: Vec<HeldDeletion>,
    pub rows: Vec<ConsoleRow>,
    pub total: i64,
    pub query: AppQuery,
    pub user_hits: Vec<UserHit>,
    pub image: String,
}

async fn load_dashboard(
    state: &ConsoleState,
    query: AppQuery,
) -> Result<DashboardData, sqlx::Error> {
    let pool = &state.pool;
    let cfg = &state.cfg;
    let summary =
        console::load_summary(pool, &cfg.image, &cfg.paid_tiers, &cfg.paid_statuses).await?;
    let held = breaker::load_held(pool).await?;
    let (rows, total) = console::load_page(pool, &query).await?;
    let user_hits = match &query.text {
        Some(t) => console::users_without_app(pool, t, USER_HITS).await?,
        None => Vec::new(),
    };
    Ok(DashboardData {
        summary,
        held,
        rows,
        total,
        query,
        user_hits,
        image: cfg.image.clone(),
    })
}

pub(crate) async fn dashboard(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let query = parse_query(&params);
    let data = match tokio::time::timeout(QUERY_TIMEOUT, load_dashboard(&state, query)).await {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => return unavailable("dashboard", e),
        Err(_) => return unavailable("dashboard", "timed out"),
    };
    let session = session(&state, &headers);
    let viewer = viewer(&state, session.as_ref());
    let body = dashboard::render(&data, &viewer, Utc::now());
    html_response(StatusCode::OK, page("Fleet", &viewer, body))
}

pub(crate) async fn user(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let session = session(&state, &headers);
    let viewer = viewer(&state, session.as_ref());
    let Ok(user_id) = Uuid::parse_str(&id) else {
        return html_response(
            StatusCode::NOT_FOUND,
            page("No such user", &viewer, html! { p { "Not a user id." } }),
        );
    };
    let loaded =
        tokio::time::timeout(QUERY_TIMEOUT, console_user::load_user(&state.pool, user_id)).await;
    let data = match loaded {
        Ok(Ok(Some(d))) => d,
        Ok(Ok(None)) => {
            return html_response(
                StatusCode::NOT_FOUND,
                page(
                    "No such user",
                    &viewer,
                    html! { p { "No user " code { (user_id) } " in auth.users." } },
                ),
            );
        }
        Ok(Err(e)) => return unavailable("user page", e),
        Err(_) => return unavailable("user page", "timed out"),
    };
    let title = data
        .facts
        .email
        .clone()
        .unwrap_or_else(|| user_id.to_string());
    let body = user_page::render(&data, &viewer, Utc::now());
    html_response(StatusCode::OK, page(&title, &viewer, body))
}

pub(crate) async fn signin_form(State(state): State<ConsoleState>, headers: HeaderMap) -> Response {
    if state.keys.is_none() {
        return html_response(
            StatusCode::FORBIDDEN,
            page(
                "Read-only",
                &Viewer::ReadOnly,
                html! { p { "Controls are off: ADMIN_TOKEN is not set on this daemon." } },
            ),
        );
    }
    if session(&state, &headers).is_some() {
        return Redirect::to("/").into_response();
    }
    html_response(StatusCode::OK, signin_page(None))
}

pub(crate) fn signin_page(problem: Option<&str>) -> Markup {
    page(
        "Sign in",
        &Viewer::Anonymous,
        html! {
            h1 { "Sign in" }
            @if let Some(p) = problem { p.bad { (p) } }
            form.panel method="post" action="/signin" {
                label for="name" { "Your name (recorded with every action)" }
                input #name name="name" required maxlength="64" autocomplete="name";
                label for="token" { "ADMIN_TOKEN" }
                input #token name="token" type="password" required autocomplete="current-password";
                " "
                button.primary type="submit" { "Sign in" }
            }
        },
    )
}
