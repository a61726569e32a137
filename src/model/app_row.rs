//! One `user_fly_apps` row as the controller reads it: written by the database layer, judged by
//! the planner, shown by the console.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::shared_str::{Interner, SharedStr};

/// `user_fly_apps.status`. The column is text; a value outside this list is reported, never acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RowStatus {
    Provisioning,
    Active,
    Error,
    Deprovisioning,
    Deleted,
}

impl RowStatus {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "provisioning" => Self::Provisioning,
            "active" => Self::Active,
            "error" => Self::Error,
            "deprovisioning" => Self::Deprovisioning,
            "deleted" => Self::Deleted,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provisioning => "provisioning",
            Self::Active => "active",
            Self::Error => "error",
            Self::Deprovisioning => "deprovisioning",
            Self::Deleted => "deleted",
        }
    }
}

/// One `user_fly_apps` row with the columns the controller reads.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AppRow {
    pub id: Uuid,
    pub user_id: Uuid,
    /// Whether `auth.users` still has this user; a row for a vanished user is reported, not acted on.
    pub user_exists: bool,
    pub fly_app_name: String,
    pub fly_org_slug: Option<SharedStr>,
    pub status: SharedStr,
    pub region: Option<SharedStr>,
    pub docker_image: Option<SharedStr>,
    pub health_status: Option<SharedStr>,
    pub last_health_check: Option<DateTime<Utc>>,
    pub retry_count: Option<i32>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub fly_app_id: Option<String>,
    pub machine_id: Option<String>,
    pub machine_op_id: Option<String>,
    pub secrets_version: Option<i64>,
    pub secrets_digest: Option<SharedStr>,
    pub ips_ready: bool,
    pub config_digest: Option<SharedStr>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub unwanted_since: Option<DateTime<Utc>>,
    pub last_error_kind: Option<SharedStr>,
}

impl AppRow {
    /// Share the fields most rows hold the same value of with the rows read before this one.
    pub fn intern(&mut self, i: &mut Interner) {
        i.intern(&mut self.status);
        for f in [
            &mut self.fly_org_slug,
            &mut self.region,
            &mut self.docker_image,
            &mut self.health_status,
            &mut self.secrets_digest,
            &mut self.config_digest,
            &mut self.last_error_kind,
        ] {
            i.intern_opt(f);
        }
    }

    pub fn status(&self) -> Option<RowStatus> {
        RowStatus::parse(&self.status)
    }

    /// Live = not soft-deleted. The Go backend reads `user_id = X AND deleted_at IS NULL`.
    pub fn is_live(&self) -> bool {
        self.deleted_at.is_none() && self.status() != Some(RowStatus::Deleted)
    }
}

#[cfg(test)]
pub(crate) mod fixture {
    use super::*;

    /// Builder for rows in planner tests: `RowFixture::active(user, "vyx-user-aaaaaaaa").build()`.
    pub struct RowFixture(pub AppRow);

    impl RowFixture {
        pub fn new(user_id: Uuid, name: &str, status: RowStatus) -> Self {
            RowFixture(AppRow {
                id: Uuid::from_u128(user_id.as_u128() ^ 0xFFFF),
                user_id,
                user_exists: true,
                fly_app_name: name.to_string(),
                fly_org_slug: Some("vyx".into()),
                status: status.as_str().into(),
                region: Some("sin".into()),
                docker_image: None,
                health_status: Some("unknown".into()),
                last_health_check: None,
                retry_count: Some(0),
                deleted_at: None,
                fly_app_id: None,
                machine_id: None,
                machine_op_id: None,
                secrets_version: None,
                secrets_digest: None,
                ips_ready: false,
                config_digest: None,
                next_attempt_at: None,
                unwanted_since: None,
                last_error_kind: None,
            })
        }
        pub fn with(mut self, f: impl FnOnce(&mut AppRow)) -> Self {
            f(&mut self.0);
            self
        }
        pub fn build(self) -> AppRow {
            self.0
        }
    }
}
