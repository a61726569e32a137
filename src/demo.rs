//! `vyx-fleet demo`: the daemon's main job on embedded defaults. A throwaway PostgreSQL, the built-in
//! Fly simulator, seeded users, and a short story (upgrades, a downgrade, an admin pause during an
//! image rollout, a re-upgrade) narrated while the real controller converges it.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

use crate::config::Settings;
use crate::db;
use crate::fly::RateLimits;
use crate::liveness::Health;
use crate::metrics::Metrics;
use crate::pgtemp::{self, PgCluster};
use crate::reconcile::{Controller, LoopConfig};
use crate::sim::{Sim, SimConfig};
use crate::wiring;

const IMAGE_V1: &str = "registry.fly.io/vyx-screener:v1";
const IMAGE_V2: &str = "registry.fly.io/vyx-screener:v2";

struct User {
    name: &'static str,
    id: Uuid,
}

const fn user(name: &'static str, n: u128) -> User {
    User {
        name,
        id: Uuid::from_u128(0x5eed_0000_0000_4000_8000_0000_0000_0000 | n),
    }
}

const ANA: User = user("ana", 1);
const BEN: User = user("ben", 2);
const CY: User = user("cy", 3);
const DEE: User = user("dee", 4);
const ELI: User = user("eli", 5);

struct Demo {
    pool: sqlx::PgPool,
    sim: Sim,
    vars: HashMap<String, String>,
    deadline: Instant,
    controller: Option<(watch::Sender<bool>, JoinHandle<()>)>,
    /// Shared by every controller the story starts and the console's `/healthz` and `/metrics`, so
    /// they report the running controller (not a second, idle one).
    health: Health,
    metrics: Metrics,
}

fn say(line: impl AsRef<str>) {
    println!("▶ {}", line.as_ref());
}

pub async fn run(until_converged: bool, timeout: Duration) -> u8 {
    say("starting a throwaway PostgreSQL cluster");
    let cluster = match PgCluster::start().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("demo: {e}");
            return 1;
        }
    };
    let code = match story(&cluster, until_converged, timeout).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("demo: {e}");
            1
        }
    };
    cluster.stop().await;
    code
}

async fn story(
    cluster: &PgCluster,
    until_converged: bool,
    timeout: Duration,
) -> Result<(), String> {
    let url = cluster
        .create_database("vyx_demo")
        .await
        .map_err(|e| e.to_string())?;
    let pool = db::connect(&url, 8).await.map_err(|e| e.to_string())?;
    pgtemp::apply_supabase_shape(&pool)
        .await
        .map_err(|e| e.to_string())?;
    db::migrate(&pool).await.map_err(|e| e.to_string())?;
    say("starting the built-in Fly Machines API simulator");
    let sim = Sim::start(
        "127.0.0.1:0".parse().expect("literal address"),
        SimConfig::default(),
    )
    .await
    .map_err(|e| e.to_string())?;
    // The apps' own health endpoints: the simulator serves them, so the demo never leaves loopback.
    let health_url = format!("{}/_sim/apps/{{app}}/health", sim.base_url());
    let vars: HashMap<String, String> = [
        ("DATABASE_URL", url.as_str()),
        ("FLY_API_TOKEN", "demo-token"),
        ("FLY_ORG_SLUG", "vyx-test"),
        ("USER_APP_IMAGE", IMAGE_V1),
        ("FLY_API_BASE_URL", &sim.base_url()),
        ("HEALTH_URL_TEMPLATE", &health_url),
        ("RECONCILE_INTERVAL", "2s"),
        ("DEPROVISION_GRACE", "3s"),
        // Each wave soaks before the next; at the default (60s) the story's two rollouts would
        // spend two minutes watching healthy machines.
        ("ROLLOUT_SOAK", "3s"),
        ("SUPABASE_URL", "https://demo.supabase.co"),
        ("SUPABASE_SERVICE_ROLE_KEY", "demo-service-key"),
        ("HTTP_ADDR", "127.0.0.1:0"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut demo = Demo {
        pool,
        sim,
        vars,
        deadline: Instant::now() + timeout,
        controller: None,
        health: Health::new(Duration::from_secs(60)),
        metrics: Metrics::new(),
    };
    let r = demo.play().await;
    demo.stop_controller().await;
    r?;
    say("story converged");
    print_status(&demo.pool).await;
    if !until_converged {
        demo.start_controller(IMAGE_V2)?;
        let console = demo.serve_console().await?;
        say("the controller keeps running; Ctrl-C to stop");
        let _ = tokio::signal::ctrl_c().await;
        console.abort();
        demo.stop_controller().await;
    }
    Ok(())
}

impl Demo {
    async fn play(&mut self) -> Result<(), String> {
        say(
            "seeding users: ana (pro), ben (elite), dee (pro, past_due), cy (free), eli (pro, cancelled)",
        );
        for (u, tier, status) in [
            (&ANA, "pro", "active"),
            (&BEN, "elite", "active"),
            (&CY, "free", "active"),
            (&DEE, "pro", "past_due"),
            (&ELI, "pro", "cancelled"),
        ] {
            self.seed_user(u, tier, status).await?;
        }
        self.start_controller(IMAGE_V1)?;
        say("1. the three paying users get their own app");
        self.wait_active(&[&ANA, &BEN, &DEE], IMAGE_V1).await?;

        say("2. cy upgrades to elite");
        self.set_tier(&CY, "elite", "active").await?;
        self.wait_active(&[&CY], IMAGE_V1).await?;

        say("3. ben downgrades to free: his app goes after the grace; his row is soft-deleted");
        self.set_tier(&BEN, "free", "active").await?;
        self.wait_deleted(&BEN).await?;

        say("4. an admin pauses ana, then a new image is released: everyone but ana rolls to v2");
        self.set_override(&ANA, Some("paused")).await?;
        self.stop_controller().await;
        self.start_controller(IMAGE_V2)?;
        self.wait_active(&[&CY, &DEE], IMAGE_V2).await?;
        self.wait_image_in_fly(&ANA, IMAGE_V1).await?;

        say("5. ben upgrades again: same row, same app name");
        let before = self.row_name(&BEN).await?;
        self.set_tier(&BEN, "pro", "active").await?;
        self.wait_active(&[&BEN], IMAGE_V2).await?;
        let after = self.row_name(&BEN).await?;
        if before != after {
            return Err(format!(
                "ben's app name changed from {before:?} to {after:?}"
            ));
        }
        say(format!("   ben is back on {}", after.unwrap_or_default()));

        say("6. the admin lifts ana's pause: she rolls to v2 too");
        self.set_override(&ANA, None).await?;
        self.wait_active(&[&ANA], IMAGE_V2).await?;
        say(format!(
            "   eli (cancelled) never got an app: {}",
            self.row_name(&ELI).await?.is_none()
        ));
        Ok(())
    }

    /// The admin console on `127.0.0.1:9090` (another free port if that one is taken), with a
    /// demo admin whose token is printed here, so the story can be steered from a browser afterwards.
    async fn serve_console(&self) -> Result<JoinHandle<std::io::Result<()>>, String> {
        let mut vars = self.vars.clone();
        vars.insert("USER_APP_IMAGE".into(), IMAGE_V2.into());
        let s = Settings::from_map(&vars, None).map_err(|e| e.to_string())?;
        let token = match crate::db::admins::add(&self.pool, "demo", "demo")
            .await
            .map_err(|e| e.to_string())?
        {
            crate::db::admins::Added::Token(t) => t,
            crate::db::admins::Added::Exists => return Err("demo admin exists already".into()),
        };
        let console = crate::admin::ConsoleState::new(
            self.pool.clone(),
            crate::admin::ConsoleConfig::from_settings(&s),
        );
        let state = crate::http::HttpState::new(self.health.clone(), self.metrics.clone())
            .with_console(console);
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:9090").await {
            Ok(l) => l,
            Err(_) => tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| e.to_string())?,
        };
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        say(format!(
            "admin console: http://{addr}/  (sign in as the admin \"demo\" with the token {token})"
        ));
        Ok(tokio::spawn(crate::http::serve_listener(
            listener,
            state,
            std::future::pending(),
        )))
    }

    fn start_controller(&mut self, image: &str) -> Result<(), String> {
        let mut vars = self.vars.clone();
        vars.insert("USER_APP_IMAGE".into(), image.into());
        let s = Settings::from_map(&vars, None).map_err(|e| e.to_string())?;
        let fly = wiring::fly_client(&s, RateLimits::with_margin()).map_err(|e| e.to_string())?;
        let controller = Controller {
            base: wiring::ctx(&s, self.pool.clone(), fly),
            pass: wiring::pass_config(&s),
            loop_cfg: LoopConfig {
                interval: s.reconcile_interval,
                ..LoopConfig::default()
            },
            metrics: self.metrics.clone(),
            health: self.health.clone(),
            holder: wiring::holder_id(),
        };
        let (tx, rx) = watch::channel(false);
        let handle = tokio::spawn(async move { controller.run(rx).await });
        self.controller = Some((tx, handle));
        Ok(())
    }

    async fn stop_controller(&mut self) {
        if let Some((tx, handle)) = self.controller.take() {
            let _ = tx.send(true);
            let _ = handle.await;
        }
    }

    async fn seed_user(&self, u: &User, tier: &str, status: &str) -> Result<(), String> {
        sqlx::query("INSERT INTO auth.users (id, email) VALUES ($1, $2)")
            .bind(u.id)
            .bind(format!("{}@example.com", u.name))
            .execute(&self.pool)
            .await
            .map_err(|e| e.to_string())?;
        sqlx::query(
            "INSERT INTO public.user_profiles (id, email, display_name) VALUES ($1, $2, $3)",
        )
        .bind(u.id)
        .bind(format!("{}@example.com", u.name))
        .bind(u.name)
        .execute(&self.pool)
        .await
        .map_err(|e| e.to_string())?;
        self.set_tier(u, tier, status).await
    }

    async fn set_tier(&self, u: &User, tier: &str, status: &str) -> Result<(), String> {
        sqlx::query(
            "INSERT INTO public.user_subscriptions (user_id, tier, status) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO UPDATE SET tier = EXCLUDED.tier, status = EXCLUDED.status",
        )
        .bind(u.id)
        .bind(tier)
        .bind(status)
        .execute(&self.pool)
        .await
        .map_err(|e| e.to_string())?;
        Ok(())
    }

    async fn set_override(&self, u: &User, desired: Option<&str>) -> Result<(), String> {
        let q = match desired {
            Some(d) => sqlx::query(
                "INSERT INTO vyx_fleet.user_fly_app_overrides (user_id, desired, reason, created_by) \
                 VALUES ($1, $2, 'demo', 'demo-admin') \
                 ON CONFLICT (user_id) DO UPDATE SET desired = EXCLUDED.desired",
            )
            .bind(u.id)
            .bind(d),
            None => sqlx::query("DELETE FROM vyx_fleet.user_fly_app_overrides WHERE user_id = $1")
                .bind(u.id),
        };
        q.execute(&self.pool).await.map_err(|e| e.to_string())?;
        Ok(())
    }

    async fn row_name(&self, u: &User) -> Result<Option<String>, String> {
        sqlx::query_scalar("SELECT fly_app_name FROM public.user_fly_apps WHERE user_id = $1")
            .bind(u.id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| e.to_string())
    }

    async fn wait_active(&self, users: &[&User], image: &str) -> Result<(), String> {
        for u in users {
            self.wait(&format!("{} active on {image}", u.name), || async {
                let row: Option<(String, Option<String>, Option<String>)> = sqlx::query_as(
                    "SELECT status, docker_image, fly_app_name FROM public.user_fly_apps \
                     WHERE user_id = $1 AND deleted_at IS NULL",
                )
                .bind(u.id)
                .fetch_optional(&self.pool)
                .await
                .ok()
                .flatten();
                matches!(row, Some((s, Some(i), _)) if s == "active" && i == image)
            })
            .await?;
            say(format!(
                "   {} is active on {image} ({})",
                u.name,
                self.row_name(u).await?.unwrap_or_default()
            ));
        }
        Ok(())
    }

    async fn wait_deleted(&self, u: &User) -> Result<(), String> {
        let name = self.row_name(u).await?.unwrap_or_default();
        self.wait(&format!("{} deprovisioned", u.name), || async {
            let gone = !self.sim.snapshot().apps.iter().any(|a| a.name == name);
            let deleted: Option<(String,)> = sqlx::query_as(
                "SELECT status FROM public.user_fly_apps WHERE user_id = $1 AND deleted_at IS NOT NULL",
            )
            .bind(u.id)
            .fetch_optional(&self.pool)
            .await
            .ok()
            .flatten();
            gone && matches!(deleted, Some((s,)) if s == "deleted")
        })
        .await?;
        say(format!(
            "   {name} deleted in Fly; row kept as status=deleted"
        ));
        Ok(())
    }

    async fn wait_image_in_fly(&self, u: &User, image: &str) -> Result<(), String> {
        let name = self.row_name(u).await?.unwrap_or_default();
        let snap = self.sim.snapshot();
        let runs = snap
            .apps
            .iter()
            .filter(|a| a.name == name)
            .flat_map(|a| &a.machines)
            .any(|m| m.config.get("image").and_then(|v| v.as_str()) == Some(image));
        if runs {
            say(format!(
                "   {} (paused) still runs {image}, untouched",
                u.name
            ));
            Ok(())
        } else {
            Err(format!("{} should still run {image} while paused", u.name))
        }
    }

    async fn wait<F, Fut>(&self, what: &str, mut check: F) -> Result<(), String>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        loop {
            if check().await {
                return Ok(());
            }
            if Instant::now() >= self.deadline {
                return Err(format!("timed out waiting for: {what}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn print_status(pool: &sqlx::PgPool) {
    match crate::fleet_status::table(pool).await {
        Ok(table) => print!("{table}"),
        Err(e) => eprintln!("status: {e}"),
    }
}
