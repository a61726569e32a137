//! Postgres: pool, migrations, lease, queries.
//!
//! Everything here runs with runtime-bound queries (`sqlx::query`), never the compile-time checked
//! macros: there is no database at build time.

pub mod apps;
pub mod breaker;
pub mod lease;
pub mod rollout;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{Connection, PgConnection, PgPool};

/// Supabase's transaction pooler (Supavisor, transaction mode). It hands each transaction to any server
/// connection, which breaks prepared statements, LISTEN/NOTIFY and the migrator's advisory lock.
pub const TRANSACTION_POOLER_PORT: u16 = 6543;

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
}

/// Connection options for `url`, with our defaults: TLS required off loopback unless the URL says
/// otherwise, and Supabase's transaction pooler refused.
pub fn connect_options(url: &str) -> Result<PgConnectOptions, DbError> {
    let redacted = redact_url(url);
    let mut opts = PgConnectOptions::from_str(url).map_err(|e| DbError::InvalidUrl {
        url: redacted.clone(),
        reason: e.to_string(),
    })?;
    if opts.get_socket().is_none() && opts.get_port() == TRANSACTION_POOLER_PORT {
        return Err(DbError::TransactionPooler { url: redacted });
    }
    if !url_has_param(url, &["sslmode", "ssl-mode"])
        && std::env::var_os("PGSSLMODE").is_none()
        && !is_local(&opts)
    {
        opts = opts.ssl_mode(PgSslMode::Require);
    }
    Ok(opts.application_name("vyx-fleet"))
}

/// Opens a pool on `url` after checking that one connection can be made.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, DbError> {
    let opts = connect_options(url)?;
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
    Ok(PgPoolOptions::new()
        .max_connections(max_connections.max(1))
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy_with(opts))
}

/// The embedded migrations (`migrations/`).
pub fn migrator() -> sqlx::migrate::Migrator {
    sqlx::migrate!()
}

/// Applies the embedded migrations. Safe to run on every start and from several replicas at once (the
/// migrator serialises on an advisory lock and skips what is applied).
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    migrator().run(pool).await?;
    Ok(())
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
    fn an_unparseable_url_error_does_not_echo_the_password() {
        let err = connect_options("postgres://u:topsecret@host:notaport/db").unwrap_err();
        assert!(!err.to_string().contains("topsecret"), "{err}");
    }
}
