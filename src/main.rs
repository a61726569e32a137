//! `vyx-fleet`: the command line. Everything it runs lives in the library; this file only parses
//! arguments, loads settings (exit 2 on a bad one) and maps results to exit codes.

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use vyx_fleet::cli;

#[derive(Parser)]
#[command(
    name = "vyx-fleet",
    version,
    about = "Keeps one Fly.io app per paying Vyx user"
)]
struct Cli {
    /// Optional TOML file with the same keys as the environment variables (env wins).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The daemon: lead or stand by, reconcile every RECONCILE_INTERVAL and on NOTIFY.
    Run,
    /// One reconcile pass.
    Reconcile {
        /// Run exactly one pass and exit (required: the loop is `run`).
        #[arg(long)]
        once: bool,
        /// Print the plan; change nothing on Fly or in the database.
        #[arg(long)]
        dry_run: bool,
    },
    /// Apply the database migrations and exit.
    Migrate,
    /// Every managed app with its status, health, image and cost; totals.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Progressive delivery of machine-spec changes.
    Rollout {
        #[command(subcommand)]
        command: RolloutCommand,
    },
    /// Allow the deletions the blast-radius breaker is holding back: prints exactly what it confirms
    /// and confirms only that.
    ConfirmDeletions {
        /// Print the held set and its version; confirm nothing.
        #[arg(long)]
        list: bool,
        /// Confirm only these held apps (comma-separated).
        #[arg(long, value_delimiter = ',', value_name = "APP,...")]
        apps: Vec<String>,
        /// Confirm only if the held set is still this version (as `--list` printed it).
        #[arg(long, value_name = "VERSION")]
        expect: Option<String>,
    },
    /// The console's admins, each signed in under their own name.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// The main job on embedded defaults: a throwaway PostgreSQL, the built-in Fly simulator, and
    /// seeded users whose tiers change while you watch.
    Demo {
        /// Exit 0 once the story has converged (non-zero if it has not within --timeout).
        #[arg(long)]
        until_converged: bool,
        /// Give up after this long with --until-converged (e.g. 180s, 5m).
        #[arg(long, default_value = "180s")]
        timeout: String,
    },
    /// The Fly Machines API simulator on its own.
    Sim {
        /// Address to listen on, e.g. 127.0.0.1:4280.
        #[arg(long, default_value = "127.0.0.1:4280")]
        listen: SocketAddr,
        /// The organisation the simulator's tokens belong to.
        #[arg(long, default_value = "vyx-test")]
        org: String,
        /// Seed for fault injection and generated ids.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Add an admin and print their console token once (only its hash is stored).
    Add { name: String },
    /// Revoke an admin: their token stops working and their sessions end.
    Revoke { name: String },
    /// Every admin, active or revoked, with their last sign-in.
    List,
}

#[derive(Subcommand)]
enum RolloutCommand {
    /// Clear the current rollout's halt (after checking why it halted): the next pass continues
    /// with a new canary, forgiving the failures so far. Exit 1 when nothing is halted.
    Resume,
}

fn main() -> ExitCode {
    let args = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let cfg = args.config.as_deref();
    let code = rt.block_on(async {
        match args.command {
            Command::Run => cli::run(cfg).await,
            Command::Reconcile { once, dry_run } => cli::reconcile(cfg, once, dry_run).await,
            Command::Migrate => cli::migrate(cfg).await,
            Command::Status { json } => cli::status(cfg, json).await,
            Command::ConfirmDeletions { list, apps, expect } => {
                let args = cli::ConfirmArgs { list, apps, expect };
                cli::confirm_deletions(cfg, args).await
            }
            Command::Admin { command } => match command {
                AdminCommand::Add { name } => cli::admin_add(cfg, &name).await,
                AdminCommand::Revoke { name } => cli::admin_revoke(cfg, &name).await,
                AdminCommand::List => cli::admin_list(cfg).await,
            },
            Command::Rollout {
                command: RolloutCommand::Resume,
            } => cli::rollout_resume(cfg).await,
            Command::Demo {
                until_converged,
                timeout,
            } => cli::demo(until_converged, &timeout).await,
            Command::Sim { listen, org, seed } => cli::sim(listen, org, seed).await,
        }
    });
    ExitCode::from(code)
}
