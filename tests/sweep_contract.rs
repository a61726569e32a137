//! The contract between the sweep's work list (SQL) and the planner, and the query plans
//! of docs/QUERIES.md.

mod fleet_support;
mod support;

use std::collections::{BTreeMap, BTreeSet};

use fleet_support::Fleet;
use rand::{Rng, SeedableRng, rngs::StdRng};
use support::UserFixture;
use uuid::Uuid;
use vyx_fleet::db::rollout as rollout_db;
use vyx_fleet::db::worklist::{Entry, Reason};
use vyx_fleet::db::{load_desired_facts, load_health, load_rows};
use vyx_fleet::reconcile::plan::{Action, Plan, PlanInput, RolloutInput, plan};
use vyx_fleet::reconcile::{
    AppRow, Observation, ObservedApp, ObservedMachine, config_digest, desired, plan_settings,
    secrets_digest, spec_digest, watermark, work_list, work_list_since,
};
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

/// A paying user whose app is on target and has been unhealthy for an hour, its restart an hour
/// old: the repair ladder's next step is a replace. Random states reach it too rarely to rely on.
async fn seed_replace_due(fleet: &Fleet, target: &Targets) {
    let user = UserFixture::paid("pro").insert(&fleet.db.pool).await;
    sqlx::query(
        "INSERT INTO public.user_fly_apps (user_id, fly_app_name, fly_org_slug, status, region, \
           docker_image, health_status, machine_id, ips_ready, config_digest, secrets_digest, \
           spec_digest, unhealthy_since, repair_step, repair_step_at, last_probed_at) \
         VALUES ($1, $2, $3, 'active', $4, $5, 'unhealthy', $6, true, $7, $8, $9, \
           now() - interval '1 hour', 'restart', now() - interval '1 hour', now())",
    )
    .bind(user)
    .bind(vyx_fleet::reconcile::naming::candidate(
        &fleet.ctx.prefix,
        user,
        0,
    ))
    .bind(fleet_support::ORG)
    .bind(&fleet.ctx.spec.region)
    .bind(&fleet.ctx.spec.image)
    .bind(format!("m{}", user.simple()))
    .bind(&target.config)
    .bind(&target.secrets)
    .bind(&target.spec)
    .execute(&fleet.db.pool)
    .await
    .unwrap();
}

struct Targets {
    spec: String,
    config: String,
    secrets: String,
}

/// What Fly shows: every live row's recorded machine, running what the row says, except where the
/// seed changes it behind the controller's back (a machine stopped, edited to another image,
/// destroyed, or joined by a second one). Returns the observation and the apps whose machines
/// changed, which is what the sweep's changed-machine list hands the work list.
fn observation_varied(
    rows: &[AppRow],
    fleet: &Fleet,
    rng: &mut StdRng,
) -> (Observation, Vec<String>) {
    let mut obs = Observation::default();
    let mut changed = Vec::new();
    for r in rows.iter().filter(|r| r.is_live()) {
        let machine = |id: &str| ObservedMachine {
            id: id.to_string(),
            state: "started".into(),
            region: r.region.clone().unwrap_or_default(),
            image: r.docker_image.clone().unwrap_or_default(),
            cpus: Some(fleet.ctx.spec.cpus),
            memory_mb: Some(fleet.ctx.spec.memory_mb),
            cpu_kind: Some("shared".into()),
            user_id: Some(r.user_id),
            op: None,
            version: None,
            updated_at: None,
        };
        let mut machines: Vec<ObservedMachine> =
            r.machine_id.iter().map(|id| machine(id)).collect();
        // Half unchanged; the rest one change each (an app with no recorded machine can only gain one).
        let change = if rng.random_bool(0.5) {
            0
        } else {
            rng.random_range(1..5)
        };
        match (change, machines.first_mut()) {
            (1, Some(m)) => m.state = "stopped".into(),
            (2, Some(m)) => m.image = "registry.fly.io/edited-by-hand:v0".into(),
            (3, Some(_)) => machines.clear(),
            (4, _) => machines.push(machine(&format!("dup{}", r.user_id.simple()))),
            _ => {}
        }
        if change != 0 && (change == 4 || r.machine_id.is_some()) {
            changed.push(r.fly_app_name.clone());
        }
        obs.apps.insert(
            r.fly_app_name.clone(),
            ObservedApp {
                name: r.fly_app_name.clone(),
                machines,
            },
        );
    }
    (obs, changed)
}

/// The planner over the whole database state and `observed`.
async fn full_plan(fleet: &Fleet, observed: impl FnOnce(&[AppRow]) -> Observation) -> Plan {
    let pool = &fleet.db.pool;
    let facts = load_desired_facts(pool).await.unwrap();
    let (desired, _) = desired(&facts, &fleet.pass_cfg.policy);
    let rows = load_rows(pool).await.unwrap();
    let health = load_health(pool).await.unwrap();
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
    let settings = plan_settings(&fleet.ctx, &fleet.pass_cfg);
    let observed = observed(&rows);
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
/// database states and varied Fly states (machines stopped, edited, destroyed or duplicated behind
/// the controller's back, reported as the changed-machine list reports them), every user the planner gives a per-user action is on the work list, and every
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
        // Overrides name users by id without a foreign key: a seed's must not outlive it.
        sqlx::query(
            "TRUNCATE public.user_fly_apps, vyx_fleet.rollout, vyx_fleet.user_fly_app_overrides, \
             auth.users CASCADE",
        )
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
        // A quiet tick's look starts where the last look stopped: taken before this state is
        // written, it must judge every user the full comparison judges.
        let before = watermark(&fleet.ctx).await.unwrap();
        for _ in 0..40 {
            seed_user(&fleet, &mut rng, &target).await;
        }
        for _ in 0..2 {
            seed_replace_due(&fleet, &target).await;
        }
        let mut changed = Vec::new();
        let plan = full_plan(&fleet, |rows| {
            let (obs, c) = observation_varied(rows, &fleet, &mut rng);
            changed = c;
            obs
        })
        .await;
        let list = work_list(&fleet.ctx, &fleet.pass_cfg, &changed)
            .await
            .unwrap();
        let cfg = &fleet.pass_cfg;
        let since = work_list_since(&fleet.ctx, cfg, &changed, &before, &[])
            .await
            .unwrap();
        assert_eq!(
            entries(&since.entries),
            entries(&list),
            "seed {seed}: the look since a watermark taken before the writes"
        );
        // Nothing written since that look: the next one still finds whatever time alone makes
        // due (graces, backoffs, repairs, deletions under way, fleet-level work) without being
        // told, and with the last look's users carried it judges exactly as the full comparison.
        let carry: Vec<Uuid> = since.entries.iter().filter_map(|e| e.user).collect();
        let quiet = work_list_since(&fleet.ctx, cfg, &changed, &since.watermark, &carry)
            .await
            .unwrap();
        assert_eq!(
            entries(&quiet.entries),
            entries(&list),
            "seed {seed}: carried"
        );
        let alone = work_list_since(&fleet.ctx, cfg, &changed, &since.watermark, &[])
            .await
            .unwrap();
        let timed: BTreeSet<_> = entries(&list)
            .into_iter()
            .filter(|(u, r)| {
                u.is_none()
                    || matches!(
                        r,
                        Reason::Deletion
                            | Reason::Unsettled
                            | Reason::Repair
                            | Reason::Cancel
                            | Reason::FlyChanged
                    )
            })
            .collect();
        let found = entries(&alone.entries);
        assert!(
            timed.is_subset(&found),
            "seed {seed}: due with time but not found: {:?}",
            timed.difference(&found).collect::<Vec<_>>()
        );
        *checked.entry("timed").or_default() += timed.len();
        let listed: BTreeSet<Uuid> = list.iter().filter_map(|e| e.user).collect();
        let fleet_level: BTreeSet<Option<Uuid>> = list
            .iter()
            .filter(|e| e.reason.is_fleet_level())
            .map(|e| e.user)
            .collect();
        for a in &plan.actions {
            let Some(user) = vyx_fleet::reconcile::action_user(a) else {
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
        "timed",
        "converge",
        "schedule_deprovision",
        "cancel_deprovision",
        "deprovision",
        "repair_restart",
        "repair_replace",
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

fn entries(list: &[Entry]) -> BTreeSet<(Option<Uuid>, Reason)> {
    list.iter().map(|e| (e.user, e.reason)).collect()
}

/// The query plans in docs/QUERIES.md: `cargo test --test sweep_contract -- --ignored --nocapture
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
        let before = watermark(&fleet.ctx).await.unwrap();
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
        for l in vyx_fleet::reconcile::explain_work_list(&fleet.ctx, &fleet.pass_cfg, &[])
            .await
            .unwrap()
        {
            println!("{l}");
        }
        let quiet = work_list_since(&fleet.ctx, &fleet.pass_cfg, &[], &before, &[])
            .await
            .unwrap();
        assert_eq!(entries(&quiet.entries), entries(&list));
        println!("\n=== a quiet tick's look (since the last), {n} apps ===");
        for l in
            vyx_fleet::reconcile::explain_work_list_since(&fleet.ctx, &fleet.pass_cfg, &[], &before)
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
