//! Orphans (invariant 4): managed-prefix apps no live row owns, deleted after `ORPHAN_GRACE`.

use super::apps::{Store, StoreError};

/// The last word before an orphan is deleted: no live row names `app` (a re-upgrade or a new user
/// may have adopted it since the plan was made) and this replica still holds the lease. Fenced, and
/// run immediately before the `DELETE`, so a stale plan cannot remove an app a row now owns.
pub(crate) async fn still_orphaned(store: &Store, app: &str) -> Result<bool, StoreError> {
    let (fenced, unowned): (bool, bool) = sqlx::query_as(
        "SELECT vyx_fleet.fence($2),
                NOT EXISTS (
                    SELECT 1 FROM public.user_fly_apps
                     WHERE fly_app_name = $1 AND deleted_at IS NULL AND status <> 'deleted'
                )",
    )
    .bind(app)
    .bind(store.term())
    .fetch_one(store.pool())
    .await?;
    if !fenced {
        return Err(StoreError::Fenced);
    }
    Ok(unowned)
}
