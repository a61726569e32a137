//! Image behaviours: a process that exits at once (and Fly's restart policy), a machine that ends
//! `failed`, checks that stay critical; seen through the public API only.

mod sim_support;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sim_support::{Api, machine_body, poll_until};
use vyx_fleet::sim::{ImageBehaviour, SimConfig};

const APP: &str = "vyx-user-img";
const CRASH: &str = "registry.fly.io/vyx:crash";

async fn api() -> Api {
    let api = Api::start(SimConfig::fast()).await;
    api.create_app(APP).await;
    api
}

fn mpath(id: &str) -> String {
    format!("/v1/apps/{APP}/machines/{id}")
}

fn with_restart(image: &str, restart: Value) -> Value {
    let mut b = machine_body(image);
    b["config"]["restart"] = restart;
    b
}

/// The machine's events, oldest first (the API lists them newest first).
async fn events(api: &Api, id: &str) -> Vec<Value> {
    let g = api.get(&mpath(id)).await;
    let mut evs = g.body["events"].as_array().cloned().unwrap_or_default();
    evs.reverse();
    evs
}

fn statuses(evs: &[Value]) -> Vec<&str> {
    evs.iter().filter_map(|e| e["status"].as_str()).collect()
}

/// The `restarting` flag of each `exit` event, oldest first.
fn exits(evs: &[Value]) -> Vec<bool> {
    evs.iter()
        .filter(|e| e["type"] == "exit")
        .map(|e| e["request"]["exit_event"]["restarting"] == true)
        .collect()
}

/// Polls until the machine's last `exit` event says flyd will not restart it.
async fn until_exited_for_good(api: &Api, id: &str) {
    poll_until(Duration::from_secs(10), || async {
        exits(&events(api, id).await).last() == Some(&false)
    })
    .await;
}

#[tokio::test]
async fn an_update_to_an_image_that_exits_at_once_is_restarted_max_retries_times_then_stays_stopped()
 {
    let api = api().await;
    api.sim
        .set_image_behaviour(CRASH, ImageBehaviour::ExitsAtOnce);
    let m = api
        .create_machine(APP, machine_body("registry.fly.io/vyx:1"))
        .await;
    let id = m["id"].as_str().expect("id");
    assert_eq!(
        api.wait_state(APP, id, "started").await.status,
        StatusCode::OK
    );
    let mut body = with_restart(CRASH, json!({"policy": "always", "max_retries": 2}));
    body["current_version"] = m["version"].clone();
    let u = api.post(&mpath(id), body).await;
    assert_eq!(u.status, StatusCode::OK, "{:?}", u.body);

    until_exited_for_good(&api, id).await;
    let evs = events(&api, id).await;
    let since_update: Vec<&str> = statuses(&evs)
        .into_iter()
        .skip_while(|s| *s != "replacing")
        .collect();
    assert_eq!(
        since_update,
        [
            "replacing",
            "starting",
            "started",
            "stopped", // the update's boot, first exit
            "starting",
            "started",
            "stopped", // restart 1
            "starting",
            "started",
            "stopped", // restart 2, then no more
        ]
    );
    assert_eq!(exits(&evs), [true, true, false]);
    let exit = evs
        .iter()
        .rev()
        .find(|e| e["type"] == "exit")
        .expect("exit");
    assert_eq!(exit["source"], "flyd");
    assert_eq!(exit["request"]["exit_event"]["exit_code"], 1);
    let g = api.get(&mpath(id)).await;
    assert_eq!(g.body["state"], "stopped");
    assert!(
        g.body.get("checks").is_none(),
        "a stopped machine runs no checks"
    );
    let snap = api.sim.snapshot();
    let sm = &snap.app(APP).expect("app").machines[0];
    assert_eq!((sm.state.as_str(), sm.restarts), ("stopped", 2));
}

#[tokio::test]
async fn with_restart_policy_no_a_process_that_exits_leaves_the_machine_stopped_at_once() {
    let api = api().await;
    api.sim
        .set_image_behaviour(CRASH, ImageBehaviour::ExitsAtOnce);
    let m = api
        .create_machine(APP, with_restart(CRASH, json!({"policy": "no"})))
        .await;
    let id = m["id"].as_str().expect("id");
    until_exited_for_good(&api, id).await;
    let evs = events(&api, id).await;
    assert_eq!(
        statuses(&evs),
        ["created", "starting", "started", "stopped"]
    );
    assert_eq!(exits(&evs), [false]);
}

#[tokio::test]
async fn without_a_restart_policy_on_failure_restarts_an_exiting_process_ten_times() {
    let api = api().await;
    api.sim
        .set_image_behaviour(CRASH, ImageBehaviour::ExitsAtOnce);
    let mut body = machine_body(CRASH);
    body["config"]
        .as_object_mut()
        .expect("config")
        .remove("restart");
    let m = api.create_machine(APP, body).await;
    let id = m["id"].as_str().expect("id");
    until_exited_for_good(&api, id).await;
    let snap = api.sim.snapshot();
    let sm = &snap.app(APP).expect("app").machines[0];
    assert_eq!((sm.state.as_str(), sm.restarts), ("stopped", 10));
}

#[tokio::test]
async fn waits_answer_for_states_an_exiting_machine_reached_and_time_out_for_those_it_left() {
    let api = api().await;
    api.sim
        .set_image_behaviour(CRASH, ImageBehaviour::ExitsAtOnce);
    let m = api
        .create_machine(APP, with_restart(CRASH, json!({"policy": "no"})))
        .await;
    let id = m["id"].as_str().expect("id");
    let launch = m["events"][0]["id"].as_str().expect("launch event id");
    until_exited_for_good(&api, id).await;

    // Counting from the create's event, the machine did reach `started`: the VM booted [S24].
    let w = api
        .get(&format!(
            "{}/wait?state=started&from_event_id={launch}&timeout=1",
            mpath(id)
        ))
        .await;
    assert_eq!(w.status, StatusCode::OK, "{:?}", w.body);
    assert_eq!(w.body["state"], "started");
    // From now on it never starts again: the long-poll times out (408), the caller retries.
    let w = api
        .get(&format!("{}/wait?state=started&timeout=1", mpath(id)))
        .await;
    assert_eq!(w.status, StatusCode::REQUEST_TIMEOUT, "{:?}", w.body);
    let w = api
        .get(&format!(
            "{}/wait?state=stopped&version={}&timeout=1",
            mpath(id),
            m["version"].as_str().expect("version")
        ))
        .await;
    assert_eq!(w.status, StatusCode::OK, "{:?}", w.body);
    assert_eq!(w.body["state"], "stopped");
}

#[tokio::test]
async fn a_machine_on_an_image_that_fails_ends_failed_and_a_start_on_a_fixed_image_runs_it() {
    let api = api().await;
    api.sim.set_image_behaviour(CRASH, ImageBehaviour::Fails);
    let m = api.create_machine(APP, machine_body(CRASH)).await;
    let id = m["id"].as_str().expect("id");
    let w = api.wait_state(APP, id, "failed").await;
    assert_eq!(w.status, StatusCode::OK, "{:?}", w.body);
    assert_eq!(w.body["state"], "failed");
    assert_eq!(
        statuses(&events(&api, id).await),
        ["created", "starting", "failed"]
    );
    let w = api
        .get(&format!("{}/wait?state=started&timeout=1", mpath(id)))
        .await;
    assert_eq!(w.status, StatusCode::REQUEST_TIMEOUT);
    let w = api
        .get(&format!("{}/wait?state=settled&timeout=1", mpath(id)))
        .await;
    assert_eq!(w.body["state"], "failed", "failed is a settled state");

    // `failed` machines can be restarted (REFERENCE §3.6); the image is healthy now.
    api.sim.set_image_behaviour(CRASH, ImageBehaviour::Healthy);
    let s = api
        .send(Method::POST, &format!("{}/start", mpath(id)), None)
        .await;
    assert_eq!(s.status, StatusCode::OK, "{:?}", s.body);
    assert_eq!(s.body["previous_state"], "failed");
    let w = api.wait_state(APP, id, "started").await;
    assert_eq!(w.status, StatusCode::OK, "{:?}", w.body);
}

#[tokio::test]
async fn image_behaviours_are_set_over_http_and_apply_from_the_next_boot() {
    let api = api().await;
    let m = api.create_machine(APP, machine_body(CRASH)).await;
    let id = m["id"].as_str().expect("id");
    assert_eq!(
        api.wait_state(APP, id, "started").await.status,
        StatusCode::OK
    );
    let url = format!("{}/_sim/image_behaviours", api.base);
    let r = api
        .http
        .put(&url)
        .json(&json!({CRASH: "exits_at_once", "img:x": "fails"}))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let got: Value = api
        .http
        .get(&url)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(got, json!({CRASH: "exits_at_once", "img:x": "fails"}));
    let r = api
        .http
        .put(&url)
        .json(&json!({CRASH: "explodes"}))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        api.get(&mpath(id)).await.body["state"],
        "started",
        "the running process is not touched"
    );

    // The next boot runs the new behaviour.
    let s = api.post(&format!("{}/stop", mpath(id)), json!({})).await;
    assert_eq!(s.status, StatusCode::OK);
    assert_eq!(
        api.wait_state(APP, id, "stopped").await.status,
        StatusCode::OK
    );
    let s = api
        .send(Method::POST, &format!("{}/start", mpath(id)), None)
        .await;
    assert_eq!(s.status, StatusCode::OK);
    until_exited_for_good(&api, id).await;
}

#[tokio::test]
async fn checks_critical_is_the_failing_images_behaviour_and_an_explicit_behaviour_wins() {
    let api = api().await;
    api.sim.set_failing_images(vec![CRASH.into()]);
    api.sim.set_image_behaviour(CRASH, ImageBehaviour::Fails);
    let m = api.create_machine(APP, machine_body(CRASH)).await;
    let id = m["id"].as_str().expect("id");
    assert_eq!(
        api.wait_state(APP, id, "failed").await.status,
        StatusCode::OK
    );

    api.sim
        .set_image_behaviour("img:sick", ImageBehaviour::ChecksCritical);
    let m = api.create_machine(APP, machine_body("img:sick")).await;
    let id = m["id"].as_str().expect("id");
    poll_until(Duration::from_secs(10), || async {
        api.get(&mpath(id)).await.body["checks"][0]["status"] == "critical"
    })
    .await;
    assert_eq!(api.get(&mpath(id)).await.body["state"], "started");
}
