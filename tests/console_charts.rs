//! The charts page: the daemon samples the fleet on its own (one row a minute between replicas),
//! and `/charts` draws the samples as SVG lines, scaled to the range.

mod bin_support;
mod console_support;
mod support;

use bin_support::{Daemon, secs, wait_until};
use console_support::{Console, RowFixture, add_admin, inert_env};
use support::{UserFixture, migrated_db};

#[tokio::test]
async fn two_replicas_sample_the_fleet_once_a_minute_and_the_charts_draw_it() {
    let db = migrated_db().await;
    for i in 0..3 {
        let u = UserFixture::paid("pro").insert(&db.pool).await;
        let row = RowFixture::active(u, &format!("vyx-user-chart{i:03}"));
        let row = if i == 0 { row.failing(1, "x") } else { row };
        row.insert(&db.pool).await;
    }
    let d = Daemon::spawn(&inert_env(&db.url), "charts-a");
    let _other = Daemon::spawn(&inert_env(&db.url), "charts-b");
    let c = Console::connect(d.http_addr).await;
    let token = add_admin(&db.pool, "Ada").await;
    assert_eq!(c.sign_in(&token).await.status, 303);

    let sample: (i32, i32, i32, i32, f64) = wait_until("a sample", secs(60), || async {
        sqlx::query_as(
            "SELECT live, desired, unhealthy, errors, monthly_cost_usd::float8
               FROM vyx_fleet.fleet_samples ORDER BY minute DESC LIMIT 1",
        )
        .fetch_optional(&db.pool)
        .await
        .unwrap()
        .ok_or_else(|| "none yet".to_string())
    })
    .await;
    assert_eq!(sample, (3, 3, 1, 1, 17.1));
    let per_minute: i64 = sqlx::query_scalar(
        "SELECT max(n) FROM (SELECT count(*) AS n FROM vyx_fleet.fleet_samples GROUP BY minute) m",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(per_minute, 1, "two replicas, one row a minute");

    // A day of history: the charts draw one point per sample, the newest at the right edge.
    sqlx::query(
        "INSERT INTO vyx_fleet.fleet_samples (minute, live, desired, unhealthy, errors, monthly_cost_usd)
         SELECT date_trunc('minute', now()) - g * interval '10 minutes', 100 + g, 110, g % 7, 2, 570
           FROM generate_series(1, 100) g
         ON CONFLICT DO NOTHING",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let page = c.get("/charts").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.body.matches("<polyline").count(), 5, "{}", page.body);
    let first = page.body.find("points=\"").unwrap() + "points=\"".len();
    let points = &page.body[first..first + page.body[first..].find('"').unwrap()];
    // 100 written here, and the daemons' own (one, or two if a minute turned meanwhile).
    let n = points.split(' ').count();
    assert!((101..=102).contains(&n), "{n}: {points}");
    assert!(page.body.contains("0 – 200"), "scaled to the largest value");
    // Longer ranges draw hourly averages: 100 samples 10 minutes apart span 17 or 18 hours.
    let month = c.get("/charts?range=30d").await.body;
    let first = month.find("points=\"").unwrap() + "points=\"".len();
    let n = month[first..first + month[first..].find('"').unwrap()]
        .split(' ')
        .count();
    assert!((17..=19).contains(&n), "{n}");
}
