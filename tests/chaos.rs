//! Randomized kill-and-fault suite, black box (DESIGN §5 invariants 2–6 under crashes).
//!
//! Users' tiers, statuses and admin overrides flip at random while the simulator injects faults
//! (5xx, 408, dropped connections, lost write answers, 429 bursts, a post-create window answering 404
//! or 401, slow app deletes) and the `vyx-fleet run` replicas (two at a time) are SIGKILLed and restarted at random
//! instants. Then the faults stop; the fleet must converge within a bounded time with every invariant
//! holding (see `bin_support::check_converged`), and no run may have crashed on its own.
//!
//! Besides one app and one machine per wanted user, the end state is checked for what makes an app
//! serve: its `v6` + `shared_v4` IPs, exactly the configured secrets, and its machine booted with the
//! app's latest secrets version. Variants run the Fly lists three items a page, and add apps deleted
//! out of band plus a secret rotation (new values, both replicas restarted) in the middle of the kills.
//!
//! The seed is printed; `CHAOS_SEED=<n>` replays a run's choices (the daemons' own timing is not
//! deterministic, so a replay is close, not identical).
//!
//! Blast-radius breaker (invariant 6): a pass that would delete more than max(5, 10 %) of the live apps,
//! or all of them, deletes nothing until `vyx-fleet confirm-deletions`. The driver keeps a set of
//! "anchor" users who are always wanted (so "all of them" and "nobody wanted" never happen) and flips at
//! most `max_flips` users per round, about 40 % of them towards unwanted. Deletions can still pile up past
//! the limit while no leader runs (a SIGKILLed leader's lease takes up to 15 s to expire), so the driver
//! also acts as the operator: whenever a replica logs the breaker's ALERT it runs
//! `vyx-fleet confirm-deletions` (counted in the figures).
//!
//! Lease expiry: after SIGKILLing the leader, the driver sometimes (`expire_share`) expires the dead
//! holder's lease row in the database, as an operator who knows the process is gone would, so the run
//! spends its time on crash recovery rather than on 15 s TTL waits; the other kills wait the TTL out.

mod bin_support;
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bin_support::{
    BinEnv, Daemon, Expected, IMAGE, Summary, World, call_figures, check_converged,
    check_converged_with, run_to_completion, secs, try_wait_until,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::PgPool;
use support::UserFixture;
use uuid::Uuid;
use vyx_fleet::sim::{CallRecord, FaultKind, FaultRule, Faults, SimConfig};

#[derive(Debug, Clone)]
struct Params {
    users: usize,
    /// Users who stay `pro`/`active`, never flipped.
    anchors: usize,
    /// How long faults and kills go on.
    chaos: Duration,
    /// Target number of kill events (a few kill both replicas at once).
    kills: usize,
    max_flips: usize,
    /// Pause between rounds, in ms.
    round_ms: (u64, u64),
    /// Share of kills aimed at the leader (the rest hit the standby).
    leader_bias: f64,
    /// Share of leader kills after which the driver expires the dead holder's lease.
    expire_share: f64,
    /// Convergence allowance after the faults stop, on top of the longest pending per-user backoff.
    settle: Duration,
    max_call_log: usize,
    /// Apps deleted outside the controller during the run (through the simulator, as a human with
    /// flyctl would), one at a kill event, chosen among live rows' apps.
    oob_deletes: usize,
    /// Halfway through the kills: new `SUPABASE_SERVICE_ROLE_KEY` and `USER_APP_SECRETS` values,
    /// and both replicas killed and restarted with them.
    rotate_secrets: bool,
    /// Items per Fly list page the daemons ask for (`VYX_FLY_LIST_PAGE_SIZE`); 500 when `None`.
    page_size: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
struct UserState {
    tier: &'static str,
    status: &'static str,
    /// `present`, `absent`, `paused` or none.
    over: Option<&'static str>,
}

impl UserState {
    fn random(rng: &mut StdRng) -> UserState {
        let tier = ["free", "pro", "elite", "pro"][rng.random_range(0..4)];
        let status = ["active", "active", "past_due", "cancelled"][rng.random_range(0..4)];
        let over = if rng.random_bool(0.15) {
            Some(["present", "absent", "paused"][rng.random_range(0..3)])
        } else {
            None
        };
        UserState { tier, status, over }
    }
}

#[derive(Debug, Default)]
struct Figures {
    rounds: usize,
    flips: usize,
    kills: usize,
    leader_kills: usize,
    standby_kills: usize,
    double_kills: usize,
    restarts: usize,
    lease_expired_by_driver: usize,
    breaker_alerts: usize,
    confirmations: usize,
    unexpected_exits: Vec<String>,
    oob_deleted: Vec<String>,
    rotations: usize,
    /// Invariant 2 checked at every round, not only at the end.
    samples: usize,
    always_violations: Vec<String>,
}

struct Chaos {
    world: World,
    env: BinEnv,
    rng: StdRng,
    p: Params,
    users: Vec<(Uuid, UserState)>,
    daemons: Vec<Daemon>,
    /// Breaker ALERT lines already seen per daemon directory.
    alerts_seen: BTreeMap<String, usize>,
    spawned: usize,
    fig: Figures,
    /// Logs of killed replicas, scanned at the end.
    dead: Vec<Daemon>,
    /// How many of `dead` the operator has scanned for the last time.
    dead_scanned: usize,
}

fn seed() -> u64 {
    match std::env::var("CHAOS_SEED") {
        Ok(s) => s.trim().parse().expect("CHAOS_SEED is a u64"),
        Err(_) => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            t.as_nanos() as u64 ^ u64::from(std::process::id())
        }
    }
}

fn faults(seed: u64) -> Faults {
    Faults {
        rules: vec![
            FaultRule::new("*", 0.03, FaultKind::ServerError { status: 503 }),
            FaultRule::new("*", 0.01, FaultKind::ServerError { status: 500 }),
            FaultRule::new("*", 0.02, FaultKind::Timeout),
            FaultRule::new("*", 0.02, FaultKind::Drop),
            FaultRule::new("*", 0.003, FaultKind::Burst429 { ms: 1500 }),
            FaultRule::new(
                "apps.create",
                0.15,
                FaultKind::LostAnswer { status: Some(502) },
            ),
            FaultRule::new(
                "machines.create",
                0.15,
                FaultKind::LostAnswer { status: None },
            ),
            FaultRule::new("apps.delete", 0.10, FaultKind::LostAnswer { status: None }),
            FaultRule::new(
                "secrets.set",
                0.05,
                FaultKind::LostAnswer { status: Some(500) },
            ),
            FaultRule::new(
                "ips.create",
                0.05,
                FaultKind::LostAnswer { status: Some(503) },
            ),
            FaultRule::new("machines.stop", 0.05, FaultKind::Timeout),
        ],
        // The post-create window answers 401 as well as 404 (REFERENCE §7).
        post_create_401: 0.3,
        seed: Some(seed),
        ..Faults::default()
    }
}

async fn apply_state(pool: &PgPool, user: Uuid, s: &UserState) {
    support::set_subscription(pool, user, s.tier, s.status).await;
    match s.over {
        Some(d) => sqlx::query(
            "INSERT INTO vyx_fleet.user_fly_app_overrides (user_id, desired, reason, created_by) \
             VALUES ($1, $2, 'chaos', 'chaos') \
             ON CONFLICT (user_id) DO UPDATE SET desired = EXCLUDED.desired",
        )
        .bind(user)
        .bind(d)
        .execute(pool)
        .await
        .expect("set override"),
        None => sqlx::query("DELETE FROM vyx_fleet.user_fly_app_overrides WHERE user_id = $1")
            .bind(user)
            .execute(pool)
            .await
            .expect("clear override"),
    };
}

impl Chaos {
    async fn start(p: Params, seed: u64) -> Chaos {
        let mut cfg = SimConfig {
            seed,
            faults: faults(seed),
            max_call_log: p.max_call_log,
            ..SimConfig::default()
        };
        cfg.timings.app_visible_after = Duration::from_secs(2);
        cfg.timings.app_delete = Duration::from_millis(2500);
        let world = World::start(cfg).await;
        let env = world
            .env
            .clone()
            .with("USER_APP_SECRETS", "GEMINI_API_KEY")
            .with("GEMINI_API_KEY", "gemini-chaos-SECRET-0")
            // Apps are deleted out of band: only a full list sees that (no machine event), so the
            // resync must come round within the settle time.
            .with("RESYNC_INTERVAL", "2s")
            // The secret rotation moves through rollout waves; the default 60 s soak per wave
            // would be a clock inside the settle bound, not something the chaos is about.
            .with("ROLLOUT_SOAK", "2s");
        let env = match p.page_size {
            Some(n) => env.with("VYX_FLY_LIST_PAGE_SIZE", &n.to_string()),
            None => env,
        };
        let mut rng = StdRng::seed_from_u64(seed);
        let mut users = Vec::with_capacity(p.users);
        for i in 0..p.users {
            let state = if i < p.anchors {
                UserState {
                    tier: "pro",
                    status: "active",
                    over: None,
                }
            } else {
                UserState::random(&mut rng)
            };
            let fx = match state.over {
                Some(o) => UserFixture::paid(state.tier)
                    .with_status(state.status)
                    .with_override(o),
                None => UserFixture::paid(state.tier).with_status(state.status),
            };
            users.push((fx.insert(world.pool()).await, state));
        }
        let mut c = Chaos {
            world,
            env,
            rng,
            p,
            users,
            daemons: Vec::new(),
            alerts_seen: BTreeMap::new(),
            spawned: 0,
            fig: Figures::default(),
            dead: Vec::new(),
            dead_scanned: 0,
        };
        c.spawn();
        c.spawn();
        c
    }

    fn spawn(&mut self) {
        let d = Daemon::spawn(&self.env, &format!("chaos-{}", self.spawned));
        self.spawned += 1;
        self.daemons.push(d);
    }

    async fn leader_index(&self) -> Option<usize> {
        let holder: Option<String> = sqlx::query_scalar(
            "SELECT holder FROM vyx_fleet.lease \
             WHERE name = 'controller' AND expires_at > clock_timestamp()",
        )
        .fetch_optional(self.world.pool())
        .await
        .ok()
        .flatten()
        .flatten();
        let holder = holder?;
        self.daemons
            .iter()
            .position(|d| d.holder().as_deref() == Some(holder.as_str()))
    }

    async fn flip(&mut self) {
        let n = self.rng.random_range(0..=self.p.max_flips);
        for _ in 0..n {
            let i = self.rng.random_range(self.p.anchors..self.p.users);
            let mut s = self.users[i].1.clone();
            match self.rng.random_range(0..4) {
                0 | 1 => s.tier = ["free", "pro", "elite"][self.rng.random_range(0..3)],
                2 => s.status = ["active", "past_due", "cancelled"][self.rng.random_range(0..3)],
                _ => {
                    s.over = [None, None, Some("present"), Some("absent"), Some("paused")]
                        [self.rng.random_range(0..5)]
                }
            }
            apply_state(self.world.pool(), self.users[i].0, &s).await;
            self.users[i].1 = s;
            self.fig.flips += 1;
        }
    }

    async fn kill(&mut self) {
        let leader = self.leader_index().await;
        let both = self.rng.random_bool(0.1);
        let victims: Vec<usize> = if both {
            self.fig.double_kills += 1;
            vec![1, 0]
        } else {
            let aim_leader = self.rng.random_bool(self.p.leader_bias);
            let v = match (leader, aim_leader) {
                (Some(l), true) => l,
                (Some(l), false) => 1 - l,
                (None, _) => self.rng.random_range(0..2),
            };
            vec![v]
        };
        for v in victims {
            let mut d = self.daemons.remove(v);
            let holder = d.holder();
            d.sigkill();
            self.fig.kills += 1;
            if Some(v) == leader {
                self.fig.leader_kills += 1;
                if self.rng.random_bool(self.p.expire_share)
                    && let Some(h) = holder
                {
                    // The process is dead and reaped: nobody can write under its term any more.
                    sqlx::query(
                        "UPDATE vyx_fleet.lease SET expires_at = clock_timestamp() \
                         WHERE name = 'controller' AND holder = $1",
                    )
                    .bind(h)
                    .execute(self.world.pool())
                    .await
                    .expect("expire the dead holder's lease");
                    self.fig.lease_expired_by_driver += 1;
                }
            } else {
                self.fig.standby_kills += 1;
            }
            self.dead.push(d);
        }
        while self.daemons.len() < 2 {
            self.spawn();
            self.fig.restarts += 1;
        }
        if self.fig.oob_deleted.len() < self.p.oob_deletes {
            self.delete_out_of_band().await;
        }
        if self.p.rotate_secrets && self.fig.rotations == 0 && self.fig.kills * 2 >= self.p.kills {
            self.rotate_secrets();
        }
    }

    /// Deletes a live row's app outside the controller, at once, as flyctl by hand
    /// or a loss on Fly's side would.
    async fn delete_out_of_band(&mut self) {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT fly_app_name FROM public.user_fly_apps \
             WHERE deleted_at IS NULL AND status = 'active' ORDER BY fly_app_name",
        )
        .fetch_all(self.world.pool())
        .await
        .unwrap_or_default();
        let live: Vec<String> = names
            .into_iter()
            .filter(|n| {
                self.world
                    .sim
                    .snapshot()
                    .app(n)
                    .is_some_and(|a| !a.deleting)
            })
            .collect();
        if live.is_empty() {
            return;
        }
        let name = live[self.rng.random_range(0..live.len())].clone();
        if self.world.sim.delete_app_out_of_band(&name) {
            self.fig.oob_deleted.push(name);
        }
    }

    /// New secret values, and both replicas killed and restarted with them, as an operator's
    /// redeploy after a key rotation would do.
    fn rotate_secrets(&mut self) {
        self.fig.rotations += 1;
        let n = self.fig.rotations;
        self.env = self
            .env
            .clone()
            .with(
                "SUPABASE_SERVICE_ROLE_KEY",
                &format!("sb-service-role-rotated-SECRET-{n}"),
            )
            .with("GEMINI_API_KEY", &format!("gemini-chaos-SECRET-{n}"));
        // Not counted as kills: the random kill schedule keeps its own count.
        for mut d in std::mem::take(&mut self.daemons) {
            d.sigkill();
            self.dead.push(d);
        }
        self.spawn();
        self.spawn();
        self.fig.restarts += 2;
    }

    /// Replicas that exited without being killed are bugs; replace them so the run goes on.
    fn reap_unexpected(&mut self) {
        let mut i = 0;
        while i < self.daemons.len() {
            if self.daemons[i].is_running() {
                i += 1;
                continue;
            }
            let d = self.daemons.remove(i);
            let tail: Vec<String> = d.stdout().lines().rev().take(5).map(String::from).collect();
            self.fig.unexpected_exits.push(format!(
                "{} exited on its own; stderr {:?}; last log lines {:?}",
                d.name,
                d.stderr(),
                tail
            ));
            self.dead.push(d);
            self.spawn();
        }
    }

    /// Acts as the operator when a replica logs the blast-radius ALERT.
    async fn operator(&mut self) {
        let mut fresh = 0;
        // A dead replica's log no longer grows: scan it one last time, then never again.
        let dead_unscanned: Vec<&Daemon> = self.dead[self.dead_scanned..].iter().collect();
        for d in self.daemons.iter().chain(dead_unscanned) {
            let n = d.stdout().matches("blast-radius breaker").count();
            let key = d.dir.display().to_string();
            let seen = self.alerts_seen.entry(key).or_insert(0);
            if n > *seen {
                fresh += n - *seen;
                *seen = n;
            }
        }
        self.dead_scanned = self.dead.len();
        if fresh > 0 {
            self.fig.breaker_alerts += fresh;
            run_to_completion(&self.env, &["confirm-deletions"], secs(30))
                .await
                .ok();
            self.fig.confirmations += 1;
        }
    }

    async fn run(&mut self) {
        let start = Instant::now();
        let kill_every = self.p.chaos.as_secs_f64() / self.p.kills as f64;
        let mut next_kill =
            start + Duration::from_secs_f64(kill_every * self.rng.random_range(0.3..1.3));
        // Until the kill target is reached (the time is a guide; twice it is the cap).
        while self.fig.kills < self.p.kills && start.elapsed() < self.p.chaos * 2 {
            // The chaos schedule: random pauses between random events (not synchronisation).
            let pause = self.rng.random_range(self.p.round_ms.0..=self.p.round_ms.1);
            tokio::time::sleep(Duration::from_millis(pause)).await;
            self.fig.rounds += 1;
            self.flip().await;
            if Instant::now() >= next_kill {
                self.kill().await;
                next_kill = Instant::now()
                    + Duration::from_secs_f64(kill_every * self.rng.random_range(0.3..1.3));
            }
            self.reap_unexpected();
            self.operator().await;
            self.sample_always().await;
        }
    }

    /// Invariant 2 must hold at every instant, faults and kills or not: no user has two live rows, no
    /// user's machines sit in two apps, no app holds two users' machines.
    async fn sample_always(&mut self) {
        self.fig.samples += 1;
        let dup_rows: Vec<(Uuid, i64)> = sqlx::query_as(
            "SELECT user_id, count(*) FROM public.user_fly_apps \
             WHERE deleted_at IS NULL GROUP BY user_id HAVING count(*) > 1",
        )
        .fetch_all(self.world.pool())
        .await
        .unwrap_or_default();
        for (u, n) in dup_rows {
            self.fig
                .always_violations
                .push(format!("user {u} has {n} live rows"));
        }
        let mut apps_of: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for app in bin_support::managed_apps(&self.world.sim) {
            if app.deleting {
                continue;
            }
            let mut users: Vec<String> = app
                .machines
                .iter()
                .filter(|m| m.state != "destroyed")
                .filter_map(|m| {
                    m.config["metadata"]["vyx_user_id"]
                        .as_str()
                        .map(String::from)
                })
                .collect();
            users.sort();
            users.dedup();
            if users.len() > 1 {
                self.fig
                    .always_violations
                    .push(format!("app {} holds machines of {users:?}", app.name));
            }
            for u in users {
                apps_of.entry(u).or_default().push(app.name.clone());
            }
        }
        for (u, apps) in apps_of {
            if apps.len() > 1 {
                self.fig
                    .always_violations
                    .push(format!("user {u} has machines in apps {apps:?}"));
            }
        }
    }

    /// The longest per-user backoff still pending, from the rows.
    async fn pending_backoff(&self) -> Duration {
        let secs: Option<f64> = sqlx::query_scalar(
            "SELECT extract(epoch FROM max(next_attempt_at) - clock_timestamp())::float8 \
             FROM public.user_fly_apps WHERE next_attempt_at > clock_timestamp()",
        )
        .fetch_one(self.world.pool())
        .await
        .unwrap();
        Duration::from_secs_f64(secs.unwrap_or(0.0).max(0.0))
    }

    async fn settle(&mut self) -> (Result<Summary, String>, Duration, Duration) {
        self.world.sim.set_faults(Faults::default());
        let t0 = Instant::now();
        let backoff = self.pending_backoff().await;
        let bound = backoff + self.p.settle;
        let deadline = t0 + bound;
        let mut last = Err("not checked".to_string());
        while Instant::now() < deadline {
            self.reap_unexpected();
            self.operator().await;
            let expected = Expected::from_env(&self.env);
            let mut check = || async {
                check_converged_with(self.world.pool(), &self.world.sim, &expected).await
            };
            last = try_wait_until(Duration::from_secs(2), &mut check).await;
            if last.is_ok() {
                break;
            }
        }
        (last, t0.elapsed(), bound)
    }

    fn print(&self, seed: u64, summary: &Result<Summary, String>, took: Duration, bound: Duration) {
        let f = call_figures(&self.world.sim);
        println!("==== chaos figures ====");
        println!("seed: {seed} (replay with CHAOS_SEED={seed})");
        println!("params: {:?}", self.p);
        println!(
            "rounds {} flips {} | kills {} (leader {}, standby {}, double {}) restarts {} \
             lease expired by driver {} | breaker alerts {} confirmations {}",
            self.fig.rounds,
            self.fig.flips,
            self.fig.kills,
            self.fig.leader_kills,
            self.fig.standby_kills,
            self.fig.double_kills,
            self.fig.restarts,
            self.fig.lease_expired_by_driver,
            self.fig.breaker_alerts,
            self.fig.confirmations
        );
        println!(
            "fly calls {} (writes {}), 404 answers {}, 429 answers {}",
            f.calls, f.writes, f.status_404, f.status_429
        );
        println!("faults injected by kind: {:?}", f.by_fault);
        println!(
            "applied: app creates {}, app deletes {}, machine creates {} over {} apps (max {} for one app)",
            f.creates_applied,
            f.deletes_applied,
            f.machine_creates_applied.values().sum::<usize>(),
            f.machine_creates_applied.len(),
            f.machine_creates_applied.values().max().unwrap_or(&0)
        );
        println!("converged after faults off in {took:.1?} (bound {bound:.1?})");
        match summary {
            Ok(s) => println!(
                "result: users {} (wanted {}, unwanted {}, paused {}), apps {}, live rows {}, rows by status {:?}, events {} {:?}",
                s.users,
                s.wanted,
                s.unwanted,
                s.paused,
                s.apps,
                s.live_rows,
                s.rows_by_status,
                s.events,
                s.events_by_type
            ),
            Err(e) => println!("NOT CONVERGED: {e}"),
        }
        println!(
            "apps deleted out of band: {:?}; secret rotations: {}",
            self.fig.oob_deleted, self.fig.rotations
        );
        println!("unexpected exits: {}", self.fig.unexpected_exits.len());
        println!(
            "invariant 2 sampled {} times during the chaos: {} violation(s)",
            self.fig.samples,
            self.fig.always_violations.len()
        );
        println!("=======================");
    }

    /// Every replica's stdout is JSON lines, none logged a panic, no secret anywhere.
    fn check_logs(&self) {
        let mut secrets = self.env.secret_values();
        secrets.extend(self.world.env.secret_values());
        for n in 0..=self.fig.rotations {
            secrets.push(format!("gemini-chaos-SECRET-{n}"));
        }
        for d in self.daemons.iter().chain(self.dead.iter()) {
            let out = d.stdout();
            let err = d.stderr();
            bin_support::assert_no_secrets(&out, &secrets, &d.name);
            bin_support::assert_no_secrets(&err, &secrets, &d.name);
            // A SIGKILL can cut the last line short; every complete line must be JSON.
            let complete = match out.rfind('\n') {
                Some(i) => &out[..i],
                None => "",
            };
            for l in bin_support::parse_json_lines(complete, &d.name) {
                let msg = l["message"].as_str().unwrap_or("");
                assert!(!msg.contains("panicked"), "{}: {l}", d.name);
            }
        }
    }
}

async fn chaos(p: Params) {
    let seed = seed();
    println!("chaos seed {seed} (CHAOS_SEED overrides)");
    let started = Instant::now();
    let mut c = Chaos::start(p, seed).await;
    c.run().await;
    let (summary, took, bound) = c.settle().await;
    c.print(seed, &summary, took, bound);
    println!("total wall time {:.1?}", started.elapsed());
    assert!(
        c.fig.unexpected_exits.is_empty(),
        "replicas exited on their own: {:#?}",
        c.fig.unexpected_exits
    );
    assert!(
        c.fig.always_violations.is_empty(),
        "seed {seed}: invariant 2 broken during the run: {:#?}",
        c.fig.always_violations
    );
    let s = summary.unwrap_or_else(|e| {
        panic!("seed {seed}: not converged within {bound:?} after the faults stopped: {e}")
    });
    c.check_logs();
    // Every wanted user is served; every app runs the configured image (checked per app above).
    assert!(s.wanted >= c.p.anchors, "{s:?}");
    let f = call_figures(&c.world.sim);
    // Nothing was created out of thin air: every applied app create is one lifetime of some user's
    // app (one row per user, name reused after a delete).
    assert!(
        f.creates_applied <= s.users + f.deletes_applied + c.fig.oob_deleted.len(),
        "{} applied creates for {} users, {} applied deletes and {} out-of-band deletes",
        f.creates_applied,
        s.users,
        f.deletes_applied,
        c.fig.oob_deleted.len()
    );
    if let Some(n) = c.p.page_size {
        // Whether a full list ran while more than `n` apps and machines existed depends on where
        // the random kills fell (a leader's first full list finds an empty fleet). The daemons keep
        // running with a short RESYNC_INTERVAL and the converged fleet is larger than a page, so
        // wait for the lists to page rather than assume they already did; the deadline is a hang
        // guard only.
        let later_pages = |calls: &[CallRecord], class: &str| {
            calls
                .iter()
                .filter(|r| r.class == class && r.path.contains("cursor="))
                .count()
        };
        assert!(
            s.apps > n as usize,
            "the fleet spans more than one page: {s:?}"
        );
        let deadline = Instant::now() + secs(120);
        let (apps, machines) = loop {
            let calls = c.world.sim.calls();
            let seen = (
                later_pages(&calls, "apps.list"),
                later_pages(&calls, "orgs.machines"),
            );
            if (seen.0 > 0 && seen.1 > 0) || Instant::now() >= deadline {
                break seen;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        println!("later list pages read: apps {apps}, org machines {machines}");
        assert!(
            apps > 0 && machines > 0,
            "the daemons paged through lists of {n}"
        );
        let calls = c.world.sim.calls();
        assert!(
            calls
                .iter()
                .filter(|r| r.class == "apps.list")
                .all(|r| r.path.contains(&format!("limit={n}"))),
            "every apps page asks for {n}"
        );
    }
    let _ = IMAGE;
}

/// 28 users, 8 random kills, three apps deleted out of band and a secret rotation halfway: every app
/// must end up rebuilt with its IPs and the new secrets, every machine booted with them.
#[tokio::test]
async fn chaos_fast() {
    chaos(Params {
        users: 28,
        anchors: 10,
        chaos: secs(25),
        kills: 8,
        max_flips: 2,
        round_ms: (100, 500),
        leader_bias: 0.75,
        expire_share: 0.75,
        settle: secs(90),
        max_call_log: 200_000,
        oob_deletes: 3,
        rotate_secrets: true,
        page_size: None,
    })
    .await;
}

/// [`chaos_fast`] with Fly lists of three items a page (a fleet larger than one page
/// must be read whole), on a smaller fleet:
/// the list calls share one rate-limit bucket, so every page costs about a second.
#[tokio::test]
async fn chaos_fast_with_list_pages_of_three() {
    chaos(Params {
        users: 14,
        anchors: 5,
        chaos: secs(25),
        kills: 8,
        max_flips: 2,
        round_ms: (100, 500),
        leader_bias: 0.75,
        expire_share: 0.75,
        settle: secs(120),
        max_call_log: 200_000,
        oob_deletes: 0,
        rotate_secrets: false,
        page_size: Some(3),
    })
    .await;
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A few hundred users and a few hundred kills: `cargo test --test chaos -- --ignored --nocapture`
/// (or `CHAOS_LONG=1 cargo test --test chaos chaos_long -- --include-ignored`). Sizes from
/// `CHAOS_USERS`, `CHAOS_KILLS`, `CHAOS_SECS`. App creates are limited to about 1/s per org, so the
/// run takes many minutes.
#[tokio::test]
#[ignore = "long: several hundred users and kills, many minutes"]
async fn chaos_long() {
    let users = env_or("CHAOS_USERS", 300usize);
    chaos(Params {
        users,
        anchors: users / 5,
        chaos: secs(env_or("CHAOS_SECS", 600u64)),
        kills: env_or("CHAOS_KILLS", 200usize),
        max_flips: 1,
        round_ms: (500, 2500),
        leader_bias: 0.5,
        expire_share: 0.9,
        settle: secs(900),
        max_call_log: 5_000_000,
        oob_deletes: env_or("CHAOS_OOB_DELETES", 10usize),
        rotate_secrets: true,
        page_size: None,
    })
    .await;
}

/// The checker itself is not vacuous: a leaked app, a wanted user without an app and an unwanted user
/// with one are each reported; apps outside the prefix or the org are ignored.
#[tokio::test]
async fn the_invariant_checker_reports_violations() {
    let world = World::start(SimConfig::fast()).await;
    let pool = world.pool().clone();
    assert!(check_converged(&pool, &world.sim).await.is_ok());
    world.sim.seed_app(bin_support::ORG, "vyx-user-leakleak");
    let e = check_converged(&pool, &world.sim).await.unwrap_err();
    assert!(e.contains("leaked app vyx-user-leakleak"), "{e}");

    let world = World::start(SimConfig::fast()).await;
    world.sim.seed_app(bin_support::ORG, "vyx-app");
    world.sim.seed_app("someone-else", "vyx-user-theirs00");
    assert!(check_converged(world.pool(), &world.sim).await.is_ok());
    let wanted = UserFixture::paid("pro").insert(world.pool()).await;
    let e = check_converged(world.pool(), &world.sim).await.unwrap_err();
    assert!(
        e.contains(&format!("wanted user {wanted} has 0 live rows")),
        "{e}"
    );
    let mut d = Daemon::spawn(&world.env, "checker");
    let name = world.wait_provisioned(wanted, secs(60)).await;
    let mut check = || async { check_converged(world.pool(), &world.sim).await };
    try_wait_until(secs(30), &mut check).await.unwrap();
    d.sigkill();
    // Hand edits while no daemon runs: an IP removed, a secret changed (the machine keeps the
    // secrets it booted with). Each is reported.
    let http = reqwest::Client::new();
    let base = world.sim.base_url();
    let auth = format!("Bearer {}", bin_support::TOKEN);
    let shared_v4 = world
        .sim
        .snapshot()
        .app(&name)
        .unwrap()
        .ips
        .iter()
        .find(|ip| ip.kind == "shared_v4")
        .map(|ip| ip.ip.clone())
        .expect("shared_v4");
    let r = http
        .delete(format!("{base}/v1/apps/{name}/ip_assignments/{shared_v4}"))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let e = check_converged(world.pool(), &world.sim).await.unwrap_err();
    assert!(e.contains(&format!("app {name}: no shared_v4 IP")), "{e}");
    let r = http
        .post(format!("{base}/v1/apps/{name}/secrets"))
        .header("authorization", &auth)
        .json(&serde_json::json!({"values": {"SUPABASE_SERVICE_ROLE_KEY": "rotated-by-hand"}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let e = check_converged(world.pool(), &world.sim).await.unwrap_err();
    assert!(
        e.contains("secret SUPABASE_SERVICE_ROLE_KEY has a stale value"),
        "{e}"
    );
    assert!(e.contains("booted with secrets version"), "{e}");
    // The user leaves while no daemon runs: the app now belongs to an unwanted user.
    support::set_subscription(world.pool(), wanted, "free", "active").await;
    let e = check_converged(world.pool(), &world.sim).await.unwrap_err();
    assert!(
        e.contains(&format!("unwanted user {wanted} has a live row")),
        "{e}"
    );
    assert!(e.contains(&format!("still has app {name}")), "{e}");
}
