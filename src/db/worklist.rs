//! The sweep's one statement: which users may need work now, and whether anything needs
//! the whole fleet's picture. Computed in SQL so the daemon receives the candidates, not the fleet.
//!
//! # Guarantees
//! - A superset: every user the planner would give a per-user action over the same database state
//!   (and an observation with no change since the last one) is listed (`tests/sweep.rs` checks it
//!   over varied states). Listing a user that needs nothing costs one targeted run that plans
//!   nothing.
//! - One statement, one database clock (`now()`), so every grace and backoff is judged as the
//!   planner would judge it with the clock of the same instant.
//!
//! # Caveats
//! - Comparing the desired set with the rows is an anti-join: PostgreSQL still reads every live
//!   row and every paid subscription once per sweep (index and hash joins, no sort), server-side.
//!   What leaves the database is the candidate list only. The plans are in docs/QUERIES.md.

use sqlx::PgPool;
use uuid::Uuid;

/// Why a user (or the fleet) is on the work list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Wanted, no live row: a first provision or a re-upgrade.
    Wanted,
    /// Wanted again while its deprovision grace runs.
    Cancel,
    /// No longer wanted and not yet marked: the grace starts.
    Unwanted,
    /// A provision that did not finish (provisioning, error), its backoff over.
    Unsettled,
    /// An active row whose record says the app is incomplete (no machine, no IPs).
    Incomplete,
    /// A machine or app of this user changed on Fly since the last observation.
    FlyChanged,
    /// A deletion is due (grace over, or a deprovision under way): the breaker must see it.
    Deletion,
    /// A live row off the current spec, or the rollout not complete: waves need the fleet. Rows a
    /// rollout rolled back wait for the next target, and rows a halted rollout has not moved wait
    /// for a resume: neither is work, or a halt would make every tick a full pass.
    Rollout,
    /// An unhealthy app due for its next repair step (bounded per pass).
    Repair,
    /// An orphan past its grace, a held deletion, or a changed app no row names.
    Orphans,
}

impl Reason {
    fn parse(s: &str) -> Option<Reason> {
        Some(match s {
            "wanted" => Reason::Wanted,
            "cancel" => Reason::Cancel,
            "unwanted" => Reason::Unwanted,
            "unsettled" => Reason::Unsettled,
            "incomplete" => Reason::Incomplete,
            "fly_changed" => Reason::FlyChanged,
            "deletion" => Reason::Deletion,
            "rollout" => Reason::Rollout,
            "repair" => Reason::Repair,
            "orphans" => Reason::Orphans,
            _ => return None,
        })
    }

    /// Work only a full pass may do: deletions (the breaker), rollout waves, the per-pass repair
    /// bound, orphans.
    pub fn is_fleet_level(self) -> bool {
        matches!(
            self,
            Reason::Deletion | Reason::Rollout | Reason::Repair | Reason::Orphans
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Wanted => "wanted",
            Reason::Cancel => "cancel",
            Reason::Unwanted => "unwanted",
            Reason::Unsettled => "unsettled",
            Reason::Incomplete => "incomplete",
            Reason::FlyChanged => "fly_changed",
            Reason::Deletion => "deletion",
            Reason::Rollout => "rollout",
            Reason::Repair => "repair",
            Reason::Orphans => "orphans",
        }
    }
}

/// What the statement compares against: the policy and the current target.
#[derive(Debug, Clone)]
pub struct WorkListParams<'a> {
    pub paid_tiers: &'a [String],
    pub paid_statuses: &'a [String],
    /// `spec_digest` of the configured spec (the rollout's target).
    pub spec_digest: &'a str,
    pub config_digest: &'a str,
    pub secrets_digest: &'a str,
    pub image: &'a str,
    pub deprovision_grace: chrono::Duration,
    pub orphan_grace: chrono::Duration,
    pub repair_after: chrono::Duration,
    /// Managed apps whose machines changed on Fly in the last observation.
    pub changed_apps: &'a [String],
}

/// One entry: `user` is `None` for fleet-level entries that belong to no user (orphans, rollout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub user: Option<Uuid>,
    pub reason: Reason,
}

/// The intent of a row's user, as `reconcile::desired` computes it (unknown overrides freeze).
macro_rules! intent {
    ($ov:literal, $s:literal) => {
        concat!(
            "CASE WHEN ",
            $ov,
            ".desired = 'present' THEN 'present' WHEN ",
            $ov,
            ".desired = 'absent' THEN 'absent' WHEN ",
            $ov,
            ".desired IS NOT NULL THEN 'paused' WHEN ",
            $s,
            ".tier = ANY($1) AND ",
            $s,
            ".status = ANY($2) THEN 'present' ELSE 'absent' END"
        )
    };
}

macro_rules! work_list_sql {
    () => { concat!(
    "WITH clock AS MATERIALIZED (SELECT now() AS now), \
     cur AS MATERIALIZED (SELECT r.id, r.halted FROM vyx_fleet.rollout r \
                           WHERE r.id = (SELECT max(id) FROM vyx_fleet.rollout) \
                             AND r.target_digest = $3), \
     facts AS (\
       SELECT coalesce(s.user_id, o.user_id) AS user_id, ",
    intent!("o", "s"),
    " AS intent \
         FROM public.user_subscriptions s \
         FULL JOIN vyx_fleet.user_fly_app_overrides o ON o.user_id = s.user_id), \
     live AS (\
       SELECT a.user_id, a.status, a.unwanted_since, a.next_attempt_at, CASE \
         WHEN a.status <> 'active' THEN NULL \
         WHEN (a.spec_digest IS DISTINCT FROM $3 OR a.config_digest IS DISTINCT FROM $4 \
              OR a.secrets_digest IS DISTINCT FROM $5 OR a.docker_image IS DISTINCT FROM $6) \
              AND NOT EXISTS (SELECT 1 FROM cur WHERE \
                   (a.rollout_id = cur.id AND a.rollout_state = 'rolled_back') \
                   OR (cur.halted AND (a.rollout_id IS DISTINCT FROM cur.id \
                                       OR a.rollout_state IS NULL))) \
              THEN 'rollout' \
         WHEN a.machine_id IS NULL OR NOT a.ips_ready THEN 'incomplete' \
         WHEN a.health_status = 'unhealthy' AND a.unhealthy_since IS NOT NULL \
              AND coalesce(a.repair_step_at, a.unhealthy_since) + $9 * interval '1 millisecond' \
                  <= (SELECT now FROM clock) \
              THEN 'repair' END AS active_reason \
         FROM public.user_fly_apps a WHERE a.deleted_at IS NULL AND a.status <> 'deleted'), \
     pairs AS (\
       SELECT coalesce(l.user_id, f.user_id) AS user_id, l.user_id IS NOT NULL AS has_row, \
              coalesce(f.intent, 'absent') AS intent, l.status, l.unwanted_since, l.next_attempt_at, \
              l.active_reason \
         FROM live l FULL JOIN facts f ON f.user_id = l.user_id), \
     per_user AS (\
       SELECT p.user_id, CASE \
         WHEN NOT p.has_row THEN CASE WHEN p.intent = 'present' THEN 'wanted' END \
         WHEN p.intent = 'paused' THEN NULL \
         WHEN p.status = 'deprovisioning' THEN 'deletion' \
         WHEN p.intent = 'absent' AND p.status IN ('provisioning', 'active', 'error') THEN CASE \
              WHEN p.unwanted_since IS NULL THEN 'unwanted' \
              WHEN p.unwanted_since + $7 * interval '1 millisecond' <= c.now THEN 'deletion' END \
         WHEN p.intent = 'absent' THEN NULL \
         WHEN p.unwanted_since IS NOT NULL THEN 'cancel' \
         WHEN p.status IN ('provisioning', 'error') \
              AND (p.next_attempt_at IS NULL OR p.next_attempt_at <= c.now) THEN 'unsettled' \
         ELSE p.active_reason \
         END AS reason \
         FROM pairs p CROSS JOIN clock c) \
     SELECT user_id, reason FROM per_user WHERE reason IS NOT NULL \
     UNION ALL SELECT a.user_id, 'fly_changed' FROM public.user_fly_apps a \
                WHERE a.fly_app_name = ANY($10) \
     UNION ALL (SELECT NULL::uuid, 'orphans' FROM unnest($10::text[]) AS n \
                 WHERE NOT EXISTS (SELECT 1 FROM public.user_fly_apps a WHERE a.fly_app_name = n) \
                 LIMIT 1) \
     UNION ALL (SELECT NULL::uuid, 'orphans' FROM vyx_fleet.orphans, clock c \
                 WHERE first_seen_at + $8 * interval '1 millisecond' <= c.now LIMIT 1) \
     UNION ALL (SELECT NULL::uuid, 'orphans' FROM vyx_fleet.held_deletions LIMIT 1) \
     UNION ALL SELECT NULL::uuid, 'rollout' \
                WHERE NOT EXISTS (SELECT 1 FROM cur r JOIN vyx_fleet.rollout f ON f.id = r.id \
                                   WHERE f.completed_at IS NOT NULL OR r.halted)"
    ) };
}

const WORK_LIST: &str = work_list_sql!();
const EXPLAIN_WORK_LIST: &str = concat!("EXPLAIN (ANALYZE, BUFFERS) ", work_list_sql!());

/// Bind the statement's parameters, in order.
macro_rules! bind_params {
    ($q:expr, $p:expr) => {{
        let ms = |d: chrono::Duration| d.num_milliseconds() as f64;
        $q.bind($p.paid_tiers)
            .bind($p.paid_statuses)
            .bind($p.spec_digest)
            .bind($p.config_digest)
            .bind($p.secrets_digest)
            .bind($p.image)
            .bind(ms($p.deprovision_grace))
            .bind(ms($p.orphan_grace))
            .bind(ms($p.repair_after))
            .bind($p.changed_apps)
    }};
}

/// The work list now (see the module docs).
pub async fn load(pool: &PgPool, p: &WorkListParams<'_>) -> Result<Vec<Entry>, sqlx::Error> {
    let rows: Vec<(Option<Uuid>, String)> = bind_params!(sqlx::query_as(WORK_LIST), p)
        .fetch_all(pool)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(user, reason)| Reason::parse(&reason).map(|reason| Entry { user, reason }))
        .collect())
}

/// `EXPLAIN (ANALYZE, BUFFERS)` of the statement, one line per plan line (docs/QUERIES.md).
pub async fn explain(pool: &PgPool, p: &WorkListParams<'_>) -> Result<Vec<String>, sqlx::Error> {
    bind_params!(sqlx::query_scalar(EXPLAIN_WORK_LIST), p)
        .fetch_all(pool)
        .await
}
