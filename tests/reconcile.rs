//! The reconciler end to end: real PostgreSQL, the Fly simulator on loopback, the real Fly client.

mod fleet_support;
mod support;

use fleet_support::{Fleet, IMAGE, ORG, SERVICE_KEY};
use support::{UserFixture, set_subscription};
use vyx_fleet::reconcile::naming;

fn env_of(app: &vyx_fleet::sim::AppSnapshot) -> serde_json::Value {
    app.machines[0].config["env"].clone()
}

#[tokio::test]
async fn a_paid_user_gets_a_dedicated_app_running_the_screener() {
    let fleet = Fleet::start().await;
    let user = UserFixture::paid("pro").insert(&fleet.db.pool).await;

    fleet.converge().await;

    let row = fleet.row(user).await;
    assert_eq!(row.status, "active");
    assert_eq!(row.health_status.as_deref(), Some("healthy"));
    assert_eq!(row.fly_app_name, naming::candidate("vyx-user-", user, 0));
    assert_eq!(row.docker_image.as_deref(), Some(IMAGE));
    let app = fleet.app(&row.fly_app_name).expect("app exists in the org");
    assert_eq!(app.network, row.fly_app_name, "own 6PN network per user");
    assert_eq!(app.machines.len(), 1);
    let m = &app.machines[0];
    assert_eq!(m.state, "started");
    assert_eq!(m.region, "sin");
    assert_eq!(m.config["image"], IMAGE);
    assert_eq!(m.config["guest"]["cpus"], 2);
    assert_eq!(m.config["guest"]["memory_mb"], 512);
    assert_eq!(m.config["restart"]["policy"], "always");
    let env = env_of(&app);
    assert_eq!(env["USER_ID"], user.to_string());
    assert_eq!(env["RUN_MODE"], "user_dedicated");
    assert_eq!(env["SUPABASE_URL"], "https://project.supabase.co");
    assert!(
        !env.to_string().contains(SERVICE_KEY),
        "service key must not be in env"
    );
    assert!(
        app.secrets
            .iter()
            .any(|s| s.name == "SUPABASE_SERVICE_ROLE_KEY")
    );
    assert!(app.ips.iter().any(|ip| ip.kind == "v6"));
    assert!(app.ips.iter().any(|ip| ip.kind == "shared_v4"));
    assert_eq!(
        fleet.events(user).await,
        [
            "provision_requested",
            "provision_started",
            "health_check_passed",
            "provision_completed"
        ]
    );
}

#[tokio::test]
async fn a_quiet_pass_costs_only_the_changed_machine_list() {
    let fleet = Fleet::start().await;
    for _ in 0..3 {
        UserFixture::paid("elite").insert(&fleet.db.pool).await;
    }
    fleet.converge().await;
    fleet.sim.clear_calls();
    let report = fleet.pass().await;
    assert!(report.plan.actions.is_empty(), "{:?}", report.plan.actions);
    let calls = fleet.sim.calls();
    let classes: Vec<&str> = calls.iter().map(|c| c.class.as_str()).collect();
    assert_eq!(classes, ["orgs.machines"], "a delta, not the full lists");
    assert!(
        calls[0].path.contains("updated_after=") && calls[0].path.contains("include_deleted=true"),
        "{calls:?}"
    );
}

/// The fleet is larger than one list page. Every user is provisioned once, a
/// quiet pass reads every page of the changed-machine list (all five changed within the delta's
/// overlap) and nothing else, and a downgrade deletes exactly
/// the leaving user's app (an app on a later page is never taken for missing or leaked).
#[tokio::test]
async fn with_list_pages_of_two_every_user_is_served_and_a_downgrade_deletes_only_its_app() {
    let fleet = Fleet::builder()
        .var("VYX_FLY_LIST_PAGE_SIZE", "2")
        .start()
        .await;
    let mut users = Vec::new();
    for _ in 0..5 {
        users.push(UserFixture::paid("pro").insert(&fleet.db.pool).await);
    }
    fleet.converge().await;
    let apps = fleet.apps();
    assert_eq!(apps.len(), 5);
    for app in &apps {
        assert_eq!(app.live_machines().count(), 1, "{}", app.name);
    }
    let creates = fleet
        .sim
        .calls()
        .iter()
        .filter(|c| c.class == "apps.create" && c.write_applied)
        .count();
    assert_eq!(creates, 5, "each app created once");

    fleet.sim.clear_calls();
    let report = fleet.pass().await;
    assert!(report.plan.actions.is_empty(), "{:?}", report.plan.actions);
    let calls = fleet.sim.calls();
    let classes: Vec<&str> = calls.iter().map(|c| c.class.as_str()).collect();
    assert_eq!(
        classes,
        ["orgs.machines", "orgs.machines", "orgs.machines"],
        "three pages of two for five changed machines"
    );
    assert!(
        calls.iter().all(|c| c.path.contains("limit=2")),
        "{calls:?}"
    );

    let leaving = users[4];
    let name = fleet.row(leaving).await.fly_app_name;
    set_subscription(&fleet.db.pool, leaving, "free", "active").await;
    fleet.converge().await;
    assert_eq!(fleet.row(leaving).await.status, "deleted");
    assert!(fleet.app(&name).is_none());
    for u in &users[..4] {
        let row = fleet.row(*u).await;
        assert_eq!(row.status, "active");
        assert!(fleet.app(&row.fly_app_name).is_some());
    }
    assert_eq!(fleet.apps().len(), 4);
    let serving = fleet.serving_problems(&users[..4]).await;
    assert!(serving.is_empty(), "{serving:#?}");
}

#[tokio::test]
async fn a_downgrade_deletes_the_app_and_soft_deletes_the_row() {
    let fleet = Fleet::start().await;
    let stays = UserFixture::paid("pro").insert(&fleet.db.pool).await;
    let leaves = UserFixture::paid("pro").insert(&fleet.db.pool).await;
    let other = UserFixture::paid("elite").insert(&fleet.db.pool).await;
    fleet.converge().await;
    let name = fleet.row(leaves).await.fly_app_name;

    set_subscription(&fleet.db.pool, leaves, "free", "active").await;
    fleet.converge().await;

    let row = fleet.row(leaves).await;
    assert_eq!(row.status, "deleted");
    assert!(row.deleted_at.is_some());
    assert_eq!(
        row.fly_app_name, name,
        "the name stays recorded for a re-upgrade"
    );
    assert!(fleet.app(&name).is_none(), "app deleted in Fly");
    for u in [stays, other] {
        assert_eq!(fleet.row(u).await.status, "active");
    }
    assert_eq!(fleet.apps().len(), 2);
    let events = fleet.events(leaves).await;
    assert!(
        events.ends_with(&[
            "deprovision_requested".to_string(),
            "deprovision_started".to_string(),
            "deprovision_completed".to_string()
        ]),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_re_upgrade_reuses_the_row_and_the_name() {
    let fleet = Fleet::start().await;
    let keep = UserFixture::paid("pro").insert(&fleet.db.pool).await;
    let user = UserFixture::paid("pro").insert(&fleet.db.pool).await;
    let _ = keep;
    UserFixture::paid("pro").insert(&fleet.db.pool).await;
    fleet.converge().await;
    let first = fleet.row(user).await;

    set_subscription(&fleet.db.pool, user, "free", "active").await;
    fleet.converge().await;
    assert_eq!(fleet.row(user).await.status, "deleted");

    set_subscription(&fleet.db.pool, user, "elite", "active").await;
    fleet.converge().await;
    let again = fleet.row(user).await;
    assert_eq!(again.id, first.id, "same row");
    assert_eq!(again.fly_app_name, first.fly_app_name, "same name");
    assert_eq!(again.status, "active");
    assert!(again.deleted_at.is_none());
    let live: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM public.user_fly_apps WHERE user_id = $1 AND deleted_at IS NULL",
    )
    .bind(user)
    .fetch_one(&fleet.db.pool)
    .await
    .unwrap();
    assert_eq!(live, 1);
    assert_eq!(fleet.app(&again.fly_app_name).unwrap().machines.len(), 1);
}

#[tokio::test]
async fn overrides_present_and_absent_beat_the_tier() {
    let fleet = Fleet::start().await;
    let free = UserFixture::free().insert(&fleet.db.pool).await;
    let paid = UserFixture::paid("elite").insert(&fleet.db.pool).await;
    for _ in 0..3 {
        UserFixture::paid("pro").insert(&fleet.db.pool).await;
    }
    fleet.set_override(free, Some("present")).await;
    fleet.converge().await;
    assert_eq!(fleet.row(free).await.status, "active");
    assert_eq!(fleet.row(paid).await.status, "active");

    fleet.set_override(paid, Some("absent")).await;
    fleet.converge().await;
    assert_eq!(fleet.row(paid).await.status, "deleted");
    assert_eq!(fleet.row(free).await.status, "active");
}

#[tokio::test]
async fn a_paused_user_is_observed_but_never_changed() {
    let mut fleet = Fleet::start().await;
    let paused = UserFixture::paid("pro").insert(&fleet.db.pool).await;
    let rolled = UserFixture::paid("pro").insert(&fleet.db.pool).await;
    fleet.converge().await;
    let name = fleet.row(paused).await.fly_app_name;
    fleet.set_override(paused, Some("paused")).await;

    // A downgrade and a new image: neither touches the paused user's app.
    set_subscription(&fleet.db.pool, paused, "free", "active").await;
    fleet.reconfigure("USER_APP_IMAGE", "registry.fly.io/vyx-screener:v2");
    fleet.sim.clear_calls();
    fleet.converge().await;

    let app = fleet.app(&name).expect("paused app still exists");
    assert_eq!(app.machines[0].config["image"], IMAGE);
    assert!(
        !fleet.writes().iter().any(|c| c.path.contains(&name)),
        "no write touched the paused app"
    );
    assert_eq!(fleet.row(paused).await.status, "active");
    let other = fleet.row(rolled).await;
    assert_eq!(
        other.docker_image.as_deref(),
        Some("registry.fly.io/vyx-screener:v2")
    );
}

#[tokio::test]
async fn vyx_app_and_unprefixed_apps_are_never_touched_even_when_a_row_names_them() {
    let fleet = Fleet::start().await;
    fleet.sim.seed_app(ORG, "vyx-app");
    fleet.sim.seed_app(ORG, "billing-worker");
    let a = UserFixture::paid("pro").insert(&fleet.db.pool).await;
    let b = UserFixture::paid("pro").insert(&fleet.db.pool).await;
    // Rows that name foreign apps, as a hand edit or an old bug could leave them.
    for (user, name, status) in [
        (a, "vyx-app", "active"),
        (b, "billing-worker", "deprovisioning"),
    ] {
        sqlx::query(
            "INSERT INTO public.user_fly_apps (user_id, fly_app_name, fly_org_slug, status) VALUES ($1, $2, $3, $4)",
        )
        .bind(user)
        .bind(name)
        .bind(ORG)
        .bind(status)
        .execute(&fleet.db.pool)
        .await
        .unwrap();
    }
    set_subscription(&fleet.db.pool, a, "free", "active").await;
    fleet.pass().await;
    fleet.pass().await;

    for c in fleet.sim.calls() {
        assert!(
            !c.path.contains("/vyx-app") && !c.path.contains("billing-worker"),
            "touched a foreign app: {} {}",
            c.method,
            c.path
        );
    }
    let names: Vec<String> = fleet.apps().into_iter().map(|a| a.name).collect();
    assert!(names.contains(&"vyx-app".to_string()));
    assert!(names.contains(&"billing-worker".to_string()));
    assert_eq!(
        fleet.row(a).await.status,
        "active",
        "skipped rows are left as they are"
    );
}

#[tokio::test]
async fn a_name_held_by_another_org_moves_to_the_next_candidate() {
    let fleet = Fleet::start().await;
    let user = uuid::Uuid::new_v4();
    let taken = naming::candidate("vyx-user-", user, 0);
    fleet.sim.seed_app("someone-else", &taken);
    UserFixture::paid("pro")
        .with_id(user)
        .insert(&fleet.db.pool)
        .await;

    fleet.converge().await;

    let row = fleet.row(user).await;
    assert_eq!(row.fly_app_name, naming::candidate("vyx-user-", user, 1));
    assert_eq!(row.status, "active");
    let snapshot = fleet.sim.snapshot();
    let holder = snapshot.apps.iter().find(|a| a.name == taken).unwrap();
    assert_eq!(holder.org, "someone-else");
    assert!(
        holder.machines.is_empty(),
        "the other org's app was not touched"
    );
}

#[tokio::test]
async fn dry_run_changes_nothing_in_the_database_or_on_fly() {
    let fleet = Fleet::start().await;
    UserFixture::paid("pro").insert(&fleet.db.pool).await;
    let up = UserFixture::paid("pro").insert(&fleet.db.pool).await;
    fleet.converge().await;
    set_subscription(&fleet.db.pool, up, "free", "active").await;
    UserFixture::paid("elite").insert(&fleet.db.pool).await;
    let dump = || async {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT row_to_json(a)::text FROM public.user_fly_apps a ORDER BY id")
                .fetch_all(&fleet.db.pool)
                .await
                .unwrap();
        let events: i64 = sqlx::query_scalar("SELECT count(*) FROM public.user_fly_app_events")
            .fetch_one(&fleet.db.pool)
            .await
            .unwrap();
        let lease: (String,) = sqlx::query_as("SELECT row_to_json(l)::text FROM vyx_fleet.lease l")
            .fetch_one(&fleet.db.pool)
            .await
            .unwrap();
        (rows, events, lease)
    };
    let before = dump().await;
    fleet.sim.clear_calls();

    let plan = fleet.plan().await;

    assert!(!plan.actions.is_empty(), "there was something to do");
    assert_eq!(dump().await, before);
    assert!(fleet.writes().is_empty(), "{:?}", fleet.writes());
}

#[tokio::test]
async fn rows_with_unknown_status_or_a_vanished_user_are_reported_and_left_alone() {
    use vyx_fleet::reconcile::plan::Finding;
    let fleet = Fleet::start().await;
    // A hand-edited production database may lack the constraints our own schema has.
    sqlx::query(
        "DO $$ DECLARE c record; BEGIN \
           FOR c IN SELECT conname FROM pg_constraint WHERE conrelid = 'public.user_fly_apps'::regclass \
                    AND contype IN ('c', 'f') LOOP \
             EXECUTE format('ALTER TABLE public.user_fly_apps DROP CONSTRAINT %I', c.conname); \
           END LOOP; END $$",
    )
    .execute(&fleet.db.pool)
    .await
    .unwrap();
    let zombie = UserFixture::paid("pro").insert(&fleet.db.pool).await;
    let ghost = uuid::Uuid::new_v4();
    for (user, status) in [(zombie, "zombie"), (ghost, "active")] {
        sqlx::query(
            "INSERT INTO public.user_fly_apps (user_id, fly_app_name, fly_org_slug, status) VALUES ($1, $2, $3, $4)",
        )
        .bind(user)
        .bind(naming::candidate("vyx-user-", user, 0))
        .bind(ORG)
        .bind(status)
        .execute(&fleet.db.pool)
        .await
        .unwrap();
    }
    fleet.sim.clear_calls();
    let report = fleet.pass().await;
    assert!(
        report
            .plan
            .actions
            .iter()
            .all(|a| matches!(a, vyx_fleet::reconcile::plan::Action::SyncOrphans { .. })),
        "{:?}",
        report.plan.actions
    );
    assert!(
        report
            .plan
            .findings
            .iter()
            .any(|f| matches!(f, Finding::UnknownStatus { status, .. } if status == "zombie"))
    );
    assert!(
        report
            .plan
            .findings
            .iter()
            .any(|f| matches!(f, Finding::UserMissing { user_id, .. } if *user_id == ghost))
    );
    assert!(fleet.writes().is_empty());
    assert_eq!(fleet.row(zombie).await.status, "zombie");
}

#[tokio::test]
async fn an_app_left_by_the_old_edge_functions_is_adopted_with_its_machine() {
    use vyx_fleet::fly::{CreateAppRequest, CreateMachineRequest, MachineConfig};
    let fleet = Fleet::start().await;
    let user = UserFixture::paid("pro").insert(&fleet.db.pool).await;
    // The old naming scheme, an app and a bare machine without vyx-fleet's metadata.
    let legacy = "vyx-user-legacy01";
    fleet
        .ctx
        .fly
        .create_app(&CreateAppRequest {
            name: legacy.into(),
            org_slug: ORG.into(),
            network: None,
            idempotency_key: None,
        })
        .await
        .unwrap();
    let app_visible = async {
        loop {
            if fleet.ctx.fly.get_app(legacy).await.is_ok() {
                break;
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), app_visible)
        .await
        .unwrap();
    fleet
        .ctx
        .fly
        .create_machine(
            legacy,
            &CreateMachineRequest {
                config: MachineConfig {
                    image: IMAGE.into(),
                    ..Default::default()
                },
                region: Some("sin".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO public.user_fly_apps (user_id, fly_app_name, fly_org_slug, status) VALUES ($1, $2, $3, 'active')",
    )
    .bind(user)
    .bind(legacy)
    .bind(ORG)
    .execute(&fleet.db.pool)
    .await
    .unwrap();

    fleet.converge().await;

    let row = fleet.row(user).await;
    assert_eq!(
        row.fly_app_name, legacy,
        "the recorded name is kept, never recomputed"
    );
    assert_eq!(row.status, "active");
    let app = fleet.app(legacy).unwrap();
    let live: Vec<_> = app
        .machines
        .iter()
        .filter(|m| m.state != "destroyed")
        .collect();
    assert_eq!(live.len(), 1, "adopted, not doubled: {live:?}");
    assert_eq!(live[0].config["metadata"]["vyx_user_id"], user.to_string());
    assert_eq!(env_of(&app)["RUN_MODE"], "user_dedicated");
    assert_eq!(fleet.apps().len(), 1);
}

/// `MAX_CONCURRENCY` bounds what Fly sees: with slow writes and more users than slots, the
/// simulator's peak of concurrent mutating requests reaches the limit and never exceeds it.
#[tokio::test]
async fn max_concurrency_bounds_the_writes_fly_sees_in_flight() {
    use vyx_fleet::sim::{FaultKind, FaultRule, Faults};
    let mut fleet = Fleet::start().await;
    fleet.reconfigure("MAX_CONCURRENCY", "2");
    let mut users = Vec::new();
    for _ in 0..6 {
        users.push(UserFixture::paid("pro").insert(&fleet.db.pool).await);
    }
    fleet.sim.set_faults(Faults {
        rules: vec![
            FaultRule::new("secrets.set", 1.0, FaultKind::Latency { ms: 300 }),
            FaultRule::new("ips.create", 1.0, FaultKind::Latency { ms: 300 }),
            FaultRule::new("machines.create", 1.0, FaultKind::Latency { ms: 300 }),
        ],
        ..Faults::default()
    });
    fleet.sim.reset_peak_in_flight_writes();
    fleet.converge().await;
    let peak = fleet.sim.peak_in_flight_writes();
    eprintln!("measured: peak of concurrent Fly writes {peak} with MAX_CONCURRENCY=2");
    assert!(peak <= 2, "{peak} writes in flight at once");
    assert_eq!(peak, 2, "the two slots were used at once");
    assert_eq!(fleet.apps().len(), 6);
}
