//! Step 2 of a converge: the app exists in our org, under a name no one else holds (DESIGN §3).

use tracing::{info, warn};
use uuid::Uuid;

use super::converge::reload;
use super::{Ctx, ExecError, wait};
use crate::db::StoreError;
use crate::failpoint::{self as fp, hit};
use crate::fly::{CreateAppRequest, FlyError};
use crate::reconcile::naming;
use crate::reconcile::recorded::AppRow;

/// The first candidate name not recorded for another of our users (DESIGN §3). Only the database
/// is asked: the row is reserved before any Fly call, so that every failure from here on has a
/// row to record its backoff in (invariant 7). A name another org holds is found by `ensure_app`,
/// which moves the still app-less row to the next candidate.
pub(super) async fn pick_new_name(ctx: &Ctx, user_id: Uuid) -> Result<String, ExecError> {
    for n in 0..naming::MAX_CANDIDATES {
        let name = naming::candidate(&ctx.prefix, user_id, n);
        if !ctx.store.name_recorded_for_other(&name, user_id).await? {
            return Ok(name);
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
pub(super) async fn ensure_app(ctx: &Ctx, mut row: AppRow) -> Result<AppRow, ExecError> {
    for _ in 0..naming::MAX_CANDIDATES {
        let name = row.fly_app_name.clone();
        if !naming::is_managed(&ctx.prefix, &name) {
            return Err(ExecError::NeedsHuman(format!(
                "row names unmanaged app {name}"
            )));
        }
        match ctx.fly.get_app(&name).await {
            Ok(app) if in_our_org(ctx, &app) => return record_app(ctx, &row, &app.id).await,
            Ok(_) | Err(FlyError::Forbidden { .. }) => {
                info!(app = %name, "name held by another organisation; next candidate");
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
        let created_by_us = match ctx.fly.create_app(&req).await {
            Ok(created) => {
                hit(fp::PROVISION_APP_CREATE_AFTER_CALL).await;
                row = record_app(ctx, &row, &created.id).await?;
                hit(fp::PROVISION_APP_CREATE_AFTER_RECORD).await;
                info!(app = %name, "app created");
                true
            }
            Err(FlyError::NameTaken { .. }) => {
                // Ours from an earlier attempt whose answer was lost, someone else's, or ours but
                // still inside the post-create 404 window: GET tells which (below).
                info!(app = %name, "name taken; checking who holds it");
                false
            }
            Err(e) => return Err(e.into()),
        };
        let app = wait::until(
            ctx.timeouts.app_visible,
            "app to become visible",
            || async {
                match ctx.fly.get_app(&name).await {
                    Ok(app) => Ok(Some(Ok(app))),
                    // We hold this name: our create just succeeded. A 403 now is Fly not having
                    // caught up (like the 404/401 of the post-create window), not another owner.
                    Err(FlyError::Forbidden { .. }) if created_by_us => Ok(None),
                    Err(FlyError::Forbidden { .. }) => Ok(Some(Err(()))),
                    // Right after a create Fly answers 404 or 401 for the new app until it has
                    // propagated (REFERENCE §7; fly-go's WaitForApp retries both). The create
                    // just succeeded with this token, so a 401 here is that window.
                    Err(FlyError::NotFound { .. } | FlyError::Unauthorized { .. }) => Ok(None),
                    Err(e) if e.is_transient() => Ok(None),
                    Err(e) => Err(e.into()),
                }
            },
        )
        .await?;
        match app {
            Ok(app) if in_our_org(ctx, &app) => return record_app(ctx, &row, &app.id).await,
            _ => {
                row = take_next_name(ctx, row).await?;
            }
        }
    }
    Err(ExecError::NeedsHuman("no usable app name".into()))
}

/// Record `app_id` as the app behind the row. A different id than the recorded one is another app
/// (ours re-created after a delete out of band, or Fly lost the old one): the store resets every
/// per-app marker in the same statement, so secrets, IPs and the machine are made again for it.
async fn record_app(ctx: &Ctx, row: &AppRow, app_id: &str) -> Result<AppRow, ExecError> {
    // An app without machines shows in no delta: the cache learns it here, not at the resync.
    ctx.observed.app_seen(&row.fly_app_name).await;
    if row.fly_app_id.as_deref() == Some(app_id) {
        return Ok(row.clone());
    }
    if let Some(old) = &row.fly_app_id {
        warn!(app = %row.fly_app_name, old_id = %old, new_id = %app_id, "a different app now holds the name; provisioning it afresh");
    }
    ctx.store.set_app_id(row.id, app_id).await?;
    reload(ctx, row.id).await
}

/// Our name is held by another org. Only a row that never owned an app may move to the next name:
/// renaming a row that owned one would leave that app to be deleted as an orphan.
async fn take_next_name(ctx: &Ctx, row: AppRow) -> Result<AppRow, ExecError> {
    if row.fly_app_id.is_some() || row.machine_id.is_some() {
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
            // The row learnt an app id meanwhile: it keeps its name.
            Err(StoreError::Conflict) => return Err(ExecError::RowGone),
            Err(e) => return Err(e.into()),
        }
    }
    Err(ExecError::NeedsHuman(format!(
        "all {} candidate app names are taken",
        naming::MAX_CANDIDATES
    )))
}
