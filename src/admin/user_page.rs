//! One user's page: the row, the override and who set it, the machine as last recorded, the controls,
//! and the events as a timeline.

use chrono::{DateTime, Utc};
use maud::{Markup, html};

use super::activity::describe;
use super::auth::Session;
use super::view::{ago, badge, csrf_field, fly_app_url, row_cost, size, time};
use crate::db::admins::ActionRow;
use crate::db::console_user::{EventRow, UserPage};

/// One timeline entry: what the controller recorded, or what an admin did.
enum Entry<'a> {
    Event(&'a EventRow),
    Action(&'a ActionRow),
}

impl Entry<'_> {
    fn at(&self) -> DateTime<Utc> {
        match self {
            Entry::Event(e) => e.created_at,
            Entry::Action(a) => a.at,
        }
    }
}

/// Events and admin actions in one list, newest first.
fn timeline(d: &UserPage) -> Vec<Entry<'_>> {
    let mut all: Vec<Entry<'_>> = d
        .events
        .iter()
        .map(Entry::Event)
        .chain(d.actions.iter().map(Entry::Action))
        .collect();
    all.sort_by_key(|e| std::cmp::Reverse(e.at()));
    all
}

pub(crate) fn render(d: &UserPage, admin: &Session, now: DateTime<Utc>) -> Markup {
    let f = &d.facts;
    html! {
        h1 #user-title { (f.email.as_deref().unwrap_or("(no email)")) }
        div.panel {
            dl.facts {
                dt { "User id" } dd { code #user-id { (f.user_id) } }
                @if let Some(n) = &f.display_name { dt { "Name" } dd { (n) } }
                dt { "Tier / subscription" } dd { (f.tier) " / " (f.subscription_status.as_deref().unwrap_or("none")) }
                dt { "Override" } dd #override {
                    @match &d.override_ {
                        Some(o) => {
                            (badge(&o.desired)) " set by " strong { (o.created_by.as_deref().unwrap_or("?")) }
                            " " (ago(o.created_at, now)) ": " (o.reason.as_deref().unwrap_or(""))
                        },
                        None => "none (follows the tier)",
                    }
                }
            }
        }
        (row_panel(d, now))
        (controls(d, admin))
        h2 { "Timeline (newest first): events and admin actions" }
        @if d.events.is_empty() && d.actions.is_empty() { p.notice #no-events { "Nothing has happened to this user yet." } }
        ol.timeline #timeline {
            @for entry in timeline(d) {
                @match entry {
                    Entry::Event(e) => li class=[e.event_type.ends_with("_failed").then_some("failed")] {
                        (time(Some(e.created_at)))
                        strong { (e.event_type) }
                        @if let Some(s) = &e.status { " → " (badge(s)) }
                        @if let Some(err) = &e.error_details { pre.bad { (err) } }
                        @if let Some(m) = e.metadata.as_ref().filter(|m| !m.is_null() && m.as_object().is_none_or(|o| !o.is_empty())) {
                            pre { (m.to_string()) }
                        }
                    },
                    Entry::Action(a) => li.action {
                        (time(Some(a.at))) span.badge.b-present { "admin" } " " (describe(a))
                    },
                }
            }
        }
    }
}

fn row_panel(d: &UserPage, now: DateTime<Utc>) -> Markup {
    let Some(r) = &d.row else {
        return html! { div.panel #row { p { "No app row: this user has never had an app." } } };
    };
    html! {
        div.panel #row {
            h2 { "App " a href=(fly_app_url(&r.app_name)) { (r.app_name) } }
            p.notice #fly-links {
                "On Fly: " a href={ (fly_app_url(&r.app_name)) "/monitoring" } { "logs" } " · "
                a href={ (fly_app_url(&r.app_name)) "/metrics" } { "metrics" }
            }
            dl.facts {
                dt { "Status" } dd #row-status { (badge(&r.status)) @if r.deleted_at.is_some() { " (soft-deleted " (time(r.deleted_at)) ")" } }
                dt { "Health" } dd { (badge(&r.health)) }
                dt { "Image" } dd { code { (r.image.as_deref().unwrap_or("–")) } }
                dt { "Region / size" } dd { (r.region.as_deref().unwrap_or("–")) " / " (size(r.cpu_count, r.memory_mb)) }
                dt { "Monthly cost" } dd { (row_cost(r)) }
                dt { "Last error" } dd.err {
                    @if let Some(k) = &r.last_error_kind { code { (k) } " " }
                    (r.error_message.as_deref().unwrap_or("none"))
                }
                dt { "Retries" } dd { (r.retry_count)
                    @if let Some(t) = r.next_attempt_at {
                        " · next attempt " (time(Some(t)))
                        @if t > now { " (in backoff)" }
                    }
                }
                dt { "Last change" } dd { (time(r.last_change)) }
            }
            @if let Some(m) = &d.machine {
                h2 { "Fly machine as last recorded" }
                dl.facts #machine {
                    dt { "Fly app id" } dd { code { (m.fly_app_id.as_deref().unwrap_or("– (app not known to exist)")) } }
                    dt { "Machine" } dd { code { (m.machine_id.as_deref().unwrap_or("–")) }
                        @if m.machine_op_id.is_some() && m.machine_id.is_none() { " (create pending)" } }
                    dt { "IPs" } dd { (if m.ips_ready { "v6 + shared v4 assigned" } else { "not yet assigned" }) }
                    dt { "Deployed" } dd { (time(m.deployed_at)) }
                    // The column changes when health changes, not at every probe.
                    dt { "Health since" } dd { (time(m.last_health_check)) }
                    dt { "Config digest" } dd { code { (m.config_digest.as_deref().map(|c| &c[..c.len().min(16)]).unwrap_or("–")) } }
                    @if let Some(t) = m.unwanted_since { dt { "Unwanted since" } dd.warn { (time(Some(t))) } }
                    dt { "Row created" } dd { (time(m.created_at)) }
                }
            }
        }
    }
}

fn controls(d: &UserPage, s: &Session) -> Markup {
    let user = d.facts.user_id.to_string();
    let in_backoff = d
        .row
        .as_ref()
        .is_some_and(|r| r.deleted_at.is_none() && r.next_attempt_at.is_some());
    html! {
        div.panel.controls #controls {
            h2 { "Controls" }
            form method="post" action="/controls/override" #override-form {
                (csrf_field(s))
                input type="hidden" name="user_id" value=(user);
                div {
                    label for="desired" { "Override" }
                    // Starts at what is in force, so submitting unchanged changes nothing by accident.
                    @let now = d.override_.as_ref().map(|o| o.desired.as_str());
                    select #desired name="desired" {
                        option value="present" selected[now == Some("present")] { "present: provision now" }
                        option value="absent" selected[now == Some("absent")] { "absent: deprovision" }
                        option value="paused" selected[now == Some("paused") || now.is_none()] { "paused: leave alone" }
                    }
                }
                div {
                    label for="reason" { "Reason (required)" }
                    input #reason name="reason" required maxlength="500" size="40";
                }
                button.primary #set-override type="submit" { "Set override" }
            }
            @if d.override_.is_some() {
                form method="post" action="/controls/override/clear" {
                    (csrf_field(s))
                    input type="hidden" name="user_id" value=(user);
                    label.sr for="clear-reason" { "Reason for clearing" }
                    input #clear-reason name="reason" maxlength="500" placeholder="reason (optional)";
                    button #clear-override type="submit" { "Clear override (follow the tier)" }
                }
            }
            @if in_backoff {
                form method="post" action="/controls/retry" {
                    (csrf_field(s))
                    input type="hidden" name="user_id" value=(user);
                    button #retry-now type="submit" { "Retry now" }
                }
            }
        }
    }
}
