//! Hardening of the control paths (issue 6): the blast-radius breaker's sliding window and held set,
//! timeouts against a stuck database, lease margins, orphan re-checks, cutover gaps.

mod fleet_support;
mod support;

use std::path::PathBuf;

use fleet_support::Fleet;
use support::{UserFixture, set_subscription};
use uuid::Uuid;
use vyx_fleet::db::apps::Store;
use vyx_fleet::db::{breaker, lease};
use vyx_fleet::metrics::Metrics;
use vyx_fleet::reconcile::execute;
use vyx_fleet::reconcile::leadership::{OnceError, RenewConfig, run_once};
use vyx_fleet::reconcile::plan::{Action, Finding};
use vyx_fleet::sim::{FaultKind, FaultRule, Faults};

async fn paid(fleet: &Fleet, n: usize) -> Vec<Uuid> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(UserFixture::paid("pro").insert(&fleet.db.pool).await);
    }
    v
}

fn blocked(findings: &[Finding]) -> bool {
    findings
        .iter()
        .any(|f| matches!(f, Finding::DeletionsBlocked { .. }))
}

// ---- point 8: the breaker counts over a sliding window and holds a confirmed set ----

#[tokio::test]
async fn deletions_that_trickle_in_over_several_passes_trip_the_breaker_within_the_window() {
    let fleet = Fleet::start().await;
    let users = paid(&fleet, 20).await;
    fleet.converge().await;
    // Five downgrades: exactly the limit (max(5, 10 % of 20)), allowed.
    for u in &users[..5] {
        set_subscription(&fleet.db.pool, *u, "free", "cancelled").await;
    }
    fleet.converge().await;
    assert_eq!(fleet.apps().len(), 15);
    // Three more in the same hour: eight deletions in the window, more than five.
    for u in &users[5..8] {
        set_subscription(&fleet.db.pool, *u, "free", "cancelled").await;
    }
    fleet.pass().await;
    let report = fleet.pass().await;
    assert!(blocked(&report.plan.findings), "{:?}", report.plan.findings);
    assert_eq!(fleet.apps().len(), 15, "nothing more deleted");
    for u in &users[5..8] {
        assert_eq!(fleet.row(*u).await.status, "active");
    }
}

#[tokio::test]
async fn one_confirmation_lets_every_held_deletion_through_even_across_passes() {
    let fleet = Fleet::start().await;
    let users = paid(&fleet, 4).await;
    fleet.converge().await;
    for u in &users {
        set_subscription(&fleet.db.pool, *u, "free", "cancelled").await;
    }
    fleet.pass().await;
    let report = fleet.pass().await;
    assert!(blocked(&report.plan.findings), "{:?}", report.plan.findings);
    assert_eq!(fleet.apps().len(), 4);

    assert_eq!(
        breaker::confirm_held(&fleet.db.pool, "ops").await.unwrap(),
        4
    );
    // One user's earlier attempt failed: it waits out its backoff while the other three go.
    sqlx::query(
        "UPDATE public.user_fly_apps SET next_attempt_at = now() + interval '1 hour' WHERE user_id = $1",
    )
    .bind(users[3])
    .execute(&fleet.db.pool)
    .await
    .unwrap();
    fleet.pass().await;
    assert_eq!(fleet.apps().len(), 1);
    sqlx::query("UPDATE public.user_fly_apps SET next_attempt_at = NULL")
        .execute(&fleet.db.pool)
        .await
        .unwrap();
    fleet.converge().await;
    assert!(fleet.apps().is_empty(), "the 4th app was held again");
    for u in &users {
        assert_eq!(fleet.row(*u).await.status, "deleted");
    }
}

// ---- point 5: a stuck lock holder cannot wedge leadership ----

/// Polls until some backend waits on a lock (the blocked statement is in place). A condition, not a
/// timing: the guard only stops a broken build from hanging the suite.
async fn until_a_backend_waits_on_a_lock(pool: &sqlx::PgPool) {
    guard(async {
        loop {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
            )
            .fetch_one(pool)
            .await
            .unwrap();
            if n > 0 {
                return;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Fails the test instead of hanging it when something wedges.
async fn guard<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(60), f)
        .await
        .expect("wedged: the call never returned")
}

#[tokio::test]
async fn an_idle_transaction_holding_an_app_row_does_not_wedge_lease_renewal() {
    let fleet = Fleet::start().await;
    let user = paid(&fleet, 1).await[0];
    fleet.converge().await;
    let row = fleet.row(user).await;
    // The controller's pool, configured as the daemon configures it.
    let pool = vyx_fleet::db::connect(&fleet.db.url, 4).await.unwrap();
    let store = Store::new(pool.clone(), fleet.term);

    // An admin's psql session: a row lock, then idle.
    let mut admin = fleet.db.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM public.user_fly_apps WHERE id = $1 FOR UPDATE")
        .bind(row.id)
        .execute(&mut *admin)
        .await
        .unwrap();

    // A fenced write blocks on that row while holding the fence's share lock on the lease row.
    let write = tokio::spawn({
        let store = store.clone();
        async move { store.mark_unwanted(row.id, &[]).await }
    });
    until_a_backend_waits_on_a_lock(&fleet.db.pool).await;

    // The leader's renewal and a standby's attempt both answer while the admin still idles.
    let renewed = guard(lease::renew(
        &pool,
        &fleet.holder,
        fleet.term,
        std::time::Duration::from_secs(600),
    ))
    .await;
    assert!(matches!(renewed, Ok(true)), "{renewed:?}");
    let standby = guard(lease::try_acquire(
        &pool,
        "standby",
        std::time::Duration::from_secs(600),
    ))
    .await;
    assert!(matches!(standby, Ok(None)), "{standby:?}");
    let write = guard(write).await.unwrap();
    assert!(write.is_err(), "the blocked write gives up: {write:?}");
    admin.rollback().await.unwrap();
}

#[tokio::test]
async fn migrations_give_up_on_a_billing_table_lock_instead_of_queueing_behind_it() {
    let db = support::legacy_vyx_db().await;
    // A long billing transaction: a row of user_subscriptions updated, then idle.
    let mut billing = db.pool.begin().await.unwrap();
    sqlx::query("UPDATE public.user_subscriptions SET status = status")
        .execute(&mut *billing)
        .await
        .unwrap();
    // The migrator's own settings must bound the wait, whatever pool it is given.
    let plain = sqlx::PgPool::connect(&db.url).await.unwrap();
    let opts = vyx_fleet::db::MigrateOptions {
        lock_timeout: std::time::Duration::from_millis(200),
        attempts: 2,
    };
    let res = guard(vyx_fleet::db::migrate_with(&plain, opts)).await;
    let err = res.expect_err("the trigger cannot be re-pointed while billing holds the table");
    assert!(err.to_string().contains("lock timeout"), "{err}");
    billing.commit().await.unwrap();
    vyx_fleet::db::migrate(&db.pool)
        .await
        .expect("applies once the lock is gone");
}

// ---- point 4: orphan deletion re-checks ownership; grace periods use the database clock ----

/// A user whose app outlived its soft-deleted row (an orphan past its grace), and two bystanders so
/// the breaker does not hold the deletion. Returns the user and the app name.
async fn orphaned_user_app(fleet: &Fleet) -> (Uuid, String) {
    let users = paid(fleet, 3).await;
    fleet.converge().await;
    let user = users[0];
    let app = fleet.row(user).await.fly_app_name;
    set_subscription(&fleet.db.pool, user, "free", "cancelled").await;
    sqlx::query(
        "UPDATE public.user_fly_apps SET status = 'deleted', deleted_at = now(), fly_app_id = NULL
          WHERE user_id = $1",
    )
    .bind(user)
    .execute(&fleet.db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO vyx_fleet.orphans (app_name, first_seen_at, last_seen_at)
         VALUES ($1, now() - interval '2 hours', now())",
    )
    .bind(&app)
    .execute(&fleet.db.pool)
    .await
    .unwrap();
    (user, app)
}

#[tokio::test]
async fn a_re_upgrading_users_app_is_not_planned_for_deletion_as_an_orphan() {
    let fleet = Fleet::start().await;
    let (user, app) = orphaned_user_app(&fleet).await;
    set_subscription(&fleet.db.pool, user, "pro", "active").await;
    let plan = fleet.plan().await;
    assert!(
        !plan
            .actions
            .iter()
            .any(|a| matches!(a, Action::DeleteOrphan { app: a } if *a == app)),
        "{:?}",
        plan.actions
    );
    fleet.converge().await;
    let row = fleet.row(user).await;
    assert_eq!(row.status, "active");
    assert_eq!(row.fly_app_name, app);
    assert!(fleet.app(&app).is_some(), "adopted, not deleted");
}

#[tokio::test]
async fn a_stale_orphan_deletion_spares_an_app_a_row_adopted_meanwhile() {
    let fleet = Fleet::start().await;
    let (user, app) = orphaned_user_app(&fleet).await;
    // The plan of an earlier instant: the app was an orphan past its grace.
    let stale = Action::DeleteOrphan { app: app.clone() };
    set_subscription(&fleet.db.pool, user, "pro", "active").await;
    fleet.converge().await;
    assert_eq!(fleet.row(user).await.status, "active");

    execute::run(&fleet.ctx, &stale).await;
    assert!(fleet.app(&app).is_some(), "the adopted app was deleted");
    let row = fleet.row(user).await;
    assert_eq!(row.status, "active");
}

/// Makes the database's `now()` run an hour behind this process's clock (as a replica whose clock
/// is an hour fast would see it), for connections opened from now on; returns such a pool.
async fn db_clock_an_hour_behind(fleet: &Fleet) -> sqlx::PgPool {
    sqlx::raw_sql(
        "CREATE SCHEMA skew;
         CREATE FUNCTION skew.now() RETURNS timestamptz LANGUAGE sql STABLE
             AS $$ SELECT pg_catalog.now() - interval '1 hour' $$;",
    )
    .execute(&fleet.db.pool)
    .await
    .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {} SET search_path = skew, public, pg_catalog",
        fleet.db.name
    )))
    .execute(&fleet.db.pool)
    .await
    .unwrap();
    let pool = vyx_fleet::db::connect(&fleet.db.url, 5).await.unwrap();
    let db_now: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(db_now < chrono::Utc::now() - chrono::Duration::minutes(50));
    pool
}

#[tokio::test]
async fn the_deprovision_grace_is_judged_on_the_database_clock_not_the_replicas() {
    let mut fleet = Fleet::start().await;
    fleet.reconfigure("DEPROVISION_GRACE", "30m");
    let users = paid(&fleet, 3).await;
    fleet.converge().await;
    let pool = db_clock_an_hour_behind(&fleet).await;
    fleet.ctx.store = Store::new(pool, fleet.term);
    set_subscription(&fleet.db.pool, users[0], "free", "cancelled").await;
    fleet.pass().await;
    fleet.pass().await;
    let row = fleet.row(users[0]).await;
    assert_eq!(row.status, "active", "the grace was skipped");
    assert!(row.unwanted_since.is_some(), "the grace started");
    assert!(fleet.app(&row.fly_app_name).is_some());
}

#[tokio::test]
async fn a_backoff_is_stored_on_the_database_clock() {
    let fleet = Fleet::start().await;
    let user = paid(&fleet, 1).await[0];
    fleet.converge().await;
    let row = fleet.row(user).await;
    let pool = db_clock_an_hour_behind(&fleet).await;
    let store = Store::new(pool.clone(), fleet.term);
    store
        .mark_failure(
            row.id,
            vyx_fleet::reconcile::recorded::RowStatus::Error,
            "test",
            "test",
            std::time::Duration::from_secs(60),
            &[],
        )
        .await
        .unwrap();
    let (within,): (bool,) = sqlx::query_as(
        "SELECT next_attempt_at <= now() + interval '2 minutes' FROM public.user_fly_apps WHERE id = $1",
    )
    .bind(row.id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(within, "a one-minute backoff became an hour longer");
}

// ---- point 6: lease margins; a one-off pass stops at a lost lease ----

#[tokio::test]
async fn a_one_off_pass_stops_calling_fly_once_its_lease_is_lost() {
    let fleet = Fleet::start().await;
    paid(&fleet, 3).await;
    fleet.converge().await;
    // Probes are due, so the pass has Fly calls to make after observing.
    sqlx::query("UPDATE public.user_fly_apps SET last_health_check = now() - interval '1 day'")
        .execute(&fleet.db.pool)
        .await
        .unwrap();
    lease::release(&fleet.db.pool, &fleet.holder, fleet.term)
        .await
        .unwrap();
    fleet.sim.set_faults(Faults {
        rules: vec![FaultRule::new("*", 1.0, FaultKind::Latency { ms: 3000 })],
        ..Faults::default()
    });
    fleet.sim.clear_calls();
    let renew = RenewConfig {
        ttl: std::time::Duration::from_secs(60),
        renew_every: std::time::Duration::from_millis(20),
        act_margin: std::time::Duration::from_secs(30),
    };
    let once = tokio::spawn({
        let (ctx, cfg) = (fleet.ctx.clone(), fleet.pass_cfg.clone());
        async move { run_once(&ctx, &cfg, &Metrics::new(), "once", renew).await }
    });
    guard(async {
        while fleet.sim.in_flight() == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    // Another replica takes over while the first Fly call is in flight.
    sqlx::query(
        "UPDATE vyx_fleet.lease SET holder = 'other', term = term + 1,
                expires_at = clock_timestamp() + interval '1 minute'",
    )
    .execute(&fleet.db.pool)
    .await
    .unwrap();
    let result = guard(once).await.unwrap();
    assert!(matches!(result, Err(OnceError::LeaseLost)), "{result:?}");
    guard(async {
        while fleet.sim.in_flight() > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    let calls: Vec<String> = fleet.sim.calls().iter().map(|c| c.path.clone()).collect();
    // The call in flight at the takeover may or may not be logged (its client went away); nothing
    // after it was sent.
    assert!(
        calls.len() <= 1,
        "only the call in flight at the takeover: {calls:?}"
    );
}

// ---- point 12: the old health check's cron schedule ----

/// pg_cron's shape, as far as the migration uses it: `cron.job` and `cron.unschedule(bigint)`.
const FAKE_PG_CRON: &str = "
    CREATE SCHEMA cron;
    CREATE TABLE cron.job (
        jobid bigserial PRIMARY KEY, schedule text NOT NULL, command text NOT NULL,
        jobname text, active boolean NOT NULL DEFAULT true
    );
    CREATE FUNCTION cron.unschedule(job_id bigint) RETURNS boolean LANGUAGE sql
        AS $$ DELETE FROM cron.job WHERE jobid = job_id RETURNING true $$;
    INSERT INTO cron.job (schedule, command, jobname) VALUES
        ('*/5 * * * *', $c$select net.http_post(url := 'https://abc.supabase.co/functions/v1/check-fly-apps-health', headers := '{}'::jsonb)$c$, 'fly-health'),
        ('0 3 * * *', 'select public.cleanup_old_signals()', 'signals-cleanup');
";

#[tokio::test]
async fn migrating_unschedules_the_old_health_check_cron_job_and_nothing_else() {
    let db = support::legacy_vyx_db().await;
    sqlx::raw_sql(FAKE_PG_CRON).execute(&db.pool).await.unwrap();
    vyx_fleet::db::migrate(&db.pool).await.unwrap();
    let jobs: Vec<String> = sqlx::query_scalar("SELECT jobname FROM cron.job ORDER BY jobid")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(jobs, ["signals-cleanup"]);
}

// ---- point 10: one region Fly cannot list does not freeze the fleet ----

/// Between the controller and the simulator: the org machine list loses the machines of `hidden`
/// apps and reports `error_regions: ["ams"]`, as Fly does when a region does not answer. Everything
/// else passes through unchanged.
async fn region_failing_proxy(sim_base: String, hidden: Vec<String>) -> String {
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, Method, StatusCode, Uri};
    use axum::response::IntoResponse;

    #[derive(Clone)]
    struct Proxy {
        sim: String,
        hidden: Vec<String>,
        http: reqwest::Client,
    }
    async fn forward(
        State(p): State<Proxy>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> axum::response::Response {
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let mut req = p.http.request(method.clone(), format!("{}{path}", p.sim));
        for (k, v) in &headers {
            if k != "host" && k != "content-length" {
                req = req.header(k, v);
            }
        }
        let answer = req.body(body).send().await.unwrap();
        let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
        let mut text = answer.text().await.unwrap();
        let org_list = uri.path().starts_with("/v1/orgs/") && uri.path().ends_with("/machines");
        if org_list && method == Method::GET && status.is_success() {
            let mut page: serde_json::Value = serde_json::from_str(&text).unwrap();
            if let Some(ms) = page["machines"].as_array_mut() {
                ms.retain(|m| {
                    !p.hidden
                        .iter()
                        .any(|h| m["app_name"].as_str() == Some(h.as_str()))
                });
            }
            page["error_regions"] = serde_json::json!(["ams"]);
            text = page.to_string();
        }
        (status, [("content-type", "application/json")], text).into_response()
    }
    let proxy = Proxy {
        sim: sim_base,
        hidden,
        http: reqwest::Client::new(),
    };
    let app = axum::Router::new().fallback(forward).with_state(proxy);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_region_fly_cannot_list_freezes_only_the_apps_there() {
    let mut fleet = Fleet::start().await;
    let old = paid(&fleet, 2).await;
    fleet.converge().await;
    // The first user's app runs in ams (say, adopted from the old edge functions).
    sqlx::query("UPDATE public.user_fly_apps SET region = 'ams' WHERE user_id = $1")
        .bind(old[0])
        .execute(&fleet.db.pool)
        .await
        .unwrap();
    let in_ams = fleet.row(old[0]).await.fly_app_name;
    let proxy = region_failing_proxy(fleet.sim.base_url(), vec![in_ams.clone()]).await;
    fleet.reconfigure("FLY_API_BASE_URL", &proxy);

    let newcomer = paid(&fleet, 1).await[0];
    let report = fleet.pass().await;
    assert!(
        report
            .plan
            .findings
            .iter()
            .any(|f| matches!(f, Finding::RegionsUnavailable { .. })),
        "{:?}",
        report.plan.findings
    );
    fleet.converge().await;
    let row = fleet.row(newcomer).await;
    assert_eq!(row.status, "active", "a user outside the region is served");
    assert!(fleet.app(&row.fly_app_name).is_some());
    let ams_app = fleet.app(&in_ams).unwrap();
    assert_eq!(
        ams_app.machines.len(),
        1,
        "the app whose machine went unlisted got no second machine"
    );
}

// ---- point 10: verify-full against a PostgreSQL that speaks TLS ----

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
