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

// The fenced store: the daemon's assembly and the tests' harness build it; the tests write
// through it as the executors do.
pub use apps::{Event, Store, StoreError};

// The sweep's contract tests read what a pass reads before it plans.
pub use apps::{load_desired_facts, load_row_for_user, load_rows};
pub use health::load as load_health;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{Connection, PgConnection, PgPool};

/// Supabase's transaction pooler (Supavisor, transaction mode). It hands each transaction to any server
/// connection, which breaks prepared statements, LISTEN/NOTIFY and the migrator's advisory lock.
const TRANSACTION_POOLER_PORT: u16 = 6543;

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

/// Connection options for `url`, with our defaults: TLS required off loopback unless the URL says
/// otherwise, and Supabase's transaction pooler refused.
fn connect_options(url: &str) -> Result<PgConnectOptions, DbError> {
    connect_options_verified(url, None)
}

/// [`connect_options`] with a CA certificate (`DATABASE_SSL_ROOT_CERT`, e.g. Supabase's
/// `prod-ca-2021.crt`): unless the URL or `PGSSLMODE` names a mode, the server's certificate must
/// chain to it and match the host (`verify-full`). `require` alone encrypts but accepts any
/// certificate, so anyone on the path could pose as the database.
fn connect_options_verified(
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
/// of `user_fly_apps`. Renewals do not conflict with that lock (see [`lease::renew`]), but a takeover
/// does: without a limit, an idle transaction holding that row (an admin's open psql session, a
/// dashboard request) blocks the write, the write blocks every takeover, and a dead leader's lease
/// could never pass to a standby. With `lock_timeout` the write gives up (the action retries later)
/// and the lease row is free again. Nothing about leadership depends on which of two such timers
/// fires first: the leader's renewal never waits on a fenced write.
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
    /// `SET` statements, run once per new connection. Session settings rather than startup options:
    /// Supabase's session pooler keeps session state but may not pass startup options through.
    fn sql(&self) -> String {
        format!(
            "SET lock_timeout = '{}ms'; SET statement_timeout = '{}ms'; \
             SET idle_in_transaction_session_timeout = '{}ms'",
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

/// The embedded migrations (`migrations/`).
pub fn migrator() -> sqlx::migrate::Migrator {
    sqlx::migrate!()
}

/// How the migrator waits on locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrateOptions {
    /// Longest wait for a lock (the billing table, the migrator's advisory lock). A migration that
    /// re-points or disables a trigger on `user_subscriptions` needs a lock every billing write
    /// conflicts with; queued behind a long billing transaction it would stall all billing writes
    /// behind itself. It gives up instead and tries again.
    pub lock_timeout: Duration,
    /// Attempts in all; only a lock timeout is retried.
    pub attempts: u32,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        MigrateOptions {
            lock_timeout: Duration::from_secs(5),
            attempts: 5,
        }
    }
}

/// Applies the embedded migrations. Safe to run on every start and from several replicas at once (the
/// migrator serialises on an advisory lock and skips what is applied).
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    migrate_with(pool, MigrateOptions::default()).await
}

/// [`migrate`] with explicit lock handling. Each migration runs in its own transaction, so one that
/// hit the lock timeout left nothing behind and is simply run again.
pub async fn migrate_with(pool: &PgPool, opts: MigrateOptions) -> Result<(), DbError> {
    let attempts = opts.attempts.max(1);
    for attempt in 1..=attempts {
        let mut conn = pool.acquire().await?;
        // No statement timeout: a migration may legitimately take long; only lock waits are bounded.
        let set = format!(
            "SET lock_timeout = '{}ms'; SET statement_timeout = 0",
            opts.lock_timeout.as_millis()
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(set))
            .execute(&mut *conn)
            .await?;
        let res = migrator().run(&mut *conn).await;
        // The session settings must not reach the pool's other users.
        let _ = conn.detach().close().await;
        match res {
            Ok(()) => return Ok(()),
            Err(e) if is_lock_timeout(&e) && attempt < attempts => {
                tracing::warn!(
                    attempt,
                    error = %e,
                    "migration waited too long for a lock (a long transaction on a table it changes?); retrying"
                );
                tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    unreachable!("the last attempt returns")
}

/// SQLSTATE 55P03 `lock_not_available`: what `lock_timeout` raises.
fn is_lock_timeout(e: &sqlx::migrate::MigrateError) -> bool {
    use sqlx::migrate::MigrateError as M;
    let inner = match e {
        M::Execute(e) | M::ExecuteMigration(e, _) => e,
        _ => return false,
    };
    matches!(inner, sqlx::Error::Database(d) if d.code().as_deref() == Some("55P03"))
}

/// The database's clock. The controller judges every grace period and backoff with it (they are
/// stored with `now()`), never with a replica's own clock.
pub async fn now(pool: &PgPool) -> Result<chrono::DateTime<chrono::Utc>, sqlx::Error> {
    sqlx::query_scalar("SELECT now()").fetch_one(pool).await
}

/// `url` with the password (in the userinfo or a `password=` parameter) replaced by `[redacted]`, for
/// logs and error messages. Something that does not look like a URL is redacted whole.
///
/// The userinfo is taken up to the *last* `@`, so a password holding an unescaped `/`, `?`, `#` or `@`
/// (an invalid URL, but a likely typo) is still hidden; an `@` later in the URL only hides more.
pub fn redact_url(url: &str) -> String {
    const MASK: &str = "[redacted]";
    let Some(scheme_end) = url.find("://") else {
        return MASK.to_string();
    };
    let rest_start = scheme_end + 3;
    let rest = &url[rest_start..];

    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..rest_start]);
    let after_userinfo = match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..colon]);
                    out.push(':');
                    out.push_str(MASK);
                }
                None => out.push_str(userinfo),
            }
            &rest[at..]
        }
        None => rest,
    };

    let Some((before_query, query)) = after_userinfo.split_once('?') else {
        out.push_str(after_userinfo);
        return out;
    };
    let (query, fragment) = match query.find('#') {
        Some(h) => query.split_at(h),
        None => (query, ""),
    };
    let params: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}={MASK}"),
            _ => pair.to_string(),
        })
        .collect();
    out.push_str(before_query);
    out.push('?');
    out.push_str(&params.join("&"));
    out.push_str(fragment);
    out
}

fn url_has_param(url: &str, names: &[&str]) -> bool {
    let Some((_, query)) = url.split_once('?') else {
        return false;
    };
    let query = query.split('#').next().unwrap_or("");
    query.split('&').any(|pair| {
        let key = pair.split('=').next().unwrap_or("");
        names.iter().any(|n| key.eq_ignore_ascii_case(n))
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_hides_the_password_and_keeps_the_rest() {
        assert_eq!(
            redact_url(
                "postgres://postgres.abc:s3cr%40t@db.abc.supabase.co:5432/postgres?sslmode=require"
            ),
            "postgres://postgres.abc:[redacted]@db.abc.supabase.co:5432/postgres?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://u@h/db?password=hunter2&sslmode=disable"),
            "postgres://u@h/db?password=[redacted]&sslmode=disable"
        );
        assert_eq!(
            redact_url("postgres://127.0.0.1:5432/x"),
            "postgres://127.0.0.1:5432/x"
        );
        // An '@' inside the password must not leak the part after it.
        let r = redact_url("postgresql://me:pa@ss:word@host/db");
        assert!(!r.contains("pa") && !r.contains("word"), "{r}");
        assert_eq!(redact_url("host=x password=y"), "[redacted]");
        for typo in [
            "postgres://u:pa/ss@host/db",
            "postgres://u:pa?ss@host/db",
            "postgres://u:pa#ss@host/db",
        ] {
            let r = redact_url(typo);
            assert!(!r.contains("pa") && !r.contains("ss@"), "{typo} -> {r}");
            assert!(r.ends_with("@host/db"), "{r}");
        }
    }

    #[test]
    fn transaction_pooler_port_is_refused_with_advice() {
        let err = connect_options(
            "postgres://postgres.ref:topsecret@aws-0-eu-west-1.pooler.supabase.com:6543/postgres",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DbError::TransactionPooler { .. }));
        assert!(
            msg.contains("5432") && msg.contains("session pooler"),
            "{msg}"
        );
        assert!(!msg.contains("topsecret"), "{msg}");
    }

    #[test]
    fn tls_is_required_off_loopback_unless_the_url_says_otherwise() {
        if std::env::var_os("PGSSLMODE").is_some() {
            return;
        }
        let remote = connect_options("postgres://u:p@db.example.com:5432/postgres").unwrap();
        assert!(matches!(remote.get_ssl_mode(), PgSslMode::Require));
        let explicit =
            connect_options("postgres://u:p@db.example.com:5432/postgres?sslmode=verify-full")
                .unwrap();
        assert!(matches!(explicit.get_ssl_mode(), PgSslMode::VerifyFull));
        for local in [
            "postgres://u@127.0.0.1:5432/x",
            "postgres://u@localhost/x",
            "postgres://u@[::1]:5432/x",
            "postgres://u@%2Ftmp%2Fsock/x",
        ] {
            let o = connect_options(local).unwrap();
            assert!(!matches!(o.get_ssl_mode(), PgSslMode::Require), "{local}");
        }
    }

    #[test]
    fn a_root_certificate_makes_the_connection_verify_the_server() {
        if std::env::var_os("PGSSLMODE").is_some() {
            return;
        }
        let ca = std::path::Path::new("/etc/vyx/supabase-ca.crt");
        let o =
            connect_options_verified("postgres://u:p@db.abc.supabase.co:5432/postgres", Some(ca))
                .unwrap();
        assert!(matches!(o.get_ssl_mode(), PgSslMode::VerifyFull));
        // Without the certificate: encrypted, not verified (what `require` means).
        let o = connect_options("postgres://u:p@db.abc.supabase.co:5432/postgres").unwrap();
        assert!(matches!(o.get_ssl_mode(), PgSslMode::Require));
        // A mode written in the URL is the operator's explicit choice.
        let o = connect_options_verified(
            "postgres://u:p@db.abc.supabase.co:5432/postgres?sslmode=verify-ca",
            Some(ca),
        )
        .unwrap();
        assert!(matches!(o.get_ssl_mode(), PgSslMode::VerifyCa));
    }

    #[test]
    fn an_unparseable_url_error_does_not_echo_the_password() {
        let err = connect_options("postgres://u:topsecret@host:notaport/db").unwrap_err();
        assert!(!err.to_string().contains("topsecret"), "{err}");
    }
}
