//! The fleet over time (`vyx_fleet.fleet_samples`): one row a minute, written by whichever replica's
//! alert loop comes first (the minute is the key), kept for [`RETENTION_DAYS`]; the console draws
//! its charts from it.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

pub(crate) const RETENTION_DAYS: i32 = 30;

#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct Sample {
    pub minute: DateTime<Utc>,
    pub live: i32,
    pub desired: i32,
    pub unhealthy: i32,
    pub errors: i32,
    pub monthly_cost_usd: f64,
}

/// Samples the fleet for the current minute unless a replica already did; drops samples past the
/// retention. `desired` follows the same rule as the dashboard's summary (an override wins, else
/// tier and status).
pub(crate) async fn sample(
    pool: &PgPool,
    paid_tiers: &[String],
    paid_statuses: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO vyx_fleet.fleet_samples (minute, live, desired, unhealthy, errors, monthly_cost_usd)
         SELECT date_trunc('minute', now()),
                (SELECT count(*) FROM public.user_fly_apps WHERE deleted_at IS NULL),
                (SELECT count(*) FROM auth.users u
                   LEFT JOIN public.user_subscriptions s ON s.user_id = u.id
                   LEFT JOIN vyx_fleet.user_fly_app_overrides o ON o.user_id = u.id
                  WHERE o.desired = 'present'
                     OR (o.desired IS NULL AND s.tier = ANY($1) AND s.status = ANY($2))),
                (SELECT count(*) FROM public.user_fly_apps
                  WHERE deleted_at IS NULL AND health_status = 'unhealthy'),
                (SELECT count(*) FROM public.user_fly_apps
                  WHERE deleted_at IS NULL AND status = 'error'),
                (SELECT coalesce(sum(monthly_cost_estimate_usd), 0) FROM public.user_fly_apps
                  WHERE deleted_at IS NULL)
          WHERE NOT EXISTS (SELECT 1 FROM vyx_fleet.fleet_samples
                             WHERE minute = date_trunc('minute', now()))
         ON CONFLICT (minute) DO NOTHING",
    )
    .bind(paid_tiers)
    .bind(paid_statuses)
    .execute(pool)
    .await?;
    sqlx::query(
        "DELETE FROM vyx_fleet.fleet_samples WHERE minute < now() - make_interval(days => $1)",
    )
    .bind(RETENTION_DAYS)
    .execute(pool)
    .await?;
    Ok(())
}

/// The samples of the last `hours`, oldest first: one a minute for a day, hourly averages beyond
/// (a 30-day line is 720 points, not 43,200).
pub(crate) async fn recent(pool: &PgPool, hours: i32) -> Result<Vec<Sample>, sqlx::Error> {
    let bucket = if hours > 24 { "hour" } else { "minute" };
    sqlx::query_as(
        "SELECT date_trunc($2, minute) AS minute, round(avg(live))::int4 AS live,
                round(avg(desired))::int4 AS desired, round(avg(unhealthy))::int4 AS unhealthy,
                round(avg(errors))::int4 AS errors, avg(monthly_cost_usd)::float8 AS monthly_cost_usd
           FROM vyx_fleet.fleet_samples
          WHERE minute > now() - make_interval(hours => $1)
          GROUP BY 1 ORDER BY 1",
    )
    .bind(hours)
    .bind(bucket)
    .fetch_all(pool)
    .await
}
