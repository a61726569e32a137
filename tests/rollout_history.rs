//! Rollouts across history and with the user's own process failing, against PostgreSQL and the
//! simulator: a new image whose process exits at once (or whose machine ends `failed`) harms one
//! canary, which is rolled back and running again, the rollout halts with the true reason and no
//! other app moves until an operator resumes; three rollouts in a row, the second with transient
//! Fly failures on its first updates, leave every row describing what its machine runs.

mod fleet_support;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use fleet_support::{Fleet, IMAGE};
use support::UserFixture;
use uuid::Uuid;
use vyx_fleet::db::rollout::{RolloutRecord, load_current, resume};
use vyx_fleet::reconcile::plan::Finding;
use vyx_fleet::sim::{FaultKind, FaultRule, Faults, ImageBehaviour};

const V2: &str = "registry.fly.io/vyx-screener:v2";
const V3: &str = "registry.fly.io/vyx-screener:v3";
const CRASHING: &str = "registry.fly.io/vyx-screener:crashing";

async fn fleet_of(n: usize, max_unavailable: &str) -> (Fleet, Vec<Uuid>) {
    let fleet = Fleet::builder()
        .var("ROLLOUT_SOAK", "1s")
        .var("ROLLOUT_MAX_UNAVAILABLE", max_unavailable)
        .var("MAX_CONCURRENCY", "8")
        .start()
        .await;
    let mut users = Vec::new();
    for _ in 0..n {
        users.push(UserFixture::paid("pro").insert(&fleet.db.pool).await);
    }
    fleet.converge().await;
    (fleet, users)
}

/// Passes back to back, as the daemon's loop runs them, until `done` holds for the current
/// rollout. Returns it and how many passes found the halt newly (each would alert).
async fn passes_until(
    fleet: &Fleet,
    deadline: Duration,
    done: impl Fn(&RolloutRecord) -> bool,
) -> (RolloutRecord, usize) {
    let start = Instant::now();
    let mut newly_halted = 0;
    loop {
        let report = fleet.pass().await;
        newly_halted += report
            .plan
            .findings
            .iter()
            .filter(|f| matches!(f, Finding::RolloutHalted { newly: true, .. }))
            .count();
        let r = load_current(&fleet.db.pool)
            .await
            .unwrap()
            .expect("a rollout");
        if done(&r) {
            return (r, newly_halted);
        }
        assert!(
            start.elapsed() < deadline,
            "rollout not done within {deadline:?}: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn last_seq(fleet: &Fleet) -> u64 {
    fleet.sim.calls().last().map_or(0, |c| c.seq)
}

/// Apps whose machine got an update (or a create) since `seq`, by app name.
fn changed_apps(fleet: &Fleet, seq: u64) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for c in fleet.writes().into_iter().filter(|c| c.seq > seq) {
        if matches!(c.class.as_str(), "machines.update" | "machines.create")
            && c.status == Some(200)
            && let Some(app) = c.path.split('/').nth(3)
        {
            *out.entry(app.to_string()).or_default() += 1;
        }
    }
    out
}

/// Each app's one live machine: (image, state).
fn machines(fleet: &Fleet) -> BTreeMap<String, (String, String)> {
    fleet
        .apps()
        .into_iter()
        .map(|a| {
            let live: Vec<_> = a
                .machines
                .iter()
                .filter(|m| !matches!(m.state.as_str(), "destroyed" | "destroying"))
                .collect();
            assert_eq!(live.len(), 1, "{}: one machine, not {live:?}", a.name);
            let image = live[0].config["image"].as_str().unwrap_or("").to_string();
            (a.name.clone(), (image, live[0].state.clone()))
        })
        .collect()
}

async fn crashing_image_harms_one_canary_then_holds_until_resumed(behaviour: ImageBehaviour) {
    let (mut fleet, _users) = fleet_of(8, "2").await;
    let since = last_seq(&fleet);
    fleet.sim.set_image_behaviour(CRASHING, behaviour);
    fleet.reconfigure("USER_APP_IMAGE", CRASHING);

    let (r, alerts) = passes_until(&fleet, Duration::from_secs(120), |r| {
        r.halted && r.rolled_back == 1
    })
    .await;
    assert_eq!(r.halt_kind.as_deref(), Some("canary_failed"), "{r:?}");
    assert_eq!((r.moved, r.failed), (1, 1), "{r:?}");
    let reason = r.halt_reason.clone().unwrap_or_default();
    let want = match behaviour {
        ImageBehaviour::Fails => "failed",
        _ => "exited",
    };
    assert!(
        reason.contains(want) && reason.contains("vyx-user-"),
        "the halt names the canary and what happened to it: {reason}"
    );

    // More passes, as the loop would run them: the halt holds, nobody else moves, no new alert.
    let mut more_alerts = 0;
    for _ in 0..4 {
        let report = fleet.pass().await;
        more_alerts += report
            .plan
            .findings
            .iter()
            .filter(|f| matches!(f, Finding::RolloutHalted { newly: true, .. }))
            .count();
    }
    assert_eq!(
        alerts + more_alerts,
        1,
        "the halt is found (and alerted) once"
    );
    let changed = changed_apps(&fleet, since);
    assert_eq!(changed.len(), 1, "only the canary was touched: {changed:?}");
    let canary = changed.keys().next().unwrap().clone();
    for (app, (image, state)) in machines(&fleet) {
        assert_eq!(image, IMAGE, "{app} runs the last healthy image");
        assert_eq!(state, "started", "{app} is running");
    }
    let row: (String, Option<String>, Option<String>) = sqlx::query_as(
        "SELECT status, docker_image, rollout_state FROM public.user_fly_apps \
          WHERE fly_app_name = $1",
    )
    .bind(&canary)
    .fetch_one(&fleet.db.pool)
    .await
    .unwrap();
    assert_eq!(
        row,
        (
            "active".to_string(),
            Some(IMAGE.to_string()),
            Some("rolled_back".to_string())
        )
    );

    // An operator resumes: exactly one new canary tries the image, fails, and halts again.
    let since = last_seq(&fleet);
    resume(&fleet.db.pool, "test-operator")
        .await
        .unwrap()
        .expect("a halted rollout to resume");
    let (r, _) = passes_until(&fleet, Duration::from_secs(120), |r| {
        r.halted && r.rolled_back == 2
    })
    .await;
    assert_eq!(r.halt_kind.as_deref(), Some("canary_failed"), "{r:?}");
    let changed = changed_apps(&fleet, since);
    assert_eq!(
        changed.len(),
        1,
        "one new canary after the resume: {changed:?}"
    );
    assert!(
        !changed.contains_key(&canary),
        "never the first canary again"
    );
    for (app, (image, state)) in machines(&fleet) {
        assert_eq!(
            (image.as_str(), state.as_str()),
            (IMAGE, "started"),
            "{app}"
        );
    }
}

#[tokio::test]
async fn an_image_whose_process_exits_at_once_harms_one_canary_and_halts_until_resumed() {
    crashing_image_harms_one_canary_then_holds_until_resumed(ImageBehaviour::ExitsAtOnce).await;
}

#[tokio::test]
async fn an_image_whose_machine_ends_failed_harms_one_canary_and_halts_until_resumed() {
    crashing_image_harms_one_canary_then_holds_until_resumed(ImageBehaviour::Fails).await;
}

/// Every live row names the image its machine runs, and a row that moved in the current rollout
/// records the machine's version as its move's.
async fn rows_describe_their_machines(fleet: &Fleet) {
    let running = machines(fleet);
    let rows: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT fly_app_name, docker_image FROM public.user_fly_apps WHERE deleted_at IS NULL",
    )
    .fetch_all(&fleet.db.pool)
    .await
    .unwrap();
    for (app, image) in rows {
        assert_eq!(
            image.as_deref(),
            Some(running[&app].0.as_str()),
            "{app}: the row names what runs"
        );
    }
}

#[tokio::test]
async fn three_rollouts_in_a_row_leave_every_row_describing_what_its_machine_runs() {
    let (mut fleet, _users) = fleet_of(4, "2").await;

    // 1: a healthy image, all the way.
    fleet.reconfigure("USER_APP_IMAGE", V2);
    passes_until(&fleet, Duration::from_secs(120), |r| {
        r.completed_at.is_some()
    })
    .await;
    rows_describe_their_machines(&fleet).await;

    // 2: the first updates fail with a 503, and one is performed with its answer lost. The
    // moves recorded `moving` before their updates; the retries must send the update (or adopt
    // the one Fly performed), not take rollout 1's machine version for this move's.
    fleet.sim.set_faults(Faults {
        rules: vec![FaultRule::new(
            "machines.update",
            1.0,
            FaultKind::ServerError { status: 503 },
        )],
        ..Default::default()
    });
    fleet.reconfigure("USER_APP_IMAGE", V3);
    for _ in 0..2 {
        fleet.pass().await;
    }
    let (moving,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM public.user_fly_apps WHERE rollout_state = 'moving' \
            AND rollout_id = (SELECT max(id) FROM vyx_fleet.rollout)",
    )
    .fetch_one(&fleet.db.pool)
    .await
    .unwrap();
    assert_eq!(
        moving, 1,
        "the canary is recorded moving while its update fails"
    );
    fleet.sim.set_faults(Faults {
        rules: vec![FaultRule::new(
            "machines.update",
            1.0,
            FaultKind::LostAnswer { status: Some(502) },
        )],
        ..Default::default()
    });
    fleet.pass().await;
    fleet.sim.set_faults(Faults::default());
    let (r, _) = passes_until(&fleet, Duration::from_secs(120), |r| {
        r.completed_at.is_some()
    })
    .await;
    assert_eq!((r.moved, r.failed, r.halted), (4, 0, false), "{r:?}");
    for (app, (image, state)) in machines(&fleet) {
        assert_eq!((image.as_str(), state.as_str()), (V3, "started"), "{app}");
    }
    rows_describe_their_machines(&fleet).await;
    // Each row's recorded version is the version its machine runs now.
    let versions: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT fly_app_name, rollout_machine_version FROM public.user_fly_apps \
          WHERE deleted_at IS NULL",
    )
    .fetch_all(&fleet.db.pool)
    .await
    .unwrap();
    for (app, version) in versions {
        let m = fleet.app(&app).unwrap().machines[0].clone();
        assert_eq!(version, Some(m.version), "{app}");
    }

    // 3: a crashing image: one canary, rolled back onto V3, the rest untouched.
    let since = last_seq(&fleet);
    fleet
        .sim
        .set_image_behaviour(CRASHING, ImageBehaviour::ExitsAtOnce);
    fleet.reconfigure("USER_APP_IMAGE", CRASHING);
    passes_until(&fleet, Duration::from_secs(120), |r| {
        r.halted && r.rolled_back == 1
    })
    .await;
    let changed: BTreeSet<String> = changed_apps(&fleet, since).into_keys().collect();
    assert_eq!(changed.len(), 1, "{changed:?}");
    for (app, (image, state)) in machines(&fleet) {
        assert_eq!((image.as_str(), state.as_str()), (V3, "started"), "{app}");
    }
    rows_describe_their_machines(&fleet).await;
}

/// A leader that died in a region move's verdict wait left the new machine, healthy in the new
/// region and unrecorded, beside the recorded old one. The next leader adopts it (found by the op
/// id recorded before its create): no second new machine, the old one destroyed only after.
#[tokio::test]
async fn a_region_move_interrupted_in_its_verdict_wait_adopts_the_machine_it_made() {
    use vyx_fleet::db::rollout::RowRolloutState;
    use vyx_fleet::fly::{CreateMachineRequest, MachineConfig};
    use vyx_fleet::reconcile::desired_config;

    let (mut fleet, users) = fleet_of(2, "1").await;
    fleet.reconfigure("USER_APP_REGION", "ams");
    let row = fleet.row(users[0]).await;
    let old = row.machine_id.clone().unwrap();
    // What the interrupted move had written: the rollout, `moving`, the op id, then the create.
    let target = vyx_fleet::reconcile::spec_digest(&fleet.ctx.spec);
    let rollout = fleet
        .ctx
        .store
        .start_rollout(&target, &fleet.ctx.spec.image)
        .await
        .unwrap();
    fleet
        .ctx
        .store
        .set_app_rollout_state(
            row.id,
            rollout.id,
            1,
            RowRolloutState::Moving,
            chrono::Utc::now(),
            None,
        )
        .await
        .unwrap();
    let op = Uuid::new_v4().to_string();
    fleet.ctx.store.set_machine_op(row.id, &op).await.unwrap();
    let req = CreateMachineRequest {
        config: desired_config(
            MachineConfig::default(),
            &fleet.ctx.spec,
            &fleet.ctx.spec.image,
            row.user_id,
            &op,
        ),
        region: Some("ams".into()),
        ..Default::default()
    };
    let made = fleet
        .ctx
        .fly
        .create_machine(&row.fly_app_name, &req)
        .await
        .unwrap();
    let since = last_seq(&fleet);

    passes_until(&fleet, Duration::from_secs(120), |r| {
        r.completed_at.is_some()
    })
    .await;
    let app = fleet.app(&row.fly_app_name).unwrap();
    let live: Vec<_> = app
        .machines
        .iter()
        .filter(|m| !matches!(m.state.as_str(), "destroyed" | "destroying"))
        .collect();
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0].id, made.id, "the machine the interrupted move made");
    assert_eq!(fleet.row(users[0]).await.machine_id, Some(made.id.clone()));
    let writes: Vec<_> = fleet
        .writes()
        .into_iter()
        .filter(|c| c.seq > since && c.path.contains(&row.fly_app_name))
        .collect();
    assert!(
        !writes.iter().any(|c| c.class == "machines.create"),
        "no second new machine: {writes:?}"
    );
    assert!(
        !writes
            .iter()
            .any(|c| c.method == "DELETE" && c.path.contains(&made.id)),
        "the healthy new machine is never destroyed"
    );
    assert!(
        writes
            .iter()
            .any(|c| c.method == "DELETE" && c.path.contains(&old)),
        "the old machine is destroyed"
    );
}

/// While a rollout is halted, nothing of the halted spec reaches anyone: a new paying user gets
/// the spec the fleet last ran healthily, and an app whose machine stopped is started on its own
/// spec, not updated to the target.
#[tokio::test]
async fn while_halted_a_new_user_and_a_repair_get_the_last_healthy_spec() {
    use vyx_fleet::fly::StopMachineRequest;
    let (mut fleet, users) = fleet_of(3, "1").await;
    fleet
        .sim
        .set_image_behaviour(CRASHING, ImageBehaviour::ExitsAtOnce);
    fleet.reconfigure("USER_APP_IMAGE", CRASHING);
    passes_until(&fleet, Duration::from_secs(120), |r| {
        r.halted && r.rolled_back == 1
    })
    .await;
    let since = last_seq(&fleet);

    // An app the rollout never reached goes down, and a new user pays.
    let mut pending = None;
    for u in &users {
        let row = fleet.row(*u).await;
        let (state,): (Option<String>,) =
            sqlx::query_as("SELECT rollout_state FROM public.user_fly_apps WHERE id = $1")
                .bind(row.id)
                .fetch_one(&fleet.db.pool)
                .await
                .unwrap();
        if state.is_none() {
            pending = Some(row);
        }
    }
    let pending = pending.expect("an app the halted rollout has not moved");
    fleet
        .ctx
        .fly
        .stop_machine(
            &pending.fly_app_name,
            pending.machine_id.as_deref().unwrap(),
            &StopMachineRequest::default(),
        )
        .await
        .unwrap();
    let newcomer = UserFixture::paid("elite").insert(&fleet.db.pool).await;
    fleet.relist().await;
    for _ in 0..30 {
        fleet.pass().await;
        let running = machines(&fleet);
        let new_row = fleet.maybe_row(newcomer).await;
        let done = new_row.is_some_and(|r| {
            running
                .get(&r.fly_app_name)
                .is_some_and(|(_, state)| state == "started")
        }) && running[&pending.fly_app_name].1 == "started";
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let running = machines(&fleet);
    let new_row = fleet.row(newcomer).await;
    assert_eq!(
        running[&new_row.fly_app_name],
        (IMAGE.to_string(), "started".to_string()),
        "the new user runs the last healthy image, not the halted one"
    );
    assert_eq!(new_row.docker_image.as_deref(), Some(IMAGE));
    assert_eq!(
        running[&pending.fly_app_name],
        (IMAGE.to_string(), "started".to_string()),
        "the stopped app is started on its own spec"
    );
    let updates: Vec<_> = fleet
        .writes()
        .into_iter()
        .filter(|c| c.seq > since && c.class == "machines.update")
        .collect();
    assert!(
        updates.is_empty(),
        "no machine updated while halted: {updates:?}"
    );
    let r = load_current(&fleet.db.pool).await.unwrap().unwrap();
    assert!(
        r.halted && r.moved == 1,
        "still halted, nobody else moved: {r:?}"
    );
}

/// The soak's end is judged too: an app whose checks went critical just as its soak ran out is a
/// failure, not the app's new rollback point.
#[tokio::test]
async fn an_app_that_turns_unhealthy_as_its_soak_ends_fails_instead_of_settling() {
    let mut fleet = Fleet::builder()
        .var("ROLLOUT_SOAK", "1h")
        .var("ROLLOUT_MAX_UNAVAILABLE", "1")
        .start()
        .await;
    let user = UserFixture::paid("pro").insert(&fleet.db.pool).await;
    fleet.converge().await;
    fleet.reconfigure("USER_APP_IMAGE", V2);
    let row = fleet.row(user).await;
    let state = |pool: sqlx::PgPool, id: Uuid| async move {
        let (s,): (Option<String>,) =
            sqlx::query_as("SELECT rollout_state FROM public.user_fly_apps WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap();
        s
    };
    for _ in 0..100 {
        if state(fleet.db.pool.clone(), row.id).await.as_deref() == Some("soaking") {
            break;
        }
        fleet.pass().await;
    }
    assert_eq!(
        state(fleet.db.pool.clone(), row.id).await.as_deref(),
        Some("soaking")
    );
    fleet
        .sim
        .set_image_behaviour(V2, ImageBehaviour::ChecksCritical);
    let critical = fleet.app(&row.fly_app_name).unwrap().machines[0]
        .checks
        .iter()
        .any(|c| c.status == "critical");
    assert!(
        critical,
        "the simulator turned the running machine's checks critical"
    );
    // The soak runs out: move its start back past ROLLOUT_SOAK.
    sqlx::query(
        "UPDATE public.user_fly_apps SET rollout_state_at = rollout_state_at - interval '2 hours' \
          WHERE id = $1",
    )
    .bind(row.id)
    .execute(&fleet.db.pool)
    .await
    .unwrap();
    let (r, _) = passes_until(&fleet, Duration::from_secs(60), |r| {
        r.halted && r.rolled_back == 1
    })
    .await;
    assert_eq!(r.halt_kind.as_deref(), Some("canary_failed"), "{r:?}");
    let (healthy_image,): (Option<String>,) =
        sqlx::query_as("SELECT healthy_image FROM public.user_fly_apps WHERE id = $1")
            .bind(row.id)
            .fetch_one(&fleet.db.pool)
            .await
            .unwrap();
    assert_eq!(
        healthy_image.as_deref(),
        Some(IMAGE),
        "the rollback point stays"
    );
    assert_eq!(machines(&fleet)[&row.fly_app_name].0, IMAGE);
}

/// A figure, not a pass/fail check (run with `--ignored --nocapture`): at default settings
/// (`RECONCILE_INTERVAL` 30 s, the default check of grace 10 s and interval 15 s), how long a canary
/// whose checks never pass runs the new spec before its rollback update, with the daemon's loop
/// pacing the passes.
#[tokio::test]
#[ignore = "a measurement of about a minute of wall time; prints the figure"]
async fn measure_how_long_a_canary_whose_checks_never_pass_stays_on_the_new_spec() {
    use tokio::sync::watch;
    let mut fleet = Fleet::builder().start().await;
    for _ in 0..3 {
        UserFixture::paid("pro").insert(&fleet.db.pool).await;
    }
    fleet.converge().await;
    vyx_fleet::db::lease::release(&fleet.db.pool, &fleet.holder, fleet.term)
        .await
        .unwrap();
    fleet
        .sim
        .set_image_behaviour(CRASHING, ImageBehaviour::ChecksCritical);
    fleet.reconfigure("USER_APP_IMAGE", CRASHING);
    // The daemon's own patience, not the harness's short one.
    fleet.ctx.timeouts = vyx_fleet::reconcile::Timeouts::default();
    let controller = fleet.controller(Duration::from_secs(30));
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(async move { controller.run(rx).await });
    // Watch the machines: when the canary starts running the new image, and when it is back.
    let start = Instant::now();
    let mut moved: Option<(String, Instant)> = None;
    let back = loop {
        let running = machines(&fleet);
        match &moved {
            None => {
                moved = running
                    .iter()
                    .find(|(_, (image, _))| image == CRASHING)
                    .map(|(app, _)| (app.clone(), Instant::now()));
            }
            Some((app, _)) if running[app].0 == IMAGE => break Instant::now(),
            Some(_) => {}
        }
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "no rollback seen"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = stop.send(true);
    let _ = task.await;
    let moved_at = moved.unwrap().1;
    println!(
        "canary on the new spec for {:.1} s (its machine's config, as the simulator shows it)",
        (back - moved_at).as_secs_f64()
    );
}

/// A converge that finds the app's machine in another region (here an `error` row resumed after
/// the region setting changed) replaces it make-before-break: the new machine is created, and the
/// old one destroyed only after, never the other way round.
#[tokio::test]
async fn a_converge_that_changes_region_makes_the_new_machine_before_breaking_the_old() {
    let (mut fleet, users) = fleet_of(1, "1").await;
    let row = fleet.row(users[0]).await;
    let old = row.machine_id.clone().unwrap();
    sqlx::query("UPDATE public.user_fly_apps SET status = 'error' WHERE id = $1")
        .bind(row.id)
        .execute(&fleet.db.pool)
        .await
        .unwrap();
    let since = last_seq(&fleet);
    fleet.reconfigure("USER_APP_REGION", "ams");
    fleet.converge().await;
    let writes: Vec<_> = fleet
        .writes()
        .into_iter()
        .filter(|c| c.seq > since && c.path.contains(&row.fly_app_name))
        .collect();
    let create = writes
        .iter()
        .position(|c| c.class == "machines.create" && c.status == Some(200));
    let destroy = writes
        .iter()
        .position(|c| c.method == "DELETE" && c.path.contains(&old));
    assert!(
        create.is_some() && destroy.is_some() && create < destroy,
        "create {create:?} before destroy {destroy:?}: {writes:?}"
    );
    let app = fleet.app(&row.fly_app_name).unwrap();
    let live: Vec<_> = app
        .machines
        .iter()
        .filter(|m| !matches!(m.state.as_str(), "destroyed" | "destroying"))
        .collect();
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(
        (live[0].region.as_str(), live[0].state.as_str()),
        ("ams", "started")
    );
}
