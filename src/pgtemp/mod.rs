//! A throwaway PostgreSQL cluster on loopback, for `vyx-fleet demo` and the integration tests.
//!
//! Uses the system's `initdb` and `pg_ctl` (nothing is downloaded). Both refuse to run as root, so when we
//! are root they run as the `postgres` system user through `runuser`, with the cluster's directory owned by
//! that user. The cluster trades durability for speed (`fsync=off`, trust authentication on loopback):
//! never point it at data you want to keep.
//!
//! A cluster is removed by [`PgCluster::stop`], on drop, and (by default) by a watchdog process that
//! outlives us: statics are never dropped, so a test binary's shared cluster would otherwise be left
//! running when the binary exits.

mod host;
mod server;
mod watchdog;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use sqlx::{Connection, Executor, PgConnection, PgPool};

use host::{default_parent_dir, find_bin_dir, is_root, postgres_ids, runuser};
use server::{initdb_args, stop_and_remove};

/// The Supabase/Vyx tables vyx-fleet reads (`auth.users`, `user_subscriptions`, `user_profiles`) and
/// Supabase's API roles. Test and demo only.
const SUPABASE_SHAPE: &str = include_str!("../db/supabase_shape.sql");

#[derive(Debug, thiserror::Error)]
pub enum PgTempError {
    /// `initdb`/`pg_ctl` are not installed. Install PostgreSQL; retrying will not help.
    #[error(
        "PostgreSQL server binaries not found (initdb, pg_ctl): install postgresql (apt-get install -y postgresql), \
         or set VYX_PG_BIN to the directory holding them"
    )]
    BinariesNotFound,

    /// We run as root and there is no `postgres` user (or no `runuser`) to run the server as.
    #[error("running as root: {0}")]
    Root(String),

    /// A filesystem step (creating or handing over the cluster directory) failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    /// `initdb` or `pg_ctl` exited with an error; the message holds its output and the server log tail.
    #[error("{command} failed: {output}")]
    Command { command: String, output: String },

    /// A database name with characters other than `[a-z0-9_]`.
    #[error("invalid database name {0:?}: use [a-z0-9_], at most 63 characters")]
    InvalidName(String),

    /// Talking to the cluster failed.
    #[error("throwaway cluster: {0}")]
    Sql(#[from] sqlx::Error),
}

/// Start-up options.
#[derive(Debug, Clone)]
pub struct PgTempOptions {
    /// Spawn a detached watchdog that stops the cluster and removes its directory once this process is
    /// gone, however it ends. Default `true`.
    pub watchdog: bool,
    /// Where the cluster directory is created. Default: `$VYX_PGTEMP_DIR`, else `/dev/shm` when it has
    /// room (files there are several times faster to create than on disk), else the system temp dir.
    pub parent_dir: Option<PathBuf>,
}

impl Default for PgTempOptions {
    fn default() -> Self {
        PgTempOptions {
            watchdog: true,
            parent_dir: None,
        }
    }
}

/// A running throwaway cluster. Superuser `postgres`, trust authentication, loopback only.
#[derive(Debug)]
pub struct PgCluster {
    port: u16,
    /// Everything lives under here: `data/`, `sock/`, `server.log`.
    base_dir: PathBuf,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    bin_dir: PathBuf,
    /// We are root: the server binaries run as `postgres` through `runuser`.
    run_as_postgres: bool,
    watchdog: Mutex<Option<Child>>,
    stopped: AtomicBool,
}

impl PgCluster {
    /// Starts a cluster with the default options (watchdog on).
    pub async fn start() -> Result<PgCluster, PgTempError> {
        Self::start_with(PgTempOptions::default()).await
    }

    /// Starts a cluster: a free loopback port, a data directory (a copy of a cached `initdb` result, or a
    /// fresh `initdb`), `pg_ctl start`.
    pub async fn start_with(opts: PgTempOptions) -> Result<PgCluster, PgTempError> {
        tokio::task::spawn_blocking(move || Self::start_blocking(&opts))
            .await
            .map_err(|e| PgTempError::Io {
                what: "starting the cluster".into(),
                source: std::io::Error::other(e.to_string()),
            })?
    }

    fn start_blocking(opts: &PgTempOptions) -> Result<PgCluster, PgTempError> {
        let bin_dir = find_bin_dir().ok_or(PgTempError::BinariesNotFound)?;
        let owner = if is_root() {
            if runuser().is_none() {
                return Err(PgTempError::Root(
                    "initdb refuses root and `runuser` is missing (util-linux)".into(),
                ));
            }
            Some(postgres_ids().ok_or_else(|| {
                PgTempError::Root(
                    "initdb refuses root and there is no `postgres` user to run it as \
                     (installing the postgresql package creates one)"
                        .into(),
                )
            })?)
        } else {
            None
        };

        static SEQ: AtomicU64 = AtomicU64::new(0);
        let parent = opts.parent_dir.clone().unwrap_or_else(default_parent_dir);
        let base_dir = parent.join(format!(
            "vyx-pgtemp-{}-{}-{:08x}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        ));
        let data_dir = base_dir.join("data");
        let socket_dir = base_dir.join("sock");
        let shown = base_dir.display().to_string();
        let io = |what: &str| {
            let what = format!("{what} {shown}");
            move |source| PgTempError::Io { what, source }
        };
        std::fs::create_dir_all(&socket_dir).map_err(io("creating"))?;
        if let Some((uid, gid)) = owner {
            for dir in [&base_dir, &socket_dir] {
                std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                    .map_err(io("handing to the postgres user"))?;
            }
        }

        let mut cluster = PgCluster {
            port: 0,
            base_dir,
            data_dir,
            socket_dir,
            bin_dir,
            run_as_postgres: owner.is_some(),
            watchdog: Mutex::new(None),
            stopped: AtomicBool::new(false),
        };
        // From here on, dropping `cluster` on an error cleans up.
        let cache = cluster.copy_cached_data_dir(&parent, owner);
        if cache.is_none() {
            cluster.run("initdb", &initdb_args(&cluster.data_dir))?;
        }
        if let Err(e) = cluster.start_server() {
            let Some(cache) = cache else { return Err(e) };
            // A damaged cache (e.g. half-removed by a temp cleaner): drop it and start from scratch.
            let _ = std::fs::remove_dir_all(&cache);
            std::fs::remove_dir_all(&cluster.data_dir).map_err(io("clearing"))?;
            cluster.run("initdb", &initdb_args(&cluster.data_dir))?;
            cluster.start_server()?;
        }
        if opts.watchdog {
            cluster.spawn_watchdog()?;
        }
        Ok(cluster)
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the server's unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`
    pub fn admin_url(&self) -> String {
        self.url_for("postgres")
    }

    /// The URL of database `name` on this cluster (superuser, no password).
    pub fn url_for(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{}", self.port, name)
    }

    /// Creates an empty database (a copy of `template1`) and returns its URL.
    pub async fn create_database(&self, name: &str) -> Result<String, PgTempError> {
        self.create_database_from(name, "template1").await
    }

    /// Creates database `name` as a copy of `template` (which nobody may be connected to) and returns
    /// its URL. Copying a prepared template is much cheaper than re-running its setup.
    pub async fn create_database_from(
        &self,
        name: &str,
        template: &str,
    ) -> Result<String, PgTempError> {
        for n in [name, template] {
            if !valid_db_name(n) {
                return Err(PgTempError::InvalidName(n.to_string()));
            }
        }
        let mut conn = PgConnection::connect(&self.admin_url()).await?;
        // Names are checked above to be plain identifiers: quoting them is enough.
        let sql = format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template}\"");
        conn.execute(sqlx::AssertSqlSafe(sql)).await?;
        conn.close().await?;
        Ok(self.url_for(name))
    }

    /// Drops database `name` (closing any connections to it).
    pub async fn drop_database(&self, name: &str) -> Result<(), PgTempError> {
        if !valid_db_name(name) {
            return Err(PgTempError::InvalidName(name.to_string()));
        }
        let mut conn = PgConnection::connect(&self.admin_url()).await?;
        let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
        conn.execute(sqlx::AssertSqlSafe(sql)).await?;
        conn.close().await?;
        Ok(())
    }

    /// Stops the server at once (`-m immediate`: nothing here is worth a checkpoint) and removes the
    /// cluster directory. Idempotent.
    pub async fn stop(&self) {
        if self.stopped.load(Ordering::SeqCst) {
            return;
        }
        // `pg_ctl stop` waits on the server; keep it off the async workers.
        let (bin, data, base, as_pg) = (
            self.bin_dir.clone(),
            self.data_dir.clone(),
            self.base_dir.clone(),
            self.run_as_postgres,
        );
        let _ =
            tokio::task::spawn_blocking(move || stop_and_remove(&bin, &data, &base, as_pg)).await;
        self.stopped.store(true, Ordering::SeqCst);
        self.kill_watchdog();
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if !self.stopped.swap(true, Ordering::SeqCst) {
            stop_and_remove(
                &self.bin_dir,
                &self.data_dir,
                &self.base_dir,
                self.run_as_postgres,
            );
        }
        self.kill_watchdog();
    }
}

/// Creates, if missing, what vyx-fleet reads from Supabase/Vyx: the `auth` schema with `auth.users`,
/// `public.user_subscriptions`, `public.user_profiles`, and the roles `anon`, `authenticated`,
/// `service_role`. Idempotent. For the demo and tests only.
pub async fn apply_supabase_shape(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(SUPABASE_SHAPE).execute(pool).await?;
    Ok(())
}

fn valid_db_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests;
