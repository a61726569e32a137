//! An app's health as the prober and the repair ladder record it (migration
//! `20261130000600_health_repair.sql`): the current unhealthy spell and the last repair step.

use chrono::{DateTime, Utc};

/// One live row's probe and repair state.
#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct HealthState {
    pub unhealthy_since: Option<DateTime<Utc>>,
    pub last_probed_at: Option<DateTime<Utc>>,
    pub repair_step: Option<String>,
    pub repair_step_at: Option<DateTime<Utc>>,
}
