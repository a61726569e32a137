//! List reads that lag updates and destroys (REFERENCE §3.9, §7): with `stale_list_reads`, some
//! list calls come from a replica `machine_list_lag` behind, so a machine's older copy can be served
//! after its newer one; a GET by id always reads the present.

mod sim_support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sim_support::{Api, machine_body};
use vyx_fleet::sim::{SimConfig, Timings};

const APP: &str = "vyx-user-lag";

fn mpath(id: &str) -> String {
    format!("/v1/apps/{APP}/machines/{id}")
}

/// A started machine, listed; then list reads lag by an hour for the share `stale` of calls.
async fn listed_machine(stale: f64) -> (Api, Value) {
    let api = Api::start(SimConfig::fast()).await;
    api.create_app(APP).await;
    let m = api.create_machine(APP, machine_body("img:1")).await;
    let id = m["id"].as_str().expect("id").to_string();
    assert_eq!(
        api.wait_state(APP, &id, "started").await.status,
        StatusCode::OK
    );
    api.sim.set_timings(Timings {
        machine_list_lag: Duration::from_secs(3600),
        ..Timings::instant()
    });
    api.sim.set_stale_list_reads(stale);
    let m = api.get(&mpath(&id)).await.body;
    (api, m)
}

/// `field` of the machine `id` in each of `n` per-app list reads, in order (`None`: not listed).
async fn per_app_reads(api: &Api, id: &str, field: &str, n: usize) -> Vec<Option<Value>> {
    let mut out = Vec::new();
    for _ in 0..n {
        let l = api.get(&format!("/v1/apps/{APP}/machines")).await;
        let m = l
            .body
            .as_array()
            .expect("array")
            .iter()
            .find(|m| m["id"] == id);
        out.push(m.map(|m| m[field].clone()));
    }
    out
}

/// Whether `old` is read somewhere after `new` was.
fn stale_after_new(reads: &[Option<Value>], new: &Value, old: &Value) -> bool {
    reads
        .iter()
        .position(|r| r.as_ref() == Some(new))
        .is_some_and(|i| reads[i..].iter().any(|r| r.as_ref() == Some(old)))
}

#[tokio::test]
async fn a_lagging_list_can_serve_a_machines_old_version_after_its_new_one() {
    let (api, m) = listed_machine(0.5).await;
    let id = m["id"].as_str().expect("id");
    let mut cfg = m["config"].clone();
    cfg["image"] = json!("img:2");
    let u = api
        .post(
            &mpath(id),
            json!({"config": cfg, "current_version": m["version"]}),
        )
        .await;
    assert_eq!(u.status, StatusCode::OK, "{:?}", u.body);

    let reads = per_app_reads(&api, id, "version", 40).await;
    assert!(
        stale_after_new(&reads, &u.body["version"], &m["version"]),
        "{reads:?}"
    );
    // The org-wide list reads from the same store.
    let mut org = Vec::new();
    for _ in 0..40 {
        let l = api.get("/v1/orgs/vyx-test/machines").await;
        org.push(l.body["machines"][0]["version"].clone());
    }
    assert!(org.contains(&m["version"]) && org.contains(&u.body["version"]));
    // A read by id is never stale.
    assert_eq!(api.get(&mpath(id)).await.body["version"], u.body["version"]);
}

#[tokio::test]
async fn a_lagging_list_can_serve_a_destroyed_machine_as_running_after_it_was_gone() {
    let (api, m) = listed_machine(0.5).await;
    let id = m["id"].as_str().expect("id");
    let d = api.delete(&format!("{}?force=true", mpath(id))).await;
    assert_eq!(d.status, StatusCode::OK);
    assert_eq!(
        api.wait_state(APP, id, "destroyed").await.status,
        StatusCode::OK
    );
    let reads: Vec<Option<Value>> = per_app_reads(&api, id, "state", 40)
        .await
        .into_iter()
        // Destroyed machines are left out of lists: "gone" is the fresh read.
        .map(|r| Some(r.unwrap_or(json!("gone"))))
        .collect();
    assert!(
        stale_after_new(&reads, &json!("gone"), &json!("started")),
        "{reads:?}"
    );
}

#[tokio::test]
async fn without_stale_list_reads_every_list_after_an_update_shows_the_new_version() {
    let (api, m) = listed_machine(0.0).await;
    let id = m["id"].as_str().expect("id");
    let u = api
        .post(
            &mpath(id),
            json!({"config": m["config"], "current_version": m["version"]}),
        )
        .await;
    assert_eq!(u.status, StatusCode::OK);
    let reads = per_app_reads(&api, id, "version", 20).await;
    assert!(
        reads.iter().all(|r| r.as_ref() == Some(&u.body["version"])),
        "{reads:?}"
    );
}
