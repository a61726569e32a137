use super::*;
use proptest::prelude::*;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-30T08:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn settings(max: CountOrPercent, threshold: CountOrPercent) -> WaveSettings {
    WaveSettings {
        max_unavailable: max,
        failure_threshold: threshold,
        soak: Duration::seconds(60),
    }
}

fn defaults() -> WaveSettings {
    settings(CountOrPercent::Count(8), CountOrPercent::Count(1))
}

fn rollout() -> Rollout {
    Rollout {
        target: "spec-2".into(),
        halted: None,
        failures_forgiven: 0,
    }
}

fn id(n: usize) -> Uuid {
    Uuid::from_u128(n as u128 + 1)
}

fn pending(n: usize) -> Vec<RolloutApp> {
    (0..n)
        .map(|i| RolloutApp {
            id: id(i),
            state: AppState::Pending,
            bypass: None,
        })
        .collect()
}

fn set(apps: &mut [RolloutApp], i: usize, state: AppState) {
    apps[i].state = state;
}

fn advanced(d: &Decision) -> (u32, Vec<Uuid>) {
    match &d.step {
        Step::Advance { wave, apps } => (*wave, apps.clone()),
        other => panic!("expected a wave, got {other:?}"),
    }
}

#[test]
fn the_first_wave_is_exactly_one_canary() {
    let d = decide(&rollout(), &pending(50), &defaults(), t0());
    assert_eq!(advanced(&d), (1, vec![id(0)]));
    assert!(d.roll_back.is_empty());
}

#[test]
fn the_next_wave_waits_until_every_app_of_the_last_one_soaked() {
    let mut apps = pending(10);
    set(&mut apps, 0, AppState::Moving { wave: 1 });
    let d = decide(&rollout(), &apps, &defaults(), t0());
    assert_eq!(d.step, Step::Wait { until: None });

    set(
        &mut apps,
        0,
        AppState::Soaking {
            wave: 1,
            since: t0(),
        },
    );
    let d = decide(&rollout(), &apps, &defaults(), t0() + Duration::seconds(59));
    assert_eq!(
        d.step,
        Step::Wait {
            until: Some(t0() + Duration::seconds(60))
        }
    );

    let d = decide(&rollout(), &apps, &defaults(), t0() + Duration::seconds(60));
    assert_eq!(advanced(&d), (2, vec![id(1), id(2)]));
}

#[test]
fn a_wave_whose_soaks_began_apart_waits_for_its_last_soak_end() {
    // The moves of a wave are judged one after another, so their soaks start apart. The next
    // wave is due when the last of them ends: that is the time to wake for, not the first (a
    // wake at the first end finds the wave still soaking and costs a pass).
    let mut apps = pending(10);
    for (i, secs) in [(0, 0), (1, 2), (2, 1)] {
        let since = t0() + Duration::seconds(secs);
        set(&mut apps, i, AppState::Soaking { wave: 2, since });
    }
    let d = decide(&rollout(), &apps, &defaults(), t0() + Duration::seconds(30));
    assert_eq!(
        d.step,
        Step::Wait {
            until: Some(t0() + Duration::seconds(62))
        }
    );
    // Past the first two ends, the wave still waits for the third.
    let d = decide(&rollout(), &apps, &defaults(), t0() + Duration::seconds(61));
    assert_eq!(
        d.step,
        Step::Wait {
            until: Some(t0() + Duration::seconds(62))
        }
    );
    let d = decide(&rollout(), &apps, &defaults(), t0() + Duration::seconds(62));
    assert!(matches!(d.step, Step::Advance { .. }), "{:?}", d.step);
}

#[test]
fn waves_double_after_clean_waves_up_to_the_cap() {
    let s = defaults();
    let mut apps = pending(40);
    let mut sizes = Vec::new();
    let mut now = t0();
    loop {
        match decide(&rollout(), &apps, &s, now).step {
            Step::Advance { wave, apps: ids } => {
                sizes.push(ids.len());
                for a in apps.iter_mut().filter(|a| ids.contains(&a.id)) {
                    a.state = AppState::Soaking { wave, since: now };
                }
            }
            Step::Complete => break,
            other => panic!("{other:?}"),
        }
        now += Duration::seconds(61);
    }
    assert_eq!(sizes, [1, 2, 4, 8, 8, 8, 8, 1]);
}

#[test]
fn a_percentage_cap_still_lets_the_canary_through_a_small_fleet() {
    let s = settings(CountOrPercent::Percent(2), CountOrPercent::Percent(1));
    assert_eq!(max_in_transition(&s, 10), 1);
    assert_eq!(max_in_transition(&s, 10_000), 200);
    let mut apps = pending(10);
    set(&mut apps, 0, AppState::Healthy { wave: 1 });
    let d = decide(&rollout(), &apps, &s, t0());
    assert_eq!(
        advanced(&d),
        (2, vec![id(1)]),
        "doubling stops at the cap of 1"
    );
}

#[test]
fn a_canary_failure_halts_and_rolls_the_canary_back() {
    let mut apps = pending(10);
    set(&mut apps, 0, AppState::Failed { wave: 1 });
    let d = decide(&rollout(), &apps, &defaults(), t0());
    match &d.step {
        Step::Halted { halt, newly: true } => {
            assert_eq!(halt.reason, HaltReason::CanaryFailed { app: id(0) });
            assert_eq!(halt.at, t0());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(d.roll_back, [id(0)]);
}

#[test]
fn a_halted_rollout_moves_nothing_but_still_rolls_back() {
    let mut r = rollout();
    r.halted = Some(Halt {
        reason: HaltReason::Recorded("operator test".into()),
        at: t0(),
    });
    let mut apps = pending(10);
    set(&mut apps, 3, AppState::Failed { wave: 2 });
    let d = decide(&r, &apps, &defaults(), t0() + Duration::hours(1));
    assert!(matches!(d.step, Step::Halted { newly: false, .. }));
    assert_eq!(d.roll_back, [id(3)]);
}

#[test]
fn after_the_canary_failures_halt_only_beyond_the_threshold() {
    let s = settings(CountOrPercent::Count(8), CountOrPercent::Count(1));
    let mut apps = pending(20);
    set(&mut apps, 0, AppState::Healthy { wave: 1 });
    set(&mut apps, 1, AppState::Healthy { wave: 2 });
    set(&mut apps, 2, AppState::Failed { wave: 2 });
    let d = decide(&rollout(), &apps, &s, t0());
    // One failure is tolerated: rolled back, and the next wave does not grow (2, not 4).
    assert_eq!(d.roll_back, [id(2)]);
    let (wave, ids) = advanced(&d);
    assert_eq!((wave, ids.len()), (3, 2));

    set(&mut apps, 2, AppState::RolledBack { wave: 2 });
    set(&mut apps, 3, AppState::Failed { wave: 3 });
    set(&mut apps, 4, AppState::Healthy { wave: 3 });
    let d = decide(&rollout(), &apps, &s, t0());
    match d.step {
        Step::Halted {
            halt:
                Halt {
                    reason:
                        HaltReason::TooManyFailures {
                            failed: 2,
                            moved: 5,
                            allowed: 1,
                        },
                    ..
                },
            newly: true,
        } => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn failed_apps_awaiting_rollback_use_up_room() {
    let s = settings(CountOrPercent::Count(2), CountOrPercent::Count(5));
    let mut apps = pending(10);
    set(&mut apps, 0, AppState::Healthy { wave: 1 });
    set(&mut apps, 1, AppState::Failed { wave: 2 });
    set(&mut apps, 2, AppState::Failed { wave: 2 });
    let d = decide(&rollout(), &apps, &s, t0());
    assert_eq!(d.step, Step::Wait { until: None });
    set(&mut apps, 1, AppState::RolledBack { wave: 2 });
    let d = decide(&rollout(), &apps, &s, t0());
    assert_eq!(advanced(&d).1.len(), 1);
}

#[test]
fn an_operator_resume_forgives_past_failures_and_starts_with_a_new_canary() {
    let mut apps = pending(10);
    set(&mut apps, 0, AppState::RolledBack { wave: 1 });
    let mut r = rollout();
    r.failures_forgiven = 1;
    let d = decide(&r, &apps, &defaults(), t0());
    assert_eq!(
        advanced(&d),
        (2, vec![id(1)]),
        "a new canary, never the old one"
    );
    set(&mut apps, 1, AppState::Failed { wave: 2 });
    let d = decide(&r, &apps, &defaults(), t0());
    match d.step {
        Step::Halted {
            halt:
                Halt {
                    reason: HaltReason::CanaryFailed { app },
                    ..
                },
            newly: true,
        } => assert_eq!(app, id(1), "the new canary, not the forgiven one"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_resume_after_too_many_failures_in_later_waves_restarts_with_one_canary() {
    // Waves 1 (1 app), 2 (2 apps), 3 (4 apps) clean; wave 4 (8 apps) had two failures, more than
    // the threshold of 1: halted, then resumed by an operator.
    let mut apps = pending(40);
    set(&mut apps, 0, AppState::Healthy { wave: 1 });
    for i in 1..3 {
        set(&mut apps, i, AppState::Healthy { wave: 2 });
    }
    for i in 3..7 {
        set(&mut apps, i, AppState::Healthy { wave: 3 });
    }
    for i in 7..15 {
        set(&mut apps, i, AppState::Healthy { wave: 4 });
    }
    set(&mut apps, 7, AppState::RolledBack { wave: 4 });
    set(&mut apps, 8, AppState::RolledBack { wave: 4 });
    let mut r = rollout();
    let s = settings(CountOrPercent::Count(16), CountOrPercent::Count(1));
    assert!(matches!(
        decide(&r, &apps, &s, t0()).step,
        Step::Halted { newly: true, .. }
    ));
    r.failures_forgiven = 2;
    let d = decide(&r, &apps, &s, t0());
    assert_eq!(advanced(&d), (5, vec![id(15)]), "one canary, not 2^3 apps");
    // The canary soaks clean: the next wave doubles from there.
    set(&mut apps, 15, AppState::Healthy { wave: 5 });
    assert_eq!(advanced(&decide(&r, &apps, &s, t0())).1.len(), 2);
    // A failure of the post-resume canary halts at once, as a canary's does.
    set(&mut apps, 15, AppState::Failed { wave: 5 });
    assert!(matches!(
        decide(&r, &apps, &s, t0()).step,
        Step::Halted {
            halt: Halt {
                reason: HaltReason::CanaryFailed { .. },
                ..
            },
            newly: true
        }
    ));
}

#[test]
fn new_users_and_repairs_are_never_moved_but_count_as_live() {
    let s = settings(CountOrPercent::Percent(50), CountOrPercent::Count(0));
    let mut apps = pending(4);
    apps[0].bypass = Some(Bypass::New);
    apps[1].bypass = Some(Bypass::Repair);
    set(&mut apps, 2, AppState::Healthy { wave: 1 });
    let d = decide(&rollout(), &apps, &s, t0());
    // 50% of 4 live apps = 2, but only one app is the rollout's to move.
    assert_eq!(advanced(&d), (2, vec![id(3)]));
    assert_eq!(d.tally.bypassed, 2);
}

#[test]
fn the_rollout_completes_with_rolled_back_apps_left_for_the_next_target() {
    let s = settings(CountOrPercent::Count(8), CountOrPercent::Count(3));
    let mut apps = pending(4);
    set(&mut apps, 0, AppState::Healthy { wave: 1 });
    set(&mut apps, 1, AppState::RolledBack { wave: 2 });
    set(
        &mut apps,
        2,
        AppState::Soaking {
            wave: 2,
            since: t0(),
        },
    );
    set(&mut apps, 3, AppState::Healthy { wave: 0 });
    let d = decide(&rollout(), &apps, &s, t0() + Duration::seconds(60));
    assert_eq!(d.step, Step::Complete);
    assert_eq!(d.tally.already_on_target, 1);
    assert_eq!(d.tally.moved(), 3);
    assert_eq!(d.tally.waves_done, 2);
    let counts = super::super::pass_rollout::rollout_counts(&d.tally);
    let states: Vec<_> = counts.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        states,
        crate::metrics::RolloutState::ALL,
        "one metric label per state"
    );
    assert_eq!(counts[3], (crate::metrics::RolloutState::Healthy, 3));
}

#[test]
fn apps_already_on_the_target_are_not_evidence_for_the_canary() {
    let mut apps = pending(5);
    set(&mut apps, 0, AppState::Healthy { wave: 0 });
    let d = decide(&rollout(), &apps, &defaults(), t0());
    assert_eq!(advanced(&d), (1, vec![id(1)]));
}

// ---- properties, over a simulated fleet --------------------------------------------------------

/// A tiny deterministic generator: the simulation's randomness comes from one proptest seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn amount(count: bool, n: u32) -> CountOrPercent {
    if count {
        CountOrPercent::Count(n)
    } else {
        CountOrPercent::Percent(n.min(100) as u8)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Drive whole rollouts (random fleets, settings, failures, rollbacks, resumes, clocks) and
    /// check every decision: bounded transition, a one-app canary, a halted rollout moves
    /// nothing, every failed app is rolled back, no app moves twice, bypassed apps never move.
    #[test]
    fn simulated_rollouts_keep_every_promise(
        n in 1usize..60,
        seed in 1u64..u64::MAX,
        max_is_count in any::<bool>(), max in 1u32..40,
        threshold_is_count in any::<bool>(), threshold in 0u32..20,
        fail_percent in 0u64..40,
    ) {
        let s = settings(amount(max_is_count, max), amount(threshold_is_count, threshold));
        let mut rng = Rng(seed);
        let mut apps = pending(n);
        for a in apps.iter_mut() {
            if rng.chance(10) {
                a.bypass = Some(if rng.chance(50) { Bypass::New } else { Bypass::Repair });
            }
        }
        let cap = max_in_transition(&s, n);
        let mut r = rollout();
        let mut moves = vec![0u32; n];
        let mut now = t0();
        let mut first_wave_seen = false;
        let mut completed = false;
        for _ in 0..400 {
            let d = decide(&r, &apps, &s, now);
            for a in apps.iter().filter(|a| matches!(a.state, AppState::Failed { .. })) {
                prop_assert!(d.roll_back.contains(&a.id), "failed app not rolled back");
            }
            match &d.step {
                Step::Advance { wave, apps: ids } => {
                    prop_assert!(r.halted.is_none(), "a halted rollout moved apps");
                    prop_assert!(!ids.is_empty());
                    if !first_wave_seen {
                        prop_assert_eq!(ids.len(), 1, "the canary wave is one app");
                        first_wave_seen = true;
                    }
                    for i in ids {
                        let k = apps.iter().position(|a| a.id == *i).unwrap();
                        prop_assert!(apps[k].bypass.is_none(), "a bypassed app was moved");
                        prop_assert_eq!(apps[k].state, AppState::Pending);
                        moves[k] += 1;
                        prop_assert!(moves[k] <= 1, "an app moved twice for one target");
                        apps[k].state = AppState::Moving { wave: *wave };
                    }
                }
                Step::Halted { halt, newly } => {
                    prop_assert_eq!(*newly, r.halted.is_none());
                    r.halted = Some(halt.clone());
                }
                Step::Complete => {
                    let done = apps.iter().all(|a| {
                        a.bypass.is_some()
                            || matches!(a.state, AppState::Healthy { .. } | AppState::RolledBack { .. })
                            || matches!(a.state, AppState::Soaking { since, .. } if now - since >= s.soak)
                    });
                    prop_assert!(done, "complete with apps still to move");
                    completed = true;
                    break;
                }
                Step::Wait { .. } => {}
            }
            let in_transition = apps.iter().filter(|a| a.bypass.is_none() && match a.state {
                AppState::Moving { .. } | AppState::Failed { .. } => true,
                AppState::Soaking { since, .. } => now - since < s.soak,
                _ => false,
            }).count();
            prop_assert!(in_transition <= cap, "{} in transition, cap {}", in_transition, cap);

            // The world answers: rollbacks land, moving machines turn healthy or fail.
            for i in &d.roll_back {
                if rng.chance(70) {
                    let k = apps.iter().position(|a| a.id == *i).unwrap();
                    if let AppState::Failed { wave } = apps[k].state {
                        apps[k].state = AppState::RolledBack { wave };
                    }
                }
            }
            for a in apps.iter_mut() {
                match a.state {
                    AppState::Moving { wave } if rng.chance(60) => {
                        a.state = if rng.chance(fail_percent) {
                            AppState::Failed { wave }
                        } else {
                            AppState::Soaking { wave, since: now }
                        };
                    }
                    // A check that goes critical during the soak; after it, an unhealthy app
                    // is a repair, no longer the rollout's.
                    AppState::Soaking { wave, since }
                        if now - since < s.soak && rng.chance(fail_percent / 4) =>
                    {
                        a.state = AppState::Failed { wave };
                    }
                    _ => {}
                }
            }
            if r.halted.is_some() && rng.chance(20) {
                // `vyx-fleet rollout resume`: the halt is cleared, past failures forgiven.
                let failed = apps.iter().filter(|a| a.bypass.is_none() && matches!(
                    a.state, AppState::Failed { .. } | AppState::RolledBack { .. })).count();
                r.halted = None;
                r.failures_forgiven = failed;
            }
            now += Duration::seconds((rng.next() % 90) as i64);
        }
        prop_assert!(completed || fail_percent > 0, "a rollout without failures must finish");
    }

    /// Whatever the apps' states, a halted rollout's decision is to stay halted.
    #[test]
    fn a_halted_rollout_never_advances(
        states in proptest::collection::vec(0u8..6, 0..30),
        seed in 1u64..u64::MAX,
    ) {
        let mut rng = Rng(seed);
        let apps: Vec<RolloutApp> = states.iter().enumerate().map(|(i, k)| {
            let wave = (rng.next() % 5) as u32 + 1;
            let state = match k {
                0 => AppState::Pending,
                1 => AppState::Moving { wave },
                2 => AppState::Soaking { wave, since: t0() },
                3 => AppState::Healthy { wave },
                4 => AppState::Failed { wave },
                _ => AppState::RolledBack { wave },
            };
            RolloutApp { id: id(i), state, bypass: None }
        }).collect();
        let mut r = rollout();
        r.halted = Some(Halt { reason: HaltReason::Recorded("x".into()), at: t0() });
        let d = decide(&r, &apps, &defaults(), t0() + Duration::hours(1));
        prop_assert!(matches!(d.step, Step::Halted { newly: false, .. }), "{:?}", d.step);
        let failed = apps.iter().filter(|a| matches!(a.state, AppState::Failed { .. })).count();
        prop_assert_eq!(d.roll_back.len(), failed);
    }
}
