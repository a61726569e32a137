//! The dashboard at `/`: fleet summary, held deletions, the app table.

use chrono::{DateTime, Utc};
use maud::{Markup, html};

use super::auth::Session;
use super::pages::{DashboardData, HEALTH_FILTERS, STATUS_FILTERS};
use super::view::{ago, badge, csrf_field, fly_app_url, row_cost, size, time};
use crate::db::console::{AppQuery, PAGE_SIZE, SortKey};

/// The table's columns: header, and the sort key behind it.
const COLUMNS: [(&str, SortKey); 14] = [
    ("App", SortKey::App),
    ("User", SortKey::Email),
    ("Tier / subscription", SortKey::Tier),
    ("Override", SortKey::Override),
    ("Status", SortKey::Status),
    ("Health", SortKey::Health),
    ("Image", SortKey::Image),
    ("Region", SortKey::Region),
    ("Size", SortKey::Size),
    ("$/month", SortKey::Cost),
    ("Last error", SortKey::Error),
    ("Retries", SortKey::Retries),
    ("Next attempt", SortKey::NextAttempt),
    ("Last change", SortKey::LastChange),
];

/// `?...` for the table state `q` with some keys replaced; values are URL-encoded.
fn link(q: &AppQuery, sort: SortKey, desc: bool, page: i64) -> String {
    let mut u = reqwest::Url::parse("http://console/").expect("static url");
    {
        let mut p = u.query_pairs_mut();
        if let Some(s) = &q.status {
            p.append_pair("status", s);
        }
        if let Some(h) = &q.health {
            p.append_pair("health", h);
        }
        if let Some(t) = &q.text {
            p.append_pair("q", t);
        }
        p.append_pair("sort", sort.name());
        if desc {
            p.append_pair("dir", "desc");
        }
        if page > 0 {
            p.append_pair("page", &page.to_string());
        }
    }
    format!("/?{}", u.query().unwrap_or(""))
}

pub(crate) fn render(d: &DashboardData, admin: &Session, now: DateTime<Utc>) -> Markup {
    html! {
        h1 { "Fleet" }
        (super::oncall::banner(&d.oncall))
        p.notice #as-of {
            "Data as of " (time(Some(now))) ". " a href="" { "Refresh" } " · "
            a href="/?refresh=30" { "refresh every 30 s" }
        }
        (summary(d, now))
        (super::held::panel(&d.held, admin))
        (rollout_panel(d, admin))
        (super::oncall::panels(&d.oncall, admin))
        h2 { "Apps" }
        (filters(&d.query))
        (table(d))
        (pager(d))
        @if !d.user_hits.is_empty() {
            h2 { "Users without an app matching the filter" }
            table #users-without-app {
                thead { tr { th { "User" } th { "Tier" } th { "User id" } } }
                tbody {
                    @for u in &d.user_hits {
                        tr {
                            td { a href={ "/users/" (u.user_id) } { (u.email.as_deref().unwrap_or("(no email)")) } }
                            td { (u.tier) }
                            td { code { (u.user_id) } }
                        }
                    }
                }
            }
        }
    }
}

fn card(key: &str, value: Markup) -> Markup {
    html! { div.card { div.k { (key) } div.v { (value) } } }
}

fn summary(d: &DashboardData, now: DateTime<Utc>) -> Markup {
    let s = &d.summary;
    let unconfirmed = d.held.iter().filter(|h| h.confirmed_at.is_none()).count();
    html! {
        div.cards #summary {
            (card("Live apps", html! { (s.live) }))
            // Paused users keep whatever they have, so they count on the desired side as they are.
            (card("Desired (+ paused)", html! {
                (s.desired) " + " (s.paused)
                @if s.desired + s.paused != s.live { " " span.warn { "(≠ live)" } }
            }))
            (card("Live monthly cost", html! { "$" (format!("{:.2}", s.monthly_cost_usd)) }))
            (card("Leader", html! {
                @match &s.leader { Some(h) => code { (h) }, None => span.bad { "none" } }
            }))
            (card("Last pass", html! {
                @match s.last_pass_at { Some(t) => (ago(t, now)), None => span.warn { "never recorded" } }
            }))
            (card("Image", html! {
                code { (d.image) } br;
                span.notice { (s.on_image) " of " (s.live) " live apps run it" }
            }))
            // From `vyx_fleet.rollout` itself, not the leader's last pass record, which lags it.
            (card("Rollout", html! {
                @match &d.rollout {
                    Some(r) if r.halted => span.bad #rollout-halted { "halted: " code { (r.target_image) } },
                    Some(r) if r.completed_at.is_some() => span.ok { "complete" },
                    Some(_) => span.warn { "in progress" },
                    None => span.notice { "none yet" },
                }
            }))
            (card("Breaker", html! {
                @if unconfirmed > 0 { span.bad { "holding " (unconfirmed) " deletion(s)" } }
                @else if !d.held.is_empty() { span.warn { "confirmed, deleting" } }
                @else { span.ok { "not holding" } }
            }))
        }
        p.notice {
            "Rows by status: "
            @for (status, n) in &s.by_status { (badge(status)) " " (n) "  " }
            " · live by health: "
            @for (health, n) in &s.by_health { (badge(health)) " " (n) "  " }
        }
    }
}

/// The current rollout: progress, and while halted the reason recorded and a Resume button.
fn rollout_panel(d: &DashboardData, s: &Session) -> Markup {
    let Some(r) = &d.rollout else {
        return html! {};
    };
    let state = if r.halted {
        "halted"
    } else if r.completed_at.is_some() {
        "complete"
    } else {
        "in progress"
    };
    html! {
        section.panel.alert[r.halted] #rollout aria-labelledby="rollout-title" {
            h2 #rollout-title { "Rollout of " code { (r.target_image) } ": " span #rollout-state { (state) } }
            p {
                (r.waves_done) " wave(s), " (r.moved) " app(s) moved, " (r.failed) " failed, "
                (r.rolled_back) " rolled back; started " (time(Some(r.started_at)))
                @if let (Some(by), Some(at)) = (&r.resumed_by, r.resumed_at) { "; last resumed by " (by) " at " (time(Some(at))) }
            }
            @if r.halted {
                p.bad #halt-reason {
                    "Halted" @if let Some(t) = r.halted_at { " since " (time(Some(t))) } ": "
                    (r.halt_reason.as_deref().unwrap_or("no reason recorded"))
                }
                form.controls #resume-form method="post" action="/controls/rollout/resume" {
                    (csrf_field(s))
                    div {
                        label for="resume-reason" { "Why it is safe to go on (required)" }
                        input #resume-reason name="reason" required maxlength="500" size="40";
                    }
                    button.primary #resume-rollout type="submit" { "Resume the rollout" }
                }
            }
        }
    }
}

fn filters(q: &AppQuery) -> Markup {
    html! {
        form.filters #filters method="get" action="/" {
            div {
                label for="q" { "Email, user id or app" }
                input #q name="q" type="search" value=(q.text.as_deref().unwrap_or("")) size="32";
            }
            div {
                label for="status" { "Status" }
                select #status name="status" {
                    option value="" { "any" }
                    @for s in STATUS_FILTERS {
                        option value=(s) selected[q.status.as_deref() == Some(s)] { (s) }
                    }
                }
            }
            div {
                label for="health" { "Health" }
                select #health name="health" {
                    option value="" { "any" }
                    @for h in HEALTH_FILTERS {
                        option value=(h) selected[q.health.as_deref() == Some(h)] { (h) }
                    }
                }
            }
            input type="hidden" name="sort" value=(q.sort.name());
            @if q.desc { input type="hidden" name="dir" value="desc"; }
            button.primary #apply type="submit" { "Filter" }
            a href="/" { "reset" }
        }
    }
}

fn table(d: &DashboardData) -> Markup {
    let q = &d.query;
    html! {
        @if d.rows.is_empty() {
            p #no-rows { "No app matches." @if q.status.is_some() || q.health.is_some() || q.text.is_some() { " " a href="/" { "Clear the filters" } } }
        }
        div.scroll { table #apps {
            thead { tr {
                @for (title, key) in COLUMNS {
                    @let active = q.sort == key;
                    @let order = if !active { "none" } else if q.desc { "descending" } else { "ascending" };
                    th scope="col" data-sort=(key.name()) aria-sort=(order) {
                        a href=(link(q, key, active && !q.desc, 0)) {
                            (title)
                            @if active { @if q.desc { " ▼" } @else { " ▲" } }
                        }
                    }
                }
            } }
            tbody {
                @for r in &d.rows {
                    tr data-user=(r.user_id) {
                        td.app { a href=(fly_app_url(&r.app_name)) { (r.app_name) } }
                        td.email { a href={ "/users/" (r.user_id) } { (r.email.as_deref().unwrap_or("(no email)")) } }
                        td { (r.tier) " / " (r.subscription_status.as_deref().unwrap_or("none")) }
                        td { @if let Some(o) = &r.r#override { (badge(o)) @if let Some(b) = &r.override_by { " " span.notice { (b) } } } @else { "–" } }
                        td.status { (badge(&r.status)) }
                        td.health { (badge(&r.health)) }
                        td { code title=(r.image.as_deref().unwrap_or("")) { (r.image_tag.as_deref().or(r.image.as_deref()).unwrap_or("–")) } }
                        td { (r.region.as_deref().unwrap_or("–")) }
                        td { (size(r.cpu_count, r.memory_mb)) }
                        td.num { (row_cost(r)) }
                        td.err {
                            @if let Some(k) = &r.last_error_kind { code { (k) } " " }
                            (r.error_message.as_deref().unwrap_or(""))
                        }
                        td.num { (r.retry_count) }
                        td { (time(r.next_attempt_at)) }
                        td { (time(r.last_change)) }
                    }
                }
            }
        } }
    }
}

fn pager(d: &DashboardData) -> Markup {
    let q = &d.query;
    let first = q.page * PAGE_SIZE;
    let shown = d.rows.len() as i64;
    let last_page = (d.total.max(1) - 1) / PAGE_SIZE;
    html! {
        div.pager #pager {
            span #row-count { "rows " (if shown > 0 { first + 1 } else { 0 }) "–" (first + shown) " of " (d.total) }
            @if q.page > 0 { a #prev href=(link(q, q.sort, q.desc, q.page - 1)) { "← previous" } }
            @if q.page < last_page { a #next href=(link(q, q.sort, q.desc, q.page + 1)) { "next →" } }
        }
    }
}
