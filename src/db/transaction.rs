//! Beginning a transaction that a cancelled caller cannot leave open.
//!
//! sqlx 0.9's `Pool::begin` is not cancel-safe on PostgreSQL. It sends `BEGIN`, awaits the reply,
//! and only then counts the transaction; its rollback-on-drop guards act only on a counted one. A
//! caller dropped while the reply is on its way (an action aborted at shutdown or on a lost lease,
//! a timed-out request) leaves the session inside a transaction nothing will end, and the pool
//! hands that connection to the next borrower: every later statement on it runs inside that
//! transaction, holds its locks and is never committed. The controller's own writes were lost that
//! way, and the fence's lock on the lease row they held blocked every other write (tests/crash.rs
//! ran into it about once in twelve runs). Upstream fixed it after 0.9.0
//! (<https://github.com/transact-rs/sqlx/pull/4394>); with a release that has it, [`begin`] can
//! go back to being `pool.begin()`.
//!
//! [`begin`] runs the `BEGIN` in a task of its own, which finishes whether or not its caller still
//! waits. A caller dropped meanwhile drops the counted transaction when that task ends, and sqlx
//! rolls it back before the connection goes back to the pool. `clippy.toml` forbids sqlx's own
//! `begin` methods everywhere else.

use sqlx::{PgPool, Postgres, Transaction};

/// A transaction on a connection from `pool`; see the module's doc for why not `pool.begin()`.
pub async fn begin(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let pool = pool.clone();
    #[allow(clippy::disallowed_methods)] // the one place it is called, in a task of its own
    let task = tokio::spawn(async move { pool.begin().await });
    match task.await {
        Ok(begun) => begun,
        // The task cannot panic short of a bug in sqlx; it is cancelled only when the runtime
        // shuts down, and then no caller is left to read this.
        Err(e) => Err(sqlx::Error::Protocol(format!(
            "the task beginning a transaction ended early: {e}"
        ))),
    }
}
