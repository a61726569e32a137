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

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use sqlx::{Connection, Executor, PgConnection, PgPool};

/// The Supabase/Vyx tables vyx-fleet reads (`auth.users`, `user_subscriptions`, `user_profiles`) and
/// Supabase's API roles. Test and demo only.
const SUPABASE_SHAPE: &str = include_str!("db/supabase_shape.sql");

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

    fn kill_watchdog(&self) {
        if let Some(mut child) = self
            .watchdog
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `pg_ctl start` on a free port. The port is free when we look, but another process may take it
    /// before the server binds it (test binaries start clusters in parallel under nextest): retry on a
    /// fresh port.
    fn start_server(&mut self) -> Result<(), PgTempError> {
        let mut last_err = None;
        for _ in 0..5 {
            self.port = free_port().map_err(|source| PgTempError::Io {
                what: "finding a free loopback port".into(),
                source,
            })?;
            let server_opts = format!(
                "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c synchronous_commit=off \
                 -c full_page_writes=off -c max_connections=300 -c shared_buffers=32MB",
                self.port,
                path_str(&self.socket_dir)
            );
            let log = self.base_dir.join("server.log");
            match self.run(
                "pg_ctl",
                &[
                    "-D",
                    path_str(&self.data_dir),
                    "-l",
                    path_str(&log),
                    "-o",
                    &server_opts,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
            ) {
                Ok(()) => return Ok(()),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.expect("at least one attempt"))
    }

    /// Runs one of the server binaries (as `postgres` when we are root) and waits for it.
    fn run(&self, program: &str, args: &[&str]) -> Result<(), PgTempError> {
        run_server_bin(
            &self.bin_dir,
            self.run_as_postgres,
            &self.base_dir,
            program,
            args,
        )
    }

    /// Fills `data_dir` with a copy of an `initdb` result cached next to the clusters (made on first use),
    /// which is much cheaper than running `initdb` each time. Returns the cache used, or `None` (and
    /// nothing left behind) if it cannot be made or copied: the caller runs `initdb` itself.
    fn copy_cached_data_dir(&self, parent: &Path, owner: Option<(u32, u32)>) -> Option<PathBuf> {
        let cache = parent.join(format!("vyx-pgtemp-initdb-{}", self.initdb_cache_key()));
        let cached_data = cache.join("data");
        if !cached_data.join("PG_VERSION").is_file() && !self.build_initdb_cache(&cache, owner) {
            return None;
        }
        let copied = Command::new("cp")
            .arg("-a")
            .arg(&cached_data)
            .arg(&self.data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !copied {
            let _ = std::fs::remove_dir_all(&self.data_dir);
            return None;
        }
        Some(cache)
    }

    /// Runs `initdb` into a private directory, then renames it into place (atomic: concurrent test
    /// binaries either see the whole cache or none of it).
    fn build_initdb_cache(&self, cache: &Path, owner: Option<(u32, u32)>) -> bool {
        let tmp = cache.with_extension(format!(
            "tmp-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let built = std::fs::create_dir(&tmp).is_ok()
            && owner.is_none_or(|(uid, gid)| {
                std::os::unix::fs::chown(&tmp, Some(uid), Some(gid)).is_ok()
            })
            && run_server_bin(
                &self.bin_dir,
                self.run_as_postgres,
                &tmp,
                "initdb",
                &initdb_args(&tmp.join("data")),
            )
            .is_ok()
            && std::fs::rename(&tmp, cache).is_ok();
        if !built {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        cache.join("data").join("PG_VERSION").is_file()
    }

    /// Changes whenever the binaries or our `initdb` arguments do, so a stale cache is never used.
    fn initdb_cache_key(&self) -> String {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        initdb_args(Path::new("")).hash(&mut h);
        self.bin_dir.hash(&mut h);
        self.run_as_postgres.hash(&mut h);
        if let Ok(m) = std::fs::metadata(self.bin_dir.join("initdb")) {
            (m.len(), m.mtime(), m.mtime_nsec(), m.ino()).hash(&mut h);
        }
        format!("{:016x}", h.finish())
    }
}

/// Runs one of the server binaries (as `postgres` when `as_postgres`) in `cwd` and waits for it. On
/// failure the error holds its output and the tail of `cwd/server.log`, if any.
fn run_server_bin(
    bin_dir: &Path,
    as_postgres: bool,
    cwd: &Path,
    program: &str,
    args: &[&str],
) -> Result<(), PgTempError> {
    let out = server_command(bin_dir, program, as_postgres)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| PgTempError::Io {
            what: format!("running {program}"),
            source,
        })?;
    if out.status.success() {
        return Ok(());
    }
    let mut output = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !stdout.trim().is_empty() {
        output.push('\n');
        output.push_str(stdout.trim());
    }
    if let Ok(log) = std::fs::read_to_string(cwd.join("server.log")) {
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        output.push_str("\nserver log (last lines):\n");
        for l in tail.into_iter().rev() {
            output.push_str(l);
            output.push('\n');
        }
    }
    Err(PgTempError::Command {
        command: format!("{program} ({})", out.status),
        output,
    })
}

impl PgCluster {
    /// A detached `sh` loop that waits for this process to exit, then stops the cluster and removes its
    /// directory. In its own process group, so a Ctrl-C aimed at us does not kill it too.
    fn spawn_watchdog(&self) -> Result<(), PgTempError> {
        let pg_ctl = self.bin_dir.join("pg_ctl");
        let stop = if self.run_as_postgres {
            let runuser = runuser().unwrap_or_else(|| PathBuf::from("runuser"));
            format!(
                "{} -u postgres -- {} -D {} stop -m immediate",
                sh_quote(path_str(&runuser)),
                sh_quote(path_str(&pg_ctl)),
                sh_quote(path_str(&self.data_dir))
            )
        } else {
            format!(
                "{} -D {} stop -m immediate",
                sh_quote(path_str(&pg_ctl)),
                sh_quote(path_str(&self.data_dir))
            )
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            dir = sh_quote(path_str(&self.base_dir)),
        );
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .current_dir("/")
            .process_group(0)
            .spawn()
            .map_err(|source| PgTempError::Io {
                what: "spawning the cluster watchdog".into(),
                source,
            })?;
        *self.watchdog.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        Ok(())
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

fn stop_and_remove(bin_dir: &Path, data_dir: &Path, base_dir: &Path, as_postgres: bool) {
    if data_dir.join("postmaster.pid").exists() {
        let _ = server_command(bin_dir, "pg_ctl", as_postgres)
            .args(["-D", path_str(data_dir), "stop", "-m", "immediate", "-w"])
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let _ = std::fs::remove_dir_all(base_dir);
}

fn server_command(bin_dir: &Path, program: &str, as_postgres: bool) -> Command {
    let exe = bin_dir.join(program);
    let mut cmd = if as_postgres {
        let mut c = Command::new(runuser().unwrap_or_else(|| PathBuf::from("runuser")));
        c.args(["-u", "postgres", "--"]).arg(exe);
        c
    } else {
        Command::new(exe)
    };
    // The caller's PG* settings must not leak into the throwaway cluster.
    for var in [
        "PGDATA",
        "PGPORT",
        "PGHOST",
        "PGUSER",
        "PGDATABASE",
        "PGOPTIONS",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

fn initdb_args(data_dir: &Path) -> Vec<&str> {
    vec![
        "-D",
        path_str(data_dir),
        "-U",
        "postgres",
        "-A",
        "trust",
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
        "--no-instructions",
    ]
}

/// `$VYX_PGTEMP_DIR`, else `/dev/shm` if it has at least 1 GiB free (containers often give it 64 MiB),
/// else the system temp dir.
fn default_parent_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VYX_PGTEMP_DIR") {
        return PathBuf::from(dir);
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && free_kib(shm).is_some_and(|kib| kib >= 1024 * 1024) {
        return shm.to_path_buf();
    }
    std::env::temp_dir()
}

/// Free space under `dir`, from `df` (std has no statvfs).
fn free_kib(dir: &Path) -> Option<u64> {
    let out = Command::new("df")
        .arg("-Pk")
        .arg(dir)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().nth(1)?.split_whitespace().nth(3)?.parse().ok()
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// uid and gid of the `postgres` user, from /etc/passwd.
fn postgres_ids() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        if f.next()? != "postgres" {
            return None;
        }
        let _password = f.next()?;
        Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
    })
}

/// A directory holding both `initdb` and `pg_ctl`: `$VYX_PG_BIN`, then `$PATH`, then the newest
/// `/usr/lib/postgresql/*/bin` (Debian keeps the server binaries off `$PATH`).
fn find_bin_dir() -> Option<PathBuf> {
    let has_both = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("VYX_PG_BIN") {
        let dir = PathBuf::from(dir);
        return has_both(&dir).then_some(dir);
    }
    if let Some(initdb) = find_in_path("initdb") {
        // Resolve symlinks so pg_ctl finds `postgres` next to it.
        let real = std::fs::canonicalize(&initdb).unwrap_or(initdb);
        if let Some(dir) = real.parent().filter(|d| has_both(d)) {
            return Some(dir.to_path_buf());
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, d)| has_both(d))
        .collect();
    versions.sort();
    versions.pop().map(|(_, d)| d)
}

/// util-linux's `runuser`, which lives in sbin (often off a non-root `$PATH`).
fn runuser() -> Option<PathBuf> {
    find_in_path("runuser").or_else(|| {
        ["/usr/sbin/runuser", "/sbin/runuser"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
    })
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn valid_db_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Our paths are built from the temp dir and ASCII names; a non-UTF-8 temp dir would be unusual enough
/// to fail on (as an empty argument that the command rejects).
fn path_str(p: &Path) -> &str {
    p.to_str().unwrap_or("")
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
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
}
