//! Paths, bodies, pagination and decoding per call.

use super::*;

#[tokio::test]
async fn get_app_sends_flyv1_auth_and_decodes() {
    let (stub, c) = stub(vec![ok(
        r#"{"id":"1","name":"vyx-user-a","status":"deployed"}"#,
    )])
    .await;
    let app = c.get_app("vyx-user-a").await.unwrap();
    assert_eq!(app.status, "deployed");
    let seen = stub.seen();
    assert_eq!(seen[0].path_and_query, "/v1/apps/vyx-user-a");
    assert_eq!(seen[0].auth.as_deref(), Some("FlyV1 fm2_TOPSECRETTOKEN"));
    assert_eq!(seen[0].content_type, None);
}

#[tokio::test]
async fn create_app_maps_name_conflicts_and_sends_wait() {
    let (stub, c) = stub(vec![
        answer(
            422,
            r#"{"error":"Name has already been taken","status":"name_taken"}"#,
        ),
        answer(409, r#"{"error":"exists"}"#),
        answer(201, r#"{"id":"app_1","created_at":1}"#),
    ])
    .await;
    let req = CreateAppRequest {
        name: "vyx-user-a".into(),
        org_slug: "vyx".into(),
        network: Some("vyx-user-a".into()),
        idempotency_key: None,
    };
    assert!(matches!(
        c.create_app(&req).await,
        Err(FlyError::NameTaken { status: 422, .. })
    ));
    assert!(matches!(
        c.create_app(&req).await,
        Err(FlyError::NameTaken { status: 409, .. })
    ));
    assert_eq!(c.create_app(&req).await.unwrap().id, "app_1");
    let seen = stub.seen();
    assert_eq!(seen[0].path_and_query, "/v1/apps?wait=true");
    let body: serde_json::Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(body["name"], "vyx-user-a");
    assert_eq!(body["network"], "vyx-user-a");
}

#[tokio::test]
async fn get_app_distinguishes_forbidden_and_not_found() {
    let (_stub, c) = stub(vec![answer(403, ""), answer(404, ""), answer(401, "")]).await;
    assert!(matches!(
        c.get_app("x").await,
        Err(FlyError::Forbidden { .. })
    ));
    assert!(matches!(
        c.get_app("x").await,
        Err(FlyError::NotFound { .. })
    ));
    assert!(matches!(
        c.get_app("x").await,
        Err(FlyError::Unauthorized { .. })
    ));
}

#[tokio::test]
async fn list_apps_follows_next_cursor() {
    let (stub, c) = stub(vec![
        ok(r#"{"total_apps":3,"apps":[{"name":"a"},{"name":"b"}],"next_cursor":"c1"}"#),
        ok(r#"{"apps":[{"name":"c"}],"next_cursor":""}"#),
    ])
    .await;
    let apps = c.list_apps("vyx").await.unwrap();
    let names: Vec<_> = apps.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    let seen = stub.seen();
    assert_eq!(seen[0].path_and_query, "/v1/apps?org_slug=vyx&limit=500");
    assert_eq!(
        seen[1].path_and_query,
        "/v1/apps?org_slug=vyx&limit=500&cursor=c1"
    );
}

#[tokio::test]
async fn a_repeating_cursor_is_an_error_not_a_loop() {
    let page = ok(r#"{"apps":[{"name":"a"}],"next_cursor":"same"}"#);
    let (_stub, c) = stub(vec![page.clone(), page.clone(), page]).await;
    assert_eq!(c.list_apps("vyx").await.unwrap_err().kind(), "decode");
}

#[tokio::test]
async fn list_machines_sends_filters_and_follows_the_header_cursor() {
    let long_cursor = "k2".repeat(300);
    let (stub, c) = stub(vec![
        ok(&format!("[{}]", machine_json("m1", "started"))).header("fly-next-cursor", &long_cursor),
        ok("[]").header("fly-next-cursor", "k3"),
        ok(&format!("[{}]", machine_json("m2", "stopped"))),
    ])
    .await;
    let q = ListMachines {
        metadata: [("vyx_user_id".to_owned(), "u 1".to_owned())].into(),
        include_deleted: Some(false),
        state: vec!["started".into(), "stopped".into()],
        ..Default::default()
    };
    let ms = c.list_machines("app", &q).await.unwrap();
    assert_eq!(ms.len(), 2);
    let seen = stub.seen();
    assert_eq!(
        seen[0].path_and_query,
        "/v1/apps/app/machines?metadata.vyx_user_id=u+1&include_deleted=false&state=started%2Cstopped&limit=500"
    );
    assert!(
        seen[1]
            .path_and_query
            .ends_with(&format!("&cursor={long_cursor}"))
    );
    assert!(seen[2].path_and_query.ends_with("&cursor=k3"));
}

#[tokio::test]
async fn org_machines_paginate_and_refuse_incomplete_answers() {
    let m = r#"{"app_name":"vyx-user-a","id":"m1","state":"started","config":{"image":"i","metadata":{"k":"v"}}}"#;
    let (stub, c) = stub(vec![
        ok(&format!(r#"{{"machines":[{m}],"next_cursor":"n1"}}"#)),
        ok(r#"{"machines":[],"next_cursor":null,"error_regions":null}"#),
        ok(&format!(r#"{{"machines":[{m}],"error_regions":["sin"]}}"#)),
    ])
    .await;
    let ms = c.list_org_machines("vyx").await.unwrap();
    assert_eq!(ms[0].app_name, "vyx-user-a");
    assert_eq!(
        stub.seen()[1].path_and_query,
        "/v1/orgs/vyx/machines?limit=500&cursor=n1"
    );
    let e = c.list_org_machines("vyx").await.unwrap_err();
    assert!(matches!(&e, FlyError::Incomplete { error_regions, .. } if error_regions == &["sin"]));
    assert!(e.is_transient());
}

#[tokio::test]
async fn machine_actions_hit_the_right_routes() {
    let (stub, c) = stub(vec![
        ok("{}"),
        ok(r#"{"previous_state":"stopped"}"#),
        ok(""),
        answer(202, ""),
    ])
    .await;
    let stop = StopMachineRequest {
        signal: Some("SIGTERM".into()),
        timeout: Some(FlyDuration::from_secs(10)),
    };
    c.stop_machine("app", "m1", &stop).await.unwrap();
    c.start_machine("app", "m1").await.unwrap();
    c.delete_machine("app", "m1", true).await.unwrap();
    c.delete_app("app").await.unwrap();
    let seen = stub.seen();
    let got: Vec<_> = seen
        .iter()
        .map(|s| (s.method.as_str(), s.path_and_query.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("POST", "/v1/apps/app/machines/m1/stop"),
            ("POST", "/v1/apps/app/machines/m1/start"),
            ("DELETE", "/v1/apps/app/machines/m1?force=true"),
            ("DELETE", "/v1/apps/app"),
        ]
    );
    assert_eq!(seen[0].body, r#"{"signal":"SIGTERM","timeout":"10s"}"#);
    assert_eq!(seen[1].content_type, None);
}

#[tokio::test]
async fn path_segments_are_escaped() {
    let (stub, c) = stub(vec![ok(r#"{"name":"x"}"#)]).await;
    let _ = c.get_app("../v1/orgs?x=1").await;
    assert_eq!(
        stub.seen()[0].path_and_query,
        "/v1/apps/..%2Fv1%2Forgs%3Fx=1"
    );
}

#[tokio::test]
async fn set_secrets_sends_values_and_nulls_and_never_leaks_them() {
    let (stub, c) = stub(vec![
        ok(r#"{"secrets":[{"name":"A","digest":"d"}],"version":7,"Version":7}"#),
        ok(r#"{"Version":8}"#),
        answer(
            400,
            r#"{"error":"invalid value s3cr3t-value for SUPABASE_KEY; token fm2_TOPSECRETTOKEN"}"#,
        ),
        ok(r#"{"secrets":[]}"#),
    ])
    .await;
    let values = [
        ("SUPABASE_KEY".to_owned(), Some(Secret::new("s3cr3t-value"))),
        ("OLD".to_owned(), None),
    ]
    .into_iter()
    .collect();
    assert_eq!(c.set_secrets("app", &values).await.unwrap(), 7);
    assert_eq!(c.set_secrets("app", &values).await.unwrap(), 8);
    let e = c.set_secrets("app", &values).await.unwrap_err();
    let shown = format!("{e} {e:?}");
    assert!(
        !shown.contains("s3cr3t") && !shown.contains("TOPSECRET"),
        "{shown}"
    );
    assert!(shown.contains("[redacted]"));
    // The write happened; a missing version only loses the read-your-writes guard.
    assert_eq!(c.set_secrets("app", &values).await.unwrap(), 0);
    let body: serde_json::Value = serde_json::from_str(&stub.seen()[0].body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"values": {"SUPABASE_KEY": "s3cr3t-value", "OLD": null}})
    );
}

#[tokio::test]
async fn ips_list_and_assign() {
    let (stub, c) = stub(vec![
        ok(r#"{"ips":[{"ip":"2a09::1","shared":false}]}"#),
        ok(r#"{"ip":"66.1.1.1","shared":true,"region":"global"}"#),
    ])
    .await;
    assert!(c.list_ips("app").await.unwrap()[0].is_public_v6());
    assert!(
        c.assign_ip("app", IpType::SharedV4)
            .await
            .unwrap()
            .is_shared_v4()
    );
    let seen = stub.seen();
    assert_eq!(seen[1].path_and_query, "/v1/apps/app/ip_assignments");
    assert_eq!(seen[1].body, r#"{"type":"shared_v4"}"#);
}

#[tokio::test]
async fn affinity_cookies_are_replayed_for_the_app() {
    let (stub, c) = stub(vec![
        answer(201, r#"{"id":"a1"}"#)
            .header("set-cookie", "fly-affinity=node7; Path=/v1/apps/vyx-user-a"),
        ok(r#"{"name":"vyx-user-a"}"#),
        ok(r#"{"name":"other"}"#),
    ])
    .await;
    let req = CreateAppRequest {
        name: "vyx-user-a".into(),
        org_slug: "vyx".into(),
        ..Default::default()
    };
    c.create_app(&req).await.unwrap();
    c.get_app("vyx-user-a").await.unwrap();
    c.get_app("other").await.unwrap();
    let seen = stub.seen();
    assert_eq!(seen[1].cookie.as_deref(), Some("fly-affinity=node7"));
    assert_eq!(seen[2].cookie, None);
}

#[tokio::test]
async fn a_partial_org_machine_list_keeps_the_machines_and_names_the_failed_regions() {
    let m = r#"{"app_name":"vyx-user-a","id":"m1","state":"started","region":"ams","config":{"image":"i"}}"#;
    let (_stub, c) = stub(vec![
        ok(&format!(
            r#"{{"machines":[{m}],"next_cursor":"n1","error_regions":["sin"]}}"#
        )),
        ok(r#"{"machines":[],"next_cursor":null,"error_regions":["sin","syd"]}"#),
    ])
    .await;
    let list = c.list_org_machines_partial("vyx").await.unwrap();
    assert_eq!(list.machines.len(), 1);
    assert_eq!(list.error_regions, ["sin", "syd"]);
}
