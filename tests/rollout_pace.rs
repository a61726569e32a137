//! What paces a rollout: its waves, not `MAX_CONCURRENCY`. A move holds its executor slot only
//! while it works on Fly (reading the machine, the update); waiting for the machine to boot on the
//! new version and pass its checks holds none, so the next app of the wave is updated meanwhile;
//! and the looks at a soaked wave wait for the next wave's verdicts. Assertions are on the
//! simulator's call log and state, and on the times the database recorded.

mod fleet_support;
mod support;

use std::time::{Duration, Instant};

use fleet_support::Fleet;
use support::UserFixture;
use vyx_fleet::sim::Timings;

const V2: &str = "registry.fly.io/vyx-screener:v2";

#[tokio::test]
async fn a_waves_updates_reach_fly_while_its_first_machine_still_boots() {
    let mut fleet = canary_soaking(
        Fleet::builder()
            .var("ROLLOUT_SOAK", "1s")
            .var("MAX_CONCURRENCY", "1"),
    )
    .await;
    assert_eq!(updated(&fleet).len(), 1, "the canary alone moved");
    // The second wave (two apps): no machine finishes booting by itself, and only a boot, never
    // the executor's patience, would end a verdict's wait. With one slot, the second update can
    // reach Fly only if the first move gave its slot back while it waits.
    fleet.sim.set_timings(Timings {
        machine_update: Duration::from_secs(3600),
        ..Timings::default()
    });
    fleet.ctx.timeouts.rollout_look = Duration::from_secs(3600);
    fleet.ctx.timeouts.machine_started = Duration::from_secs(3600);
    fleet.ctx.timeouts.healthy = Duration::from_secs(3600);
    let both_updated = async {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if updated(&fleet).len() == 3 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the wave's second update never reached Fly while the first machine booted: {:?}",
                updated(&fleet)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    // Passes as the daemon's loop runs them: the first after the canary's soak starts the wave
    // and waits for its verdicts (an hour); it is dropped once both updates are seen.
    let passes = async {
        loop {
            fleet.pass().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        () = passes => unreachable!(),
        () = both_updated => {}
    }
    let booting = fleet
        .apps()
        .into_iter()
        .flat_map(|a| a.machines)
        .filter(|m| m.state != "started")
        .count();
    assert_eq!(
        booting, 2,
        "both machines of the wave still on their way up"
    );
}

/// Three converged apps, the image changed, and passes until the canary soaks on it (the next
/// wave, two apps, is due once it has soaked).
async fn canary_soaking(builder: fleet_support::FleetBuilder) -> Fleet {
    let mut fleet = builder.var("ROLLOUT_MAX_UNAVAILABLE", "4").start().await;
    for _ in 0..3 {
        UserFixture::paid("pro").insert(&fleet.db.pool).await;
    }
    fleet.converge().await;
    fleet.reconfigure("USER_APP_IMAGE", V2);
    let deadline = Instant::now() + Duration::from_secs(60);
    while states(&fleet).await != ["soaking"] {
        fleet.pass().await;
        assert!(Instant::now() < deadline, "the canary never became healthy");
    }
    fleet
}

/// The apps whose machine was updated, in call order.
fn updated(fleet: &Fleet) -> Vec<String> {
    fleet
        .sim
        .calls()
        .into_iter()
        .filter(|c| c.class == "machines.update" && c.status == Some(200))
        .filter_map(|c| c.path.split('/').nth(3).map(str::to_string))
        .collect()
}

/// A pass that settles one wave and moves the next takes the settles after the moves' verdicts:
/// the next wave's soak starts with its last verdict, and a look beside the moves would only slow
/// them. Judged on the database's clock: the settled app's `healthy` comes after every `soaking` of
/// the wave that moved in the same pass.
#[tokio::test]
async fn a_soaked_wave_is_settled_after_the_next_waves_verdicts() {
    let mut fleet = canary_soaking(Fleet::builder().var("ROLLOUT_SOAK", "1h")).await;
    // The canary's hour of soak, passed.
    sqlx::query(
        "UPDATE public.user_fly_apps SET rollout_state_at = rollout_state_at - interval '2 hours' \
          WHERE rollout_state = 'soaking'",
    )
    .execute(&fleet.db.pool)
    .await
    .unwrap();
    // The second wave's verdicts within the pass that moves it, whatever this machine's speed.
    fleet.ctx.timeouts.rollout_look = Duration::from_secs(60);
    fleet.pass().await;
    let rows: Vec<(i32, String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT rollout_wave, rollout_state, rollout_state_at FROM public.user_fly_apps \
          WHERE rollout_state IS NOT NULL ORDER BY rollout_wave, rollout_state_at",
    )
    .fetch_all(&fleet.db.pool)
    .await
    .unwrap();
    let states: Vec<(i32, &str)> = rows.iter().map(|(w, s, _)| (*w, s.as_str())).collect();
    assert_eq!(
        states,
        [(1, "healthy"), (2, "soaking"), (2, "soaking")],
        "one pass settled the canary and moved the second wave"
    );
    let settled = rows[0].2;
    for (_, _, soaking_since) in &rows[1..] {
        assert!(
            settled >= *soaking_since,
            "the canary was settled at {settled} before a verdict of the next wave at {soaking_since}"
        );
    }
}

/// The rollout states of the rows that have one, sorted.
async fn states(fleet: &Fleet) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT rollout_state FROM public.user_fly_apps WHERE rollout_state IS NOT NULL \
          ORDER BY rollout_state",
    )
    .fetch_all(&fleet.db.pool)
    .await
    .unwrap()
}
