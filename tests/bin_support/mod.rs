//! Black-box harness: the `vyx-fleet` binary as a child process, driven only through its process
//! interface (arguments, a clean environment, exit status, stdout/stderr) against a real PostgreSQL
//! (`support`) and the Fly simulator running in the test process.
//!
//! ```ignore
//! mod bin_support;
//! mod support;
//! let world = bin_support::World::start(SimConfig::default()).await;
//! let out = bin_support::run_to_completion(&world.env, &["reconcile", "--once"], secs(60)).await;
//! let mut d = bin_support::Daemon::spawn(&world.env, "a");   // `vyx-fleet run`, killed on drop
//! ```
//!
//! Every child gets `env_clear()` plus `PATH` and exactly the variables DESIGN §4 names. Daemons write
//! stdout/stderr to files under `CARGO_TARGET_TMPDIR/blackbox/` (read at any time; kept for post-mortems).

#![allow(dead_code)] // each test binary uses a different part of this module

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;
use vyx_fleet::sim::{Sim, SimConfig};

use crate::support::{self, TestDb};

pub const ORG: &str = "vyx-test";
pub const PREFIX: &str = "vyx-user-";
pub const IMAGE: &str = "registry.fly.io/vyx-screener:bb-1";
/// Recognisable fakes: no captured output may ever contain them.
pub const TOKEN: &str = "fm2_blackbox-token-SECRET123";
pub const SERVICE_KEY: &str = "sb-service-role-blackbox-SECRET456";
pub const SUPABASE_URL: &str = "https://blackbox-project.supabase.co";

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The binary under test: a private copy of `CARGO_BIN_EXE_vyx-fleet`, taken once per test process.
///
/// The target directory is shared with other worktrees, whose builds overwrite
/// `target/debug/vyx-fleet` at any time; a test that spawned that path directly could run a half-written
/// file or someone else's build halfway through. The copy is checked to answer `--version`.
pub fn bin() -> &'static std::path::Path {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let src = PathBuf::from(env!("CARGO_BIN_EXE_vyx-fleet"));
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("blackbox")
            .join(format!("bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create bin dir");
        let dst = dir.join("vyx-fleet");
        for attempt in 0..20 {
            if std::fs::copy(&src, &dst).is_ok()
                && Command::new(&dst)
                    .arg("--version")
                    .env_clear()
                    .output()
                    .is_ok_and(|o| o.status.success() && !o.stdout.is_empty())
            {
                return dst;
            }
            // The shared binary is being rewritten by another build: try again shortly.
            std::thread::sleep(Duration::from_millis(500 + 100 * attempt));
        }
        panic!("cannot get a working copy of {}", src.display());
    })
}

/// A free loopback port for a child to bind later, never handed out twice by this process, and
/// taken outside the kernel's ephemeral range (`ip_local_port_range`), where no `bind(0)` and no
/// outgoing connection's local port lands. A port from `bind(0)`, released, could be handed to a
/// test running beside this one before the child bound it; that test's daemon then answered this
/// test's requests (a console sign-in refused with 401: the token was in the other database).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<BTreeSet<u16>> = std::sync::Mutex::new(BTreeSet::new());
    let (lo, hi) = ephemeral_range().unwrap_or((32_768, 60_999));
    // Below the range if there is room for plenty of tests there, else above it.
    let (from, to) = if lo >= 12_000 {
        (lo - 10_000, lo - 1)
    } else {
        (hi.saturating_add(1).max(1_024), u16::MAX)
    };
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..10_000 {
        let port = rand::random_range(from..=to);
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free loopback port in {from}..={to}");
}

/// The kernel's ephemeral port range, on Linux.
fn ephemeral_range() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text.split_whitespace().map(|w| w.parse::<u16>().ok());
    Some((it.next()??, it.next()??))
}

/// A directory of its own for one child's output.
pub fn out_dir(name: &str) -> PathBuf {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("blackbox")
        .join(format!(
            "{}-{}-{name}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
    std::fs::create_dir_all(&dir).expect("create output dir");
    dir
}

/// The environment a child process gets (on top of `PATH`).
#[derive(Clone, Debug)]
pub struct BinEnv {
    pub vars: BTreeMap<String, String>,
}

impl BinEnv {
    /// Every variable DESIGN §4 names for a daemon against `db_url` and the simulator at `sim_url`.
    /// `HTTP_ADDR` gets a fresh free port (and [`Daemon::spawn`] picks another per process).
    pub fn full(db_url: &str, sim_url: &str) -> BinEnv {
        let port = free_port();
        let vars = [
            ("DATABASE_URL", db_url.to_string()),
            ("FLY_API_TOKEN", TOKEN.to_string()),
            ("FLY_ORG_SLUG", ORG.to_string()),
            ("USER_APP_IMAGE", IMAGE.to_string()),
            ("FLY_API_BASE_URL", sim_url.to_string()),
            // The apps' own health endpoints, as the simulator serves them.
            (
                "HEALTH_URL_TEMPLATE",
                format!("{}/_sim/apps/{{app}}/health", sim_url.trim_end_matches('/')),
            ),
            ("SUPABASE_URL", SUPABASE_URL.to_string()),
            ("SUPABASE_SERVICE_ROLE_KEY", SERVICE_KEY.to_string()),
            ("RECONCILE_INTERVAL", "1s".to_string()),
            ("DEPROVISION_GRACE", "0s".to_string()),
            ("HTTP_ADDR", format!("127.0.0.1:{port}")),
            ("LOG_FORMAT", "json".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        BinEnv { vars }
    }

    pub fn with(mut self, key: &str, value: &str) -> BinEnv {
        self.vars.insert(key.to_string(), value.to_string());
        self
    }

    pub fn without(mut self, key: &str) -> BinEnv {
        self.vars.remove(key);
        self
    }

    pub fn get(&self, key: &str) -> &str {
        self.vars.get(key).map(String::as_str).unwrap_or("")
    }

    /// The secret values this environment carries (for "never printed" checks).
    pub fn secret_values(&self) -> Vec<String> {
        let mut out = vec![TOKEN.to_string(), SERVICE_KEY.to_string()];
        for k in ["FLY_API_TOKEN", "SUPABASE_SERVICE_ROLE_KEY"] {
            if let Some(v) = self.vars.get(k)
                && v.len() >= 8
                && !out.contains(v)
            {
                out.push(v.clone());
            }
        }
        out
    }

    fn apply(&self, cmd: &mut Command) {
        cmd.env_clear();
        if let Ok(path) = std::env::var("PATH") {
            cmd.env("PATH", path);
        }
        cmd.envs(&self.vars);
        cmd.stdin(Stdio::null());
    }
}

/// A finished child.
#[derive(Debug)]
pub struct Finished {
    /// `None` if killed by a signal (or by our timeout).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Finished {
    pub fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// Asserts exit 0 and returns self.
    pub fn ok(self) -> Finished {
        assert_eq!(
            self.code,
            Some(0),
            "expected exit 0\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs `vyx-fleet ARGS` to completion; panics if it runs longer than `timeout` (the child is killed).
pub async fn run_to_completion(env: &BinEnv, args: &[&str], timeout: Duration) -> Finished {
    let mut cmd = Command::new(bin());
    env.apply(&mut cmd);
    cmd.args(args);
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let started = Instant::now();
    let child = cmd.spawn().expect("spawn vyx-fleet");
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(r) => r.expect("wait for vyx-fleet"),
        Err(_) => panic!("vyx-fleet {args:?} did not finish within {timeout:?}"),
    };
    Finished {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: started.elapsed(),
    }
}

/// `vyx-fleet run` as a child process. Dropping it SIGKILLs and reaps the child.
pub struct Daemon {
    child: Child,
    pub name: String,
    pub http_addr: SocketAddr,
    pub dir: PathBuf,
    pub started: Instant,
    exited: Option<ExitStatus>,
}

impl Daemon {
    /// Starts `vyx-fleet run` with `env` and a fresh `HTTP_ADDR`.
    pub fn spawn(env: &BinEnv, name: &str) -> Daemon {
        let http_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let env = env.clone().with("HTTP_ADDR", &http_addr.to_string());
        let dir = out_dir(name);
        let stdout = std::fs::File::create(dir.join("stdout")).expect("stdout file");
        let stderr = std::fs::File::create(dir.join("stderr")).expect("stderr file");
        let mut cmd = Command::new(bin());
        env.apply(&mut cmd);
        cmd.arg("run").stdout(stdout).stderr(stderr);
        let child = cmd.spawn().expect("spawn vyx-fleet run");
        Daemon {
            child,
            name: name.to_string(),
            http_addr,
            dir,
            started: Instant::now(),
            exited: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.join("stdout")).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    /// The JSON log lines on stdout (panics on a line that is not one JSON object).
    pub fn log_lines(&self) -> Vec<Value> {
        parse_json_lines(&self.stdout(), &self.name)
    }

    /// The lease holder id this process logged at start-up.
    pub fn holder(&self) -> Option<String> {
        self.stdout().lines().find_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            if v["message"] == "vyx-fleet starting" {
                v["holder"].as_str().map(str::to_string)
            } else {
                None
            }
        })
    }

    /// Sends SIGTERM (via `kill(1)`; the crate has no libc dependency).
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("run kill(1)");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// SIGKILL and reap.
    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        if let Ok(s) = self.child.wait() {
            self.exited = Some(s);
        }
    }

    pub fn is_running(&mut self) -> bool {
        if self.exited.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(Some(s)) => {
                self.exited = Some(s);
                false
            }
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// Waits (polling) for the child to exit; `None` if still running at the deadline.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.is_running() {
                return self.exited;
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET /readyz`: status code and JSON body, `None` if the port does not answer.
    pub async fn readyz(&self) -> Option<(u16, Value)> {
        http_get_json(&format!("http://{}/readyz", self.http_addr)).await
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub async fn http_get_json(url: &str) -> Option<(u16, Value)> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
        .ok()?;
    let resp = client.get(url).send().await.ok()?;
    let code = resp.status().as_u16();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    Some((code, body))
}

/// Every non-empty line of `text` as a JSON object; panics naming the first line that is not.
pub fn parse_json_lines(text: &str, what: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| match serde_json::from_str::<Value>(l) {
            Ok(v) if v.is_object() => v,
            _ => panic!("{what}: stdout line is not one JSON object: {l:?}"),
        })
        .collect()
}

/// Polls `check` (every 100 ms) until it returns `Ok`, or panics after `timeout` with `what` and the
/// last error. Synchronisation on observable state, never on a fixed sleep.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    match try_wait_until(timeout, &mut check).await {
        Ok(v) => v,
        Err(e) => panic!("timed out after {timeout:?} waiting for {what}: {e}"),
    }
}

/// [`wait_until`] that returns the last error instead of panicking.
pub async fn try_wait_until<T, F, Fut>(timeout: Duration, check: &mut F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let r = check().await;
        match r {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A database, the simulator and an environment pointing the binary at both.
pub struct World {
    pub db: TestDb,
    pub sim: Sim,
    pub env: BinEnv,
}

impl World {
    /// A migrated database and a simulator with `cfg`.
    pub async fn start(cfg: SimConfig) -> World {
        let db = support::migrated_db().await;
        Self::with_db(db, cfg).await
    }

    pub async fn with_db(db: TestDb, cfg: SimConfig) -> World {
        let sim = Sim::start("127.0.0.1:0".parse().unwrap(), cfg)
            .await
            .expect("simulator starts");
        let env = BinEnv::full(&db.url, &sim.base_url());
        World { db, sim, env }
    }

    pub fn pool(&self) -> &PgPool {
        &self.db.pool
    }

    /// Managed-prefix apps in our org, including those being deleted.
    pub fn managed_apps(&self) -> Vec<vyx_fleet::sim::AppSnapshot> {
        managed_apps(&self.sim)
    }

    /// Waits until `user` has an `active` live row whose app exists with a started machine; returns
    /// the app name.
    pub async fn wait_provisioned(&self, user: Uuid, timeout: Duration) -> String {
        let pool = self.pool().clone();
        wait_until(&format!("user {user} provisioned"), timeout, || {
            let pool = pool.clone();
            let sim = &self.sim;
            async move {
                let row: Option<(String, String)> = sqlx::query_as(
                    "SELECT fly_app_name, status FROM public.user_fly_apps \
                     WHERE user_id = $1 AND deleted_at IS NULL",
                )
                .bind(user)
                .fetch_optional(&pool)
                .await
                .map_err(|e| e.to_string())?;
                let Some((name, status)) = row else {
                    return Err("no live row".into());
                };
                if status != "active" {
                    return Err(format!("row status {status}"));
                }
                let snap = sim.snapshot();
                let app = snap.app(&name).ok_or(format!("no app {name}"))?;
                if app.machines.iter().any(|m| m.state == "started") {
                    Ok(name)
                } else {
                    Err(format!("app {name} has no started machine"))
                }
            }
        })
        .await
    }
}

pub fn managed_apps(sim: &Sim) -> Vec<vyx_fleet::sim::AppSnapshot> {
    sim.snapshot()
        .apps
        .into_iter()
        .filter(|a| a.org == ORG && a.name.starts_with(PREFIX))
        .collect()
}

/// The whole of a table as JSON (ordered by its first column), for before/after comparisons.
pub async fn dump_table(pool: &PgPool, table: &str) -> Value {
    let sql = format!(
        "SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY to_jsonb(t)::text), '[]'::jsonb) FROM {table} t"
    );
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("dump {table}: {e}"))
}

/// Counts and facts reported at the end of a run.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub users: usize,
    pub wanted: usize,
    pub unwanted: usize,
    pub paused: usize,
    pub apps: usize,
    pub rows_by_status: BTreeMap<String, usize>,
    pub live_rows: usize,
    pub events: usize,
    pub events_by_type: BTreeMap<String, usize>,
}

/// What the user should have, from the database alone (DESIGN §2, default paid tiers/statuses).
pub async fn intents(pool: &PgPool) -> Result<HashMap<Uuid, String>, String> {
    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT u.id,
                CASE WHEN o.desired IN ('present', 'absent', 'paused') THEN o.desired
                     WHEN s.tier IN ('pro', 'elite') AND s.status IN ('active', 'past_due') THEN 'present'
                     ELSE 'absent' END
           FROM auth.users u
           LEFT JOIN public.user_subscriptions s ON s.user_id = u.id
           LEFT JOIN vyx_fleet.user_fly_app_overrides o ON o.user_id = u.id",
    )
    .fetch_all(pool)
    .await
    .map_err(|e| e.to_string())?;
    Ok(rows.into_iter().collect())
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct RowFacts {
    user_id: Uuid,
    fly_app_name: String,
    status: String,
    machine_id: Option<String>,
    live: bool,
}

/// Checks DESIGN §5 invariants 2–5 over the database and the simulator's state, as of now:
/// - at most one live row per user; exactly one `active` live row per wanted user; none for an
///   unwanted one (paused users are only held to the "at most one" rules);
/// - at most one app per user and one user per app; every managed-prefix app in the org is owned by
///   a live row (no leak); nothing is still being deleted;
/// - each wanted user's app has exactly one live machine, the one the row records, running `IMAGE`,
///   tagged with that user's id; the app has `v6` + `shared_v4` IPs and exactly the expected
///   secrets, and its machine booted with the app's latest secrets version;
/// - events: every `provision_completed` has an earlier `provision_started` for that user, every
///   `deprovision_completed` an earlier `deprovision_started`.
pub async fn check_converged(pool: &PgPool, sim: &Sim) -> Result<Summary, String> {
    check_converged_with(pool, sim, &Expected::default()).await
}

/// What every wanted user's app must carry, from the environment the daemons run with.
#[derive(Debug, Clone)]
pub struct Expected {
    /// Fly secret name → value: `SUPABASE_SERVICE_ROLE_KEY` plus every `USER_APP_SECRETS` name.
    pub secrets: BTreeMap<String, String>,
}

impl Default for Expected {
    /// The secrets of [`BinEnv::full`].
    fn default() -> Self {
        Expected {
            secrets: [(
                "SUPABASE_SERVICE_ROLE_KEY".to_string(),
                SERVICE_KEY.to_string(),
            )]
            .into_iter()
            .collect(),
        }
    }
}

impl Expected {
    pub fn from_env(env: &BinEnv) -> Expected {
        let mut secrets = BTreeMap::new();
        if let Some(v) = env.vars.get("SUPABASE_SERVICE_ROLE_KEY") {
            secrets.insert("SUPABASE_SERVICE_ROLE_KEY".to_string(), v.clone());
        }
        for name in env.get("USER_APP_SECRETS").split(',').map(str::trim) {
            if let Some(v) = env.vars.get(name).filter(|_| !name.is_empty()) {
                secrets.insert(name.to_string(), v.clone());
            }
        }
        Expected { secrets }
    }
}

/// [`check_converged`] against the secrets `expected` says every app carries.
pub async fn check_converged_with(
    pool: &PgPool,
    sim: &Sim,
    expected: &Expected,
) -> Result<Summary, String> {
    let intents = intents(pool).await?;
    let rows: Vec<RowFacts> = sqlx::query_as(
        "SELECT user_id, fly_app_name, status, machine_id, deleted_at IS NULL AS live \
         FROM public.user_fly_apps",
    )
    .fetch_all(pool)
    .await
    .map_err(|e| e.to_string())?;
    let apps = managed_apps(sim);
    let mut problems = Vec::new();

    let mut live_by_user: HashMap<Uuid, Vec<&RowFacts>> = HashMap::new();
    let mut live_by_app: HashMap<&str, Vec<&RowFacts>> = HashMap::new();
    let mut rows_by_status = BTreeMap::new();
    for r in &rows {
        *rows_by_status.entry(r.status.clone()).or_insert(0) += 1;
        if r.live {
            live_by_user.entry(r.user_id).or_default().push(r);
            live_by_app.entry(&r.fly_app_name).or_default().push(r);
        }
    }
    for (u, rs) in &live_by_user {
        if rs.len() > 1 {
            problems.push(format!("user {u} has {} live rows", rs.len()));
        }
    }
    for (a, rs) in &live_by_app {
        if rs.len() > 1 {
            problems.push(format!("app {a} is named by {} live rows", rs.len()));
        }
    }
    let app_names: HashSet<&str> = apps.iter().map(|a| a.name.as_str()).collect();
    for app in &apps {
        if app.deleting {
            problems.push(format!("app {} is still being deleted", app.name));
        }
        if !live_by_app.contains_key(app.name.as_str()) {
            problems.push(format!("leaked app {}: no live row owns it", app.name));
        }
        let mut owners: HashSet<String> = HashSet::new();
        for m in app.machines.iter().filter(|m| m.state != "destroyed") {
            if let Some(u) = m.config["metadata"]["vyx_user_id"].as_str() {
                owners.insert(u.to_string());
            }
        }
        if owners.len() > 1 {
            problems.push(format!("app {} has machines of users {owners:?}", app.name));
        }
    }
    let (mut wanted, mut unwanted, mut paused) = (0, 0, 0);
    for (user, intent) in &intents {
        let live = live_by_user.get(user).cloned().unwrap_or_default();
        match intent.as_str() {
            "present" => {
                wanted += 1;
                let [row] = live.as_slice() else {
                    problems.push(format!("wanted user {user} has {} live rows", live.len()));
                    continue;
                };
                if row.status != "active" {
                    problems.push(format!("wanted user {user}: row status {}", row.status));
                }
                let Some(app) = apps.iter().find(|a| a.name == row.fly_app_name) else {
                    problems.push(format!("wanted user {user}: no app {}", row.fly_app_name));
                    continue;
                };
                // IPs, secrets, and machines on the latest secrets: an app that
                // runs but cannot be reached or boots on old keys serves nobody.
                problems.extend(support::serving_problems(app, &expected.secrets));
                let machines: Vec<_> = app
                    .machines
                    .iter()
                    .filter(|m| m.state != "destroyed")
                    .collect();
                if machines.len() != 1 {
                    problems.push(format!(
                        "app {} has {} live machines: {:?}",
                        app.name,
                        machines.len(),
                        machines
                            .iter()
                            .map(|m| (&m.id, &m.state))
                            .collect::<Vec<_>>()
                    ));
                    continue;
                }
                let m = machines[0];
                if m.state != "started" {
                    problems.push(format!("app {}: machine {} is {}", app.name, m.id, m.state));
                }
                if row.machine_id.as_deref() != Some(m.id.as_str()) {
                    problems.push(format!(
                        "app {}: row records machine {:?}, Fly has {}",
                        app.name, row.machine_id, m.id
                    ));
                }
                if m.config["image"] != IMAGE {
                    problems.push(format!("app {}: image {}", app.name, m.config["image"]));
                }
                if m.config["metadata"]["vyx_user_id"] != user.to_string() {
                    problems.push(format!(
                        "app {}: machine metadata user {} != {user}",
                        app.name, m.config["metadata"]["vyx_user_id"]
                    ));
                }
            }
            "absent" => {
                unwanted += 1;
                if !live.is_empty() {
                    problems.push(format!(
                        "unwanted user {user} has a live row ({})",
                        live[0].status
                    ));
                }
                for r in rows.iter().filter(|r| r.user_id == *user) {
                    if app_names.contains(r.fly_app_name.as_str()) {
                        problems.push(format!(
                            "unwanted user {user} still has app {}",
                            r.fly_app_name
                        ));
                    }
                }
            }
            _ => paused += 1,
        }
    }

    let events: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT user_id, event_type FROM public.user_fly_app_events ORDER BY created_at, id",
    )
    .fetch_all(pool)
    .await
    .map_err(|e| e.to_string())?;
    let mut events_by_type = BTreeMap::new();
    // Open attempts per (user, provision|deprovision): a start opens one (retries may start it
    // again), a completion needs an open one and closes it.
    let mut open: HashMap<(Uuid, &str), bool> = HashMap::new();
    for (user, ev) in &events {
        *events_by_type.entry(ev.clone()).or_insert(0) += 1;
        let (kind, starts) = match ev.as_str() {
            "provision_started" => ("provision", true),
            "provision_completed" => ("provision", false),
            "deprovision_started" => ("deprovision", true),
            "deprovision_completed" => ("deprovision", false),
            _ => continue,
        };
        let is_open = open.entry((*user, kind)).or_insert(false);
        if !starts && !*is_open {
            problems.push(format!(
                "user {user}: {ev} without an earlier {kind}_started"
            ));
        }
        *is_open = starts;
    }

    if !problems.is_empty() {
        problems.sort();
        let n = problems.len();
        problems.truncate(15);
        return Err(format!("{n} problem(s): {}", problems.join("; ")));
    }
    Ok(Summary {
        users: intents.len(),
        wanted,
        unwanted,
        paused,
        apps: apps.len(),
        live_rows: live_by_user.values().map(Vec::len).sum(),
        rows_by_status,
        events: events.len(),
        events_by_type,
    })
}

/// Simulator call-log figures.
#[derive(Debug, Default, Clone)]
pub struct CallFigures {
    pub calls: usize,
    pub writes: usize,
    pub by_fault: BTreeMap<String, usize>,
    pub status_404: usize,
    pub status_429: usize,
    pub creates_applied: usize,
    pub deletes_applied: usize,
    pub machine_creates_applied: BTreeMap<String, usize>,
}

pub fn call_figures(sim: &Sim) -> CallFigures {
    let mut f = CallFigures::default();
    for c in sim.calls() {
        f.calls += 1;
        if c.method != "GET" {
            f.writes += 1;
        }
        if let Some(fault) = &c.fault {
            let kind = match fault.split_whitespace().next().unwrap_or("") {
                "lost_answer" => fault.clone(),
                k => k.to_string(),
            };
            *f.by_fault.entry(kind).or_insert(0) += 1;
        }
        match c.status {
            Some(404) => f.status_404 += 1,
            Some(429) => f.status_429 += 1,
            _ => {}
        }
        if c.write_applied {
            match c.class.as_str() {
                "apps.create" => f.creates_applied += 1,
                "apps.delete" => f.deletes_applied += 1,
                "machines.create" => {
                    let app = c.path.split('/').nth(3).unwrap_or("").to_string();
                    *f.machine_creates_applied.entry(app).or_insert(0) += 1;
                }
                _ => {}
            }
        }
    }
    f
}

/// Inserts `n` users with `tier` and returns their ids.
pub async fn insert_users(pool: &PgPool, n: usize, tier: &str) -> Vec<Uuid> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(support::UserFixture::paid(tier).insert(pool).await);
    }
    out
}

/// Asserts no secret value occurs in `text`.
pub fn assert_no_secrets(text: &str, secrets: &[String], what: &str) {
    for s in secrets {
        assert!(
            !text.contains(s.as_str()),
            "{what} contains the secret {s:?}:\n{}",
            text.lines()
                .filter(|l| l.contains(s.as_str()))
                .take(3)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
