//! The interval sweep (issue 9): a quiet tick costs one delta list and one statement; work found by
//! the statement reaches the per-user queue, fleet-level work a full pass; and the work list never
//! misses a user the planner would act on.

mod fleet_support;
mod support;

use std::collections::{BTreeMap, BTreeSet};

use fleet_support::Fleet;
use rand::{Rng, SeedableRng, rngs::StdRng};
use support::{UserFixture, set_subscription};
use uuid::Uuid;
use vyx_fleet::db::apps::{self, Store};
use vyx_fleet::db::rollout as rollout_db;
use vyx_fleet::reconcile::desired::desired;
use vyx_fleet::reconcile::execute::Ctx;
use vyx_fleet::reconcile::observed::{Observation, ObservedApp, ObservedMachine};
use vyx_fleet::reconcile::pass::plan_settings;
use vyx_fleet::reconcile::plan::{Action, Plan, PlanInput, plan};
use vyx_fleet::reconcile::plan_rollout::RolloutInput;
use vyx_fleet::reconcile::recorded::AppRow;
use vyx_fleet::reconcile::spec::{config_digest, secrets_digest, spec_digest};
use vyx_fleet::reconcile::sweep::{Sweeper, Tick, work_list};
use vyx_fleet::reconcile::targeted::run_user;

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

/// One user's randomly chosen database state (subscription, override, row).
async fn seed_user(fleet: &Fleet, rng: &mut StdRng, target: &Targets) {
    let pick = |rng: &mut StdRng, n: usize| rng.random_range(0..n);
    let sub = [
        None,
        Some(("free", "active")),
        Some(("pro", "active")),
        Some(("pro", "cancelled")),
        Some(("elite", "past_due")),
    ][pick(rng, 5)];
    let mut fx = match sub {
        None => UserFixture::without_subscription(),
        Some((tier, status)) => UserFixture::paid(tier).with_status(status),
    };
    if let Some(o) = [None, None, Some("present"), Some("absent"), Some("paused")][pick(rng, 5)] {
        fx = fx.with_override(o);
    }
    let user = fx.insert(&fleet.db.pool).await;
    if rng.random_bool(0.2) {
        return;
    }
    let status = [
        "provisioning",
        "active",
        "active",
        "active",
        "error",
        "deprovisioning",
        "deleted",
    ][pick(rng, 7)];
    let ago = |rng: &mut StdRng| -> Option<i64> {
        [None, None, None, Some(-3600), Some(-60), Some(3600)][pick(rng, 6)]
    };
    let or_other = |rng: &mut StdRng, v: &str| -> Option<String> {
        [Some(v), Some(v), Some(v), Some(v), Some("other"), None][pick(rng, 6)].map(String::from)
    };
    let unhealthy = rng.random_bool(0.4);
    sqlx::query(
        "INSERT INTO public.user_fly_apps (user_id, fly_app_name, fly_org_slug, status, region, \
           docker_image, health_status, machine_id, ips_ready, config_digest, secrets_digest, \
           spec_digest, next_attempt_at, unwanted_since, deleted_at, unhealthy_since, repair_step, \
           repair_step_at, last_probed_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
           now() + $13 * interval '1 second', now() + $14 * interval '1 second', \
           CASE WHEN $4 = 'deleted' THEN now() END, \
           CASE WHEN $7 = 'unhealthy' THEN now() + $15 * interval '1 second' END, \
           $16, now() + $17 * interval '1 second', now())",
    )
    .bind(user)
    .bind(vyx_fleet::reconcile::naming::candidate(
        &fleet.ctx.prefix,
        user,
        0,
    ))
    .bind(fleet_support::ORG)
    .bind(status)
    .bind(&fleet.ctx.spec.region)
    .bind(or_other(rng, &fleet.ctx.spec.image))
    .bind(if unhealthy { "unhealthy" } else { "healthy" })
    .bind(rng.random_bool(0.8).then(|| format!("m{}", user.simple())))
    .bind(rng.random_bool(0.8))
    .bind(or_other(rng, &target.config))
    .bind(or_other(rng, &target.secrets))
    .bind(or_other(rng, &target.spec))
    .bind(ago(rng))
    .bind(ago(rng))
    .bind([-3600i64, -60][pick(rng, 2)])
    .bind([None, Some("restart"), Some("replace")][pick(rng, 3)])
    .bind(ago(rng))
    .execute(&fleet.db.pool)
    .await
    .unwrap();
}

struct Targets {
    spec: String,
    config: String,
    secrets: String,
}

/// What Fly shows when nothing changed since the last observation: every live row's recorded
/// machine, running what the row says.
fn observation_matching(rows: &[AppRow], fleet: &Fleet) -> Observation {
    let mut obs = Observation::default();
    for r in rows.iter().filter(|r| r.is_live()) {
        let machines = r
            .machine_id
            .iter()
            .map(|id| ObservedMachine {
                id: id.clone(),
                state: "started".into(),
                region: r.region.clone().unwrap_or_default(),
                image: r.docker_image.clone().unwrap_or_default(),
                cpus: Some(fleet.ctx.spec.cpus),
                memory_mb: Some(fleet.ctx.spec.memory_mb),
                cpu_kind: Some("shared".into()),
                user_id: Some(r.user_id),
                op: None,
            })
            .collect();
        obs.apps.insert(
            r.fly_app_name.clone(),
            ObservedApp {
                name: r.fly_app_name.clone(),
                machines,
            },
        );
    }
    obs
}

/// The planner over the whole database state (and an unchanged Fly).
async fn full_plan(fleet: &Fleet) -> Plan {
    let pool = &fleet.db.pool;
    let facts = apps::load_desired_facts(pool).await.unwrap();
    let (desired, _) = desired(&facts, &fleet.pass_cfg.policy);
    let rows = apps::load_rows(pool).await.unwrap();
    let health = vyx_fleet::db::health::load(pool).await.unwrap();
    let now = vyx_fleet::db::now(pool).await.unwrap();
    let record = rollout_db::load_current(pool).await.unwrap();
    let mut recorded = BTreeMap::new();
    if let Some(r) = &record {
        for p in rollout_db::load_progress(pool).await.unwrap() {
            if p.rollout_id == Some(r.id) {
                recorded.insert(p.row_id, p.state_in(r));
            }
        }
    }
    let rollout = RolloutInput {
        id: record.as_ref().map_or(0, |r| r.id),
        rollout: record.as_ref().unwrap().to_rollout(),
        target_image: fleet.ctx.spec.image.clone(),
        settings: fleet.pass_cfg.waves,
        recorded,
    };
    let live = rows.iter().filter(|r| r.is_live()).count();
    let settings = plan_settings(&fleet.ctx, &fleet.pass_cfg, live);
    let observed = observation_matching(&rows, fleet);
    plan(&PlanInput {
        now,
        settings: &settings,
        desired: &desired,
        rows: &rows,
        observed: &observed,
        orphans_first_seen: &BTreeMap::new(),
        recent_deletions: &BTreeSet::new(),
        held_deletions: &BTreeMap::new(),
        rollout: &rollout,
        health: &health,
    })
}

/// The contract that keeps the SQL filter and the planner from drifting apart: over varied
/// database states, every user the planner gives a per-user action is on the work list, and every
/// action only a full pass may take comes with fleet-level work on the list.
#[tokio::test]
async fn the_work_list_holds_every_user_the_planner_would_act_on() {
    let mut fleet = Fleet::start().await;
    fleet.reconfigure("DEPROVISION_GRACE", "10m");
    fleet.reconfigure("REPAIR_AFTER", "5m");
    let target = Targets {
        spec: spec_digest(&fleet.ctx.spec),
        config: config_digest(&fleet.ctx.spec),
        secrets: secrets_digest(&fleet.ctx.spec.secrets),
    };
    let mut checked = BTreeMap::<&str, usize>::new();
    for seed in 0..12u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        sqlx::query("TRUNCATE public.user_fly_apps, vyx_fleet.rollout, auth.users CASCADE")
            .execute(&fleet.db.pool)
            .await
            .unwrap();
        let r = fleet
            .ctx
            .store
            .start_rollout(&target.spec, &fleet.ctx.spec.image)
            .await
            .unwrap();
        if rng.random_bool(0.5) {
            fleet
                .ctx
                .store
                .save_rollout_progress(r.id, &Default::default(), true)
                .await
                .unwrap();
        }
        for _ in 0..40 {
            seed_user(&fleet, &mut rng, &target).await;
        }
        let plan = full_plan(&fleet).await;
        let list = work_list(&fleet.ctx, &fleet.pass_cfg, &[]).await.unwrap();
        let listed: BTreeSet<Uuid> = list.iter().filter_map(|e| e.user).collect();
        let fleet_level: BTreeSet<Option<Uuid>> = list
            .iter()
            .filter(|e| e.reason.is_fleet_level())
            .map(|e| e.user)
            .collect();
        for a in &plan.actions {
            let Some(user) = vyx_fleet::reconcile::targeted::action_user(a) else {
                continue;
            };
            match a {
                Action::Converge { .. }
                | Action::MarkUnwanted { .. }
                | Action::CancelDeprovision { .. } => {
                    assert!(
                        listed.contains(&user),
                        "seed {seed}: {a:?} not listed: {list:?}"
                    )
                }
                Action::Deprovision { .. } | Action::Repair { .. } => assert!(
                    fleet_level.contains(&Some(user)),
                    "seed {seed}: {a:?} without fleet-level work: {list:?}"
                ),
                Action::Rollout { .. } => assert!(
                    fleet_level.contains(&Some(user)) || fleet_level.contains(&None),
                    "seed {seed}: {a:?} without fleet-level work: {list:?}"
                ),
                _ => continue,
            }
            *checked.entry(a.kind()).or_default() += 1;
        }
    }
    // The states must reach every kind of per-user action, or the test proves little.
    for kind in [
        "converge",
        "schedule_deprovision",
        "cancel_deprovision",
        "deprovision",
        "repair_restart",
    ] {
        assert!(
            checked.get(kind).is_some_and(|n| *n > 0),
            "no {kind} in {checked:?}"
        );
    }
    assert!(
        checked
            .keys()
            .any(|k| k.starts_with("rollout") || k.contains("update") || k.contains("move")),
        "no rollout step in {checked:?}"
    );
}

/// The query plans in docs/QUERIES.md: `cargo test --test sweep -- --ignored --nocapture
/// query_plans`. A converged fleet of 10,000 and then 100,000 paid users, one user changed.
#[tokio::test]
#[ignore = "seeds 110,000 users; prints the plans for docs/QUERIES.md"]
async fn query_plans_of_the_sweep_and_the_targeted_run() {
    let fleet = Fleet::start().await;
    let pool = &fleet.db.pool;
    let target = spec_digest(&fleet.ctx.spec);
    let r = fleet
        .ctx
        .store
        .start_rollout(&target, &fleet.ctx.spec.image)
        .await
        .unwrap();
    fleet
        .ctx
        .store
        .save_rollout_progress(r.id, &Default::default(), true)
        .await
        .unwrap();
    let mut seeded = 0;
    for n in [10_000i64, 100_000] {
        sqlx::query(
            "WITH u AS (INSERT INTO auth.users (id, email) \
                          SELECT gen_random_uuid(), 'u' || g || '@example.test' \
                            FROM generate_series($1::bigint + 1, $2::bigint) g RETURNING id), \
                  s AS (INSERT INTO public.user_subscriptions (user_id, tier, status) \
                          SELECT id, 'pro', 'active' FROM u) \
             INSERT INTO public.user_fly_apps (user_id, fly_app_name, fly_org_slug, status, region, \
                    docker_image, health_status, machine_id, ips_ready, config_digest, \
                    secrets_digest, spec_digest, last_probed_at) \
             SELECT id, 'vyx-user-' || replace(id::text, '-', ''), $3, 'active', $4, $5, 'healthy', \
                    'm' || replace(id::text, '-', ''), true, $6, $7, $8, now() FROM u",
        )
        .bind(seeded)
        .bind(n)
        .bind(fleet_support::ORG)
        .bind(&fleet.ctx.spec.region)
        .bind(&fleet.ctx.spec.image)
        .bind(config_digest(&fleet.ctx.spec))
        .bind(secrets_digest(&fleet.ctx.spec.secrets))
        .bind(&target)
        .execute(pool)
        .await
        .unwrap();
        seeded = n;
        sqlx::query("ANALYZE").execute(pool).await.unwrap();
        // One changed user: a downgrade whose NOTIFY was lost.
        let one: Uuid = sqlx::query_scalar(
            "UPDATE public.user_subscriptions SET tier = 'free' \
              WHERE user_id = (SELECT user_id FROM public.user_subscriptions LIMIT 1) RETURNING user_id",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        let list = work_list(&fleet.ctx, &fleet.pass_cfg, &[]).await.unwrap();
        assert_eq!(list.len(), 1, "{list:?}");
        println!("\n=== work list, {n} apps ===");
        for l in vyx_fleet::reconcile::sweep::explain_work_list(&fleet.ctx, &fleet.pass_cfg, &[])
            .await
            .unwrap()
        {
            println!("{l}");
        }
        for (what, sql) in [
            (
                "facts for user",
                "EXPLAIN (ANALYZE, BUFFERS) SELECT u.id, s.tier, s.status, o.desired FROM auth.users u \
                 LEFT JOIN public.user_subscriptions s ON s.user_id = u.id \
                 LEFT JOIN vyx_fleet.user_fly_app_overrides o ON o.user_id = u.id \
                 WHERE u.id = $1 AND (s.user_id IS NOT NULL OR o.user_id IS NOT NULL)",
            ),
            (
                "row for user",
                "EXPLAIN (ANALYZE, BUFFERS) SELECT a.*, EXISTS (SELECT 1 FROM auth.users u \
                 WHERE u.id = a.user_id) AS user_exists FROM public.user_fly_apps a WHERE a.user_id = $1",
            ),
            (
                "rollout progress for user",
                "EXPLAIN (ANALYZE, BUFFERS) SELECT id, spec_digest, rollout_id, rollout_state \
                 FROM public.user_fly_apps \
                 WHERE user_id = $1 AND deleted_at IS NULL AND status <> 'deleted'",
            ),
        ] {
            println!("\n=== {what}, {n} apps ===");
            let lines: Vec<String> = sqlx::query_scalar(sql)
                .bind(one)
                .fetch_all(pool)
                .await
                .unwrap();
            for l in lines {
                println!("{l}");
            }
        }
        sqlx::query("UPDATE public.user_subscriptions SET tier = 'pro' WHERE user_id = $1")
            .bind(one)
            .execute(pool)
            .await
            .unwrap();
    }
}
