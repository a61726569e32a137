//! Orphan deletion re-checks ownership; grace periods use the database clock.

#[allow(unused_imports)]
use super::*;

/// A user whose app outlived its soft-deleted row (an orphan past its grace), and two bystanders so
/// the breaker does not hold the deletion. Returns the user and the app name.
async fn orphaned_user_app(fleet: &Fleet) -> (Uuid, String) {
    let users = paid(fleet, 3).await;
    fleet.converge().await;
    let user = users[0];
    let app = fleet.row(user).await.fly_app_name;
    set_subscription(&fleet.db.pool, user, "free", "cancelled").await;
    sqlx::query(
        "UPDATE public.user_fly_apps SET status = 'deleted', deleted_at = now(), fly_app_id = NULL
          WHERE user_id = $1",
    )
    .bind(user)
    .execute(&fleet.db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO vyx_fleet.orphans (app_name, first_seen_at, last_seen_at)
         VALUES ($1, now() - interval '2 hours', now())",
    )
    .bind(&app)
    .execute(&fleet.db.pool)
    .await
    .unwrap();
    (user, app)
}

#[tokio::test]
async fn a_re_upgrading_users_app_is_not_planned_for_deletion_as_an_orphan() {
    let fleet = Fleet::start().await;
    let (user, app) = orphaned_user_app(&fleet).await;
    set_subscription(&fleet.db.pool, user, "pro", "active").await;
    let plan = fleet.plan().await;
    assert!(
        !plan
            .actions
            .iter()
            .any(|a| matches!(a, Action::DeleteOrphan { app: a } if *a == app)),
        "{:?}",
        plan.actions
    );
    fleet.converge().await;
    let row = fleet.row(user).await;
    assert_eq!(row.status, "active");
    assert_eq!(row.fly_app_name, app);
    assert!(fleet.app(&app).is_some(), "adopted, not deleted");
}

#[tokio::test]
async fn a_stale_orphan_deletion_spares_an_app_a_row_adopted_meanwhile() {
    let fleet = Fleet::start().await;
    let (user, app) = orphaned_user_app(&fleet).await;
    // The plan of an earlier instant: the app was an orphan past its grace.
    let stale = Action::DeleteOrphan { app: app.clone() };
    set_subscription(&fleet.db.pool, user, "pro", "active").await;
    fleet.converge().await;
    assert_eq!(fleet.row(user).await.status, "active");

    run_action(&fleet.ctx, &stale).await;
    assert!(fleet.app(&app).is_some(), "the adopted app was deleted");
    let row = fleet.row(user).await;
    assert_eq!(row.status, "active");
}

/// Makes the database's `now()` run an hour behind this process's clock (as a replica whose clock
/// is an hour fast would see it), for connections opened from now on; returns such a pool.
async fn db_clock_an_hour_behind(fleet: &Fleet) -> sqlx::PgPool {
    sqlx::raw_sql(
        "CREATE SCHEMA skew;
         CREATE FUNCTION skew.now() RETURNS timestamptz LANGUAGE sql STABLE
             AS $$ SELECT pg_catalog.now() - interval '1 hour' $$;",
    )
    .execute(&fleet.db.pool)
    .await
    .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {} SET search_path = skew, public, pg_catalog",
        fleet.db.name
    )))
    .execute(&fleet.db.pool)
    .await
    .unwrap();
    let pool = vyx_fleet::db::connect(&fleet.db.url, 5).await.unwrap();
    let db_now: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(db_now < chrono::Utc::now() - chrono::Duration::minutes(50));
    pool
}

#[tokio::test]
async fn the_deprovision_grace_is_judged_on_the_database_clock_not_the_replicas() {
    let mut fleet = Fleet::start().await;
    fleet.reconfigure("DEPROVISION_GRACE", "30m");
    let users = paid(&fleet, 3).await;
    fleet.converge().await;
    let pool = db_clock_an_hour_behind(&fleet).await;
    fleet.ctx.store = Store::new(pool, fleet.term);
    set_subscription(&fleet.db.pool, users[0], "free", "cancelled").await;
    fleet.pass().await;
    fleet.pass().await;
    let row = fleet.row(users[0]).await;
    assert_eq!(row.status, "active", "the grace was skipped");
    assert!(row.unwanted_since.is_some(), "the grace started");
    assert!(fleet.app(&row.fly_app_name).is_some());
}

#[tokio::test]
async fn a_backoff_is_stored_on_the_database_clock() {
    let fleet = Fleet::start().await;
    let user = paid(&fleet, 1).await[0];
    fleet.converge().await;
    let row = fleet.row(user).await;
    let pool = db_clock_an_hour_behind(&fleet).await;
    let store = Store::new(pool.clone(), fleet.term);
    store
        .mark_failure(
            row.id,
            vyx_fleet::reconcile::RowStatus::Error,
            "test",
            "test",
            std::time::Duration::from_secs(60),
            &[],
        )
        .await
        .unwrap();
    let (within,): (bool,) = sqlx::query_as(
        "SELECT next_attempt_at <= now() + interval '2 minutes' FROM public.user_fly_apps WHERE id = $1",
    )
    .bind(row.id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(within, "a one-minute backoff became an hour longer");
}
