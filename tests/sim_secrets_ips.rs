//! Secrets (versions, digests, no values) and IP assignments.

mod sim_support;

use reqwest::StatusCode;
use serde_json::json;
use sim_support::Api;

const APP: &str = "vyx-user-sec";

#[tokio::test]
async fn secrets_versions_and_values() {
    let api = Api::fast().await;
    api.create_app(APP).await;
    let path = format!("/v1/apps/{APP}/secrets");
    let r = api
        .post(
            &path,
            json!({"values": {"SUPABASE_SERVICE_ROLE_KEY": "s3cret", "OLD": "x"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let v1 = r.body["version"].as_u64().expect("version");
    assert_eq!(r.body["Version"], v1);
    let names: Vec<&str> = r.body["secrets"]
        .as_array()
        .expect("secrets")
        .iter()
        .map(|s| s["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, ["OLD", "SUPABASE_SERVICE_ROLE_KEY"]);
    assert!(
        !r.body.to_string().contains("s3cret"),
        "values never echoed"
    );
    for s in r.body["secrets"].as_array().expect("secrets") {
        assert!(s["digest"].as_str().is_some_and(|d| !d.is_empty()));
        assert!(s["created_at"].is_string() && s["updated_at"].is_string());
        assert!(s.get("value").is_none());
    }

    // null deletes; any write bumps the version.
    let r = api.post(&path, json!({"values": {"OLD": null}})).await;
    let v2 = r.body["version"].as_u64().expect("version");
    assert!(v2 > v1);
    let r = api
        .post(
            &path,
            json!({"values": {"SUPABASE_SERVICE_ROLE_KEY": "s3cret"}}),
        )
        .await;
    let v3 = r.body["version"].as_u64().expect("version");
    assert!(v3 > v2, "same value still bumps");

    let l = api.get(&path).await;
    assert_eq!(l.body["secrets"].as_array().map(Vec::len), Some(1));
    assert!(!l.body.to_string().contains("s3cret"));
    let shown = api.get(&format!("{path}?show_secrets=true")).await;
    assert_eq!(shown.body["secrets"][0]["value"], "s3cret");

    // The digest changes with the value.
    let d1 = l.body["secrets"][0]["digest"].clone();
    api.post(
        &path,
        json!({"values": {"SUPABASE_SERVICE_ROLE_KEY": "other"}}),
    )
    .await;
    assert_ne!(api.get(&path).await.body["secrets"][0]["digest"], d1);

    // Snapshot: names and sha256 only.
    let snap = api.sim.snapshot();
    let app = snap.app(APP).expect("app");
    assert_eq!(app.secrets_version, v3 + 1);
    assert_eq!(app.secrets[0].name, "SUPABASE_SERVICE_ROLE_KEY");
    assert_eq!(app.secrets[0].value_sha256.len(), 64);
    assert!(
        !serde_json::to_string(&snap)
            .expect("ser")
            .contains("other\"")
    );

    // min_secrets_version is honoured on machine create.
    let ok = api
        .post(
            &format!("/v1/apps/{APP}/machines"),
            json!({"config": {"image": "i"}, "min_secrets_version": v3 + 1}),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);

    for bad in [
        json!({}),
        json!({"values": {"bad name": "x"}}),
        json!({"values": {"K": 5}}),
        json!({"values": []}),
    ] {
        let r = api.post(&path, bad.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(r.body["error"].is_string());
    }
    assert_eq!(
        api.get("/v1/apps/nope/secrets").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn ip_assignments() {
    let api = Api::fast().await;
    api.create_app(APP).await;
    let path = format!("/v1/apps/{APP}/ip_assignments");
    assert_eq!(api.get(&path).await.body, json!({"ips": []}));
    let v6 = api.post(&path, json!({"type": "v6"})).await;
    assert_eq!(v6.status, StatusCode::OK);
    let v6_ip = v6.body["ip"].as_str().expect("ip").to_string();
    assert!(v6_ip.contains(':'));
    assert_eq!(v6.body["shared"], false);
    let s4 = api.post(&path, json!({"type": "shared_v4"})).await;
    assert_eq!(s4.body["shared"], true);
    assert!(
        s4.body["ip"]
            .as_str()
            .is_some_and(|ip| ip.split('.').count() == 4)
    );
    let v4 = api.post(&path, json!({"type": "v4"})).await;
    assert_eq!(v4.status, StatusCode::OK);
    let p6 = api
        .post(&path, json!({"type": "private_v6", "network": "n1"}))
        .await;
    assert_eq!(p6.body["network"]["name"], "n1");
    assert_eq!(
        api.get(&path).await.body["ips"].as_array().map(Vec::len),
        Some(4)
    );

    for bad in [json!({}), json!({"type": "v5"}), json!({"type": 4})] {
        assert_eq!(api.post(&path, bad).await.status, StatusCode::BAD_REQUEST);
    }
    let d = api.delete(&format!("{path}/{v6_ip}")).await;
    assert_eq!(d.status, StatusCode::NO_CONTENT);
    assert_eq!(
        api.delete(&format!("{path}/{v6_ip}")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.get(&path).await.body["ips"].as_array().map(Vec::len),
        Some(3)
    );
    assert_eq!(api.sim.snapshot().app(APP).expect("app").ips.len(), 3);
}

fn machine_path(id: &str) -> String {
    format!("/v1/apps/{APP}/machines/{id}")
}

async fn set_secret(api: &Api, value: &str) -> u64 {
    let r = api
        .post(
            &format!("/v1/apps/{APP}/secrets"),
            json!({"values": {"SUPABASE_SERVICE_ROLE_KEY": value}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body["version"].as_u64().expect("version")
}

/// The secrets version each live machine of `APP` booted with.
fn booted(api: &Api) -> Vec<Option<u64>> {
    let snap = api.sim.snapshot();
    let app = snap.app(APP).expect("app");
    app.live_machines().map(|m| m.secrets_version).collect()
}

#[tokio::test]
async fn a_machine_boots_with_the_current_secrets_and_keeps_them_until_updated_or_restarted() {
    let api = Api::fast().await;
    api.create_app(APP).await;
    let v1 = set_secret(&api, "first").await;
    let mut body = sim_support::machine_body("img:1");
    body["min_secrets_version"] = json!(v1);
    let m = api.create_machine(APP, body).await;
    let id = m["id"].as_str().expect("id").to_string();
    assert_eq!(
        api.wait_state(APP, &id, "started").await.status,
        StatusCode::OK
    );
    assert_eq!(booted(&api), [Some(v1)]);
    let snap = api.sim.snapshot();
    let app = snap.app(APP).expect("app");
    assert_eq!(app.machines[0].min_secrets_version, Some(v1));
    assert!(app.machines_on_stale_secrets().is_empty());

    // A secrets write does not reach the running machine (REFERENCE §4.3, §7).
    let v2 = set_secret(&api, "second").await;
    assert!(v2 > v1);
    assert_eq!(booted(&api), [Some(v1)]);
    let snap = api.sim.snapshot();
    assert_eq!(
        snap.app(APP)
            .expect("app")
            .machines_on_stale_secrets()
            .len(),
        1
    );

    // An update (a no-op one is enough) reboots it onto the current secrets.
    let current = api.get(&machine_path(&id)).await.body;
    let r = api
        .post(
            &machine_path(&id),
            json!({"config": current["config"], "min_secrets_version": v2}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let version = r.body["version"].as_str().expect("version").to_string();
    let w = api
        .get(&format!(
            "{}/wait?state=started&version={version}&timeout=10",
            machine_path(&id)
        ))
        .await;
    assert_eq!(w.status, StatusCode::OK);
    assert_eq!(booted(&api), [Some(v2)]);

    // So does a stop and start.
    let v3 = set_secret(&api, "third").await;
    let r = api
        .post(&format!("{}/stop", machine_path(&id)), json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        api.wait_state(APP, &id, "stopped").await.status,
        StatusCode::OK
    );
    assert_eq!(booted(&api), [Some(v2)]);
    let r = api
        .post(&format!("{}/start", machine_path(&id)), json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        api.wait_state(APP, &id, "started").await.status,
        StatusCode::OK
    );
    assert_eq!(booted(&api), [Some(v3)]);

    // skip_secrets boots without any.
    let mut body = sim_support::machine_body("img:1");
    body["skip_secrets"] = json!(true);
    let m2 = api.create_machine(APP, body).await;
    let id2 = m2["id"].as_str().expect("id");
    assert_eq!(
        api.wait_state(APP, id2, "started").await.status,
        StatusCode::OK
    );
    assert_eq!(booted(&api), [Some(v3), None]);
}

#[tokio::test]
async fn a_min_secrets_version_the_app_does_not_have_is_refused_on_create_and_update() {
    let api = Api::fast().await;
    api.create_app(APP).await;
    let v1 = set_secret(&api, "first").await;
    let mut body = sim_support::machine_body("img:1");
    body["min_secrets_version"] = json!(v1 + 1);
    let r = api.post(&format!("/v1/apps/{APP}/machines"), body).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert!(r.body["error"].is_string());
    assert_eq!(api.sim.snapshot().app(APP).expect("app").machines.len(), 0);

    let m = api
        .create_machine(APP, sim_support::machine_body("img:1"))
        .await;
    let id = m["id"].as_str().expect("id").to_string();
    assert_eq!(
        api.wait_state(APP, &id, "started").await.status,
        StatusCode::OK
    );
    let before = api.get(&machine_path(&id)).await.body;
    let r = api
        .post(
            &machine_path(&id),
            json!({"config": {"image": "img:2"}, "min_secrets_version": v1 + 5}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    let after = api.get(&machine_path(&id)).await.body;
    assert_eq!(after["version"], before["version"], "nothing applied");
    assert_eq!(after["config"]["image"], "img:1");
}

#[tokio::test]
async fn assigning_an_ip_type_the_app_has_answers_as_configured() {
    use vyx_fleet::sim::{Faults, IpRepeat};
    let api = Api::fast().await;
    api.create_app(APP).await;
    let path = format!("/v1/apps/{APP}/ip_assignments");
    let v6 = api.post(&path, json!({"type": "v6"})).await;
    let s4 = api.post(&path, json!({"type": "shared_v4"})).await;
    assert_eq!((v6.status, s4.status), (StatusCode::OK, StatusCode::OK));

    // Default: a dedicated type allocates another address; shared IPv4 answers the one it has.
    let again = api.post(&path, json!({"type": "v6"})).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_ne!(again.body["ip"], v6.body["ip"]);
    let s4_again = api.post(&path, json!({"type": "shared_v4"})).await;
    assert_eq!(s4_again.body["ip"], s4.body["ip"]);
    let count = |api: &Api| api.sim.snapshot().app(APP).expect("app").ips.len();
    assert_eq!(count(&api), 3);

    for (mode, status) in [
        (IpRepeat::Conflict, StatusCode::CONFLICT),
        (IpRepeat::Unprocessable, StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        api.sim.set_faults(Faults {
            ip_repeat: mode,
            ..Faults::default()
        });
        for ty in ["v6", "shared_v4"] {
            let r = api.post(&path, json!({"type": ty})).await;
            assert_eq!(r.status, status, "{mode:?} {ty}: {:?}", r.body);
            assert!(r.body["error"].is_string());
        }
        assert_eq!(count(&api), 3, "{mode:?}: nothing allocated");
        // A type the app does not have yet is still allocated.
        let v4 = api.post(&path, json!({"type": "v4"})).await;
        assert_eq!(v4.status, StatusCode::OK);
        let ip = v4.body["ip"].as_str().expect("ip").to_string();
        assert_eq!(
            api.delete(&format!("{path}/{ip}")).await.status,
            StatusCode::NO_CONTENT
        );
    }
}

#[tokio::test]
async fn a_machine_booted_without_min_secrets_version_may_run_an_older_secrets_snapshot() {
    // Every write in this test is newer than the host's copy of the secrets.
    let api = Api::start(vyx_fleet::sim::SimConfig {
        secrets_lag: std::time::Duration::from_secs(3600),
        ..vyx_fleet::sim::SimConfig::fast()
    })
    .await;
    api.create_app(APP).await;
    let v1 = set_secret(&api, "first").await;
    let m = api
        .create_machine(APP, sim_support::machine_body("img:1"))
        .await;
    let bare = m["id"].as_str().expect("id").to_string();
    let mut body = sim_support::machine_body("img:1");
    body["min_secrets_version"] = json!(v1);
    let m = api.create_machine(APP, body).await;
    let pinned = m["id"].as_str().expect("id").to_string();
    for id in [&bare, &pinned] {
        assert_eq!(
            api.wait_state(APP, id, "started").await.status,
            StatusCode::OK
        );
    }
    // The create without the minimum booted on the snapshot from before the write.
    assert_eq!(booted(&api), [Some(0), Some(v1)]);
    let snap = api.sim.snapshot();
    let stale: Vec<&str> = snap
        .app(APP)
        .expect("app")
        .machines_on_stale_secrets()
        .iter()
        .map(|m| m.id.as_str())
        .collect();
    assert_eq!(stale, [bare.as_str()]);

    // An update is no different: without the minimum it may boot on the old snapshot again.
    let v2 = set_secret(&api, "second").await;
    for (id, min) in [(&bare, None), (&pinned, Some(v2))] {
        let current = api.get(&machine_path(id)).await.body;
        let mut req = json!({"config": current["config"], "current_version": current["version"]});
        if let Some(min) = min {
            req["min_secrets_version"] = json!(min);
        }
        let r = api.post(&machine_path(id), req).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        let w = api
            .get(&format!(
                "{}/wait?state=started&version={}&timeout=10",
                machine_path(id),
                r.body["version"].as_str().expect("version")
            ))
            .await;
        assert_eq!(w.status, StatusCode::OK, "{:?}", w.body);
    }
    assert_eq!(booted(&api), [Some(0), Some(v2)]);

    // Once the host's copy catches up, a restart without the minimum sees the latest.
    api.sim.set_secrets_lag(std::time::Duration::ZERO);
    let r = api
        .post(&format!("{}/stop", machine_path(&bare)), json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        api.wait_state(APP, &bare, "stopped").await.status,
        StatusCode::OK
    );
    let r = api
        .post(&format!("{}/start", machine_path(&bare)), json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        api.wait_state(APP, &bare, "started").await.status,
        StatusCode::OK
    );
    assert_eq!(booted(&api), [Some(v2), Some(v2)]);
}
