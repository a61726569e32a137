//! Health probing and repair against PostgreSQL and the simulator: an app whose
//! checks go critical (so its own `/health` fails) is recorded unhealthy by the prober, restarted after `REPAIR_AFTER`,
//! replaced (make-before-break) after as long again, with one event per transition. Short settings
//! (probe interval 1s, repair after 2s); every wait polls a condition with a deadline.

mod fleet_support;
mod support;

use std::time::{Duration, Instant};

use fleet_support::{Fleet, IMAGE};
use support::UserFixture;
use uuid::Uuid;

/// `(event_type, metadata->>'step')` of the user's events after `since_n` earlier ones.
async fn events(fleet: &Fleet, user: Uuid) -> Vec<(String, Option<String>)> {
    sqlx::query_as(
        "SELECT event_type, metadata->>'step' FROM public.user_fly_app_events \
          WHERE user_id = $1 ORDER BY created_at, id",
    )
    .bind(user)
    .fetch_all(&fleet.db.pool)
    .await
    .unwrap()
}

/// Passes a short interval apart (the daemon's loop) until `done`; panics after `deadline`.
async fn passes_until<F, Fut>(fleet: &Fleet, deadline: Duration, what: &str, done: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !done().await {
        assert!(
            start.elapsed() < deadline,
            "not within {deadline:?}: {what}"
        );
        fleet.pass().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn count(evs: &[(String, Option<String>)], kind: &str, step: Option<&str>) -> usize {
    evs.iter()
        .filter(|(k, s)| k == kind && (step.is_none() || s.as_deref() == step))
        .count()
}

#[tokio::test]
async fn an_app_whose_checks_go_critical_is_recorded_unhealthy_restarted_then_replaced_with_one_event_per_transition()
 {
    let mut fleet = Fleet::builder()
        .var("HEALTH_PROBE_INTERVAL", "1s")
        .var("REPAIR_AFTER", "2s")
        .start()
        .await;
    // A replacement that fails its checks is given up on quickly.
    fleet.ctx.timeouts.machine_started = Duration::from_secs(3);
    fleet.ctx.timeouts.healthy = Duration::from_secs(2);
    let user = UserFixture::paid("pro").insert(&fleet.db.pool).await;
    fleet.converge().await;
    let row = fleet.row(user).await;
    let original = row.machine_id.clone().unwrap();
    let before = events(&fleet, user).await;
    // The leader's prober, beside the passes below (it probes what their observation holds).
    let _prober = fleet.prober();

    // The app's checks go critical (its image stops answering /health).
    fleet.sim.set_failing_images(vec![IMAGE.to_string()]);
    passes_until(
        &fleet,
        Duration::from_secs(30),
        "recorded unhealthy",
        || async { fleet.row(user).await.health_status.as_deref() == Some("unhealthy") },
    )
    .await;
    passes_until(
        &fleet,
        Duration::from_secs(60),
        "restarted then replaced",
        || async {
            let evs = events(&fleet, user).await;
            count(&evs, "recovery_attempted", Some("replace")) >= 1
        },
    )
    .await;

    let evs = events(&fleet, user).await[before.len()..].to_vec();
    assert_eq!(count(&evs, "health_check_failed", None), 1, "{evs:?}");
    assert_eq!(
        count(&evs, "recovery_attempted", Some("restart")),
        1,
        "{evs:?}"
    );
    assert_eq!(
        count(&evs, "recovery_attempted", Some("replace")),
        1,
        "{evs:?}"
    );
    let restart = evs
        .iter()
        .position(|(_, s)| s.as_deref() == Some("restart"));
    let replace = evs
        .iter()
        .position(|(_, s)| s.as_deref() == Some("replace"));
    assert!(restart < replace, "restart first: {evs:?}");
    // The call log: a stop and a start of the machine, then a create for its replacement.
    let writes = fleet.writes();
    let stop = writes
        .iter()
        .position(|c| c.class == "machines.stop" && c.path.contains(&original));
    let start = writes
        .iter()
        .position(|c| c.class == "machines.start" && c.path.contains(&original));
    let create = writes
        .iter()
        .rposition(|c| c.class == "machines.create" && c.path.contains(&row.fly_app_name));
    assert!(
        stop.is_some() && stop < start && start < create,
        "stop, start, create"
    );
    // The replacement failed its checks too (same image): it was destroyed and the original machine,
    // never stopped by the replace, still runs. Make-before-break: the user always has a machine.
    let app = fleet.app(&row.fly_app_name).unwrap();
    let live: Vec<_> = app
        .machines
        .iter()
        .filter(|m| m.state != "destroyed" && m.state != "destroying")
        .collect();
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0].id, original);

    // The image answers again: the prober records one `health_check_passed`, and the spell ends.
    fleet.sim.set_failing_images(vec![]);
    passes_until(&fleet, Duration::from_secs(30), "healthy again", || async {
        fleet.row(user).await.health_status.as_deref() == Some("healthy")
    })
    .await;
    for _ in 0..5 {
        fleet.pass().await;
    }
    let evs = events(&fleet, user).await[before.len()..].to_vec();
    assert_eq!(count(&evs, "health_check_passed", None), 1, "{evs:?}");
    assert_eq!(count(&evs, "health_check_failed", None), 1, "{evs:?}");
}

#[tokio::test]
async fn a_replacement_that_passes_its_checks_takes_over_and_the_old_machine_is_destroyed() {
    let mut fleet = Fleet::builder()
        .var("HEALTH_PROBE_INTERVAL", "1s")
        .var("REPAIR_AFTER", "1s")
        .start()
        .await;
    fleet.ctx.timeouts.healthy = Duration::from_secs(5);
    let user = UserFixture::paid("pro").insert(&fleet.db.pool).await;
    fleet.converge().await;
    let row = fleet.row(user).await;
    let original = row.machine_id.clone().unwrap();
    // Unhealthy, and already restarted once in this spell: the next step is the replace.
    sqlx::query(
        "UPDATE public.user_fly_apps SET health_status = 'unhealthy', \
                unhealthy_since = now() - interval '1 minute', repair_step = 'restart', \
                repair_step_at = now() - interval '1 minute' WHERE id = $1",
    )
    .bind(row.id)
    .execute(&fleet.db.pool)
    .await
    .unwrap();
    // Fly agrees the machine is failing (a repair acts on nothing less); the replacement, once
    // created, comes up healthy: the image recovers as soon as its create is seen.
    fleet.sim.set_image_behaviour(
        fleet_support::IMAGE,
        vyx_fleet::sim::ImageBehaviour::ChecksCritical,
    );
    let seq = fleet.sim.calls().last().map_or(0, |c| c.seq);
    let base = fleet.sim.base_url();
    let heal = tokio::spawn(async move {
        let http = reqwest::Client::new();
        loop {
            let calls: Vec<vyx_fleet::sim::CallRecord> = http
                .get(format!("{base}/_sim/calls"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if calls
                .iter()
                .any(|c| c.seq > seq && c.class == "machines.create")
            {
                // No behaviour left for any image: the replacement boots healthy.
                http.put(format!("{base}/_sim/image_behaviours"))
                    .json(&serde_json::json!({}))
                    .send()
                    .await
                    .unwrap();
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let report = fleet.pass().await;
    heal.abort();
    assert!(
        report
            .plan
            .actions
            .iter()
            .any(|a| a.kind() == "repair_replace"),
        "{:?}",
        report.plan.actions
    );
    let row = fleet.row(user).await;
    assert_ne!(
        row.machine_id.as_deref(),
        Some(original.as_str()),
        "the new machine is recorded"
    );
    assert_eq!(row.health_status.as_deref(), Some("healthy"));
    let app = fleet.app(&row.fly_app_name).unwrap();
    let live: Vec<_> = app
        .machines
        .iter()
        .filter(|m| m.state != "destroyed" && m.state != "destroying")
        .collect();
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(Some(live[0].id.as_str()), row.machine_id.as_deref());
}

/// An app recorded unhealthy whose machine Fly reports healthy (the endpoint failed for a reason a
/// restart cannot fix, or the record is older than a move that healed it) is not restarted or
/// replaced: the repair step confirms through Fly first and clears the record.
#[tokio::test]
async fn a_repair_is_not_taken_when_flys_checks_say_the_machine_is_healthy() {
    let fleet = Fleet::builder().var("REPAIR_AFTER", "2s").start().await;
    let user = UserFixture::paid("pro").insert(&fleet.db.pool).await;
    fleet.converge().await;
    let row = fleet.row(user).await;
    sqlx::query(
        "UPDATE public.user_fly_apps SET health_status = 'unhealthy', \
                unhealthy_since = now() - interval '1 hour' WHERE id = $1",
    )
    .bind(row.id)
    .execute(&fleet.db.pool)
    .await
    .unwrap();
    fleet.sim.clear_calls();
    passes_until(
        &fleet,
        Duration::from_secs(30),
        "the record cleared",
        || async { fleet.row(user).await.health_status.as_deref() == Some("healthy") },
    )
    .await;
    let writes = fleet.writes();
    assert!(
        writes.iter().all(|c| !matches!(
            c.class.as_str(),
            "machines.stop" | "machines.start" | "machines.create" | "machines.delete"
        )),
        "nothing restarted or replaced: {writes:?}"
    );
    let evs = events(&fleet, user).await;
    assert_eq!(
        count(&evs, "recovery_attempted", Some("restart")),
        0,
        "{evs:?}"
    );
    let _ = IMAGE;
}
