//! Take a user's app away; keep everything else.
//!
//! # Expected flow
//! 1. Row → `deprovisioning` (event `deprovision_started`), by a fenced write that re-checks in SQL
//!    that the row is still unwanted past its grace and that no override or paid subscription wants
//!    the user now ([`crate::db::apps::Store::mark_deprovisioning`]). If it changes no row the
//!    deprovision ends here, before any Fly call. From a successful write on, the deprovision runs to
//!    the end even if the user is wanted again; the next pass then provisions afresh with the same
//!    row/name.
//! 2. `GET /v1/apps/{name}`: 404, confirmed by a second 404 a moment later → step 5. 403, or an
//!    app in another org → not ours: never touched, step 5 (our app is gone either way).
//! 3. Stop each machine gracefully (SIGTERM, Fly's timeout); a slow stop does not block the delete.
//! 4. `DELETE /v1/apps/{name}` (202: asynchronous). Answered, the deletion gives its pass's
//!    concurrency slot back (`Ctx::slot`): from here it only reads, so it no longer counts against
//!    `MAX_CONCURRENCY`, and the next deletion starts while Fly finishes this one.
//! 5. Confirm 404 (twice, spaced), then the row → `deleted` + `deleted_at` (event
//!    `deprovision_completed`). The pass waits for this step as for any action.
//!
//! # Guarantees
//! - Only the app named in the row, in our org, with the managed prefix, is deleted (invariant 1).
//! - A deprovision planned before the user was wanted again (a re-upgrade, a `present` or `paused`
//!   override, a cancelled grace) sends no stop and no delete: step 1 decides on the database as it
//!   is when the step runs, not as the plan read it.
//! - The row is soft-deleted, never removed; user data in Supabase is never touched (invariant 5).
//!
//! # Assumptions
//! - Two 404s `not_found_confirm` apart are the truth. flaps answers false "not found" for apps
//!   that exist (REFERENCE §7); one such answer alone never soft-deletes a row whose app runs.
//!
//! # Caveats
//! - If Fly keeps answering 200 after the delete, the row stays `deprovisioning` and the next pass
//!   confirms again (the DELETE is repeated; Fly treats it as a no-op or answers 404).
//! - Two false 404s in a row still end a deprovision early. The app then has no live row, so it is
//!   reported as an orphan and deleted after `ORPHAN_GRACE`: late, never lost.
//! - Deletions waiting for their 404s hold no slot, so a pass may have more of them in progress than
//!   `MAX_CONCURRENCY`; they are bounded by Fly's deletion limit (the client's bucket paces the
//!   `DELETE`s, each waited for inside a slot) times the confirmation wait. Their final row writes
//!   share the pool with the working actions. An orphan's deletion gives its slot back the same way.

use tracing::{info, warn};
use uuid::Uuid;

use super::machine::stop_gracefully;
use super::{Ctx, ExecError, wait};
use crate::db::apps::load_row;
use crate::db::breaker::{self, DeletionGate};
use crate::db::orphans;
use crate::db::{Event, StoreError};
use crate::failpoint::{self as fp, hit};
use crate::fly::{FlyError, ListMachines};
use crate::reconcile::naming;
use crate::reconcile::recorded::RowStatus;

pub(super) async fn deprovision(ctx: &Ctx, row_id: Uuid) -> Result<(), ExecError> {
    let row = load_row(ctx.store.pool(), row_id)
        .await?
        .ok_or(ExecError::RowGone)?;
    let app = row.fly_app_name.clone();
    if !naming::is_managed(&ctx.prefix, &app) {
        return Err(ExecError::NeedsHuman(format!(
            "row names unmanaged app {app}"
        )));
    }
    match row.status() {
        Some(RowStatus::Deprovisioning) => {}
        Some(RowStatus::Active | RowStatus::Provisioning | RowStatus::Error) => {
            let ev = Event::new("deprovision_started", serde_json::json!({"app": app}));
            if !ctx
                .store
                .mark_deprovisioning(row.id, &ctx.wanted, &[ev])
                .await?
            {
                // Planned from an older read: the user is wanted again, paused, or its grace was
                // restarted. Nothing was written, so nothing is sent to Fly.
                info!(app = %app, "deprovision no longer due; app kept");
                return Ok(());
            }
            hit(fp::DEPROVISION_MARKED).await;
            info!(app = %app, "deprovisioning");
        }
        _ => return Err(ExecError::RowGone),
    }
    let ours = match get_app_confirmed(ctx, &app).await? {
        Some(a) => super::app::in_our_org(ctx, &a),
        None => false,
    };
    if ours {
        delete_app(
            ctx,
            &app,
            Some(row.user_id),
            fp::DEPROVISION_DELETE_BEFORE,
            fp::DEPROVISION_DELETE_AFTER_CALL,
        )
        .await?;
    }
    hit(fp::DEPROVISION_GONE_BEFORE_RECORD).await;
    let ev = Event::new(
        "deprovision_completed",
        serde_json::json!({"app": app, "app_existed": ours}),
    );
    ctx.store.mark_deleted(row.id, &[ev]).await?;
    hit(fp::DEPROVISION_AFTER_RECORD).await;
    info!(app = %app, "deprovisioned; row soft-deleted");
    Ok(())
}

/// Stop machines, delete the app, give the pass's slot back, wait for 404.
async fn delete_app(
    ctx: &Ctx,
    app: &str,
    user_id: Option<Uuid>,
    before: &'static str,
    after_call: &'static str,
) -> Result<(), ExecError> {
    let machines = match ctx.fly.list_machines(app, &ListMachines::default()).await {
        Ok(ms) => ms,
        Err(FlyError::NotFound { .. }) => vec![],
        Err(e) => return Err(e.into()),
    };
    for m in machines.iter().filter(|m| !m.state.is_gone()) {
        stop_gracefully(ctx, app, m).await?;
    }
    hit(before).await;
    // Logged for the breaker's sliding window before the call (a deletion whose answer is lost still
    // counts), and an orphan's ownership checked once more in the same fenced statement.
    match breaker::record_deletion(ctx.store.pool(), ctx.store.term(), app, user_id).await? {
        DeletionGate::Go => {}
        DeletionGate::Fenced => return Err(StoreError::Fenced.into()),
        DeletionGate::Owned => {
            info!(app = %app, "orphan adopted by a row meanwhile; not deleted");
            return Err(ExecError::RowGone);
        }
    }
    match ctx.fly.delete_app(app).await {
        Ok(()) | Err(FlyError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    // No further write: the rest is Fly's to finish and ours to confirm, outside the slots.
    ctx.slot.release();
    hit(after_call).await;
    wait::until(ctx.timeouts.app_gone, "app deletion to finish", || async {
        match get_app_confirmed(ctx, app).await {
            Ok(None) => Ok(Some(())),
            Ok(Some(_)) => Ok(None),
            Err(ExecError::Fly(e)) if e.is_transient() => Ok(None),
            Err(e) => Err(e),
        }
    })
    .await?;
    // No machine event reports a deleted app: without this it would look present until the resync.
    ctx.observed.app_deleted(app).await;
    Ok(())
}

/// `GET /v1/apps/{name}`, where `None` means gone: two 404s `not_found_confirm` apart (one may be
/// flaps' false "not found", REFERENCE §7). A 403 is someone else's app, so ours is gone too.
async fn get_app_confirmed(ctx: &Ctx, app: &str) -> Result<Option<crate::fly::App>, ExecError> {
    let mut not_found = 0;
    loop {
        match ctx.fly.get_app(app).await {
            Ok(a) => return Ok(Some(a)),
            Err(FlyError::Forbidden { .. }) => {
                warn!(app = %app, "app name held by another organisation; nothing of ours to delete");
                return Ok(None);
            }
            Err(FlyError::NotFound { .. }) if not_found == 0 => {
                not_found += 1;
                tokio::time::sleep(ctx.timeouts.not_found_confirm).await;
            }
            Err(FlyError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

/// An orphan (managed prefix, no live row) that stayed orphaned for `ORPHAN_GRACE`.
pub(super) async fn delete_orphan(ctx: &Ctx, app: &str) -> Result<(), ExecError> {
    if !naming::is_managed(&ctx.prefix, app) {
        return Err(ExecError::NeedsHuman(format!(
            "refusing to delete unmanaged app {app}"
        )));
    }
    match ctx.fly.get_app(app).await {
        Ok(a) if super::app::in_our_org(ctx, &a) => {}
        Ok(_) | Err(FlyError::NotFound { .. } | FlyError::Forbidden { .. }) => {
            ctx.store.forget_orphan(app).await?;
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    }
    if !orphans::still_orphaned(&ctx.store, app).await? {
        info!(app = %app, "orphan adopted by a row since the plan; not deleted");
        ctx.store.forget_orphan(app).await?;
        return Ok(());
    }
    warn!(app = %app, "deleting orphan app after its grace period");
    delete_app(
        ctx,
        app,
        None,
        fp::ORPHAN_DELETE_BEFORE,
        fp::ORPHAN_DELETE_AFTER_CALL,
    )
    .await?;
    ctx.store.forget_orphan(app).await?;
    hit(fp::ORPHAN_DELETE_AFTER_RECORD).await;
    Ok(())
}
