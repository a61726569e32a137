use super::*;
use crate::config::CountOrPercent;
use crate::reconcile::desired::IntentSource;
use crate::reconcile::observed::ObservedMachine;
use crate::reconcile::recorded::fixture::RowFixture;
use crate::reconcile::rollout::{Rollout, Step, WaveSettings};
use proptest::prelude::*;

const PREFIX: &str = "vyx-user-";

fn settings() -> PlanSettings {
    PlanSettings {
        prefix: PREFIX.into(),
        org_slug: "vyx".into(),
        image: "img:2".into(),
        region: "sin".into(),
        cpus: 2,
        memory_mb: 512,
        config_digest: "cfg".into(),
        secrets_digest: "sec".into(),
        deprovision_grace: Duration::minutes(10),
        orphan_grace: Duration::hours(1),
        repair_after: Duration::minutes(5),
        repair_max_per_pass: 5,
    }
}

/// A started rollout of the configured spec with nothing recorded yet (id 1), default-like waves.
fn rollout_input() -> RolloutInput {
    RolloutInput {
        id: 1,
        rollout: Rollout {
            target: "target".into(),
            halted: None,
            failures_forgiven: 0,
        },
        target_image: "img:2".into(),
        settings: WaveSettings {
            max_unavailable: CountOrPercent::Count(8),
            failure_threshold: CountOrPercent::Count(1),
            soak: Duration::seconds(60),
        },
        recorded: BTreeMap::new(),
    }
}

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-26T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn user(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn name(n: u128) -> String {
    naming::candidate(PREFIX, user(n), 0)
}

fn wants(pairs: &[(u128, Intent)]) -> BTreeMap<Uuid, UserIntent> {
    pairs
        .iter()
        .map(|(n, intent)| {
            (
                user(*n),
                UserIntent {
                    intent: *intent,
                    source: IntentSource::Tier,
                },
            )
        })
        .collect()
}

fn machine(id: &str, user_id: Uuid, image: &str) -> ObservedMachine {
    ObservedMachine {
        id: id.into(),
        state: "started".into(),
        region: "sin".into(),
        image: image.into(),
        cpus: Some(2),
        memory_mb: Some(512),
        cpu_kind: Some("shared".into()),
        user_id: Some(user_id),
        op: None,
        version: None,
        updated_at: None,
    }
}

/// An active row whose app and machine exist and match the spec.
fn healthy(n: u128, obs: &mut Observation) -> AppRow {
    let m = format!("m{n}");
    obs.apps.insert(
        name(n),
        ObservedApp {
            name: name(n),
            machines: vec![machine(&m, user(n), "img:2")],
        },
    );
    RowFixture::new(user(n), &name(n), RowStatus::Active)
        .with(|r| {
            r.machine_id = Some(m);
            r.docker_image = Some("img:2".into());
            r.config_digest = Some("cfg".into());
            r.secrets_digest = Some("sec".into());
            r.ips_ready = true;
            r.health_status = Some("healthy".into());
            r.last_health_check = Some(now());
        })
        .build()
}

#[derive(Debug)]
struct World {
    desired: BTreeMap<Uuid, UserIntent>,
    rows: Vec<AppRow>,
    obs: Observation,
    orphans: BTreeMap<String, DateTime<Utc>>,
    recent: BTreeSet<String>,
    held: BTreeMap<String, bool>,
    settings: PlanSettings,
    rollout: RolloutInput,
    health: BTreeMap<Uuid, crate::model::health::HealthState>,
}

impl World {
    fn new() -> Self {
        World {
            desired: BTreeMap::new(),
            rows: vec![],
            obs: Observation::default(),
            orphans: BTreeMap::new(),
            recent: BTreeSet::new(),
            held: BTreeMap::new(),
            settings: settings(),
            rollout: rollout_input(),
            health: BTreeMap::new(),
        }
    }
    fn plan(&self) -> Plan {
        plan(&PlanInput {
            now: now(),
            settings: &self.settings,
            desired: &self.desired,
            rows: &self.rows,
            observed: &self.obs,
            orphans_first_seen: &self.orphans,
            recent_deletions: &self.recent,
            held_deletions: &self.held,
            rollout: &self.rollout,
            health: &self.health,
        })
    }
}

#[test]
fn a_new_paid_user_gets_an_app() {
    let mut w = World::new();
    w.desired = wants(&[(1, Intent::Present)]);
    let p = w.plan();
    assert_eq!(
        p.actions,
        vec![Action::Converge {
            user_id: user(1),
            row_id: None,
            reason: ConvergeReason::New,
            to: ConvergeTo::Target
        }]
    );
}

#[test]
fn a_re_upgrade_reuses_the_soft_deleted_row() {
    let mut w = World::new();
    w.desired = wants(&[(1, Intent::Present)]);
    let row = RowFixture::new(user(1), &name(1), RowStatus::Deleted)
        .with(|r| r.deleted_at = Some(now() - Duration::days(3)))
        .build();
    let row_id = row.id;
    w.rows.push(row);
    let p = w.plan();
    assert_eq!(
        p.actions,
        vec![Action::Converge {
            user_id: user(1),
            row_id: Some(row_id),
            reason: ConvergeReason::Reupgrade,
            to: ConvergeTo::Target
        }]
    );
}

#[test]
fn a_converged_fleet_plans_nothing_even_when_health_was_read_long_ago() {
    let mut w = World::new();
    w.desired = wants(&[(1, Intent::Present), (2, Intent::Present)]);
    w.rows = vec![healthy(1, &mut w.obs), healthy(2, &mut w.obs)];
    let p = w.plan();
    assert_eq!((p.actions.len(), p.findings.len()), (0, 0), "{p:?}");
    assert!(
        matches!(&p.rollout, Some(r) if r.decision.step == Step::Complete),
        "a fleet on the target has nothing to roll out"
    );

    // Probing is the prober's (`prober.rs`), beside the passes: never a planned action.
    w.rows[0].last_health_check = Some(now() - Duration::minutes(60));
    let p = w.plan();
    assert!(p.actions.is_empty(), "{:?}", p.actions);
}

#[test]
fn a_downgrade_waits_for_the_grace_then_deprovisions() {
    let mut w = World::new();
    w.desired = wants(&[
        (1, Intent::Absent),
        (2, Intent::Present),
        (3, Intent::Present),
    ]);
    w.rows = (1..=3).map(|n| healthy(n, &mut w.obs)).collect();
    let p = w.plan();
    assert_eq!(
        p.actions,
        vec![Action::MarkUnwanted {
            user_id: user(1),
            row_id: w.rows[0].id
        }]
    );

    w.rows[0].unwanted_since = Some(now() - Duration::minutes(9));
    assert_eq!(w.plan().actions, vec![], "still within the grace");

    w.rows[0].unwanted_since = Some(now() - Duration::minutes(10));
    assert_eq!(
        w.plan().actions,
        vec![Action::Deprovision {
            user_id: user(1),
            row_id: w.rows[0].id,
            app: name(1)
        }]
    );
}

#[test]
fn an_upgrade_within_the_grace_cancels_the_deprovision() {
    let mut w = World::new();
    w.desired = wants(&[(1, Intent::Present)]);
    w.rows = vec![healthy(1, &mut w.obs)];
    w.rows[0].unwanted_since = Some(now() - Duration::minutes(3));
    assert_eq!(
        w.plan().actions,
        vec![Action::CancelDeprovision {
            user_id: user(1),
            row_id: w.rows[0].id
        }]
    );
}

#[test]
fn a_started_deprovision_finishes_even_if_the_user_is_wanted_again() {
    let mut w = World::new();
    w.desired = wants(&[(1, Intent::Present)]);
    w.rows = vec![
        RowFixture::new(user(1), &name(1), RowStatus::Deprovisioning)
            .with(|r| r.unwanted_since = Some(now() - Duration::hours(1)))
            .build(),
    ];
    assert!(matches!(w.plan().actions[..], [Action::Deprovision { .. }]));
}

#[test]
fn a_paused_user_is_reported_and_never_changed() {
    let mut w = World::new();
    w.desired = wants(&[(1, Intent::Paused), (2, Intent::Paused)]);
    w.rows = vec![healthy(1, &mut w.obs)];
    w.obs.apps.get_mut(&name(1)).unwrap().machines[0].image = "img:1".into();
    let p = w.plan();
    assert_eq!(p.actions, vec![]);
    assert!(p.findings.contains(&Finding::Paused {
        user_id: user(1),
        drift: true
    }));
    assert!(p.findings.contains(&Finding::Paused {
        user_id: user(2),
        drift: false
    }));
}

#[test]
fn rows_naming_unmanaged_apps_are_reported_and_never_acted_on() {
    for bad in ["vyx-app", "something-else", "vyx-user-"] {
        for intent in [Intent::Present, Intent::Absent] {
            let mut w = World::new();
            w.desired = wants(&[(1, intent)]);
            w.rows = vec![RowFixture::new(user(1), bad, RowStatus::Active).build()];
            let p = w.plan();
            assert_eq!(p.actions, vec![], "{bad} {intent:?}");
            assert!(matches!(p.findings[..], [Finding::UnmanagedRowName { .. }]));
        }
    }
}

#[test]
fn rows_with_unknown_status_foreign_org_or_missing_user_are_skipped() {
    let mut w = World::new();
    w.desired = wants(&[
        (1, Intent::Absent),
        (2, Intent::Present),
        (3, Intent::Absent),
    ]);
    w.rows = vec![
        RowFixture::new(user(1), &name(1), RowStatus::Active)
            .with(|r| r.status = "zombie".into())
            .build(),
        RowFixture::new(user(2), &name(2), RowStatus::Active)
            .with(|r| r.fly_org_slug = Some("someone-else".into()))
            .build(),
        RowFixture::new(user(3), &name(3), RowStatus::Active)
            .with(|r| r.user_exists = false)
            .build(),
    ];
    let p = w.plan();
    assert_eq!(p.actions, vec![]);
    assert_eq!(p.findings.len(), 3);
}

#[test]
fn an_image_change_moves_one_canary_first_and_converges_nobody_directly() {
    let mut w = World::new();
    w.desired = wants(&[
        (1, Intent::Present),
        (2, Intent::Present),
        (3, Intent::Present),
    ]);
    w.rows = (1..=3).map(|n| healthy(n, &mut w.obs)).collect();
    w.settings.image = "img:3".into();
    w.rollout.target_image = "img:3".into();
    let p = w.plan();
    assert!(
        matches!(
            &p.actions[..],
            [Action::Rollout { user_id, wave: 1, step: RolloutStep::Move, .. }] if *user_id == user(1)
        ),
        "{:?}",
        p.actions
    );
}

#[test]
fn each_kind_of_drift_has_its_reason() {
    type Mutation = Box<dyn Fn(&mut AppRow, &mut ObservedApp)>;
    let cases: Vec<(ConvergeReason, Mutation)> = vec![
        (
            ConvergeReason::MachineMissing,
            Box::new(|_, a| a.machines.clear()),
        ),
        (
            ConvergeReason::MachineMissing,
            Box::new(|_, a| a.machines[0].state = "destroyed".into()),
        ),
        (
            ConvergeReason::MachineDown,
            Box::new(|_, a| a.machines[0].state = "stopped".into()),
        ),
        (
            ConvergeReason::DuplicateMachines,
            Box::new(|_, a| {
                let extra = a.machines[0].clone();
                a.machines.push(ObservedMachine {
                    id: "dup".into(),
                    ..extra
                })
            }),
        ),
        (
            ConvergeReason::ConfigDrift,
            Box::new(|_, a| a.machines[0].memory_mb = Some(256)),
        ),
        (
            ConvergeReason::ConfigDrift,
            Box::new(|_, a| a.machines[0].region = "iad".into()),
        ),
        (
            ConvergeReason::ConfigDrift,
            Box::new(|r, _| r.config_digest = Some("old".into())),
        ),
        (
            ConvergeReason::SecretsDrift,
            Box::new(|r, _| r.secrets_digest = None),
        ),
        (ConvergeReason::Resume, Box::new(|r, _| r.ips_ready = false)),
        (ConvergeReason::Resume, Box::new(|r, _| r.machine_id = None)),
    ];
    for (want, mutate) in cases {
        let mut w = World::new();
        w.desired = wants(&[(1, Intent::Present)]);
        w.rows = vec![healthy(1, &mut w.obs)];
        mutate(&mut w.rows[0], w.obs.apps.get_mut(&name(1)).unwrap());
        let p = w.plan();
        // Spec changes go through the rollout (a one-app fleet: its canary); repairs converge.
        let ok = if want.is_spec_change() {
            matches!(
                &p.actions[..],
                [Action::Rollout {
                    step: RolloutStep::Move,
                    ..
                }]
            )
        } else {
            matches!(&p.actions[..], [Action::Converge { reason, .. }] if *reason == want)
        };
        assert!(ok, "want {want:?}, got {:?}", p.actions);
    }
    let mut w = World::new();
    w.desired = wants(&[(1, Intent::Present)]);
    w.rows = vec![healthy(1, &mut w.obs)];
    w.obs.apps.clear();
    assert!(matches!(
        &w.plan().actions[..],
        [Action::Converge {
            reason: ConvergeReason::AppMissing,
            ..
        }]
    ));
}

#[test]
fn a_failed_canary_halts_the_rollout_rolls_back_and_moves_nobody_else() {
    // The canary runs the new image and failed on it.
    let w = canary_on_img3(AppState::Failed { wave: 1 });
    let p = w.plan();
    assert!(
        p.findings
            .iter()
            .any(|f| matches!(f, Finding::RolloutHalted { newly: true, .. })),
        "{:?}",
        p.findings
    );
    assert!(
        matches!(
            &p.actions[..],
            [Action::Rollout { user_id, step: RolloutStep::Back, .. }] if *user_id == user(1)
        ),
        "only the rollback: {:?}",
        p.actions
    );
}

/// Three apps on the fleet, a rollout to `img:3`, and the canary (user 1) moved onto it.
fn canary_on_img3(state: AppState) -> World {
    let mut w = World::new();
    w.desired = wants(&[
        (1, Intent::Present),
        (2, Intent::Present),
        (3, Intent::Present),
    ]);
    w.rows = (1..=3).map(|n| healthy(n, &mut w.obs)).collect();
    w.settings.image = "img:3".into();
    w.rollout.target_image = "img:3".into();
    w.rows[0].docker_image = Some("img:3".into());
    w.obs.apps.get_mut(&name(1)).unwrap().machines[0].image = "img:3".into();
    w.rollout.recorded.insert(w.rows[0].id, state);
    w
}

fn only_rollout_step_of(p: &Plan, u: Uuid) -> Option<RolloutStep> {
    match &p.actions[..] {
        [Action::Rollout { user_id, step, .. }] if *user_id == u => Some(*step),
        _ => None,
    }
}

#[test]
fn a_machine_that_goes_down_on_the_new_spec_stays_its_rollouts_and_holds_the_next_wave() {
    for down in ["stopped", "failed", "created"] {
        for state in [
            AppState::Moving { wave: 1 },
            AppState::Soaking {
                wave: 1,
                since: now(),
            },
        ] {
            let mut w = canary_on_img3(state);
            w.obs.apps.get_mut(&name(1)).unwrap().machines[0].state = down.into();
            let p = w.plan();
            // Judged by its rollout step (a failure of the spec), never converged as a repair,
            // and nobody else moves while it is in transition.
            let step = only_rollout_step_of(&p, user(1));
            assert!(
                matches!(step, Some(RolloutStep::Move | RolloutStep::Check)),
                "{down} {state:?}: {:?}",
                p.actions
            );
            let tally = p.rollout.unwrap().decision.tally;
            assert_eq!(tally.bypassed, 0, "{down}: still counted against the cap");
        }
    }
}

#[test]
fn a_moved_app_whose_machine_vanished_or_doubled_is_judged_by_its_rollout() {
    let mut w = canary_on_img3(AppState::Moving { wave: 1 });
    w.obs.apps.get_mut(&name(1)).unwrap().machines.clear();
    assert_eq!(
        only_rollout_step_of(&w.plan(), user(1)),
        Some(RolloutStep::Move)
    );
    let mut w = canary_on_img3(AppState::Moving { wave: 1 });
    let extra = machine("m1b", user(1), "img:3");
    w.obs.apps.get_mut(&name(1)).unwrap().machines.push(extra);
    assert_eq!(
        only_rollout_step_of(&w.plan(), user(1)),
        Some(RolloutStep::Move)
    );
}

#[test]
fn a_failed_app_that_is_down_or_in_error_is_rolled_back_not_converged_onto_the_target() {
    let mut w = canary_on_img3(AppState::Failed { wave: 1 });
    w.obs.apps.get_mut(&name(1)).unwrap().machines[0].state = "stopped".into();
    let p = w.plan();
    assert_eq!(only_rollout_step_of(&p, user(1)), Some(RolloutStep::Back));
    assert!(
        matches!(
            p.rollout.map(|r| r.decision.step),
            Some(Step::Halted { newly: true, .. })
        ),
        "the canary's failure halts"
    );

    let mut w = canary_on_img3(AppState::Failed { wave: 1 });
    w.rows[0].status = "error".into();
    let p = w.plan();
    assert_eq!(only_rollout_step_of(&p, user(1)), Some(RolloutStep::Back));
}

#[test]
fn a_repair_of_an_app_the_rollout_has_not_moved_keeps_its_spec_and_a_moved_one_gets_the_target() {
    let mut w = World::new();
    w.desired = wants(&[(1, Intent::Present), (2, Intent::Present)]);
    w.rows = (1..=2).map(|n| healthy(n, &mut w.obs)).collect();
    // App 2 still runs the previous spec; the rollout has not reached it.
    w.rows[1].docker_image = Some("img:1".into());
    w.obs.apps.get_mut(&name(2)).unwrap().machines[0].image = "img:1".into();
    for n in [1, 2] {
        w.obs.apps.get_mut(&name(n)).unwrap().machines[0].state = "stopped".into();
    }
    let p = w.plan();
    let to = |u: Uuid| {
        p.actions.iter().find_map(|a| match a {
            Action::Converge { user_id, to, .. } if *user_id == u => Some(*to),
            _ => None,
        })
    };
    assert_eq!(to(user(1)), Some(ConvergeTo::Target), "{:?}", p.actions);
    assert_eq!(to(user(2)), Some(ConvergeTo::Current), "{:?}", p.actions);
}

#[test]
fn a_repair_during_a_halted_rollout_keeps_the_spec_the_app_runs() {
    let mut w = World::new();
    w.desired = wants(&[(1, Intent::Present), (2, Intent::Present)]);
    w.rows = (1..=2).map(|n| healthy(n, &mut w.obs)).collect();
    w.settings.image = "img:3".into();
    w.rollout.target_image = "img:3".into();
    w.rollout.rollout.halted = Some(crate::reconcile::rollout::Halt {
        reason: crate::reconcile::rollout::HaltReason::Recorded("canary failed".into()),
        at: now(),
    });
    w.obs.apps.get_mut(&name(2)).unwrap().machines[0].state = "stopped".into();
    let p = w.plan();
    assert!(
        matches!(
            &p.actions[..],
            [Action::Converge { user_id, reason: ConvergeReason::MachineDown, to: ConvergeTo::Current, .. }]
                if *user_id == user(2)
        ),
        "{:?}",
        p.actions
    );
}

#[test]
fn backoff_in_the_row_holds_fly_work_back() {
    let mut w = World::new();
    w.desired = wants(&[(1, Intent::Present)]);
    w.rows = vec![
        RowFixture::new(user(1), &name(1), RowStatus::Error)
            .with(|r| r.next_attempt_at = Some(now() + Duration::seconds(30)))
            .build(),
    ];
    assert_eq!(w.plan().actions, vec![]);
    w.rows[0].next_attempt_at = Some(now());
    assert!(matches!(
        &w.plan().actions[..],
        [Action::Converge {
            reason: ConvergeReason::Resume,
            ..
        }]
    ));
}

#[test]
fn orphans_are_tracked_then_deleted_after_their_grace() {
    let mut w = World::new();
    w.desired = wants(&[(1, Intent::Present), (2, Intent::Present)]);
    w.rows = (1..=2).map(|n| healthy(n, &mut w.obs)).collect();
    // Enough live apps that one deletion does not trip the breaker.
    for n in 3..=7 {
        w.desired.insert(
            user(n),
            UserIntent {
                intent: Intent::Present,
                source: IntentSource::Tier,
            },
        );
        w.rows.push(healthy(n, &mut w.obs));
    }
    let orphan = "vyx-user-zzzzzzzz".to_string();
    w.obs.apps.insert(orphan.clone(), ObservedApp::default());
    let p = w.plan();
    assert_eq!(
        p.actions,
        vec![Action::SyncOrphans {
            names: vec![orphan.clone()]
        }]
    );

    w.orphans
        .insert(orphan.clone(), now() - Duration::minutes(59));
    assert_eq!(w.plan().actions, vec![]);

    w.orphans
        .insert(orphan.clone(), now() - Duration::minutes(60));
    assert_eq!(
        w.plan().actions,
        vec![Action::DeleteOrphan {
            app: orphan.clone()
        }]
    );

    w.obs.apps.remove(&orphan);
    assert_eq!(
        w.plan().actions,
        vec![Action::SyncOrphans { names: vec![] }]
    );
}

#[test]
fn the_breaker_blocks_mass_deletion_until_confirmed() {
    let mut w = World::new();
    let n_apps = 20u128;
    for n in 1..=n_apps {
        w.desired.insert(
            user(n),
            UserIntent {
                intent: if n <= 6 {
                    Intent::Absent
                } else {
                    Intent::Present
                },
                source: IntentSource::Tier,
            },
        );
        let mut row = healthy(n, &mut w.obs);
        if n <= 6 {
            row.unwanted_since = Some(now() - Duration::hours(1));
        }
        w.rows.push(row);
    }
    let p = w.plan();
    assert!(!p.actions.iter().any(Action::is_deletion));
    assert!(p.findings.contains(&Finding::DeletionsBlocked {
        would_delete: 6,
        live: 20
    }));
    assert_eq!(
        p.held.hold.len(),
        6,
        "the held set is persisted when it trips"
    );
    w.held = p
        .held
        .hold
        .iter()
        .map(|h| (h.app_name.clone(), true))
        .collect();
    assert_eq!(
        w.plan().actions.iter().filter(|a| a.is_deletion()).count(),
        6
    );
}

/// Twenty healthy apps; users `1..=absent` are unwanted past their grace.
fn downgraded(absent: u128) -> World {
    let mut w = World::new();
    for n in 1..=20u128 {
        let intent = if n <= absent {
            Intent::Absent
        } else {
            Intent::Present
        };
        w.desired.insert(
            user(n),
            UserIntent {
                intent,
                source: IntentSource::Tier,
            },
        );
        let mut row = healthy(n, &mut w.obs);
        if n <= absent {
            row.unwanted_since = Some(now() - Duration::hours(1));
        }
        w.rows.push(row);
    }
    w
}

#[test]
fn the_breaker_counts_deletions_already_made_within_the_window() {
    let mut w = downgraded(3);
    assert_eq!(
        w.plan().actions.iter().filter(|a| a.is_deletion()).count(),
        3
    );
    w.recent = (100..103u128).map(name).collect();
    let p = w.plan();
    assert!(!p.actions.iter().any(Action::is_deletion), "3 + 3 > 5");
    // A retried deletion is not counted twice.
    w.recent = [name(1), name(2), name(3), name(100), name(101)].into();
    assert_eq!(
        w.plan().actions.iter().filter(|a| a.is_deletion()).count(),
        3
    );
}

#[test]
fn a_confirmation_covers_the_held_set_and_nothing_outside_it() {
    let mut w = downgraded(7);
    w.held = (1..=6u128).map(|n| (name(n), true)).collect();
    let p = w.plan();
    let deleting: BTreeSet<String> = p
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Deprovision { app, .. } => Some(app.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(deleting, (1..=6u128).map(name).collect());
    assert_eq!(p.held.hold.len(), 1, "the 7th is held, not covered");
    assert_eq!(p.held.hold[0].app_name, name(7));
}

#[test]
fn a_held_deletion_stays_held_until_confirmed_and_leaves_when_no_longer_wanted() {
    let mut w = downgraded(1);
    w.held = [(name(1), false)].into();
    let p = w.plan();
    assert!(!p.actions.iter().any(Action::is_deletion), "sticky");
    assert!(p.held.release.is_empty());
    w.desired.get_mut(&user(1)).unwrap().intent = Intent::Present;
    w.rows[0].unwanted_since = None;
    assert_eq!(w.plan().held.release, vec![name(1)]);
    // Gone from Fly: released too.
    let mut w = downgraded(1);
    w.held = [(name(1), true)].into();
    w.obs.apps.remove(&name(1));
    assert_eq!(w.plan().held.release, vec![name(1)]);
}

#[test]
fn the_breaker_blocks_deleting_every_app_and_an_empty_desired_set() {
    let mut w = World::new();
    w.desired = wants(&[(1, Intent::Absent)]);
    w.rows = vec![healthy(1, &mut w.obs)];
    w.rows[0].unwanted_since = Some(now() - Duration::hours(1));
    let p = w.plan();
    assert!(!p.actions.iter().any(Action::is_deletion));
    assert!(matches!(p.findings[..], [Finding::DeletionsBlocked { .. }]));
}

#[test]
fn finishing_a_deprovision_whose_app_is_gone_is_never_blocked() {
    let mut w = World::new();
    w.desired = wants(&[(1, Intent::Absent)]);
    w.rows = vec![RowFixture::new(user(1), &name(1), RowStatus::Deprovisioning).build()];
    assert!(matches!(w.plan().actions[..], [Action::Deprovision { .. }]));
}

// ---- properties ----

fn arb_world() -> impl Strategy<Value = World> {
    let user_case = (
        prop_oneof![
            Just(None),
            Just(Some(Intent::Present)),
            Just(Some(Intent::Absent)),
            Just(Some(Intent::Paused))
        ],
        prop_oneof![
            Just(None),
            Just(Some("provisioning")),
            Just(Some("active")),
            Just(Some("error")),
            Just(Some("deprovisioning")),
            Just(Some("deleted")),
            Just(Some("weird"))
        ],
        any::<bool>(), // app observed
        0usize..3,     // machines
        any::<bool>(), // managed name
        any::<bool>(), // unwanted long ago
        any::<bool>(), // in backoff
        any::<bool>(), // user exists
    );
    (
        proptest::collection::vec(user_case, 0..40),
        0usize..4,
        any::<bool>(),
    )
        .prop_map(|(cases, orphans, confirmed)| {
            let mut w = World::new();
            let confirm_all = confirmed;
            for (i, (intent, status, observed, machines, managed, unwanted, backoff, exists)) in
                cases.into_iter().enumerate()
            {
                let n = i as u128 + 1;
                if let Some(intent) = intent {
                    w.desired.insert(
                        user(n),
                        UserIntent {
                            intent,
                            source: IntentSource::Tier,
                        },
                    );
                }
                let app = if managed {
                    name(n)
                } else {
                    format!("vyx-app-{n}")
                };
                if let Some(status) = status {
                    let mut row = RowFixture::new(user(n), &app, RowStatus::Active).build();
                    row.status = status.into();
                    row.user_exists = exists;
                    if status == "deleted" {
                        row.deleted_at = Some(now());
                    }
                    if unwanted {
                        row.unwanted_since = Some(now() - Duration::days(1));
                    }
                    if backoff {
                        row.next_attempt_at = Some(now() + Duration::minutes(1));
                    }
                    w.rows.push(row);
                }
                if observed && managed {
                    w.obs.apps.insert(
                        app.clone(),
                        ObservedApp {
                            name: app.clone(),
                            machines: (0..machines)
                                .map(|k| machine(&format!("m{n}-{k}"), user(n), "img:1"))
                                .collect(),
                        },
                    );
                }
            }
            for k in 0..orphans {
                w.obs
                    .apps
                    .insert(format!("vyx-user-orphan{k}"), ObservedApp::default());
                w.orphans
                    .insert(format!("vyx-user-orphan{k}"), now() - Duration::days(2));
            }
            if confirm_all {
                w.held = w.obs.apps.keys().map(|a| (a.clone(), true)).collect();
            }
            w
        })
}

fn action_user(a: &Action) -> Option<Uuid> {
    match a {
        Action::Converge { user_id, .. }
        | Action::MarkUnwanted { user_id, .. }
        | Action::CancelDeprovision { user_id, .. }
        | Action::Deprovision { user_id, .. }
        | Action::Rollout { user_id, .. }
        | Action::Repair { user_id, .. } => Some(*user_id),
        Action::SyncOrphans { .. } | Action::DeleteOrphan { .. } => None,
    }
}

proptest! {
    #[test]
    fn planning_is_deterministic(w in arb_world()) {
        prop_assert_eq!(w.plan(), w.plan());
    }

    #[test]
    fn at_most_one_action_per_user(w in arb_world()) {
        let p = w.plan();
        let mut seen = BTreeSet::new();
        for a in &p.actions {
            if let Some(u) = action_user(a) {
                prop_assert!(seen.insert(u), "two actions for {u}: {:?}", p.actions);
            }
        }
    }

    #[test]
    fn skipped_rows_and_paused_users_are_never_acted_on(w in arb_world()) {
        let p = w.plan();
        for a in &p.actions {
            let Some(u) = action_user(a) else { continue };
            prop_assert!(w.desired.get(&u).map(|i| i.intent) != Some(Intent::Paused));
            if let Some(row) = w.rows.iter().find(|r| r.user_id == u) {
                prop_assert!(naming::is_managed(PREFIX, &row.fly_app_name));
                prop_assert!(row.user_exists);
                prop_assert!(row.status().is_some());
            }
        }
    }

    #[test]
    fn wanted_users_are_never_deleted_and_unwanted_never_provisioned(w in arb_world()) {
        let p = w.plan();
        for a in &p.actions {
            match a {
                Action::Deprovision { user_id, .. } => {
                    let intent = w.desired.get(user_id).map(|i| i.intent).unwrap_or(Intent::Absent);
                    let row = w.rows.iter().find(|r| r.user_id == *user_id).unwrap();
                    // The only way a wanted user loses an app is a deprovision already under way.
                    prop_assert!(intent == Intent::Absent || row.status == "deprovisioning");
                }
                Action::Converge { user_id, .. } => {
                    prop_assert_eq!(w.desired.get(user_id).map(|i| i.intent), Some(Intent::Present));
                }
                _ => {}
            }
        }
    }

    #[test]
    fn deletions_of_live_apps_stay_within_the_blast_radius(w in arb_world()) {
        let p = w.plan();
        let live = w.obs.apps.len();
        let deleting = p.actions.iter().filter(|a| match a {
            Action::Deprovision { app, .. } | Action::DeleteOrphan { app } => {
                w.obs.apps.contains_key(app) && w.held.get(app) != Some(&true)
            }
            _ => false,
        }).count();
        prop_assert!(deleting <= std::cmp::max(5, live / 10));
        prop_assert!(deleting == 0 || deleting < live);
    }

    #[test]
    fn only_managed_names_are_ever_deleted_as_orphans(w in arb_world()) {
        for a in w.plan().actions {
            if let Action::DeleteOrphan { app } = a {
                prop_assert!(naming::is_managed(PREFIX, &app));
                prop_assert!(!w.rows.iter().any(|r| r.is_live() && r.fly_app_name == app));
            }
        }
    }
}

#[test]
fn a_failed_region_freezes_only_the_apps_that_live_there() {
    let mut w = World::new();
    w.desired = wants(&[
        (1, Intent::Present),
        (2, Intent::Present),
        (3, Intent::Present),
    ]);
    let mut in_sin = healthy(1, &mut w.obs);
    in_sin.region = Some("sin".into());
    // Its machine is invisible: the region did not answer.
    w.obs.apps.get_mut(&name(1)).unwrap().machines.clear();
    let mut elsewhere = healthy(2, &mut w.obs);
    elsewhere.region = Some("ams".into());
    w.obs.apps.get_mut(&name(2)).unwrap().machines.clear();
    w.rows = vec![in_sin, elsewhere];
    w.settings.region = "ams".into();
    w.obs.error_regions = ["sin".to_string()].into();
    let p = w.plan();
    let users: BTreeSet<Uuid> = p.actions.iter().filter_map(action_user).collect();
    assert!(!users.contains(&user(1)), "{:?}", p.actions);
    assert!(users.contains(&user(2)), "outside the region: repaired");
    assert!(
        users.contains(&user(3)),
        "a new user in the configured region: created"
    );
    assert!(p.findings.iter().any(|f| matches!(
        f,
        Finding::RegionsUnavailable { regions, held_back: 1 } if regions == &["sin".to_string()]
    )));
}
