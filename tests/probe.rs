//! The health prober against PostgreSQL and the simulator: it probes each app's own
//! `/health` endpoint (the simulator serves it, outside the Fly API), reads the machine through the
//! API only to confirm a failure, writes only transitions, and finds config changed behind our back
//! from the org list. Probe interval 1s; every wait polls a condition with a deadline.

mod fleet_support;
mod support;

use std::time::{Duration, Instant};

use fleet_support::{Fleet, IMAGE};
use support::UserFixture;
use uuid::Uuid;

async fn fleet_of(n: usize) -> (Fleet, Vec<Uuid>) {
    let fleet = Fleet::builder()
        .var("HEALTH_PROBE_INTERVAL", "1s")
        .start()
        .await;
    let mut users = Vec::new();
    for _ in 0..n {
        users.push(UserFixture::paid("pro").insert(&fleet.db.pool).await);
    }
    fleet.converge().await;
    (fleet, users)
}

async fn wait_until<F, Fut>(what: &str, done: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !done().await {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "not within 30s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Until the apps' endpoints have answered `n` more probes.
async fn probes(fleet: &Fleet, n: u64) {
    let target = fleet.sim.health_hits() + n;
    wait_until("probes", || async { fleet.sim.health_hits() >= target }).await;
}

async fn events(fleet: &Fleet, user: Uuid, kind: &str) -> usize {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM public.user_fly_app_events WHERE user_id = $1 AND event_type = $2",
    )
    .bind(user)
    .bind(kind)
    .fetch_one(&fleet.db.pool)
    .await
    .unwrap();
    n as usize
}

fn machine_reads(fleet: &Fleet, app: &str) -> usize {
    fleet
        .sim
        .calls()
        .iter()
        .filter(|c| c.class == "machines.get" && c.path.contains(app))
        .count()
}

#[tokio::test]
async fn a_converged_fleet_probed_over_two_intervals_costs_no_fly_call_and_no_database_write() {
    let (fleet, _) = fleet_of(3).await;
    let dump = || async {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT row_to_json(a)::text FROM public.user_fly_apps a ORDER BY id",
        )
        .fetch_all(&fleet.db.pool)
        .await
        .unwrap();
        let events: i64 = sqlx::query_scalar("SELECT count(*) FROM public.user_fly_app_events")
            .fetch_one(&fleet.db.pool)
            .await
            .unwrap();
        (rows, events)
    };
    let before = dump().await;
    fleet.sim.clear_calls();

    let prober = fleet.prober();
    // Every app probed at least twice: two intervals.
    probes(&fleet, 6).await;
    drop(prober);

    assert!(fleet.sim.calls().is_empty(), "{:?}", fleet.sim.calls());
    assert_eq!(dump().await, before, "nothing written");
}

#[tokio::test]
async fn a_failing_endpoint_is_confirmed_with_one_machine_read_recorded_once_and_its_recovery_once()
{
    let (fleet, users) = fleet_of(2).await;
    let (sick, fine) = (users[0], users[1]);
    let (sick_app, fine_app) = (
        fleet.row(sick).await.fly_app_name,
        fleet.row(fine).await.fly_app_name,
    );
    let passed_before = events(&fleet, sick, "health_check_passed").await;
    let _prober = fleet.prober();
    probes(&fleet, 2).await;
    fleet.sim.clear_calls();

    // The image's checks go critical, so both apps fail Fly's checks; `fine`'s endpoint still
    // answers 200 (it is what users reach), so it is never read through the API nor recorded.
    fleet.sim.set_failing_images(vec![IMAGE.to_string()]);
    fleet.sim.set_app_health(&fine_app, Some(true));
    wait_until("recorded unhealthy", || async {
        fleet.row(sick).await.health_status.as_deref() == Some("unhealthy")
    })
    .await;
    probes(&fleet, 6).await;

    assert_eq!(machine_reads(&fleet, &sick_app), 1, "confirmed once");
    assert_eq!(machine_reads(&fleet, &fine_app), 0);
    assert!(
        fleet.sim.calls().iter().all(|c| c.class == "machines.get"),
        "{:?}",
        fleet.sim.calls()
    );
    assert_eq!(events(&fleet, sick, "health_check_failed").await, 1);
    assert_eq!(events(&fleet, fine, "health_check_failed").await, 0);
    assert_eq!(
        fleet.row(fine).await.health_status.as_deref(),
        Some("healthy")
    );
    let since: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT unhealthy_since FROM public.user_fly_apps WHERE user_id = $1")
            .bind(sick)
            .fetch_one(&fleet.db.pool)
            .await
            .unwrap();
    assert!(
        since.is_some(),
        "the spell the repair ladder times has started"
    );

    fleet.sim.set_failing_images(vec![]);
    fleet.sim.set_app_health(&fine_app, None);
    wait_until("healthy again", || async {
        fleet.row(sick).await.health_status.as_deref() == Some("healthy")
    })
    .await;
    probes(&fleet, 6).await;
    assert_eq!(
        events(&fleet, sick, "health_check_passed").await,
        passed_before + 1
    );
    assert_eq!(
        events(&fleet, fine, "health_check_passed").await,
        passed_before,
        "as many as the converge wrote"
    );
    assert_eq!(
        machine_reads(&fleet, &sick_app),
        1,
        "a recovery needs no read"
    );
}

#[tokio::test]
async fn an_endpoint_failing_while_flys_checks_pass_is_read_through_the_api_but_not_recorded() {
    let (fleet, users) = fleet_of(1).await;
    let app = fleet.row(users[0]).await.fly_app_name;
    // Driven round by round rather than through the background task: a round returns only once
    // its confirming read and any verdict it wrote are done, so "not recorded" is judged after the
    // decision, not merely after the read that precedes it.
    let mut prober = vyx_fleet::reconcile::Prober::new(fleet.ctx.clone(), Duration::from_secs(1));
    fleet.sim.clear_calls();

    fleet.sim.set_app_health(&app, Some(false));
    let start = Instant::now();
    let round = loop {
        let round = prober
            .round(tokio::time::Instant::now())
            .await
            .expect("a round");
        if round.confirm_reads > 0 {
            break round;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no confirming read within 30s"
        );
        tokio::time::sleep(prober.tick()).await;
    };

    assert_eq!(machine_reads(&fleet, &app), 1, "read through the API");
    assert_eq!(round.written, 0, "{round:?}");
    assert!(round.transitions.is_empty(), "{round:?}");
    assert_eq!(
        fleet.row(users[0]).await.health_status.as_deref(),
        Some("healthy")
    );
    assert_eq!(events(&fleet, users[0], "health_check_failed").await, 0);
}

#[tokio::test]
async fn config_changed_behind_our_back_is_found_from_the_org_list_and_put_right() {
    let (fleet, users) = fleet_of(1).await;
    let row = fleet.row(users[0]).await;
    let machine_id = row.machine_id.clone().unwrap();
    // Driven round by round: a round returns once its drift reads are done, so the test judges
    // what the prober did, not how soon a background task got to it.
    let mut prober = vyx_fleet::reconcile::Prober::new(fleet.ctx.clone(), Duration::from_secs(1));
    // The prober has looked at the fleet once (a round that probed had viewed the machines first):
    // what it sees from now on is change.
    let start = Instant::now();
    while prober
        .round(tokio::time::Instant::now())
        .await
        .expect("a round")
        .probed
        == 0
    {
        assert!(start.elapsed() < Duration::from_secs(30), "never probed");
        tokio::time::sleep(prober.tick()).await;
    }

    // Someone edits the machine with flyctl: another env, same image and size.
    let m = fleet
        .ctx
        .fly
        .get_machine(&row.fly_app_name, &machine_id)
        .await
        .unwrap();
    let mut config = m.config.clone().unwrap();
    config.env.insert("RUN_MODE".into(), "shared".into());
    fleet
        .ctx
        .fly
        .update_machine(
            &row.fly_app_name,
            &machine_id,
            &vyx_fleet::fly::UpdateMachineRequest {
                config,
                current_version: m.version.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    fleet.sim.clear_calls();

    // Passes observe by delta; the machine's new version in the list makes the prober read it.
    let start = Instant::now();
    loop {
        let report = fleet.pass().await;
        assert!(
            report.plan.actions.iter().all(|a| a.kind() != "probe"),
            "{:?}",
            report.plan.actions
        );
        let round = prober
            .round(tokio::time::Instant::now())
            .await
            .expect("a round");
        if round.drift_reads > 0 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "drift not found");
        tokio::time::sleep(prober.tick()).await;
    }
    assert!(
        fleet.row(users[0]).await.config_digest.is_none(),
        "the drift read marked the row for a converge"
    );
    let calls = fleet.sim.calls();
    assert!(calls.iter().all(|c| c.class != "ips.list"), "{calls:?}");
    assert!(
        calls
            .iter()
            .any(|c| c.class == "machines.get" && c.path.contains(&machine_id)),
        "{calls:?}"
    );
    fleet.converge().await;

    let app = fleet.app(&row.fly_app_name).unwrap();
    assert_eq!(app.machines[0].config["env"]["RUN_MODE"], "user_dedicated");
}
