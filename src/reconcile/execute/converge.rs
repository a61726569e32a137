//! Converge one user's app to the spec: provision, adopt, repair and roll out are the same walk.
//!
//! # Expected flow
//! 1. Row: reserve the name in `user_fly_apps` (new user; chosen from the database alone, so the
//!    row, and with it the per-user backoff, exists before the first Fly call), reuse the
//!    soft-deleted row (re-upgrade), or resume the existing one. From here on, an app with that
//!    name in our org is ours.
//! 2. App: `GET /v1/apps/{name}`; 404 → `POST /v1/apps`; 422 `name_taken` → GET again and adopt if
//!    it is in our org; 403 (someone else's) → record the next candidate name, only while the row
//!    has never known an app id. Wait out the post-create window (404, and 403 after our own
//!    successful create). Record `fly_app_id`; a different id than the recorded one (the app was
//!    deleted and re-created) resets every per-app marker in the same statement.
//! 3. Secrets: if the digest differs, write them and record the returned version; the same
//!    statement clears `config_digest`, so the machine update that makes them effective is owed
//!    until it is recorded.
//! 4. IPs: `v6` + `shared_v4` unless already listed; record `ips_ready`.
//! 5. Machine: the recorded one (asked for by id when the lagging list misses it), else one found
//!    by metadata `vyx_op` or in the app (duplicates destroyed), else record a fresh
//!    `machine_op_id`, then create with it in metadata, then record the id.
//! 6. Config: update (whole config, `current_version`, `min_secrets_version`) if it differs; a region
//!    change replaces the machine. Start it if it is down (`stopped`, `suspended`, `failed`, or
//!    `created` and never launched).
//! 7. Wait `started`, then all checks `passing` → `active`, `healthy`. A machine destroyed
//!    meanwhile ends the wait at once; the row forgets it and the next pass makes another.
//!
//! # Guarantees
//! - Never two apps for a user: the name is fixed in the row before any create, and a create whose
//!   answer was lost is adopted through `name_taken` + GET.
//! - Never two machines: the op id is recorded before the create and found by metadata afterwards;
//!   if a lagging list still lets a duplicate through, the next pass destroys the extra.
//! - Never a row renamed away from an app it owns: `rename` is refused once `fly_app_id` is set.
//! - The row never claims a machine runs secrets it has not been updated with: a secrets write and
//!   the invalidation of `config_digest` commit together.
//! - A failure while changing an app that still serves leaves the row `active` (with
//!   `last_error_kind` and backoff); `error` means the user has no working app.
//!
//! # Assumptions
//! - Only this controller creates apps named with the managed prefix in our org.
//!
//! # Caveats
//! - Secrets removed from `USER_APP_SECRETS` stay set in existing apps (only added/changed values
//!   are written).

use std::collections::BTreeMap;
use tracing::info;
use uuid::Uuid;

use super::app::{ensure_app, pick_new_name};
use super::machine::{ensure_machine, ensure_running_and_healthy};
use super::{Ctx, ExecError};
use crate::db::apps::{Applied, NewRow, load_row};
use crate::db::{Event, StoreError, load_row_for_user};
use crate::failpoint::{self as fp, hit};
use crate::fly::{FlyError, IpType};
use crate::reconcile::plan::{ConvergeReason, ConvergeTo};
use crate::reconcile::recorded::{AppRow, RowStatus};
use crate::reconcile::spec::{
    StoredSpec, config_digest, monthly_cost_estimate_usd, secrets_digest,
};

pub(super) async fn converge(
    ctx: &Ctx,
    user_id: Uuid,
    row_id: Option<Uuid>,
    reason: &ConvergeReason,
    to: ConvergeTo,
) -> Result<(), ExecError> {
    // An app with no machine and no rollback point has nothing of its own to keep.
    let to = match (to, row_id) {
        (ConvergeTo::Current, Some(id)) => {
            let row = reload(ctx, id).await?;
            let point = crate::db::rollout::load_rollback_point(ctx.store.pool(), id).await?;
            if row.machine_id.is_none() && point.is_none() {
                ConvergeTo::LastHealthy
            } else {
                to
            }
        }
        _ => to,
    };
    if to == ConvergeTo::LastHealthy {
        let ctx = &last_healthy(ctx).await?;
        return Box::pin(converge(ctx, user_id, row_id, reason, ConvergeTo::Target)).await;
    }
    let (row, keep) = ensure_row(ctx, user_id, row_id, reason, to).await?;
    let image = match (&keep, &row.docker_image) {
        (true, Some(current)) => current.to_string(),
        _ => ctx.spec.image.clone(),
    };
    let image = image.as_str();
    tracing::Span::current().record("app", row.fly_app_name.as_str());
    info!(app = %row.fly_app_name, reason = reason.as_str(), to = to.as_str(), "converging");
    let row = ensure_app(ctx, row).await?;
    // Kept on its spec, an app that has secrets keeps them: new values are part of the target.
    let secrets_written = if keep && row.secrets_digest.is_some() {
        false
    } else {
        ensure_secrets(ctx, &row).await?
    };
    ensure_ips(ctx, &row).await?;
    let row = reload(ctx, row.id).await?;
    let ensured = ensure_machine(ctx, &row, image, secrets_written, keep).await?;
    if keep {
        return finish_kept(ctx, &row, reason, ensured).await;
    }
    // Fly runs this config from here on, healthy or not: record it now, so a rollout that fails its
    // checks counts towards halting and a crash before health resumes without another update.
    let digest = config_digest(&ctx.spec);
    let m = &ensured.machine;
    let guest = m.config.as_ref().and_then(|c| c.guest.as_ref());
    let cpus = guest.and_then(|g| g.cpus).unwrap_or(ctx.spec.cpus);
    let memory_mb = guest
        .and_then(|g| g.memory_mb)
        .unwrap_or(ctx.spec.memory_mb);
    let region = if m.region.is_empty() {
        ctx.spec.region.as_str()
    } else {
        m.region.as_str()
    };
    if row.docker_image.as_deref() != Some(image)
        || row.config_digest.as_deref() != Some(digest.as_str())
        || row.region.as_deref() != Some(region)
    {
        let applied = Applied {
            image,
            config_digest: &digest,
            region,
            cpus: i32::try_from(cpus).unwrap_or(i32::MAX),
            memory_mb: i32::try_from(memory_mb).unwrap_or(i32::MAX),
            monthly_cost_usd: monthly_cost_estimate_usd(cpus, memory_mb),
        };
        ctx.store.set_applied_config(row.id, &applied).await?;
    }
    let machine = ensure_running_and_healthy(ctx, &row, ensured).await?;
    hit(fp::CONVERGE_HEALTHY_BEFORE_RECORD).await;
    let was_active = row.status() == Some(RowStatus::Active);
    let healthy_ev = Event::new(
        "health_check_passed",
        serde_json::json!({"machine_id": machine.id, "checks": machine.checks.len()}),
    );
    let done_ev = Event::new(
        "provision_completed",
        serde_json::json!({"operation": reason.as_str(), "image": image, "machine_id": machine.id}),
    );
    let events = if was_active && row.health_status.as_deref() == Some("healthy") {
        vec![done_ev]
    } else {
        vec![healthy_ev, done_ev]
    };
    ctx.store.mark_active(row.id, &events).await?;
    // What runs healthily now is what a later rollout rolls this app back to.
    let applied = crate::reconcile::spec::AppSpec {
        image: image.to_string(),
        ..(*ctx.spec).clone()
    };
    ctx.store
        .record_healthy_spec(
            row.id,
            &crate::reconcile::spec::spec_digest(&applied),
            image,
            &super::rollout::rollback_point(&machine),
            machine.image_ref.as_ref().and_then(|r| r.digest.as_deref()),
        )
        .await?;
    hit(fp::CONVERGE_AFTER_RECORD).await;
    info!(app = %row.fly_app_name, machine_id = %machine.id, "app active and healthy");
    Ok(())
}

/// The executor context with the spec the fleet last ran healthily (the current rollout's base) in
/// place of the target; the target itself when none is recorded or this version cannot build it.
async fn last_healthy(ctx: &Ctx) -> Result<Ctx, ExecError> {
    let base = crate::db::rollout::load_current(ctx.store.pool())
        .await?
        .and_then(|r| r.base_spec)
        .and_then(|v| serde_json::from_value::<StoredSpec>(v).ok())
        .and_then(|b| b.over(&ctx.spec));
    let mut out = ctx.clone();
    if let Some(spec) = base {
        info!(image = %spec.image, "rollout halted: converging on the fleet's last healthy spec");
        out.spec = std::sync::Arc::new(spec);
    }
    Ok(out)
}

pub(super) async fn reload(ctx: &Ctx, row_id: Uuid) -> Result<AppRow, ExecError> {
    load_row(ctx.store.pool(), row_id)
        .await?
        .ok_or(ExecError::RowGone)
}

/// A repair that keeps the app on the spec it runs: started, healthy, and its running config
/// remembered as its rollback point; the row claims no target digest.
async fn finish_kept(
    ctx: &Ctx,
    row: &AppRow,
    reason: &ConvergeReason,
    ensured: super::machine::Ensured,
) -> Result<(), ExecError> {
    let machine = ensure_running_and_healthy(ctx, row, ensured).await?;
    let image = machine.config.as_ref().map(|c| c.image.clone());
    let done_ev = Event::new(
        "provision_completed",
        serde_json::json!({"operation": reason.as_str(), "kept_spec": true, "image": image, "machine_id": machine.id}),
    );
    let mut events = vec![done_ev];
    if row.health_status.as_deref() != Some("healthy") {
        events.insert(
            0,
            Event::new(
                "health_check_passed",
                serde_json::json!({"machine_id": machine.id, "checks": machine.checks.len()}),
            ),
        );
    }
    ctx.store.mark_active(row.id, &events).await?;
    ctx.store
        .record_rollback_point(
            row.id,
            image.as_deref().unwrap_or_default(),
            &super::rollout::rollback_point(&machine),
        )
        .await?;
    info!(app = %row.fly_app_name, machine_id = %machine.id, "app repaired on the spec it runs");
    Ok(())
}

/// Step 1: the row that owns the name, and whether the converge keeps the spec the app runs
/// (asked to, and the row records one).
async fn ensure_row(
    ctx: &Ctx,
    user_id: Uuid,
    row_id: Option<Uuid>,
    reason: &ConvergeReason,
    to: ConvergeTo,
) -> Result<(AppRow, bool), ExecError> {
    let existing = match row_id {
        Some(id) => load_row(ctx.store.pool(), id).await?,
        None => load_row_for_user(ctx.store.pool(), user_id).await?,
    };
    let keep = to == ConvergeTo::Current
        && existing
            .as_ref()
            .is_some_and(|r| r.docker_image.is_some() && r.status() != Some(RowStatus::Deleted));
    let image = match (
        &keep,
        existing.as_ref().and_then(|r| r.docker_image.as_deref()),
    ) {
        (true, Some(current)) => current.to_string(),
        _ => ctx.spec.image.clone(),
    };
    let image = image.as_str();
    let started = |extra: serde_json::Value| {
        let mut meta = serde_json::json!({"operation": reason.as_str(), "image": image});
        if let (Some(m), serde_json::Value::Object(x)) = (meta.as_object_mut(), extra) {
            m.extend(x);
        }
        Event::new("provision_started", meta)
    };
    let Some(row) = existing else {
        let name = pick_new_name(ctx, user_id).await?;
        let requested = Event::new("provision_requested", serde_json::json!({"app": name}));
        let new = NewRow {
            user_id,
            app_name: &name,
            org_slug: &ctx.spec.org_slug,
            region: &ctx.spec.region,
            image,
            cpus: ctx.spec.cpus as i32,
            memory_mb: ctx.spec.memory_mb as i32,
            monthly_cost_usd: monthly_cost_estimate_usd(ctx.spec.cpus, ctx.spec.memory_mb),
        };
        let id = match ctx
            .store
            .insert_row(&new, &[requested, started(serde_json::json!({}))])
            .await
        {
            Ok(id) => id,
            // Someone recorded the name between our check and the insert: the next pass picks again.
            Err(StoreError::NameRecorded | StoreError::Conflict) => return Err(ExecError::RowGone),
            Err(e) => return Err(e.into()),
        };
        info!(app = %name, "name reserved");
        hit(fp::PROVISION_ROW_RESERVED).await;
        return Ok((reload(ctx, id).await?, false));
    };
    match row.status() {
        Some(RowStatus::Deleted) => {
            let requested = Event::new(
                "provision_requested",
                serde_json::json!({"app": row.fly_app_name, "reupgrade": true}),
            );
            ctx.store
                .reuse_row(
                    row.id,
                    image,
                    &[requested, started(serde_json::json!({"reupgrade": true}))],
                )
                .await?;
        }
        Some(RowStatus::Error) => {
            let ev = Event::new(
                "recovery_attempted",
                serde_json::json!({"after": row.last_error_kind, "attempt": row.retry_count}),
            );
            ctx.store
                .mark_provisioning(row.id, &[ev, started(serde_json::json!({"resume": true}))])
                .await?;
        }
        Some(RowStatus::Active) => {
            // The app keeps serving while it is repaired or rolled: the status stays `active`.
            let mut evs = Vec::new();
            if !matches!(
                reason,
                ConvergeReason::ImageDrift
                    | ConvergeReason::ConfigDrift
                    | ConvergeReason::SecretsDrift
            ) {
                evs.push(Event::new(
                    "recovery_attempted",
                    serde_json::json!({"reason": reason.as_str()}),
                ));
            }
            // Every `provision_completed` has its `provision_started`, repairs included.
            evs.push(started(serde_json::json!({})));
            ctx.store.add_events(row.id, &evs).await?;
        }
        Some(RowStatus::Provisioning) => {}
        Some(RowStatus::Deprovisioning) | None => return Err(ExecError::RowGone),
    }
    Ok((reload(ctx, row.id).await?, keep))
}

/// Step 3. Returns whether secrets were written (machines then need an update to see them).
pub(super) async fn ensure_secrets(ctx: &Ctx, row: &AppRow) -> Result<bool, ExecError> {
    let digest = secrets_digest(&ctx.spec.secrets);
    if row.secrets_digest.as_deref() == Some(digest.as_str()) {
        return Ok(false);
    }
    if ctx.spec.secrets.is_empty() {
        ctx.store.set_secrets(row.id, 0, &digest).await?;
        return Ok(false);
    }
    let values: BTreeMap<String, Option<crate::secret::Secret>> = ctx
        .spec
        .secrets
        .iter()
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    hit(fp::PROVISION_SECRETS_BEFORE).await;
    // The step before may end in a wait for the app (no fenced write since): still leading?
    ctx.store.check_fence().await?;
    let version = ctx.fly.set_secrets(&row.fly_app_name, &values).await?;
    hit(fp::PROVISION_SECRETS_AFTER_CALL).await;
    ctx.store
        .set_secrets(row.id, i64::try_from(version).unwrap_or(i64::MAX), &digest)
        .await?;
    hit(fp::PROVISION_SECRETS_AFTER_RECORD).await;
    info!(secrets_version = version, names = ?ctx.spec.secrets.keys().collect::<Vec<_>>(), "secrets written");
    Ok(true)
}

/// Step 4: `v6` + `shared_v4`, as flyctl's first deploy does (REFERENCE §5).
async fn ensure_ips(ctx: &Ctx, row: &AppRow) -> Result<(), ExecError> {
    if row.ips_ready {
        return Ok(());
    }
    let ips = ctx.fly.list_ips(&row.fly_app_name).await?;
    let wanted = [
        (IpType::V6, ips.iter().any(|ip| ip.is_public_v6())),
        (IpType::SharedV4, ips.iter().any(|ip| ip.is_shared_v4())),
    ];
    hit(fp::PROVISION_IPS_BEFORE).await;
    if wanted.iter().any(|(_, present)| !present) {
        // Reached after reads only when the secrets were already in place: still leading?
        ctx.store.check_fence().await?;
    }
    for (ty, present) in wanted {
        if present {
            continue;
        }
        match ctx.fly.assign_ip(&row.fly_app_name, ty).await {
            Ok(_) => {}
            // "Already allocated" (REFERENCE §5: treat 409/422 on allocate alike).
            Err(FlyError::Conflict { .. } | FlyError::NameTaken { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    hit(fp::PROVISION_IPS_AFTER_CALL).await;
    ctx.store.set_ips_ready(row.id).await?;
    hit(fp::PROVISION_IPS_AFTER_RECORD).await;
    Ok(())
}
