//! Machine leases (REFERENCE §3.10): acquire, extend, release, expiry, and another holder's lease
//! refusing changes made without its nonce.

mod sim_support;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sim_support::{Api, machine_body, poll_until};
use vyx_fleet::sim::SimConfig;

const APP: &str = "vyx-user-lease";
const NONCE: &str = "fly-machine-lease-nonce";

fn mpath(id: &str) -> String {
    format!("/v1/apps/{APP}/machines/{id}")
}

/// An app with one started machine: (api, id).
async fn started() -> (Api, String) {
    let api = Api::start(SimConfig::fast()).await;
    api.create_app(APP).await;
    let m = api.create_machine(APP, machine_body("img:1")).await;
    let id = m["id"].as_str().expect("id").to_string();
    assert_eq!(
        api.wait_state(APP, &id, "started").await.status,
        StatusCode::OK
    );
    (api, id)
}

/// An update to `image` based on the machine's current version, with `nonce` if given.
async fn update(api: &Api, id: &str, image: &str, nonce: Option<&str>) -> sim_support::Resp {
    let cur = api.get(&mpath(id)).await.body;
    let mut cfg = cur["config"].clone();
    cfg["image"] = json!(image);
    let body = json!({"config": cfg, "current_version": cur["version"]});
    let headers: Vec<(&str, &str)> = nonce.map(|n| (NONCE, n)).into_iter().collect();
    api.send_with(Method::POST, &mpath(id), Some(body), &headers)
        .await
}

fn image(api: &Api, id: &str) -> Value {
    let snap = api.sim.snapshot();
    let app = snap.app(APP).expect("app");
    let m = app.machines.iter().find(|m| m.id == id).expect("machine");
    m.config["image"].clone()
}

#[tokio::test]
async fn another_holders_lease_refuses_every_change_made_without_its_nonce() {
    let (api, id) = started().await;
    let theirs = api
        .sim
        .take_lease(APP, &id, "ops@vyx.example", Duration::from_secs(3600))
        .expect("lease taken");
    assert!(
        api.sim
            .take_lease(APP, &id, "someone@else", Duration::from_secs(60))
            .is_none(),
        "one holder at a time"
    );

    let r = update(&api, &id, "img:2", None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    let err = r.body["error"].as_str().expect("error body");
    assert!(err.contains("ops@vyx.example"), "{err}");
    assert_eq!(image(&api, &id), "img:1", "nothing applied");
    let stop = api.post(&format!("{}/stop", mpath(&id)), json!({})).await;
    assert_eq!(stop.status, StatusCode::CONFLICT);
    let kill = api.delete(&format!("{}?force=true", mpath(&id))).await;
    assert_eq!(kill.status, StatusCode::CONFLICT);
    let ours = api
        .post(&format!("{}/lease", mpath(&id)), json!({"ttl": 30}))
        .await;
    assert_eq!(ours.status, StatusCode::CONFLICT);
    let wrong = update(&api, &id, "img:2", Some("not-the-nonce")).await;
    assert_eq!(wrong.status, StatusCode::CONFLICT);
    assert_eq!(api.get(&mpath(&id)).await.body["state"], "started");

    // Reads still work and say who holds it, never the nonce.
    let l = api.get(&format!("{}/lease", mpath(&id))).await;
    assert_eq!(l.status, StatusCode::OK);
    assert_eq!(l.body["owner"], "ops@vyx.example");
    assert!(l.body.get("nonce").is_none());
    let m = api
        .get(&format!("{}?include_leases=true", mpath(&id)))
        .await;
    assert_eq!(m.body["lease"]["owner"], "ops@vyx.example");

    // The holder's own change goes through; once released, anyone's does.
    let r = update(&api, &id, "img:2", Some(&theirs)).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(api.sim.end_lease(APP, &id));
    let r = update(&api, &id, "img:3", None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(image(&api, &id), "img:3");
}

#[tokio::test]
async fn a_lease_is_acquired_extended_and_released_with_its_nonce() {
    let (api, id) = started().await;
    let lease = format!("{}/lease", mpath(&id));
    let a = api
        .post(&lease, json!({"ttl": 60, "description": "rollout"}))
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    let nonce = a.body["nonce"].as_str().expect("nonce").to_string();
    assert_eq!(a.body["description"], "rollout");
    assert!(a.body["expires_at"].as_i64().is_some());
    assert!(a.body["owner"].is_string());

    // Extending takes the nonce, in the body's or in fly-go's query form.
    let again = api.post(&lease, json!({"ttl": 60})).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let ext = api
        .send_with(
            Method::POST,
            &format!("{lease}?ttl=120"),
            None,
            &[(NONCE, &nonce)],
        )
        .await;
    assert_eq!(ext.status, StatusCode::CREATED, "{:?}", ext.body);
    assert_eq!(ext.body["nonce"], nonce.as_str());
    assert!(ext.body["expires_at"].as_i64() > a.body["expires_at"].as_i64());

    // Even the caller that took it must present it.
    assert_eq!(
        update(&api, &id, "img:2", None).await.status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        update(&api, &id, "img:2", Some(&nonce)).await.status,
        StatusCode::OK
    );

    let none = api.delete(&lease).await;
    assert_eq!(
        none.status,
        StatusCode::BAD_REQUEST,
        "the nonce is required"
    );
    let wrong = api
        .send_with(Method::DELETE, &lease, None, &[(NONCE, "nope")])
        .await;
    assert_eq!(wrong.status, StatusCode::CONFLICT);
    let rel = api
        .send_with(Method::DELETE, &lease, None, &[(NONCE, &nonce)])
        .await;
    assert_eq!(rel.status, StatusCode::OK, "{:?}", rel.body);
    assert_eq!(api.get(&lease).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        update(&api, &id, "img:3", None).await.status,
        StatusCode::OK
    );
    let bad = api.post(&lease, json!({"ttl": 0})).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_create_with_lease_ttl_answers_the_nonce_once_and_the_lease_guards_the_machine() {
    let api = Api::start(SimConfig::fast()).await;
    api.create_app(APP).await;
    let mut body = machine_body("img:1");
    body["lease_ttl"] = json!(60);
    let m = api.create_machine(APP, body).await;
    let id = m["id"].as_str().expect("id");
    let nonce = m["nonce"].as_str().expect("nonce on create");
    assert!(api.get(&mpath(id)).await.body.get("nonce").is_none());
    assert_eq!(
        api.wait_state(APP, id, "started").await.status,
        StatusCode::OK
    );
    assert_eq!(
        update(&api, id, "img:2", None).await.status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        update(&api, id, "img:2", Some(nonce)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_lease_ends_on_its_own_when_its_ttl_passes() {
    let (api, id) = started().await;
    // Taken over the inspection route, as a test outside the process would.
    let r = api
        .http
        .post(format!("{}/_sim/apps/{APP}/machines/{id}/lease", api.base))
        .json(&json!({"owner": "ops@vyx.example", "ttl": 3}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        update(&api, &id, "img:2", None).await.status,
        StatusCode::CONFLICT
    );
    poll_until(Duration::from_secs(20), || async {
        api.get(&format!("{}/lease", mpath(&id))).await.status == StatusCode::NOT_FOUND
    })
    .await;
    assert_eq!(
        update(&api, &id, "img:2", None).await.status,
        StatusCode::OK
    );
}
