//! Point 5: a stuck lock holder cannot wedge leadership or billing.

#[allow(unused_imports)]
use super::*;

/// Polls until some backend waits on a lock (the blocked statement is in place). A condition, not a
/// timing: the guard only stops a broken build from hanging the suite.
async fn until_a_backend_waits_on_a_lock(pool: &sqlx::PgPool) {
    guard(async {
        loop {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
            )
            .fetch_one(pool)
            .await
            .unwrap();
            if n > 0 {
                return;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
}

#[tokio::test]
async fn an_idle_transaction_holding_an_app_row_does_not_wedge_lease_renewal() {
    let fleet = Fleet::start().await;
    let user = paid(&fleet, 1).await[0];
    fleet.converge().await;
    let row = fleet.row(user).await;
    // The controller's pool, configured as the daemon configures it.
    let pool = vyx_fleet::db::connect(&fleet.db.url, 4).await.unwrap();
    let store = Store::new(pool.clone(), fleet.term);

    // An admin's psql session: a row lock, then idle.
    let mut admin = fleet.db.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM public.user_fly_apps WHERE id = $1 FOR UPDATE")
        .bind(row.id)
        .execute(&mut *admin)
        .await
        .unwrap();

    // A fenced write blocks on that row while holding the fence's share lock on the lease row.
    let write = tokio::spawn({
        let store = store.clone();
        async move { store.mark_unwanted(row.id, &[]).await }
    });
    until_a_backend_waits_on_a_lock(&fleet.db.pool).await;

    // The leader's renewal and a standby's attempt both answer while the admin still idles.
    let renewed = guard(lease::renew(
        &pool,
        &fleet.holder,
        fleet.term,
        std::time::Duration::from_secs(600),
    ))
    .await;
    assert!(matches!(renewed, Ok(true)), "{renewed:?}");
    let standby = guard(lease::try_acquire(
        &pool,
        "standby",
        std::time::Duration::from_secs(600),
    ))
    .await;
    assert!(matches!(standby, Ok(None)), "{standby:?}");
    let write = guard(write).await.unwrap();
    assert!(write.is_err(), "the blocked write gives up: {write:?}");
    admin.rollback().await.unwrap();
}

#[tokio::test]
async fn migrations_give_up_on_a_billing_table_lock_instead_of_queueing_behind_it() {
    let db = support::legacy_vyx_db().await;
    // A long billing transaction: a row of user_subscriptions updated, then idle.
    let mut billing = db.pool.begin().await.unwrap();
    sqlx::query("UPDATE public.user_subscriptions SET status = status")
        .execute(&mut *billing)
        .await
        .unwrap();
    // The migrator's own settings must bound the wait, whatever pool it is given.
    let plain = sqlx::PgPool::connect(&db.url).await.unwrap();
    let opts = vyx_fleet::db::MigrateOptions {
        lock_timeout: std::time::Duration::from_millis(200),
        attempts: 2,
    };
    let res = guard(vyx_fleet::db::migrate_with(&plain, opts)).await;
    let err = res.expect_err("the trigger cannot be re-pointed while billing holds the table");
    assert!(err.to_string().contains("lock timeout"), "{err}");
    billing.commit().await.unwrap();
    vyx_fleet::db::migrate(&db.pool)
        .await
        .expect("applies once the lock is gone");
}
