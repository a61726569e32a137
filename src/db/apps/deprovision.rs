//! The way out: the deprovision grace, the deprovision and the soft delete of a row; and the
//! orphans, managed apps no live row owns.

use uuid::Uuid;

use super::{Bind, Event, Store, StoreError, reset_app_markers, reset_progress};
use crate::model::desired::Wanted;

impl Store {
    pub async fn mark_unwanted(&self, row_id: Uuid, events: &[Event]) -> Result<(), StoreError> {
        self.update(
            row_id,
            "unwanted_since = COALESCE(unwanted_since, now())",
            vec![],
            events,
        )
        .await
    }

    pub async fn cancel_unwanted(&self, row_id: Uuid, events: &[Event]) -> Result<(), StoreError> {
        self.update(row_id, "unwanted_since = NULL", vec![], events)
            .await
    }

    /// Starts a deprovision: the row → `deprovisioning`. Returns `false`, changing nothing, unless the
    /// row is, at this instant, a live row whose user is unwanted and whose grace is over:
    /// - `unwanted_since` is set and `unwanted_since + grace` has passed (a targeted run that cancelled
    ///   the deprovision cleared it; one that restarted it moved it);
    /// - no override keeps the user: `present`, `paused`, and any value nobody understands (read as
    ///   paused) all do; `absent` lets the deprovision go whatever the subscription;
    /// - without an override, no subscription is paid under `wanted.policy`.
    ///
    /// Why in SQL, in the fenced write itself: the deprovision was planned from a read of the fleet
    /// that may be minutes old when a slot frees up for it; the user may have re-upgraded, an admin
    /// may have paused them, since. The caller must not touch Fly when this returns `false`.
    pub async fn mark_deprovisioning(
        &self,
        row_id: Uuid,
        wanted: &Wanted,
        events: &[Event],
    ) -> Result<bool, StoreError> {
        let grace_ms = wanted
            .deprovision_grace
            .num_milliseconds()
            .clamp(0, i64::MAX / 2);
        let res = self
            .update_where(
                row_id,
                "status = 'deprovisioning'",
                "a.deleted_at IS NULL \
                 AND a.status IN ('active', 'provisioning', 'error') \
                 AND a.unwanted_since IS NOT NULL \
                 AND a.unwanted_since + $3 * interval '1 millisecond' <= now() \
                 AND NOT EXISTS (SELECT 1 FROM vyx_fleet.user_fly_app_overrides o \
                                  WHERE o.user_id = a.user_id AND o.desired IS DISTINCT FROM 'absent') \
                 AND (EXISTS (SELECT 1 FROM vyx_fleet.user_fly_app_overrides o \
                               WHERE o.user_id = a.user_id AND o.desired = 'absent') \
                      OR NOT EXISTS (SELECT 1 FROM public.user_subscriptions s \
                                      WHERE s.user_id = a.user_id \
                                        AND s.tier = ANY($4) AND s.status = ANY($5)))",
                vec![
                    Bind::Int(Some(grace_ms)),
                    Bind::TextList(wanted.policy.tiers.clone()),
                    Bind::TextList(wanted.policy.statuses.clone()),
                ],
                events,
            )
            .await;
        match res {
            Ok(()) => Ok(true),
            // The fence holds, so the guard (or the row's existence) said no.
            Err(StoreError::Conflict) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The app is confirmed gone (404): soft-delete. The row stays for `signals.fly_app_id` and for a
    /// later re-upgrade, which reuses it and its name.
    pub async fn mark_deleted(&self, row_id: Uuid, events: &[Event]) -> Result<(), StoreError> {
        self.update(
            row_id,
            concat!(
                "status = 'deleted', deleted_at = now(), ",
                reset_progress!()
            ),
            vec![],
            events,
        )
        .await
    }

    /// Managed apps no live row owns, as seen by this pass: first sightings recorded, apps no longer
    /// seen forgotten (the grace counts across consecutive observations only).
    pub async fn sync_orphans(&self, names: &[String]) -> Result<(), StoreError> {
        let mut tx = crate::db::begin(&self.pool).await?;
        let (ok,): (bool,) = sqlx::query_as("SELECT vyx_fleet.fence($1)")
            .bind(self.term)
            .fetch_one(&mut *tx)
            .await?;
        if !ok {
            return Err(StoreError::Fenced);
        }
        sqlx::query("DELETE FROM vyx_fleet.orphans WHERE NOT (app_name = ANY($1))")
            .bind(names)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO vyx_fleet.orphans (app_name, first_seen_at, last_seen_at) \
             SELECT n, now(), now() FROM unnest($1::text[]) AS n \
             ON CONFLICT (app_name) DO UPDATE SET last_seen_at = now()",
        )
        .bind(names)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn forget_orphan(&self, name: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM vyx_fleet.orphans WHERE app_name = $1 AND vyx_fleet.fence($2)")
            .bind(name)
            .bind(self.term)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
