//! Postgres: pool, migrations, lease, queries.
//!
//! Everything here runs with runtime-bound queries (`sqlx::query`), never the compile-time checked
//! macros: there is no database at build time.
//!
//! The crate reaches the query modules as `crate::db::<module>`. From outside the crate (the
//! integration tests and the bench, which drive a real database) the surface is this module's
//! connection and migration functions, the fenced [`Store`], and a few query modules. Those stay
//! public as modules rather than as re-exported names because their API is free functions read
//! with the module's name (`lease::try_acquire`, `rollout::load_current`, `breaker::load_held`);
//! each exports only what the tests call.

// The tests take and release the lease as replicas would, and read and write what the loop and
// the operators record: the rollout, held deletions, admins, and the sweep's work list (whose
// types `reconcile::work_list` returns).
pub mod admins;
pub mod breaker;
pub mod lease;
pub mod rollout;
pub mod worklist;

pub(crate) mod alerts;
pub(crate) mod apps;
pub(crate) mod console;
pub(crate) mod console_user;
pub(crate) mod health;
pub(crate) mod notify;
pub(crate) mod oncall;
pub(crate) mod orphans;
pub(crate) mod samples;

mod connect;
mod migrate;
mod transaction;
mod url;

// The fenced store: the daemon's assembly and the tests' harness build it; the tests write
// through it as the executors do.
pub use apps::{Event, Store, StoreError};

// The sweep's contract tests read what a pass reads before it plans.
pub use apps::{load_desired_facts, load_row_for_user, load_rows};
pub use health::load as load_health;

pub use connect::{SessionLimits, connect, connect_db, connect_with_limits};
pub use migrate::{MigrateOptions, migrate, migrate_with, migrator};
pub use transaction::begin;
pub use url::redact_url;

use std::time::Duration;

use sqlx::PgPool;

/// Errors from the database layer. No variant's `Display` contains the database password: URLs are
/// stored redacted (see [`redact_url`]).
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// `DATABASE_URL` cannot be parsed. Fix the setting; retrying will not help.
    #[error("invalid database url {url}: {reason}")]
    InvalidUrl { url: String, reason: String },

    /// `DATABASE_URL` points at Supabase's transaction pooler. Fix the setting.
    #[error(
        "database url {url} uses port 6543, Supabase's transaction pooler, which breaks prepared statements, \
         LISTEN/NOTIFY and session state: use the direct connection (db.<project>.supabase.co:5432) or the \
         session pooler (port 5432)"
    )]
    TransactionPooler { url: String },

    /// The first connection failed (network, TLS, authentication). Usually transient at start-up.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },

    /// Applying the embedded migrations failed. The database is left as the failing migration's
    /// transaction found it; fix and rerun `vyx-fleet migrate`.
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),

    /// A query failed.
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),

    /// A call that must stay short (a lease call) got no answer in time: the network or the
    /// database is stuck. Treat it like a failed call; the statement is bounded server-side too.
    #[error("database call timed out after {0:?}")]
    Timeout(Duration),
}

/// The database's clock. The controller judges every grace period and backoff with it (they are
/// stored with `now()`), never with a replica's own clock.
pub async fn now(pool: &PgPool) -> Result<chrono::DateTime<chrono::Utc>, sqlx::Error> {
    sqlx::query_scalar("SELECT now()").fetch_one(pool).await
}

#[cfg(test)]
mod tests;
