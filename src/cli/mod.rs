//! The commands behind `main.rs`. Each returns the process exit code: 0 success, 1 runtime failure,
//! 2 bad settings (one line naming the key).

mod admin;
mod orgs;
mod rollout;
mod status;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::config::{self, Settings};
use crate::db;
use crate::fly::RateLimits;
use crate::http::{self, HttpState};
use crate::liveness::Health;
use crate::metrics::Metrics;
use crate::reconcile::{Controller, LoopConfig, RenewConfig, plan_pass, run_once};
use crate::{telemetry, wiring};

pub use admin::{
    ConfirmArgs, add as admin_add, confirm as confirm_deletions, list as admin_list,
    revoke as admin_revoke,
};
pub use rollout::resume as rollout_resume;
pub use status::status;

const EXIT_FAILURE: u8 = 1;
const EXIT_CONFIG: u8 = 2;

fn load(cfg: Option<&Path>) -> Result<Settings, u8> {
    Settings::load(cfg).map_err(|e| {
        eprintln!("{e}");
        EXIT_CONFIG
    })
}

async fn connect(s: &Settings) -> Result<sqlx::PgPool, u8> {
    db::connect_db(&s.database(), crate::wiring::pool_size(s))
        .await
        .map_err(|e| {
            error!(error = %e, "cannot connect to the database");
            EXIT_FAILURE
        })
}

pub async fn run(cfg: Option<&Path>) -> u8 {
    let s = match load(cfg) {
        Ok(s) => s,
        Err(c) => return c,
    };
    telemetry::init(s.log_format);
    if let Err(e) = crate::failpoint::arm_from_env() {
        eprintln!("{e}");
        return EXIT_CONFIG;
    }
    for w in s.warnings() {
        warn!("{w}");
    }
    let pool = match connect(&s).await {
        Ok(p) => p,
        Err(c) => return c,
    };
    if let Err(e) = db::migrate(&pool).await {
        error!(error = %e, "migrations failed");
        return EXIT_FAILURE;
    }
    let holder = wiring::holder_id();
    let fly = match wiring::fly_client_for(&s, RateLimits::with_margin(), &holder) {
        Ok(f) => f,
        Err(e) => {
            error!(error = %e, "cannot build the Fly client");
            return EXIT_FAILURE;
        }
    };
    let metrics = Metrics::new();
    let health = Health::new(s.heartbeat_staleness());
    let (stop_tx, stop_rx) = watch::channel(false);
    let console = crate::admin::ConsoleState::new(
        pool.clone(),
        crate::admin::ConsoleConfig::from_settings(&s),
    );
    let http_state = HttpState::new(health.clone(), metrics.clone()).with_console(console);
    // Alerts run on every replica, off the pass's path (the standby notices a silent leader).
    let alerts_task = tokio::spawn(crate::alerts::run(
        pool.clone(),
        crate::alerts::AlertConfig::from_settings(&s),
        stop_rx.clone(),
    ));
    // The console's charts: every replica samples (the minute is the key: one row between them).
    let sampler_task = tokio::spawn(crate::admin::run_sampler(
        pool.clone(),
        s.paid_tiers.clone(),
        s.paid_statuses.clone(),
        stop_rx.clone(),
    ));
    let mut http_stop = stop_rx.clone();
    let http_addr = s.http_addr;
    // A port clash must not stop the controller: it keeps reconciling, loudly without endpoints.
    let http_task = tokio::spawn(async move {
        let served = http::serve(http_addr, http_state, async move {
            let _ = http_stop.wait_for(|v| *v).await;
        })
        .await;
        if let Err(e) = &served {
            error!(addr = %http_addr, error = %e, "HTTP endpoints unavailable (/healthz, /readyz, /metrics)");
        }
        served
    });
    let controller = Controller {
        base: wiring::ctx(&s, pool.clone(), fly),
        pass: wiring::pass_config(&s),
        loop_cfg: LoopConfig {
            interval: s.reconcile_interval,
            ..LoopConfig::default()
        },
        metrics,
        health,
        holder,
    };
    info!(holder = %controller.holder, org = %s.fly_org_slug, "vyx-fleet starting");
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("signal received; shutting down");
        let _ = stop_tx.send(true);
    });
    controller.run(stop_rx).await;
    let _ = alerts_task.await;
    let _ = sampler_task.await;
    match http_task.await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => {}
        Err(e) => warn!(error = %e, "http server task failed"),
    }
    info!("vyx-fleet stopped");
    0
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

pub async fn reconcile(cfg: Option<&Path>, once: bool, dry_run: bool) -> u8 {
    if !once {
        eprintln!("reconcile: pass --once for a single pass (the loop is `vyx-fleet run`)");
        return EXIT_CONFIG;
    }
    let s = match load(cfg) {
        Ok(s) => s,
        Err(c) => return c,
    };
    telemetry::init(s.log_format);
    if let Err(e) = crate::failpoint::arm_from_env() {
        eprintln!("{e}");
        return EXIT_CONFIG;
    }
    let pool = match connect(&s).await {
        Ok(p) => p,
        Err(c) => return c,
    };
    let fly = match wiring::fly_client(&s, RateLimits::with_margin()) {
        Ok(f) => f,
        Err(e) => {
            error!(error = %e, "cannot build the Fly client");
            return EXIT_FAILURE;
        }
    };
    let ctx = wiring::ctx(&s, pool.clone(), fly);
    let pass_cfg = wiring::pass_config(&s);
    if dry_run {
        // Reads only: no lease, no migration, no Fly writes.
        return match plan_pass(&ctx, &pass_cfg).await {
            Ok(plan) => {
                print!("{}", status::render_plan(&plan, &s.fly_org_slug));
                0
            }
            Err(e) => {
                error!(error = %e, "dry run failed");
                EXIT_FAILURE
            }
        };
    }
    if let Err(e) = db::migrate(&pool).await {
        error!(error = %e, "migrations failed");
        return EXIT_FAILURE;
    }
    // A short lease kept alive while the pass runs: if this command is killed, the daemons take
    // over within a minute instead of waiting out a long lease.
    let renew = RenewConfig {
        ttl: Duration::from_secs(60),
        renew_every: Duration::from_secs(15),
        act_margin: Duration::from_secs(40),
    };
    let result = run_once(
        &ctx,
        &pass_cfg,
        &Metrics::new(),
        &wiring::holder_id(),
        renew,
    )
    .await;
    match result {
        Ok(report) => {
            print!("{}", status::render_plan(&report.plan, &s.fly_org_slug));
            println!(
                "pass done: {} actions, {} not finished (retried later)",
                report.outcomes.len(),
                report.failed()
            );
            0
        }
        Err(e) => {
            error!(error = %e, "reconcile --once");
            EXIT_FAILURE
        }
    }
}

pub async fn migrate(cfg: Option<&Path>) -> u8 {
    let database = match config::load_database(cfg) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("{e}");
            return EXIT_CONFIG;
        }
    };
    telemetry::init(config::LogFormat::from_env());
    let pool = match db::connect_db(&database, 2).await {
        Ok(p) => p,
        Err(e) => {
            error!(error = %e, "cannot connect to the database");
            return EXIT_FAILURE;
        }
    };
    match db::migrate(&pool).await {
        Ok(()) => {
            info!("migrations applied");
            println!("migrations applied");
            0
        }
        Err(e) => {
            error!(error = %e, "migrations failed");
            EXIT_FAILURE
        }
    }
}

pub async fn demo(until_converged: bool, timeout: &str) -> u8 {
    let timeout = match config::parse_duration(timeout) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("--timeout: {e}");
            return EXIT_CONFIG;
        }
    };
    telemetry::init(config::LogFormat::from_env_or(config::LogFormat::Pretty));
    crate::demo::run(until_converged, timeout).await
}

pub async fn sim(listen: SocketAddr, org: String, seed: u64) -> u8 {
    telemetry::init(config::LogFormat::from_env());
    let cfg = crate::sim::SimConfig {
        orgs: vec![crate::sim::OrgConfig {
            slug: org.clone(),
            name: org.clone(),
        }],
        any_token_org: Some(org.clone()),
        seed,
        ..crate::sim::SimConfig::default()
    };
    println!("Fly Machines API simulator on http://{listen} (org {org}; any non-empty token)");
    match crate::sim::run_cli(listen, cfg).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("simulator: {e}");
            EXIT_FAILURE
        }
    }
}
