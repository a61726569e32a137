//! The leader's fenced writes to the rollout: its record, and each app's progress and rollback
//! point.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::columns_set::{HealthySpec, Progress, progress, running, running_binds};
use super::{RolloutRecord, RowRolloutState, Running, columns, load_current};
use crate::db::apps::{Bind, Event, Store, StoreError};
use crate::model::cost::monthly_cost_estimate_usd;
use crate::model::rollout::{Halt, Tally};

/// The leader's fenced writes.
impl Store {
    /// Starts a rollout of `target` unless the current one already has it. Returns the current
    /// rollout either way (a restarted leader finds its rollout and carries on).
    pub async fn start_rollout(
        &self,
        target_digest: &str,
        target_image: &str,
    ) -> Result<RolloutRecord, StoreError> {
        self.start_rollout_of(target_digest, target_image, None)
            .await
    }

    /// [`start_rollout`](Self::start_rollout) recording the target's non-secret spec. The new
    /// rollout's base is the spec the fleet last ran healthily: the previous rollout's target if
    /// it completed unhalted, else that rollout's own base.
    pub(crate) async fn start_rollout_of(
        &self,
        target_digest: &str,
        target_image: &str,
        target_spec: Option<&serde_json::Value>,
    ) -> Result<RolloutRecord, StoreError> {
        let started: Option<RolloutRecord> = sqlx::query_as(concat!(
            "INSERT INTO vyx_fleet.rollout (target_digest, target_image, target_spec, base_spec) \
             SELECT $1, $2, $4, \
                    (SELECT CASE WHEN p.completed_at IS NOT NULL AND NOT p.halted \
                                 THEN p.target_spec ELSE p.base_spec END \
                       FROM vyx_fleet.rollout p \
                      WHERE p.id = (SELECT max(id) FROM vyx_fleet.rollout)) \
              WHERE vyx_fleet.fence($3) \
                AND NOT EXISTS (SELECT 1 FROM vyx_fleet.rollout \
                                 WHERE id = (SELECT max(id) FROM vyx_fleet.rollout) \
                                   AND target_digest = $1) \
             RETURNING ",
            columns!()
        ))
        .bind(target_digest)
        .bind(target_image)
        .bind(self.term())
        .bind(target_spec)
        .fetch_optional(self.pool())
        .await?;
        if let Some(r) = started {
            return Ok(r);
        }
        self.require_fence().await?;
        match load_current(self.pool()).await? {
            Some(r) if r.target_digest == target_digest => Ok(r),
            _ => Err(StoreError::Conflict),
        }
    }

    /// Records the decision's counts (and completion) for `status` and the metrics.
    pub async fn save_rollout_progress(
        &self,
        rollout_id: i64,
        tally: &Tally,
        complete: bool,
    ) -> Result<(), StoreError> {
        let n = |v: usize| i32::try_from(v).unwrap_or(i32::MAX);
        let done = sqlx::query(
            "UPDATE vyx_fleet.rollout \
                SET waves_done = $2, moved = $3, failed = $4, rolled_back = $5, \
                    completed_at = CASE WHEN $6 THEN coalesce(completed_at, now()) END, \
                    updated_at = now() \
              WHERE id = $1 AND vyx_fleet.fence($7)",
        )
        .bind(rollout_id)
        .bind(i32::try_from(tally.waves_done).unwrap_or(i32::MAX))
        .bind(n(tally.moved()))
        .bind(n(tally.failed + tally.rolled_back))
        .bind(n(tally.rolled_back))
        .bind(complete)
        .bind(self.term())
        .execute(self.pool())
        .await?;
        self.one_row(done.rows_affected()).await
    }

    /// Persists a halt the decision found (first one wins: an existing halt is kept as it was).
    pub async fn halt_rollout(&self, rollout_id: i64, halt: &Halt) -> Result<(), StoreError> {
        self.halt_rollout_because(rollout_id, halt, None).await
    }

    /// [`halt_rollout`](Self::halt_rollout) with what the failed app showed (`failed app: why`),
    /// so the table, `status` and the alert name the failure, not only the rule that tripped.
    pub(crate) async fn halt_rollout_because(
        &self,
        rollout_id: i64,
        halt: &Halt,
        detail: Option<&str>,
    ) -> Result<(), StoreError> {
        let reason = match detail {
            Some(d) => format!("{}; {d}", halt.reason),
            None => halt.reason.to_string(),
        };
        let done = sqlx::query(
            "UPDATE vyx_fleet.rollout \
                SET halted = true, halt_kind = $2, halt_reason = $3, halted_at = $4, updated_at = now() \
              WHERE id = $1 AND NOT halted AND vyx_fleet.fence($5)",
        )
        .bind(rollout_id)
        .bind(halt.reason.kind())
        .bind(reason)
        .bind(halt.at)
        .bind(self.term())
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 0 {
            self.require_fence().await?;
        }
        Ok(())
    }

    /// Records an app's progress in a rollout. Written *before* the Fly update for `Moving` (so a
    /// restarted leader never moves it again for this rollout) and after each verdict.
    ///
    /// The machine version belongs to one move: entering `moving` (or another rollout) replaces it
    /// with `machine_version`, even when that is `None`. Kept from an earlier move, a retry after a
    /// failed update would take the old version for the update's answer, skip the update and judge
    /// the machine on a spec it never received.
    pub async fn set_app_rollout_state(
        &self,
        row_id: Uuid,
        rollout_id: i64,
        wave: u32,
        state: RowRolloutState,
        at: DateTime<Utc>,
        machine_version: Option<&str>,
    ) -> Result<(), StoreError> {
        let p = Progress::new(rollout_id, wave, state, machine_version, Some(at));
        self.update(row_id, progress!(), p.binds(), &[]).await
    }

    /// A move begins, before any Fly write: `moving` at the database's now, the app's current
    /// spec as its rollback point when it runs healthily (`rollback`: image and spec), and the
    /// move's event, in one statement.
    pub(crate) async fn begin_move(
        &self,
        row_id: Uuid,
        rollout_id: i64,
        wave: u32,
        rollback: Option<(&str, &serde_json::Value)>,
        events: &[Event],
    ) -> Result<(), StoreError> {
        let p = Progress::new(rollout_id, wave, RowRolloutState::Moving, None, None);
        let mut binds = p.binds();
        binds.push(Bind::Text(rollback.map(|(image, _)| image.to_string())));
        binds.push(Bind::Json(rollback.map(|(_, spec)| spec.clone())));
        let set = concat!(
            progress!(),
            ", healthy_image = coalesce($8, a.healthy_image), \
               healthy_spec = coalesce($9, a.healthy_spec)"
        );
        self.update(row_id, set, binds, events).await
    }

    /// Fly accepted the move's update: the version it returned, and what now runs (the record
    /// `record_running` makes), in one statement. `moving` restarts its clock here: the verdict's
    /// deadline counts from the update.
    pub(crate) async fn record_moved(
        &self,
        row_id: Uuid,
        rollout_id: i64,
        wave: u32,
        version: Option<&str>,
        r: &Running<'_>,
    ) -> Result<(), StoreError> {
        let p = Progress::new(rollout_id, wave, RowRolloutState::Moving, version, None);
        let mut binds = p.binds();
        binds.extend(running_binds(r));
        let set = concat!(progress!(), ", ", running!(8));
        self.update(row_id, set, binds, &[]).await
    }

    /// The new version is healthy: `soaking` from the database's now, and the row active and
    /// healthy (`mark_active`), with `events`, in one statement.
    pub(crate) async fn record_soaking(
        &self,
        row_id: Uuid,
        rollout_id: i64,
        wave: u32,
        events: &[Event],
    ) -> Result<(), StoreError> {
        let p = Progress::new(rollout_id, wave, RowRolloutState::Soaking, None, None);
        let set = concat!(progress!(), ", ", crate::db::apps::active!());
        self.update(row_id, set, p.binds(), events).await
    }

    /// Soaked: the spec that ran healthily through the soak becomes the rollback point (as
    /// [`record_healthy_spec`](Self::record_healthy_spec)) and the app `healthy` in the rollout,
    /// with `events`, in one statement.
    pub(crate) async fn record_settled(
        &self,
        row_id: Uuid,
        rollout_id: i64,
        wave: u32,
        healthy: &HealthySpec<'_>,
        events: &[Event],
    ) -> Result<(), StoreError> {
        let p = Progress::new(rollout_id, wave, RowRolloutState::Healthy, None, None);
        let mut binds = p.binds();
        binds.push(Bind::Text(Some(healthy.spec_digest.to_string())));
        binds.push(Bind::Text(Some(healthy.image.to_string())));
        binds.push(Bind::Json(Some(healthy.spec.clone())));
        binds.push(Bind::Text(healthy.image_digest.map(str::to_string)));
        let set = concat!(
            progress!(),
            ", spec_digest = $8, healthy_spec_digest = $8, healthy_image = $9, healthy_spec = $10, \
               image_digest = coalesce($11, a.image_digest)"
        );
        self.update(row_id, set, binds, events).await
    }

    /// The machine runs `spec_digest` healthily: remember it as the spec to roll back to.
    pub async fn record_healthy_spec(
        &self,
        row_id: Uuid,
        spec_digest: &str,
        image: &str,
        spec: &serde_json::Value,
        image_digest: Option<&str>,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE public.user_fly_apps \
                SET spec_digest = $2, healthy_spec_digest = $2, healthy_image = $3, healthy_spec = $4, \
                    image_digest = coalesce($5, image_digest), updated_at = now() \
              WHERE id = $1 AND vyx_fleet.fence($6)",
        )
        .bind(row_id)
        .bind(spec_digest)
        .bind(image)
        .bind(spec)
        .bind(image_digest)
        .bind(self.term())
        .execute(self.pool())
        .await?;
        self.one_row(done.rows_affected()).await
    }

    async fn require_fence(&self) -> Result<(), StoreError> {
        match crate::db::lease::fence_holds(self.pool(), self.term()).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(StoreError::Fenced),
            Err(crate::db::DbError::Query(e)) => Err(StoreError::Sql(e)),
            Err(_) => Err(StoreError::Conflict),
        }
    }

    async fn one_row(&self, affected: u64) -> Result<(), StoreError> {
        if affected == 1 {
            return Ok(());
        }
        self.require_fence().await?;
        Err(StoreError::Conflict)
    }
}

impl Store {
    /// The app runs healthily on a spec whose digest is unknown (before this version recorded
    /// digests): keep it as the rollback point without claiming a digest.
    pub(crate) async fn record_rollback_point(
        &self,
        row_id: Uuid,
        image: &str,
        spec: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE public.user_fly_apps SET healthy_image = $2, healthy_spec = $3, updated_at = now() \
              WHERE id = $1 AND vyx_fleet.fence($4)",
        )
        .bind(row_id)
        .bind(image)
        .bind(spec)
        .bind(self.term())
        .execute(self.pool())
        .await?;
        self.one_row(done.rows_affected()).await
    }
}

impl Store {
    /// A rollback put the machine back on the row's rollback point: the row names that spec
    /// (`spec_digest` = `healthy_spec_digest`, possibly unknown) and no longer claims the target's
    /// `config_digest`, which the machine does not run. Claimed, it would hide an env-only change
    /// from the planner and keep the app on the work list's rollout reason every tick.
    pub(crate) async fn record_rolled_back(
        &self,
        row_id: Uuid,
        image: &str,
        region: &str,
        cpus: u32,
        memory_mb: u32,
    ) -> Result<(), StoreError> {
        let cost = monthly_cost_estimate_usd(cpus, memory_mb);
        let done = sqlx::query(
            "UPDATE public.user_fly_apps \
                SET docker_image = $2, config_digest = NULL, spec_digest = healthy_spec_digest, \
                    deployed_at = now(), region = $3, cpu_count = $4, memory_mb = $5, \
                    monthly_cost_estimate_usd = $6::float8::numeric, updated_at = now() \
              WHERE id = $1 AND vyx_fleet.fence($7)",
        )
        .bind(row_id)
        .bind(image)
        .bind(region)
        .bind(i32::try_from(cpus).unwrap_or(i32::MAX))
        .bind(i32::try_from(memory_mb).unwrap_or(i32::MAX))
        .bind(cost)
        .bind(self.term())
        .execute(self.pool())
        .await?;
        self.one_row(done.rows_affected()).await
    }

    pub(crate) async fn record_running(
        &self,
        row_id: Uuid,
        r: &Running<'_>,
    ) -> Result<(), StoreError> {
        self.update(row_id, running!(3), running_binds(r), &[])
            .await
    }
}
