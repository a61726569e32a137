//! Reaction latency: from the committed `UPDATE user_subscriptions` to the first Fly call on that
//! user's behalf (the simulator's call log, same host clock), with NOTIFY and with polling only.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;
use vyx_fleet::sim::CallRecord;

use super::env::{Fleet, app_name, user_id};
use super::measure::round;
use super::stats::percentile;

/// Per flipped user: ms (in Fly time) from the commit to the first call naming its app (a new user's
/// first call is `GET /v1/apps/{candidate}`). Users never called are left out.
pub fn first_call_latencies(
    calls: &[CallRecord],
    flipped: &[(Uuid, DateTime<Utc>)],
    scale: f64,
) -> Vec<f64> {
    flipped
        .iter()
        .filter_map(|(u, at)| {
            let needle = format!("/v1/apps/{}", app_name(*u));
            calls
                .iter()
                .filter(|c| c.at >= *at && c.path.starts_with(&needle))
                .map(|c| c.at)
                .min()
                .map(|first| (first - *at).num_microseconds().unwrap_or(0) as f64 / 1000.0 * scale)
        })
        .collect()
}

/// Percentiles of `lat` (Fly ms, i.e. wall × scale), and the same on the wall clock (`*_real`).
///
/// With NOTIFY nothing on the way to the first call waits on simulated time (no Fly delay, no
/// bucket: a user's first call is its own first `GET`): it is the daemon's own work (NOTIFY
/// delivery, a few indexed reads, planning one user) under the background the bench runs at S× real
/// density (passes, probes, the new leader's full list). Multiplying that by S counts local CPU and
/// database time S times over; the wall figure is what a user would wait, itself pessimistic (the
/// background competing for the two cores is S× denser than in production). Both are recorded.
pub fn summary(mut lat: Vec<f64>, wanted: usize, scale: f64) -> Value {
    let n = lat.len();
    let p50 = percentile(&mut lat, 50.0);
    let p99 = percentile(&mut lat, 99.0);
    json!({
        "p50_ms": round(p50),
        "p99_ms": round(p99),
        "max_ms": round(percentile(&mut lat, 100.0)),
        "p50_ms_real": round(p50 / scale),
        "p99_ms_real": round(p99 / scale),
        "samples": n,
        "missed": wanted - n,
    })
}

/// `flips` free users (ids `first..first+flips`) upgraded one every `gap_s` Fly seconds while the
/// daemon runs; waits until each has a row (its first Fly call precedes the row).
pub async fn flips(
    f: &Fleet,
    first: u64,
    flips: usize,
    gap_s: f64,
    notify: bool,
) -> Result<Vec<f64>, String> {
    f.set_notify(notify).await;
    f.sim.clear_calls().await;
    let (stop, handle) = f.start_controller();
    let users: Vec<Uuid> = (first..first + flips as u64).map(user_id).collect();
    let gap = Duration::from_secs_f64(gap_s / f.scale);
    let mut flipped = Vec::with_capacity(flips);
    // Let the new leader's first pass start, so flips meet a running loop, not a cold start.
    tokio::time::sleep(gap).await;
    for u in &users {
        let at = if notify {
            f.set_tier(*u, "pro").await
        } else {
            f.set_tier_unheard(*u, "pro").await
        };
        flipped.push((*u, at));
        tokio::time::sleep(gap).await;
    }
    let started = Instant::now();
    let timeout = Duration::from_secs(600);
    loop {
        let seen: i64 =
            sqlx::query_scalar("SELECT count(*) FROM public.user_fly_apps WHERE user_id = ANY($1)")
                .bind(&users)
                .fetch_one(&f.admin)
                .await
                .unwrap_or(0);
        if seen >= flips as i64 {
            break;
        }
        if started.elapsed() > timeout {
            eprintln!("reaction: only {seen}/{flips} users reached after {timeout:?}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = stop.send(true);
    let _ = handle.await;
    f.set_notify(true).await;
    let calls = f.sim.calls().await;
    Ok(first_call_latencies(&calls, &flipped, f.scale))
}
