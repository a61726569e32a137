//! Shared harness for the integration tests: one throwaway PostgreSQL cluster per test binary, one fresh
//! database per test.
//!
//! ```ignore
//! mod support;
//! use support::{migrated_db, UserFixture};
//!
//! #[tokio::test]
//! async fn a_pro_user_is_wanted() {
//!     let db = migrated_db().await;
//!     let user = UserFixture::paid("pro").insert(&db.pool).await;
//!     // ... exercise the code under test with db.pool / db.url ...
//! }
//! ```
//!
//! Each `#[tokio::test]` runs on its own runtime, so only the cluster (paths and a port, no sockets) is
//! shared; every pool belongs to the test that made it. Databases are copied from templates prepared once
//! per binary, which is much cheaper than re-running the schema setup for every test.
//!
//! The cluster outlives the statics (which are never dropped): a watchdog process removes it when the
//! test binary exits.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::PgPool;
use tokio::sync::OnceCell;
use uuid::Uuid;
use vyx_fleet::pgtemp::PgCluster;

pub const LEGACY_VYX_SQL: &str = include_str!("../fixtures/legacy_vyx.sql");

/// A database of its own for one test.
pub struct TestDb {
    pub pool: PgPool,
    pub url: String,
    pub name: String,
}

/// The test binary's cluster, started on first use.
pub async fn cluster() -> &'static PgCluster {
    static CLUSTER: OnceCell<PgCluster> = OnceCell::const_new();
    CLUSTER
        .get_or_init(|| async {
            PgCluster::start()
                .await
                .unwrap_or_else(|e| panic!("cannot start the test PostgreSQL cluster: {e}"))
        })
        .await
}

/// A new database with the Supabase shape (auth.users, user_subscriptions, user_profiles, API roles);
/// vyx-fleet's migrations NOT applied.
pub async fn fresh_db() -> TestDb {
    db_from(Template::Supabase).await
}

/// [`fresh_db`] with vyx-fleet's migrations applied.
pub async fn migrated_db() -> TestDb {
    db_from(Template::Migrated).await
}

/// [`fresh_db`] plus Vyx's pre-existing tables, rows and `on_user_tier_change` trigger
/// (`tests/fixtures/legacy_vyx.sql`); vyx-fleet's migrations NOT applied.
pub async fn legacy_vyx_db() -> TestDb {
    db_from(Template::LegacyVyx).await
}

/// The prepared databases tests are copied from, each built on first use.
#[derive(Clone, Copy)]
enum Template {
    Supabase,
    Migrated,
    LegacyVyx,
}

impl Template {
    async fn get(self) -> &'static str {
        static BUILT: [OnceCell<&'static str>; 3] = [
            OnceCell::const_new(),
            OnceCell::const_new(),
            OnceCell::const_new(),
        ];
        BUILT[self as usize].get_or_init(|| self.build()).await
    }

    async fn build(self) -> &'static str {
        let name = match self {
            Template::Supabase => "tpl_supabase",
            Template::Migrated => "tpl_migrated",
            Template::LegacyVyx => "tpl_legacy",
        };
        let url = cluster()
            .await
            .create_database(name)
            .await
            .unwrap_or_else(|e| panic!("create template {name}: {e}"));
        let pool = PgPool::connect(&url).await.expect("connect to template");
        vyx_fleet::pgtemp::apply_supabase_shape(&pool)
            .await
            .expect("supabase shape");
        match self {
            Template::Supabase => {}
            Template::Migrated => vyx_fleet::db::migrate(&pool).await.expect("migrations"),
            Template::LegacyVyx => {
                sqlx::raw_sql(LEGACY_VYX_SQL)
                    .execute(&pool)
                    .await
                    .expect("legacy fixture");
            }
        }
        // CREATE DATABASE ... TEMPLATE refuses while anyone is connected to the template.
        pool.close().await;
        name
    }
}

async fn db_from(template: Template) -> TestDb {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let template = template.get().await;
    let cluster = cluster().await;
    let name = format!("t{}", SEQ.fetch_add(1, Ordering::Relaxed));
    let url = cluster
        .create_database_from(&name, template)
        .await
        .unwrap_or_else(|e| panic!("create test database {name}: {e}"));
    let pool = vyx_fleet::db::connect(&url, 5)
        .await
        .unwrap_or_else(|e| panic!("connect to {name}: {e}"));
    TestDb { pool, url, name }
}

/// A Vyx user: an `auth.users` row, a profile, optionally a subscription and an admin override.
///
/// ```ignore
/// let id = UserFixture::paid("pro").with_status("past_due").insert(&db.pool).await;
/// let frozen = UserFixture::paid("elite").with_override("paused").insert(&db.pool).await;
/// ```
#[derive(Debug, Clone)]
pub struct UserFixture {
    pub id: Uuid,
    pub email: String,
    /// `None`: no `user_subscriptions` row (the user is free).
    pub tier: Option<String>,
    pub status: String,
    pub is_admin: bool,
    /// `present`, `absent` or `paused` (needs the migrations: the overrides table is ours).
    pub override_desired: Option<String>,
}

impl UserFixture {
    /// A subscriber on `tier` (`pro`, `elite`, or `free`), status `active`.
    pub fn paid(tier: &str) -> Self {
        let id = Uuid::new_v4();
        UserFixture {
            id,
            email: format!("{}@example.test", id.simple()),
            tier: Some(tier.to_string()),
            status: "active".to_string(),
            is_admin: false,
            override_desired: None,
        }
    }

    /// A user with a `free` subscription row.
    pub fn free() -> Self {
        Self::paid("free")
    }

    /// A user with no subscription row at all (also free).
    pub fn without_subscription() -> Self {
        UserFixture {
            tier: None,
            ..Self::paid("free")
        }
    }

    pub fn with_status(mut self, status: &str) -> Self {
        self.status = status.to_string();
        self
    }

    pub fn with_override(mut self, desired: &str) -> Self {
        self.override_desired = Some(desired.to_string());
        self
    }

    pub fn with_id(mut self, id: Uuid) -> Self {
        self.id = id;
        self
    }

    pub fn admin(mut self) -> Self {
        self.is_admin = true;
        self
    }

    /// Inserts the user (one transaction) and returns its id.
    pub async fn insert(&self, pool: &PgPool) -> Uuid {
        let mut tx = vyx_fleet::db::begin(pool).await.expect("begin");
        sqlx::query("INSERT INTO auth.users (id, email) VALUES ($1, $2)")
            .bind(self.id)
            .bind(&self.email)
            .execute(&mut *tx)
            .await
            .expect("insert auth.users");
        sqlx::query(
            "INSERT INTO public.user_profiles (id, email, display_name, is_admin)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(self.id)
        .bind(&self.email)
        .bind(format!("user {}", &self.id.simple().to_string()[..8]))
        .bind(self.is_admin)
        .execute(&mut *tx)
        .await
        .expect("insert user_profiles");
        if let Some(tier) = &self.tier {
            sqlx::query(
                "INSERT INTO public.user_subscriptions (user_id, tier, status) VALUES ($1, $2, $3)",
            )
            .bind(self.id)
            .bind(tier)
            .bind(&self.status)
            .execute(&mut *tx)
            .await
            .expect("insert user_subscriptions");
        }
        if let Some(desired) = &self.override_desired {
            sqlx::query(
                "INSERT INTO vyx_fleet.user_fly_app_overrides (user_id, desired, reason, created_by)
                 VALUES ($1, $2, 'test fixture', 'tests')",
            )
            .bind(self.id)
            .bind(desired)
            .execute(&mut *tx)
            .await
            .expect("insert user_fly_app_overrides (are the migrations applied?)");
        }
        tx.commit().await.expect("commit");
        self.id
    }
}

/// Sets (inserting if missing) a user's subscription, as a billing webhook would.
pub async fn set_subscription(pool: &PgPool, user_id: Uuid, tier: &str, status: &str) {
    sqlx::query(
        "INSERT INTO public.user_subscriptions (user_id, tier, status) VALUES ($1, $2, $3)
         ON CONFLICT (user_id) DO UPDATE
            SET tier = EXCLUDED.tier, status = EXCLUDED.status, updated_at = now()",
    )
    .bind(user_id)
    .bind(tier)
    .bind(status)
    .execute(pool)
    .await
    .expect("set subscription");
}

/// What a user's app must carry beyond its machine (DESIGN §3): the public IPs that make
/// `<app>.fly.dev` serve (`v6` + `shared_v4`), exactly the expected secrets with the expected
/// values, and every live machine booted with the app's latest secrets version (secrets only reach
/// a machine when it boots, REFERENCE §4.3). `expected_secrets` maps name → value. Returns one line
/// per problem.
pub fn serving_problems(
    app: &vyx_fleet::sim::AppSnapshot,
    expected_secrets: &std::collections::BTreeMap<String, String>,
) -> Vec<String> {
    use sha2::{Digest, Sha256};
    let mut problems = Vec::new();
    for kind in ["v6", "shared_v4"] {
        if !app.ips.iter().any(|ip| ip.kind == kind) {
            let have: Vec<&str> = app.ips.iter().map(|ip| ip.kind.as_str()).collect();
            problems.push(format!("app {}: no {kind} IP (has {have:?})", app.name));
        }
    }
    let have: std::collections::BTreeMap<&str, &str> = app
        .secrets
        .iter()
        .map(|s| (s.name.as_str(), s.value_sha256.as_str()))
        .collect();
    let want: std::collections::BTreeMap<&str, String> = expected_secrets
        .iter()
        .map(|(k, v)| {
            let d = Sha256::digest(v.as_bytes());
            let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
            (k.as_str(), hex)
        })
        .collect();
    let have_names: Vec<&str> = have.keys().copied().collect();
    let want_names: Vec<&str> = want.keys().copied().collect();
    if have_names != want_names {
        problems.push(format!(
            "app {}: secrets {have_names:?}, expected {want_names:?}",
            app.name
        ));
    } else {
        for (name, digest) in &want {
            if have.get(name).copied() != Some(digest.as_str()) {
                problems.push(format!("app {}: secret {name} has a stale value", app.name));
            }
        }
    }
    for m in app.machines_on_stale_secrets() {
        problems.push(format!(
            "app {}: machine {} ({}) booted with secrets version {:?}, the app is at {}",
            app.name, m.id, m.state, m.secrets_version, app.secrets_version
        ));
    }
    problems
}
