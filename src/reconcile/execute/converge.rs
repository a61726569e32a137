//! Converge one user's app to the spec: provision, adopt, repair and roll out are the same walk.
//!
//! # Expected flow
//! 1. Row: reserve the name in `user_fly_apps` (new user), reuse the soft-deleted row (re-upgrade),
//!    or resume the existing one. From here on, an app with that name in our org is ours.
//! 2. App: `GET /v1/apps/{name}`; 404 → `POST /v1/apps`; 422 `name_taken` → GET again and adopt if
//!    it is in our org; 403 (someone else's) → record the next candidate name. Wait out the
//!    post-create 404 window. Record `fly_app_id`.
//! 3. Secrets: if the digest differs, write them and record the returned version.
//! 4. IPs: `v6` + `shared_v4` unless already listed; record `ips_ready`.
//! 5. Machine: the recorded one, else one found by metadata `vyx_user_id` (duplicates destroyed),
//!    else record a fresh `machine_op_id`, then create with it in metadata, then record the id.
//! 6. Config: update (whole config, `current_version`, `min_secrets_version`) if it differs; a region
//!    change replaces the machine. Start it if it is down.
//! 7. Wait `started`, then all checks `passing` → `active`, `healthy`.
//!
//! # Guarantees
//! - Never two apps for a user: the name is fixed in the row before any create, and a create whose
//!   answer was lost is adopted through `name_taken` + GET.
//! - Never two machines: the op id is recorded before the create and found by metadata afterwards;
//!   if a lagging list still lets a duplicate through, the next pass destroys the extra.
//!
//! # Assumptions
//! - Only this controller creates apps named with the managed prefix in our org.
//!
//! # Caveats
//! - Secrets removed from `USER_APP_SECRETS` stay set in existing apps (only added/changed values
//!   are written).

use std::collections::BTreeMap;
use tracing::{info, warn};
use uuid::Uuid;

use super::machine_config::{desired_config, matches};
use super::{Ctx, ExecError, wait};
use crate::db::apps::{Event, NewRow, StoreError, load_row, load_row_for_user};
use crate::failpoint::{self as fp, hit};
use crate::fly::{
    CreateAppRequest, CreateMachineRequest, FlyError, IpType, ListMachines, Machine, MachineConfig,
    MachineState, StopMachineRequest, UpdateMachineRequest,
};
use crate::reconcile::naming;
use crate::reconcile::observed::{META_OP, META_USER_ID};
use crate::reconcile::plan::ConvergeReason;
use crate::reconcile::recorded::{AppRow, RowStatus};
use crate::reconcile::spec::{config_digest, monthly_cost_estimate_usd, secrets_digest};

pub(super) async fn converge(
    ctx: &Ctx,
    user_id: Uuid,
    row_id: Option<Uuid>,
    reason: &ConvergeReason,
    image: &str,
) -> Result<(), ExecError> {
    let row = ensure_row(ctx, user_id, row_id, reason, image).await?;
    info!(app = %row.fly_app_name, reason = reason.as_str(), "converging");
    let row = ensure_app(ctx, row).await?;
    let secrets_written = ensure_secrets(ctx, &row).await?;
    ensure_ips(ctx, &row).await?;
    let row = reload(ctx, row.id).await?;
    let machine = ensure_machine(ctx, &row, image, secrets_written).await?;
    // Fly runs this config from here on, healthy or not: record it now, so a rollout that fails its
    // checks counts towards halting and a crash before health resumes without another update.
    if row.docker_image.as_deref() != Some(image)
        || row.config_digest.as_deref() != Some(config_digest(&ctx.spec).as_str())
    {
        ctx.store
            .set_applied_config(row.id, image, &config_digest(&ctx.spec))
            .await?;
    }
    let machine = ensure_running_and_healthy(ctx, &row, machine).await?;
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
    hit(fp::CONVERGE_AFTER_RECORD).await;
    info!(app = %row.fly_app_name, machine_id = %machine.id, "app active and healthy");
    Ok(())
}

async fn reload(ctx: &Ctx, row_id: Uuid) -> Result<AppRow, ExecError> {
    load_row(ctx.store.pool(), row_id)
        .await?
        .ok_or(ExecError::RowGone)
}

/// Step 1: the row that owns the name.
async fn ensure_row(
    ctx: &Ctx,
    user_id: Uuid,
    row_id: Option<Uuid>,
    reason: &ConvergeReason,
    image: &str,
) -> Result<AppRow, ExecError> {
    let existing = match row_id {
        Some(id) => load_row(ctx.store.pool(), id).await?,
        None => load_row_for_user(ctx.store.pool(), user_id).await?,
    };
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
        return reload(ctx, id).await;
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
    reload(ctx, row.id).await
}

/// The first candidate name that is neither recorded for another of our users nor held by another
/// org (DESIGN §3).
async fn pick_new_name(ctx: &Ctx, user_id: Uuid) -> Result<String, ExecError> {
    for n in 0..naming::MAX_CANDIDATES {
        let name = naming::candidate(&ctx.prefix, user_id, n);
        if ctx.store.name_recorded_for_other(&name, user_id).await? {
            continue;
        }
        match ctx.fly.get_app(&name).await {
            Err(FlyError::Forbidden { .. }) => {
                info!(app = %name, "name held by another organisation; next candidate");
                continue;
            }
            Ok(app) if !in_our_org(ctx, &app) => continue,
            Ok(_) | Err(FlyError::NotFound { .. }) => return Ok(name),
            Err(e) => return Err(e.into()),
        }
    }
    Err(ExecError::NeedsHuman(format!(
        "all {} candidate app names are taken",
        naming::MAX_CANDIDATES
    )))
}

/// REFERENCE §2.3: a 200 means the token can see the app (ours, or at least our org's). An answer
/// that names another org is not ours; one that names none is taken at the 200's word.
pub(super) fn in_our_org(ctx: &Ctx, app: &crate::fly::App) -> bool {
    app.organization
        .as_ref()
        .is_none_or(|o| o.slug.is_empty() || o.slug == ctx.spec.org_slug)
}

/// Step 2: the app exists in our org and is visible.
async fn ensure_app(ctx: &Ctx, mut row: AppRow) -> Result<AppRow, ExecError> {
    for _ in 0..naming::MAX_CANDIDATES {
        let name = row.fly_app_name.clone();
        if !naming::is_managed(&ctx.prefix, &name) {
            return Err(ExecError::NeedsHuman(format!(
                "row names unmanaged app {name}"
            )));
        }
        match ctx.fly.get_app(&name).await {
            Ok(app) if in_our_org(ctx, &app) => {
                if row.fly_app_id.as_deref() != Some(app.id.as_str()) {
                    ctx.store.set_app_id(row.id, &app.id).await?;
                }
                return reload(ctx, row.id).await;
            }
            Ok(_) | Err(FlyError::Forbidden { .. }) => {
                row = take_next_name(ctx, row).await?;
                continue;
            }
            Err(FlyError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let req = CreateAppRequest {
            name: name.clone(),
            org_slug: ctx.spec.org_slug.clone(),
            // Its own 6PN network: users must not reach each other over .internal (DESIGN §3).
            network: Some(name.clone()),
            idempotency_key: None,
        };
        hit(fp::PROVISION_APP_CREATE_BEFORE).await;
        match ctx.fly.create_app(&req).await {
            Ok(created) => {
                hit(fp::PROVISION_APP_CREATE_AFTER_CALL).await;
                ctx.store.set_app_id(row.id, &created.id).await?;
                hit(fp::PROVISION_APP_CREATE_AFTER_RECORD).await;
                info!(app = %name, "app created");
            }
            Err(FlyError::NameTaken { .. }) => {
                // Ours from an earlier attempt whose answer was lost, someone else's, or ours but
                // still inside the post-create 404 window: GET tells which (below).
                info!(app = %name, "name taken; checking who holds it");
            }
            Err(e) => return Err(e.into()),
        }
        let app = wait::until(
            ctx.timeouts.app_visible,
            "app to become visible",
            || async {
                match ctx.fly.get_app(&name).await {
                    Ok(app) => Ok(Some(Ok(app))),
                    Err(FlyError::Forbidden { .. }) => Ok(Some(Err(()))),
                    Err(FlyError::NotFound { .. }) => Ok(None),
                    Err(e) if e.is_transient() => Ok(None),
                    Err(e) => Err(e.into()),
                }
            },
        )
        .await?;
        match app {
            Ok(app) if in_our_org(ctx, &app) => {
                if row.fly_app_id.as_deref() != Some(app.id.as_str()) {
                    ctx.store.set_app_id(row.id, &app.id).await?;
                }
                return reload(ctx, row.id).await;
            }
            _ => {
                row = take_next_name(ctx, row).await?;
            }
        }
    }
    Err(ExecError::NeedsHuman("no usable app name".into()))
}

/// Our name is held by another org. Only a row that never owned an app may move to the next name.
async fn take_next_name(ctx: &Ctx, row: AppRow) -> Result<AppRow, ExecError> {
    if row.machine_id.is_some() {
        return Err(ExecError::NeedsHuman(format!(
            "app {} that this row owned is now held by another organisation",
            row.fly_app_name
        )));
    }
    let current = (0..naming::MAX_CANDIDATES)
        .find(|n| naming::candidate(&ctx.prefix, row.user_id, *n) == row.fly_app_name);
    let start = current.map_or(0, |n| n + 1);
    for n in start..naming::MAX_CANDIDATES {
        let name = naming::candidate(&ctx.prefix, row.user_id, n);
        if name == row.fly_app_name
            || ctx
                .store
                .name_recorded_for_other(&name, row.user_id)
                .await?
        {
            continue;
        }
        warn!(old = %row.fly_app_name, new = %name, "app name held by another organisation; renaming");
        match ctx.store.rename(row.id, &name).await {
            Ok(()) => return reload(ctx, row.id).await,
            Err(StoreError::NameRecorded) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ExecError::NeedsHuman(format!(
        "all {} candidate app names are taken",
        naming::MAX_CANDIDATES
    )))
}

/// Step 3. Returns whether secrets were written (machines then need an update to see them).
async fn ensure_secrets(ctx: &Ctx, row: &AppRow) -> Result<bool, ExecError> {
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

/// Step 5 and 6: exactly one machine, running our config.
async fn ensure_machine(
    ctx: &Ctx,
    row: &AppRow,
    image: &str,
    secrets_written: bool,
) -> Result<Machine, ExecError> {
    let app = row.fly_app_name.as_str();
    let mut filter = ListMachines::default();
    filter
        .metadata
        .insert(META_USER_ID.into(), row.user_id.to_string());
    let mut listed = live_machines(ctx, app, &filter).await?;
    if listed.is_empty() && row.machine_op_id.is_some() {
        // An earlier attempt sent a create whose outcome we never saw, and machine lists lag
        // writes (REFERENCE §7): look again for a moment before creating a second machine.
        listed = wait::until(ctx.timeouts.list_lag, "machine list", || async {
            let ms = live_machines(ctx, app, &filter).await?;
            Ok((!ms.is_empty()).then_some(ms))
        })
        .await
        .or_else(|e| match e {
            ExecError::StillWaiting(_) => Ok(vec![]),
            e => Err(e),
        })?;
    }
    let op_matches = |m: &Machine| {
        row.machine_op_id.is_some()
            && m.metadata().and_then(|md| md.get(META_OP)) == row.machine_op_id.as_ref()
    };
    let keep = listed
        .iter()
        .find(|m| row.machine_id.as_deref() == Some(m.id.as_str()))
        .or_else(|| listed.iter().find(|m| op_matches(m)))
        .or_else(|| listed.first())
        .cloned();
    for extra in listed
        .iter()
        .filter(|m| Some(&m.id) != keep.as_ref().map(|k| &k.id))
    {
        warn!(machine_id = %extra.id, "duplicate machine for this user; destroying it");
        match ctx.fly.delete_machine(app, &extra.id, true).await {
            Ok(()) | Err(FlyError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let secrets_version = row
        .secrets_version
        .and_then(|v| u64::try_from(v).ok())
        .filter(|v| *v > 0);
    let Some(found) = keep else {
        return create_machine(ctx, row, image, secrets_version).await;
    };
    if row.machine_id.as_deref() != Some(found.id.as_str()) {
        info!(machine_id = %found.id, "adopting machine found by metadata");
        ctx.store.set_machine(row.id, Some(&found.id)).await?;
    }
    // The list may be a summary; the full config comes from GET.
    let current = match ctx.fly.get_machine(app, &found.id).await {
        Ok(m) => m,
        Err(FlyError::NotFound { .. }) => {
            ctx.store.clear_machine(row.id).await?;
            return Err(ExecError::StillWaiting(
                "machine vanished; recreating next pass",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    if current.region != ctx.spec.region {
        // Region cannot change in place (REFERENCE §3.4): replace the machine.
        warn!(machine_id = %current.id, from = %current.region, to = %ctx.spec.region, "region drift; replacing machine");
        match ctx.fly.delete_machine(app, &current.id, true).await {
            Ok(()) | Err(FlyError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        ctx.store.clear_machine(row.id).await?;
        let row = reload(ctx, row.id).await?;
        return create_machine(ctx, &row, image, secrets_version).await;
    }
    let base = current.config.clone().unwrap_or_default();
    let op = row
        .machine_op_id
        .clone()
        .unwrap_or_else(|| found.id.clone());
    let desired = desired_config(base.clone(), &ctx.spec, image, row.user_id, &op);
    let digest_stale = row.config_digest.as_deref() != Some(config_digest(&ctx.spec).as_str());
    if matches(&base, &desired) && !secrets_written && !digest_stale {
        return Ok(current);
    }
    info!(machine_id = %current.id, image, "updating machine config");
    let req = UpdateMachineRequest {
        config: desired,
        current_version: current.version.clone(),
        min_secrets_version: secrets_version,
        ..Default::default()
    };
    hit(fp::UPDATE_MACHINE_BEFORE).await;
    let updated = ctx.fly.update_machine(app, &current.id, &req).await?;
    hit(fp::UPDATE_MACHINE_AFTER_CALL).await;
    Ok(updated)
}

async fn live_machines(
    ctx: &Ctx,
    app: &str,
    filter: &ListMachines,
) -> Result<Vec<Machine>, ExecError> {
    Ok(ctx
        .fly
        .list_machines(app, filter)
        .await?
        .into_iter()
        .filter(|m| !m.state.is_gone())
        .collect())
}

async fn create_machine(
    ctx: &Ctx,
    row: &AppRow,
    image: &str,
    secrets_version: Option<u64>,
) -> Result<Machine, ExecError> {
    let op = match &row.machine_op_id {
        Some(op) => op.clone(),
        None => {
            let op = Uuid::new_v4().to_string();
            // Before the create: after a lost answer, this op id finds the machine.
            ctx.store.set_machine_op(row.id, &op).await?;
            op
        }
    };
    let req = CreateMachineRequest {
        config: desired_config(MachineConfig::default(), &ctx.spec, image, row.user_id, &op),
        region: Some(ctx.spec.region.clone()),
        min_secrets_version: secrets_version,
        ..Default::default()
    };
    hit(fp::PROVISION_MACHINE_CREATE_BEFORE).await;
    let m = ctx.fly.create_machine(&row.fly_app_name, &req).await?;
    hit(fp::PROVISION_MACHINE_CREATE_AFTER_CALL).await;
    ctx.store.set_machine(row.id, Some(&m.id)).await?;
    hit(fp::PROVISION_MACHINE_CREATE_AFTER_RECORD).await;
    info!(machine_id = %m.id, "machine created");
    Ok(m)
}

/// Step 7: started, then every check passing (REFERENCE §3.5: `started` only means booted).
async fn ensure_running_and_healthy(
    ctx: &Ctx,
    row: &AppRow,
    m: Machine,
) -> Result<Machine, ExecError> {
    let app = row.fly_app_name.as_str();
    if matches!(
        m.state,
        MachineState::Stopped | MachineState::Suspended | MachineState::Failed
    ) {
        info!(machine_id = %m.id, state = m.state.as_str(), "starting machine");
        match ctx.fly.start_machine(app, &m.id).await {
            Ok(()) => {}
            // Already starting or started by someone else.
            Err(FlyError::Conflict { .. } | FlyError::PreconditionFailed { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let deadline = ctx.timeouts.machine_started;
    wait::until(deadline, "machine to start", || async {
        match ctx
            .fly
            .wait_machine(
                app,
                &m.id,
                &["started"],
                None,
                std::time::Duration::from_secs(10),
            )
            .await
        {
            Ok(w) if w.state == MachineState::Started => Ok(Some(())),
            Ok(_) | Err(FlyError::Timeout { .. }) => Ok(None),
            Err(e) if e.is_transient() => Ok(None),
            // The long-poll refused (bad params, or an API without it): read the state instead.
            Err(FlyError::Invalid { .. } | FlyError::NotFound { .. }) => {
                match ctx.fly.get_machine(app, &m.id).await {
                    Ok(now) if now.state == MachineState::Started => Ok(Some(())),
                    Ok(_) => Ok(None),
                    Err(e) if e.is_transient() => Ok(None),
                    Err(e) => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    })
    .await?;
    let started_at = tokio::time::Instant::now();
    let healthy = wait::until(ctx.timeouts.healthy, "checks to pass", || async {
        match ctx.fly.get_machine(app, &m.id).await {
            Ok(m) if m.is_healthy() && !m.checks.is_empty() => Ok(Some(m)),
            // REFERENCE §3.5: checks may be absent until the first one runs. An API that reports
            // none for this long never will; `started` is then the best evidence there is.
            Ok(m)
                if m.state == MachineState::Started
                    && m.checks.is_empty()
                    && started_at.elapsed() >= ctx.timeouts.checks_appear =>
            {
                warn!(machine_id = %m.id, "no check results reported; accepting the started machine");
                Ok(Some(m))
            }
            Ok(_) => Ok(None),
            Err(e) if e.is_transient() => Ok(None),
            Err(e) => Err(e.into()),
        }
    })
    .await;
    match healthy {
        Ok(m) => Ok(m),
        Err(ExecError::StillWaiting(_)) => {
            let m = ctx.fly.get_machine(app, &m.id).await?;
            let failing: Vec<String> = m
                .checks
                .iter()
                .filter(|c| !c.is_passing())
                .map(|c| format!("{}={}", c.name, c.status))
                .collect();
            Err(ExecError::Unhealthy(format!(
                "checks not passing: {}",
                failing.join(", ")
            )))
        }
        Err(e) => Err(e),
    }
}

/// Read one machine's checks and record the app's health; events only on a change.
pub(super) async fn probe(ctx: &Ctx, row_id: Uuid) -> Result<(), ExecError> {
    let row = reload(ctx, row_id).await?;
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
    Ok(())
}

/// Stop a running machine gracefully (SIGTERM, then Fly's timeout) and wait for `stopped`.
pub(super) async fn stop_gracefully(ctx: &Ctx, app: &str, m: &Machine) -> Result<(), ExecError> {
    if !matches!(m.state, MachineState::Started | MachineState::Starting) {
        return Ok(());
    }
    let req = StopMachineRequest {
        signal: Some("SIGTERM".into()),
        timeout: Some(crate::fly::FlyDuration::from_secs(10)),
    };
    hit(fp::DEPROVISION_STOP_BEFORE).await;
    match ctx.fly.stop_machine(app, &m.id, &req).await {
        Ok(()) | Err(FlyError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    hit(fp::DEPROVISION_STOP_AFTER_CALL).await;
    let r = wait::until(ctx.timeouts.machine_stopped, "machine to stop", || async {
        match ctx
            .fly
            .wait_machine(
                app,
                &m.id,
                &["stopped"],
                m.version.as_deref(),
                std::time::Duration::from_secs(10),
            )
            .await
        {
            Ok(_) | Err(FlyError::NotFound { .. }) => Ok(Some(())),
            Err(FlyError::Timeout { .. }) => Ok(None),
            Err(e) if e.is_transient() => Ok(None),
            Err(e) => Err(e.into()),
        }
    })
    .await;
    if let Err(ExecError::StillWaiting(_)) = r {
        // Deleting the app removes the machine anyway; a slow stop must not block deprovisioning.
        warn!(machine_id = %m.id, "machine did not stop in time; deleting the app regardless");
        return Ok(());
    }
    r
}
