use sqlx::postgres::PgSslMode;

use super::connect::{connect_options, connect_options_verified};
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
        connect_options("postgres://u:p@db.example.com:5432/postgres?sslmode=verify-full").unwrap();
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
    let o = connect_options_verified("postgres://u:p@db.abc.supabase.co:5432/postgres", Some(ca))
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
