//! One region Fly cannot list does not freeze the fleet.

#[allow(unused_imports)]
use super::*;

/// Between the controller and the simulator: the org machine list loses the machines of `hidden`
/// apps and reports `error_regions: ["ams"]`, as Fly does when a region does not answer. Everything
/// else passes through unchanged.
async fn region_failing_proxy(sim_base: String, hidden: Vec<String>) -> String {
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, Method, StatusCode, Uri};
    use axum::response::IntoResponse;

    #[derive(Clone)]
    struct Proxy {
        sim: String,
        hidden: Vec<String>,
        http: reqwest::Client,
    }
    async fn forward(
        State(p): State<Proxy>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> axum::response::Response {
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let mut req = p.http.request(method.clone(), format!("{}{path}", p.sim));
        for (k, v) in &headers {
            if k != "host" && k != "content-length" {
                req = req.header(k, v);
            }
        }
        let answer = req.body(body).send().await.unwrap();
        let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
        let mut text = answer.text().await.unwrap();
        let org_list = uri.path().starts_with("/v1/orgs/") && uri.path().ends_with("/machines");
        if org_list && method == Method::GET && status.is_success() {
            let mut page: serde_json::Value = serde_json::from_str(&text).unwrap();
            if let Some(ms) = page["machines"].as_array_mut() {
                ms.retain(|m| {
                    !p.hidden
                        .iter()
                        .any(|h| m["app_name"].as_str() == Some(h.as_str()))
                });
            }
            page["error_regions"] = serde_json::json!(["ams"]);
            text = page.to_string();
        }
        (status, [("content-type", "application/json")], text).into_response()
    }
    let proxy = Proxy {
        sim: sim_base,
        hidden,
        http: reqwest::Client::new(),
    };
    let app = axum::Router::new().fallback(forward).with_state(proxy);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_region_fly_cannot_list_freezes_only_the_apps_there() {
    let mut fleet = Fleet::start().await;
    let old = paid(&fleet, 2).await;
    fleet.converge().await;
    // The first user's app runs in ams (say, adopted from the old edge functions).
    sqlx::query("UPDATE public.user_fly_apps SET region = 'ams' WHERE user_id = $1")
        .bind(old[0])
        .execute(&fleet.db.pool)
        .await
        .unwrap();
    let in_ams = fleet.row(old[0]).await.fly_app_name;
    let proxy = region_failing_proxy(fleet.sim.base_url(), vec![in_ams.clone()]).await;
    fleet.reconfigure("FLY_API_BASE_URL", &proxy);

    let newcomer = paid(&fleet, 1).await[0];
    let report = fleet.pass().await;
    assert!(
        report
            .plan
            .findings
            .iter()
            .any(|f| matches!(f, Finding::RegionsUnavailable { .. })),
        "{:?}",
        report.plan.findings
    );
    fleet.converge().await;
    let row = fleet.row(newcomer).await;
    assert_eq!(row.status, "active", "a user outside the region is served");
    assert!(fleet.app(&row.fly_app_name).is_some());
    let ams_app = fleet.app(&in_ams).unwrap();
    assert_eq!(
        ams_app.machines.len(),
        1,
        "the app whose machine went unlisted got no second machine"
    );
}
