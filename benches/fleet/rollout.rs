//! A new image rolled to a converged fleet with the default rollout settings (2 % in transition,
//! 60 s soak, scaled like every duration), and upgrades of users without an app while it runs.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use uuid::Uuid;
use vyx_fleet::reconcile::max_in_transition;
use vyx_fleet::sim::Timings;

use super::env::{Bench, Fleet, IMAGE_NEXT};
use super::measure::{by_class, converged_fleet, round, round3, throttled};
use super::reaction::first_call_latencies;
use super::stats;

/// Platform time of one app's move: replaced, booted on the new version, checks passing.
fn per_wave_platform_s() -> f64 {
    let t = Timings::default();
    (t.machine_update + t.machine_start + t.checks_settle).as_secs_f64()
}

#[derive(Debug, Default)]
struct Progress {
    completed: bool,
    halted: bool,
    waves: i64,
}

async fn progress(f: &Fleet) -> Progress {
    let row: Option<(bool, bool, i32)> = sqlx::query_as(
        "SELECT completed_at IS NOT NULL, halted, waves_done FROM vyx_fleet.rollout \
         WHERE target_image = $1 ORDER BY id DESC LIMIT 1",
    )
    .bind(IMAGE_NEXT)
    .fetch_optional(&f.admin)
    .await
    .ok()
    .flatten();
    row.map_or_else(Progress::default, |(completed, halted, waves)| Progress {
        completed,
        halted,
        waves: i64::from(waves),
    })
}

/// `apps` converged apps on the old image; the daemon restarted on `IMAGE_NEXT` moves them in
/// waves. `flips` free users upgraded meanwhile, spread over the first 80 % of the bound. Returns the
/// rollout entry and the flip latencies (commit → first Fly call for that user).
pub async fn rollout(b: &Bench, apps: usize, flips: usize) -> Result<(Value, Vec<f64>), String> {
    let mut f = converged_fleet(b, apps, flips).await?;
    f.set_image(IMAGE_NEXT)?;
    let cap = max_in_transition(&f.pass_cfg.waves, apps);
    let soak_s = f.settings.operations.rollout_soak.as_secs_f64();
    let bound_s = stats::rollout_bound(apps, cap, per_wave_platform_s(), soak_s);
    let bound_real = Duration::from_secs_f64(bound_s / b.scale);
    let timeout = bound_real * 8 + Duration::from_secs(180);
    let late: Vec<Uuid> = (apps as u64..(apps + flips) as u64)
        .map(super::env::user_id)
        .collect();
    f.sim.clear_calls().await;
    let started = Instant::now();
    let (stop, handle) = f.start_controller();
    let mut flipped = Vec::with_capacity(flips);
    let mut last = Progress::default();
    while started.elapsed() < timeout {
        let elapsed = started.elapsed().as_secs_f64();
        while flipped.len() < flips
            && elapsed
                >= bound_real.as_secs_f64() * 0.8 * (flipped.len() + 1) as f64 / (flips + 1) as f64
        {
            let u = late[flipped.len()];
            flipped.push((u, f.set_tier(u, "pro").await));
        }
        last = progress(&f).await;
        if last.completed || last.halted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let wall = started.elapsed();
    if !last.completed {
        eprintln!("rollout of {apps}: not complete after {wall:?} ({last:?})");
    }
    // The flipped users' first calls may trail the rollout's end on a tiny fleet.
    let deadline = Instant::now() + Duration::from_secs(60);
    while flipped.len() == flips && Instant::now() < deadline {
        let seen: i64 =
            sqlx::query_scalar("SELECT count(*) FROM public.user_fly_apps WHERE user_id = ANY($1)")
                .bind(&late)
                .fetch_one(&f.admin)
                .await
                .unwrap_or(0);
        if seen >= flips as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = stop.send(true);
    let _ = handle.await;
    let calls = f.sim.calls().await;
    let lat = first_call_latencies(&calls, &flipped, b.scale);
    let wall_s = wall.as_secs_f64() * b.scale;
    let entry = json!({
        "apps": apps,
        "scale": b.scale,
        "max_in_transition": cap,
        "soak_s": soak_s,
        "wall_s": round(wall_s),
        "wall_s_real": round(wall.as_secs_f64()),
        "bound_s": round(bound_s),
        "ratio": round3(bound_s / wall_s.max(1e-9)),
        "completed": last.completed,
        "halted": last.halted,
        "waves": last.waves,
        "waves_bound": stats::rollout_waves(apps, cap),
        "fly_calls": by_class(&calls),
        "fly_calls_total": calls.len(),
        "throttled": throttled(&calls),
    });
    f.stop().await;
    Ok((entry, lat))
}
