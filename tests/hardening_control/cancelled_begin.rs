//! A transaction whose caller is dropped while `BEGIN` is on its way leaves no transaction open
//! on the pooled connection (see src/db/transaction.rs for the sqlx defect this guards against).

#[allow(unused_imports)]
use super::*;

use std::future::Future;
use std::pin::pin;
use std::task::Poll;

/// The server's view of backend `pid`: `idle`, `idle in transaction`, ...
async fn backend_state(observer: &sqlx::PgPool, pid: i32) -> String {
    sqlx::query_scalar("SELECT state FROM pg_stat_activity WHERE pid = $1")
        .bind(pid)
        .fetch_one(observer)
        .await
        .unwrap()
}

/// Starts `begin`, and drops it once the server has run its `BEGIN`, without polling it again: a
/// caller cancelled while the reply is on its way. `false` if the begin finished first (that attempt
/// shows nothing; the caller tries again).
async fn cancel_after_server_began<F, T>(begin: F, observer: &sqlx::PgPool, pid: i32) -> bool
where
    F: Future<Output = T>,
{
    let mut begin = pin!(begin);
    loop {
        let polled = std::future::poll_fn(|cx| Poll::Ready(begin.as_mut().poll(cx).is_ready()));
        if polled.await {
            return false;
        }
        // A condition, not a timing: the observer's round trip lets the begin's I/O progress.
        if backend_state(observer, pid).await == "idle in transaction" {
            return true;
        }
    }
}

#[tokio::test]
async fn a_begin_dropped_mid_flight_leaves_no_transaction_on_the_pooled_connection() {
    guard(async {
        let db = support::migrated_db().await;
        // One connection, so every acquire after the cancelled begin gets the connection it used.
        let pool = vyx_fleet::db::connect(&db.url, 1).await.unwrap();
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .unwrap();
        let mut cancelled = 0;
        for _ in 0..20 {
            if cancel_after_server_began(vyx_fleet::db::begin(&pool), &db.pool, pid).await {
                cancelled += 1;
                break;
            }
        }
        assert_eq!(cancelled, 1, "no attempt was cancelled mid-BEGIN");
        // The connection comes back to the pool (acquire waits for it), and the server says its
        // session is outside any transaction: a statement run on it now commits on its own.
        let conn = pool.acquire().await.unwrap();
        assert_eq!(backend_state(&db.pool, pid).await, "idle");
        drop(conn);
    })
    .await;
}
