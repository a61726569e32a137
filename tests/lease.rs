//! The leader lease and its fencing term, against a real PostgreSQL. Expiry is produced by moving
//! `expires_at` into the past with SQL, never by sleeping.

mod support;

use std::time::Duration;

use sqlx::PgPool;
use support::migrated_db;
use vyx_fleet::db::lease::{self, LeaseConfig};

const TTL: Duration = Duration::from_secs(30);

/// Ends the current lease now, as if its holder had died `ttl` ago.
async fn expire(pool: &PgPool) {
    sqlx::query(
        "UPDATE vyx_fleet.lease SET expires_at = clock_timestamp() - interval '1 second'
          WHERE name = 'controller'",
    )
    .execute(pool)
    .await
    .unwrap();
}

async fn fence(pool: &PgPool, term: i64) -> bool {
    lease::fence_holds(pool, term).await.unwrap()
}

#[tokio::test]
async fn only_one_holder_at_a_time() {
    let db = migrated_db().await;
    let a = lease::try_acquire(&db.pool, "a", TTL).await.unwrap();
    assert_eq!(a, Some(1));
    assert_eq!(lease::try_acquire(&db.pool, "b", TTL).await.unwrap(), None);

    let state = lease::current(&db.pool).await.unwrap();
    assert_eq!(state.live_holder(), Some("a"));
    assert_eq!(state.term, 1);
    let left = state.expires_at.unwrap() - state.db_now;
    assert!(left > chrono::Duration::seconds(25), "{left}");

    // The holder asking again keeps its term (and extends the lease).
    assert_eq!(
        lease::try_acquire(&db.pool, "a", TTL).await.unwrap(),
        Some(1)
    );
    assert_eq!(lease::try_acquire(&db.pool, "b", TTL).await.unwrap(), None);
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_with_a_higher_term() {
    let db = migrated_db().await;
    let a = lease::try_acquire(&db.pool, "a", TTL)
        .await
        .unwrap()
        .unwrap();
    expire(&db.pool).await;
    assert_eq!(lease::current(&db.pool).await.unwrap().live_holder(), None);

    let b = lease::try_acquire(&db.pool, "b", TTL)
        .await
        .unwrap()
        .unwrap();
    assert!(b > a, "term {b} after {a}");
    assert_eq!(
        lease::current(&db.pool).await.unwrap().live_holder(),
        Some("b")
    );

    // Even the old holder coming back to its own expired lease gets a new term: its earlier writes must
    // stay fenced off.
    expire(&db.pool).await;
    let a2 = lease::try_acquire(&db.pool, "a", TTL)
        .await
        .unwrap()
        .unwrap();
    assert!(a2 > b);
}

#[tokio::test]
async fn renew_extends_the_lease_and_fails_after_a_takeover() {
    let db = migrated_db().await;
    // Taken for a minute and renewed for an hour: the renewal's extension shows however long the
    // machine takes between the two calls (a 2 s lease could expire in between under load).
    let a = lease::try_acquire(&db.pool, "a", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert!(
        lease::renew(&db.pool, "a", a, Duration::from_secs(3600))
            .await
            .unwrap()
    );
    let s = lease::current(&db.pool).await.unwrap();
    assert!(s.expires_at.unwrap() - s.db_now > chrono::Duration::minutes(50));
    assert_eq!(s.term, a, "renewing keeps the term");

    // Wrong holder or wrong term: not ours to renew.
    assert!(!lease::renew(&db.pool, "b", a, TTL).await.unwrap());
    assert!(!lease::renew(&db.pool, "a", a + 1, TTL).await.unwrap());

    expire(&db.pool).await;
    // Expired: lost, even before anyone else takes it.
    assert!(!lease::renew(&db.pool, "a", a, TTL).await.unwrap());
    let b = lease::try_acquire(&db.pool, "b", TTL)
        .await
        .unwrap()
        .unwrap();
    assert!(!lease::renew(&db.pool, "a", a, TTL).await.unwrap());
    assert!(lease::renew(&db.pool, "b", b, TTL).await.unwrap());
}

#[tokio::test]
async fn release_lets_a_standby_take_over_at_once() {
    let db = migrated_db().await;
    let a = lease::try_acquire(&db.pool, "a", TTL)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lease::try_acquire(&db.pool, "b", TTL).await.unwrap(), None);

    // A stale release (wrong term) does nothing.
    lease::release(&db.pool, "a", a - 1).await.unwrap();
    assert_eq!(lease::try_acquire(&db.pool, "b", TTL).await.unwrap(), None);

    lease::release(&db.pool, "a", a).await.unwrap();
    assert!(!fence(&db.pool, a).await, "released term no longer fences");
    let b = lease::try_acquire(&db.pool, "b", TTL)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b, a + 1);
    assert!(!lease::renew(&db.pool, "a", a, TTL).await.unwrap());

    // The old holder releasing late does not end the new holder's lease.
    lease::release(&db.pool, "a", a).await.unwrap();
    assert!(fence(&db.pool, b).await);
}

#[tokio::test]
async fn the_fence_holds_for_the_current_unexpired_term_only() {
    let db = migrated_db().await;
    assert!(!fence(&db.pool, 0).await, "never-held lease fences nothing");

    let a = lease::try_acquire(&db.pool, "a", TTL)
        .await
        .unwrap()
        .unwrap();
    assert!(fence(&db.pool, a).await);
    assert!(!fence(&db.pool, a - 1).await);
    assert!(!fence(&db.pool, a + 1).await);

    expire(&db.pool).await;
    assert!(!fence(&db.pool, a).await, "false once expired");

    let b = lease::try_acquire(&db.pool, "b", TTL)
        .await
        .unwrap()
        .unwrap();
    assert!(fence(&db.pool, b).await);
    assert!(!fence(&db.pool, a).await, "false after takeover");
}

#[tokio::test]
async fn a_deposed_leaders_fenced_write_changes_nothing() {
    let db = migrated_db().await;
    let a = lease::try_acquire(&db.pool, "a", TTL)
        .await
        .unwrap()
        .unwrap();
    let write = |term: i64, value: &'static str| {
        let pool = db.pool.clone();
        async move {
            sqlx::query(
                "INSERT INTO vyx_fleet.settings (key, value)
                 SELECT 'probe', $2 WHERE vyx_fleet.fence($1)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            )
            .bind(term)
            .bind(value)
            .execute(&pool)
            .await
            .unwrap()
            .rows_affected()
        }
    };
    assert_eq!(write(a, "from a").await, 1);

    expire(&db.pool).await;
    let b = lease::try_acquire(&db.pool, "b", TTL)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(write(a, "late write from a").await, 0);
    assert_eq!(write(b, "from b").await, 1);
    let value: String =
        sqlx::query_scalar("SELECT value FROM vyx_fleet.settings WHERE key = 'probe'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(value, "from b");
}

#[tokio::test]
async fn a_fenced_transaction_holds_off_a_takeover_until_it_ends() {
    let db = migrated_db().await;
    let a = lease::try_acquire(&db.pool, "a", TTL)
        .await
        .unwrap()
        .unwrap();

    let mut tx = vyx_fleet::db::begin(&db.pool).await.unwrap();
    let fenced: bool = sqlx::query_scalar("SELECT vyx_fleet.fence($1)")
        .bind(a)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert!(fenced);

    // Any change of the lease row (renewal, takeover, release) must wait for this transaction.
    let mut other = db.pool.acquire().await.unwrap();
    let blocked =
        sqlx::query("SELECT 1 FROM vyx_fleet.lease WHERE name = 'controller' FOR UPDATE NOWAIT")
            .execute(&mut *other)
            .await;
    match blocked {
        Err(sqlx::Error::Database(e)) => assert_eq!(e.code().as_deref(), Some("55P03")),
        other => panic!("expected lock_not_available, got {other:?}"),
    }

    tx.commit().await.unwrap();
    sqlx::query("SELECT 1 FROM vyx_fleet.lease WHERE name = 'controller' FOR UPDATE NOWAIT")
        .execute(&mut *other)
        .await
        .expect("lock free once the fenced transaction ended");
}

#[tokio::test]
async fn racing_replicas_elect_exactly_one_leader() {
    let db = migrated_db().await;
    let first = lease::try_acquire(&db.pool, "old", TTL)
        .await
        .unwrap()
        .unwrap();
    expire(&db.pool).await;

    let racers: Vec<_> = (0..8)
        .map(|i| {
            let pool = db.pool.clone();
            tokio::spawn(async move {
                lease::try_acquire(&pool, &format!("replica-{i}"), TTL)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut won = Vec::new();
    for r in racers {
        if let Some(term) = r.await.unwrap() {
            won.push(term);
        }
    }
    assert_eq!(
        won,
        vec![first + 1],
        "exactly one winner, with the next term"
    );
}

#[tokio::test]
async fn a_missing_lease_row_reads_as_free_and_is_recreated() {
    let db = migrated_db().await;
    sqlx::query("DELETE FROM vyx_fleet.lease")
        .execute(&db.pool)
        .await
        .unwrap();
    let s = lease::current(&db.pool).await.unwrap();
    assert_eq!((s.holder.as_deref(), s.term, s.expires_at), (None, 0, None));
    assert_eq!(
        lease::try_acquire(&db.pool, "a", TTL).await.unwrap(),
        Some(1)
    );
    assert_eq!(
        lease::current(&db.pool).await.unwrap().live_holder(),
        Some("a")
    );
}

#[test]
fn default_config_renews_well_within_the_ttl() {
    let c = LeaseConfig::default();
    assert_eq!(c.ttl, Duration::from_secs(15));
    assert_eq!(c.renew_every, Duration::from_secs(5));
}
