//! Black-box tests of the `vyx-fleet` command line (DESIGN §4): settings validation and exit codes,
//! `migrate`, `reconcile --once [--dry-run]`, `status --json`, `confirm-deletions`, and secrets never
//! printed. The binary runs as a child process with a clean environment; the test only looks at its
//! exit status and output, the database tables and the simulator's state.

mod bin_support;
mod support;

use std::path::PathBuf;

use bin_support::{
    BinEnv, Daemon, Expected, IMAGE, SERVICE_KEY, TOKEN, World, assert_no_secrets, check_converged,
    check_converged_with, dump_table, insert_users, run_to_completion, secs, wait_until,
};
use serde_json::Value;
use support::{UserFixture, set_subscription};
use vyx_fleet::sim::SimConfig;

/// One malformed-settings case: what to change, which key the error line must name, and an extra
/// secret that must not be echoed.
struct Case {
    name: &'static str,
    set: Vec<(&'static str, &'static str)>,
    unset: Vec<&'static str>,
    file: Option<&'static str>,
    key: &'static str,
    secret: Option<&'static str>,
}

fn case(name: &'static str, key: &'static str) -> Case {
    Case {
        name,
        set: vec![],
        unset: vec![],
        file: None,
        key,
        secret: None,
    }
}

impl Case {
    fn set(mut self, k: &'static str, v: &'static str) -> Case {
        self.set.push((k, v));
        self
    }
    fn unset(mut self, k: &'static str) -> Case {
        self.unset.push(k);
        self
    }
    fn file(mut self, text: &'static str) -> Case {
        self.file = Some(text);
        self
    }
    fn secret(mut self, s: &'static str) -> Case {
        self.secret = Some(s);
        self
    }
}

fn malformed_cases() -> Vec<Case> {
    vec![
        case("missing DATABASE_URL", "DATABASE_URL").unset("DATABASE_URL"),
        case("missing FLY_API_TOKEN", "FLY_API_TOKEN").unset("FLY_API_TOKEN"),
        case("empty FLY_API_TOKEN", "FLY_API_TOKEN").set("FLY_API_TOKEN", "   "),
        case("missing FLY_ORG_SLUG", "FLY_ORG_SLUG").unset("FLY_ORG_SLUG"),
        case("missing USER_APP_IMAGE", "USER_APP_IMAGE").unset("USER_APP_IMAGE"),
        case("image :latest", "USER_APP_IMAGE")
            .set("USER_APP_IMAGE", "registry.fly.io/vyx-screener:latest"),
        case("image without tag", "USER_APP_IMAGE")
            .set("USER_APP_IMAGE", "registry.fly.io/vyx-screener"),
        case("bad duration", "RECONCILE_INTERVAL").set("RECONCILE_INTERVAL", "soon"),
        case("zero interval", "RECONCILE_INTERVAL").set("RECONCILE_INTERVAL", "0s"),
        case("bad grace", "DEPROVISION_GRACE").set("DEPROVISION_GRACE", "10 parsecs"),
        case("memory not a step", "USER_APP_MEMORY_MB").set("USER_APP_MEMORY_MB", "500"),
        case("memory too large", "USER_APP_MEMORY_MB").set("USER_APP_MEMORY_MB", "65536"),
        case("memory not a number", "USER_APP_MEMORY_MB").set("USER_APP_MEMORY_MB", "1GB"),
        case("cpus", "USER_APP_CPUS").set("USER_APP_CPUS", "3"),
        case("prefix vyx-a", "APP_NAME_PREFIX").set("APP_NAME_PREFIX", "vyx-a"),
        case("prefix vyx-", "APP_NAME_PREFIX").set("APP_NAME_PREFIX", "vyx-"),
        case("prefix vyx-app", "APP_NAME_PREFIX").set("APP_NAME_PREFIX", "vyx-app"),
        case("transaction pooler", "DATABASE_URL")
            .set(
                "DATABASE_URL",
                "postgres://postgres.proj:pw-SECRET-6543@aws-0-eu.pooler.supabase.com:6543/postgres",
            )
            .secret("pw-SECRET-6543"),
        case("not postgres", "DATABASE_URL")
            .set("DATABASE_URL", "mysql://root:pw-SECRET-mysql@db/vyx")
            .secret("pw-SECRET-mysql"),
        case("bad port in url", "DATABASE_URL")
            .set("DATABASE_URL", "postgres://u:pw-SECRET-port@h:notaport/db")
            .secret("pw-SECRET-port"),
        case("base url with credentials", "FLY_API_BASE_URL")
            .set(
                "FLY_API_BASE_URL",
                "https://x:tok-SECRET-base@api.machines.dev",
            )
            .secret("tok-SECRET-base"),
        case("supabase url without key", "SUPABASE_SERVICE_ROLE_KEY")
            .unset("SUPABASE_SERVICE_ROLE_KEY"),
        case("key without supabase url", "SUPABASE_URL").unset("SUPABASE_URL"),
        case("paid tiers", "PAID_TIERS").set("PAID_TIERS", "premium"),
        case("paid statuses", "PAID_STATUSES").set("PAID_STATUSES", "trialing"),
        case("concurrency", "MAX_CONCURRENCY").set("MAX_CONCURRENCY", "0"),
        case("max unavailable", "ROLLOUT_MAX_UNAVAILABLE").set("ROLLOUT_MAX_UNAVAILABLE", "0%"),
        case("soak", "ROLLOUT_SOAK").set("ROLLOUT_SOAK", "a minute"),
        case("health url without {app}", "HEALTH_URL_TEMPLATE")
            .set("HEALTH_URL_TEMPLATE", "https://vyx.fly.dev/health"),
        case("http addr", "HTTP_ADDR").set("HTTP_ADDR", "localhost"),
        case("log format", "LOG_FORMAT").set("LOG_FORMAT", "xml"),
        case("org slug", "FLY_ORG_SLUG").set("FLY_ORG_SLUG", "Vyx_Test"),
        case("region", "USER_APP_REGION").set("USER_APP_REGION", "singapore"),
        case("user app secret not set", "GEMINI_API_KEY").set("USER_APP_SECRETS", "GEMINI_API_KEY"),
        case("user app secret shadows a setting", "USER_APP_SECRETS")
            .set("USER_APP_SECRETS", "FLY_API_TOKEN"),
        case("unknown TOML key", "FLY_ORG").file("FLY_ORG = \"vyx-test\"\n"),
        case("lower-case TOML key", "fly_org_slug").file("fly_org_slug = \"vyx-test\"\n"),
        case("TOML table", "DATABASE").file("[DATABASE]\nURL = \"postgres://h/db\"\n"),
        case("TOML syntax error around a secret", "--config")
            .unset("FLY_API_TOKEN")
            .file("FLY_ORG_SLUG = \"vyx-test\"\nFLY_API_TOKEN = fm2_toml-SECRET-unquoted\n")
            .secret("fm2_toml-SECRET-unquoted"),
        case("TOML unterminated secret", "--config")
            .unset("FLY_API_TOKEN")
            .file("FLY_API_TOKEN = \"fm2_toml-SECRET-open\nFLY_ORG_SLUG = \"vyx-test\"\n")
            .secret("fm2_toml-SECRET-open"),
        case("bad value from the TOML file", "USER_APP_MEMORY_MB")
            .unset("USER_APP_MEMORY_MB")
            .file("USER_APP_MEMORY_MB = 300\n"),
        case("missing config file", "--config").file(""),
    ]
}

fn write_config(name: &str, text: &str) -> PathBuf {
    let dir = bin_support::out_dir(&format!("config-{}", name.replace(' ', "_")));
    let path = dir.join("vyx-fleet.toml");
    std::fs::write(&path, text).expect("write config file");
    path
}

#[tokio::test]
async fn malformed_settings_exit_2_with_one_line_naming_the_key() {
    // No database or simulator is reached: settings are checked before anything connects.
    let base = BinEnv::full("postgres://postgres@127.0.0.1:1/none", "http://127.0.0.1:1");
    let mut failures = Vec::new();
    for c in malformed_cases() {
        let mut env = base.clone();
        for k in &c.unset {
            env = env.without(k);
        }
        for (k, v) in &c.set {
            env = env.with(k, v);
        }
        let mut args: Vec<String> = vec![];
        if let Some(text) = c.file {
            let path = write_config(c.name, text);
            if c.name == "missing config file" {
                std::fs::remove_file(&path).unwrap();
            }
            args.push("--config".into());
            args.push(path.display().to_string());
        }
        for cmd in [&["reconcile", "--once"][..], &["run"][..]] {
            let mut full = args.clone();
            full.extend(cmd.iter().map(|s| s.to_string()));
            let argv: Vec<&str> = full.iter().map(String::as_str).collect();
            let out = run_to_completion(&env, &argv, secs(20)).await;
            let lines: Vec<&str> = out.stderr.lines().filter(|l| !l.is_empty()).collect();
            let mut secrets = env.secret_values();
            secrets.extend(c.secret.map(str::to_string));
            let leaked: Vec<&String> = secrets
                .iter()
                .filter(|s| out.all_output().contains(s.as_str()))
                .collect();
            let ok = out.code == Some(2)
                && lines.len() == 1
                && lines[0].contains(c.key)
                && leaked.is_empty()
                && out.stdout.trim().is_empty();
            if !ok {
                failures.push(format!(
                    "{} ({:?}): exit {:?}, stderr {:?}, stdout {:?}, leaked {:?}",
                    c.name, cmd, out.code, out.stderr, out.stdout, leaked
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn commands_that_need_only_the_database_check_just_database_url() {
    let env = BinEnv::full("postgres://postgres@127.0.0.1:1/none", "http://127.0.0.1:1");
    for cmd in [
        &["migrate"][..],
        &["status"],
        &["status", "--json"],
        &["confirm-deletions"],
        &["rollout", "resume"],
    ] {
        let out = run_to_completion(&env.clone().without("DATABASE_URL"), cmd, secs(20)).await;
        assert_eq!(out.code, Some(2), "{cmd:?}: {out:?}");
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{cmd:?}: {out:?}");
        assert!(lines[0].contains("DATABASE_URL"), "{cmd:?}: {out:?}");

        let pooler = env.clone().with(
            "DATABASE_URL",
            "postgresql://postgres:pw-SECRET-pool@db.example.supabase.co:6543/postgres",
        );
        let out = run_to_completion(&pooler, cmd, secs(20)).await;
        assert_eq!(out.code, Some(2), "{cmd:?}: {out:?}");
        assert!(out.stderr.contains("DATABASE_URL"), "{cmd:?}: {out:?}");
        assert!(!out.all_output().contains("pw-SECRET-pool"), "{out:?}");
    }
    // `reconcile` without --once refuses (the loop is `run`).
    let out = run_to_completion(&env, &["reconcile"], secs(20)).await;
    assert_eq!(out.code, Some(2), "{out:?}");
}

#[tokio::test]
async fn help_works_for_every_subcommand() {
    let env = BinEnv {
        vars: Default::default(),
    };
    let top = run_to_completion(&env, &["--help"], secs(20)).await.ok();
    let subcommands = [
        "run",
        "reconcile",
        "migrate",
        "status",
        "confirm-deletions",
        "rollout",
        "demo",
        "sim",
    ];
    for sub in subcommands {
        assert!(
            top.stdout.contains(sub),
            "--help lists {sub}: {}",
            top.stdout
        );
        let out = run_to_completion(&env, &[sub, "--help"], secs(20))
            .await
            .ok();
        assert!(out.stdout.contains("Usage"), "{sub} --help: {}", out.stdout);
        let out = run_to_completion(&env, &["help", sub], secs(20)).await.ok();
        assert!(out.stdout.contains("Usage"), "help {sub}: {}", out.stdout);
    }
    let out = run_to_completion(&env, &["reconcile", "--help"], secs(20)).await;
    assert!(out.stdout.contains("--once") && out.stdout.contains("--dry-run"));
    let out = run_to_completion(&env, &["status", "--help"], secs(20)).await;
    assert!(out.stdout.contains("--json"));
    let out = run_to_completion(&env, &["--version"], secs(20)).await.ok();
    assert!(out.stdout.contains("vyx-fleet"), "{}", out.stdout);
    let out = run_to_completion(&env, &["no-such-command"], secs(20)).await;
    assert_ne!(out.code, Some(0));
}

#[tokio::test]
async fn migrate_applies_and_is_idempotent() {
    let db = support::fresh_db().await;
    let env = BinEnv {
        vars: [("DATABASE_URL".to_string(), db.url.clone())].into(),
    };
    let table_exists = |t: &'static str| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, bool>("SELECT to_regclass($1) IS NOT NULL")
                .bind(t)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert!(!table_exists("vyx_fleet.lease").await);

    let first = run_to_completion(&env, &["migrate"], secs(60)).await.ok();
    for t in [
        "public.user_fly_apps",
        "public.user_fly_app_events",
        "vyx_fleet.user_fly_app_overrides",
        "vyx_fleet.lease",
        "vyx_fleet.settings",
    ] {
        assert!(table_exists(t).await, "{t} after migrate: {first:?}");
    }
    let applied = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM _sqlx_migrations WHERE success")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let n = applied(db.pool.clone()).await;
    assert!(n >= 3, "{n} migrations recorded");
    let schema_before = dump_table(
        &db.pool,
        "(SELECT table_name, column_name, data_type FROM information_schema.columns \
          WHERE table_schema = 'public')",
    )
    .await;

    run_to_completion(&env, &["migrate"], secs(60)).await.ok();
    assert_eq!(
        applied(db.pool.clone()).await,
        n,
        "second run applies nothing"
    );
    let schema_after = dump_table(
        &db.pool,
        "(SELECT table_name, column_name, data_type FROM information_schema.columns \
          WHERE table_schema = 'public')",
    )
    .await;
    assert_eq!(schema_before, schema_after);

    // Also on a database that already has Vyx's legacy tables and trigger.
    let legacy = support::legacy_vyx_db().await;
    let env = BinEnv {
        vars: [("DATABASE_URL".to_string(), legacy.url.clone())].into(),
    };
    run_to_completion(&env, &["migrate"], secs(60)).await.ok();
    run_to_completion(&env, &["migrate"], secs(60)).await.ok();
}

async fn live_row(pool: &sqlx::PgPool, user: uuid::Uuid) -> Option<(String, String)> {
    sqlx::query_as(
        "SELECT fly_app_name, status FROM public.user_fly_apps \
         WHERE user_id = $1 AND deleted_at IS NULL",
    )
    .bind(user)
    .fetch_optional(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn reconcile_once_provisions_a_paid_user_and_leaves_free_ones_alone() {
    let world = World::start(SimConfig::default()).await;
    let paid = UserFixture::paid("pro").insert(world.pool()).await;
    let free = UserFixture::free().insert(world.pool()).await;
    let nosub = UserFixture::without_subscription()
        .insert(world.pool())
        .await;

    let out = run_to_completion(&world.env, &["reconcile", "--once"], secs(120))
        .await
        .ok();
    assert!(out.stdout.contains("pass done"), "{}", out.stdout);

    let (name, status) = live_row(world.pool(), paid)
        .await
        .expect("a row for the paid user");
    assert_eq!(status, "active", "{out:?}");
    assert!(name.starts_with("vyx-user-"));
    let snap = world.sim.snapshot();
    let app = snap.app(&name).expect("the app exists in the simulator");
    assert_eq!(app.org, "vyx-test");
    assert_eq!(app.machines.len(), 1);
    assert_eq!(app.machines[0].config["image"], IMAGE);
    assert_eq!(app.machines[0].config["env"]["USER_ID"], paid.to_string());
    for u in [free, nosub] {
        assert!(live_row(world.pool(), u).await.is_none());
    }
    assert_eq!(world.managed_apps().len(), 1);
    // The one-shot pass gave the lease back.
    let expired: bool = sqlx::query_scalar(
        "SELECT holder IS NULL OR expires_at IS NULL OR expires_at <= clock_timestamp() \
         FROM vyx_fleet.lease WHERE name = 'controller'",
    )
    .fetch_one(world.pool())
    .await
    .unwrap();
    assert!(expired, "reconcile --once released the lease");
    check_converged(world.pool(), &world.sim).await.unwrap();
}

#[tokio::test]
async fn reconcile_once_refuses_while_a_daemon_leads() {
    let world = World::start(SimConfig::default()).await;
    let d = Daemon::spawn(&world.env, "leader");
    let pool = world.pool().clone();
    wait_until("the daemon to lead", secs(30), || {
        let pool = pool.clone();
        async move {
            let live: bool = sqlx::query_scalar(
                "SELECT coalesce(expires_at > clock_timestamp(), false) FROM vyx_fleet.lease",
            )
            .fetch_one(&pool)
            .await
            .map_err(|e| e.to_string())?;
            if live {
                Ok(())
            } else {
                Err("no live lease".into())
            }
        }
    })
    .await;
    let out = run_to_completion(&world.env, &["reconcile", "--once"], secs(60)).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    drop(d);
}

#[tokio::test]
async fn dry_run_prints_the_plan_and_changes_nothing() {
    let world = World::start(SimConfig::default()).await;
    let pool = world.pool();
    let stays = insert_users(pool, 2, "pro").await;
    let leaves = UserFixture::paid("elite").insert(pool).await;
    run_to_completion(&world.env, &["reconcile", "--once"], secs(120))
        .await
        .ok();
    wait_until("three apps provisioned", secs(60), || async {
        check_converged(pool, &world.sim).await.and_then(|s| {
            if s.apps == 3 {
                Ok(s)
            } else {
                Err(format!("{} apps", s.apps))
            }
        })
    })
    .await;

    // Pending work: a new paid user, a downgrade, and an override forcing a free user's app.
    let newcomer = UserFixture::paid("pro").insert(pool).await;
    let forced = UserFixture::free()
        .with_override("present")
        .insert(pool)
        .await;
    set_subscription(pool, leaves, "free", "active").await;

    let tables = [
        "public.user_fly_apps",
        "public.user_fly_app_events",
        "vyx_fleet.lease",
        "vyx_fleet.orphans",
        "vyx_fleet.settings",
    ];
    let mut before = Vec::new();
    for t in tables {
        before.push(dump_table(pool, t).await);
    }
    let snap_before = serde_json::to_value(world.sim.snapshot().apps).unwrap();
    let calls_before = world.sim.calls().len();

    let out = run_to_completion(&world.env, &["reconcile", "--once", "--dry-run"], secs(60))
        .await
        .ok();

    for (t, b) in tables.iter().zip(&before) {
        assert_eq!(&dump_table(pool, t).await, b, "{t} changed by a dry run");
    }
    let new_calls: Vec<_> = world.sim.calls().into_iter().skip(calls_before).collect();
    let writes: Vec<_> = new_calls.iter().filter(|c| c.method != "GET").collect();
    assert!(writes.is_empty(), "dry run wrote to Fly: {writes:?}");
    assert!(!new_calls.is_empty(), "the dry run did observe Fly");
    assert_eq!(
        serde_json::to_value(world.sim.snapshot().apps).unwrap(),
        snap_before
    );

    let plan: Vec<&str> = out.stdout.lines().filter(|l| !l.starts_with('{')).collect();
    let plan = plan.join("\n");
    assert!(plan.contains("plan:"), "{plan}");
    for u in [newcomer, forced, leaves] {
        assert!(plan.contains(&u.to_string()), "plan mentions {u}:\n{plan}");
    }
    for u in &stays {
        assert!(
            !plan.contains(&u.to_string()),
            "nothing to do for {u}:\n{plan}"
        );
    }
    assert!(plan.contains("converge"), "{plan}");
    assert_no_secrets(&out.all_output(), &world.env.secret_values(), "dry run");

    // The same plan, for real, then converges.
    for _ in 0..3 {
        run_to_completion(&world.env, &["reconcile", "--once"], secs(120))
            .await
            .ok();
    }
    let s = wait_until("converged after the real passes", secs(30), || async {
        check_converged(pool, &world.sim).await
    })
    .await;
    assert_eq!(s.apps, 4);
}

#[tokio::test]
async fn status_json_lists_apps_and_totals_without_secrets() {
    let world = World::start(SimConfig::default()).await;
    let users = insert_users(world.pool(), 3, "pro").await;
    let out = run_to_completion(&world.env, &["reconcile", "--once"], secs(120))
        .await
        .ok();
    for u in &users {
        let row = live_row(world.pool(), *u).await;
        assert_eq!(
            row.as_ref().map(|r| r.1.as_str()),
            Some("active"),
            "one pass provisions {u}:\n{}",
            out.stdout
        );
    }

    let out = run_to_completion(&world.env, &["status", "--json"], secs(30))
        .await
        .ok();
    assert_no_secrets(
        &out.all_output(),
        &world.env.secret_values(),
        "status --json",
    );
    let json_lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(json_lines.len(), 1, "one JSON document: {}", out.stdout);
    let doc: Value = serde_json::from_str(json_lines[0]).expect("status --json parses");
    let apps = doc["apps"].as_array().expect("apps array");
    assert_eq!(apps.len(), 3, "{doc}");
    for a in apps {
        assert_eq!(a["status"], "active", "{a}");
        assert_eq!(a["health"], "healthy", "{a}");
        assert_eq!(a["image"], IMAGE, "{a}");
        assert!(a["monthly_cost_usd"].as_f64().unwrap_or(0.0) > 0.0, "{a}");
        assert!(a["app"].as_str().unwrap().starts_with("vyx-user-"), "{a}");
        let user: uuid::Uuid = a["user_id"].as_str().unwrap().parse().unwrap();
        assert!(users.contains(&user));
    }
    let totals = &doc["totals"];
    assert_eq!(totals["apps"], 3, "{totals}");
    assert_eq!(totals["live"], 3, "{totals}");
    assert_eq!(totals["by_status"]["active"], 3, "{totals}");
    let sum: f64 = apps
        .iter()
        .map(|a| a["monthly_cost_usd"].as_f64().unwrap())
        .sum();
    let total = totals["monthly_cost_usd"].as_f64().unwrap();
    assert!((sum - total).abs() < 0.011, "{sum} vs {total}");

    // The table form too, with only DATABASE_URL in the environment.
    let db_only = BinEnv {
        vars: [("DATABASE_URL".to_string(), world.db.url.clone())].into(),
    };
    let out = run_to_completion(&db_only, &["status"], secs(30))
        .await
        .ok();
    assert!(out.stdout.contains("3 apps (3 live)"), "{}", out.stdout);
}

/// (held, confirmed) entries of the breaker's held set.
async fn held_set(pool: &sqlx::PgPool) -> (usize, usize) {
    let held = vyx_fleet::db::breaker::load_held(pool).await.unwrap();
    let confirmed = held.iter().filter(|h| h.confirmed_at.is_some()).count();
    (held.len(), confirmed)
}

#[tokio::test]
async fn confirm_deletions_releases_what_the_breaker_held_back() {
    let world = World::start(SimConfig::default()).await;
    let pool = world.pool();
    let users = insert_users(pool, 2, "pro").await;
    run_to_completion(&world.env, &["reconcile", "--once"], secs(120))
        .await
        .ok();
    let names: Vec<String> = {
        let mut v = Vec::new();
        for u in &users {
            v.push(world.wait_provisioned(*u, secs(30)).await);
        }
        v
    };

    // Everybody leaves at once: the breaker must hold every deletion back.
    for u in &users {
        set_subscription(pool, *u, "free", "active").await;
    }
    let mut alerts = 0;
    for _ in 0..3 {
        let out = run_to_completion(&world.env, &["reconcile", "--once"], secs(120))
            .await
            .ok();
        if out.all_output().contains("deletions blocked")
            || out.all_output().contains("blast-radius")
        {
            alerts += 1;
        }
    }
    assert!(alerts > 0, "the breaker said why it held back");
    assert_eq!(
        world.managed_apps().len(),
        2,
        "nothing deleted without confirmation"
    );
    assert_eq!(held_set(pool).await, (2, 0), "both held, none confirmed");
    let status = run_to_completion(&world.env, &["status"], secs(30))
        .await
        .ok();
    assert!(
        status.stdout.contains("HELD 2 deletion(s)") && status.stdout.contains(&names[0]),
        "{}",
        status.stdout
    );

    let out = run_to_completion(&world.env, &["confirm-deletions"], secs(30))
        .await
        .ok();
    assert_eq!(out.code, Some(0));
    assert!(
        out.stdout.contains("confirmed 2 held deletion"),
        "{}",
        out.stdout
    );
    assert_eq!(held_set(pool).await, (2, 2));

    for _ in 0..4 {
        run_to_completion(&world.env, &["reconcile", "--once"], secs(120))
            .await
            .ok();
        if world.managed_apps().is_empty() {
            break;
        }
    }
    wait_until("both apps deleted", secs(30), || async {
        let left: Vec<String> = world
            .managed_apps()
            .into_iter()
            .filter(|a| names.contains(&a.name))
            .map(|a| a.name)
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    })
    .await;
    for u in &users {
        assert!(
            live_row(pool, *u).await.is_none(),
            "row of {u} soft-deleted"
        );
    }
    run_to_completion(&world.env, &["reconcile", "--once"], secs(120))
        .await
        .ok();
    assert_eq!(
        held_set(pool).await,
        (0, 0),
        "a held entry leaves the set once its app is gone"
    );
}

#[tokio::test]
async fn secrets_never_appear_in_logs_events_or_status() {
    let world = World::start(SimConfig::default()).await;
    let pool = world.pool();
    // Debug logging: the most a confused operator would turn on.
    let env = world
        .env
        .clone()
        .with("RUST_LOG", "debug")
        .with("USER_APP_SECRETS", "GEMINI_API_KEY")
        .with("GEMINI_API_KEY", "gemini-blackbox-SECRET789");
    let mut secrets = env.secret_values();
    secrets.push("gemini-blackbox-SECRET789".into());

    let users = insert_users(pool, 3, "elite").await;
    let mut d = Daemon::spawn(&env, "secrets");
    for u in &users {
        world.wait_provisioned(*u, secs(90)).await;
    }
    // Deprovision one (1 of 3 live: under the breaker's limit).
    set_subscription(pool, users[0], "pro", "cancelled").await;
    wait_until("the cancelled user's app deleted", secs(90), || async {
        let s = check_converged_with(pool, &world.sim, &Expected::from_env(&env)).await?;
        if s.apps == 2 && s.unwanted == 1 {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    })
    .await;
    d.sigterm();
    let status = d.wait_exit(secs(40)).await.expect("exits after SIGTERM");
    assert!(status.success(), "{status:?}");

    let stdout = d.stdout();
    let stderr = d.stderr();
    assert_no_secrets(&stdout, &secrets, "daemon stdout");
    assert_no_secrets(&stderr, &secrets, "daemon stderr");
    let lines = d.log_lines();
    assert!(lines.len() > 10, "the daemon logged its work");
    for l in &lines {
        assert!(
            l["level"].is_string() && l["timestamp"].is_string() && l["target"].is_string(),
            "{l}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.to_string().contains("deprovision") || l.to_string().contains("delete")),
        "the deprovision is in the logs"
    );

    let out = run_to_completion(&env, &["status", "--json"], secs(30))
        .await
        .ok();
    assert_no_secrets(&out.all_output(), &secrets, "status");
    let out = run_to_completion(&env, &["reconcile", "--once", "--dry-run"], secs(60))
        .await
        .ok();
    assert_no_secrets(&out.all_output(), &secrets, "dry run");
    for t in [
        "public.user_fly_apps",
        "public.user_fly_app_events",
        "vyx_fleet.lease",
        "vyx_fleet.settings",
    ] {
        assert_no_secrets(&dump_table(pool, t).await.to_string(), &secrets, t);
    }
    // The service key travels as a Fly secret, never in a machine's config.
    for app in world.managed_apps() {
        assert!(
            app.secrets
                .iter()
                .any(|s| s.name == "SUPABASE_SERVICE_ROLE_KEY")
        );
        assert!(app.secrets.iter().any(|s| s.name == "GEMINI_API_KEY"));
        for m in &app.machines {
            assert_no_secrets(&m.config.to_string(), &secrets, "machine config");
        }
    }
    let _ = (TOKEN, SERVICE_KEY);
}

#[tokio::test]
async fn unreachable_fly_or_database_exit_1_without_leaking_secrets() {
    // Fly refuses the token (401): the pass fails, the exit code says so, the token is nowhere.
    let cfg = SimConfig {
        any_token_org: None,
        ..SimConfig::default()
    }
    .with_token("fm2_the-only-valid-token", "vyx-test");
    let world = World::start(cfg).await;
    UserFixture::paid("pro").insert(world.pool()).await;
    let out = run_to_completion(&world.env, &["reconcile", "--once"], secs(120)).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_no_secrets(&out.all_output(), &world.env.secret_values(), "401 run");
    bin_support::parse_json_lines(&out.stdout, "reconcile with a bad token");
    assert!(world.managed_apps().is_empty());
    let out = run_to_completion(&world.env, &["reconcile", "--once", "--dry-run"], secs(120)).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_no_secrets(&out.all_output(), &world.env.secret_values(), "401 dry run");
    // The failed one-shot pass gave the lease back.
    let live: bool = sqlx::query_scalar(
        "SELECT coalesce(expires_at > clock_timestamp(), false) FROM vyx_fleet.lease",
    )
    .fetch_one(world.pool())
    .await
    .unwrap();
    assert!(!live, "lease released after a failed pass");

    // Nothing listens on the Fly port.
    let dead_fly = world.env.clone().with(
        "FLY_API_BASE_URL",
        &format!("http://127.0.0.1:{}", bin_support::free_port()),
    );
    let out = run_to_completion(&dead_fly, &["reconcile", "--once"], secs(300)).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_no_secrets(&out.all_output(), &dead_fly.secret_values(), "dead Fly");

    // The database refuses connections; its password must not be printed either.
    let port = bin_support::free_port();
    let dead_db = world.env.clone().with(
        "DATABASE_URL",
        &format!("postgres://postgres:pw-SECRET-db@127.0.0.1:{port}/vyx"),
    );
    let mut secrets = dead_db.secret_values();
    secrets.push("pw-SECRET-db".into());
    for cmd in [
        &["reconcile", "--once"][..],
        &["migrate"],
        &["status", "--json"],
        &["confirm-deletions"],
        &["rollout", "resume"],
        &["run"],
    ] {
        let out = run_to_completion(&dead_db, cmd, secs(120)).await;
        assert_eq!(out.code, Some(1), "{cmd:?}: {out:?}");
        assert_no_secrets(&out.all_output(), &secrets, &format!("{cmd:?}"));
    }
}

#[tokio::test]
async fn a_row_naming_the_shared_app_is_never_touched() {
    let world = World::start(SimConfig::default()).await;
    let pool = world.pool();
    world.sim.seed_app("vyx-test", "vyx-app");
    let legacy = UserFixture::paid("pro").insert(pool).await;
    // A legacy row (old naming) that points at the shared backend.
    sqlx::query(
        "INSERT INTO public.user_fly_apps (user_id, fly_app_name, fly_org_slug, status) \
         VALUES ($1, 'vyx-app', 'vyx-test', 'active')",
    )
    .bind(legacy)
    .execute(pool)
    .await
    .unwrap();
    let normal = insert_users(pool, 2, "pro").await;

    let out = run_to_completion(&world.env, &["reconcile", "--once", "--dry-run"], secs(60))
        .await
        .ok();
    assert!(
        out.stdout.contains("vyx-app"),
        "the plan reports the skipped row:\n{}",
        out.stdout
    );
    for _ in 0..2 {
        run_to_completion(&world.env, &["reconcile", "--once"], secs(120))
            .await
            .ok();
    }
    for u in &normal {
        world.wait_provisioned(*u, secs(30)).await;
    }
    // The legacy user leaves: still nothing may happen to vyx-app.
    set_subscription(pool, legacy, "free", "active").await;
    for _ in 0..2 {
        run_to_completion(&world.env, &["reconcile", "--once"], secs(120))
            .await
            .ok();
    }
    let touched: Vec<_> = world
        .sim
        .calls()
        .into_iter()
        .filter(|c| {
            c.path.starts_with("/v1/apps/vyx-app") && !c.path.starts_with("/v1/apps/vyx-app-")
        })
        .filter(|c| c.method != "GET")
        .collect();
    assert!(touched.is_empty(), "writes to vyx-app: {touched:?}");
    let snap = world.sim.snapshot();
    let shared = snap.app("vyx-app").expect("vyx-app still exists");
    assert!(!shared.deleting);
    let row: (String, String) =
        sqlx::query_as("SELECT fly_app_name, status FROM public.user_fly_apps WHERE user_id = $1")
            .bind(legacy)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(row.0, "vyx-app", "the row is left as it was");
}

/// Invariant 6 at its boundary: with 12 live apps the limit is max(5, 10 %) = 5 deletions per pass.
/// Five downgrades go through; six are held back until `confirm-deletions`.
#[tokio::test]
async fn the_breaker_allows_five_deletions_and_holds_six() {
    // Not a rate-limit test: without the simulator's limits 12 creates fit in one pass (see
    // `a_fault_free_run_stays_inside_flys_rate_limits` for why that matters).
    let world = World::start(SimConfig {
        rate_limits: vyx_fleet::sim::RateLimitConfig::disabled(),
        ..SimConfig::default()
    })
    .await;
    let pool = world.pool();
    let users = insert_users(pool, 12, "pro").await;
    for _ in 0..4 {
        run_to_completion(&world.env, &["reconcile", "--once"], secs(180))
            .await
            .ok();
        if check_converged(pool, &world.sim)
            .await
            .is_ok_and(|s| s.apps == 12)
        {
            break;
        }
    }
    wait_until("12 apps", secs(60), || async {
        check_converged(pool, &world.sim).await.and_then(|s| {
            if s.apps == 12 {
                Ok(())
            } else {
                Err(format!("{s:?}"))
            }
        })
    })
    .await;

    // Five leave: allowed.
    for u in &users[..5] {
        set_subscription(pool, *u, "free", "active").await;
    }
    let mut blocked = false;
    for _ in 0..3 {
        let out = run_to_completion(&world.env, &["reconcile", "--once"], secs(180))
            .await
            .ok();
        blocked |= out.all_output().contains("deletions blocked");
    }
    assert!(!blocked, "5 of 12 is within the limit");
    wait_until("7 apps left", secs(60), || async {
        check_converged(pool, &world.sim).await.and_then(|s| {
            if s.apps == 7 {
                Ok(())
            } else {
                Err(format!("{s:?}"))
            }
        })
    })
    .await;

    // Now 7 live; six leave (of 7 live: more than 5): held back.
    for u in &users[5..11] {
        set_subscription(pool, *u, "free", "active").await;
    }
    for _ in 0..2 {
        let out = run_to_completion(&world.env, &["reconcile", "--once"], secs(180))
            .await
            .ok();
        blocked |= out.all_output().contains("deletions blocked");
    }
    assert!(blocked, "6 deletions are over the limit");
    assert_eq!(world.managed_apps().len(), 7, "nothing deleted");
    run_to_completion(&world.env, &["confirm-deletions"], secs(30))
        .await
        .ok();
    for _ in 0..3 {
        run_to_completion(&world.env, &["reconcile", "--once"], secs(180))
            .await
            .ok();
    }
    let s = wait_until("1 app left", secs(60), || async {
        check_converged(pool, &world.sim).await.and_then(|s| {
            if s.apps == 1 {
                Ok(s)
            } else {
                Err(format!("{s:?}"))
            }
        })
    })
    .await;
    assert_eq!(s.unwanted, 11);
}

/// A change is picked up at once through NOTIFY, not on the next interval (here one hour).
#[tokio::test]
async fn a_tier_change_is_acted_on_at_once_through_notify() {
    let world = World::start(SimConfig::default()).await;
    let env = world.env.clone().with("RECONCILE_INTERVAL", "1h");
    let keep = UserFixture::paid("pro").insert(world.pool()).await;
    let _d = Daemon::spawn(&env, "notify");
    // The first pass runs at start-up.
    world.wait_provisioned(keep, secs(60)).await;
    let user = UserFixture::free().insert(world.pool()).await;
    let t0 = std::time::Instant::now();
    set_subscription(world.pool(), user, "elite", "active").await;
    world.wait_provisioned(user, secs(30)).await;
    println!("provisioned {:.2?} after the upgrade", t0.elapsed());
    // An override is a hint too.
    let forced = UserFixture::free().insert(world.pool()).await;
    sqlx::query(
        "INSERT INTO vyx_fleet.user_fly_app_overrides (user_id, desired, reason, created_by) \
         VALUES ($1, 'present', 'vip', 'test')",
    )
    .bind(forced)
    .execute(world.pool())
    .await
    .unwrap();
    world.wait_provisioned(forced, secs(30)).await;
}

/// `DEPROVISION_GRACE`: a downgrade waits; an upgrade within the grace cancels the deprovision and the
/// app is never deleted.
#[tokio::test]
async fn a_downgrade_waits_for_the_grace_and_a_quick_re_upgrade_keeps_the_app() {
    let world = World::start(SimConfig::default()).await;
    let pool = world.pool();
    let env = world.env.clone().with("DEPROVISION_GRACE", "1h");
    let users = insert_users(pool, 3, "pro").await;
    let mut d = Daemon::spawn(&env, "grace");
    let name = world.wait_provisioned(users[0], secs(90)).await;
    wait_converged_apps(&world, 3).await;

    set_subscription(pool, users[0], "free", "active").await;
    wait_until("the grace to start", secs(30), || async {
        let since: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
            "SELECT unwanted_since FROM public.user_fly_apps WHERE user_id = $1",
        )
        .bind(users[0])
        .fetch_one(pool)
        .await
        .map_err(|e| e.to_string())?;
        since.map(|_| ()).ok_or("no unwanted_since yet".to_string())
    })
    .await;
    set_subscription(pool, users[0], "pro", "active").await;
    wait_until("the deprovision cancelled", secs(30), || async {
        let since: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
            "SELECT unwanted_since FROM public.user_fly_apps WHERE user_id = $1",
        )
        .bind(users[0])
        .fetch_one(pool)
        .await
        .map_err(|e| e.to_string())?;
        match since {
            None => Ok(()),
            Some(t) => Err(format!("unwanted since {t}")),
        }
    })
    .await;
    assert!(world.sim.snapshot().app(&name).is_some());
    assert!(
        !world.sim.calls().iter().any(|c| c.class == "apps.delete"),
        "no delete during the grace"
    );
    d.sigterm();
    assert!(d.wait_exit(secs(30)).await.expect("stops").success());

    // A short grace: the app goes, but not before the grace is over.
    let env = world.env.clone().with("DEPROVISION_GRACE", "4s");
    let _d = Daemon::spawn(&env, "grace-short");
    let t0 = std::time::Instant::now();
    set_subscription(pool, users[1], "pro", "cancelled").await;
    wait_converged_apps(&world, 2).await;
    let took = t0.elapsed();
    println!("deleted {took:.2?} after the downgrade (grace 4s)");
    assert!(
        took >= secs(4),
        "deleted before the grace was over: {took:?}"
    );
}

async fn wait_converged_apps(world: &World, apps: usize) {
    wait_until(&format!("converged with {apps} apps"), secs(90), || async {
        check_converged(world.pool(), &world.sim)
            .await
            .and_then(|s| {
                if s.apps == apps {
                    Ok(())
                } else {
                    Err(format!("{} apps", s.apps))
                }
            })
    })
    .await;
}

/// Invariant 9, seen from Fly: once converged, a pass costs the two list calls and nothing per app.
#[tokio::test]
async fn a_quiet_daemon_only_lists() {
    let world = World::start(SimConfig::default()).await;
    insert_users(world.pool(), 5, "pro").await;
    let _d = Daemon::spawn(&world.env, "quiet");
    wait_converged_apps(&world, 5).await;
    // Let the last in-flight pass finish: two changed-machine lists in a row with nothing between.
    wait_until("a quiet pass", secs(30), || async {
        let classes: Vec<String> = world.sim.calls().into_iter().map(|c| c.class).collect();
        let n = classes.len();
        if n >= 3 && classes[n - 3..] == ["orgs.machines", "orgs.machines", "orgs.machines"] {
            Ok(())
        } else {
            Err(format!("{:?}", &classes[n.saturating_sub(6)..]))
        }
    })
    .await;
    world.sim.clear_calls();
    let t0 = std::time::Instant::now();
    wait_until("five more passes", secs(30), || async {
        let n = world
            .sim
            .calls()
            .iter()
            .filter(|c| c.class == "orgs.machines")
            .count();
        if n >= 5 {
            Ok(())
        } else {
            Err(format!("{n} passes"))
        }
    })
    .await;
    let calls = world.sim.calls();
    let other: Vec<_> = calls
        .iter()
        .filter(|c| c.class != "apps.list" && c.class != "orgs.machines")
        .map(|c| format!("{} {}", c.method, c.path))
        .collect();
    println!(
        "{} calls in {:.1?} of quiet passes",
        calls.len(),
        t0.elapsed()
    );
    assert!(
        other.is_empty(),
        "a quiet pass made per-app calls: {other:?}"
    );
    // Between resyncs (10 min) a quiet pass reads only the changed machines.
    assert!(
        calls
            .iter()
            .all(|c| c.class == "orgs.machines" && c.path.contains("updated_after=")),
        "{calls:?}"
    );
}

/// Invariant 7: "Fly rate limits are respected with token buckets per action class". App creates are
/// limited per organisation (1/s, burst 3; `POST /v1/apps` names no app), so a fault-free daemon that
/// provisions a dozen users must pace its creates and never see a 429.
#[tokio::test]
async fn a_fault_free_run_stays_inside_flys_rate_limits() {
    let world = World::start(SimConfig::default()).await;
    let users = insert_users(world.pool(), 12, "pro").await;
    let _d = Daemon::spawn(&world.env, "rate");
    wait_converged_apps(&world, 12).await;
    let limited: Vec<String> = world
        .sim
        .calls()
        .into_iter()
        .filter(|c| c.status == Some(429))
        .map(|c| format!("{} {}", c.class, c.path))
        .collect();
    let failed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM public.user_fly_app_events WHERE event_type = 'provision_failed'",
    )
    .fetch_one(world.pool())
    .await
    .unwrap();
    assert!(
        limited.is_empty() && failed == 0,
        "{} answers 429 ({:?}...), {failed} provision_failed events for {} users",
        limited.len(),
        &limited[..limited.len().min(5)],
        users.len()
    );
}

/// Cutover gap: rows the old edge function recorded in its default org `personal` are skipped, and
/// both the dry run and `status` say how many, where, and what to set.
#[tokio::test]
async fn dry_run_and_status_say_how_many_rows_sit_in_another_org_and_what_to_set() {
    let world = World::start(SimConfig::default()).await;
    let pool = world.pool();
    let users = insert_users(pool, 3, "pro").await;
    for (i, u) in users.iter().enumerate() {
        let org = if i < 2 { "personal" } else { bin_support::ORG };
        sqlx::query(
            "INSERT INTO public.user_fly_apps (user_id, fly_app_name, fly_org_slug, status)
             VALUES ($1, $2, $3, 'active')",
        )
        .bind(u)
        .bind(format!("vyx-user-old{i}"))
        .bind(org)
        .execute(pool)
        .await
        .unwrap();
    }
    let expected = "2 row(s) are recorded in Fly org 'personal', not FLY_ORG_SLUG 'vyx-test'";
    let dry = run_to_completion(&world.env, &["reconcile", "--once", "--dry-run"], secs(60))
        .await
        .ok();
    assert!(dry.stdout.contains(expected), "{}", dry.stdout);
    assert!(
        dry.stdout.contains("FLY_ORG_SLUG=personal"),
        "{}",
        dry.stdout
    );
    let status = run_to_completion(&world.env, &["status"], secs(30))
        .await
        .ok();
    assert!(status.stdout.contains(expected), "{}", status.stdout);
    assert!(
        status.stdout.contains("SET fly_org_slug = 'vyx-test'"),
        "{}",
        status.stdout
    );
}

/// A halted rollout is shown by `status` (and under `rollout` in `--json`) until an operator runs
/// `rollout resume`, which exits 0 once and 1 when nothing is halted.
#[tokio::test]
async fn rollout_resume_clears_the_halt_that_status_reports() {
    let db = support::migrated_db().await;
    let env = BinEnv::full(&db.url, "http://127.0.0.1:1");
    let status = || async {
        let out = run_to_completion(&env, &["status", "--json"], secs(30))
            .await
            .ok();
        serde_json::from_str::<Value>(out.stdout.trim()).unwrap()
    };
    assert_eq!(status().await["rollout"], Value::Null);
    let out = run_to_completion(&env, &["rollout", "resume"], secs(30)).await;
    assert_eq!(out.code, Some(1), "nothing to resume: {out:?}");

    sqlx::query(
        "INSERT INTO vyx_fleet.rollout (target_digest, target_image, waves_done, moved, failed,
                rolled_back, halted, halt_kind, halt_reason, halted_at)
         VALUES ('d1g3st', 'registry.fly.io/vyx-screener:broken', 1, 1, 1, 1, true,
                 'canary_failed', 'the canary failed on the new spec', now())",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let doc = status().await;
    assert_eq!(doc["rollout"]["halted"], true, "{doc}");
    assert_eq!(doc["rollout"]["halt"]["kind"], "canary_failed");
    assert_eq!(
        doc["rollout"]["target"]["image"],
        "registry.fly.io/vyx-screener:broken"
    );
    assert_eq!(doc["rollout"]["progress"]["failed"], 1);
    let table = run_to_completion(&env, &["status"], secs(30)).await.ok();
    assert!(
        table.stdout.contains("ALERT rollout halted"),
        "{}",
        table.stdout
    );

    let out = run_to_completion(&env, &["rollout", "resume"], secs(30))
        .await
        .ok();
    assert!(out.stdout.contains("resumed"), "{out:?}");
    let doc = status().await;
    assert_eq!(doc["rollout"]["halted"], false, "{doc}");
    assert_eq!(doc["rollout"]["halt"], Value::Null);
    assert!(
        doc["rollout"]["resumed"]["by"]
            .as_str()
            .is_some_and(|b| b.starts_with("cli")),
        "{doc}"
    );
    let out = run_to_completion(&env, &["rollout", "resume"], secs(30)).await;
    assert_eq!(out.code, Some(1), "already resumed: {out:?}");
}
