//! The interval sweep: a quiet tick costs one delta list and one statement; work found by
//! the statement reaches the per-user queue, fleet-level work a full pass (the contract between the
//! statement and the planner is `tests/sweep_contract.rs`).

mod fleet_support;
mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fleet_support::Fleet;
use support::{UserFixture, set_subscription};
use uuid::Uuid;
use vyx_fleet::db::Store;
use vyx_fleet::reconcile::{Ctx, Sweeper, Tick, run_user};
use vyx_fleet::sim::{FaultKind, FaultRule, Faults};

async fn paid(fleet: &Fleet, n: usize) -> Vec<Uuid> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(UserFixture::paid("pro").insert(&fleet.db.pool).await);
    }
    out
}

/// A converged fleet and a sweeper whose term-start full pass has run.
async fn converged(n: usize) -> (Fleet, Vec<Uuid>, Sweeper) {
    let fleet = Fleet::start().await;
    let users = paid(&fleet, n).await;
    let mut sweeper = Sweeper::default();
    let first = sweeper
        .tick(&fleet.ctx, &fleet.pass_cfg, &fleet.metrics)
        .await
        .unwrap();
    assert!(matches!(first, Tick::Full { .. }), "{first:?}");
    fleet.converge().await;
    // The machines the convergence made are news to the cache once; read them now.
    fleet.pass().await;
    (fleet, users, sweeper)
}

async fn tick(fleet: &Fleet, sweeper: &mut Sweeper) -> Tick {
    sweeper
        .tick(&fleet.ctx, &fleet.pass_cfg, &fleet.metrics)
        .await
        .expect("sweep runs")
}

/// Drain the queue the way the controller's runner does, one user at a time.
async fn run_queue(ctx: &Ctx, fleet: &Fleet) -> Vec<Uuid> {
    let mut ran = Vec::new();
    while !ctx.users.is_empty() {
        let user = ctx.users.next().await.unwrap();
        run_user(ctx, &fleet.pass_cfg, user).await.unwrap();
        ctx.users.done(user);
        ran.push(user);
    }
    ran
}

/// Statements the server executed for a connection of `pool` (max one connection), counted from
/// its `log_statement = 'all'` lines, while `f` runs.
async fn count_statements<F, Fut, T>(fleet: &Fleet, f: F) -> (T, usize)
where
    F: FnOnce(sqlx::PgPool) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    sqlx::query(
        "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET log_statement = ''all''', \
         current_database()); END $$",
    )
    .execute(&fleet.db.pool)
    .await
    .unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&fleet.db.url)
        .await
        .unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let log = support::cluster()
        .await
        .data_dir()
        .parent()
        .unwrap()
        .join("server.log");
    let before = std::fs::read_to_string(&log).unwrap().len();
    let out = f(pool.clone()).await;
    pool.close().await;
    let text = std::fs::read_to_string(&log).unwrap();
    let tag = format!("[{pid}]");
    let n = text[before..]
        .lines()
        .filter(|l| {
            l.contains(&tag) && (l.contains("LOG:  statement:") || l.contains("LOG:  execute"))
        })
        .count();
    (out, n)
}

#[tokio::test]
async fn a_quiet_sweep_on_a_converged_fleet_is_one_delta_and_one_statement_and_queues_nobody() {
    let (fleet, _users, mut sweeper) = converged(3).await;
    fleet.sim.clear_calls();
    let ctx = fleet.ctx.clone();
    let (t, statements) = count_statements(&fleet, |pool| {
        let mut ctx = ctx.clone();
        ctx.store = Store::new(pool, fleet.term);
        let sweeper = &mut sweeper;
        let cfg = fleet.pass_cfg.clone();
        let metrics = fleet.metrics.clone();
        async move { sweeper.tick(&ctx, &cfg, &metrics).await.unwrap() }
    })
    .await;
    assert!(matches!(t, Tick::Queued { users: 0 }), "{t:?}");
    assert!(statements <= 3, "{statements} statements");
    assert_eq!(statements, 1, "the work list is one statement");
    let calls: Vec<String> = fleet.sim.calls().iter().map(|c| c.class.clone()).collect();
    assert_eq!(calls, ["orgs.machines"], "one changed-machine list");
    assert!(fleet.ctx.users.is_empty());
}

#[tokio::test]
async fn a_tier_change_whose_notify_was_lost_is_reconciled_by_the_next_sweep() {
    let (fleet, users, mut sweeper) = converged(2).await;
    // Nobody listens: the NOTIFYs of these commits are lost.
    let upgraded = UserFixture::free().insert(&fleet.db.pool).await;
    set_subscription(&fleet.db.pool, upgraded, "elite", "active").await;
    set_subscription(&fleet.db.pool, users[0], "free", "active").await;

    let t = tick(&fleet, &mut sweeper).await;
    assert!(matches!(t, Tick::Queued { users: 2 }), "{t:?}");
    let ran: BTreeSet<Uuid> = run_queue(&fleet.ctx, &fleet).await.into_iter().collect();
    assert_eq!(ran, BTreeSet::from([upgraded, users[0]]));
    assert_eq!(
        fleet.row(upgraded).await.status,
        "active",
        "the upgrade served"
    );
    assert!(
        fleet.row(users[0]).await.unwanted_since.is_some(),
        "the downgrade's grace started"
    );
}

/// A quiet tick reads only what changed since the last look. A billing write whose transaction
/// was still open when a look took its snapshot commits after it: the next look must still read
/// it (a sequence number handed out before commit would have been passed by then).
#[tokio::test]
async fn a_change_committed_after_a_look_began_is_found_by_the_next_look() {
    let (fleet, users, mut sweeper) = converged(2).await;
    let t = tick(&fleet, &mut sweeper).await;
    assert!(matches!(t, Tick::Queued { users: 0 }), "{t:?}");

    let mut late = vyx_fleet::db::begin(&fleet.db.pool).await.unwrap();
    sqlx::query("UPDATE public.user_subscriptions SET tier = 'free' WHERE user_id = $1")
        .bind(users[1])
        .execute(&mut *late)
        .await
        .unwrap();
    let t = tick(&fleet, &mut sweeper).await;
    assert!(
        matches!(t, Tick::Queued { users: 0 }),
        "not committed yet: {t:?}"
    );
    late.commit().await.unwrap();

    let t = tick(&fleet, &mut sweeper).await;
    assert!(matches!(t, Tick::Queued { users: 1 }), "{t:?}");
    assert_eq!(run_queue(&fleet.ctx, &fleet).await, [users[1]]);
    assert!(fleet.row(users[1]).await.unwanted_since.is_some());
    // The grace (none in these settings) is over at once: the next look hands the deletion to a
    // full pass, and the look after that finds nothing more.
    let t = tick(&fleet, &mut sweeper).await;
    assert!(
        matches!(
            t,
            Tick::Full {
                why: "deletion",
                ..
            }
        ),
        "{t:?}"
    );
    assert_eq!(fleet.row(users[1]).await.status, "deleted");
    let t = tick(&fleet, &mut sweeper).await;
    assert!(matches!(t, Tick::Queued { users: 0 }), "{t:?}");
}

/// A new leader's first full Fly list takes minutes at 100,000 apps, and the work list needs no
/// Fly call: a change whose NOTIFY was lost is queued from the work list while the list still
/// runs, not after it.
#[tokio::test]
async fn a_missed_change_is_queued_while_a_new_terms_full_fly_list_still_runs() {
    let fleet = Fleet::builder()
        .var("RECONCILE_INTERVAL", "1s")
        .start()
        .await;
    paid(&fleet, 1).await;
    fleet.converge().await;
    // A new term starts with no observation; every list call now takes 5 s.
    fleet.ctx.observed.invalidate().await;
    fleet.sim.set_faults(Faults {
        rules: vec![
            FaultRule::new("orgs.machines", 1.0, FaultKind::Latency { ms: 5000 }),
            FaultRule::new("apps.list", 1.0, FaultKind::Latency { ms: 5000 }),
        ],
        ..Faults::default()
    });
    // Nobody listens: this upgrade's NOTIFY is lost.
    let upgraded = UserFixture::free().insert(&fleet.db.pool).await;
    set_subscription(&fleet.db.pool, upgraded, "elite", "active").await;

    let mut sweeper = Sweeper::default();
    let ticked = AtomicBool::new(false);
    let tick = async {
        let t = tick(&fleet, &mut sweeper).await;
        ticked.store(true, Ordering::SeqCst);
        t
    };
    let queued = async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while fleet.ctx.users.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let listing = !ticked.load(Ordering::SeqCst);
        let user = fleet.ctx.users.next().await;
        (listing, user)
    };
    let (t, (listing, user)) = tokio::join!(tick, queued);
    assert_eq!(user, Some(upgraded));
    assert!(listing, "queued only after the full list and pass: {t:?}");
    assert!(matches!(t, Tick::Full { .. }), "{t:?}");
    run_user(&fleet.ctx, &fleet.pass_cfg, upgraded)
        .await
        .unwrap();
    fleet.ctx.users.done(upgraded);
    fleet.sim.set_faults(Faults::default());
    assert_eq!(fleet.row(upgraded).await.status, "active");
}

#[tokio::test]
async fn a_downgrade_whose_grace_expired_is_deleted_by_a_full_pass() {
    let (fleet, users, mut sweeper) = converged(2).await;
    let app = fleet.row(users[0]).await.fly_app_name;
    set_subscription(&fleet.db.pool, users[0], "free", "active").await;
    assert!(matches!(
        tick(&fleet, &mut sweeper).await,
        Tick::Queued { users: 1 }
    ));
    run_queue(&fleet.ctx, &fleet).await;

    // DEPROVISION_GRACE is 0 s in tests: the deletion is due at once, and only a pass deletes.
    match tick(&fleet, &mut sweeper).await {
        Tick::Full { why, report } => {
            assert_eq!(why, "deletion");
            assert!(
                report
                    .plan
                    .actions
                    .iter()
                    .any(|a| a.kind() == "deprovision"),
                "{:?}",
                report.plan.actions
            );
        }
        t => panic!("expected a full pass, got {t:?}"),
    }
    assert!(fleet.app(&app).is_none(), "the app is gone");
    assert_eq!(fleet.row(users[0]).await.status, "deleted");
    assert_eq!(fleet.row(users[1]).await.status, "active");
}

#[tokio::test]
async fn mass_downgrades_found_by_a_sweep_still_stop_at_the_breaker() {
    let (fleet, users, mut sweeper) = converged(6).await;
    for u in &users {
        set_subscription(&fleet.db.pool, *u, "free", "active").await;
    }
    assert!(matches!(
        tick(&fleet, &mut sweeper).await,
        Tick::Queued { users: 6 }
    ));
    run_queue(&fleet.ctx, &fleet).await;
    match tick(&fleet, &mut sweeper).await {
        Tick::Full { report, .. } => assert!(
            report.plan.findings.iter().any(|f| matches!(
                f,
                vyx_fleet::reconcile::plan::Finding::DeletionsBlocked { .. }
            )),
            "{:?}",
            report.plan.findings
        ),
        t => panic!("expected a full pass, got {t:?}"),
    }
    assert_eq!(
        fleet.apps().len(),
        6,
        "nothing deleted without a confirmation"
    );
}

#[tokio::test]
async fn a_machine_destroyed_by_hand_is_repaired_through_the_delta_and_the_queue() {
    let (fleet, users, mut sweeper) = converged(3).await;
    let row = fleet.row(users[1]).await;
    fleet
        .ctx
        .fly
        .delete_machine(&row.fly_app_name, row.machine_id.as_deref().unwrap(), true)
        .await
        .expect("destroy by hand");
    fleet.sim.clear_calls();

    let t = tick(&fleet, &mut sweeper).await;
    assert!(matches!(t, Tick::Queued { users: 1 }), "{t:?}");
    assert_eq!(run_queue(&fleet.ctx, &fleet).await, [users[1]]);
    let after = fleet.row(users[1]).await;
    assert_eq!(after.status, "active");
    assert_ne!(after.machine_id, row.machine_id, "a new machine");
    let app = fleet.app(&row.fly_app_name).unwrap();
    assert_eq!(
        app.machines.iter().filter(|m| m.state == "started").count(),
        1
    );
    let classes: Vec<String> = fleet.sim.calls().iter().map(|c| c.class.clone()).collect();
    assert!(
        !classes.iter().any(|c| c == "apps.list"),
        "no full list, no full pass: {classes:?}"
    );
}

/// The queue's runner has its own `MAX_CONCURRENCY` slots, so a full pass that holds every one of
/// its own (a migration, a rollout) does not delay a NOTIFY's user.
#[tokio::test]
async fn an_upgrade_is_served_while_a_full_pass_holds_all_its_slots() {
    use std::time::Duration;
    use vyx_fleet::failpoint as fp;

    /// Disarms this thread's failpoints however the test ends.
    struct Disarm;
    impl Drop for Disarm {
        fn drop(&mut self) {
            fp::disarm_this_thread();
        }
    }

    let mut fleet = Fleet::start().await;
    fleet.pass_cfg.max_concurrency = 1;
    vyx_fleet::db::lease::release(&fleet.db.pool, &fleet.holder, fleet.term)
        .await
        .unwrap();
    let slow = paid(&fleet, 2).await;
    // The leader's first pass takes its only slot for its first action and stays there until the
    // test lets it go: the pass holds all its slots for as long as the test needs, without a clock.
    let _disarm = Disarm;
    let busy = fp::arm_pause_on_this_thread(fp::PASS_ACTION_BEFORE_CLAIM);
    let c = fleet.controller(Duration::from_secs(3600));
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move { c.run(rx).await });
    tokio::time::timeout(Duration::from_secs(60), busy.reached())
        .await
        .expect("the leader's first pass takes its slot");

    let upgraded = UserFixture::free().insert(&fleet.db.pool).await;
    set_subscription(&fleet.db.pool, upgraded, "elite", "active").await;
    // The deadline only stops a broken build from hanging the suite; the order is the assertion.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while fleet
        .maybe_row(upgraded)
        .await
        .is_none_or(|r| r.status != "active")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the upgrade waited for the pass"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        fleet.maybe_row(slow[0]).await.is_none() && fleet.maybe_row(slow[1]).await.is_none(),
        "served while the pass still held its only slot, before it touched its users"
    );
    busy.release();
    stop.send(true).unwrap();
    task.await.unwrap();
}

/// The standby's leader-silent alert and the dashboard read the last pass: quiet sweeps keep it
/// fresh, though a full pass now runs only every `RESYNC_INTERVAL`.
#[tokio::test]
async fn quiet_sweeps_count_as_passes_for_the_leader_silent_alert() {
    use std::time::Duration;

    let fleet = Fleet::start().await;
    paid(&fleet, 2).await;
    fleet.converge().await;
    vyx_fleet::db::lease::release(&fleet.db.pool, &fleet.holder, fleet.term)
        .await
        .unwrap();
    let c = fleet.controller(Duration::from_millis(300));
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move { c.run(rx).await });
    let last_pass = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT value FROM vyx_fleet.settings WHERE key = 'last_pass_at'",
        )
        .fetch_optional(&fleet.db.pool)
        .await
        .unwrap()
    };
    let mut seen = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while seen.len() < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "last pass stuck: {seen:?}"
        );
        if let Some(v) = last_pass().await {
            seen.insert(v);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = fleet.metrics.encode();
    assert!(
        metrics.contains("outcome=\"sweep\""),
        "the later ticks were sweeps, not full passes"
    );
    stop.send(true).unwrap();
    task.await.unwrap();
}
