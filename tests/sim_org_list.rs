//! The org-wide machine list a reconciler follows by deltas (REFERENCE §3.9): ordered by
//! `updated_at`, `updated_after` strict, stamps and `Date` on the platform's clock, which tests move.

mod sim_support;

use chrono::{DateTime, TimeDelta, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sim_support::{Api, ORG, machine_body};
use vyx_fleet::sim::SimConfig;

const APP: &str = "vyx-user-org";

fn mpath(id: &str) -> String {
    format!("/v1/apps/{APP}/machines/{id}")
}

async fn org_list(api: &Api, query: &str) -> Value {
    let r = api.get(&format!("/v1/orgs/{ORG}/machines{query}")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body
}

fn ids(list: &Value) -> Vec<String> {
    list["machines"]
        .as_array()
        .expect("machines")
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_string())
        .collect()
}

/// A started machine, then the platform's clock a second later.
async fn machine(api: &Api) -> String {
    let m = api.create_machine(APP, machine_body("img:1")).await;
    let id = m["id"].as_str().expect("id").to_string();
    assert_eq!(
        api.wait_state(APP, &id, "started").await.status,
        StatusCode::OK
    );
    api.sim.advance_clock(TimeDelta::seconds(1));
    id
}

async fn updated_at(api: &Api, id: &str) -> String {
    api.get(&mpath(id)).await.body["updated_at"]
        .as_str()
        .expect("updated_at")
        .to_string()
}

#[tokio::test]
async fn the_org_list_is_ordered_by_updated_at_and_updated_after_leaves_out_an_equal_stamp() {
    let api = Api::start(SimConfig::fast()).await;
    api.create_app(APP).await;
    let (a, b, c) = (
        machine(&api).await,
        machine(&api).await,
        machine(&api).await,
    );
    // A change moves a machine to the end of the order.
    let s = api.post(&format!("{}/stop", mpath(&a)), json!({})).await;
    assert_eq!(s.status, StatusCode::OK);
    assert_eq!(
        api.wait_state(APP, &a, "stopped").await.status,
        StatusCode::OK
    );

    let all = org_list(&api, "").await;
    assert_eq!(ids(&all), [b.as_str(), c.as_str(), a.as_str()]);
    assert_eq!(all["last_machine_id"], a.as_str());
    assert_eq!(all["last_updated_at"], updated_at(&api, &a).await.as_str());

    // Strictly after: a machine stamped exactly `updated_after` is not listed.
    let at_c = updated_at(&api, &c).await;
    let after_c = org_list(&api, &format!("?updated_after={at_c}")).await;
    assert_eq!(ids(&after_c), [a.as_str()]);
    let t = DateTime::parse_from_rfc3339(&at_c).expect("rfc3339") - TimeDelta::milliseconds(1);
    let just_before = t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let from_c = org_list(&api, &format!("?updated_after={just_before}")).await;
    assert_eq!(ids(&from_c), [c.as_str(), a.as_str()]);
    let bad = api
        .get(&format!("/v1/orgs/{ORG}/machines?updated_after=yesterday"))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn stamps_and_the_date_header_follow_the_platform_clock_and_a_host_clock_of_its_own() {
    let api = Api::start(SimConfig::fast()).await;
    api.create_app(APP).await;
    let a = machine(&api).await;
    let b = machine(&api).await;
    api.sim.advance_clock(TimeDelta::hours(2));
    let r = api.get(&format!("/v1/orgs/{ORG}/machines")).await;
    let date = r.headers["date"].to_str().expect("ascii");
    let date = DateTime::parse_from_rfc2822(date).expect("an HTTP date");
    assert!(date.with_timezone(&Utc) > Utc::now() + TimeDelta::minutes(119));

    // `b`'s host runs an hour ahead: its change is stamped there, and listed last.
    assert!(api.sim.set_host_clock_skew(APP, &b, TimeDelta::hours(1)));
    for id in [&b, &a] {
        let s = api.post(&format!("{}/stop", mpath(id)), json!({})).await;
        assert_eq!(s.status, StatusCode::OK);
        assert_eq!(
            api.wait_state(APP, id, "stopped").await.status,
            StatusCode::OK
        );
    }
    let stamp = |s: String| DateTime::parse_from_rfc3339(&s).expect("rfc3339");
    let (at_a, at_b) = (
        stamp(updated_at(&api, &a).await),
        stamp(updated_at(&api, &b).await),
    );
    assert!(at_a.with_timezone(&Utc) > Utc::now() + TimeDelta::minutes(119));
    assert!(at_b - at_a > TimeDelta::minutes(59), "{at_a} {at_b}");
    assert_eq!(ids(&org_list(&api, "").await), [a.as_str(), b.as_str()]);
}
