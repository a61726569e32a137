//! One app's health verdict, and one machine's config drift (invariant 9). The
//! prober (`reconcile/prober.rs`) schedules them and writes what they find in batches.
//!
//! # Expected flow
//! 1. `GET` the app's own endpoint ([`HealthSource::Endpoint`]). Passing → healthy, no Fly call.
//! 2. Failing, and the row is not already known unhealthy: read the machine through the Fly API
//!    ([`HealthSource::FlyChecks`]) to confirm and to say why. Unhealthy only if Fly agrees (the
//!    machine `started` with checks not passing).
//! 3. [`config_drift`]: a machine whose version moved (the org list shows it) is read once and its
//!    env, services and checks compared with the spec; a difference clears what the row says was
//!    applied, and the next pass converges it.
//!
//! # Guarantees
//! - A healthy app costs no Fly API call; an unhealthy one costs one, when it turns unhealthy
//!   (the prober confirms only apps not already recorded unhealthy, a bounded number a round).
//!
//! # Assumptions
//! - A machine that is not `started` is the planner's business (the org list shows its state, and
//!   a converge or a rollout is moving it): no verdict.
//!
//! # Caveats
//! - The endpoint failing while Fly's checks pass (the edge, DNS, or our own egress) is logged, not
//!   recorded: a restart would not fix it, and a prober cut off from the internet must not turn
//!   into a restart of every app. Such an app costs one machine read per probe while it lasts.

use tracing::warn;
use uuid::Uuid;

use super::converge::reload;
use super::health::HealthSource;
use super::machine_config::{desired_config, matches};
use super::{Ctx, ExecError};
use crate::db::health::Verdict;
use crate::fly::FlyError;

/// A healthy verdict for `row_id` (from its endpoint), with the event's metadata.
pub(crate) fn healthy(row_id: Uuid) -> Verdict {
    Verdict {
        row_id,
        healthy: true,
        metadata: serde_json::json!({"source": "endpoint"}),
    }
}

/// `app`'s endpoint failed (`endpoint_detail`): read its machine through the Fly API. An unhealthy
/// verdict when Fly agrees; `None` when it does not, or the machine is gone or not `started`.
pub(crate) async fn confirm(
    ctx: &Ctx,
    row_id: Uuid,
    app: &str,
    endpoint_detail: &str,
) -> Result<Option<Verdict>, ExecError> {
    let row = reload(ctx, row_id).await?;
    let Some(fly) = HealthSource::FlyChecks
        .read(&ctx.fly, &row.fly_app_name, row.machine_id.as_deref())
        .await?
    else {
        return Ok(None);
    };
    let machine = fly.machine.as_ref();
    if fly.healthy {
        warn!(%app, endpoint = %endpoint_detail, "probe: the app's endpoint fails but Fly's checks pass; not acted on");
        return Ok(None);
    }
    if machine.is_some_and(|m| m.state != crate::fly::MachineState::Started) {
        return Ok(None);
    }
    warn!(%app, endpoint = %endpoint_detail, fly = %fly.detail, "probe: app unhealthy");
    Ok(Some(Verdict {
        row_id,
        healthy: false,
        metadata: serde_json::json!({
            "machine_id": machine.map(|m| m.id.clone()),
            "detail": format!("{endpoint_detail}; {}", fly.detail),
        }),
    }))
}

/// Read `row_id`'s machine once and forget the applied config if someone changed env, services or
/// checks behind our back (flyctl, the dashboard). The org list shows that the machine changed,
/// not what: this is the one read that tells.
pub(crate) async fn config_drift(ctx: &Ctx, row_id: Uuid) -> Result<bool, ExecError> {
    let row = reload(ctx, row_id).await?;
    let Some(id) = row.machine_id.as_deref() else {
        return Ok(false);
    };
    let m = match ctx.fly.get_machine(&row.fly_app_name, id).await {
        Ok(m) => m,
        Err(FlyError::NotFound { .. }) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    let image = row.docker_image.as_deref().unwrap_or(&ctx.spec.image);
    let op = row.machine_op_id.as_deref().unwrap_or_default();
    let base = m.config.clone().unwrap_or_default();
    let drift = !matches(
        &base,
        &desired_config(base.clone(), &ctx.spec, image, row.user_id, op),
    );
    if drift && row.config_digest.is_some() {
        warn!(app = %row.fly_app_name, machine_id = %m.id, "config drift found; converging next pass");
        ctx.store.forget_applied(row.id, true, false).await?;
    }
    Ok(drift)
}
