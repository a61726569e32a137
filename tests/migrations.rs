//! vyx-fleet's migrations against a bare Supabase-shaped database and against Vyx's existing schema.

mod support;

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use support::{UserFixture, fresh_db, legacy_vyx_db, migrated_db, set_subscription};
use uuid::Uuid;
use vyx_fleet::db::{self, DbError};

const NEW_APP_COLUMNS: [&str; 25] = [
    "fly_app_id",
    "machine_id",
    "machine_op_id",
    "secrets_version",
    "secrets_digest",
    "ips_ready",
    "config_digest",
    "next_attempt_at",
    "unwanted_since",
    "last_error_kind",
    "spec_digest",
    "healthy_spec_digest",
    "healthy_image",
    "healthy_spec",
    "image_digest",
    "rollout_id",
    "rollout_state",
    "rollout_wave",
    "rollout_state_at",
    "rollout_machine_version",
    "unhealthy_since",
    "last_probed_at",
    "repair_step",
    "repair_step_at",
    "changed_xid",
];

/// The controller's own tables: in `vyx_fleet`, which Supabase's API does not serve.
const OUR_TABLES: [&str; 7] = [
    "vyx_fleet.user_fly_app_overrides",
    "vyx_fleet.lease",
    "vyx_fleet.orphans",
    "vyx_fleet.settings",
    "vyx_fleet.deletions",
    "vyx_fleet.held_deletions",
    "vyx_fleet.rollout",
];

const PRO_USER: &str = "11111111-1111-4111-8111-111111111111";

/// Everything about the schema a migration could change: columns (type, default, nullability),
/// constraints, indexes, triggers (with enabled state), functions, RLS flags, and the lease row.
async fn schema_snapshot(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        r#"
        SELECT 'column ' || table_schema || '.' || table_name || '.' || column_name || ' ' || data_type
               || ' null=' || is_nullable || ' default=' || coalesce(column_default, '-')
          FROM information_schema.columns WHERE table_schema IN ('public', 'auth', 'vyx_fleet')
        UNION ALL
        SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
          FROM pg_constraint WHERE connamespace IN ('public'::regnamespace, 'vyx_fleet'::regnamespace)
        UNION ALL
        SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname IN ('public', 'vyx_fleet')
        UNION ALL
        SELECT 'trigger ' || tgrelid::regclass || ' ' || tgname || ' ' || tgenabled::text
          FROM pg_trigger WHERE NOT tgisinternal
        UNION ALL
        SELECT 'function ' || p.oid::regprocedure || ' ' || md5(p.prosrc)
          FROM pg_proc p WHERE p.pronamespace IN ('public'::regnamespace, 'vyx_fleet'::regnamespace)
        UNION ALL
        SELECT 'rls ' || oid::regclass || ' ' || relrowsecurity
          FROM pg_class WHERE relnamespace IN ('public'::regnamespace, 'vyx_fleet'::regnamespace) AND relkind = 'r'
        UNION ALL
        SELECT 'lease ' || name || ' ' || coalesce(holder, '-') || ' ' || term
          FROM vyx_fleet.lease
        ORDER BY 1
        "#,
    )
    .fetch_all(pool)
    .await
    .expect("schema snapshot")
}

async fn rows_as_json(pool: &PgPool, table: &str) -> Vec<serde_json::Value> {
    let sql = format!("SELECT to_jsonb(t) FROM public.{table} t ORDER BY t.id");
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_all(pool)
        .await
        .expect("rows")
}

async fn legacy_calls(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM public.legacy_edge_calls")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn trigger_state(pool: &PgPool, table: &str, trigger: &str) -> Option<String> {
    sqlx::query_scalar(
        "SELECT tgenabled::text FROM pg_trigger
          WHERE tgrelid = to_regclass($1) AND tgname = $2 AND NOT tgisinternal",
    )
    .bind(table)
    .bind(trigger)
    .fetch_optional(pool)
    .await
    .unwrap()
}

async fn listener(pool: &PgPool) -> PgListener {
    let mut l = PgListener::connect_with(pool).await.expect("listener");
    l.listen("vyx_fleet").await.expect("LISTEN");
    l
}

async fn next_notification(l: &mut PgListener) -> String {
    let n = tokio::time::timeout(Duration::from_secs(10), l.recv())
        .await
        .expect("no notification within 10 s")
        .expect("listener error");
    assert_eq!(n.channel(), "vyx_fleet");
    n.payload().to_string()
}

#[tokio::test]
async fn migrations_apply_to_a_bare_supabase_database() {
    let db = fresh_db().await;
    db::migrate(&db.pool).await.expect("migrate");

    for table in ["public.user_fly_apps", "public.user_fly_app_events"]
        .into_iter()
        .chain(OUR_TABLES)
    {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(table)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert!(exists, "{table} created");
    }
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns
          WHERE table_schema = 'public' AND table_name = 'user_fly_apps'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    for c in NEW_APP_COLUMNS {
        assert!(columns.iter().any(|x| x == c), "column {c} missing");
    }

    // The DESIGN.md defaults and checks hold on a table we created.
    let user = UserFixture::paid("pro").insert(&db.pool).await;
    let (status, health, retries, ips_ready): (String, String, i32, bool) = sqlx::query_as(
        "INSERT INTO public.user_fly_apps (user_id, fly_app_name, fly_org_slug)
         VALUES ($1, 'vyx-user-abcdefgh', 'vyx')
         RETURNING status, health_status, retry_count, ips_ready",
    )
    .bind(user)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), health.as_str(), retries, ips_ready),
        ("provisioning", "unknown", 0, false)
    );
    let second_row = sqlx::query(
        "INSERT INTO public.user_fly_apps (user_id, fly_app_name, fly_org_slug)
         VALUES ($1, 'vyx-user-other', 'vyx')",
    )
    .bind(user)
    .execute(&db.pool)
    .await;
    assert_eq!(
        sql_state(second_row).as_deref(),
        Some("23505"),
        "UNIQUE(user_id)"
    );
    let bad_event = sqlx::query(
        "INSERT INTO public.user_fly_app_events (user_id, event_type) VALUES ($1, 'app_exploded')",
    )
    .bind(user)
    .execute(&db.pool)
    .await;
    assert_eq!(
        sql_state(bad_event).as_deref(),
        Some("23514"),
        "event_type CHECK"
    );

    let lease: (String, Option<String>, i64) =
        sqlx::query_as("SELECT name, holder, term FROM vyx_fleet.lease")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(lease, ("controller".to_string(), None, 0));
}

#[tokio::test]
async fn applying_the_migrations_twice_changes_nothing() {
    let db = fresh_db().await;
    db::migrate(&db.pool).await.expect("first run");
    let before = schema_snapshot(&db.pool).await;

    db::migrate(&db.pool).await.expect("second run");
    assert_eq!(schema_snapshot(&db.pool).await, before);

    // The SQL itself is idempotent too, not just skipped by the migrator's bookkeeping (an operator may
    // have applied a file by hand).
    for m in db::migrator().iter() {
        sqlx::raw_sql(m.sql.clone())
            .execute(&db.pool)
            .await
            .unwrap_or_else(|e| panic!("re-running migration {}: {e}", m.version));
    }
    assert_eq!(schema_snapshot(&db.pool).await, before);
}

#[tokio::test]
async fn migrating_vyx_schema_keeps_every_row_and_value() {
    let db = legacy_vyx_db().await;
    let apps_before = rows_as_json(&db.pool, "user_fly_apps").await;
    let events_before = rows_as_json(&db.pool, "user_fly_app_events").await;
    let signals_before = rows_as_json(&db.pool, "signals").await;
    let constraints_before: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_constraint
          WHERE conrelid IN ('public.user_fly_apps'::regclass, 'public.user_fly_app_events'::regclass)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(apps_before.len(), 3);
    assert_eq!(events_before.len(), 4);

    db::migrate(&db.pool)
        .await
        .expect("migrate legacy database");

    let apps_after = rows_as_json(&db.pool, "user_fly_apps").await;
    assert_eq!(apps_after.len(), apps_before.len());
    for (before, after) in apps_before.iter().zip(&apps_after) {
        let mut after = after.as_object().unwrap().clone();
        for c in NEW_APP_COLUMNS {
            let v = after.remove(c).unwrap_or_else(|| panic!("{c} added"));
            let expected = if c == "ips_ready" {
                serde_json::json!(false)
            } else {
                serde_json::Value::Null
            };
            assert_eq!(v, expected, "{c} starts empty");
        }
        assert_eq!(&serde_json::Value::Object(after), before);
    }
    assert_eq!(
        rows_as_json(&db.pool, "user_fly_app_events").await,
        events_before
    );
    assert_eq!(rows_as_json(&db.pool, "signals").await, signals_before);
    let constraints_after: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_constraint
          WHERE conrelid IN ('public.user_fly_apps'::regclass, 'public.user_fly_app_events'::regclass)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        constraints_after, constraints_before,
        "no constraint added to Vyx's tables"
    );

    // Still idempotent on this shape.
    let snapshot = schema_snapshot(&db.pool).await;
    for m in db::migrator().iter() {
        sqlx::raw_sql(m.sql.clone())
            .execute(&db.pool)
            .await
            .unwrap();
    }
    assert_eq!(schema_snapshot(&db.pool).await, snapshot);
}

#[tokio::test]
async fn migrating_vyx_schema_disables_the_old_provisioning_trigger() {
    let db = legacy_vyx_db().await;
    let user = Uuid::parse_str(PRO_USER).unwrap();

    // The fixture's trigger really fires before the migration, so the check below can fail.
    set_subscription(&db.pool, user, "elite", "active").await;
    assert_eq!(legacy_calls(&db.pool).await, 1);
    assert_eq!(
        trigger_state(&db.pool, "public.user_subscriptions", "on_user_tier_change")
            .await
            .as_deref(),
        Some("O")
    );

    db::migrate(&db.pool).await.expect("migrate");

    set_subscription(&db.pool, user, "free", "cancelled").await;
    UserFixture::paid("pro").insert(&db.pool).await;
    assert_eq!(
        legacy_calls(&db.pool).await,
        1,
        "old trigger no longer fires"
    );
    // Disabled, not dropped: visible and reversible.
    assert_eq!(
        trigger_state(&db.pool, "public.user_subscriptions", "on_user_tier_change")
            .await
            .as_deref(),
        Some("D")
    );
}

#[tokio::test]
async fn subscription_and_override_changes_notify_the_user_id() {
    let db = legacy_vyx_db().await;
    db::migrate(&db.pool).await.expect("migrate");
    let mut l = listener(&db.pool).await;

    sqlx::query("UPDATE public.user_subscriptions SET tier = 'elite' WHERE user_id = $1::uuid")
        .bind(PRO_USER)
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(next_notification(&mut l).await, PRO_USER);

    let user = UserFixture::without_subscription().insert(&db.pool).await;
    set_subscription(&db.pool, user, "pro", "active").await;
    assert_eq!(next_notification(&mut l).await, user.to_string());

    sqlx::query(
        "INSERT INTO vyx_fleet.user_fly_app_overrides (user_id, desired, reason) VALUES ($1, 'paused', 'x')",
    )
    .bind(user)
    .execute(&db.pool)
    .await
    .unwrap();
    assert_eq!(next_notification(&mut l).await, user.to_string());

    sqlx::query("DELETE FROM vyx_fleet.user_fly_app_overrides WHERE user_id = $1")
        .bind(user)
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(next_notification(&mut l).await, user.to_string());

    sqlx::query("DELETE FROM public.user_subscriptions WHERE user_id = $1")
        .bind(user)
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(next_notification(&mut l).await, user.to_string());
}

#[tokio::test]
async fn the_notify_trigger_never_fails_the_billing_update() {
    let db = migrated_db().await;
    let user = UserFixture::paid("pro").insert(&db.pool).await;

    // Make pg_notify itself fail inside the trigger: a billing role that may update subscriptions but
    // not call pg_notify (function privileges are per database; the role is per cluster, hence the name).
    let role = format!("billing_{}", db.name);
    for stmt in [
        format!("CREATE ROLE {role} NOLOGIN"),
        format!("GRANT USAGE ON SCHEMA public TO {role}"),
        format!("GRANT SELECT, UPDATE ON public.user_subscriptions TO {role}"),
        "REVOKE EXECUTE ON FUNCTION pg_notify(text, text) FROM PUBLIC".to_string(),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(stmt))
            .execute(&db.pool)
            .await
            .unwrap();
    }

    let mut tx = vyx_fleet::db::begin(&db.pool).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("SET LOCAL ROLE {role}")))
        .execute(&mut *tx)
        .await
        .unwrap();
    // Prove the failure is real for this role...
    let direct = sqlx::query("SELECT pg_notify('vyx_fleet', 'x')")
        .execute(&mut *tx)
        .await;
    assert_eq!(sql_state(direct).as_deref(), Some("42501"));
    tx.rollback().await.unwrap();

    // ...and that the trigger swallows it.
    let mut tx = vyx_fleet::db::begin(&db.pool).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("SET LOCAL ROLE {role}")))
        .execute(&mut *tx)
        .await
        .unwrap();
    let updated =
        sqlx::query("UPDATE public.user_subscriptions SET status = 'past_due' WHERE user_id = $1")
            .bind(user)
            .execute(&mut *tx)
            .await
            .expect("billing update succeeds although pg_notify fails");
    assert_eq!(updated.rows_affected(), 1);
    tx.commit().await.unwrap();

    let status: String =
        sqlx::query_scalar("SELECT status FROM public.user_subscriptions WHERE user_id = $1")
            .bind(user)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(status, "past_due");
}

#[tokio::test]
async fn overrides_accept_only_present_absent_paused() {
    let db = migrated_db().await;
    let user = UserFixture::paid("pro").insert(&db.pool).await;
    for bad in ["maybe", "PRESENT", ""] {
        let r = sqlx::query(
            "INSERT INTO vyx_fleet.user_fly_app_overrides (user_id, desired) VALUES ($1, $2)",
        )
        .bind(user)
        .bind(bad)
        .execute(&db.pool)
        .await;
        assert_eq!(sql_state(r).as_deref(), Some("23514"), "{bad:?} rejected");
    }
    let missing = sqlx::query("INSERT INTO vyx_fleet.user_fly_app_overrides (user_id) VALUES ($1)")
        .bind(user)
        .execute(&db.pool)
        .await;
    assert_eq!(
        sql_state(missing).as_deref(),
        Some("23502"),
        "desired NOT NULL"
    );
    for good in ["present", "absent", "paused"] {
        sqlx::query(
            "INSERT INTO vyx_fleet.user_fly_app_overrides (user_id, desired) VALUES ($1, $2)
             ON CONFLICT (user_id) DO UPDATE SET desired = EXCLUDED.desired",
        )
        .bind(user)
        .bind(good)
        .execute(&db.pool)
        .await
        .unwrap_or_else(|e| panic!("{good}: {e}"));
    }
}

#[tokio::test]
async fn new_tables_have_row_level_security_and_no_policies() {
    let db = migrated_db().await;
    // Supabase's default privileges expose every new public table to the anon key: ours, the app tables
    // when we create them, and sqlx's bookkeeping table must all be behind RLS.
    let created = [
        "public.user_fly_apps",
        "public.user_fly_app_events",
        "public._sqlx_migrations",
    ];
    for table in OUR_TABLES.into_iter().chain(created) {
        let (rls, policies): (bool, i64) = sqlx::query_as(
            "SELECT c.relrowsecurity, (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid)
               FROM pg_class c WHERE c.oid = to_regclass($1)",
        )
        .bind(table)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert!(rls, "{table}: RLS enabled");
        assert_eq!(policies, 0, "{table}: no policies");
    }
}

#[tokio::test]
async fn migrations_refuse_a_database_without_the_supabase_schema() {
    let cluster = support::cluster().await;
    let url = cluster.create_database("bare_no_supabase").await.unwrap();
    let pool = db::connect(&url, 1).await.unwrap();
    let err = db::migrate(&pool).await.expect_err("needs auth.users");
    assert!(err.to_string().contains("auth.users"), "{err}");
}

#[tokio::test]
async fn connect_refuses_the_transaction_pooler_and_never_prints_the_password() {
    let err = db::connect(
        "postgres://postgres.abcd:hunter2hunter2@aws-0-eu-west-1.pooler.supabase.com:6543/postgres",
        2,
    )
    .await
    .expect_err("port 6543 refused");
    assert!(matches!(err, DbError::TransactionPooler { .. }));
    assert!(err.to_string().contains("session pooler"), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");

    // A real connection failure (nothing listens on port 1) with a password in the URL.
    let err = db::connect("postgres://postgres:hunter2hunter2@127.0.0.1:1/postgres", 1)
        .await
        .expect_err("nothing listens there");
    assert!(matches!(err, DbError::Connect { .. }));
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");

    // What logs show instead of the URL.
    assert_eq!(
        db::redact_url("postgres://postgres:hunter2@127.0.0.1:5432/postgres"),
        "postgres://postgres:[redacted]@127.0.0.1:5432/postgres"
    );
}

fn sql_state<T>(r: Result<T, sqlx::Error>) -> Option<String> {
    match r {
        Ok(_) => None,
        Err(sqlx::Error::Database(e)) => e.code().map(|c| c.to_string()),
        Err(e) => Some(format!("non-database error: {e}")),
    }
}

/// Every migration before the move of the controller's tables into `vyx_fleet` (version 20261130000100).
fn migrator_before_schema_move() -> sqlx::migrate::Migrator {
    let mut m = db::migrator();
    let kept: Vec<_> = m
        .migrations
        .iter()
        .filter(|x| x.version < 20261130000100)
        .cloned()
        .collect();
    assert_eq!(kept.len(), 3, "the three migrations of the first release");
    m.migrations = std::borrow::Cow::Owned(kept);
    m
}

#[tokio::test]
async fn the_api_roles_cannot_read_or_steer_the_controllers_tables() {
    let db = migrated_db().await;
    for role in ["anon", "authenticated", "service_role"] {
        let usage: bool =
            sqlx::query_scalar("SELECT has_schema_privilege($1, 'vyx_fleet', 'USAGE')")
                .bind(role)
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert!(!usage, "{role} has USAGE on vyx_fleet");
        for table in OUR_TABLES {
            let any: bool = sqlx::query_scalar(
                "SELECT has_table_privilege($1, $2, 'SELECT,INSERT,UPDATE,DELETE,TRUNCATE')",
            )
            .bind(role)
            .bind(table)
            .fetch_one(&db.pool)
            .await
            .unwrap();
            assert!(!any, "{role} has a privilege on {table}");
        }
        for function in ["vyx_fleet.fence(bigint)", "vyx_fleet.notify()"] {
            let exec: bool = sqlx::query_scalar("SELECT has_function_privilege($1, $2, 'EXECUTE')")
                .bind(role)
                .bind(function)
                .fetch_one(&db.pool)
                .await
                .unwrap();
            assert!(!exec, "{role} may execute {function}");
        }
    }

    // What a leaked service key would try: hold the lease forever, or mark a user absent.
    let mut tx = vyx_fleet::db::begin(&db.pool).await.unwrap();
    sqlx::raw_sql("SET LOCAL ROLE service_role")
        .execute(&mut *tx)
        .await
        .unwrap();
    let hijack = sqlx::query(
        "UPDATE vyx_fleet.lease SET holder = 'evil', expires_at = 'infinity' WHERE name = 'controller'",
    )
    .execute(&mut *tx)
    .await;
    assert_eq!(
        sql_state(hijack).as_deref(),
        Some("42501"),
        "lease hijack refused"
    );
    tx.rollback().await.unwrap();
    for leftover in [
        "user_fly_app_overrides",
        "vyx_fleet_lease",
        "vyx_fleet_orphans",
        "vyx_fleet_settings",
    ] {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass('public.' || $1) IS NOT NULL")
            .bind(leftover)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert!(
            !exists,
            "public.{leftover} left behind where the API serves it"
        );
    }
}

#[tokio::test]
async fn a_service_role_billing_update_still_notifies_the_controller() {
    // The trigger function now lives in a schema the API roles may not use; billing writes made by
    // those roles (the Go backend uses the service key) must still fire it.
    let db = migrated_db().await;
    let user = UserFixture::paid("pro").insert(&db.pool).await;
    let mut l = listener(&db.pool).await;
    let mut tx = vyx_fleet::db::begin(&db.pool).await.unwrap();
    sqlx::raw_sql("SET LOCAL ROLE service_role")
        .execute(&mut *tx)
        .await
        .unwrap();
    let updated =
        sqlx::query("UPDATE public.user_subscriptions SET tier = 'elite' WHERE user_id = $1")
            .bind(user)
            .execute(&mut *tx)
            .await
            .expect("service_role may update subscriptions");
    assert_eq!(updated.rows_affected(), 1);
    tx.commit().await.unwrap();
    assert_eq!(next_notification(&mut l).await, user.to_string());
    // And leaves its trace in the change log, which the API role itself may not touch: a NOTIFY
    // nobody heard is still read by the next sweep.
    let logged: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM vyx_fleet.changes WHERE user_id = $1 \
          AND xid = (SELECT max(xid) FROM vyx_fleet.changes WHERE user_id = $1)",
    )
    .bind(user)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let writes: i64 =
        sqlx::query_scalar("SELECT count(*) FROM vyx_fleet.changes WHERE user_id = $1")
            .bind(user)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        (logged, writes),
        (1, 2),
        "the fixture's insert and the role's update"
    );
}

#[tokio::test]
async fn an_earlier_release_s_tables_move_into_vyx_fleet_with_their_rows() {
    let db = legacy_vyx_db().await;
    migrator_before_schema_move()
        .run(&db.pool)
        .await
        .expect("first release's migrations");
    let user = UserFixture::paid("pro").insert(&db.pool).await;
    for stmt in [
        format!(
            "INSERT INTO public.user_fly_app_overrides (user_id, desired, reason, created_by) \
             VALUES ('{user}', 'paused', 'incident 42', 'ops@vyx')"
        ),
        "INSERT INTO public.vyx_fleet_orphans (app_name, first_seen_at, last_seen_at) \
         VALUES ('vyx-user-zzzzzzzz', now() - interval '5 minutes', now())"
            .to_string(),
        "INSERT INTO public.vyx_fleet_settings (key, value) VALUES ('some_flag', 'x')".to_string(),
        "UPDATE public.vyx_fleet_lease SET holder = 'old-replica', term = 7 WHERE name = 'controller'"
            .to_string(),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(stmt))
            .execute(&db.pool)
            .await
            .unwrap();
    }

    db::migrate(&db.pool).await.expect("upgrade");

    let o: (String, String, String) = sqlx::query_as(
        "SELECT desired, reason, created_by FROM vyx_fleet.user_fly_app_overrides WHERE user_id = $1",
    )
    .bind(user)
    .fetch_one(&db.pool)
    .await
    .expect("override moved with its row");
    assert_eq!(o, ("paused".into(), "incident 42".into(), "ops@vyx".into()));
    let orphans: i64 = sqlx::query_scalar("SELECT count(*) FROM vyx_fleet.orphans")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(orphans, 1);
    let flag: String =
        sqlx::query_scalar("SELECT value FROM vyx_fleet.settings WHERE key = 'some_flag'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(flag, "x");
    let term: i64 =
        sqlx::query_scalar("SELECT term FROM vyx_fleet.lease WHERE name = 'controller'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        term, 7,
        "the fencing term survives the move (no replica reuses an old term)"
    );

    // The moved override table still wakes the controller.
    let mut l = listener(&db.pool).await;
    sqlx::query("DELETE FROM vyx_fleet.user_fly_app_overrides WHERE user_id = $1")
        .bind(user)
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(next_notification(&mut l).await, user.to_string());
}
