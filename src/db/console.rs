//! The admin console's reads (through the `vyx_fleet.app_console` view, so the page and Supabase Studio
//! show the same columns) and its writes, which are exactly what an admin could type by hand: an
//! override row, a cleared `next_attempt_at`. None is fenced: they are operator writes, read by the
//! leader on its next pass like any override.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

/// Rows per page of the app table.
pub(crate) const PAGE_SIZE: i64 = 50;

/// `vyx_fleet.settings` keys the leader writes after every pass (see [`record_pass`]).
const LAST_PASS_KEY: &str = "last_pass_at";
const ROLLOUT_HALTED_KEY: &str = "rollout_halted";
/// Why the leader's last pass failed (`cause`), empty after a pass that worked; `updated_at` is when.
const PASS_FAILURE_KEY: &str = "last_pass_failure";

/// One row of the app table (`vyx_fleet.app_console`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct ConsoleRow {
    pub row_id: Uuid,
    pub user_id: Uuid,
    pub app_name: String,
    pub email: Option<String>,
    pub tier: String,
    pub subscription_status: Option<String>,
    pub r#override: Option<String>,
    pub override_by: Option<String>,
    pub status: String,
    pub health: String,
    pub image: Option<String>,
    pub image_tag: Option<String>,
    pub region: Option<String>,
    pub cpu_count: Option<i32>,
    pub memory_mb: Option<i32>,
    pub monthly_cost_usd: Option<f64>,
    pub last_error_kind: Option<String>,
    pub error_message: Option<String>,
    pub retry_count: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_change: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
}

const CONSOLE_COLUMNS: &str = "row_id, user_id, app_name, email, tier, subscription_status, \
     override, override_by, status, health, image, image_tag, region, cpu_count, memory_mb, \
     monthly_cost_usd, last_error_kind, error_message, retry_count, next_attempt_at, last_change, \
     deleted_at";

/// The columns the table sorts by. A closed set: the SQL comes from here, never from the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum SortKey {
    #[default]
    App,
    Email,
    Tier,
    Override,
    Status,
    Health,
    Image,
    Region,
    Size,
    Cost,
    Error,
    Retries,
    NextAttempt,
    LastChange,
}

impl SortKey {
    pub(crate) const ALL: [SortKey; 14] = [
        SortKey::App,
        SortKey::Email,
        SortKey::Tier,
        SortKey::Override,
        SortKey::Status,
        SortKey::Health,
        SortKey::Image,
        SortKey::Region,
        SortKey::Size,
        SortKey::Cost,
        SortKey::Error,
        SortKey::Retries,
        SortKey::NextAttempt,
        SortKey::LastChange,
    ];

    /// The name used in the query string.
    pub(crate) fn name(self) -> &'static str {
        match self {
            SortKey::App => "app",
            SortKey::Email => "email",
            SortKey::Tier => "tier",
            SortKey::Override => "override",
            SortKey::Status => "status",
            SortKey::Health => "health",
            SortKey::Image => "image",
            SortKey::Region => "region",
            SortKey::Size => "size",
            SortKey::Cost => "cost",
            SortKey::Error => "error",
            SortKey::Retries => "retries",
            SortKey::NextAttempt => "next",
            SortKey::LastChange => "changed",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<SortKey> {
        SortKey::ALL.into_iter().find(|k| k.name() == s)
    }

    fn sql(self) -> &'static str {
        match self {
            SortKey::App => "app_name",
            SortKey::Email => "lower(email)",
            SortKey::Tier => "tier",
            SortKey::Override => "override",
            SortKey::Status => "status",
            SortKey::Health => "health",
            SortKey::Image => "image",
            SortKey::Region => "region",
            SortKey::Size => "cpu_count * 100000 + memory_mb",
            SortKey::Cost => "monthly_cost_usd",
            SortKey::Error => "last_error_kind",
            SortKey::Retries => "retry_count",
            SortKey::NextAttempt => "next_attempt_at",
            SortKey::LastChange => "last_change",
        }
    }
}

/// What the table shows: filters, order and page (all from the query string, validated by the caller).
#[derive(Debug, Clone, Default)]
pub(crate) struct AppQuery {
    /// A `user_fly_apps.status` value, or `live` for every row not deleted.
    pub status: Option<String>,
    pub health: Option<String>,
    /// Case-insensitive substring of the email, the user id or the app name.
    pub text: Option<String>,
    pub sort: SortKey,
    pub desc: bool,
    /// From 0.
    pub page: i64,
}

/// `%` and `_` in what the admin typed are literal, not wildcards.
fn like_pattern(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

fn push_filters(qb: &mut QueryBuilder<Postgres>, q: &AppQuery) {
    qb.push(" WHERE true");
    match q.status.as_deref() {
        Some("live") => {
            qb.push(" AND deleted_at IS NULL");
        }
        Some(status) => {
            qb.push(" AND status = ").push_bind(status);
        }
        None => {}
    }
    if let Some(health) = q.health.as_deref() {
        qb.push(" AND health = ").push_bind(health);
    }
    if let Some(text) = q.text.as_deref() {
        let pattern = like_pattern(text);
        qb.push(" AND (email ILIKE ")
            .push_bind(pattern.clone())
            .push(" OR user_id::text ILIKE ")
            .push_bind(pattern.clone())
            .push(" OR app_name ILIKE ")
            .push_bind(pattern)
            .push(")");
    }
}

/// One page of the table and the number of rows matching the filters. Two statements over the view;
/// the page is sorted in the database, so only [`PAGE_SIZE`] rows ever leave it.
pub(crate) async fn load_page(
    pool: &PgPool,
    q: &AppQuery,
) -> Result<(Vec<ConsoleRow>, i64), sqlx::Error> {
    let mut count = QueryBuilder::new("SELECT count(*) FROM vyx_fleet.app_console");
    push_filters(&mut count, q);
    let total: i64 = count.build_query_scalar().fetch_one(pool).await?;

    let mut page = QueryBuilder::new(format!(
        "SELECT {CONSOLE_COLUMNS} FROM vyx_fleet.app_console"
    ));
    push_filters(&mut page, q);
    let dir = if q.desc { "DESC" } else { "ASC" };
    page.push(format!(
        " ORDER BY {} {dir} NULLS LAST, row_id {dir} LIMIT ",
        q.sort.sql()
    ))
    .push_bind(PAGE_SIZE)
    .push(" OFFSET ")
    .push_bind(q.page.max(0).saturating_mul(PAGE_SIZE));
    let rows = page.build_query_as().fetch_all(pool).await?;
    Ok((rows, total))
}

/// A user the text filter matches who has no app row (e.g. a free user an admin wants to provision).
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct UserHit {
    pub user_id: Uuid,
    pub email: Option<String>,
    pub tier: String,
}

pub(crate) async fn users_without_app(
    pool: &PgPool,
    text: &str,
    limit: i64,
) -> Result<Vec<UserHit>, sqlx::Error> {
    sqlx::query_as(
        "SELECT u.id AS user_id, coalesce(p.email, u.email) AS email, coalesce(s.tier, 'free') AS tier
           FROM auth.users u
           LEFT JOIN public.user_profiles p ON p.id = u.id
           LEFT JOIN public.user_subscriptions s ON s.user_id = u.id
          WHERE NOT EXISTS (SELECT 1 FROM public.user_fly_apps a WHERE a.user_id = u.id)
            AND (coalesce(p.email, u.email) ILIKE $1 OR u.id::text ILIKE $1)
          ORDER BY 2 NULLS LAST, 1
          LIMIT $2",
    )
    .bind(like_pattern(text))
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The fleet summary at the top of the dashboard.
#[derive(Debug, Clone, Default)]
pub(crate) struct Summary {
    /// `(status, rows)`, every row including deleted ones.
    pub by_status: Vec<(String, i64)>,
    /// `(health, live rows)`.
    pub by_health: Vec<(String, i64)>,
    pub live: i64,
    /// Users the tier and overrides want an app for (overrides `present` included, `paused` not).
    pub desired: i64,
    pub paused: i64,
    pub monthly_cost_usd: f64,
    /// Live rows running the configured image.
    pub on_image: i64,
    pub leader: Option<String>,
    pub last_pass_at: Option<DateTime<Utc>>,
}

/// Counts for [`Summary`]; a handful of aggregate statements whatever the fleet size.
pub(crate) async fn load_summary(
    pool: &PgPool,
    image: &str,
    paid_tiers: &[String],
    paid_statuses: &[String],
) -> Result<Summary, sqlx::Error> {
    let by_status: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, count(*) FROM public.user_fly_apps GROUP BY status ORDER BY status",
    )
    .fetch_all(pool)
    .await?;
    let by_health: Vec<(String, i64)> = sqlx::query_as(
        "SELECT coalesce(health_status, 'unknown'), count(*) FROM public.user_fly_apps
          WHERE deleted_at IS NULL GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(pool)
    .await?;
    let (live, cost, on_image): (i64, f64, i64) = sqlx::query_as(
        "SELECT count(*), coalesce(sum(monthly_cost_estimate_usd), 0)::float8,
                count(*) FILTER (WHERE docker_image = $1)
           FROM public.user_fly_apps WHERE deleted_at IS NULL",
    )
    .bind(image)
    .fetch_one(pool)
    .await?;
    // The same rule as reconcile::desired, in SQL: an override wins, else tier and status decide.
    let (desired, paused): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE o.desired = 'present'
                    OR (o.desired IS NULL AND s.tier = ANY($1) AND s.status = ANY($2))),
                count(*) FILTER (WHERE o.desired = 'paused')
           FROM auth.users u
           LEFT JOIN public.user_subscriptions s ON s.user_id = u.id
           LEFT JOIN vyx_fleet.user_fly_app_overrides o ON o.user_id = u.id",
    )
    .bind(paid_tiers)
    .bind(paid_statuses)
    .fetch_one(pool)
    .await?;
    let lease = crate::db::lease::current(pool).await.map_err(|e| match e {
        crate::db::DbError::Query(q) => q,
        other => sqlx::Error::Protocol(other.to_string()),
    })?;
    let (last_pass_at, _) = pass_record(pool).await?;
    Ok(Summary {
        by_status,
        by_health,
        live,
        desired,
        paused,
        monthly_cost_usd: (cost * 100.0).round() / 100.0,
        on_image,
        leader: lease.live_holder().map(str::to_string),
        last_pass_at,
    })
}

/// The leader's record of its last pass: when it finished, and the image whose rollout it found halted.
pub(crate) async fn pass_record(
    pool: &PgPool,
) -> Result<(Option<DateTime<Utc>>, Option<String>), sqlx::Error> {
    let rows: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT key, value FROM vyx_fleet.settings WHERE key = ANY($1)")
            .bind([LAST_PASS_KEY, ROLLOUT_HALTED_KEY])
            .fetch_all(pool)
            .await?;
    let mut last = None;
    let mut halted = None;
    for (key, value) in rows {
        match (key.as_str(), value) {
            (LAST_PASS_KEY, Some(v)) => {
                last = DateTime::parse_from_rfc3339(&v).ok().map(Into::into)
            }
            (ROLLOUT_HALTED_KEY, Some(v)) if !v.is_empty() => halted = Some(v),
            _ => {}
        }
    }
    Ok((last, halted))
}

/// Called by the leader after each pass: the standby's "leader silent" alert and the dashboard read it.
/// Fenced, so a deposed leader cannot claim a pass it did not run under the current term.
pub(crate) async fn record_pass(
    pool: &PgPool,
    term: i64,
    rollout_halted: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO vyx_fleet.settings (key, value, updated_at)
         SELECT k, v, now() FROM (VALUES ($1, to_char(now() AT TIME ZONE 'UTC',
                    'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')), ($2, $3), ($5, '')) AS t (k, v)
          WHERE vyx_fleet.fence($4)
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
    )
    .bind(LAST_PASS_KEY)
    .bind(ROLLOUT_HALTED_KEY)
    .bind(rollout_halted.unwrap_or(""))
    .bind(term)
    .bind(PASS_FAILURE_KEY)
    .execute(pool)
    .await?;
    Ok(())
}

/// Called by the leader when a pass fails: why (a fixed word, never an error's text), for the alert
/// that names the cause. Fenced like [`record_pass`].
pub(crate) async fn record_pass_failure(
    pool: &PgPool,
    term: i64,
    cause: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO vyx_fleet.settings (key, value, updated_at)
         SELECT $1, $2, now() WHERE vyx_fleet.fence($3)
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
    )
    .bind(PASS_FAILURE_KEY)
    .bind(cause)
    .bind(term)
    .execute(pool)
    .await?;
    Ok(())
}

/// The cause of the last pass's failure and when, unless a pass has worked since.
pub(crate) async fn pass_failure(
    pool: &PgPool,
) -> Result<Option<(String, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT value, updated_at FROM vyx_fleet.settings WHERE key = $1 AND value <> ''",
    )
    .bind(PASS_FAILURE_KEY)
    .fetch_optional(pool)
    .await
}

/// One held deletion as the console shows it: the app, whose it is, and why it is going.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct HeldView {
    pub app_name: String,
    pub user_id: Option<Uuid>,
    pub kind: String,
    pub held_at: DateTime<Utc>,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub confirmed_by: Option<String>,
    pub email: Option<String>,
    pub tier: Option<String>,
    pub subscription_status: Option<String>,
    pub override_desired: Option<String>,
    pub override_reason: Option<String>,
    pub override_by: Option<String>,
}

impl HeldView {
    /// Why the controller wants this app gone, in the words an admin checks it against.
    pub(crate) fn why(&self) -> String {
        if self.kind == "orphan" {
            return "orphan: no live row owns this app".into();
        }
        match self.override_desired.as_deref() {
            Some("absent") => format!(
                "override absent by {}: {}",
                self.override_by.as_deref().unwrap_or("?"),
                self.override_reason.as_deref().unwrap_or("")
            ),
            _ => match (&self.tier, &self.subscription_status) {
                (Some(t), Some(s)) => format!("subscription {t} / {s} is not a paid one"),
                _ => "no subscription (free)".into(),
            },
        }
    }
}

/// The held set with each user's facts, in the breaker's order (oldest hold first). An expired
/// confirmation reads as none, as in [`crate::db::breaker::load_held`].
pub(crate) async fn load_held_view(pool: &PgPool) -> Result<Vec<HeldView>, sqlx::Error> {
    sqlx::query_as(
        "SELECT h.app_name, h.user_id, h.kind, h.held_at,
                CASE WHEN h.confirmed_at > now() - make_interval(mins => $1) THEN h.confirmed_at END
                    AS confirmed_at,
                CASE WHEN h.confirmed_at > now() - make_interval(mins => $1) THEN h.confirmed_by END
                    AS confirmed_by,
                coalesce(p.email, u.email) AS email, s.tier, s.status AS subscription_status,
                o.desired AS override_desired, o.reason AS override_reason,
                o.created_by AS override_by
           FROM vyx_fleet.held_deletions h
           LEFT JOIN auth.users u ON u.id = h.user_id
           LEFT JOIN public.user_profiles p ON p.id = h.user_id
           LEFT JOIN public.user_subscriptions s ON s.user_id = h.user_id
           LEFT JOIN vyx_fleet.user_fly_app_overrides o ON o.user_id = h.user_id
          ORDER BY h.held_at, h.app_name",
    )
    .bind(crate::db::breaker::CONFIRMATION_TTL_MINUTES)
    .fetch_all(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_treat_wildcards_as_text() {
        assert_eq!(like_pattern("a%b_c\\"), "%a\\%b\\_c\\\\%");
    }

    #[test]
    fn sort_keys_round_trip_through_their_names() {
        for k in SortKey::ALL {
            assert_eq!(SortKey::parse(k.name()), Some(k));
        }
        assert_eq!(SortKey::parse("app_name; DROP TABLE x"), None);
    }
}
