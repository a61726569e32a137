//! The admin trail: `GET /activity` (every admin's actions, newest first), and how one action reads
//! wherever it is shown (the user's timeline too).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use maud::{Markup, html};

use super::pages::{html_response, require};
use super::view::{page, time};
use super::{ConsoleState, QUERY_TIMEOUT, unavailable};
use crate::db::admins::{self, ActionRow};

/// Actions shown on the Activity page.
const ACTIVITY_LIMIT: i64 = 200;

/// "who did what, before → after, why" on one line.
pub(crate) fn describe(a: &ActionRow) -> Markup {
    html! {
        strong.admin { (a.admin) } " "
        span.action { (a.action.replace('_', " ")) }
        @if let Some(app) = &a.app_name { " " code { (app) } }
        @if a.before.is_some() || a.after.is_some() {
            ": " span.change { (a.before.as_deref().unwrap_or("–")) " → " (a.after.as_deref().unwrap_or("–")) }
        }
        @if let Some(r) = &a.reason { " — " q.reason { (r) } }
    }
}

pub(crate) async fn show(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let admin = match require(&state, &headers, &uri).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let rows = match tokio::time::timeout(
        QUERY_TIMEOUT,
        admins::recent_actions(&state.pool, ACTIVITY_LIMIT),
    )
    .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return unavailable("activity", e),
        Err(_) => return unavailable("activity", "timed out"),
    };
    let body = html! {
        h1 { "Activity" }
        p.notice { "What admins did, newest first (the last " (ACTIVITY_LIMIT) "). The trail is append-only." }
        @if rows.is_empty() {
            p #no-activity { "No admin has acted yet." }
        } @else {
            div.scroll {
                table #activity {
                    thead { tr {
                        th scope="col" { "When" } th scope="col" { "User" } th scope="col" { "Action" }
                    } }
                    tbody {
                        @for a in &rows {
                            tr {
                                td { (time(Some(a.at))) }
                                td { @match a.user_id {
                                    Some(u) => a href={ "/users/" (u) } { (a.email.as_deref().unwrap_or("(no email)")) },
                                    None => "–",
                                } }
                                td { (describe(a)) }
                            }
                        }
                    }
                }
            }
        }
    };
    html_response(StatusCode::OK, page("Activity", Some(&admin), None, body))
}
