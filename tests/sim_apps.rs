//! Apps: create/get/list/delete, global names, post-create window, auth.

mod sim_support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use sim_support::{Api, ORG, poll_until};
use vyx_fleet::sim::{SimConfig, Timings};

#[tokio::test]
async fn create_get_list_shapes() {
    let api = Api::fast().await;
    let r = api
        .post(
            "/v1/apps?wait=true",
            json!({"name": "vyx-user-aaaa", "org_slug": ORG, "network": "vyx-user-aaaa"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(r.body["id"].is_string());
    assert!(
        r.body["created_at"]
            .as_i64()
            .is_some_and(|t| t > 1_600_000_000_000)
    );
    let cookie = r
        .headers
        .get("set-cookie")
        .expect("affinity cookie")
        .to_str()
        .expect("ascii");
    assert!(cookie.contains("Path=/v1/apps/vyx-user-aaaa"), "{cookie}");

    let g = api.get("/v1/apps/vyx-user-aaaa").await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(g.body["name"], "vyx-user-aaaa");
    assert_eq!(g.body["organization"]["slug"], ORG);
    assert_eq!(g.body["network"], "vyx-user-aaaa");
    assert_eq!(g.body["status"], "pending");
    assert_eq!(g.body["machine_count"], 0);

    // Legacy spelling `app_name` is accepted too.
    let r = api
        .post(
            "/v1/apps",
            json!({"app_name": "vyx-user-bbbb", "org_slug": ORG}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);

    let l = api.get(&format!("/v1/apps?org_slug={ORG}")).await;
    assert_eq!(l.status, StatusCode::OK);
    assert_eq!(l.body["total_apps"], 2);
    let names: Vec<&str> = l.body["apps"]
        .as_array()
        .expect("apps")
        .iter()
        .map(|a| a["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, ["vyx-user-aaaa", "vyx-user-bbbb"]);
    assert!(l.body.get("next_cursor").is_none());
}

#[tokio::test]
async fn bad_bodies_and_names_are_400_with_error_body() {
    let api = Api::fast().await;
    for (body, why) in [
        ("{not json", "malformed"),
        ("[1,2]", "not an object"),
        (r#"{"name": "UPPER", "org_slug": "vyx-test"}"#, "uppercase"),
        (
            r#"{"name": "-lead", "org_slug": "vyx-test"}"#,
            "leading dash",
        ),
        (
            r#"{"name": "trail-", "org_slug": "vyx-test"}"#,
            "trailing dash",
        ),
        (r#"{"name": "a_b", "org_slug": "vyx-test"}"#, "underscore"),
        (r#"{"name": 5, "org_slug": "vyx-test"}"#, "number"),
        (r#"{"name": "ok-name"}"#, "no org"),
    ] {
        let r = api
            .http
            .post(format!("{}/v1/apps", api.base))
            .bearer_auth("t")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{why}");
        let v: serde_json::Value = r.json().await.expect("json error body");
        assert!(v["error"].is_string(), "{why}: {v}");
    }
    let long = "a".repeat(64);
    let r = api
        .post("/v1/apps", json!({"name": long, "org_slug": ORG}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let ok63 = "a".repeat(63);
    let r = api
        .post("/v1/apps", json!({"name": ok63, "org_slug": ORG}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
}

#[tokio::test]
async fn names_are_global_across_orgs() {
    let api = Api::fast().await;
    api.sim.seed_app("someone-else", "vyx-user-taken");
    // Seeding over HTTP works as well.
    let r = api
        .http
        .post(format!("{}/_sim/apps", api.base))
        .json(&json!({"org": "other-org", "name": "vyx-user-taken2"}))
        .send()
        .await
        .expect("seed");
    assert_eq!(r.status(), StatusCode::CREATED);

    for name in ["vyx-user-taken", "vyx-user-taken2"] {
        let g = api.get(&format!("/v1/apps/{name}")).await;
        assert_eq!(g.status, StatusCode::FORBIDDEN, "{name}");
        assert!(g.body["error"].is_string());
        let c = api
            .post("/v1/apps", json!({"name": name, "org_slug": ORG}))
            .await;
        assert_eq!(c.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(c.body["status"], "name_taken");
        assert_eq!(c.body["error"], "Name has already been taken");
        // Sub-resources of someone else's app are off limits too.
        let m = api.get(&format!("/v1/apps/{name}/machines")).await;
        assert_eq!(m.status, StatusCode::FORBIDDEN);
    }
    // Our own app: 422 name_taken as well, indistinguishable from the create call alone.
    api.create_app("vyx-user-mine").await;
    let c = api
        .post(
            "/v1/apps",
            json!({"name": "vyx-user-mine", "org_slug": ORG}),
        )
        .await;
    assert_eq!(c.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(c.body["status"], "name_taken");
    // Other orgs' apps never show in our list.
    let l = api.get(&format!("/v1/apps?org_slug={ORG}")).await;
    assert_eq!(l.body["total_apps"], 1);
    // Creating in an org the token cannot access is refused.
    let c = api
        .post(
            "/v1/apps",
            json!({"name": "vyx-user-x", "org_slug": "someone-else"}),
        )
        .await;
    assert_eq!(c.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn auth_schemes_and_unknown_tokens() {
    let cfg = SimConfig {
        any_token_org: None,
        ..SimConfig::fast()
    }
    .with_token("good", ORG);
    let api = Api::start(cfg).await;
    let url = format!("{}/v1/apps?org_slug={ORG}", api.base);
    for (hdr, want) in [
        (Some("Bearer good"), StatusCode::OK),
        (Some("FlyV1 good"), StatusCode::OK),
        (Some("Bearer bad"), StatusCode::UNAUTHORIZED),
        (Some("Bearer "), StatusCode::UNAUTHORIZED),
        (Some("Basic good"), StatusCode::UNAUTHORIZED),
        (None, StatusCode::UNAUTHORIZED),
    ] {
        let mut rb = api.http.get(&url);
        if let Some(h) = hdr {
            rb = rb.header("authorization", h);
        }
        let r = rb.send().await.expect("send");
        assert_eq!(r.status(), want, "{hdr:?}");
        assert!(r.headers().contains_key("fly-request-id"));
        if want == StatusCode::UNAUTHORIZED {
            let v: serde_json::Value = r.json().await.expect("error body");
            assert!(v["error"].is_string());
        }
    }
}

#[tokio::test]
async fn post_create_window_answers_404_then_200() {
    let window = Duration::from_millis(1500);
    let cfg = SimConfig {
        timings: Timings {
            app_visible_after: window,
            ..Timings::instant()
        },
        ..SimConfig::fast()
    };
    let api = Api::start(cfg).await;
    let t0 = Instant::now();
    let r = api
        .post("/v1/apps", json!({"name": "vyx-user-new", "org_slug": ORG}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    for path in [
        "/v1/apps/vyx-user-new",
        "/v1/apps/vyx-user-new/machines",
        "/v1/apps/vyx-user-new/secrets",
        "/v1/apps/vyx-user-new/ip_assignments",
    ] {
        let g = api.get(path).await;
        assert_eq!(g.status, StatusCode::NOT_FOUND, "{path} inside the window");
        assert!(g.body["error"].is_string());
    }
    // The name is nevertheless taken at once.
    let c = api
        .post("/v1/apps", json!({"name": "vyx-user-new", "org_slug": ORG}))
        .await;
    assert_eq!(c.status, StatusCode::UNPROCESSABLE_ENTITY);
    poll_until(Duration::from_secs(10), || async {
        api.get("/v1/apps/vyx-user-new").await.status == StatusCode::OK
    })
    .await;
    assert!(t0.elapsed() >= window, "visible after {:?}", t0.elapsed());
}

#[tokio::test]
async fn delete_is_async_and_frees_the_name() {
    let cfg = SimConfig {
        timings: Timings {
            app_delete: Duration::from_millis(800),
            ..Timings::instant()
        },
        ..SimConfig::fast()
    };
    let api = Api::start(cfg).await;
    api.create_app("vyx-user-del").await;
    api.create_machine("vyx-user-del", sim_support::machine_body("img:1"))
        .await;
    let d = api.delete("/v1/apps/vyx-user-del").await;
    assert_eq!(d.status, StatusCode::ACCEPTED);
    assert!(d.body.is_null(), "202 has no body");
    // Still there, still holding its name, while the deletion runs.
    assert_eq!(
        api.get("/v1/apps/vyx-user-del").await.status,
        StatusCode::OK
    );
    let c = api
        .post("/v1/apps", json!({"name": "vyx-user-del", "org_slug": ORG}))
        .await;
    assert_eq!(c.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(c.body["status"], "name_taken");
    assert!(
        api.sim
            .snapshot()
            .app("vyx-user-del")
            .is_some_and(|a| a.deleting)
    );
    poll_until(Duration::from_secs(10), || async {
        api.get("/v1/apps/vyx-user-del").await.status == StatusCode::NOT_FOUND
    })
    .await;
    assert!(
        api.sim.snapshot().app("vyx-user-del").is_none(),
        "machines/IPs/secrets gone with it"
    );
    assert_eq!(
        api.delete("/v1/apps/vyx-user-del").await.status,
        StatusCode::NOT_FOUND
    );
    api.create_app("vyx-user-del").await;
}

#[tokio::test]
async fn apps_list_paginates_and_lags() {
    let cfg = SimConfig {
        timings: Timings {
            apps_list_lag: Duration::from_millis(1500),
            ..Timings::instant()
        },
        ..SimConfig::fast()
    };
    let api = Api::start(cfg).await;
    for i in 0..5 {
        let r = api
            .post(
                "/v1/apps",
                json!({"name": format!("vyx-user-p{i}"), "org_slug": ORG}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    // Freshly created apps are missing from the list for a moment.
    let l = api.get(&format!("/v1/apps?org_slug={ORG}")).await;
    assert_eq!(l.body["total_apps"], 0);
    poll_until(Duration::from_secs(10), || async {
        api.get(&format!("/v1/apps?org_slug={ORG}")).await.body["total_apps"] == 5
    })
    .await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let path = match &cursor {
            Some(c) => format!("/v1/apps?org_slug={ORG}&limit=2&cursor={c}"),
            None => format!("/v1/apps?org_slug={ORG}&limit=2"),
        };
        let page = api.get(&path).await;
        assert_eq!(page.status, StatusCode::OK);
        assert_eq!(page.body["total_apps"], 5);
        let apps = page.body["apps"].as_array().expect("apps");
        assert!(apps.len() <= 2);
        seen.extend(
            apps.iter()
                .map(|a| a["name"].as_str().unwrap_or_default().to_string()),
        );
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(
        seen,
        (0..5).map(|i| format!("vyx-user-p{i}")).collect::<Vec<_>>()
    );
    let bad = api.get(&format!("/v1/apps?org_slug={ORG}&cursor=zz")).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let bad = api.get(&format!("/v1/apps?org_slug={ORG}&limit=0")).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let bad = api.get("/v1/apps").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn idempotency_key_returns_the_first_app() {
    let api = Api::fast().await;
    let body = json!({"name": "vyx-user-idem", "org_slug": ORG, "idempotency_key": "k1"});
    let a = api.post("/v1/apps", body.clone()).await;
    assert_eq!(a.status, StatusCode::CREATED);
    let b = api.post("/v1/apps", body).await;
    assert_eq!(b.status, StatusCode::CREATED);
    assert_eq!(a.body["id"], b.body["id"]);
    let c = api
        .post(
            "/v1/apps",
            json!({"name": "vyx-user-other", "org_slug": ORG, "idempotency_key": "k1"}),
        )
        .await;
    assert_eq!(c.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(api.sim.snapshot().apps.len(), 1);
}

#[tokio::test]
async fn shutdown_ends_long_polls() {
    let api = Api::fast().await;
    api.create_app("vyx-user-sd").await;
    let m = api
        .create_machine("vyx-user-sd", sim_support::machine_body("i"))
        .await;
    let id = m["id"].as_str().expect("id").to_string();
    assert_eq!(
        api.wait_state("vyx-user-sd", &id, "started").await.status,
        StatusCode::OK
    );
    let url = format!(
        "{}/v1/apps/vyx-user-sd/machines/{id}/wait?state=stopped&timeout=60",
        api.base
    );
    let http = api.http.clone();
    let pending = tokio::spawn(async move { http.get(url).bearer_auth("t").send().await });
    // Make sure the long-poll is in flight before shutting down.
    poll_until(Duration::from_secs(10), || async {
        api.sim.in_flight() == 1
    })
    .await;
    let t = Instant::now();
    api.sim.shutdown().await;
    eprintln!("measured: simulator shutdown took {:?}", t.elapsed());
    let r = pending
        .await
        .expect("join")
        .expect("answered before closing");
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn affinity_cookie_can_skip_the_window() {
    let cfg = SimConfig {
        timings: Timings {
            app_visible_after: Duration::from_secs(30),
            ..Timings::instant()
        },
        affinity_cookie_skips_window: true,
        ..SimConfig::fast()
    };
    let api = Api::start(cfg).await;
    let jar = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .expect("client");
    let r = jar
        .post(format!("{}/v1/apps", api.base))
        .bearer_auth("t")
        .json(&json!({"name": "vyx-user-aff", "org_slug": ORG}))
        .send()
        .await
        .expect("create");
    assert_eq!(r.status(), StatusCode::CREATED);
    let with = jar
        .get(format!("{}/v1/apps/vyx-user-aff", api.base))
        .bearer_auth("t")
        .send()
        .await
        .expect("get");
    assert_eq!(with.status(), StatusCode::OK, "cookie lands on the writer");
    assert_eq!(
        api.get("/v1/apps/vyx-user-aff").await.status,
        StatusCode::NOT_FOUND
    );
}

#[test]
fn public_types_are_thread_safe_and_serialisable() {
    fn send_sync<T: Send + Sync>() {}
    fn ser<T: serde::Serialize + Clone + std::fmt::Debug>() {}
    send_sync::<vyx_fleet::sim::Sim>();
    ser::<vyx_fleet::sim::Snapshot>();
    ser::<vyx_fleet::sim::CallRecord>();
    ser::<vyx_fleet::sim::Faults>();
    ser::<vyx_fleet::sim::SimConfig>();
}

#[tokio::test]
async fn inside_the_post_create_window_reads_may_answer_401_as_well_as_404() {
    use vyx_fleet::sim::Faults;
    let cfg = SimConfig {
        timings: Timings {
            app_visible_after: Duration::from_secs(30),
            ..Timings::instant()
        },
        faults: Faults {
            post_create_401: 0.5,
            seed: Some(7),
            ..Faults::default()
        },
        ..SimConfig::fast()
    };
    let api = Api::start(cfg).await;
    let r = api
        .post(
            "/v1/apps",
            json!({"name": "vyx-user-w401", "org_slug": ORG}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let mut seen = std::collections::BTreeSet::new();
    for path in [
        "/v1/apps/vyx-user-w401",
        "/v1/apps/vyx-user-w401/secrets",
        "/v1/apps/vyx-user-w401/ip_assignments",
    ] {
        for _ in 0..12 {
            let r = api.get(path).await;
            assert!(r.body["error"].is_string(), "{path}: {:?}", r.body);
            seen.insert(r.status.as_u16());
        }
    }
    assert_eq!(seen, [401, 404].into_iter().collect());
    // 401 only inside the window: an app that does not exist is a plain 404, whatever the setting.
    for _ in 0..12 {
        assert_eq!(
            api.get("/v1/apps/vyx-user-nope").await.status,
            StatusCode::NOT_FOUND
        );
    }
    // After the window the app answers 200, with the 401 share still set.
    api.sim.seed_app(ORG, "vyx-user-seeded");
    for _ in 0..12 {
        assert_eq!(
            api.get("/v1/apps/vyx-user-seeded").await.status,
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn total_apps_is_counted_at_the_first_page_and_later_pages_skip_newer_apps() {
    let api = Api::fast().await;
    for i in 0..5 {
        api.create_app(&format!("vyx-user-t{i}")).await;
    }
    let p1 = api.get(&format!("/v1/apps?org_slug={ORG}&limit=2")).await;
    assert_eq!(p1.body["total_apps"], 5);
    let mut seen: Vec<String> = p1.body["apps"]
        .as_array()
        .expect("apps")
        .iter()
        .map(|a| a["name"].as_str().unwrap_or_default().to_string())
        .collect();
    // Between pages: two apps appear, one listed-later app is deleted.
    api.create_app("vyx-user-t5").await;
    api.create_app("vyx-user-t6").await;
    assert!(api.sim.delete_app_out_of_band("vyx-user-t4"));
    let mut cursor = p1.body["next_cursor"].as_str().map(str::to_string);
    while let Some(c) = cursor {
        let p = api
            .get(&format!("/v1/apps?org_slug={ORG}&limit=2&cursor={c}"))
            .await;
        assert_eq!(p.status, StatusCode::OK);
        assert_eq!(p.body["total_apps"], 5, "the first page's count, repeated");
        seen.extend(
            p.body["apps"]
                .as_array()
                .expect("apps")
                .iter()
                .map(|a| a["name"].as_str().unwrap_or_default().to_string()),
        );
        cursor = p.body["next_cursor"].as_str().map(str::to_string);
    }
    assert_eq!(
        seen,
        ["vyx-user-t0", "vyx-user-t1", "vyx-user-t2", "vyx-user-t3"]
    );
    let fresh = api.get(&format!("/v1/apps?org_slug={ORG}&limit=2")).await;
    assert_eq!(fresh.body["total_apps"], 6, "a new listing counts anew");
}

#[tokio::test]
async fn an_app_deleted_out_of_band_is_gone_at_once_with_its_machines() {
    let api = Api::fast().await;
    api.create_app("vyx-user-oob").await;
    api.create_machine("vyx-user-oob", sim_support::machine_body("i"))
        .await;
    let r = api
        .http
        .delete(format!("{}/_sim/apps/vyx-user-oob", api.base))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        api.get("/v1/apps/vyx-user-oob").await.status,
        StatusCode::NOT_FOUND
    );
    assert!(api.sim.snapshot().app("vyx-user-oob").is_none());
    let l = api.get(&format!("/v1/orgs/{ORG}/machines")).await;
    assert_eq!(l.body["machines"], json!([]));
    assert!(!api.sim.delete_app_out_of_band("vyx-user-oob"));
    // The name is free again.
    api.create_app("vyx-user-oob").await;
}
