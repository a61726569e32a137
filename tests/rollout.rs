//! Progressive delivery against PostgreSQL and the simulator: every change of the machine
//! spec moves apps in waves (one canary, then doubling up to ROLLOUT_MAX_UNAVAILABLE), judged on the
//! machine's new version, soaked, halted on failure and rolled back. Assertions are on the
//! simulator's state and call log; passes run back to back like the daemon's loop, and every wait
//! polls a condition with a deadline.

mod bin_support;
mod fleet_support;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fleet_support::Fleet;
use support::UserFixture;
use uuid::Uuid;
use vyx_fleet::db::rollout::{RolloutRecord, load_current};
use vyx_fleet::sim::{Faults, Sim};

const V2: &str = "registry.fly.io/vyx-screener:v2";
const BROKEN: &str = "registry.fly.io/vyx-screener:broken";

async fn paid(fleet: &Fleet, n: usize) -> Vec<Uuid> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(UserFixture::paid("pro").insert(&fleet.db.pool).await);
    }
    v
}

/// A converged fleet of `n` apps with short rollout settings (soak 1s).
async fn fleet_of(n: usize, max_unavailable: &str) -> (Fleet, Vec<Uuid>) {
    let fleet = Fleet::builder()
        .var("ROLLOUT_SOAK", "1s")
        .var("ROLLOUT_MAX_UNAVAILABLE", max_unavailable)
        .var("MAX_CONCURRENCY", "8")
        .start()
        .await;
    let users = paid(&fleet, n).await;
    fleet.converge().await;
    (fleet, users)
}

/// Run passes (as the daemon's loop would, a short interval apart) until `done` holds for the
/// current rollout; panics after `deadline`.
async fn passes_until(
    fleet: &Fleet,
    deadline: Duration,
    done: impl Fn(&RolloutRecord) -> bool,
) -> RolloutRecord {
    let start = Instant::now();
    loop {
        fleet.pass().await;
        let r = load_current(&fleet.db.pool)
            .await
            .unwrap()
            .expect("a rollout row");
        if done(&r) {
            return r;
        }
        assert!(
            start.elapsed() < deadline,
            "rollout not done within {deadline:?}: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Samples the simulator while a rollout runs: the most machines at once that are not `started`
/// with every check passing (in transition: updating, starting, failing their checks).
struct Sampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(sim: &Sim) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicUsize::new(0));
        let url = format!("{}/_sim/snapshot", sim.base_url());
        let (s, p) = (stop.clone(), peak.clone());
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            while !s.load(Ordering::Relaxed) {
                if let Ok(r) = http.get(&url).send().await
                    && let Ok(snap) = r.json::<vyx_fleet::sim::Snapshot>().await
                {
                    let n = snap
                        .apps
                        .iter()
                        .filter(|a| a.org == fleet_support::ORG && !a.deleting)
                        .flat_map(|a| a.machines.iter())
                        .filter(|m| m.state != "destroyed" && m.state != "destroying")
                        .filter(|m| {
                            m.state != "started" || m.checks.iter().any(|c| c.status != "passing")
                        })
                        .count();
                    p.fetch_max(n, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        Sampler { stop, peak, task }
    }

    async fn peak(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        self.peak.load(Ordering::Relaxed)
    }
}

/// Machine id → app name, for every machine of our org.
fn machine_apps(fleet: &Fleet) -> BTreeMap<String, String> {
    fleet
        .apps()
        .into_iter()
        .flat_map(|a| a.machines.into_iter().map(move |m| (m.id, a.name.clone())))
        .collect()
}

/// The machine updates in the call log, in order, as app names (`POST …/machines/{id}`).
fn updated_apps(fleet: &Fleet, since_seq: u64) -> Vec<String> {
    fleet
        .writes()
        .into_iter()
        .filter(|c| c.seq > since_seq && c.class == "machines.update" && c.status == Some(200))
        .filter_map(|c| c.path.split('/').nth(3).map(str::to_string))
        .collect()
}

fn last_seq(fleet: &Fleet) -> u64 {
    fleet.sim.calls().last().map_or(0, |c| c.seq)
}

async fn waves_by_user(fleet: &Fleet, users: &[Uuid]) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for u in users {
        let (wave, state): (Option<i32>, Option<String>) = sqlx::query_as(
            "SELECT rollout_wave, rollout_state FROM public.user_fly_apps WHERE user_id = $1",
        )
        .bind(u)
        .fetch_one(&fleet.db.pool)
        .await
        .unwrap();
        out.push((wave.unwrap_or(0), state.unwrap_or_default()));
    }
    out
}

fn images(fleet: &Fleet) -> BTreeMap<String, String> {
    fleet
        .apps()
        .into_iter()
        .map(|a| {
            let m = a.machines.iter().find(|m| m.state != "destroyed").cloned();
            (
                a.name,
                m.map(|m| m.config["image"].as_str().unwrap_or("").to_string())
                    .unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_healthy_image_change_moves_one_canary_then_doubling_waves_never_above_the_bound() {
    let (mut fleet, users) = fleet_of(10, "4").await;
    let since = last_seq(&fleet);
    fleet.reconfigure("USER_APP_IMAGE", V2);
    let sampler = Sampler::start(&fleet.sim);
    let r = passes_until(&fleet, Duration::from_secs(180), |r| {
        r.completed_at.is_some()
    })
    .await;
    let peak = sampler.peak().await;

    assert_eq!((r.moved, r.failed, r.halted), (10, 0, false), "{r:?}");
    assert!(
        images(&fleet).values().all(|i| i == V2),
        "{:?}",
        images(&fleet)
    );
    // Wave sizes: 1 (the canary), 2, 4, then the rest, capped at 4.
    let mut sizes: BTreeMap<i32, usize> = BTreeMap::new();
    for (wave, state) in waves_by_user(&fleet, &users).await {
        assert_eq!(state, "healthy");
        *sizes.entry(wave).or_default() += 1;
    }
    assert_eq!(sizes.values().copied().collect::<Vec<_>>(), [1, 2, 4, 3]);
    // The call log shows the same: each app updated once, in wave order.
    let updates = updated_apps(&fleet, since);
    assert_eq!(
        updates.len(),
        10,
        "each app updated exactly once: {updates:?}"
    );
    let mut wave_of: BTreeMap<String, i32> = BTreeMap::new();
    for (u, (wave, _)) in users.iter().zip(waves_by_user(&fleet, &users).await) {
        wave_of.insert(fleet.row(*u).await.fly_app_name, wave);
    }
    let order: Vec<i32> = updates.iter().map(|a| wave_of[a]).collect();
    assert!(
        order.windows(2).all(|w| w[0] <= w[1]),
        "updates out of wave order: {order:?}"
    );
    assert!(peak <= 4, "{peak} machines in transition at once (bound 4)");
    assert!(peak >= 1, "the sampler saw the rollout");
}

#[tokio::test]
async fn a_broken_image_reaches_only_the_canary_which_is_rolled_back_and_a_fixed_image_then_rolls_out()
 {
    let fleet = Fleet::builder().var("ROLLOUT_SOAK", "1s").start().await;
    let mut fleet = fleet;
    let users = paid(&fleet, 6).await;
    fleet.converge().await;
    let before = images(&fleet);
    let since = last_seq(&fleet);
    fleet.sim.set_failing_images(vec![BROKEN.to_string()]);
    fleet.reconfigure("USER_APP_IMAGE", BROKEN);
    fleet.ctx.timeouts.healthy = Duration::from_secs(2);

    let r = passes_until(&fleet, Duration::from_secs(120), |r| {
        r.halted && r.rolled_back == 1
    })
    .await;
    assert_eq!(r.halt_kind.as_deref(), Some("canary_failed"), "{r:?}");
    assert_eq!((r.moved, r.failed), (1, 1), "{r:?}");
    let metrics = fleet.metrics.encode();
    assert!(metrics.contains("vyx_fleet_rollout_halted 1"), "{metrics}");
    // A few more passes: the halt holds, nobody else moves.
    for _ in 0..3 {
        fleet.pass().await;
    }
    let updates = updated_apps(&fleet, since);
    let touched: BTreeSet<&String> = updates.iter().collect();
    assert_eq!(touched.len(), 1, "only the canary was updated: {updates:?}");
    assert_eq!(updates.len(), 2, "the move and its rollback: {updates:?}");
    assert_eq!(
        images(&fleet),
        before,
        "every app runs the previous image again"
    );
    for app in fleet.apps() {
        let m = &app.machines[0];
        assert_eq!(m.state, "started", "{}", app.name);
    }
    // Halted with its canary rolled back, the rollout has no work until a resume or a new
    // target: the sweep's work list names nothing, so a tick is not a full pass of the fleet.
    let list = vyx_fleet::reconcile::work_list(&fleet.ctx, &fleet.pass_cfg, &[])
        .await
        .unwrap();
    assert!(list.is_empty(), "a halted rollout is no work: {list:?}");
    // The rolled-back row names what its machine runs, not the target it left.
    let canary = touched.iter().next().unwrap().to_string();
    let (digest, image): (Option<String>, Option<String>) = sqlx::query_as(
        "SELECT config_digest, docker_image FROM public.user_fly_apps WHERE fly_app_name = $1",
    )
    .bind(&canary)
    .fetch_one(&fleet.db.pool)
    .await
    .unwrap();
    assert_eq!(image.as_deref(), Some(fleet_support::IMAGE));
    assert_eq!(digest, None, "the target's config digest is not claimed");

    // `status --json` reports the halt with its reason.
    let env = bin_support::BinEnv::full(&fleet.db.url, &fleet.sim.base_url());
    let out = bin_support::run_to_completion(&env, &["status", "--json"], bin_support::secs(60))
        .await
        .ok();
    let doc: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(doc["rollout"]["halted"], true, "{doc}");
    assert_eq!(doc["rollout"]["halt"]["kind"], "canary_failed", "{doc}");
    assert_eq!(doc["rollout"]["target"]["image"], BROKEN, "{doc}");

    // A fixed image is a new target: the halt is over and it rolls out to every app.
    fleet.reconfigure("USER_APP_IMAGE", V2);
    let r = passes_until(&fleet, Duration::from_secs(180), |r| {
        r.completed_at.is_some()
    })
    .await;
    assert!(!r.halted && r.moved == 6, "{r:?}");
    assert!(
        images(&fleet).values().all(|i| i == V2),
        "{:?}",
        images(&fleet)
    );
    let _ = users;
}

#[tokio::test]
async fn a_guest_size_change_goes_through_the_waves() {
    let (mut fleet, users) = fleet_of(4, "2").await;
    let since = last_seq(&fleet);
    fleet.reconfigure("USER_APP_MEMORY_MB", "1024");
    passes_until(&fleet, Duration::from_secs(120), |r| {
        r.completed_at.is_some()
    })
    .await;
    let waves: BTreeSet<i32> = waves_by_user(&fleet, &users)
        .await
        .into_iter()
        .map(|(w, _)| w)
        .collect();
    assert_eq!(waves, BTreeSet::from([1, 2, 3]), "1, 2, then the last app");
    assert_eq!(updated_apps(&fleet, since).len(), 4);
    for app in fleet.apps() {
        assert_eq!(
            app.machines[0].config["guest"]["memory_mb"], 1024,
            "{}",
            app.name
        );
    }
    // The rows record the size and cost of what now runs (2 shared CPUs by default).
    let want = vyx_fleet::reconcile::monthly_cost_estimate_usd(2, 1024);
    for u in &users {
        let (mem, cost): (Option<i32>, Option<f64>) = sqlx::query_as(
            "SELECT memory_mb, monthly_cost_estimate_usd::float8 FROM public.user_fly_apps \
              WHERE user_id = $1",
        )
        .bind(u)
        .fetch_one(&fleet.db.pool)
        .await
        .unwrap();
        assert_eq!(mem, Some(1024));
        assert!(
            (cost.unwrap_or_default() - want).abs() < 0.01,
            "{cost:?} vs {want}"
        );
    }
}

#[tokio::test]
async fn a_region_change_replaces_machines_make_before_break_in_waves() {
    let (mut fleet, users) = fleet_of(3, "2").await;
    let old: BTreeMap<String, String> = machine_apps(&fleet)
        .into_iter()
        .map(|(m, a)| (a, m))
        .collect();
    let since = last_seq(&fleet);
    fleet.reconfigure("USER_APP_REGION", "ams");
    passes_until(&fleet, Duration::from_secs(120), |r| {
        r.completed_at.is_some()
    })
    .await;
    for app in fleet.apps() {
        let live: Vec<_> = app
            .machines
            .iter()
            .filter(|m| m.state != "destroyed")
            .collect();
        assert_eq!(live.len(), 1, "{}: {live:?}", app.name);
        assert_eq!(live[0].region, "ams");
        assert_ne!(live[0].id, old[&app.name], "a new machine");
    }
    for u in &users {
        let region = fleet.row(*u).await.region;
        assert_eq!(
            region.as_deref(),
            Some("ams"),
            "the row follows the machine"
        );
    }
    let waves: BTreeSet<i32> = waves_by_user(&fleet, &users)
        .await
        .into_iter()
        .map(|(w, _)| w)
        .collect();
    assert_eq!(waves, BTreeSet::from([1, 2]));
    // Make before break: each app's move creates its new machine before the destroy of its old
    // one (the move's create, not the fleet's first one).
    let writes: Vec<_> = fleet
        .writes()
        .into_iter()
        .filter(|c| c.seq > since)
        .collect();
    for (app, old_id) in &old {
        let create = writes.iter().position(|c| {
            c.class == "machines.create" && c.path.contains(app.as_str()) && c.status == Some(200)
        });
        let destroy = writes
            .iter()
            .position(|c| c.method == "DELETE" && c.path.contains(old_id.as_str()));
        assert!(
            create.is_some() && destroy.is_some() && create < destroy,
            "{app}"
        );
    }
}

#[tokio::test]
async fn a_region_without_capacity_halts_at_the_canary_and_every_user_keeps_a_running_machine() {
    let (mut fleet, _users) = fleet_of(4, "2").await;
    let before = machine_apps(&fleet);
    fleet.sim.set_faults(Faults {
        no_capacity_regions: vec!["ams".into()],
        ..Default::default()
    });
    fleet.reconfigure("USER_APP_REGION", "ams");
    let r = passes_until(&fleet, Duration::from_secs(120), |r| {
        r.halted && r.rolled_back == 1
    })
    .await;
    assert_eq!(r.halt_kind.as_deref(), Some("canary_failed"));
    for _ in 0..3 {
        fleet.pass().await;
    }
    assert_eq!(
        machine_apps(&fleet),
        before,
        "the same machines, none destroyed"
    );
    for app in fleet.apps() {
        assert_eq!(app.machines.len(), 1, "{}", app.name);
        assert_eq!(app.machines[0].state, "started", "{}", app.name);
    }
}

/// The real binary, SIGKILLed while apps are moving or soaking: the next daemon (after the lease
/// expires) resumes from the database and finishes the rollout, and no machine is updated twice.
#[tokio::test]
async fn a_daemon_sigkilled_mid_rollout_resumes_and_moves_no_app_twice() {
    use bin_support::{Daemon, World, run_to_completion, secs, wait_until};
    let world = World::start(vyx_fleet::sim::SimConfig::default()).await;
    let users = bin_support::insert_users(world.pool(), 6, "pro").await;
    run_to_completion(&world.env, &["reconcile", "--once"], secs(120))
        .await
        .ok();
    for u in &users {
        world.wait_provisioned(*u, secs(60)).await;
    }
    world.sim.clear_calls();
    let env = world
        .env
        .clone()
        .with("USER_APP_IMAGE", V2)
        .with("ROLLOUT_SOAK", "2s")
        .with("ROLLOUT_MAX_UNAVAILABLE", "2");
    let pool = world.pool().clone();
    let mut first = Daemon::spawn(&env, "rollout-kill-a");
    // Kill it while the rollout is under way: some apps moved, at least one in transition.
    wait_until("a rollout in progress", secs(90), || {
        let pool = pool.clone();
        async move {
            let (moving, moved): (i64, i64) = sqlx::query_as(
                "SELECT count(*) FILTER (WHERE rollout_state IN ('moving', 'soaking')), \
                        count(*) FILTER (WHERE rollout_state IS NOT NULL) \
                   FROM public.user_fly_apps",
            )
            .fetch_one(&pool)
            .await
            .map_err(|e| e.to_string())?;
            if moving >= 1 && (2..6).contains(&moved) {
                Ok(())
            } else {
                Err(format!("moving {moving}, moved {moved}"))
            }
        }
    })
    .await;
    first.sigkill();
    let _second = Daemon::spawn(&env, "rollout-kill-b");
    wait_until("the rollout completed", secs(180), || {
        let pool = pool.clone();
        async move {
            match load_current(&pool).await.map_err(|e| e.to_string())? {
                Some(r) if r.completed_at.is_some() => Ok(()),
                r => Err(format!("{r:?}")),
            }
        }
    })
    .await;
    let mut updates: BTreeMap<String, usize> = BTreeMap::new();
    for c in world
        .sim
        .calls()
        .iter()
        .filter(|c| c.class == "machines.update")
    {
        *updates.entry(c.path.clone()).or_default() += 1;
    }
    assert_eq!(updates.len(), 6, "every machine updated: {updates:?}");
    assert!(
        updates.values().all(|n| *n == 1),
        "no machine updated twice: {updates:?}"
    );
    for app in bin_support::managed_apps(&world.sim) {
        let m = app
            .machines
            .iter()
            .find(|m| m.state == "started")
            .expect("running");
        assert_eq!(m.config["image"], V2, "{}", app.name);
    }
}
