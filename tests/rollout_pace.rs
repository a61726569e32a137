//! What paces a rollout: its waves, not `MAX_CONCURRENCY`. A move holds its executor slot only
//! while it works on Fly (reading the machine, the update); waiting for the machine to boot on the
//! new version and pass its checks holds none, so the next app of the wave is updated meanwhile.
//! Assertions are on the simulator's call log and state.

mod fleet_support;
mod support;

use std::time::{Duration, Instant};

use fleet_support::Fleet;
use support::UserFixture;
use vyx_fleet::sim::Timings;

const V2: &str = "registry.fly.io/vyx-screener:v2";

#[tokio::test]
async fn a_waves_updates_reach_fly_while_its_first_machine_still_boots() {
    let mut fleet = Fleet::builder()
        .var("ROLLOUT_SOAK", "1s")
        .var("ROLLOUT_MAX_UNAVAILABLE", "4")
        .var("MAX_CONCURRENCY", "1")
        .start()
        .await;
    for _ in 0..3 {
        UserFixture::paid("pro").insert(&fleet.db.pool).await;
    }
    fleet.converge().await;
    fleet.reconfigure("USER_APP_IMAGE", V2);
    // The canary moves and boots as usual.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        fleet.pass().await;
        let soaking: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM public.user_fly_apps WHERE rollout_state = 'soaking'",
        )
        .fetch_one(&fleet.db.pool)
        .await
        .unwrap();
        if soaking == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the canary never became healthy");
    }
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
