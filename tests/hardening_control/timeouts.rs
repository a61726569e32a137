//! A stuck lock holder cannot wedge leadership or billing.

#[allow(unused_imports)]
use super::*;

/// The backend of the caller's own connection.
async fn backend_pid(conn: &mut sqlx::PgConnection) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(conn)
        .await
        .unwrap()
}

/// Polls until a backend waits on a lock that `holder` holds, and returns that backend. Only this
/// test's own backends can be blocked by `holder` (other tests share the cluster, not the
/// transaction), so a lock wait elsewhere in the cluster cannot end the wait early. A condition, not
/// a timing: the guard only stops a broken build from hanging the suite.
async fn until_blocked_by(pool: &sqlx::PgPool, holder: i32) -> i32 {
    guard(async {
        loop {
            let waiter: Option<i32> = sqlx::query_scalar(
                "SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid)) LIMIT 1",
            )
            .bind(holder)
            .fetch_optional(pool)
            .await
            .unwrap();
            if let Some(pid) = waiter {
                return pid;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Whether `waiter` is, right now, waiting on a lock that `holder` holds.
async fn is_blocked_by(pool: &sqlx::PgPool, waiter: i32, holder: i32) -> bool {
    sqlx::query_scalar("SELECT $2 = ANY(pg_blocking_pids($1))")
        .bind(waiter)
        .bind(holder)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A pool whose writes wait for locks far longer than the test runs. With the daemon's own
/// `lock_timeout` the blocked write would give up after a few seconds and free the lease row, so a
/// renewal that (wrongly) queued behind it would still pass, on a loaded machine, by outlasting it:
/// the test could not tell. A write that never gives up leaves only one way to pass.
async fn patient_pool(fleet: &Fleet) -> sqlx::PgPool {
    let limits = vyx_fleet::db::SessionLimits {
        lock_timeout: std::time::Duration::from_secs(600),
        statement_timeout: std::time::Duration::from_secs(600),
        idle_in_transaction_timeout: std::time::Duration::from_secs(600),
    };
    vyx_fleet::db::connect_with_limits(&fleet.db.url, 2, limits)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_idle_transaction_holding_an_app_row_does_not_wedge_lease_renewal() {
    let fleet = Fleet::start().await;
    let user = paid(&fleet, 1).await[0];
    fleet.converge().await;
    let row = fleet.row(user).await;
    // The leader's lease calls go through a pool configured as the daemon configures it.
    let pool = vyx_fleet::db::connect(&fleet.db.url, 4).await.unwrap();
    let store = Store::new(patient_pool(&fleet).await, fleet.term);

    // An admin's psql session: a row lock, then idle.
    let mut admin = vyx_fleet::db::begin(&fleet.db.pool).await.unwrap();
    let admin_pid = backend_pid(&mut admin).await;
    sqlx::query("SELECT 1 FROM public.user_fly_apps WHERE id = $1 FOR UPDATE")
        .bind(row.id)
        .execute(&mut *admin)
        .await
        .unwrap();

    // A fenced write blocks on that row, holding the fence's lock on the lease row.
    let write = tokio::spawn({
        let store = store.clone();
        async move { store.mark_unwanted(row.id, &[]).await }
    });
    let writer = until_blocked_by(&fleet.db.pool, admin_pid).await;

    // The leader's renewal and a standby's attempt both answer while the write is still blocked.
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
    assert!(
        is_blocked_by(&fleet.db.pool, writer, admin_pid).await,
        "the write was still blocked when the lease calls answered: they did not wait for it"
    );

    // Once the admin lets go, the write (fenced with a term that is still valid) goes through.
    admin.rollback().await.unwrap();
    let write = guard(write).await.unwrap();
    assert!(write.is_ok(), "{write:?}");
    assert!(fleet.row(user).await.unwanted_since.is_some());
}

#[tokio::test]
async fn a_fenced_write_blocked_by_an_idle_transaction_gives_up_with_the_daemons_limits() {
    let fleet = Fleet::start().await;
    let user = paid(&fleet, 1).await[0];
    fleet.converge().await;
    let row = fleet.row(user).await;
    let pool = vyx_fleet::db::connect(&fleet.db.url, 4).await.unwrap();
    let store = Store::new(pool.clone(), fleet.term);

    let mut admin = vyx_fleet::db::begin(&fleet.db.pool).await.unwrap();
    sqlx::query("SELECT 1 FROM public.user_fly_apps WHERE id = $1 FOR UPDATE")
        .bind(row.id)
        .execute(&mut *admin)
        .await
        .unwrap();
    // The admin idles for as long as the write takes: only the write's own `lock_timeout` ends it.
    let write = guard(store.mark_unwanted(row.id, &[])).await;
    assert!(write.is_err(), "the blocked write gives up: {write:?}");
    admin.rollback().await.unwrap();
    assert!(fleet.row(user).await.unwanted_since.is_none());
}

#[tokio::test]
async fn a_change_of_term_waits_for_a_write_fenced_with_the_old_term() {
    let fleet = Fleet::start().await;
    let user = paid(&fleet, 1).await[0];
    fleet.converge().await;
    let row = fleet.row(user).await;
    let store = Store::new(patient_pool(&fleet).await, fleet.term);

    let mut admin = vyx_fleet::db::begin(&fleet.db.pool).await.unwrap();
    let admin_pid = backend_pid(&mut admin).await;
    sqlx::query("SELECT 1 FROM public.user_fly_apps WHERE id = $1 FOR UPDATE")
        .bind(row.id)
        .execute(&mut *admin)
        .await
        .unwrap();
    let write = tokio::spawn({
        let store = store.clone();
        async move { store.mark_unwanted(row.id, &[]).await }
    });
    let writer = until_blocked_by(&fleet.db.pool, admin_pid).await;

    // Another replica takes over (a new term) while the old term's write is in flight: the takeover
    // must wait for that write, or the deposed leader's write would land after it.
    let patient = patient_pool(&fleet).await;
    let mut usurper = patient.acquire().await.unwrap().detach();
    let usurper_pid = backend_pid(&mut usurper).await;
    let takeover = tokio::spawn(async move {
        sqlx::query(
            "UPDATE vyx_fleet.lease SET holder = 'usurper', term = term + 1,
                    expires_at = clock_timestamp() + interval '1 hour'
              WHERE name = 'controller'",
        )
        .execute(&mut usurper)
        .await
    });
    let blocker = until_blocked_by(&fleet.db.pool, writer).await;
    assert_eq!(
        blocker, usurper_pid,
        "the takeover waits for the fenced write"
    );

    admin.rollback().await.unwrap();
    let write = guard(write).await.unwrap();
    assert!(write.is_ok(), "{write:?}");
    guard(takeover).await.unwrap().unwrap();
    // The old term's next write changes nothing.
    store.cancel_unwanted(row.id, &[]).await.unwrap_err();
    assert!(fleet.row(user).await.unwanted_since.is_some());
}

#[tokio::test]
async fn migrations_give_up_on_a_billing_table_lock_instead_of_queueing_behind_it() {
    let db = support::legacy_vyx_db().await;
    // A long billing transaction: a row of user_subscriptions updated, then idle.
    let mut billing = vyx_fleet::db::begin(&db.pool).await.unwrap();
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

/// A leader frozen (SIGSTOP) inside one of its own transactions, after the fence took its lock on
/// the lease row and before the commit: a takeover waits for that lock, so without a server-side
/// end to idle transactions the lease would never pass to the standby (seen once in tests/ha.rs's
/// frozen-leader test, the standby waiting for a minute on a lease that had expired).
#[tokio::test]
async fn a_leader_frozen_inside_a_fenced_transaction_does_not_block_the_takeover() {
    let fleet = Fleet::start().await;
    let limits = vyx_fleet::db::SessionLimits {
        idle_in_transaction_timeout: std::time::Duration::from_secs(1),
        ..Default::default()
    };
    let leader = vyx_fleet::db::connect_with_limits(&fleet.db.url, 1, limits)
        .await
        .unwrap();
    let mut frozen = vyx_fleet::db::begin(&leader).await.unwrap();
    let holds: bool = sqlx::query_scalar("SELECT vyx_fleet.fence($1)")
        .bind(fleet.term)
        .fetch_one(&mut *frozen)
        .await
        .unwrap();
    assert!(holds);
    // The lease runs out while the leader is frozen (a renewal never waits on the fence's lock).
    sqlx::query("UPDATE vyx_fleet.lease SET expires_at = now() - interval '1 second'")
        .execute(&fleet.db.pool)
        .await
        .unwrap();
    let standby = vyx_fleet::db::connect(&fleet.db.url, 2).await.unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let term = loop {
        match lease::try_acquire(&standby, "standby", std::time::Duration::from_secs(60)).await {
            Ok(Some(term)) => break term,
            Ok(None) | Err(_) if tokio::time::Instant::now() < deadline => continue,
            other => panic!("the standby never took the expired lease: {other:?}"),
        }
    };
    assert!(term > fleet.term);
    // The frozen transaction was ended by the server: nothing it wrote can commit now.
    assert!(frozen.commit().await.is_err());
}

/// Every connection a pool opens carries the daemon's session limits: the second connection as
/// much as the first, since the pool sets them up per connection.
#[tokio::test]
async fn every_pooled_connection_carries_the_session_limits() {
    let fleet = Fleet::start().await;
    let pool = vyx_fleet::db::connect(&fleet.db.url, 2).await.unwrap();
    let want = vyx_fleet::db::SessionLimits::default();
    let ms = |d: std::time::Duration| d.as_millis().to_string();
    let mut first = pool.acquire().await.unwrap();
    let mut second = pool.acquire().await.unwrap();
    for conn in [&mut first, &mut second] {
        let shown: Vec<(String, String)> = sqlx::query_as(
            "SELECT name, setting FROM pg_settings WHERE name IN \
             ('lock_timeout', 'statement_timeout', 'idle_in_transaction_session_timeout') \
             ORDER BY name",
        )
        .fetch_all(&mut **conn)
        .await
        .unwrap();
        assert_eq!(
            shown,
            vec![
                (
                    "idle_in_transaction_session_timeout".to_string(),
                    ms(want.idle_in_transaction_timeout)
                ),
                ("lock_timeout".to_string(), ms(want.lock_timeout)),
                ("statement_timeout".to_string(), ms(want.statement_timeout)),
            ]
        );
    }
}
