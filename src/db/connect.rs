//! Opening a pool: the connection options (TLS, the pooler refused) and the limits every
//! connection gets.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{Connection, PgConnection, PgPool};

use super::DbError;
use super::url::{redact_url, url_has_param};

/// Supabase's transaction pooler (Supavisor, transaction mode). It hands each transaction to any server
/// connection, which breaks prepared statements, LISTEN/NOTIFY and the migrator's advisory lock.
const TRANSACTION_POOLER_PORT: u16 = 6543;

/// Connection options for `url`, with our defaults: TLS required off loopback unless the URL says
/// otherwise, and Supabase's transaction pooler refused.
pub(super) fn connect_options(url: &str) -> Result<PgConnectOptions, DbError> {
    connect_options_verified(url, None)
}

/// [`connect_options`] with a CA certificate (`DATABASE_SSL_ROOT_CERT`, e.g. Supabase's
/// `prod-ca-2021.crt`): unless the URL or `PGSSLMODE` names a mode, the server's certificate must
/// chain to it and match the host (`verify-full`). `require` alone encrypts but accepts any
/// certificate, so anyone on the path could pose as the database.
pub(super) fn connect_options_verified(
    url: &str,
    root_cert: Option<&std::path::Path>,
) -> Result<PgConnectOptions, DbError> {
    let redacted = redact_url(url);
    let mut opts = PgConnectOptions::from_str(url).map_err(|e| DbError::InvalidUrl {
        url: redacted.clone(),
        reason: e.to_string(),
    })?;
    if opts.get_socket().is_none() && opts.get_port() == TRANSACTION_POOLER_PORT {
        return Err(DbError::TransactionPooler { url: redacted });
    }
    let mode_given =
        url_has_param(url, &["sslmode", "ssl-mode"]) || std::env::var_os("PGSSLMODE").is_some();
    if let Some(ca) = root_cert {
        opts = opts.ssl_root_cert(ca);
        if !mode_given {
            opts = opts.ssl_mode(PgSslMode::VerifyFull);
        }
    } else if !mode_given && !is_local(&opts) {
        opts = opts.ssl_mode(PgSslMode::Require);
    }
    Ok(opts.application_name("vyx-fleet"))
}

/// Server-side limits on every controller connection.
///
/// Why: a fenced write holds the fence's key-share lock on the lease row while it waits for its row
/// of `user_fly_apps`. Renewals do not conflict with that lock (see
/// [`lease::renew`](super::lease::renew)), but a takeover does: without a limit, an idle
/// transaction holding that row (an admin's open psql session, a dashboard request) blocks the
/// write, the write blocks every takeover, and a dead leader's lease could never pass to a standby.
/// With `lock_timeout` the write gives up (the action retries later) and the lease row is free
/// again. Nothing about leadership depends on which of two such timers fires first: the leader's
/// renewal never waits on a fenced write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Longest wait for any lock (row, table, advisory).
    pub lock_timeout: Duration,
    /// Longest any single statement may run.
    pub statement_timeout: Duration,
    /// Longest a transaction may sit idle between its statements. A leader frozen (SIGSTOP, a VM
    /// pause) between a fenced statement and its commit keeps the fence's lock, and a takeover
    /// waits for that lock: only the server can end such a transaction, and it must, or the lease
    /// never passes to a standby. Our transactions never wait on anything but their own
    /// statements, so a few seconds is generous.
    pub idle_in_transaction_timeout: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            lock_timeout: Duration::from_secs(3),
            statement_timeout: Duration::from_secs(30),
            idle_in_transaction_timeout: Duration::from_secs(5),
        }
    }
}

impl SessionLimits {
    /// One statement, run once per new connection, that sets the three for the session (as `SET`
    /// would: `set_config(.., false)`). Session settings rather than startup options: Supabase's
    /// session pooler keeps session state but may not pass startup options through. One statement
    /// rather than three `SET`s: a new connection costs the server one statement.
    fn sql(&self) -> String {
        format!(
            "SELECT set_config('lock_timeout', '{}ms', false), \
                    set_config('statement_timeout', '{}ms', false), \
                    set_config('idle_in_transaction_session_timeout', '{}ms', false)",
            self.lock_timeout.as_millis(),
            self.statement_timeout.as_millis(),
            self.idle_in_transaction_timeout.as_millis()
        )
    }
}

/// Opens a pool on `url` after checking that one connection can be made; every connection gets the
/// default [`SessionLimits`].
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, DbError> {
    connect_with_limits(url, max_connections, SessionLimits::default()).await
}

/// [`connect`] for a configured database: its CA certificate, if any, is verified against.
pub async fn connect_db(
    db: &crate::config::DatabaseConfig,
    max_connections: u32,
) -> Result<PgPool, DbError> {
    let opts = connect_options_verified(db.url.expose(), db.ssl_root_cert.as_deref())?;
    pool_with(
        opts,
        db.url.expose(),
        max_connections,
        SessionLimits::default(),
    )
    .await
}

/// [`connect`] with explicit limits.
pub async fn connect_with_limits(
    url: &str,
    max_connections: u32,
    limits: SessionLimits,
) -> Result<PgPool, DbError> {
    let opts = connect_options(url)?;
    pool_with(opts, url, max_connections, limits).await
}

async fn pool_with(
    opts: PgConnectOptions,
    url: &str,
    max_connections: u32,
    limits: SessionLimits,
) -> Result<PgPool, DbError> {
    let connect_err = |source| DbError::Connect {
        url: redact_url(url),
        source,
    };
    // One direct attempt first: the pool retries a refused or failed connection until its acquire
    // timeout and then reports only "timed out", hiding the cause (wrong password, TLS, DNS).
    PgConnection::connect_with(&opts)
        .await
        .map_err(connect_err)?
        .close()
        .await
        .map_err(connect_err)?;
    let set = limits.sql();
    Ok(PgPoolOptions::new()
        .max_connections(max_connections.max(1))
        .acquire_timeout(Duration::from_secs(10))
        .after_connect(move |conn, _meta| {
            let set = set.clone();
            Box::pin(async move {
                sqlx::raw_sql(sqlx::AssertSqlSafe(set))
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        })
        .connect_lazy_with(opts))
}

/// A unix socket or a loopback host: TLS would add nothing.
fn is_local(opts: &PgConnectOptions) -> bool {
    if opts.get_socket().is_some() {
        return true;
    }
    let host = opts
        .get_host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.starts_with('/') || host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}
