//! GET handlers: read the query string, load through `db::console*`, hand the data to a template.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use maud::{Markup, html};
use uuid::Uuid;

use super::auth::{self, Session};
use super::view::{flash_message, page};
use super::{ConsoleState, QUERY_TIMEOUT, dashboard, unavailable, user_page};
use crate::db::admins;
use crate::db::console::{self, AppQuery, ConsoleRow, HeldView, SortKey, Summary, UserHit};
use crate::db::console_user;
use crate::db::rollout::RolloutRecord;

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

/// The signed-in admin, if the request's cookie names a live session.
pub(crate) async fn session(
    state: &ConsoleState,
    headers: &HeaderMap,
) -> Result<Option<Session>, sqlx::Error> {
    let Some(cookie) = auth::cookie_value(headers) else {
        return Ok(None);
    };
    let key = state.keys.as_ref().map(|k| k.session_key());
    Ok(admins::session(&state.pool, cookie, key)
        .await?
        .map(|r| Session {
            name: r.display_name,
            csrf: r.csrf,
        }))
}

/// The signed-in admin, or the reply for everyone else: the sign-in page, coming back to `uri` after.
pub(crate) async fn require(
    state: &ConsoleState,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Session, Response> {
    match session(state, headers).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => {
            let next = uri.path_and_query().map_or("/", |p| p.as_str());
            let target = format!("/signin?next={}", encode_component(next));
            Err(Redirect::to(&target).into_response())
        }
        Err(e) => Err(unavailable("session", e)),
    }
}

fn encode_component(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Where to go after signing in: a path of this console only (never `//host` or a full URL).
pub(crate) fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n,
        _ => "/",
    }
}

pub(crate) fn html_response(code: StatusCode, markup: Markup) -> Response {
    (
        code,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
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
    pub held: Vec<HeldView>,
    pub rollout: Option<RolloutRecord>,
    pub oncall: crate::db::oncall::OnCall,
    pub rows: Vec<ConsoleRow>,
    pub total: i64,
    pub query: AppQuery,
    pub user_hits: Vec<UserHit>,
    pub image: String,
}

async fn load_dashboard(
    state: &ConsoleState,
    mut query: AppQuery,
) -> Result<DashboardData, sqlx::Error> {
    let pool = &state.pool;
    let cfg = &state.cfg;
    let summary =
        console::load_summary(pool, &cfg.image, &cfg.paid_tiers, &cfg.paid_statuses).await?;
    let held = console::load_held_view(pool).await?;
    let rollout = crate::db::rollout::load_current(pool).await?;
    let oncall = crate::db::oncall::load(pool, cfg.orphan_grace.as_secs_f64()).await?;
    let (mut rows, mut total) = console::load_page(pool, &query).await?;
    let last_page = (total.max(1) - 1) / console::PAGE_SIZE;
    if query.page > last_page {
        // A page past the end (an old link, a typed number) shows the last one, not "rows 0-…".
        query.page = last_page;
        (rows, total) = console::load_page(pool, &query).await?;
    }
    let user_hits = match &query.text {
        Some(t) => console::users_without_app(pool, t, USER_HITS).await?,
        None => Vec::new(),
    };
    Ok(DashboardData {
        summary,
        held,
        rollout,
        oncall,
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
    uri: Uri,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let admin = match require(&state, &headers, &uri).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let query = parse_query(&params);
    let data = match tokio::time::timeout(QUERY_TIMEOUT, load_dashboard(&state, query)).await {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => return unavailable("dashboard", e),
        Err(_) => return unavailable("dashboard", "timed out"),
    };
    let flash = params.get("done").and_then(|d| flash_message(d));
    let body = dashboard::render(&data, &admin, Utc::now());
    let mut resp = html_response(StatusCode::OK, page("Fleet", Some(&admin), flash, body));
    // Opt-in auto-refresh for a wall screen: the `Refresh` header needs no script.
    if let Some(secs) = params
        .get("refresh")
        .and_then(|r| r.parse::<u32>().ok())
        .filter(|s| (10..=600).contains(s))
        && let Ok(v) = header::HeaderValue::from_str(&secs.to_string())
    {
        resp.headers_mut()
            .insert(header::HeaderName::from_static("refresh"), v);
    }
    resp
}

pub(crate) async fn user(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let admin = match require(&state, &headers, &uri).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let me = Some(&admin);
    let Ok(user_id) = Uuid::parse_str(&id) else {
        return html_response(
            StatusCode::NOT_FOUND,
            page("No such user", me, None, html! { p { "Not a user id." } }),
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
                    me,
                    None,
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
    let flash = params.get("done").and_then(|d| flash_message(d));
    let body = user_page::render(&data, &admin, Utc::now());
    html_response(StatusCode::OK, page(&title, me, flash, body))
}

pub(crate) async fn signin_form(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let next = safe_next(params.get("next").map(String::as_str)).to_string();
    match session(&state, &headers).await {
        Ok(Some(_)) => Redirect::to(&next).into_response(),
        Ok(None) => html_response(
            StatusCode::OK,
            signin_page(None, &next, state.keys.is_some()),
        ),
        Err(e) => unavailable("session", e),
    }
}

pub(crate) fn signin_page(problem: Option<&str>, next: &str, break_glass: bool) -> Markup {
    page(
        "Sign in",
        None,
        None,
        html! {
            h1 { "Sign in" }
            @if let Some(p) = problem { p.bad #signin-problem role="alert" { (p) } }
            form.panel.signin method="post" action="/signin" {
                input type="hidden" name="next" value=(next);
                label for="token" { "Your admin token" }
                input #token name="token" type="password" required autocomplete="current-password";
                p.notice { "From " code { "vyx-fleet admin add YOUR-NAME" } " (printed once). Every action is recorded under that name." }
                @if break_glass {
                    details {
                        summary { "Break-glass ADMIN_TOKEN" }
                        label for="name" { "Your name (recorded with every action)" }
                        input #name name="name" maxlength="64" autocomplete="name";
                    }
                }
                button.primary type="submit" { "Sign in" }
            }
        },
    )
}
