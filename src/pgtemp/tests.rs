use std::process::Command;

use super::watchdog::sh_quote;
use super::*;

#[test]
fn database_names_are_plain_identifiers() {
    assert!(valid_db_name("t_12_ab"));
    assert!(!valid_db_name("x\"; DROP DATABASE postgres; --"));
    assert!(!valid_db_name("Upper"));
    assert!(!valid_db_name(""));
}

#[test]
fn shell_quoting_survives_quotes() {
    assert_eq!(sh_quote("/tmp/a'b"), r"'/tmp/a'\''b'");
}

#[tokio::test]
async fn a_cluster_starts_serves_and_goes_away() {
    let cluster = PgCluster::start_with(PgTempOptions {
        watchdog: false,
        parent_dir: None,
    })
    .await
    .expect("start");
    let base = cluster.base_dir.clone();
    let url = cluster
        .create_database("pgtemp_unit")
        .await
        .expect("create");
    let pool = PgPool::connect(&url).await.expect("connect");
    apply_supabase_shape(&pool).await.expect("shape");
    apply_supabase_shape(&pool).await.expect("shape twice");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM auth.users")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
    pool.close().await;
    cluster.stop().await;
    assert!(!base.exists(), "cluster directory removed");
    cluster.stop().await;
}

/// Not a test on its own: run as a child process by
/// `the_watchdog_removes_the_cluster_after_the_process_dies`. Starts a cluster with the watchdog,
/// reports where it lives and exits without any cleanup, as a killed test binary would.
#[test]
#[ignore = "helper process for the watchdog test"]
fn watchdog_child_process() {
    if std::env::var_os("VYX_PGTEMP_WATCHDOG_CHILD").is_none() {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cluster = rt.block_on(PgCluster::start()).expect("start");
    println!("CLUSTER {} {}", cluster.port(), cluster.base_dir.display());
    std::process::exit(0);
}

#[test]
fn the_watchdog_removes_the_cluster_after_the_process_dies() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "pgtemp::tests::watchdog_child_process",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("VYX_PGTEMP_WATCHDOG_CHILD", "1")
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("CLUSTER ").map(|(_, rest)| rest))
        .unwrap_or_else(|| {
            panic!(
                "child did not start a cluster: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let (port, base) = line.split_once(' ').unwrap();
    let base = PathBuf::from(base);

    // The watchdog notices within its one-second poll; allow for a loaded machine. This waits on
    // another process, not on our own code, so a deadline is the only synchronisation available.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while base.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} still exists 20 s after its process died",
            base.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let addr = format!("127.0.0.1:{port}");
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "server on {addr} stopped"
    );
}
