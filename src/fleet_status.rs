//! The fleet's status table: every `user_fly_apps` row with its totals, as `vyx-fleet status`
//! prints it and the demo shows it between the acts of its story. Reads the database only; no
//! secret is ever in a row.
//!
//! Apart from the CLI so the demo, which the CLI starts, can print it without depending back on
//! the CLI.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct AppStatus {
    pub user_id: uuid::Uuid,
    pub app: String,
    /// `fly_org_slug` as recorded.
    pub fly_org: Option<String>,
    pub status: String,
    pub health: Option<String>,
    pub image: Option<String>,
    pub region: Option<String>,
    pub machine_id: Option<String>,
    pub monthly_cost_usd: Option<f64>,
    pub retry_count: Option<i32>,
    pub last_error_kind: Option<String>,
    pub next_attempt_at: Option<chrono::DateTime<chrono::Utc>>,
    pub deleted_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Serialize)]
pub struct Totals {
    pub apps: usize,
    pub live: usize,
    pub by_status: BTreeMap<String, usize>,
    pub by_health: BTreeMap<String, usize>,
    /// Sum over live apps.
    pub monthly_cost_usd: f64,
}

pub async fn load(pool: &sqlx::PgPool) -> Result<(Vec<AppStatus>, Totals), sqlx::Error> {
    let apps: Vec<AppStatus> = sqlx::query_as(
        "SELECT user_id, fly_app_name AS app, fly_org_slug AS fly_org, status, health_status AS health, docker_image AS image, \
                region, machine_id, monthly_cost_estimate_usd::float8 AS monthly_cost_usd, retry_count, \
                last_error_kind, next_attempt_at, deleted_at \
         FROM public.user_fly_apps ORDER BY fly_app_name",
    )
    .fetch_all(pool)
    .await?;
    let live: Vec<&AppStatus> = apps.iter().filter(|a| a.deleted_at.is_none()).collect();
    let mut by_status = BTreeMap::new();
    let mut by_health = BTreeMap::new();
    for a in &apps {
        *by_status.entry(a.status.clone()).or_insert(0) += 1;
    }
    for a in &live {
        *by_health
            .entry(a.health.clone().unwrap_or_else(|| "unknown".into()))
            .or_insert(0) += 1;
    }
    let cost: f64 = live.iter().filter_map(|a| a.monthly_cost_usd).sum();
    let totals = Totals {
        apps: apps.len(),
        live: live.len(),
        by_status,
        by_health,
        monthly_cost_usd: (cost * 100.0).round() / 100.0,
    };
    Ok((apps, totals))
}

pub fn render_table(apps: &[AppStatus], totals: &Totals) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:<15} {:<10} {:<34} {:>8}  USER",
        "APP", "STATUS", "HEALTH", "IMAGE", "$/MONTH"
    );
    for a in apps {
        let _ = writeln!(
            out,
            "{:<20} {:<15} {:<10} {:<34} {:>8}  {}",
            a.app,
            a.status,
            a.health.as_deref().unwrap_or("-"),
            a.image.as_deref().unwrap_or("-"),
            a.monthly_cost_usd.map_or("-".into(), |c| format!("{c:.2}")),
            a.user_id
        );
    }
    let statuses: Vec<String> = totals
        .by_status
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let _ = writeln!(
        out,
        "\n{} apps ({} live): {}; live monthly cost ${:.2}",
        totals.apps,
        totals.live,
        statuses.join(" "),
        totals.monthly_cost_usd
    );
    out
}

/// The status table as `vyx-fleet status` prints it.
pub async fn table(pool: &sqlx::PgPool) -> Result<String, sqlx::Error> {
    let (apps, totals) = load(pool).await?;
    Ok(render_table(&apps, &totals))
}
