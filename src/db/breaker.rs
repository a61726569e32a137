//! The blast-radius breaker's persisted state (invariant 6): deletions performed, for the sliding
//! window, and the deletions held back when it tripped, which a confirmation covers exactly.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::notify;

/// How long a confirmation stays valid: it answers the alert an operator is looking at, not some
/// mass deletion days later.
pub(crate) const CONFIRMATION_TTL_MINUTES: i32 = 15;

/// One deletion the breaker holds back (`vyx_fleet.held_deletions`).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct HeldDeletion {
    pub app_name: String,
    /// The user whose app would be deprovisioned; `None` for an orphan.
    pub user_id: Option<Uuid>,
    /// `deprovision` or `orphan`.
    pub kind: String,
    pub held_at: DateTime<Utc>,
    /// Set while a confirmation is valid (younger than [`CONFIRMATION_TTL_MINUTES`]).
    pub confirmed_at: Option<DateTime<Utc>>,
    pub confirmed_by: Option<String>,
}

const HELD_SELECT: &str = "SELECT app_name, user_id, kind, held_at,
        CASE WHEN confirmed_at > now() - make_interval(mins => $1) THEN confirmed_at END
            AS confirmed_at,
        CASE WHEN confirmed_at > now() - make_interval(mins => $1) THEN confirmed_by END
            AS confirmed_by
   FROM vyx_fleet.held_deletions
  ORDER BY held_at, app_name";

/// Every held deletion, oldest first; an expired confirmation reads as none.
pub async fn load_held(pool: &PgPool) -> Result<Vec<HeldDeletion>, sqlx::Error> {
    sqlx::query_as(HELD_SELECT)
        .bind(CONFIRMATION_TTL_MINUTES)
        .fetch_all(pool)
        .await
}

/// The version of a held set the confirmer was shown: a digest of its app names, sorted. The form and
/// `confirm-deletions --expect` carry it back, so a confirmation of a set that has changed since is
/// refused instead of covering deletions nobody saw.
pub(crate) fn held_version<'a>(apps: impl IntoIterator<Item = &'a str>) -> String {
    use sha2::{Digest, Sha256};
    let mut names: Vec<&str> = apps.into_iter().collect();
    names.sort_unstable();
    names.dedup();
    let mut h = Sha256::new();
    for n in names {
        h.update(n.as_bytes());
        h.update(b"\n");
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What a confirmer saw and means to confirm.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Scope<'a> {
    /// The whole held set as it was shown (and its version, when the confirmer has it): confirmed
    /// only while the set holds nothing else.
    Whole {
        shown: &'a [String],
        version: Option<&'a str>,
    },
    /// Exactly these apps, named one by one (`confirm-deletions --apps`): those still held are
    /// confirmed, whatever else is held.
    Only(&'a [String]),
}

/// What an operator's confirmation did.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Confirmation {
    /// These held deletions (every one the confirmer named that is still held) may go ahead now.
    Confirmed(Vec<HeldDeletion>),
    /// The held set has deletions the confirmer was not shown (it grew or was replaced, or the
    /// version they saw is not the current one): nothing was confirmed. The current set is returned
    /// to be shown instead.
    Changed {
        held: Vec<HeldDeletion>,
        version: String,
    },
    /// The breaker holds nothing (any more).
    NothingHeld,
}

/// An operator's confirmation (`confirm-deletions`, the console) of exactly the deletions they were
/// shown (invariant 6).
///
/// # Guarantees
/// - Only apps the confirmer named are confirmed, and only those still held.
/// - For [`Scope::Whole`]: if anything held now is missing from what was shown, or the version given
///   is not the version of what was shown, nothing is confirmed ([`Confirmation::Changed`]).
/// - The check and the write happen under a lock that keeps the leader from adding to the held set
///   meanwhile, in one transaction with the trail's rows (one per app, `by` as the admin).
/// - The leader is woken (`NOTIFY`, on commit) to act on it now rather than at its next interval.
///
/// Not fenced: it is an operator's write, like an override.
pub(crate) async fn confirm_exact(
    pool: &PgPool,
    scope: Scope<'_>,
    by: &str,
) -> Result<Confirmation, sqlx::Error> {
    let mut tx = crate::db::begin(pool).await?;
    // SHARE ROW EXCLUSIVE conflicts with the leader's inserts and deletes: the set cannot move
    // between the comparison and the update below.
    sqlx::query("LOCK TABLE vyx_fleet.held_deletions IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    let held: Vec<HeldDeletion> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("{HELD_SELECT} FOR UPDATE")))
            .bind(CONFIRMATION_TTL_MINUTES)
            .fetch_all(&mut *tx)
            .await?;
    if held.is_empty() {
        return Ok(Confirmation::NothingHeld);
    }
    let current = held_version(held.iter().map(|h| h.app_name.as_str()));
    let shown = match scope {
        Scope::Whole { shown, version } => {
            // A set that only shrank since the confirmer read it holds nothing they did not see.
            let unseen = held.iter().any(|h| !shown.contains(&h.app_name));
            let inconsistent =
                version.is_some_and(|v| v != held_version(shown.iter().map(String::as_str)));
            if unseen || inconsistent {
                return Ok(Confirmation::Changed {
                    held,
                    version: current,
                });
            }
            shown
        }
        Scope::Only(apps) => apps,
    };
    let confirmed: Vec<HeldDeletion> = sqlx::query_as(
        "UPDATE vyx_fleet.held_deletions SET confirmed_at = now(), confirmed_by = $1
          WHERE app_name = ANY($2)
          RETURNING app_name, user_id, kind, held_at, confirmed_at, confirmed_by",
    )
    .bind(by)
    .bind(shown)
    .fetch_all(&mut *tx)
    .await?;
    for h in &confirmed {
        let mut a = crate::db::admins::Action::new(by, "confirm_deletion")
            .app(&h.app_name)
            .before(&format!("held ({})", h.kind))
            .after("confirmed");
        if let Some(u) = h.user_id {
            a = a.user(u);
        }
        crate::db::admins::record(&mut tx, &a).await?;
    }
    if !confirmed.is_empty() {
        // A hint delivered on commit: the leader sweeps now rather than at its next tick.
        notify::send(&mut tx, notify::DELETIONS_CONFIRMED).await?;
    }
    tx.commit().await?;
    Ok(Confirmation::Confirmed(confirmed))
}

/// Confirms the held set exactly as it is read inside the same transaction: for callers that show
/// nothing first (tests, scripts that already decided). Returns how many it covers.
pub async fn confirm_held(pool: &PgPool, by: &str) -> Result<u64, sqlx::Error> {
    let held = load_held(pool).await?;
    let names: Vec<String> = held.into_iter().map(|h| h.app_name).collect();
    let scope = Scope::Whole {
        shown: &names,
        version: None,
    };
    match confirm_exact(pool, scope, by).await? {
        Confirmation::Confirmed(c) => Ok(c.len() as u64),
        Confirmation::NothingHeld => Ok(0),
        // It grew between the two reads: confirm nothing rather than something unread.
        Confirmation::Changed { .. } => Ok(0),
    }
}

/// The sliding window the breaker counts deletions over.
pub(crate) const WINDOW_MINUTES: i32 = 60;

/// How long performed deletions stay in the log: well past the window, for an operator's questions.
const LOG_RETENTION_DAYS: i32 = 7;

/// What a pass reads to judge deletions: the apps deleted within the window (distinct names, so a
/// retried deletion counts once) and the held set with each entry's confirmation still valid.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct BreakerState {
    pub recent: std::collections::BTreeSet<String>,
    pub held: Vec<HeldDeletion>,
}

impl BreakerState {
    /// Held app → whether a valid confirmation covers it.
    pub(crate) fn held_map(&self) -> std::collections::BTreeMap<String, bool> {
        self.held
            .iter()
            .map(|h| (h.app_name.clone(), h.confirmed_at.is_some()))
            .collect()
    }
}

pub(crate) async fn load_state(pool: &PgPool) -> Result<BreakerState, sqlx::Error> {
    let recent: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT app_name FROM vyx_fleet.deletions
          WHERE deleted_at > now() - make_interval(mins => $1)",
    )
    .bind(WINDOW_MINUTES)
    .fetch_all(pool)
    .await?;
    Ok(BreakerState {
        recent: recent.into_iter().collect(),
        held: load_held(pool).await?,
    })
}

/// What [`record_deletion`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeletionGate {
    /// Logged: go ahead with the `DELETE`.
    Go,
    /// The fence did not hold: this replica must not delete anything.
    Fenced,
    /// An orphan that a live row names now (adopted since the plan): do not delete it.
    Owned,
}

/// Logs a deletion for the window, fenced, as the last statement before the `DELETE` call: a
/// deletion whose answer was lost still counts, and a retried one counts once (the window counts
/// distinct names). For an orphan (`user_id` `None`) it also re-checks, in the same statement, that
/// no live row names the app.
pub(crate) async fn record_deletion(
    pool: &PgPool,
    term: i64,
    app: &str,
    user_id: Option<Uuid>,
) -> Result<DeletionGate, sqlx::Error> {
    let mut tx = crate::db::begin(pool).await?;
    let (fenced, logged): (bool, bool) = sqlx::query_as(
        "WITH gate AS (
             SELECT vyx_fleet.fence($3) AS fenced,
                    $2::uuid IS NOT NULL OR NOT EXISTS (
                        SELECT 1 FROM public.user_fly_apps
                         WHERE fly_app_name = $1 AND deleted_at IS NULL AND status <> 'deleted'
                    ) AS free
         ), logged AS (
             INSERT INTO vyx_fleet.deletions (app_name, user_id, deleted_at)
             SELECT $1, $2, now() FROM gate WHERE gate.fenced AND gate.free
             RETURNING 1
         )
         SELECT (SELECT fenced FROM gate), EXISTS (SELECT 1 FROM logged)",
    )
    .bind(app)
    .bind(user_id)
    .bind(term)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "DELETE FROM vyx_fleet.deletions WHERE deleted_at < now() - make_interval(days => $1)",
    )
    .bind(LOG_RETENTION_DAYS)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(match (fenced, logged) {
        (false, _) => DeletionGate::Fenced,
        (true, true) => DeletionGate::Go,
        (true, false) => DeletionGate::Owned,
    })
}

/// One deletion to hold (see [`apply_held`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub app_name: String,
    pub user_id: Option<Uuid>,
    /// `deprovision` or `orphan`.
    pub kind: &'static str,
}

/// Persists what the planner decided about the held set, fenced, in one transaction: `hold` joins
/// it (an entry already held keeps its time and confirmation), `release` leaves it (the app is gone,
/// or its deletion is no longer wanted). `false`: the fence did not hold, nothing changed.
pub(crate) async fn apply_held(
    pool: &PgPool,
    term: i64,
    hold: &[Hold],
    release: &[String],
) -> Result<bool, sqlx::Error> {
    let mut tx = crate::db::begin(pool).await?;
    let fenced: bool = sqlx::query_scalar("SELECT vyx_fleet.fence($1)")
        .bind(term)
        .fetch_one(&mut *tx)
        .await?;
    if !fenced {
        return Ok(false);
    }
    sqlx::query("DELETE FROM vyx_fleet.held_deletions WHERE app_name = ANY($1)")
        .bind(release)
        .execute(&mut *tx)
        .await?;
    let names: Vec<&str> = hold.iter().map(|h| h.app_name.as_str()).collect();
    let users: Vec<Option<Uuid>> = hold.iter().map(|h| h.user_id).collect();
    let kinds: Vec<&str> = hold.iter().map(|h| h.kind).collect();
    sqlx::query(
        "INSERT INTO vyx_fleet.held_deletions (app_name, user_id, kind, held_at)
         SELECT n, u, k, now() FROM unnest($1::text[], $2::uuid[], $3::text[]) AS t (n, u, k)
         ON CONFLICT (app_name) DO NOTHING",
    )
    .bind(&names)
    .bind(&users)
    .bind(&kinds)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}
