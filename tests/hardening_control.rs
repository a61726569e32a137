//! Hardening of the control paths (issue 6): the blast-radius breaker's sliding window and held set,
//! timeouts against a stuck database, lease margins, orphan re-checks, cutover gaps.

mod fleet_support;
mod support;

use fleet_support::Fleet;
use support::{UserFixture, set_subscription};
use uuid::Uuid;
use vyx_fleet::db::apps::Store;
use vyx_fleet::db::{breaker, lease};
use vyx_fleet::reconcile::plan::Finding;

async fn paid(fleet: &Fleet, n: usize) -> Vec<Uuid> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(UserFixture::paid("pro").insert(&fleet.db.pool).await);
    }
    v
}

fn blocked(findings: &[Finding]) -> bool {
    findings
        .iter()
        .any(|f| matches!(f, Finding::DeletionsBlocked { .. }))
}

// ---- point 8: the breaker counts over a sliding window and holds a confirmed set ----

#[tokio::test]
async fn deletions_that_trickle_in_over_several_passes_trip_the_breaker_within_the_window() {
    let fleet = Fleet::start().await;
    let users = paid(&fleet, 20).await;
    fleet.converge().await;
    // Five downgrades: exactly the limit (max(5, 10 % of 20)), allowed.
    for u in &users[..5] {
        set_subscription(&fleet.db.pool, *u, "free", "cancelled").await;
    }
    fleet.converge().await;
    assert_eq!(fleet.apps().len(), 15);
    // Three more in the same hour: eight deletions in the window, more than five.
    for u in &users[5..8] {
        set_subscription(&fleet.db.pool, *u, "free", "cancelled").await;
    }
    fleet.pass().await;
    let report = fleet.pass().await;
    assert!(blocked(&report.plan.findings), "{:?}", report.plan.findings);
    assert_eq!(fleet.apps().len(), 15, "nothing more deleted");
    for u in &users[5..8] {
        assert_eq!(fleet.row(*u).await.status, "active");
    }
}

#[tokio::test]
async fn one_confirmation_lets_every_held_deletion_through_even_across_passes() {
    let fleet = Fleet::start().await;
    let users = paid(&fleet, 4).await;
    fleet.converge().await;
    for u in &users {
        set_subscription(&fleet.db.pool, *u, "free", "cancelled").await;
    }
    fleet.pass().await;
    let report = fleet.pass().await;
    assert!(blocked(&report.plan.findings), "{:?}", report.plan.findings);
    assert_eq!(fleet.apps().len(), 4);

    assert_eq!(
        breaker::confirm_held(&fleet.db.pool, "ops").await.unwrap(),
        4
    );
    // One user's earlier attempt failed: it waits out its backoff while the other three go.
    sqlx::query(
        "UPDATE public.user_fly_apps SET next_attempt_at = now() + interval '1 hour' WHERE user_id = $1",
    )
    .bind(users[3])
    .execute(&fleet.db.pool)
    .await
    .unwrap();
    fleet.pass().await;
    assert_eq!(fleet.apps().len(), 1);
    sqlx::query("UPDATE public.user_fly_apps SET next_attempt_at = NULL")
        .execute(&fleet.db.pool)
        .await
        .unwrap();
    fleet.converge().await;
    assert!(fleet.apps().is_empty(), "the 4th app was held again");
    for u in &users {
        assert_eq!(fleet.row(*u).await.status, "deleted");
    }
}

// ---- point 5: a stuck lock holder cannot wedge leadership ----

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

/// Fails the test instead of hanging it when something wedges.
async fn guard<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(60), f)
        .await
        .expect("wedged: the call never returned")
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
