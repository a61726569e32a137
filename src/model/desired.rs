//! Who should have an app: the raw facts per user (subscription, override) and the policy that
//! turns them into intent. The planner decides with them; the database layer reads the facts and
//! re-checks the policy in the write that starts a deprovision.

use uuid::Uuid;

/// One row of the desired-state query: a user with a subscription and/or an override.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserFacts {
    pub user_id: Uuid,
    pub tier: Option<String>,
    pub sub_status: Option<String>,
    /// Raw `user_fly_app_overrides.desired`; the CHECK constraint keeps it to three values, but a
    /// hand-edited database may hold anything, so it is parsed, not trusted.
    pub override_desired: Option<String>,
}

/// Which subscriptions pay for an app (`PAID_TIERS`, `PAID_STATUSES`).
#[derive(Debug, Clone)]
pub struct PaidPolicy {
    pub tiers: Vec<String>,
    pub statuses: Vec<String>,
}

/// Who is wanted (`PAID_TIERS`, `PAID_STATUSES`) and how long an unwanted user's app waits
/// (`DEPROVISION_GRACE`). A deletion is planned from a read of the fleet that may be minutes old by
/// the time it runs; the write that starts it re-checks both in SQL against the user's rows as they
/// are at that instant, so a deprovision planned before a re-upgrade or an override deletes nothing.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub policy: PaidPolicy,
    pub deprovision_grace: chrono::Duration,
}
