//! `GET /charts`: the fleet over the last day, drawn on the server as SVG (no script), from the
//! samples [`run_sampler`] takes once a minute on every replica (the minute is the key, so the
//! replicas write one row between them).

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use sqlx::PgPool;
use tokio::sync::watch;

use super::pages::{html_response, require};
use super::view::{page, time};
use super::{ConsoleState, QUERY_TIMEOUT, unavailable};
use crate::db::samples::{self, Sample};

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 160.0;
const PAD: f64 = 4.0;

/// One line of a chart: its name, its CSS class (the colour) and a value per sample.
struct Series<'a> {
    name: &'a str,
    class: &'a str,
    value: fn(&Sample) -> f64,
}

/// `x,y` points for `values` over `[from, to]`, scaled into the chart box with `max` at the top.
fn points(
    samples: &[Sample],
    value: fn(&Sample) -> f64,
    max: f64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> String {
    let span = (to - from).num_seconds().max(1) as f64;
    samples
        .iter()
        .map(|s| {
            let x = PAD + (WIDTH - 2.0 * PAD) * ((s.minute - from).num_seconds() as f64 / span);
            let y = HEIGHT - PAD - (HEIGHT - 2.0 * PAD) * (value(s) / max);
            format!("{x:.1},{y:.1}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn chart(
    title: &str,
    unit: &str,
    samples: &[Sample],
    series: &[Series<'_>],
    now: DateTime<Utc>,
    hours: i64,
) -> Markup {
    let from = now - chrono::Duration::hours(hours);
    let max = samples
        .iter()
        .flat_map(|s| series.iter().map(move |l| (l.value)(s)))
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let last = samples.last();
    html! {
        figure.chart {
            figcaption {
                strong { (title) }
                @for l in series {
                    " " span class={ "key " (l.class) } { "■ " (l.name) }
                    @if let Some(s) = last { " " (format!("{:.0}{unit}", (l.value)(s))) }
                }
            }
            svg viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" aria-label={ (title) ", last " (hours) " hours" } {
                line.axis x1="0" y1=(HEIGHT - PAD) x2=(WIDTH) y2=(HEIGHT - PAD) {}
                @for l in series {
                    polyline class={ "line " (l.class) } fill="none" points=(points(samples, l.value, max, from, now)) {}
                }
            }
            div.notice { "0 – " (format!("{max:.0}{unit}")) " · " (time(Some(from))) " → now" }
        }
    }
}

pub(crate) async fn show(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    uri: Uri,
    Query(params): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let admin = match require(&state, &headers, &uri).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let hours: i64 = match params.get("range").map(String::as_str) {
        Some("7d") => 24 * 7,
        Some("30d") => 24 * 30,
        _ => 24,
    };
    let loaded =
        tokio::time::timeout(QUERY_TIMEOUT, samples::recent(&state.pool, hours as i32)).await;
    let data = match loaded {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => return unavailable("charts", e),
        Err(_) => return unavailable("charts", "timed out"),
    };
    let now = Utc::now();
    let body = html! {
        h1 { "The fleet over time" }
        p.notice {
            "One sample a minute, kept " (samples::RETENTION_DAYS) " days. Range: "
            a href="/charts" { "1 day" } " · " a href="/charts?range=7d" { "7 days" } " · "
            a href="/charts?range=30d" { "30 days" }
        }
        @if data.is_empty() {
            p #no-samples { "No samples yet: the first is taken within a minute of the daemon starting." }
        } @else {
            div.charts #charts {
                (chart("Live apps and desired users", "", &data, &[
                    Series { name: "live", class: "s1", value: |s| f64::from(s.live) },
                    Series { name: "desired", class: "s2", value: |s| f64::from(s.desired) },
                ], now, hours))
                (chart("Unhealthy apps", "", &data, &[
                    Series { name: "unhealthy", class: "s3", value: |s| f64::from(s.unhealthy) },
                ], now, hours))
                (chart("Apps in error", "", &data, &[
                    Series { name: "error", class: "s3", value: |s| f64::from(s.errors) },
                ], now, hours))
                (chart("Monthly cost (USD)", "", &data, &[
                    Series { name: "cost", class: "s1", value: |s| s.monthly_cost_usd },
                ], now, hours))
            }
        }
    };
    html_response(StatusCode::OK, page("Charts", Some(&admin), None, body))
}

/// Samples the fleet once a minute until `shutdown`; a failed sample is logged and skipped.
pub async fn run_sampler(
    pool: PgPool,
    paid_tiers: Vec<String>,
    paid_statuses: Vec<String>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut every = tokio::time::interval(Duration::from_secs(60));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
        // A shutdown does not wait for a sample (a database going away could hold it for the pool's
        // acquire timeout); a lost sample is a gap of one minute in a chart.
        tokio::select! {
            r = samples::sample(&pool, &paid_tiers, &paid_statuses) => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "console: could not sample the fleet for the charts");
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}
