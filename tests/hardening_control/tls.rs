//! verify-full against a PostgreSQL that speaks TLS.

#[allow(unused_imports)]
use super::*;

/// A CA and a server certificate for `localhost` signed by it, made with the `openssl` CLI.
fn make_ca_and_server_cert(dir: &std::path::Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let ca_key = format!("{name}-ca.key");
    let ca = format!("{name}-ca.crt");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &format!("/CN={name} test CA"),
        "-keyout",
        &ca_key,
        "-out",
        &ca,
    ]);
    let key = format!("{name}-server.key");
    let csr = format!("{name}-server.csr");
    let crt = format!("{name}-server.crt");
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        &key,
        "-out",
        &csr,
    ]);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        &crt,
    ]);
    (dir.join(ca), dir.join(crt), dir.join(key))
}

#[tokio::test]
async fn with_a_root_certificate_the_connection_verifies_the_server() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let cluster = vyx_fleet::pgtemp::PgCluster::start().await.unwrap();
    let dir = tempdir_in(cluster.data_dir());
    let (ca, crt, key) = make_ca_and_server_cert(&dir, "good");
    let (other_ca, _, _) = make_ca_and_server_cert(&dir, "other");
    // The server reads its key and certificate as the data directory's owner.
    let owner = std::fs::metadata(cluster.data_dir()).unwrap();
    for f in [&crt, &key] {
        std::os::unix::fs::chown(f, Some(owner.uid()), Some(owner.gid())).unwrap();
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let admin = sqlx::PgPool::connect(&cluster.admin_url()).await.unwrap();
    for sql in [
        format!("ALTER SYSTEM SET ssl_cert_file = '{}'", crt.display()),
        format!("ALTER SYSTEM SET ssl_key_file = '{}'", key.display()),
        "ALTER SYSTEM SET ssl = on".to_string(),
        "SELECT pg_reload_conf()".to_string(),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&admin)
            .await
            .unwrap();
    }
    let url = format!("postgres://postgres@localhost:{}/postgres", cluster.port());
    let db = |ca: &PathBuf| vyx_fleet::config::DatabaseConfig {
        url: vyx_fleet::secret::Secret::new(url.clone()),
        ssl_root_cert: Some(ca.clone()),
    };
    let pool = vyx_fleet::db::connect_db(&db(&ca), 1)
        .await
        .expect("the server's certificate chains to the configured CA");
    let tls: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(tls);
    let err = vyx_fleet::db::connect_db(&db(&other_ca), 1)
        .await
        .expect_err("a server whose certificate does not chain to the CA is refused");
    assert!(
        matches!(err, vyx_fleet::db::DbError::Connect { .. }),
        "{err}"
    );
    // What the default off loopback was and still is without the setting: `require` encrypts but
    // would accept this certificate from anyone.
    let unverified = vyx_fleet::db::connect(&format!("{url}?sslmode=require"), 1)
        .await
        .expect("require does not check the certificate");
    unverified.close().await;
    pool.close().await;
    admin.close().await;
    cluster.stop().await;
}

fn tempdir_in(parent: &std::path::Path) -> PathBuf {
    let dir = parent.join("tls-test");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
