//! The dashboard's on-call panels: a banner when nothing can reconcile, the active alerts and since
//! when, the apps failing now (each with "Retry now"), the orphans and when each will be deleted,
//! and the newest events across users.

use maud::{Markup, html};

use super::auth::Session;
use super::view::{badge, csrf_field, time};
use crate::db::oncall::OnCall;

/// Alerts that mean no pass can do anything: worth a banner above everything else.
const STOPS_EVERYTHING: [(&str, &str); 3] = [
    (
        "fly_token_refused",
        "Fly refuses the API token: every pass is skipped and new paying users get no app. Create an \
         org token (fly tokens create org) and set FLY_API_TOKEN.",
    ),
    (
        "passes_failing",
        "Reconcile passes keep failing: see the webhook message or the log for the cause.",
    ),
    (
        "leader_silent",
        "No reconcile pass is being recorded: the leader is silent or stuck.",
    ),
];

pub(crate) fn banner(d: &OnCall) -> Markup {
    html! {
        @for (kind, text) in STOPS_EVERYTHING {
            @if let Some(a) = d.alerts.iter().find(|a| a.kind == kind) {
                p.panel.alert.bad #cannot-reconcile role="alert" {
                    strong { "Cannot reconcile. " } (text)
                    @if let Some(t) = a.started_at { " Since " (time(Some(t))) "." }
                }
            }
        }
    }
}

pub(crate) fn panels(d: &OnCall, s: &Session) -> Markup {
    html! {
        section.panel #oncall aria-labelledby="oncall-title" {
            h2 #oncall-title { "On call" }
            h3 { "Active alerts" }
            @if d.alerts.is_empty() { p.notice #no-alerts { "No alert is firing." } }
            @else {
                ul #active-alerts {
                    @for a in &d.alerts { li { code { (a.kind) } " since " (time(a.started_at)) } }
                }
            }
            h3 { "Failing now (" (d.failing_count) ")" }
            @if d.failing.is_empty() { p.notice #no-failing { "No live app is in error, unhealthy or in backoff." } }
            @else {
                div.scroll { table #failing {
                    thead { tr {
                        th scope="col" { "App" } th scope="col" { "User" } th scope="col" { "Status" }
                        th scope="col" { "Health" } th scope="col" { "Error" } th scope="col" { "Retries" }
                        th scope="col" { "Next attempt" } th scope="col" { "" }
                    } }
                    tbody {
                        @for f in &d.failing {
                            tr {
                                td { code { (f.app_name) } }
                                td { a href={ "/users/" (f.user_id) } { (f.email.as_deref().unwrap_or("(no email)")) } }
                                td { (badge(&f.status)) } td { (badge(&f.health)) }
                                td { code { (f.last_error_kind.as_deref().unwrap_or("–")) } }
                                td.num { (f.retry_count) } td { (time(f.next_attempt_at)) }
                                td { @if f.next_attempt_at.is_some() {
                                    form.inline method="post" action="/controls/retry" {
                                        (csrf_field(s))
                                        input type="hidden" name="user_id" value=(f.user_id);
                                        button type="submit" { "Retry now" }
                                    }
                                } }
                            }
                        }
                    }
                } }
            }
            h3 { "Orphans (" (d.orphan_count) ")" }
            @if d.orphans.is_empty() { p.notice #no-orphans { "No orphan app." } }
            @else {
                ul #orphans {
                    @for o in &d.orphans {
                        li { code { (o.app_name) } " seen since " (time(Some(o.first_seen_at))) ", deleted after " (time(Some(o.delete_after))) }
                    }
                }
            }
            h3 { "Recent events" }
            @if d.feed.is_empty() { p.notice { "No events yet." } }
            @else {
                ol.timeline #event-feed {
                    @for e in &d.feed {
                        li class=[e.event_type.ends_with("_failed").then_some("failed")] {
                            (time(Some(e.created_at))) strong { (e.event_type) } " "
                            @if let Some(u) = e.user_id { a href={ "/users/" (u) } { (e.email.as_deref().unwrap_or("(no email)")) } }
                        }
                    }
                }
            }
        }
    }
}
