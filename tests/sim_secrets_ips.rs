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
