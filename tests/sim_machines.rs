//! Machines: lifecycle, wait, checks, update, stop/start/delete, validation, lists.

mod sim_support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sim_support::{Api, ORG, machine_body, poll_until};
use vyx_fleet::sim::{SimConfig, Timings};

const APP: &str = "vyx-user-mach";

async fn api_with(timings: Timings) -> Api {
    let api = Api::start(SimConfig {
        timings,
        ..SimConfig::fast()
    })
    .await;
    api.create_app(APP).await;
    api
}

fn mpath(id: &str) -> String {
    format!("/v1/apps/{APP}/machines/{id}")
}

#[tokio::test]
async fn create_boots_asynchronously_and_checks_pass() {
    let api = api_with(Timings {
        machine_create: Duration::from_millis(100),
        machine_start: Duration::from_millis(300),
        checks_settle: Duration::from_millis(300),
        ..Timings::instant()
    })
    .await;
    let mut body = machine_body("registry.fly.io/vyx:1");
    body["config"]["checks"] = json!({"alive": {"type": "tcp", "port": 8080}});
    body["config"]["x_unknown_field"] = json!({"kept": [1, 2]});
    let m = api.create_machine(APP, body).await;
    assert_eq!(m["state"], "created");
    assert_eq!(m["region"], "sin");
    assert_eq!(m["version"].as_str().map(str::len), Some(26));
    assert_eq!(m["instance_id"], m["version"]);
    assert_eq!(
        m["config"]["x_unknown_field"],
        json!({"kept": [1, 2]}),
        "unknown fields round-trip"
    );
    assert_eq!(m["image_ref"]["repository"], "vyx");
    assert_eq!(m["image_ref"]["tag"], "1");
    assert!(m.get("checks").is_none(), "no checks before the first run");
    let id = m["id"].as_str().expect("id");

    let w = api.wait_state(APP, id, "started").await;
    assert_eq!(w.status, StatusCode::OK, "{:?}", w.body);
    assert_eq!(w.body["ok"], true);
    assert_eq!(w.body["state"], "started");
    assert_eq!(w.body["version"], m["version"]);

    // `started` is not healthy yet; checks settle later [S24].
    poll_until(Duration::from_secs(10), || async {
        let g = api.get(&mpath(id)).await;
        g.body["checks"]
            .as_array()
            .is_some_and(|cs| cs.len() == 2 && cs.iter().all(|c| c["status"] == "passing"))
    })
    .await;
    let g = api.get(&mpath(id)).await;
    let names: Vec<&str> = g.body["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| c["name"].as_str().unwrap_or(""))
        .collect();
    assert!(
        names.contains(&"alive") && names.contains(&"servicecheck-00-http-8080"),
        "{names:?}"
    );
    let app = api.get(&format!("/v1/apps/{APP}")).await;
    assert_eq!(app.body["status"], "deployed");
    assert_eq!(app.body["machine_count"], 1);
}

#[tokio::test]
async fn failing_images_keep_checks_critical() {
    let api = api_with(Timings::instant()).await;
    api.sim.set_failing_images(vec!["img:bad".into()]);
    let m = api.create_machine(APP, machine_body("img:bad")).await;
    let id = m["id"].as_str().expect("id");
    assert_eq!(
        api.wait_state(APP, id, "started").await.status,
        StatusCode::OK
    );
    poll_until(Duration::from_secs(10), || async {
        let g = api.get(&mpath(id)).await;
        g.body["checks"][0]["status"] == "critical"
    })
    .await;
    // Fixing the image list at run time heals settled checks.
    api.sim.set_failing_images(vec![]);
    let g = api.get(&mpath(id)).await;
    assert_eq!(g.body["checks"][0]["status"], "passing");
}

#[tokio::test]
async fn wait_times_out_with_408_and_validates_params() {
    let api = api_with(Timings::instant()).await;
    let m = api.create_machine(APP, machine_body("img:1")).await;
    let id = m["id"].as_str().expect("id");
    assert_eq!(
        api.wait_state(APP, id, "started").await.status,
        StatusCode::OK
    );
    let started = std::time::Instant::now();
    let w = api
        .get(&format!("{}/wait?state=stopped&timeout=1", mpath(id)))
        .await;
    assert_eq!(w.status, StatusCode::REQUEST_TIMEOUT);
    assert!(w.body["error"].is_string());
    assert!(started.elapsed() >= Duration::from_millis(900));
    // Repeated and comma-separated states mean "any of".
    let w = api
        .get(&format!(
            "{}/wait?state=stopped&state=destroyed,started&timeout=1",
            mpath(id)
        ))
        .await;
    assert_eq!(w.status, StatusCode::OK);
    let w = api
        .get(&format!("{}/wait?state=settled&timeout=1", mpath(id)))
        .await;
    assert_eq!(w.status, StatusCode::OK);
    for q in ["state=bogus", "timeout=abc", "timeout=-1"] {
        let w = api.get(&format!("{}/wait?{q}", mpath(id))).await;
        assert_eq!(w.status, StatusCode::BAD_REQUEST, "{q}");
        assert!(w.body["error"].is_string());
    }
    let w = api.get(&format!("/v1/apps/{APP}/machines/nope/wait")).await;
    assert_eq!(w.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn update_checks_current_version_and_reboots() {
    let api = api_with(Timings {
        machine_update: Duration::from_millis(200),
        machine_start: Duration::from_millis(200),
        ..Timings::instant()
    })
    .await;
    let m = api.create_machine(APP, machine_body("img:1")).await;
    let id = m["id"].as_str().expect("id");
    let v1 = m["version"].as_str().expect("version").to_string();
    assert_eq!(
        api.wait_state(APP, id, "started").await.status,
        StatusCode::OK
    );

    let mut cfg = m["config"].clone();
    cfg["image"] = json!("img:2");
    let u = api
        .post(&mpath(id), json!({"config": cfg, "current_version": v1}))
        .await;
    assert_eq!(u.status, StatusCode::OK, "{:?}", u.body);
    let v2 = u.body["version"].as_str().expect("version").to_string();
    assert_ne!(v1, v2);
    assert_eq!(u.body["state"], "replacing");
    assert_eq!(u.body["config"]["image"], "img:2");

    // Stale version: 409, nothing applied.
    let mut cfg3 = cfg.clone();
    cfg3["image"] = json!("img:3");
    let stale = api
        .post(&mpath(id), json!({"config": cfg3, "current_version": v1}))
        .await;
    assert_eq!(stale.status, StatusCode::CONFLICT);
    assert!(stale.body["error"].is_string());
    let g = api.get(&mpath(id)).await;
    assert_eq!(g.body["config"]["image"], "img:2");
    assert_eq!(g.body["version"], v2.as_str());

    // Waiting on the old version reports it replaced; the new one gets to started.
    let old = api
        .get(&format!(
            "{}/wait?state=started&version={v1}&timeout=1",
            mpath(id)
        ))
        .await;
    assert_eq!(old.status, StatusCode::BAD_REQUEST);
    let w = api
        .get(&format!(
            "{}/wait?state=started&version={v2}&timeout=10",
            mpath(id)
        ))
        .await;
    assert_eq!(w.status, StatusCode::OK);
    assert_eq!(w.body["version"], v2.as_str());
    // The old version can still be read back.
    let o = api.get(&format!("{}?version={v1}", mpath(id))).await;
    assert_eq!(o.body["config"]["image"], "img:1");

    // Region and name are immutable; bad configs are rejected.
    let r = api
        .post(&mpath(id), json!({"config": cfg, "region": "ams"}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = api.post(&mpath(id), json!({"config": {"env": {}}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn stop_start_and_delete_rules() {
    let api = api_with(Timings {
        machine_stop: Duration::from_millis(200),
        machine_destroy: Duration::from_millis(200),
        ..Timings::instant()
    })
    .await;
    let m = api.create_machine(APP, machine_body("img:1")).await;
    let id = m["id"].as_str().expect("id");
    assert_eq!(
        api.wait_state(APP, id, "started").await.status,
        StatusCode::OK
    );

    // A running machine cannot be destroyed without force.
    let d = api.delete(&mpath(id)).await;
    assert_eq!(d.status, StatusCode::PRECONDITION_FAILED);
    assert!(
        d.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("not currently stopped"))
    );

    let bad = api
        .post(&format!("{}/stop", mpath(id)), json!({"signal": "SIGFOO"}))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let s = api
        .post(
            &format!("{}/stop", mpath(id)),
            json!({"signal": "SIGTERM", "timeout": "10s"}),
        )
        .await;
    assert_eq!(s.status, StatusCode::OK);
    assert_eq!(api.get(&mpath(id)).await.body["state"], "stopping");
    assert_eq!(
        api.wait_state(APP, id, "stopped").await.status,
        StatusCode::OK
    );

    let st = api.post(&format!("{}/start", mpath(id)), json!({})).await;
    assert_eq!(st.status, StatusCode::OK);
    assert_eq!(st.body["previous_state"], "stopped");
    assert_eq!(
        api.wait_state(APP, id, "started").await.status,
        StatusCode::OK
    );

    // fly-go's `kill=true` works like the spec's `force=true`.
    let d = api.delete(&format!("{}?kill=true", mpath(id))).await;
    assert_eq!(d.status, StatusCode::OK);
    assert_eq!(
        api.wait_state(APP, id, "destroyed").await.status,
        StatusCode::OK
    );

    // Destroyed machines linger only with include_deleted; acting on them is 404.
    let l = api.get(&format!("/v1/apps/{APP}/machines")).await;
    assert_eq!(l.body, json!([]));
    let l = api
        .get(&format!("/v1/apps/{APP}/machines?include_deleted=true"))
        .await;
    assert_eq!(l.body[0]["state"], "destroyed");
    for r in [
        api.post(&format!("{}/start", mpath(id)), json!({})).await,
        api.post(&format!("{}/stop", mpath(id)), json!({})).await,
        api.post(&mpath(id), json!({"config": {"image": "x"}}))
            .await,
        api.delete(&mpath(id)).await,
    ] {
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(r.body["error"], "machine not found");
    }
    assert_eq!(
        api.get(&format!("/v1/apps/{APP}")).await.body["machine_count"],
        0
    );
}

#[tokio::test]
async fn create_validation() {
    let api = api_with(Timings::instant()).await;
    let cases: Vec<(&str, Value)> = vec![
        ("no config", json!({"region": "sin"})),
        ("no image", json!({"config": {"env": {}}})),
        (
            "unknown region",
            json!({"region": "xyz", "config": {"image": "i"}}),
        ),
        (
            "odd memory",
            json!({"config": {"image": "i", "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 300}}}),
        ),
        (
            "too much memory",
            json!({"config": {"image": "i", "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 4096}}}),
        ),
        (
            "perf too little",
            json!({"config": {"image": "i", "guest": {"cpu_kind": "performance", "cpus": 1, "memory_mb": 1024}}}),
        ),
        (
            "bad cpu kind",
            json!({"config": {"image": "i", "guest": {"cpu_kind": "gpu", "cpus": 1, "memory_mb": 1024}}}),
        ),
        (
            "cli restart spelling",
            json!({"config": {"image": "i", "restart": {"policy": "on-fail"}}}),
        ),
        (
            "metadata not strings",
            json!({"config": {"image": "i", "metadata": {"a": 1}}}),
        ),
        (
            "secrets version ahead",
            json!({"config": {"image": "i"}, "min_secrets_version": 9}),
        ),
    ];
    for (why, body) in cases {
        let r = api.post(&format!("/v1/apps/{APP}/machines"), body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{why}: {:?}", r.body);
        assert!(r.body["error"].is_string(), "{why}");
    }
    let r = api
        .http
        .post(format!("{}/v1/apps/{APP}/machines", api.base))
        .bearer_auth("t")
        .body("{\"config\":")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Every documented region code of the short list works; absent region gets a default.
    for region in ["sin", "iad", "ams", "fra", "syd", "sjc", "lhr", "nrt"] {
        let r = api
            .post(
                &format!("/v1/apps/{APP}/machines"),
                json!({"region": region, "config": {"image": "i"}, "skip_launch": true}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{region}");
        assert_eq!(
            r.body["config"]["guest"]["memory_mb"], 256,
            "guest defaults filled in"
        );
    }
    let r = api
        .post(
            &format!("/v1/apps/{APP}/machines"),
            json!({"config": {"image": "i"}}),
        )
        .await;
    assert!(r.body["region"].is_string());
    // Unknown app.
    let r = api
        .post("/v1/apps/nope/machines", json!({"config": {"image": "i"}}))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn list_filters_paginate_and_lag() {
    let api = api_with(Timings {
        machine_list_lag: Duration::from_millis(1000),
        ..Timings::instant()
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut b = machine_body("img:1");
        b["config"]["metadata"] =
            json!({"vyx_user_id": format!("u{}", i % 2), "vyx_managed_by": "vyx-fleet"});
        ids.push(
            api.create_machine(APP, b).await["id"]
                .as_str()
                .expect("id")
                .to_string(),
        );
    }
    // Fresh machines are missing from lists for a moment, but GET by id works at once.
    assert_eq!(
        api.get(&format!("/v1/apps/{APP}/machines")).await.body,
        json!([])
    );
    assert_eq!(api.get(&mpath(&ids[0])).await.status, StatusCode::OK);
    poll_until(Duration::from_secs(10), || async {
        api.get(&format!("/v1/apps/{APP}/machines"))
            .await
            .body
            .as_array()
            .map(Vec::len)
            == Some(5)
    })
    .await;

    let l = api
        .get(&format!(
            "/v1/apps/{APP}/machines?metadata.vyx_user_id=u0&metadata.vyx_managed_by=vyx-fleet"
        ))
        .await;
    let got: Vec<&str> = l
        .body
        .as_array()
        .expect("array")
        .iter()
        .map(|m| m["id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(got, [ids[0].as_str(), ids[2].as_str(), ids[4].as_str()]);
    let l = api
        .get(&format!(
            "/v1/apps/{APP}/machines?metadata.vyx_user_id=u0&metadata.vyx_managed_by=other"
        ))
        .await;
    assert_eq!(l.body, json!([]), "all metadata filters must match");

    let l = api
        .get(&format!("/v1/apps/{APP}/machines?summary=true"))
        .await;
    assert!(l.body[0].get("config").is_none());
    assert!(l.body[0]["state"].is_string());

    let mut seen = Vec::new();
    let mut path = format!("/v1/apps/{APP}/machines?limit=2");
    for _ in 0..10 {
        let page = api.get(&path).await;
        seen.extend(
            page.body
                .as_array()
                .expect("array")
                .iter()
                .map(|m| m["id"].as_str().unwrap_or("").to_string()),
        );
        match page.headers.get("fly-next-cursor") {
            Some(c) => {
                path = format!(
                    "/v1/apps/{APP}/machines?limit=2&cursor={}",
                    c.to_str().expect("ascii")
                )
            }
            None => break,
        }
    }
    assert_eq!(seen, ids);
    let bad = api
        .get(&format!("/v1/apps/{APP}/machines?cursor=c1.1"))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "cursor needs limit");
    let bad = api
        .get(&format!("/v1/apps/{APP}/machines?limit=1001"))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    // State filter.
    api.post(&format!("{}/stop", mpath(&ids[1])), json!({}))
        .await;
    assert_eq!(
        api.wait_state(APP, &ids[1], "stopped").await.status,
        StatusCode::OK
    );
    let l = api
        .get(&format!("/v1/apps/{APP}/machines?state=stopped,suspended"))
        .await;
    assert_eq!(l.body.as_array().map(Vec::len), Some(1));
    assert_eq!(l.body[0]["id"], ids[1].as_str());
}

#[tokio::test]
async fn org_machines_listing() {
    let api = api_with(Timings::instant()).await;
    api.create_app("vyx-user-two").await;
    let a = api.create_machine(APP, machine_body("img:1")).await;
    let b = api
        .create_machine("vyx-user-two", machine_body("img:2"))
        .await;
    api.sim.seed_app("elsewhere", "not-ours");
    // Settle first: the org listing is ordered by updated_at, so a machine still booting would
    // legitimately move behind the cursor between pages [S1].
    for (app, m) in [(APP, &a), ("vyx-user-two", &b)] {
        let id = m["id"].as_str().expect("id");
        assert_eq!(
            api.wait_state(app, id, "started").await.status,
            StatusCode::OK
        );
    }
    let l = api.get(&format!("/v1/orgs/{ORG}/machines")).await;
    assert_eq!(l.status, StatusCode::OK);
    let ms = l.body["machines"].as_array().expect("machines");
    assert_eq!(ms.len(), 2);
    for m in ms {
        for k in [
            "app_name",
            "id",
            "name",
            "state",
            "region",
            "version",
            "private_ip",
            "created_at",
            "updated_at",
        ] {
            assert!(m.get(k).is_some(), "{k} missing");
        }
        assert!(m["config"]["image"].is_string());
        assert!(m["config"]["guest"]["memory_mb"].is_number());
        assert_eq!(m["config"]["metadata"]["vyx_user_id"], "u1");
    }
    let apps: Vec<&str> = ms
        .iter()
        .map(|m| m["app_name"].as_str().unwrap_or(""))
        .collect();
    assert!(apps.contains(&APP) && apps.contains(&"vyx-user-two"));
    assert!(l.body["last_machine_id"].is_string());

    // Pagination by `next_cursor` visits each machine once.
    let p1 = api.get(&format!("/v1/orgs/{ORG}/machines?limit=1")).await;
    let c = p1.body["next_cursor"].as_str().expect("cursor").to_string();
    let p2 = api
        .get(&format!("/v1/orgs/{ORG}/machines?limit=1&cursor={c}"))
        .await;
    let mut ids = vec![
        p1.body["machines"][0]["id"].clone(),
        p2.body["machines"][0]["id"].clone(),
    ];
    ids.sort_by_key(|v| v.as_str().unwrap_or("").to_string());
    let mut want = vec![a["id"].clone(), b["id"].clone()];
    want.sort_by_key(|v| v.as_str().unwrap_or("").to_string());
    assert_eq!(ids, want);
    assert!(p2.body.get("next_cursor").is_none());

    let s = api
        .get(&format!("/v1/orgs/{ORG}/machines?summary=true"))
        .await;
    assert!(s.body["machines"][0].get("config").is_none());
    assert_eq!(
        api.get("/v1/orgs/elsewhere/machines").await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn the_org_machine_list_reports_error_regions_and_leaves_their_machines_out() {
    use vyx_fleet::sim::Faults;
    let api = api_with(Timings::instant()).await;
    let in_sin = api.create_machine(APP, machine_body("img:1")).await;
    let mut body = machine_body("img:1");
    body["region"] = json!("ams");
    let in_ams = api.create_machine(APP, body).await;
    let ids = |v: &Value| -> Vec<String> {
        v["machines"]
            .as_array()
            .expect("machines")
            .iter()
            .map(|m| m["id"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let all = api.get(&format!("/v1/orgs/{ORG}/machines")).await;
    assert_eq!(all.body["error_regions"], json!([]));
    assert_eq!(ids(&all.body).len(), 2);

    api.sim.set_faults(Faults {
        error_regions: vec!["sin".into()],
        ..Faults::default()
    });
    let partial = api.get(&format!("/v1/orgs/{ORG}/machines")).await;
    assert_eq!(partial.status, StatusCode::OK);
    assert_eq!(partial.body["error_regions"], json!(["sin"]));
    assert_eq!(ids(&partial.body), [in_ams["id"].as_str().unwrap_or("")]);
    // The per-app list and GET still see the machine: only the org-wide view is partial.
    let id = in_sin["id"].as_str().expect("id");
    assert_eq!(api.get(&mpath(id)).await.status, StatusCode::OK);
    let per_app = api.get(&format!("/v1/apps/{APP}/machines")).await;
    assert_eq!(per_app.body.as_array().map(Vec::len), Some(2));

    api.sim.set_faults(Faults::default());
    let healed = api.get(&format!("/v1/orgs/{ORG}/machines")).await;
    assert_eq!(healed.body["error_regions"], json!([]));
    assert_eq!(ids(&healed.body).len(), 2);
}

/// The org list scans the fleet a slice of apps per hold of the world lock (2,000 apps), so other
/// requests never wait for a whole page's scan; a page still comes out whole and in order.
#[tokio::test]
async fn the_org_list_pages_in_order_across_the_slices_it_scans_in() {
    let api = Api::fast().await;
    let names: Vec<String> = (0..4_100).map(|i| format!("vyx-user-{i:05}")).collect();
    for n in &names {
        api.create_app(n).await;
    }
    // Machines in apps of the first, second and third slice (apps are scanned by name).
    let mut want = Vec::new();
    for app in [
        &names[10],
        &names[2_500],
        &names[4_099],
        &names[1_999],
        &names[2_000],
    ] {
        let id = api.create_machine(app, machine_body("img:1")).await["id"].clone();
        // Settled, so no machine moves behind the cursor while the test pages.
        api.wait_state(app, id.as_str().unwrap_or(""), "started")
            .await;
        want.push(id);
    }
    let mut seen = Vec::new();
    let mut path = format!("/v1/orgs/{ORG}/machines?limit=2");
    loop {
        let page = api.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{:?}", page.body);
        seen.extend(
            page.body["machines"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        );
        match page.body["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/orgs/{ORG}/machines?limit=2&cursor={c}"),
            None => break,
        }
    }
    let ids: Vec<Value> = seen.iter().map(|m| m["id"].clone()).collect();
    let mut sorted = want.clone();
    sorted.sort_by_key(|v| v.as_str().unwrap_or("").to_string());
    let mut got = ids.clone();
    got.sort_by_key(|v| v.as_str().unwrap_or("").to_string());
    assert_eq!(got, sorted, "every machine once");
    let at: Vec<&str> = seen
        .iter()
        .map(|m| m["updated_at"].as_str().unwrap_or(""))
        .collect();
    assert!(
        at.windows(2).all(|w| w[0] <= w[1]),
        "updated_at order: {at:?}"
    );
}
