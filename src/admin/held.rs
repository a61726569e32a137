//! The deletions the blast-radius breaker holds back: the panel that shows them, the confirmation of
//! exactly what it showed (invariant 6), and "keep" for a row that should not go.
//!
//! The confirm form carries every app name the panel listed and the version of that list
//! ([`breaker::held_version`]). [`breaker::confirm_exact`] confirms only those of them still held,
//! and refuses, confirming nothing, when the held set has anything the panel did not list; the reply
//! then shows the set as it is now, with a fresh form.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use tracing::info;

use super::auth::Session;
use super::controls::{Form, bad_request, guard, reason, user_id};
use super::pages::html_response;
use super::view::{csrf_field, fly_app_url, page, time};
use super::{ConsoleState, unavailable};
use crate::db::breaker::{self, Confirmation, Scope};
use crate::db::console::{self, HeldView};
use crate::db::console_user::{self, Desired};

/// The panel (nothing when nothing is held).
pub(crate) fn panel(held: &[HeldView], s: &Session) -> Markup {
    if held.is_empty() {
        return html! {};
    }
    let version = breaker::held_version(held.iter().map(|h| h.app_name.as_str()));
    html! {
        section.panel.alert #held-deletions aria-labelledby="held-title" {
            h2 #held-title { "Deletions held back by the blast-radius breaker (" (held.len()) ")" }
            p {
                "Confirming lets exactly these " (held.len()) " deletions go ahead (like "
                code { "vyx-fleet confirm-deletions --expect " (version) } "). If the set changes before you "
                "confirm, nothing is confirmed and the new set is shown."
            }
            div.scroll {
                table #held-table {
                    thead { tr {
                        th scope="col" { "App" } th scope="col" { "User" } th scope="col" { "Tier / subscription" }
                        th scope="col" { "Why" } th scope="col" { "Held since" } th scope="col" { "Confirmed" }
                        th scope="col" { "Keep instead" }
                    } }
                    tbody {
                        @for h in held {
                            tr data-app=(h.app_name) {
                                td.app { a href=(fly_app_url(&h.app_name)) { (h.app_name) } }
                                td { @match h.user_id {
                                    Some(u) => a href={ "/users/" (u) } { (h.email.as_deref().unwrap_or("(no email)")) },
                                    None => "– (orphan)",
                                } }
                                td { (h.tier.as_deref().unwrap_or("–")) " / " (h.subscription_status.as_deref().unwrap_or("none")) }
                                td.why { (h.why()) }
                                td { (time(Some(h.held_at))) }
                                td { @match (&h.confirmed_at, &h.confirmed_by) {
                                    (Some(t), by) => { (time(Some(*t))) " by " (by.as_deref().unwrap_or("?")) },
                                    _ => span.bad { "no" },
                                } }
                                td { @if let Some(u) = h.user_id {
                                    form.inline method="post" action="/controls/keep" {
                                        (csrf_field(s))
                                        input type="hidden" name="user_id" value=(u);
                                        input type="hidden" name="app" value=(h.app_name);
                                        label.sr for={ "keep-" (h.app_name) } { "Reason to keep " (h.app_name) }
                                        input id={ "keep-" (h.app_name) } name="reason" required maxlength="500" placeholder="reason";
                                        button.keep type="submit" { "Keep" }
                                    }
                                } }
                            }
                        }
                    }
                }
            }
            form.controls #confirm-form method="post" action="/controls/confirm-deletions" {
                (csrf_field(s))
                input type="hidden" name="version" value=(version);
                @for h in held { input type="hidden" name="app" value=(h.app_name); }
                button.danger #confirm-deletions type="submit" { "Confirm these " (held.len()) " deletions" }
            }
        }
    }
}

pub(crate) async fn confirm(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = Form::parse(&body);
    let admin = match guard(&state, &headers, &form).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let shown = form.all("app");
    let version = form.get("version");
    if shown.is_empty() || version.is_none() {
        return bad_request("the form lists no held deletions (reload the page)".into());
    }
    let scope = Scope::Whole {
        shown: &shown,
        version,
    };
    match breaker::confirm_exact(&state.pool, scope, &admin.name).await {
        Ok(Confirmation::Confirmed(done)) => {
            let apps: Vec<&str> = done.iter().map(|h| h.app_name.as_str()).collect();
            info!(admin = %admin.name, count = apps.len(), apps = ?apps, "console: held deletions confirmed");
            Redirect::to("/?done=confirmed").into_response()
        }
        Ok(Confirmation::NothingHeld) => Redirect::to("/?done=nothing-held").into_response(),
        Ok(Confirmation::Changed { held, .. }) => {
            info!(admin = %admin.name, shown = shown.len(), held = held.len(), "console: confirmation refused: the held set changed");
            changed(&state, &admin).await
        }
        Err(e) => unavailable("confirm deletions", e),
    }
}

/// The refusal: nothing was confirmed; the held set as it is now, to check and confirm again.
async fn changed(state: &ConsoleState, admin: &Session) -> Response {
    let held = match console::load_held_view(&state.pool).await {
        Ok(h) => h,
        Err(e) => return unavailable("held deletions", e),
    };
    html_response(
        StatusCode::CONFLICT,
        page(
            "Held set changed",
            Some(admin),
            None,
            html! {
                h1 { "Nothing was confirmed" }
                p.bad #held-changed role="alert" {
                    "The held deletions changed since your page was drawn. Check the set as it is now, "
                    "then confirm again."
                }
                (panel(&held, admin))
                @if held.is_empty() { p { "The breaker holds nothing now." } }
                p { a href="/" { "Back to the fleet" } }
            },
        ),
    )
}

/// "Keep": an override `present` with the admin's reason, so the held deletion is released on the
/// next pass instead of confirmed.
pub(crate) async fn keep(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = Form::parse(&body);
    let admin = match guard(&state, &headers, &form).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (user, why) = match (user_id(&form), reason(&form)) {
        (Ok(u), Ok(r)) => (u, r),
        (Err(r), _) | (_, Err(r)) => return r.into_response(),
    };
    match console_user::set_override(
        &state.pool,
        user,
        Desired::Present,
        why,
        &admin.name,
        "keep",
    )
    .await
    {
        Ok(()) => {
            info!(admin = %admin.name, user_id = %user, app = form.get("app").unwrap_or(""), reason = why, "console: held deletion kept");
            Redirect::to("/?done=kept").into_response()
        }
        Err(e) => unavailable("keep", e),
    }
}
