//! Health probes, spread over passes (invariant 9): one machine read per probed app, recording its
//! health and noticing drift the org-wide list cannot show (env, services, IPs).

use tracing::warn;
use uuid::Uuid;

use super::converge::reload;
use super::machine_config::{desired_config, matches};
use super::{Ctx, ExecError};
use crate::db::apps::Event;
use crate::fly::FlyError;

/// Read one machine's checks and record the app's health; events only on a change.
pub(super) async fn probe(ctx: &Ctx, row_id: Uuid) -> Result<(), ExecError> {
    let row = reload(ctx, row_id).await?;
    tracing::Span::current().record("app", row.fly_app_name.as_str());
    let Some(machine_id) = row.machine_id.clone() else {
        return Ok(());
    };
    let m = match ctx.fly.get_machine(&row.fly_app_name, &machine_id).await {
        Ok(m) => m,
        // Gone: the next pass sees it missing from the org list and repairs it.
        Err(FlyError::NotFound { .. }) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let healthy = m.is_healthy();
    let was = row.health_status.as_deref() == Some("healthy");
    let events = match (was, healthy) {
        (true, false) => vec![Event::new(
            "health_check_failed",
            serde_json::json!({"machine_id": m.id, "state": m.state.as_str()}),
        )],
        (false, true) => vec![Event::new(
            "health_check_passed",
            serde_json::json!({"machine_id": m.id}),
        )],
        _ => vec![],
    };
    if !healthy {
        warn!(machine_id = %m.id, state = m.state.as_str(), "probe: app unhealthy");
    }
    ctx.store.record_health(row.id, healthy, &events).await?;

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
