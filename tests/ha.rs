//! High availability of `vyx-fleet run`, black box (DESIGN §4): SIGTERM exits 0 promptly and gives the
//! lease up; of two replicas exactly one leads; SIGKILL of the leader is survived by the standby, with
//! no app or machine created twice and every invariant holding. Times (takeover, drain) are printed as
//! `measured:` figures, never asserted: a loaded 2-core machine stretches them.

mod bin_support;
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bin_support::{Daemon, World, call_figures, check_converged, insert_users, secs, wait_until};
use sqlx::PgPool;
use support::{UserFixture, set_subscription};
use vyx_fleet::sim::SimConfig;

#[derive(Debug, Clone, sqlx::FromRow)]
struct Lease {
    holder: Option<String>,
    term: i64,
    live: bool,
}

async fn lease(pool: &PgPool) -> Lease {
    sqlx::query_as(
        "SELECT holder, term, coalesce(expires_at > clock_timestamp(), false) AS live \
         FROM vyx_fleet.lease WHERE name = 'controller'",
    )
    .fetch_one(pool)
    .await
    .expect("read the lease row")
}

/// Waits until one of `daemons` holds a live lease; returns its index.
async fn wait_leader(pool: &PgPool, daemons: &[&Daemon], timeout: Duration) -> usize {
    wait_until("a leader among the replicas", timeout, || async {
        let l = lease(pool).await;
        if !l.live {
            return Err(format!("lease not live: {l:?}"));
        }
        daemons
            .iter()
            .position(|d| d.holder().is_some() && d.holder() == l.holder)
            .ok_or_else(|| format!("lease held by {:?}, not by our replicas", l.holder))
    })
    .await
}

/// Waits until the fleet satisfies every invariant and has `apps` apps.
async fn wait_converged(world: &World, apps: usize, timeout: Duration) -> bin_support::Summary {
    wait_until(&format!("converged with {apps} apps"), timeout, || async {
        let s = check_converged(world.pool(), &world.sim).await?;
        if s.apps == apps {
            Ok(s)
        } else {
            Err(format!("{} apps, want {apps}", s.apps))
        }
    })
    .await
}

/// No app created twice and no machine created twice: every applied `apps.create` made one of the
/// `apps` apps, and each app got exactly one applied `machines.create`.
fn assert_created_once(world: &World, apps: usize) {
    let f = call_figures(&world.sim);
    assert_eq!(
        f.creates_applied, apps,
        "applied app creates vs apps: {f:?}"
    );
    let twice: HashMap<&String, &usize> = f
        .machine_creates_applied
        .iter()
        .filter(|(_, n)| **n > 1)
        .collect();
    assert!(twice.is_empty(), "machines created twice: {twice:?}");
}

#[tokio::test]
async fn sigterm_exits_0_and_releases_the_lease() {
    let world = World::start(SimConfig::default()).await;
    let users = insert_users(world.pool(), 2, "pro").await;
    let mut d = Daemon::spawn(&world.env, "term");
    wait_leader(world.pool(), &[&d], secs(30)).await;
    for u in &users {
        world.wait_provisioned(*u, secs(60)).await;
    }
    let before = lease(world.pool()).await;
    assert!(before.live);

    let t0 = Instant::now();
    d.sigterm();
    let status = d.wait_exit(secs(30)).await.expect("exits after SIGTERM");
    eprintln!("measured: SIGTERM to exit (idle leader) {:?}", t0.elapsed());
    assert!(status.success(), "exit status {status:?}\n{}", d.stderr());
    let after = lease(world.pool()).await;
    assert!(!after.live, "lease released: {after:?}");
    assert_eq!(after.term, before.term);
    let lines = d.log_lines();
    assert!(
        lines.iter().any(|l| l["message"] == "lease released"),
        "the daemon said it released the lease"
    );
}

#[tokio::test]
async fn sigterm_in_the_middle_of_a_pass_still_exits_0_and_a_standby_takes_over_at_once() {
    // Slow machine starts: a pass is busy for seconds when the signal arrives.
    let mut cfg = SimConfig::default();
    cfg.timings.machine_start = Duration::from_secs(3);
    cfg.timings.checks_settle = Duration::from_secs(1);
    let world = World::start(cfg).await;
    let mut a = Daemon::spawn(&world.env, "busy-a");
    wait_leader(world.pool(), &[&a], secs(30)).await;
    let b = Daemon::spawn(&world.env, "busy-b");
    wait_until("replica b up", secs(30), || async {
        b.holder().ok_or("no holder logged yet".to_string())
    })
    .await;
    let users = insert_users(world.pool(), 3, "elite").await;
    // Wait until the leader is inside the work: a machine create was applied.
    wait_until("a machine create in flight", secs(30), || async {
        let f = call_figures(&world.sim);
        if f.machine_creates_applied.is_empty() {
            Err("none yet".to_string())
        } else {
            Ok(())
        }
    })
    .await;

    let t0 = Instant::now();
    a.sigterm();
    let status = a.wait_exit(secs(40)).await.expect("exits after SIGTERM");
    eprintln!(
        "measured: SIGTERM to exit (busy leader) {:?} (kill_timeout 60 s)",
        t0.elapsed()
    );
    assert!(status.success(), "{status:?}\n{}", a.stderr());

    // The lease was given up on the way out, so b need not wait out a TTL: at the moment a has
    // exited, the lease is free or already b's.
    let l = lease(world.pool()).await;
    assert!(
        !l.live || l.holder == b.holder(),
        "the exiting leader kept its lease: {l:?}"
    );
    let t1 = Instant::now();
    wait_leader(world.pool(), &[&b], secs(60)).await;
    eprintln!(
        "measured: standby took over {:?} after the old leader exited",
        t1.elapsed()
    );
    for u in &users {
        world.wait_provisioned(*u, secs(90)).await;
    }
    wait_converged(&world, 3, secs(60)).await;
    assert_created_once(&world, 3);
}

#[tokio::test]
async fn exactly_one_of_two_replicas_leads_and_readyz_says_which() {
    let world = World::start(SimConfig::default()).await;
    let a = Daemon::spawn(&world.env, "one-a");
    let b = Daemon::spawn(&world.env, "one-b");
    let both = [&a, &b];
    let leader = wait_leader(world.pool(), &both, secs(30)).await;
    let standby = 1 - leader;
    // The leader reports ready once its first pass has talked to the database.
    wait_until("the leader's /readyz is 200", secs(20), || async {
        match both[leader].readyz().await {
            Some((200, body)) if body["role"] == "leader" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // The standby serves HTTP only once it connected and ran the migrations: started beside the
    // leader, it may still be starting when the leader is ready (seen once: it was not up yet).
    wait_until("the standby answers /readyz", secs(20), || async {
        match both[standby].readyz().await {
            Some((_, body)) if body["role"] == "standby" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // Sampled over several renew periods: the lease never changes hands while both live.
    let term = lease(world.pool()).await.term;
    let t0 = Instant::now();
    let mut samples = 0;
    while t0.elapsed() < secs(8) {
        let l = lease(world.pool()).await;
        assert!(l.live, "{l:?}");
        assert_eq!(l.term, term, "no leadership change while both are alive");
        assert_eq!(l.holder, both[leader].holder());
        let (code, body) = both[leader].readyz().await.expect("leader answers /readyz");
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["role"], "leader", "{body}");
        let (_, body) = both[standby]
            .readyz()
            .await
            .expect("standby answers /readyz");
        assert_eq!(body["role"], "standby", "{body}");
        samples += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(samples > 5);
}

#[tokio::test]
async fn a_standby_is_ready() {
    let world = World::start(SimConfig::default()).await;
    let a = Daemon::spawn(&world.env, "ready-a");
    wait_leader(world.pool(), &[&a], secs(30)).await;
    let b = Daemon::spawn(&world.env, "ready-b");
    // /readyz (src/http.rs): "200 ... on the leader and on standbys ('ready' means 'can take over')".
    wait_until("the standby's /readyz is 200", secs(20), || async {
        match b.readyz().await {
            Some((200, body)) if body["role"] == "standby" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

#[tokio::test]
async fn the_standby_takes_over_after_a_sigkill_and_keeps_converging() {
    let world = World::start(SimConfig::default()).await;
    let pool = world.pool();
    let users = insert_users(pool, 4, "pro").await;
    let mut daemons = [
        Daemon::spawn(&world.env, "kill-a"),
        Daemon::spawn(&world.env, "kill-b"),
    ];
    let leader = wait_leader(pool, &[&daemons[0], &daemons[1]], secs(30)).await;
    let s = wait_converged(&world, 4, secs(90)).await;
    assert_eq!(s.wanted, 4);
    assert_created_once(&world, 4);
    for u in &users {
        world.wait_provisioned(*u, secs(5)).await;
    }

    let standby = 1 - leader;
    let old = lease(pool).await;
    let t0 = Instant::now();
    daemons[leader].sigkill();
    // A change made while nobody leads.
    let newcomer = UserFixture::paid("elite").insert(pool).await;
    let new_leader = wait_leader(pool, &[&daemons[standby]], secs(60)).await;
    let takeover = t0.elapsed();
    assert_eq!(new_leader, 0);
    let now = lease(pool).await;
    assert!(
        now.term > old.term,
        "a new fencing term: {old:?} -> {now:?}"
    );
    eprintln!(
        "measured: takeover after SIGKILL of the leader {takeover:.2?} (lease ttl 15 s, standby poll 2 s)"
    );

    world.wait_provisioned(newcomer, secs(60)).await;
    wait_converged(&world, 5, secs(60)).await;
    assert_created_once(&world, 5);
}

/// Ends the lease of `dead` (a killed replica) now, as its TTL would: the next replica to try takes it.
async fn expire_lease_of(pool: &PgPool, dead: &Daemon) {
    let holder = dead
        .holder()
        .expect("the killed replica logged its holder id");
    sqlx::query(
        "UPDATE vyx_fleet.lease SET expires_at = clock_timestamp() \
         WHERE name = 'controller' AND holder = $1",
    )
    .bind(holder)
    .execute(pool)
    .await
    .expect("expire the killed leader's lease");
}

#[tokio::test]
async fn repeated_leader_kills_keep_every_invariant() {
    let world = World::start(SimConfig::default()).await;
    let pool = world.pool();
    let mut users = insert_users(pool, 5, "pro").await;
    let mut daemons = vec![
        Daemon::spawn(&world.env, "rk-0"),
        Daemon::spawn(&world.env, "rk-1"),
    ];
    wait_converged(&world, 5, secs(90)).await;
    let mut takeovers = Vec::new();
    for round in 0..3 {
        let refs: Vec<&Daemon> = daemons.iter().collect();
        let leader = wait_leader(pool, &refs, secs(30)).await;
        // Kill while there is work in flight: a new user and a downgrade land just before.
        let newcomer = UserFixture::paid("pro").insert(pool).await;
        users.push(newcomer);
        let leaver = users.remove(0);
        set_subscription(pool, leaver, "free", "active").await;
        let t0 = Instant::now();
        let mut dead = daemons.remove(leader);
        dead.sigkill();
        // The dead leader's lease runs out now rather than a TTL later: waiting out the TTL is
        // the_standby_takes_over_after_a_sigkill_and_keeps_converging's business, and here it would
        // only let the in-flight work settle before the next leader sees it.
        expire_lease_of(pool, &dead).await;
        let refs: Vec<&Daemon> = daemons.iter().collect();
        wait_leader(pool, &refs, secs(60)).await;
        takeovers.push(t0.elapsed());
        // Back to two replicas.
        daemons.push(Daemon::spawn(&world.env, &format!("rk-{}", round + 2)));
        // One user in, one out: still five wanted.
        let s = wait_converged(&world, 5, secs(90)).await;
        println!("round {round}: {s:?}");
        assert_eq!(s.wanted, users.len());
    }
    eprintln!("measured: takeovers after SIGKILL and a lease expired by hand {takeovers:.2?}");
    let s = check_converged(pool, &world.sim).await.unwrap();
    assert_eq!(s.wanted, 5);
    assert_eq!(s.unwanted, 3);
    assert_eq!(s.apps, 5);
    assert_eq!(s.live_rows, 5);
    let f = call_figures(&world.sim);
    // 8 distinct users ever wanted, each app created once (none re-created after a kill).
    assert_eq!(f.creates_applied, 8, "{f:?}");
    assert!(
        f.machine_creates_applied.values().all(|n| *n == 1),
        "{:?}",
        f.machine_creates_applied
    );
}

fn signal(d: &Daemon, sig: &str) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(d.pid().to_string())
        .status()
        .expect("kill(1)")
        .success();
    assert!(ok, "kill -{sig} {}", d.pid());
}

#[tokio::test]
async fn sigint_is_a_clean_stop_too() {
    let world = World::start(SimConfig::default()).await;
    let mut d = Daemon::spawn(&world.env, "int");
    wait_leader(world.pool(), &[&d], secs(30)).await;
    signal(&d, "INT");
    let status = d.wait_exit(secs(30)).await.expect("exits after SIGINT");
    assert!(status.success(), "{status:?}");
    assert!(!lease(world.pool()).await.live, "lease released");
}

/// A leader frozen (SIGSTOP) in the middle of its work loses the lease to the standby; when it wakes
/// up (SIGCONT) its stale work must be fenced: no second app, the fleet converges, and the old process
/// goes back to standing by instead of fighting for the lease.
#[tokio::test]
async fn a_frozen_leader_that_wakes_up_is_fenced() {
    let mut cfg = SimConfig::default();
    cfg.timings.machine_start = Duration::from_secs(2);
    let world = World::start(cfg).await;
    let pool = world.pool();
    let mut a = Daemon::spawn(&world.env, "frozen-a");
    wait_leader(pool, &[&a], secs(30)).await;
    let b = Daemon::spawn(&world.env, "frozen-b");
    wait_until("replica b up", secs(30), || async {
        b.holder().ok_or("no holder logged yet".to_string())
    })
    .await;
    let first = insert_users(pool, 4, "pro").await;
    wait_until("a machine create in flight", secs(60), || async {
        if call_figures(&world.sim).machine_creates_applied.is_empty() {
            Err("none yet".to_string())
        } else {
            Ok(())
        }
    })
    .await;
    let before = lease(pool).await;
    signal(&a, "STOP");
    let t0 = Instant::now();
    wait_leader(pool, &[&b], secs(60)).await;
    eprintln!(
        "measured: takeover from a frozen leader {:.2?}",
        t0.elapsed()
    );
    assert!(lease(pool).await.term > before.term);
    let second = insert_users(pool, 2, "elite").await;
    signal(&a, "CONT");

    for u in first.iter().chain(&second) {
        world.wait_provisioned(*u, secs(90)).await;
    }
    wait_converged(&world, 6, secs(60)).await;
    assert_eq!(
        call_figures(&world.sim).creates_applied,
        6,
        "no app created twice"
    );
    // The woken replica stands by: b keeps the lease, a is still running.
    let l = lease(pool).await;
    assert_eq!(l.holder, b.holder(), "{l:?}");
    assert!(a.is_running(), "the old leader went back to standby");
    let (_, body) = a.readyz().await.expect("a answers");
    assert_eq!(body["role"], "standby", "{body}");
    let f = call_figures(&world.sim);
    println!(
        "machine creates per app after the wake-up: {:?}",
        f.machine_creates_applied
    );
}

/// A deploy of a new image is a rolling restart with a new `USER_APP_IMAGE`: every machine moves to
/// it, no app is re-created.
#[tokio::test]
async fn a_restart_with_a_new_image_rolls_it_out_without_recreating_apps() {
    let world = World::start(SimConfig::default()).await;
    let pool = world.pool();
    let users = insert_users(pool, 3, "pro").await;
    let mut d = Daemon::spawn(&world.env, "image-v1");
    wait_converged(&world, 3, secs(90)).await;
    d.sigterm();
    assert!(d.wait_exit(secs(30)).await.expect("stops").success());

    let v2 = "registry.fly.io/vyx-screener:bb-2";
    // The new image moves in waves, one app at a time for 3 apps: a short soak.
    let env2 = world
        .env
        .clone()
        .with("USER_APP_IMAGE", v2)
        .with("ROLLOUT_SOAK", "1s");
    let _d2 = Daemon::spawn(&env2, "image-v2");
    wait_until("every machine on the new image", secs(120), || async {
        let apps = world.managed_apps();
        let on_v2 = apps
            .iter()
            .filter(|a| {
                let live: Vec<_> = a
                    .machines
                    .iter()
                    .filter(|m| m.state != "destroyed")
                    .collect();
                live.len() == 1 && live[0].config["image"] == v2 && live[0].state == "started"
            })
            .count();
        let rows: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM public.user_fly_apps \
             WHERE deleted_at IS NULL AND status = 'active' AND docker_image = $1",
        )
        .bind(v2)
        .fetch_one(pool)
        .await
        .map_err(|e| e.to_string())?;
        if apps.len() == 3 && on_v2 == 3 && rows == 3 {
            Ok(())
        } else {
            Err(format!(
                "{} apps, {on_v2} on v2, {rows} rows record v2",
                apps.len()
            ))
        }
    })
    .await;
    assert_eq!(
        call_figures(&world.sim).creates_applied,
        3,
        "no app re-created"
    );
    for u in &users {
        world.wait_provisioned(*u, secs(5)).await;
    }
}

/// A deposed leader must not write to Fly: asserted on the simulator's call log (each replica's holder id rides in its
/// `User-Agent`): a leader frozen (SIGSTOP) in the middle of a pass, whose lease then runs out and
/// is taken by the standby, makes no Fly write arriving after the takeover once it wakes up
/// (SIGCONT). Calls it sent before the freeze may still land; nothing sent after may.
#[tokio::test]
async fn a_deposed_leader_frozen_mid_pass_makes_no_fly_write_after_the_takeover() {
    let mut cfg = SimConfig::default();
    cfg.timings.machine_start = Duration::from_secs(2);
    let world = World::start(cfg).await;
    let pool = world.pool();
    // One action at a time: when frozen, the leader still has most of its pass ahead of it.
    let env = world.env.clone().with("MAX_CONCURRENCY", "1");
    let a = Daemon::spawn(&env, "deposed-a");
    wait_leader(pool, &[&a], secs(30)).await;
    let a_holder = a.holder().expect("a logged its holder id");
    let b = Daemon::spawn(&env, "deposed-b");
    wait_until("replica b up", secs(30), || async {
        b.holder().ok_or("no holder logged yet".to_string())
    })
    .await;
    let users = insert_users(pool, 4, "pro").await;
    wait_until(
        "the leader mid-pass: a machine create applied",
        secs(60),
        || async {
            if call_figures(&world.sim).machine_creates_applied.is_empty() {
                Err("none yet".to_string())
            } else {
                Ok(())
            }
        },
    )
    .await;
    signal(&a, "STOP");
    let frozen_at = Instant::now();
    // The frozen holder's lease runs out (expired by hand rather than waiting out the TTL).
    sqlx::query(
        "UPDATE vyx_fleet.lease SET expires_at = clock_timestamp() \
         WHERE name = 'controller' AND holder = $1",
    )
    .bind(&a_holder)
    .execute(pool)
    .await
    .expect("expire the frozen leader's lease");
    wait_leader(pool, &[&b], secs(30)).await;
    let takeover = chrono::Utc::now();
    eprintln!(
        "measured: takeover from the frozen leader {:.2?} after SIGSTOP",
        frozen_at.elapsed()
    );
    signal(&a, "CONT");
    for u in &users {
        world.wait_provisioned(*u, secs(90)).await;
    }
    wait_converged(&world, 4, secs(60)).await;
    // The woken replica has run on long enough to notice it no longer leads.
    wait_until("the woken replica stands by", secs(30), || async {
        match a.readyz().await {
            Some((_, body)) if body["role"] == "standby" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let calls = world.sim.calls();
    let from_a = |c: &&vyx_fleet::sim::CallRecord| {
        c.user_agent
            .as_deref()
            .is_some_and(|ua| ua.ends_with(&format!("holder/{a_holder}")))
    };
    let early_writes = calls
        .iter()
        .filter(from_a)
        .filter(|c| c.method != "GET")
        .count();
    eprintln!("measured: {early_writes} Fly writes from the leader before it was frozen");
    assert!(
        early_writes > 0,
        "the call log tells the replicas apart, and the leader was at work when frozen"
    );
    let late_writes: Vec<String> = calls
        .iter()
        .filter(from_a)
        .filter(|c| c.method != "GET" && c.at > takeover)
        .map(|c| format!("{} {} -> {:?}", c.method, c.path, c.status))
        .collect();
    assert!(
        late_writes.is_empty(),
        "the deposed leader wrote to Fly after the takeover: {late_writes:#?}"
    );
    assert_created_once(&world, 4);
}
