//! Decoding of realistic and odd Fly answers.

use super::*;
use crate::fly::config::Autostop;
use crate::fly::duration::FlyDuration;
use crate::fly::machine::*;
use proptest::prelude::*;
use std::time::Duration;

/// A `GET /v1/apps/{app}/machines/{id}` answer as fly-go and the spec describe it.
pub(crate) const MACHINE_JSON: &str = r#"{
  "id": "1781973f552189",
  "name": "vyx-user-abcd2345-m",
  "state": "started",
  "region": "sin",
  "instance_id": "01JABCDEFGHJKMNPQRSTVWXYZ0",
  "version": "01JABCDEFGHJKMNPQRSTVWXYZ0",
  "private_ip": "fdaa:0:1:a7b:1::2",
  "config": {
    "image": "registry.fly.io/vyx-app:deployment-01",
    "env": {"USER_ID": "6f1c", "RUN_MODE": "user_dedicated"},
    "guest": {"cpu_kind": "shared", "cpus": 2, "memory_mb": 512},
    "metadata": {"vyx_managed_by": "vyx-fleet", "vyx_user_id": "6f1c", "fly_platform_version": "v2"},
    "restart": {"policy": "always"},
    "services": [{"protocol": "tcp", "internal_port": 8080, "autostop": false, "autostart": true,
      "ports": [{"port": 80, "handlers": ["http"], "force_https": true}, {"port": 443, "handlers": ["tls", "http"]}],
      "checks": [{"type": "http", "port": 8080, "method": "GET", "path": "/health", "interval": "15s", "timeout": "2s", "grace_period": "5s"}]}],
    "stop_config": {"signal": "SIGTERM", "timeout": 10000000000},
    "init": {}
  },
  "incomplete_config": null,
  "image_ref": {"registry": "registry.fly.io", "repository": "vyx-app", "tag": "deployment-01",
    "digest": "sha256:abc", "labels": null},
  "created_at": "2026-08-01T10:00:00Z",
  "updated_at": "2026-08-01T10:01:00Z",
  "events": [{"id": "01J", "type": "start", "status": "started", "source": "flyd", "timestamp": 1722506460000}],
  "checks": [{"name": "servicecheck-00-http-8080", "status": "passing", "output": "OK", "updated_at": "2026-08-01T10:01:00Z"}],
  "host_status": "ok",
  "cordoned": false
}"#;

#[test]
fn realistic_machine_decodes() {
    let m: Machine = serde_json::from_str(MACHINE_JSON).unwrap();
    assert_eq!(m.id, "1781973f552189");
    assert_eq!(m.state, MachineState::Started);
    assert_eq!(m.current_version(), Some("01JABCDEFGHJKMNPQRSTVWXYZ0"));
    let c = m.config.as_ref().unwrap();
    assert_eq!(c.guest.as_ref().unwrap().cpus, Some(2));
    assert_eq!(c.services[0].autostop, Some(Autostop::Off));
    assert_eq!(
        c.stop_config
            .as_ref()
            .unwrap()
            .timeout
            .as_ref()
            .unwrap()
            .as_duration(),
        Some(Duration::from_secs(10))
    );
    assert_eq!(m.metadata().unwrap()["vyx_user_id"], "6f1c");
    assert_eq!(
        m.image_ref.as_ref().unwrap().tag.as_deref(),
        Some("deployment-01")
    );
    assert!(m.is_healthy());
}

#[test]
fn health_needs_started_and_every_check_passing() {
    let mut m: Machine = serde_json::from_str(MACHINE_JSON).unwrap();
    m.checks[0].status = "critical".into();
    assert!(!m.is_healthy());
    m.checks[0].status = "passing".into();
    m.state = MachineState::Stopped;
    assert!(!m.is_healthy());
    // Config has a check that has not reported yet: booted is not ready.
    m.state = MachineState::Started;
    m.checks.clear();
    assert!(!m.is_healthy());
    // No checks configured and none reported: started is all there is to know.
    m.config = None;
    assert!(m.is_healthy());
}

#[test]
fn summary_machine_with_unknown_state_and_nulls_decodes() {
    let m: Machine = serde_json::from_str(
        r#"{"id":"m1","state":"hibernating","name":null,"region":null,"checks":null,"config":null,"new_thing":1}"#,
    )
    .unwrap();
    assert_eq!(m.state, MachineState::Other("hibernating".into()));
    assert_eq!(m.state.to_string(), "hibernating");
    assert!(m.config.is_none() && m.checks.is_empty());
    let m: Machine = serde_json::from_str(r#"{"id":"m2"}"#).unwrap();
    assert_eq!(m.state, MachineState::Unknown);
    assert!(!m.is_healthy());
}

#[test]
fn machine_states_round_trip_their_spelling() {
    for s in [
        "creating",
        "created",
        "starting",
        "started",
        "stopping",
        "stopped",
        "suspending",
        "suspended",
        "restarting",
        "updating",
        "replacing",
        "destroying",
        "destroyed",
        "replaced",
        "migrated",
        "failed",
        "launch_failed",
        "brand_new",
    ] {
        let st: MachineState = serde_json::from_value(s.into()).unwrap();
        assert_eq!(serde_json::to_value(&st).unwrap(), s);
    }
    assert!(MachineState::Destroyed.is_gone() && !MachineState::Stopped.is_gone());
}

#[test]
fn missing_id_or_wrong_types_are_errors_not_panics() {
    assert!(serde_json::from_str::<Machine>(r#"{"state":"started"}"#).is_err());
    assert!(serde_json::from_str::<Machine>(r#"{"id":5}"#).is_err());
    assert!(serde_json::from_str::<Machine>(r#"{"id":"m","checks":"passing"}"#).is_err());
    assert!(
        serde_json::from_str::<Machine>(r#"{"id":"m","config":{"guest":{"cpus":-1}}}"#).is_err()
    );
}

#[test]
fn app_and_list_pages_decode() {
    let app: App = serde_json::from_str(
        r#"{"id":"app_x","name":"vyx-user-abcd2345","status":"deployed","organization":{"name":"Vyx","slug":"vyx","internal_numeric_id":7},
           "network":"vyx-user-abcd2345","network_cidr":"fdaa::/48","machine_count":1,"volume_count":0,"internal_numeric_id":9}"#,
    )
    .unwrap();
    assert_eq!(app.organization.as_ref().unwrap().slug, "vyx");
    assert_eq!(app.machine_count, Some(1));
    let page: ListAppsPage = serde_json::from_str(
        r#"{"total_apps":2,"apps":[{"name":"a"},{"name":"b","status":null}],"next_cursor":"c1"}"#,
    )
    .unwrap();
    assert_eq!(page.apps.len(), 2);
    assert_eq!(page.next_cursor.as_deref(), Some("c1"));
    let page: ListAppsPage = serde_json::from_str(r#"{"apps":null}"#).unwrap();
    assert!(page.apps.is_empty() && page.next_cursor.is_none());
    let created: CreatedApp =
        serde_json::from_str(r#"{"id":"app_1","created_at":1722506460000}"#).unwrap();
    assert_eq!(created.created_at, Some(1722506460000));
}

#[test]
fn org_machines_page_decodes() {
    let page: OrgMachinesPage = serde_json::from_str(
        r#"{"machines":[{"app_name":"vyx-user-abcd2345","id":"m1","name":"n","state":"stopped","region":"sin",
            "version":"01J","private_ip":"fdaa::3","created_at":"2026-08-01T10:00:00Z","updated_at":"2026-08-02T10:00:00Z",
            "config":{"image":"img:1","guest":{"cpu_kind":"shared","cpus":2,"memory_mb":512},"metadata":{"vyx_user_id":"u"}}}],
            "next_cursor":"abc","last_updated_at":"2026-08-02T10:00:00Z","last_machine_id":"m1","error_regions":null}"#,
    )
    .unwrap();
    let m = &page.machines[0];
    assert_eq!(m.app_name, "vyx-user-abcd2345");
    assert_eq!(m.state, MachineState::Stopped);
    assert_eq!(m.config.as_ref().unwrap().metadata["vyx_user_id"], "u");
    assert!(page.error_regions.is_empty());
}

#[test]
fn wait_secrets_and_ips_decode() {
    let w: WaitResult =
        serde_json::from_str(r#"{"ok":true,"state":"started","version":"01J","event_id":"e"}"#)
            .unwrap();
    assert!(w.ok && w.state == MachineState::Started);
    let s: SetSecretsResponse = serde_json::from_str(r#"{"secrets":[],"Version":4}"#).unwrap();
    assert_eq!((s.version, s.version_deprecated), (None, Some(4)));
    let ips: ListIpsResponse = serde_json::from_str(
        r#"{"ips":[{"ip":"2a09:8280:1::1","region":"global","shared":false,"egress":false,"network":null},
                   {"ip":"66.241.124.1","region":"global","shared":true,"service_name":""},
                   {"ip":"fdaa:0:1::5","shared":false,"network":{"name":"","org_slug":"vyx"}},
                   {"ip":null,"egress":true,"ip_pair":{"v4":"1.2.3.4","v6":"::1"}}]}"#,
    )
    .unwrap();
    let kinds: Vec<(bool, bool)> = ips
        .ips
        .iter()
        .map(|i| (i.is_public_v6(), i.is_shared_v4()))
        .collect();
    assert_eq!(
        kinds,
        vec![(true, false), (false, true), (false, false), (false, false)]
    );
}

#[test]
fn requests_serialise_as_fly_expects() {
    let app = CreateAppRequest {
        name: "vyx-user-a".into(),
        org_slug: "vyx".into(),
        network: Some("vyx-user-a".into()),
        idempotency_key: None,
    };
    assert_eq!(
        serde_json::to_string(&app).unwrap(),
        r#"{"name":"vyx-user-a","org_slug":"vyx","network":"vyx-user-a"}"#
    );
    let stop = StopMachineRequest {
        signal: Some("SIGTERM".into()),
        timeout: Some(FlyDuration::from_secs(10)),
    };
    assert_eq!(
        serde_json::to_string(&stop).unwrap(),
        r#"{"signal":"SIGTERM","timeout":"10s"}"#
    );
    assert_eq!(
        serde_json::to_string(&AssignIpRequest {
            ip_type: IpType::SharedV4
        })
        .unwrap(),
        r#"{"type":"shared_v4"}"#
    );
    let upd = UpdateMachineRequest {
        config: serde_json::from_str::<Machine>(MACHINE_JSON)
            .unwrap()
            .config
            .unwrap(),
        current_version: Some("01J".into()),
        min_secrets_version: Some(3),
        ..Default::default()
    };
    let v = serde_json::to_value(&upd).unwrap();
    assert_eq!(v["current_version"], "01J");
    assert_eq!(v["min_secrets_version"], 3);
    assert_eq!(v["config"]["init"], serde_json::json!({}));
    assert!(v.get("skip_launch").is_none());
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = serde_json::from_slice::<Machine>(&bytes);
        let _ = serde_json::from_slice::<App>(&bytes);
        let _ = serde_json::from_slice::<OrgMachinesPage>(&bytes);
        let _ = serde_json::from_slice::<WaitResult>(&bytes);
        let _ = crate::fly::classify::ErrorBody::parse(&bytes);
    }

    #[test]
    fn mutated_machine_json_never_panics(cut in 0usize..MACHINE_JSON.len(), junk in "[\\[\\]{}\":,0-9a-z -]{0,8}") {
        let mut s = MACHINE_JSON.as_bytes()[..cut].to_vec();
        s.extend_from_slice(junk.as_bytes());
        s.extend_from_slice(&MACHINE_JSON.as_bytes()[cut..]);
        if let Ok(m) = serde_json::from_slice::<Machine>(&s) {
            let _ = m.is_healthy();
            let _ = serde_json::to_vec(&m);
        }
    }
}
