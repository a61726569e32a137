//! Health probes, spread over passes (invariant 9; issue 7 item 6): one reading of each probed app
//! from its [`HealthSource`], recording health only when it changes, and noticing drift the
//! org-wide list cannot show (env, services, IPs).
//!
//! # Expected flow
//! 1. Read the app's health from its source (today the machine `GET` with Fly's checks).
//! 2. A transition (healthy ↔ unhealthy) writes `health_status`, `last_health_check` and one
//!    `health_check_passed`/`health_check_failed` event; every probe writes `last_probed_at` (probe
//!    scheduling) and starts or ends the unhealthy spell (`unhealthy_since`, the repair ladder).
//! 3. Config or IP drift found on the machine: forget what the row says was applied.
//!
//! # Guarantees
//! - One event per transition, however often the app is probed in between.
//!
//! # Assumptions
//! - A machine missing from Fly shows in the org list too; the planner repairs it from there.
//!
//! # Caveats
//! - A verdict is as fresh as the source: Fly's checks report on their own interval.

use tracing::warn;
use uuid::Uuid;

use super::converge::reload;
use super::health::HealthSource;
use super::machine_config::{desired_config, matches};
use super::{Ctx, ExecError};
use crate::db::apps::Event;

/// Read one app's health and record it; events only on a change.
pub(super) async fn probe(ctx: &Ctx, row_id: Uuid) -> Result<(), ExecError> {
    let row = reload(ctx, row_id).await?;
    tracing::Span::current().record("app", row.fly_app_name.as_str());
    let Some(reading) = HealthSource::default().read(ctx, &row).await? else {
        return Ok(());
    };
    let healthy = reading.healthy;
    let machine_id = reading.machine.as_ref().map(|m| m.id.clone());
    match (row.health_status.as_deref(), healthy) {
        (Some("unhealthy"), false) | (Some("healthy"), true) => {}
        (_, false) => {
            warn!(detail = %reading.detail, "probe: app unhealthy");
            let ev = Event::new(
                "health_check_failed",
                serde_json::json!({"machine_id": machine_id, "detail": reading.detail}),
            );
            ctx.store.record_health(row.id, false, &[ev]).await?;
        }
        (_, true) => {
            let ev = Event::new(
                "health_check_passed",
                serde_json::json!({"machine_id": machine_id}),
            );
            ctx.store.record_health(row.id, true, &[ev]).await?;
        }
    }
    ctx.store.record_probe(row.id, healthy).await?;

    let Some(m) = reading.machine else {
        return Ok(());
    };
    // Someone changed the machine or the IPs behind our back (flyctl, the dashboard): forget what
    // the row says was applied, and the next pass converges it.
    let image = row.docker_image.as_deref().unwrap_or(&ctx.spec.image);
    let op = row.machine_op_id.as_deref().unwrap_or_default();
    let base = m.config.clone().unwrap_or_default();
    let config_drift = !matches(
        &base,
        &desired_config(base.clone(), &ctx.spec, image, row.user_id, op),
    );
    let ips = ctx.fly.list_ips(&row.fly_app_name).await?;
    let ips_missing =
        !(ips.iter().any(|ip| ip.is_public_v6()) && ips.iter().any(|ip| ip.is_shared_v4()));
    if config_drift || ips_missing {
        warn!(machine_id = %m.id, config_drift, ips_missing, "probe: drift found; converging next pass");
        ctx.store
            .forget_applied(row.id, config_drift, ips_missing)
            .await?;
    }
    Ok(())
}
