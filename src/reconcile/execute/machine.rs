//! Steps 5 to 7 of a converge: exactly one machine, running our config, started and passing its
//! checks; and the graceful stop a deprovision begins with.

use tracing::{info, warn};
use uuid::Uuid;

use super::converge::reload;
use super::machine_config::{desired_config, matches};
use super::verdict::{self, Verdict};
use super::{Ctx, ExecError, wait};
use crate::failpoint::{self as fp, hit};
use crate::fly::{
    CreateMachineRequest, FlyError, ListMachines, Machine, MachineConfig, MachineState,
    StopMachineRequest, UpdateMachineRequest,
};
use crate::reconcile::observed::META_OP;
use crate::reconcile::recorded::AppRow;
use crate::reconcile::spec::config_digest;

/// The machine a converge goes on with, and whether this converge just created it (Fly boots a new
/// machine by itself; one found in `created` was never launched and needs a start).
pub(super) struct Ensured {
    pub machine: Machine,
    pub fresh: bool,
}

/// Step 5 and 6: exactly one machine, running our config; with `keep`, the one the app has on the
/// config it runs (created from the app's rollback point when it has none).
pub(super) async fn ensure_machine(
    ctx: &Ctx,
    row: &AppRow,
    image: &str,
    secrets_written: bool,
    keep: bool,
) -> Result<Ensured, ExecError> {
    let app = row.fly_app_name.as_str();
    // Every machine in the user's own app is the user's, including ones the old edge functions made
    // without our metadata: they are adopted (and tagged by the update), never run beside a new one.
    let filter = ListMachines::default();
    let mut listed = live_machines(ctx, app, &filter).await?;
    if let Some(recorded) = &row.machine_id
        && !listed.iter().any(|m| &m.id == recorded)
    {
        // Lists are a lagging replica (REFERENCE §7); the machine we recorded is asked for by id
        // before anything concludes it is missing.
        match ctx.fly.get_machine(app, recorded).await {
            Ok(m) if !m.state.is_gone() => listed.insert(0, m),
            Ok(_) | Err(FlyError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
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
    // A healthy machine already in the target region (a make-before-break whose new machine was
    // never recorded: the leader died in its verdict wait) is the one to keep: keeping the old one
    // would destroy a working machine, then replace the old one with a third.
    let moved_healthy = (!keep)
        .then(|| {
            listed.iter().find(|m| {
                m.region == ctx.spec.region
                    && m.is_healthy()
                    && row.machine_id.as_deref() != Some(m.id.as_str())
                    && listed
                        .iter()
                        .all(|o| o.id == m.id || o.region != ctx.spec.region)
            })
        })
        .flatten();
    let keep_machine = moved_healthy
        .or_else(|| {
            listed
                .iter()
                .find(|m| row.machine_id.as_deref() == Some(m.id.as_str()))
        })
        .or_else(|| listed.iter().find(|m| op_matches(m)))
        .or_else(|| listed.first())
        .cloned();
    for extra in listed
        .iter()
        .filter(|m| Some(&m.id) != keep_machine.as_ref().map(|k| &k.id))
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
    let Some(found) = keep_machine else {
        if keep && let Some(point) = rollback_config(ctx, row).await? {
            return fresh(create_from(ctx, row, point, secrets_version).await);
        }
        return fresh(create_machine(ctx, row, image, secrets_version).await);
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
    if keep {
        return Ok(Ensured {
            machine: current,
            fresh: false,
        });
    }
    if current.region != ctx.spec.region {
        // Region cannot change in place (REFERENCE §3.4): a new machine there, and the old one
        // destroyed only once the new one passed its checks, so the user is never without one.
        warn!(machine_id = %current.id, from = %current.region, to = %ctx.spec.region, "region drift; replacing machine, make before break");
        let row = reload(ctx, row.id).await?;
        return match super::replace::make_before_break(ctx, &row, &current, image).await? {
            Ok(new_id) => Ok(Ensured {
                machine: ctx.fly.get_machine(app, &new_id).await?,
                fresh: false,
            }),
            Err(why) => Err(ExecError::Unhealthy(why)),
        };
    }
    let base = current.config.clone().unwrap_or_default();
    let op = row
        .machine_op_id
        .clone()
        .unwrap_or_else(|| found.id.clone());
    let desired = desired_config(base.clone(), &ctx.spec, image, row.user_id, &op);
    let digest_stale = row.config_digest.as_deref() != Some(config_digest(&ctx.spec).as_str());
    if matches(&base, &desired) && !secrets_written && !digest_stale {
        return Ok(Ensured {
            machine: current,
            fresh: false,
        });
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
    // An update relaunches the machine (REFERENCE §3.4): it needs no start of ours.
    Ok(Ensured {
        machine: updated,
        fresh: true,
    })
}

fn fresh(created: Result<Machine, ExecError>) -> Result<Ensured, ExecError> {
    created.map(|machine| Ensured {
        machine,
        fresh: true,
    })
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
    // `create_from` records the op id and stamps it into the metadata.
    let config = desired_config(MachineConfig::default(), &ctx.spec, image, row.user_id, "");
    create_from(ctx, row, (config, ctx.spec.region.clone()), secrets_version).await
}

/// The app's rollback point: the config and region it last ran healthily (no secret values).
async fn rollback_config(
    ctx: &Ctx,
    row: &AppRow,
) -> Result<Option<(MachineConfig, String)>, ExecError> {
    let Some((_, point)) =
        crate::db::rollout::load_rollback_point(ctx.store.pool(), row.id).await?
    else {
        return Ok(None);
    };
    let config = point
        .get("config")
        .and_then(|c| serde_json::from_value::<MachineConfig>(c.clone()).ok());
    let region = point
        .get("region")
        .and_then(|r| r.as_str())
        .filter(|r| !r.is_empty())
        .unwrap_or(ctx.spec.region.as_str())
        .to_string();
    Ok(config.map(|c| (c, region)))
}

/// Create the app's machine with `config` in `region` (the spec's, or a rollback point's), its op id
/// recorded first so that a lost answer finds the machine instead of creating a second.
pub(super) async fn create_from(
    ctx: &Ctx,
    row: &AppRow,
    (mut config, region): (MachineConfig, String),
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
    config.metadata.insert(META_OP.into(), op);
    let req_image = config.image.clone();
    let req = CreateMachineRequest {
        config,
        region: Some(region),
        min_secrets_version: secrets_version,
        ..Default::default()
    };
    hit(fp::PROVISION_MACHINE_CREATE_BEFORE).await;
    let m = ctx.fly.create_machine(&row.fly_app_name, &req).await?;
    hit(fp::PROVISION_MACHINE_CREATE_AFTER_CALL).await;
    ctx.store.set_machine(row.id, Some(&m.id)).await?;
    hit(fp::PROVISION_MACHINE_CREATE_AFTER_RECORD).await;
    info!(machine_id = %m.id, image = %req_image, "machine created");
    Ok(m)
}

/// Step 7: started, then every check passing (REFERENCE §3.5: `started` only means booted). A
/// machine destroyed meanwhile ends the wait at once: the row forgets it and the next pass makes a
/// new one.
pub(super) async fn ensure_running_and_healthy(
    ctx: &Ctx,
    row: &AppRow,
    ensured: Ensured,
) -> Result<Machine, ExecError> {
    match wait_running_and_healthy(ctx, row, ensured).await {
        Err(ExecError::MachineGone) => {
            warn!("machine destroyed while waiting for it; recreating it next pass");
            ctx.store.clear_machine(row.id).await?;
            Err(ExecError::MachineGone)
        }
        r => r,
    }
}

async fn wait_running_and_healthy(
    ctx: &Ctx,
    row: &AppRow,
    Ensured { machine: m, fresh }: Ensured,
) -> Result<Machine, ExecError> {
    let app = row.fly_app_name.as_str();
    // `created` is where a machine made with `skip_launch`, or never launched, stays for good.
    let parked = matches!(
        m.state,
        MachineState::Stopped | MachineState::Suspended | MachineState::Failed
    ) || (m.state == MachineState::Created && !fresh);
    if m.state.is_gone() {
        return Err(ExecError::MachineGone);
    }
    if parked {
        info!(machine_id = %m.id, state = m.state.as_str(), "starting machine");
        match ctx.fly.start_machine(app, &m.id).await {
            Ok(()) => {}
            // Already starting or started by someone else.
            Err(FlyError::Conflict { .. } | FlyError::PreconditionFailed { .. }) => {}
            Err(FlyError::NotFound { .. }) => return Err(ExecError::MachineGone),
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
                &["started", "destroyed"],
                None,
                std::time::Duration::from_secs(10),
            )
            .await
        {
            Ok(w) if w.state == MachineState::Started => Ok(Some(())),
            Ok(w) if w.state.is_gone() => Err(ExecError::MachineGone),
            Ok(_) | Err(FlyError::Timeout { .. }) => Ok(None),
            Err(e) if e.is_transient() => Ok(None),
            // The long-poll refused (bad params, or an API without it): read the state instead.
            Err(FlyError::Invalid { .. } | FlyError::NotFound { .. }) => {
                match ctx.fly.get_machine(app, &m.id).await {
                    Ok(now) if now.state == MachineState::Started => Ok(Some(())),
                    Ok(now) if now.state.is_gone() => Err(ExecError::MachineGone),
                    Ok(_) => Ok(None),
                    Err(FlyError::NotFound { .. }) => Err(ExecError::MachineGone),
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
            Ok(m) if m.state.is_gone() => Err(ExecError::MachineGone),
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
            // The same verdict a rollout's move gets: a process that exits, or checks critical
            // past their grace, fail the converge now instead of at the end of the health budget.
            Ok(m) => match verdict::judge(&m, None, started_at.elapsed()) {
                Verdict::Healthy if !m.checks.is_empty() => Ok(Some(m)),
                Verdict::Failed(why) => Err(ExecError::Unhealthy(why)),
                Verdict::Healthy | Verdict::Pending => Ok(None),
            },
            Err(FlyError::NotFound { .. }) => Err(ExecError::MachineGone),
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
    // The version waited on: `m` may be an older copy than Fly's (lists lag updates, REFERENCE
    // §3.9, §7), or someone may update the machine meanwhile.
    let version = std::sync::Mutex::new(m.version.clone());
    let current = || version.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let r = wait::until(ctx.timeouts.machine_stopped, "machine to stop", || async {
        match ctx
            .fly
            .wait_machine(
                app,
                &m.id,
                &["stopped", "destroyed"],
                current().as_deref(),
                std::time::Duration::from_secs(10),
            )
            .await
        {
            Ok(_) | Err(FlyError::NotFound { .. }) => Ok(Some(())),
            Err(FlyError::Timeout { .. }) => Ok(None),
            Err(e) if e.is_transient() => Ok(None),
            // 400: that version is "currently replaced". flyctl re-reads the machine and waits
            // again (REFERENCE §3.8); so do we, on the version it runs now.
            Err(FlyError::Invalid { .. }) => match ctx.fly.get_machine(app, &m.id).await {
                Ok(now) if now.state.is_gone() || now.state == MachineState::Stopped => {
                    Ok(Some(()))
                }
                Ok(now) => {
                    *version.lock().unwrap_or_else(|p| p.into_inner()) = now.version;
                    Ok(None)
                }
                Err(FlyError::NotFound { .. }) => Ok(Some(())),
                Err(e) if e.is_transient() => Ok(None),
                Err(e) => Err(e.into()),
            },
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
