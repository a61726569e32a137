use super::full::jittered;
use super::*;
use crate::fly::{App, OrgMachine};
use crate::fly::{MachineState, OrgMachineConfig, Organization};
use crate::reconcile::observe::{ListSink, parse_time};

fn machine(app: &str, id: &str, state: MachineState, at: &str) -> OrgMachine {
    OrgMachine {
        app_name: app.into(),
        id: id.into(),
        state,
        updated_at: Some(at.into()),
        config: Some(OrgMachineConfig::default()),
        ..Default::default()
    }
}

fn app(name: &str, org: &str) -> App {
    App {
        name: name.into(),
        organization: Some(Organization {
            slug: org.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn cache() -> Cached {
    let mut c = Cached::new(1, "vyx", "vyx-user-", Duration::from_secs(600));
    c.apps(vec![
        app("vyx-user-aaaa", "vyx"),
        app("vyx-app", "vyx"),
        app("vyx-user-else", "another-org"),
    ]);
    c.machines(vec![machine(
        "vyx-user-aaaa",
        "m1",
        MachineState::Started,
        "2026-11-30T09:00:00Z",
    )]);
    c
}

#[test]
fn only_managed_apps_of_our_org_are_kept() {
    let c = cache();
    assert_eq!(c.obs.apps.keys().collect::<Vec<_>>(), vec!["vyx-user-aaaa"]);
    assert_eq!(c.obs.apps["vyx-user-aaaa"].machines.len(), 1);
}

#[test]
fn a_destroyed_machine_in_a_delta_leaves_the_cache_and_moves_the_watermark() {
    let mut c = cache();
    assert!(c.apply(machine(
        "vyx-user-aaaa",
        "m1",
        MachineState::Destroyed,
        "2026-11-30T09:01:00Z",
    )));
    assert!(
        c.obs.apps["vyx-user-aaaa"].machines.is_empty(),
        "the app stays"
    );
    assert_eq!(c.watermark, parse_time(Some("2026-11-30T09:01:00Z")));
}

#[test]
fn an_older_copy_of_a_machine_never_replaces_a_newer_one() {
    let mut c = cache();
    assert!(!c.apply(machine(
        "vyx-user-aaaa",
        "m1",
        MachineState::Stopped,
        "2026-11-30T08:59:00Z",
    )));
    assert_eq!(c.obs.apps["vyx-user-aaaa"].machines[0].state, "started");
}

#[test]
fn the_same_copy_listed_again_by_an_overlapping_delta_is_no_change() {
    let mut c = cache();
    let again = machine(
        "vyx-user-aaaa",
        "m1",
        MachineState::Started,
        "2026-11-30T09:00:00Z",
    );
    assert!(!c.apply(again));
}

#[tokio::test]
async fn a_deleted_apps_machines_stay_buried_when_a_late_delta_lists_them() {
    let oc = ObserveCache::new(Duration::from_secs(600));
    *oc.state() = Some(cache());
    oc.app_deleted("vyx-user-aaaa").await;
    let mut guard = oc.state();
    let c = guard.as_mut().expect("state");
    assert!(!c.apply(machine(
        "vyx-user-aaaa",
        "m1",
        MachineState::Started,
        "2026-11-30T09:02:00Z",
    )));
    assert!(!c.obs.apps.contains_key("vyx-user-aaaa"));
}

#[tokio::test]
async fn a_merge_while_a_pass_holds_the_observation_leaves_the_pass_its_copy() {
    let oc = ObserveCache::new(Duration::from_secs(600));
    *oc.state() = Some(cache());
    let held = oc.state().as_ref().unwrap().obs.clone();
    oc.app_deleted("vyx-user-aaaa").await;
    assert!(
        held.apps.contains_key("vyx-user-aaaa"),
        "what the pass planned from"
    );
    let guard = oc.state();
    assert!(
        !guard
            .as_ref()
            .unwrap()
            .obs
            .apps
            .contains_key("vyx-user-aaaa")
    );
}

#[tokio::test]
async fn a_targeted_snapshot_holds_only_the_users_apps_and_is_served_while_a_list_runs() {
    let oc = ObserveCache::new(Duration::from_secs(600));
    let mut c = cache();
    c.apply(machine(
        "vyx-user-bbbb",
        "m2",
        MachineState::Started,
        "2026-11-30T09:00:00Z",
    ));
    *oc.state() = Some(c);
    // An observer is at work (a resync's full list takes minutes at 100,000 apps).
    let _turn = oc.listing.lock().await;
    let names = vec!["vyx-user-bbbb".to_string(), "vyx-user-none".to_string()];
    let obs = oc
        .snapshot_for(1, &names)
        .expect("the last complete state answers meanwhile");
    assert_eq!(obs.apps.keys().collect::<Vec<_>>(), vec!["vyx-user-bbbb"]);
    assert_eq!(obs.apps["vyx-user-bbbb"].machines.len(), 1);
    assert!(
        oc.snapshot_for(2, &names).is_none(),
        "never another term's state"
    );
}

#[tokio::test]
async fn the_prober_is_shown_the_fleet_again_only_after_something_changed() {
    let oc = ObserveCache::new(Duration::from_secs(600));
    assert!(
        oc.machines_seen(1, None).await.is_none(),
        "no full list yet"
    );
    *oc.state() = Some(cache());
    oc.bump();
    let Some(Seen::Machines {
        generation,
        machines,
    }) = oc.machines_seen(1, None).await
    else {
        panic!("a first look shows every machine");
    };
    assert_eq!(machines.len(), 1);
    assert!(matches!(
        oc.machines_seen(1, Some(generation)).await,
        Some(Seen::Unchanged)
    ));
    oc.app_seen("vyx-user-aaaa").await;
    assert!(
        matches!(
            oc.machines_seen(1, Some(generation)).await,
            Some(Seen::Unchanged)
        ),
        "an app already known is no change"
    );
    oc.app_seen("vyx-user-cccc").await;
    assert!(matches!(
        oc.machines_seen(1, Some(generation)).await,
        Some(Seen::Machines { .. })
    ));
}

#[test]
fn the_resync_is_due_within_the_interval_and_not_much_earlier() {
    for _ in 0..100 {
        let d = jittered(Duration::from_secs(600));
        assert!(d <= Duration::from_secs(600) && d >= Duration::from_secs(540));
    }
}
