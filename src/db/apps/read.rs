//! The reads a pass and a targeted run start from: rows, desired-state facts, orphans.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::collections::BTreeMap;
use uuid::Uuid;

use crate::model::app_row::AppRow;
use crate::model::desired::UserFacts;
use crate::model::shared_str::Interner;

/// `SELECT <extra><row columns> FROM user_fly_apps a <tail>` as one literal (sqlx wants static
/// SQL); `extra`, if given, is more columns, each followed by a comma.
macro_rules! select_rows {
    ($tail:literal) => {
        select_rows!("", $tail)
    };
    ($extra:literal, $tail:literal) => {
        concat!(
            "SELECT ", $extra, "a.id, a.user_id, EXISTS (SELECT 1 FROM auth.users u WHERE u.id = a.user_id) AS user_exists, ",
            "a.fly_app_name, a.fly_org_slug, a.status, a.region, a.docker_image, a.health_status, ",
            "a.last_health_check, a.retry_count, a.deleted_at, a.fly_app_id, a.machine_id, a.machine_op_id, ",
            "a.secrets_version, a.secrets_digest, a.ips_ready, a.config_digest, a.next_attempt_at, ",
            "a.unwanted_since, a.last_error_kind FROM public.user_fly_apps a ",
            $tail
        )
    };
}

pub(in crate::db) use select_rows;

/// Every user with a subscription or an override, in one query.
pub async fn load_desired_facts(pool: &PgPool) -> Result<Vec<UserFacts>, sqlx::Error> {
    type FactRow = (Uuid, Option<String>, Option<String>, Option<String>);
    let rows: Vec<FactRow> = sqlx::query_as(
        "SELECT u.id, s.tier, s.status, o.desired \
         FROM auth.users u \
         LEFT JOIN public.user_subscriptions s ON s.user_id = u.id \
         LEFT JOIN vyx_fleet.user_fly_app_overrides o ON o.user_id = u.id \
         WHERE s.user_id IS NOT NULL OR o.user_id IS NOT NULL",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(user_id, tier, sub_status, override_desired)| UserFacts {
            user_id,
            tier,
            sub_status,
            override_desired,
        })
        .collect())
}

/// [`load_desired_facts`] for one user (a NOTIFY names one): three primary-key or unique-index
/// lookups, whatever the number of users.
pub(crate) async fn load_desired_facts_for_user(
    pool: &PgPool,
    user_id: Uuid,
) -> Result<Option<UserFacts>, sqlx::Error> {
    type FactRow = (Uuid, Option<String>, Option<String>, Option<String>);
    let row: Option<FactRow> = sqlx::query_as(
        "SELECT u.id, s.tier, s.status, o.desired \
         FROM auth.users u \
         LEFT JOIN public.user_subscriptions s ON s.user_id = u.id \
         LEFT JOIN vyx_fleet.user_fly_app_overrides o ON o.user_id = u.id \
         WHERE u.id = $1 AND (s.user_id IS NOT NULL OR o.user_id IS NOT NULL)",
    )
    .bind(user_id)
    .fetch_optional(pool)
    .await?;
    Ok(
        row.map(|(user_id, tier, sub_status, override_desired)| UserFacts {
            user_id,
            tier,
            sub_status,
            override_desired,
        }),
    )
}

pub async fn load_rows(pool: &PgPool) -> Result<Vec<AppRow>, sqlx::Error> {
    use futures_util::TryStreamExt;
    use sqlx::{FromRow, Row};
    // Sized once, at the first row, by a count in the same statement (same snapshot). Grown by
    // doubling instead, the vector ended a third empty, and each growth (or a shrink after it)
    // held the old buffer beside the new one: about 40 MB over the rows themselves at 100,000,
    // which was the full pass's peak.
    let mut rows: Vec<AppRow> = Vec::new();
    // Each row shares its repeated values (status, image, digests) as it arrives, so the copies a
    // row decodes never accumulate: the full pass's peak holds one per distinct value.
    let mut interner = Interner::default();
    let mut stream = sqlx::query(select_rows!(
        "(SELECT count(*) FROM public.user_fly_apps) AS total_rows, ",
        "ORDER BY a.created_at, a.id"
    ))
    .fetch(pool);
    while let Some(r) = stream.try_next().await? {
        if rows.capacity() == 0 {
            let total: i64 = r.try_get("total_rows")?;
            rows.reserve_exact(usize::try_from(total).unwrap_or(0));
        }
        let mut row = AppRow::from_row(&r)?;
        row.intern(&mut interner);
        rows.push(row);
    }
    Ok(rows)
}

pub(crate) async fn load_row(pool: &PgPool, row_id: Uuid) -> Result<Option<AppRow>, sqlx::Error> {
    sqlx::query_as(select_rows!("WHERE a.id = $1"))
        .bind(row_id)
        .fetch_optional(pool)
        .await
}

pub async fn load_row_for_user(
    pool: &PgPool,
    user_id: Uuid,
) -> Result<Option<AppRow>, sqlx::Error> {
    sqlx::query_as(select_rows!("WHERE a.user_id = $1"))
        .bind(user_id)
        .fetch_optional(pool)
        .await
}

pub(crate) async fn load_orphans(
    pool: &PgPool,
) -> Result<BTreeMap<String, DateTime<Utc>>, sqlx::Error> {
    let rows: Vec<(String, DateTime<Utc>)> =
        sqlx::query_as("SELECT app_name, first_seen_at FROM vyx_fleet.orphans")
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().collect())
}
