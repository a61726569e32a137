//! The observation cache's deltas against the simulator's org list, with Fly's clock moved by the
//! test (REFERENCE §3.9: ordered by `updated_at`, overlap the `updated_after` windows): a delta
//! leaves out machines unchanged since the watermark, still catches a change stamped a little
//! before it, and one host clock far ahead does not blind it.

mod sim_support;

use std::time::Duration;

use chrono::TimeDelta;
use reqwest::StatusCode;
use serde_json::json;
use sim_support::{Api, machine_body};
use vyx_fleet::fly::{ClientOptions, FlyClient, RateLimits};
use vyx_fleet::reconcile::{Observation, ObserveCache, ObserveKind};
use vyx_fleet::secret::Secret;
use vyx_fleet::sim::SimConfig;

const ORG: &str = sim_support::ORG;
const PREFIX: &str = "vyx-user-";
const TERM: i64 = 1;

struct World {
    api: Api,
    fly: FlyClient,
    /// App name and machine id of each app, in order.
    machines: Vec<(String, String)>,
}

/// `n` apps of one started machine each, and a client of the daemon's own.
async fn world(n: usize) -> World {
    let api = Api::start(SimConfig::fast()).await;
    let mut machines = Vec::new();
    for i in 0..n {
        let app = format!("{PREFIX}win{i}");
        api.create_app(&app).await;
        let m = api.create_machine(&app, machine_body("img:1")).await;
        let id = m["id"].as_str().expect("id").to_string();
        assert_eq!(
            api.wait_state(&app, &id, "started").await.status,
            StatusCode::OK
        );
        machines.push((app, id));
    }
    let mut opts = ClientOptions::new(api.base.clone(), Secret::new(sim_support::TOKEN));
    opts.rate_limits = RateLimits::disabled();
    let fly = FlyClient::new(opts).expect("client");
    World { api, fly, machines }
}

impl World {
    async fn stop(&self, i: usize) {
        let (app, id) = &self.machines[i];
        let path = format!("/v1/apps/{app}/machines/{id}");
        let s = self.api.post(&format!("{path}/stop"), json!({})).await;
        assert_eq!(s.status, StatusCode::OK);
        assert_eq!(
            self.api.wait_state(app, id, "stopped").await.status,
            StatusCode::OK
        );
    }

    async fn observe(&self, cache: &ObserveCache, want: ObserveKind) -> Observation {
        let (obs, kind) = cache
            .observe(&self.fly, ORG, PREFIX, TERM)
            .await
            .expect("observed");
        assert_eq!(kind, want);
        (*obs).clone()
    }

    /// The state the observation holds for app `i`'s machine.
    fn state_in(&self, obs: &Observation, i: usize) -> String {
        let (app, id) = &self.machines[i];
        let a = obs.apps.get(app).expect("app observed");
        let m = a.machines.iter().find(|m| m.id == *id).expect("machine");
        m.state.to_string()
    }

    /// The machines the last delta's own query lists, asked again of the simulator.
    async fn last_delta_lists(&self) -> Vec<String> {
        let calls = self.api.sim.calls();
        let delta = calls
            .iter()
            .rev()
            .find(|c| c.class == "orgs.machines" && c.path.contains("updated_after="))
            .expect("a delta was made");
        let r = self.api.get(&delta.path).await;
        let mut ids: Vec<String> = r.body["machines"]
            .as_array()
            .expect("machines")
            .iter()
            .map(|m| m["id"].as_str().expect("id").to_string())
            .collect();
        ids.sort();
        ids
    }

    fn ids(&self, which: &[usize]) -> Vec<String> {
        let mut ids: Vec<String> = which.iter().map(|i| self.machines[*i].1.clone()).collect();
        ids.sort();
        ids
    }
}

#[tokio::test]
async fn a_delta_leaves_unchanged_machines_out_and_catches_a_change_stamped_within_the_overlap() {
    let w = world(4).await;
    let cache = ObserveCache::new(Duration::from_secs(3600)).with_overlap(Duration::from_secs(10));
    w.observe(&cache, ObserveKind::Full).await;

    // Ten minutes of Fly's time later, one machine changes.
    w.api.sim.advance_clock(TimeDelta::minutes(10));
    w.stop(1).await;
    let obs = w.observe(&cache, ObserveKind::Delta).await;
    assert_eq!(w.state_in(&obs, 1), "stopped");

    // Then another, on a host whose clock is 5 s behind: stamped before the watermark the first
    // change set, within the overlap. A delta from the watermark itself would never list it.
    let (app, id) = &w.machines[2];
    assert!(
        w.api
            .sim
            .set_host_clock_skew(app, id, TimeDelta::seconds(-5))
    );
    w.stop(2).await;
    let obs = w.observe(&cache, ObserveKind::Delta).await;
    assert_eq!(w.state_in(&obs, 2), "stopped");
    assert_eq!(w.state_in(&obs, 0), "started");

    // The watermark moved past the machines that did not change: the delta left them out.
    assert_eq!(w.last_delta_lists().await, w.ids(&[1, 2]));
}

#[tokio::test]
async fn one_host_clock_an_hour_ahead_does_not_blind_the_deltas_that_follow() {
    let w = world(3).await;
    let cache = ObserveCache::new(Duration::from_secs(3600));
    w.observe(&cache, ObserveKind::Full).await;

    let (app, id) = &w.machines[0];
    assert!(w.api.sim.set_host_clock_skew(app, id, TimeDelta::hours(1)));
    w.stop(0).await;
    let obs = w.observe(&cache, ObserveKind::Delta).await;
    assert_eq!(w.state_in(&obs, 0), "stopped");

    // A change on a host with the right time, two minutes later: more than the overlap behind
    // the skewed stamp, still the newest change Fly has.
    w.api.sim.advance_clock(TimeDelta::minutes(2));
    w.stop(1).await;
    let obs = w.observe(&cache, ObserveKind::Delta).await;
    assert_eq!(w.state_in(&obs, 1), "stopped", "the delta saw the change");
}
