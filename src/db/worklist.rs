//! The sweep's one statement: which users may need work now, and whether anything needs
//! the whole fleet's picture. Computed in SQL so the daemon receives the candidates, not the fleet.
//!
//! # Expected flow
//! 1. A lease term's first look, and the contract tests, compare everything ([`load`]): every
//!    user's facts against every live row.
//! 2. Every later look judges only candidates ([`load_since`]): users whose billing row or
//!    override changed since the last look (`vyx_fleet.changes`, filled by the trigger that
//!    also sends NOTIFY), rows written since (`changed_xid`), rows whose work falls due with
//!    time (backoff, grace, repair, a deletion under way; partial indexes) and the users the last
//!    look listed. Each look returns a [`Watermark`] where the next starts.
//!
//! # Guarantees
//! - A superset: every user the planner would give a per-user action over the same database state
//!   (and an observation with no change since the last one) is listed by the full look
//!   (`tests/sweep_contract.rs` checks it over varied states), and by a look since a watermark
//!   taken before the state was written. Listing a user that needs nothing costs one targeted run
//!   that plans nothing.
//! - One statement, one database clock (`now()`), so every grace and backoff is judged as the
//!   planner would judge it with the clock of the same instant.
//! - A change is never skipped by a look: the watermark is the oldest transaction still running
//!   when the look took its snapshot, and the next look reads from it.
//!
//! # Caveats
//! - The full look is an anti-join: PostgreSQL reads every live row and every paid subscription
//!   (index and hash joins, no sort). A look since a watermark reads what changed plus the rows
//!   in the timed sets; a long-running transaction anywhere in the cluster holds the watermark
//!   back, so looks re-read changes until it ends (more rows, never fewer). Plans in
//!   docs/QUERIES.md.
//! - Parameters (policy, target) come from the settings, which change only with a restart: a
//!   new term starts with a full pass and a full look.

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

    pub(crate) fn as_str(self) -> &'static str {
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
pub(crate) struct WorkListParams<'a> {
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

/// The statement around a `facts` CTE and a filter on the rows it compares (`$live`): the full
/// comparison, or the candidates' alone.
macro_rules! work_list_sql {
    ($scope:expr, $facts:expr, $live:expr, $prune:expr) => { concat!(
    "WITH clock AS MATERIALIZED (SELECT now() AS now, \
                                        pg_snapshot_xmin(pg_current_snapshot())::text AS mark), \
     cur AS MATERIALIZED (SELECT r.id, r.halted FROM vyx_fleet.rollout r \
                           WHERE r.id = (SELECT max(id) FROM vyx_fleet.rollout) \
                             AND r.target_digest = $3), ",
    $scope,
    $prune,
    "facts AS (", $facts, "), \
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
         FROM public.user_fly_apps a WHERE a.deleted_at IS NULL AND a.status <> 'deleted'",
    $live,
    "), \
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
     SELECT user_id, reason, NULL::text AS mark FROM per_user WHERE reason IS NOT NULL \
     UNION ALL SELECT a.user_id, 'fly_changed', NULL FROM public.user_fly_apps a \
                WHERE a.fly_app_name = ANY($10) \
     UNION ALL (SELECT NULL::uuid, 'orphans', NULL FROM unnest($10::text[]) AS n \
                 WHERE NOT EXISTS (SELECT 1 FROM public.user_fly_apps a WHERE a.fly_app_name = n) \
                 LIMIT 1) \
     UNION ALL (SELECT NULL::uuid, 'orphans', NULL FROM vyx_fleet.orphans, clock c \
                 WHERE first_seen_at + $8 * interval '1 millisecond' <= c.now LIMIT 1) \
     UNION ALL (SELECT NULL::uuid, 'orphans', NULL FROM vyx_fleet.held_deletions LIMIT 1) \
     UNION ALL SELECT NULL::uuid, 'rollout', NULL \
                WHERE NOT EXISTS (SELECT 1 FROM cur r JOIN vyx_fleet.rollout f ON f.id = r.id \
                                   WHERE f.completed_at IS NOT NULL OR r.halted) \
     UNION ALL SELECT NULL::uuid, 'watermark', mark FROM clock"
    ) };
}

/// Every user with a billing row or an override, against every live row.
macro_rules! full_sql {
    () => {
        work_list_sql!(
            "",
            concat!(
                "SELECT coalesce(s.user_id, o.user_id) AS user_id, ",
                intent!("o", "s"),
                " AS intent FROM public.user_subscriptions s \
                 FULL JOIN vyx_fleet.user_fly_app_overrides o ON o.user_id = s.user_id"
            ),
            "",
            ""
        )
    };
}

/// Only the candidates: users whose facts or row changed since the watermark (`$11`), rows whose
/// work falls due with time (the partial indexes of the change-log migration, predicates repeated
/// exactly), and the users the last look listed (`$12`), so work a run left undone is judged again
/// until it is done. Change-log entries older than the watermark are pruned: a look that reached
/// it has judged them.
macro_rules! since_sql {
    () => {
        work_list_sql!(
            "cand AS MATERIALIZED (\
               SELECT user_id FROM vyx_fleet.changes WHERE xid >= $11::text::xid8 \
               UNION SELECT user_id FROM public.user_fly_apps WHERE changed_xid >= $11::text::xid8 \
               UNION SELECT user_id FROM public.user_fly_apps \
                      WHERE deleted_at IS NULL \
                        AND status IN ('provisioning', 'error', 'deprovisioning') \
               UNION SELECT user_id FROM public.user_fly_apps \
                      WHERE deleted_at IS NULL AND unwanted_since IS NOT NULL \
               UNION SELECT user_id FROM public.user_fly_apps \
                      WHERE deleted_at IS NULL AND health_status = 'unhealthy' \
               UNION SELECT unnest($12::uuid[])), ",
            concat!(
                "SELECT c.user_id, ",
                intent!("o", "s"),
                " AS intent FROM cand c \
                 LEFT JOIN public.user_subscriptions s ON s.user_id = c.user_id \
                 LEFT JOIN vyx_fleet.user_fly_app_overrides o ON o.user_id = c.user_id \
                 WHERE s.user_id IS NOT NULL OR o.user_id IS NOT NULL"
            ),
            " AND a.user_id IN (SELECT user_id FROM cand)",
            "pruned AS (DELETE FROM vyx_fleet.changes WHERE xid < $11::text::xid8), "
        )
    };
}

const WORK_LIST: &str = full_sql!();
const EXPLAIN_WORK_LIST: &str = concat!("EXPLAIN (ANALYZE, BUFFERS) ", full_sql!());
const WORK_LIST_SINCE: &str = since_sql!();
const EXPLAIN_WORK_LIST_SINCE: &str = concat!("EXPLAIN (ANALYZE, BUFFERS) ", since_sql!());

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

/// Where a look at the work list stopped: the oldest transaction still running when it looked.
/// The next look reads every change at or above it (so a change committed late is read late,
/// never lost).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watermark(String);

/// A look's entries and where the next look starts.
#[derive(Debug, Clone)]
pub struct WorkList {
    pub entries: Vec<Entry>,
    pub watermark: Watermark,
}

fn parse(rows: Vec<(Option<Uuid>, String, Option<String>)>) -> Result<WorkList, sqlx::Error> {
    let mut watermark = None;
    let mut entries = Vec::with_capacity(rows.len());
    for (user, reason, mark) in rows {
        match (reason.as_str(), mark) {
            ("watermark", Some(m)) => watermark = Some(Watermark(m)),
            _ => entries.extend(Reason::parse(&reason).map(|reason| Entry { user, reason })),
        }
    }
    let watermark = watermark.ok_or_else(|| {
        sqlx::Error::Protocol("the work list returned no watermark row".to_string())
    })?;
    Ok(WorkList { entries, watermark })
}

/// The whole comparison: every user's facts against every live row (a fresh term's first look,
/// and the contract tests' reference).
pub(crate) async fn load(pool: &PgPool, p: &WorkListParams<'_>) -> Result<WorkList, sqlx::Error> {
    let rows = bind_params!(sqlx::query_as(WORK_LIST), p)
        .fetch_all(pool)
        .await?;
    parse(rows)
}

/// The same judgement for the users that changed since `since`, the rows whose time came, and
/// `carry` (the users the last look listed). Its cost follows what changed, not the fleet.
pub(crate) async fn load_since(
    pool: &PgPool,
    p: &WorkListParams<'_>,
    since: &Watermark,
    carry: &[Uuid],
) -> Result<WorkList, sqlx::Error> {
    let rows = bind_params!(sqlx::query_as(WORK_LIST_SINCE), p)
        .bind(&since.0)
        .bind(carry)
        .fetch_all(pool)
        .await?;
    parse(rows)
}

/// Where a look starting now would stop: taken before a full pass reads anything, so whatever it
/// could not see is read by the next look.
pub(crate) async fn watermark(pool: &PgPool) -> Result<Watermark, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
        .fetch_one(pool)
        .await
        .map(Watermark)
}

/// `EXPLAIN (ANALYZE, BUFFERS)` of the full statement, one line per plan line (docs/QUERIES.md).
pub(crate) async fn explain(
    pool: &PgPool,
    p: &WorkListParams<'_>,
) -> Result<Vec<String>, sqlx::Error> {
    bind_params!(sqlx::query_scalar(EXPLAIN_WORK_LIST), p)
        .fetch_all(pool)
        .await
}

/// `EXPLAIN (ANALYZE, BUFFERS)` of the statement since `since` (a quiet tick's).
pub(crate) async fn explain_since(
    pool: &PgPool,
    p: &WorkListParams<'_>,
    since: &Watermark,
    carry: &[Uuid],
) -> Result<Vec<String>, sqlx::Error> {
    bind_params!(sqlx::query_scalar(EXPLAIN_WORK_LIST_SINCE), p)
        .bind(&since.0)
        .bind(carry)
        .fetch_all(pool)
        .await
}
