//! A converge's record on the row: what was created and applied, failures and their backoff,
//! health.

use uuid::Uuid;

use super::{Applied, Bind, Event, Store, StoreError, reset_app_markers, retry_millis, truncate};
use crate::model::app_row::RowStatus;

impl Store {
    /// Resume an `error` row: back to `provisioning` while a converge runs.
    pub(crate) async fn mark_provisioning(
        &self,
        row_id: Uuid,
        events: &[Event],
    ) -> Result<(), StoreError> {
        self.update(row_id, "status = 'provisioning'", vec![], events)
            .await
    }

    /// A collision before the app existed: record the next candidate (DESIGN §3). Refused (zero
    /// rows, `Conflict`) once the row knows a Fly app id: a row that owned an app is never moved
    /// off it, or that app would be left behind as an orphan.
    pub(crate) async fn rename(&self, row_id: Uuid, name: &str) -> Result<(), StoreError> {
        self.update_where(
            row_id,
            concat!("fly_app_name = $3, ", reset_app_markers!()),
            "a.fly_app_id IS NULL",
            vec![Bind::Text(Some(name.to_string()))],
            &[],
        )
        .await
    }

    /// The Fly app behind the row. Called only when the id differs from the recorded one: a new
    /// app (created, adopted, or re-created after being deleted out of band), so every per-app
    /// progress marker describes another app and is reset in this same statement.
    pub(crate) async fn set_app_id(&self, row_id: Uuid, app_id: &str) -> Result<(), StoreError> {
        self.update(
            row_id,
            concat!("fly_app_id = $3, ", reset_app_markers!()),
            vec![Bind::Text(Some(app_id.to_string()))],
            &[],
        )
        .await
    }

    /// Secrets written to the app. The machine only sees them after its next update (REFERENCE
    /// §4.3), so the record of what the machine has applied (`config_digest`) is cleared in the
    /// same statement: until an update carrying this `min_secrets_version` is recorded, the
    /// planner sees config drift, whatever happens in between (crash, lost lease, failed update).
    pub(crate) async fn set_secrets(
        &self,
        row_id: Uuid,
        version: i64,
        digest: &str,
    ) -> Result<(), StoreError> {
        self.update(
            row_id,
            "secrets_version = $3, secrets_digest = $4, config_digest = NULL",
            vec![
                Bind::Int(Some(version)),
                Bind::Text(Some(digest.to_string())),
            ],
            &[],
        )
        .await
    }

    pub(crate) async fn set_ips_ready(&self, row_id: Uuid) -> Result<(), StoreError> {
        self.update(row_id, "ips_ready = true", vec![], &[]).await
    }

    /// Recorded *before* `POST machines`: the op id goes into the machine's metadata, so a create
    /// whose answer was lost is found by it instead of being repeated.
    pub async fn set_machine_op(&self, row_id: Uuid, op: &str) -> Result<(), StoreError> {
        self.update(
            row_id,
            "machine_op_id = $3",
            vec![Bind::Text(Some(op.to_string()))],
            &[],
        )
        .await
    }

    pub(crate) async fn set_machine(
        &self,
        row_id: Uuid,
        machine_id: Option<&str>,
    ) -> Result<(), StoreError> {
        self.update(
            row_id,
            "machine_id = $3",
            vec![Bind::Text(machine_id.map(String::from))],
            &[],
        )
        .await
    }

    /// The machine vanished or is being replaced: forget it and its create marker.
    pub(crate) async fn clear_machine(&self, row_id: Uuid) -> Result<(), StoreError> {
        self.update(
            row_id,
            "machine_id = NULL, machine_op_id = NULL, config_digest = NULL",
            vec![],
            &[],
        )
        .await
    }

    /// What the machine runs from now on. Region, size and cost go with it, so the columns the
    /// admin page and billing read describe the machine (after a region move, a resize, or the
    /// adoption of a row another program recorded), not the settings of the day the row was made.
    pub(crate) async fn set_applied_config(
        &self,
        row_id: Uuid,
        applied: &Applied<'_>,
    ) -> Result<(), StoreError> {
        self.update(
            row_id,
            "docker_image = $3, config_digest = $4, deployed_at = now(), region = $5, \
             cpu_count = $6, memory_mb = $7, monthly_cost_estimate_usd = $8",
            vec![
                Bind::Text(Some(applied.image.to_string())),
                Bind::Text(Some(applied.config_digest.to_string())),
                Bind::Text(Some(applied.region.to_string())),
                Bind::Int(Some(applied.cpus.into())),
                Bind::Int(Some(applied.memory_mb.into())),
                Bind::Float(Some(applied.monthly_cost_usd)),
            ],
            &[],
        )
        .await
    }

    /// Converged: `active`, healthy, backoff cleared.
    pub(crate) async fn mark_active(
        &self,
        row_id: Uuid,
        events: &[Event],
    ) -> Result<(), StoreError> {
        self.update(row_id, super::active!(), vec![], events).await
    }

    /// A failed attempt: per-user backoff stored in the row (invariant 7), so it survives restarts and
    /// leader changes. `status` is `error` for converges and stays `deprovisioning` for deprovisions.
    pub async fn mark_failure(
        &self,
        row_id: Uuid,
        status: RowStatus,
        kind: &str,
        message: &str,
        retry_in: std::time::Duration,
        events: &[Event],
    ) -> Result<(), StoreError> {
        self.update(
            row_id,
            "status = $3, last_error_kind = $4, error_message = $5, \
             next_attempt_at = now() + $6 * interval '1 millisecond', \
             retry_count = COALESCE(retry_count, 0) + 1",
            vec![
                Bind::Text(Some(status.as_str().to_string())),
                Bind::Text(Some(kind.to_string())),
                Bind::Text(Some(truncate(message, 500))),
                Bind::Int(Some(retry_millis(retry_in))),
            ],
            events,
        )
        .await
    }

    /// The app serves on the new config but fails its checks: keep it (a rollback is a new image),
    /// and let the planner count it towards halting the rollout.
    pub(crate) async fn mark_unhealthy(
        &self,
        row_id: Uuid,
        kind: &str,
        message: &str,
        retry_in: std::time::Duration,
        events: &[Event],
    ) -> Result<(), StoreError> {
        self.update(
            row_id,
            "status = 'error', health_status = 'unhealthy', last_health_check = now(), \
             last_error_kind = $3, error_message = $4, \
             next_attempt_at = now() + $5 * interval '1 millisecond', \
             retry_count = COALESCE(retry_count, 0) + 1",
            vec![
                Bind::Text(Some(kind.to_string())),
                Bind::Text(Some(truncate(message, 500))),
                Bind::Int(Some(retry_millis(retry_in))),
            ],
            events,
        )
        .await
    }

    pub(crate) async fn record_health(
        &self,
        row_id: Uuid,
        healthy: bool,
        events: &[Event],
    ) -> Result<(), StoreError> {
        self.update(
            row_id,
            "health_status = $3, last_health_check = now()",
            vec![Bind::Text(Some(
                if healthy { "healthy" } else { "unhealthy" }.to_string(),
            ))],
            events,
        )
        .await
    }

    /// A probe saw drift: clear what the row claims was applied so the planner converges it.
    pub(crate) async fn forget_applied(
        &self,
        row_id: Uuid,
        config: bool,
        ips: bool,
    ) -> Result<(), StoreError> {
        let set = match (config, ips) {
            (true, true) => "config_digest = NULL, ips_ready = false",
            (true, false) => "config_digest = NULL",
            (false, true) => "ips_ready = false",
            (false, false) => return Ok(()),
        };
        self.update(row_id, set, vec![], &[]).await
    }

    /// Is this name recorded for a different user? (Our own collision: DESIGN §3.)
    pub(crate) async fn name_recorded_for_other(
        &self,
        name: &str,
        user_id: Uuid,
    ) -> Result<bool, StoreError> {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM public.user_fly_apps WHERE fly_app_name = $1 AND user_id <> $2",
        )
        .bind(name)
        .bind(user_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }
}
