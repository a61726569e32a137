//! Migration, steady state and deprovision, each against a fresh database and simulator.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use uuid::Uuid;
use vyx_fleet::db::Store;
use vyx_fleet::db::{self, lease};
use vyx_fleet::metrics::Metrics;
use vyx_fleet::reconcile::plan::Action;
use vyx_fleet::reconcile::{ObserveCache, Sweeper, Tick, WorkQueue};
use vyx_fleet::sim::{CallRecord, Timings};
use vyx_fleet::wiring;

use super::env::{Bench, Fleet, user_id};
use super::reaction::first_call_latencies;
use super::stats::{self, Limit};

pub fn by_class(calls: &[CallRecord]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for c in calls {
        *m.entry(c.class.clone()).or_default() += 1;
    }
    m
}

pub fn throttled(calls: &[CallRecord]) -> usize {
    calls.iter().filter(|c| c.status == Some(429)).count()
}

/// Platform latency of one app after its create, from the simulator's (unscaled) delays.
fn create_tail_s() -> f64 {
    let t = Timings::default();
    (t.app_visible_after + t.machine_create + t.machine_start + t.checks_settle).as_secs_f64()
}

/// `users` paid users without apps; the daemon started; `flips` free users upgraded while it runs,
/// spread over the first 80 % of the bound. Returns the migration entry and the flip latencies.
pub async fn migration(b: &Bench, users: usize, flips: usize) -> Result<(Value, Vec<f64>), String> {
    let f = b.fleet("migration").await?;
    let paid: Vec<Uuid> = (0..users as u64).map(user_id).collect();
    let late: Vec<Uuid> = (users as u64..(users + flips) as u64)
        .map(user_id)
        .collect();
    f.seed_users(&paid, "pro").await?;
    f.seed_users(&late, "free").await?;
    f.sim.clear_calls().await;
    // Documented: app creates are counted per org, 1 req/s with bursts of 3.
    let bound_s = stats::migration_bound(
        users,
        Limit {
            per_second: 1.0,
            burst: 3.0,
        },
        create_tail_s(),
    );
    let bound_real = Duration::from_secs_f64(bound_s / b.scale);
    let timeout = bound_real * 4 + Duration::from_secs(120);
    let started = Instant::now();
    let (stop, handle) = f.start_controller();
    let mut flipped: Vec<(Uuid, chrono::DateTime<chrono::Utc>)> = Vec::new();
    let mut done_at = None;
    loop {
        let elapsed = started.elapsed();
        while flipped.len() < flips
            && elapsed.as_secs_f64()
                >= bound_real.as_secs_f64() * 0.8 * (flipped.len() + 1) as f64 / (flips + 1) as f64
        {
            let u = late[flipped.len()];
            flipped.push((u, f.set_tier(u, "pro").await));
        }
        if done_at.is_none() && active_among(&f, &paid).await >= users as i64 {
            done_at = Some(started.elapsed());
        }
        let flips_done = flipped.len() == flips && active_among(&f, &late).await >= flips as i64;
        if done_at.is_some() && flips_done {
            break;
        }
        if elapsed > timeout {
            eprintln!("migration of {users}: timed out after {elapsed:?}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = stop.send(true);
    let _ = handle.await;
    let wall = done_at.unwrap_or_else(|| started.elapsed());
    let wall_s = wall.as_secs_f64() * b.scale;
    let calls = f.sim.calls().await;
    let lat = first_call_latencies(&calls, &flipped, b.scale);
    let entry = json!({
        "users": users,
        "wall_s": round(wall_s),
        "wall_s_real": round(wall.as_secs_f64()),
        "bound_s": round(bound_s),
        "ratio": round3(bound_s / wall_s.max(1e-9)),
        "completed": done_at.is_some(),
        "fly_calls": by_class(&calls),
        "fly_calls_total": calls.len(),
        "fly_calls_per_app": round(calls.len() as f64 / users.max(1) as f64),
        "throttled": throttled(&calls),
    });
    f.stop().await;
    Ok((entry, lat))
}

async fn active_among(f: &Fleet, users: &[Uuid]) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM public.user_fly_apps WHERE status = 'active' AND user_id = ANY($1)",
    )
    .bind(users)
    .fetch_one(&f.admin)
    .await
    .unwrap_or(0)
}

/// A converged fleet of `apps` (plus `spare` free users for the reaction runs), seeded directly.
pub async fn converged_fleet(b: &Bench, apps: usize, spare: usize) -> Result<Fleet, String> {
    let mut f = b.fleet("steady").await?;
    let paid: Vec<Uuid> = (0..apps as u64).map(user_id).collect();
    let free: Vec<Uuid> = (apps as u64..(apps + spare) as u64).map(user_id).collect();
    f.seed_users(&paid, "pro").await?;
    f.seed_users(&free, "free").await?;
    f.seed_converged(&paid).await?;
    Ok(f)
}

/// Interval ticks on a converged fleet, as the leader runs them ([`Sweeper::tick`]): the first of a
/// term is a full pass (reported as `full_pass`), the next ones are quiet sweeps (one delta list,
/// one work-list statement); the last of two quiet ticks is the entry. Each tick on a fresh pool,
/// closed before reading the statistics so the backends flush theirs.
pub async fn steady(b: &Bench, f: &mut Fleet, apps: usize) -> Result<Value, String> {
    let holder = wiring::holder_id();
    let term = lease::try_acquire(&f.admin, &holder, Duration::from_secs(3600))
        .await
        .map_err(|e| e.to_string())?
        .ok_or("lease taken")?;
    let metrics = Metrics::new();
    let mut base = f.ctx.clone();
    // Ticks 2 and 3 must be quiet ones (one changed-machine list), not a resync that falls due.
    base.observed = Arc::new(ObserveCache::new(Duration::from_secs(365 * 86_400)));
    base.users = WorkQueue::new();
    let mut entry = Value::Null;
    let mut full_pass = Value::Null;
    if b.settle_watermark {
        f.settle_watermark(user_id(0)).await?;
    }
    let mut sweeper = Sweeper::default();
    stats::reset_peak_rss();
    // What the bench holds before the daemon's first tick (the seeded fleet's harness, the pool).
    let rss_base = stats::rss_now_mb();
    for tick_no in 0..3 {
        let pool = db::connect(&f.url, 10).await.map_err(|e| e.to_string())?;
        let mut ctx = base.clone();
        ctx.store = Store::new(pool.clone(), term);
        let before = stats::db_counters(&f.admin, b.counter).await;
        f.sim.clear_calls().await;
        let cpu0 = stats::cpu_ms();
        let t0 = Instant::now();
        let tick = sweeper
            .tick(&ctx, &f.pass_cfg, &metrics)
            .await
            .map_err(|e| e.to_string())?;
        let wall = t0.elapsed();
        let cpu = stats::cpu_ms() - cpu0;
        pool.close().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = stats::db_counters(&f.admin, b.counter).await;
        let calls = f.sim.calls().await;
        let (kind, work, why) = match &tick {
            Tick::Full { report, why } => (
                "full_pass",
                report
                    .plan
                    .actions
                    .iter()
                    .filter(|a| !matches!(a, Action::SyncOrphans { .. }))
                    .count(),
                *why,
            ),
            Tick::Queued { users } => ("sweep", *users, "quiet"),
        };
        if work > 0 {
            eprintln!(
                "steady {apps}: tick {tick_no} ({kind}) was not quiet ({work} users/actions)"
            );
        }
        let wall_fly_ms = wall.as_secs_f64() * 1000.0 * b.scale;
        let (fly, _) = split_health(&calls);
        let figures = json!({
            "apps": apps,
            "scale": b.scale,
            "tick": kind,
            "why": why,
            "fly_calls": fly.len(),
            "fly_calls_by_class": by_class(&fly),
            "work": work,
            "db_queries": after.queries - before.queries,
            "rows_read": after.rows_read - before.rows_read,
            "cpu_ms": round(cpu),
            "wall_ms": round(wall_fly_ms),
            "wall_ms_real": round(wall.as_secs_f64() * 1000.0),
            "rss_mb": round(stats::peak_rss_mb()),
            "rss_base_mb": round(rss_base),
            "throttled": throttled(&calls),
        });
        if tick_no == 0 {
            full_pass = figures;
        } else {
            entry = figures;
        }
    }
    entry["full_pass"] = full_pass;
    let _ = lease::release(&f.admin, &holder, term).await;
    let window = steady_window(f).await;
    for (k, v) in window {
        entry[k] = v;
    }
    Ok(entry)
}

/// Calls to Fly's API, and the number of direct health probes (`GET /_sim/apps/{app}/health`,
/// which the simulator serves beside the API but which cost Fly's API nothing).
pub fn split_health(calls: &[CallRecord]) -> (Vec<CallRecord>, usize) {
    let is_health =
        |c: &CallRecord| c.path.starts_with("/_sim/apps/") && c.path.contains("/health");
    let fly: Vec<CallRecord> = calls.iter().filter(|c| !is_health(c)).cloned().collect();
    (fly.clone(), calls.len() - fly.len())
}

/// The request rate of a converged fleet under the running controller, over one resync cycle: from
/// a new leader's start (its full list) for 0.9 × `RESYNC_INTERVAL` (the earliest the jittered
/// resync can come again, so the window holds exactly one full list), with the quiet passes'
/// changed-machine lists and the scheduled probes in between.
async fn steady_window(f: &Fleet) -> Vec<(&'static str, Value)> {
    let window = f.ctx_resync().mul_f64(0.9);
    f.sim.clear_calls().await;
    let hits0 = f.sim.health_hits().await;
    let (stop, handle) = f.start_controller();
    tokio::time::sleep(window).await;
    let calls = f.sim.calls().await;
    let health = (f.sim.health_hits().await - hits0) as usize;
    // The prober starts with the leader's first full list, minutes into the window at 100,000
    // apps: its steady rate is read over one more probe interval, once it runs.
    let probe_window = f.settings.operations.health_probe_interval.div_f64(f.scale);
    let hits1 = f.sim.health_hits().await;
    tokio::time::sleep(probe_window).await;
    let probes = (f.sim.health_hits().await - hits1) as usize;
    let _ = stop.send(true);
    let _ = handle.await;
    let (fly, _) = split_health(&calls);
    let window_s = window.as_secs_f64() * f.scale;
    let full_lists = fly
        .iter()
        .filter(|c| c.class == "apps.list" && !c.path.contains("cursor="))
        .count();
    vec![
        ("fly_rps", json!(round3(fly.len() as f64 / window_s))),
        ("health_http_rps", json!(round3(health as f64 / window_s))),
        (
            "probe_http_rps",
            json!(round3(
                probes as f64 / (probe_window.as_secs_f64() * f.scale)
            )),
        ),
        ("window_s", json!(round(window_s))),
        (
            "resync_interval_s",
            json!(f.settings.resync_interval.as_secs_f64()),
        ),
        ("window_fly_calls", json!(fly.len())),
        ("window_fly_calls_by_class", json!(by_class(&fly))),
        ("window_full_lists", json!(full_lists)),
        ("window_throttled", json!(throttled(&fly))),
    ]
}

/// The one place the bench confirms deletions: what `vyx-fleet confirm-deletions` does (the
/// breaker's held set, confirmed as a whole).
async fn confirm_deletions(f: &Fleet) {
    let _ = vyx_fleet::db::breaker::confirm_held(&f.admin, "bench").await;
}

/// Whether the breaker holds deletions nobody has confirmed yet.
async fn unconfirmed_held(f: &Fleet) -> bool {
    vyx_fleet::db::breaker::load_held(&f.admin)
        .await
        .map(|h| h.iter().any(|d| d.confirmed_at.is_none()))
        .unwrap_or(false)
}

/// `users` converged apps downgraded in one transaction; the daemon (grace 0) deletes them all,
/// the operator confirming whenever the breaker holds deletions back.
pub async fn deprovision(b: &Bench, users: usize) -> Result<Value, String> {
    let f = converged_fleet(b, users, 0).await?;
    let bound_s = stats::deprovision_bound(
        users,
        Limit {
            per_second: 100.0 / 60.0,
            burst: 100.0,
        },
        (Timings::default().machine_stop + Timings::default().app_delete).as_secs_f64(),
    );
    let timeout = Duration::from_secs_f64(bound_s / b.scale * 4.0 + 120.0);
    let (stop, handle) = f.start_controller();
    let started = Instant::now();
    sqlx::query("UPDATE public.user_subscriptions SET tier = 'free'")
        .execute(&f.admin)
        .await
        .map_err(|e| e.to_string())?;
    confirm_deletions(&f).await;
    let mut completed = false;
    while started.elapsed() < timeout {
        if f.count_status("deleted").await >= users as i64 {
            completed = true;
            break;
        }
        if unconfirmed_held(&f).await {
            confirm_deletions(&f).await;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let wall = started.elapsed();
    let _ = stop.send(true);
    let _ = handle.await;
    let calls = f.sim.calls().await;
    let wall_s = wall.as_secs_f64() * b.scale;
    let entry = json!({
        "users": users,
        "wall_s": round(wall_s),
        "wall_s_real": round(wall.as_secs_f64()),
        "bound_s": round(bound_s),
        "ratio": round3(bound_s / wall_s.max(1e-9)),
        "completed": completed,
        "fly_calls": by_class(&calls),
        "throttled": throttled(&calls),
    });
    f.stop().await;
    Ok(entry)
}

pub fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
