//! Invariant 3: a crash at any instant between a Fly call and the database write that records it,
//! followed by a restart, converges with no duplicate app or machine and no leaked app.
//!
//! For every failpoint of provision, image update, deprovision and orphan deletion: run passes until
//! an action reaches the failpoint, abort the controller there (its tasks die mid-step, nothing is
//! cleaned up), restart from the database and Fly, converge, check the invariants.

mod fleet_support;
mod support;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use fleet_support::{Fleet, ORG};
use support::{UserFixture, set_subscription};
use uuid::Uuid;
use vyx_fleet::failpoint as fp;

/// Run `scenario` once per failpoint, all side by side: each on a thread of its own with its own
/// current-thread runtime, fleet (database, simulator) and failpoint armed for that thread only, so
/// one scenario's crash never hangs another's controller. The scenarios are mostly waiting on the
/// simulator's delays, so running them together costs little CPU. Panics naming every failed point
/// (each thread's own panic message is printed as it happens).
fn each_point<F, Fut>(points: &[&'static str], scenario: F)
where
    F: Fn(&'static str) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = ()>,
{
    let threads: Vec<_> = points
        .iter()
        .map(|&point| {
            let thread = std::thread::Builder::new().name(format!("crash {point}"));
            let handle = thread
                .spawn(move || {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime")
                        .block_on(scenario(point))
                })
                .expect("spawn scenario thread");
            (point, handle)
        })
        .collect();
    let failed: Vec<&str> = threads
        .into_iter()
        .filter_map(|(point, handle)| handle.join().is_err().then_some(point))
        .collect();
    assert!(failed.is_empty(), "scenarios failed at {failed:?}");
}

/// Run passes until one reaches `point`; abort the pass there. Panics if no pass reaches it.
async fn crash_at(fleet: &Fleet, point: &'static str) {
    let reached = fp::arm_hang_on_this_thread(point);
    for _ in 0..6 {
        let ctx = fleet.ctx.clone();
        let cfg = fleet.pass_cfg.clone();
        let metrics = fleet.metrics.clone();
        let mut pass =
            tokio::spawn(async move { vyx_fleet::reconcile::run_pass(&ctx, &cfg, &metrics).await });
        tokio::select! {
            _ = reached.notified() => {
                pass.abort();
                let _ = (&mut pass).await;
                fp::disarm_this_thread();
                return;
            }
            done = &mut pass => {
                done.expect("pass task").expect("pass");
            }
        }
    }
    fp::disarm_this_thread();
    panic!("no pass reached failpoint {point}");
}

/// The state every crash must converge to.
async fn assert_invariants(fleet: &Fleet, wanted: &[Uuid], unwanted: &[Uuid], point: &str) {
    let apps = fleet.apps();
    let mut owners: BTreeMap<String, Uuid> = BTreeMap::new();
    for u in wanted {
        let row = fleet.row(*u).await;
        assert_eq!(row.status, "active", "[{point}] {u} not active: {row:?}");
        assert!(row.deleted_at.is_none(), "[{point}]");
        let app = fleet
            .app(&row.fly_app_name)
            .unwrap_or_else(|| panic!("[{point}] app of {u} missing"));
        let live: Vec<_> = app
            .machines
            .iter()
            .filter(|m| m.state != "destroyed")
            .collect();
        assert_eq!(
            live.len(),
            1,
            "[{point}] machines of {}: {live:?}",
            app.name
        );
        assert_eq!(
            row.machine_id.as_deref(),
            Some(live[0].id.as_str()),
            "[{point}]"
        );
        assert!(
            owners.insert(row.fly_app_name.clone(), *u).is_none(),
            "[{point}] shared app"
        );
    }
    for u in unwanted {
        if let Some(row) = fleet.maybe_row(*u).await {
            assert_eq!(row.status, "deleted", "[{point}] {u}");
            assert!(
                fleet.app(&row.fly_app_name).is_none(),
                "[{point}] app of unwanted {u} left"
            );
        }
    }
    for app in apps.iter().filter(|a| a.name.starts_with("vyx-user-")) {
        assert!(
            owners.contains_key(&app.name),
            "[{point}] leaked app {}",
            app.name
        );
    }
    // At most one live row per user (UNIQUE(user_id) makes it one row; the status says live).
    let per_user: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT user_id, count(*) FROM public.user_fly_apps WHERE deleted_at IS NULL GROUP BY user_id",
    )
    .fetch_all(&fleet.db.pool)
    .await
    .unwrap();
    assert!(
        per_user.iter().all(|(_, n)| *n == 1),
        "[{point}] {per_user:?}"
    );
    assert_events_paired(fleet, point).await;
    // Every wanted app serves: v6 + shared_v4, the expected secrets, machines on the latest ones.
    let serving = fleet.serving_problems(wanted).await;
    assert!(serving.is_empty(), "[{point}] {serving:#?}");
    // Nothing was created twice: one applied create per app name and per app's machine.
    let mut creates: BTreeMap<String, usize> = BTreeMap::new();
    for c in fleet.sim.calls().iter().filter(|c| c.write_applied) {
        if c.class == "apps.create" || c.class == "machines.create" {
            let key = format!("{} {}", c.class, c.path.split('?').next().unwrap_or(""));
            *creates.entry(key).or_default() += 1;
        }
    }
    for (k, n) in &creates {
        if k.starts_with("machines.create") {
            assert!(*n <= 2, "[{point}] {k} applied {n} times");
        }
    }
}

/// Every `*_completed` has an earlier `*_started` for the same user.
async fn assert_events_paired(fleet: &Fleet, point: &str) {
    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT user_id, event_type FROM public.user_fly_app_events ORDER BY created_at",
    )
    .fetch_all(&fleet.db.pool)
    .await
    .unwrap();
    let mut open: BTreeMap<(Uuid, &str), i64> = BTreeMap::new();
    for (u, ev) in &rows {
        match ev.as_str() {
            "provision_started" => *open.entry((*u, "provision")).or_default() += 1,
            "deprovision_started" => *open.entry((*u, "deprovision")).or_default() += 1,
            "provision_completed" | "deprovision_completed" => {
                let kind = ev.trim_end_matches("_completed");
                let n = open
                    .entry((
                        *u,
                        if kind == "provision" {
                            "provision"
                        } else {
                            "deprovision"
                        },
                    ))
                    .or_default();
                assert!(*n > 0, "[{point}] {ev} without a start for {u}: {rows:?}");
                *n -= 1;
            }
            _ => {}
        }
    }
}

async fn paid_users(fleet: &Fleet, n: usize) -> Vec<Uuid> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(UserFixture::paid("pro").insert(&fleet.db.pool).await);
    }
    v
}

const PROVISION_POINTS: &[&str] = &[
    fp::PROVISION_ROW_RESERVED,
    fp::PROVISION_APP_CREATE_BEFORE,
    fp::PROVISION_APP_CREATE_AFTER_CALL,
    fp::PROVISION_APP_CREATE_AFTER_RECORD,
    fp::PROVISION_SECRETS_BEFORE,
    fp::PROVISION_SECRETS_AFTER_CALL,
    fp::PROVISION_SECRETS_AFTER_RECORD,
    fp::PROVISION_IPS_BEFORE,
    fp::PROVISION_IPS_AFTER_CALL,
    fp::PROVISION_IPS_AFTER_RECORD,
    fp::PROVISION_MACHINE_CREATE_BEFORE,
    fp::PROVISION_MACHINE_CREATE_AFTER_CALL,
    fp::PROVISION_MACHINE_CREATE_AFTER_RECORD,
    fp::CONVERGE_HEALTHY_BEFORE_RECORD,
    fp::CONVERGE_AFTER_RECORD,
];

#[test]
fn a_crash_at_any_provision_step_resumes_without_duplicates() {
    each_point(PROVISION_POINTS, |point| async move {
        let fleet = Fleet::start().await;
        let users = paid_users(&fleet, 2).await;
        crash_at(&fleet, point).await;
        fleet.converge().await;
        assert_invariants(&fleet, &users, &[], point).await;
        let applied_app_creates = fleet
            .sim
            .calls()
            .iter()
            .filter(|c| c.class == "apps.create" && c.write_applied)
            .count();
        assert_eq!(
            applied_app_creates, 2,
            "[{point}] each app created exactly once"
        );
    });
}

#[test]
fn a_crash_during_an_image_update_resumes_and_finishes_the_rollout() {
    each_point(
        &[
            fp::ROLLOUT_MOVING_RECORDED,
            fp::UPDATE_MACHINE_BEFORE,
            fp::UPDATE_MACHINE_AFTER_CALL,
            fp::ROLLOUT_VERDICT_BEFORE_RECORD,
        ],
        |point| async move {
            let mut fleet = Fleet::start().await;
            let users = paid_users(&fleet, 2).await;
            fleet.converge().await;
            fleet.sim.clear_calls();
            fleet.reconfigure("USER_APP_IMAGE", "registry.fly.io/vyx-screener:v2");
            crash_at(&fleet, point).await;
            fleet.converge().await;
            assert_invariants(&fleet, &users, &[], point).await;
            // No app moved twice: one update per machine, the crash notwithstanding.
            let mut updates: BTreeMap<String, usize> = BTreeMap::new();
            for c in fleet
                .writes()
                .iter()
                .filter(|c| c.class == "machines.update")
            {
                *updates.entry(c.path.clone()).or_default() += 1;
            }
            assert_eq!(updates.len(), 2, "[{point}] {updates:?}");
            assert!(updates.values().all(|n| *n == 1), "[{point}] {updates:?}");
            for u in &users {
                let row = fleet.row(*u).await;
                let app = fleet.app(&row.fly_app_name).unwrap();
                assert_eq!(
                    app.machines[0].config["image"], "registry.fly.io/vyx-screener:v2",
                    "[{point}]"
                );
                assert_eq!(
                    row.docker_image.as_deref(),
                    Some("registry.fly.io/vyx-screener:v2")
                );
            }
        },
    );
}

#[test]
fn a_crash_at_any_deprovision_step_finishes_the_deprovision() {
    each_point(
        &[
            fp::DEPROVISION_MARKED,
            fp::DEPROVISION_STOP_BEFORE,
            fp::DEPROVISION_STOP_AFTER_CALL,
            fp::DEPROVISION_DELETE_BEFORE,
            fp::DEPROVISION_DELETE_AFTER_CALL,
            fp::DEPROVISION_GONE_BEFORE_RECORD,
            fp::DEPROVISION_AFTER_RECORD,
        ],
        |point| async move {
            let fleet = Fleet::start().await;
            let users = paid_users(&fleet, 3).await;
            fleet.converge().await;
            let leaving = users[0];
            set_subscription(&fleet.db.pool, leaving, "free", "active").await;
            crash_at(&fleet, point).await;
            fleet.converge().await;
            assert_invariants(&fleet, &users[1..], &[leaving], point).await;
            let row = fleet.row(leaving).await;
            assert_eq!(row.status, "deleted", "[{point}]");
            assert!(row.deleted_at.is_some());
        },
    );
}

#[test]
fn a_crash_while_deleting_an_orphan_still_removes_it_once() {
    each_point(
        &[
            fp::ORPHAN_DELETE_BEFORE,
            fp::ORPHAN_DELETE_AFTER_CALL,
            fp::ORPHAN_DELETE_AFTER_RECORD,
        ],
        |point| async move {
            let fleet = Fleet::start().await;
            let users = paid_users(&fleet, 6).await;
            fleet.converge().await;
            let orphan = "vyx-user-orphan01";
            fleet.sim.seed_app(ORG, orphan);
            fleet.relist().await;
            fleet.pass().await;
            // The orphan has been seen; pretend its grace has passed rather than waiting an hour.
            sqlx::query(
            "UPDATE vyx_fleet.orphans SET first_seen_at = now() - interval '2 hours' WHERE app_name = $1",
        )
        .bind(orphan)
        .execute(&fleet.db.pool)
        .await
        .unwrap();
            crash_at(&fleet, point).await;
            // The sim deletes asynchronously; converge until the orphan is gone from Fly and the table.
            for _ in 0..20 {
                fleet.pass().await;
                let tracked: i64 = sqlx::query_scalar("SELECT count(*) FROM vyx_fleet.orphans")
                    .fetch_one(&fleet.db.pool)
                    .await
                    .unwrap();
                if fleet.app(orphan).is_none() && tracked == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(fleet.app(orphan).is_none(), "[{point}] orphan still there");
            assert_invariants(&fleet, &users, &[], point).await;
        },
    );
}

/// A secret rotation (a new `SUPABASE_SERVICE_ROLE_KEY` or `USER_APP_SECRETS` value after a
/// restart) interrupted at any step between the secrets write and the machine update still ends with
/// every machine booted on the new secrets.
#[test]
fn a_crash_during_a_secret_rotation_still_puts_every_machine_on_the_new_secrets() {
    each_point(
        &[
            fp::PROVISION_SECRETS_BEFORE,
            fp::PROVISION_SECRETS_AFTER_CALL,
            fp::PROVISION_SECRETS_AFTER_RECORD,
            fp::ROLLOUT_MOVING_RECORDED,
            fp::UPDATE_MACHINE_BEFORE,
            fp::UPDATE_MACHINE_AFTER_CALL,
        ],
        |point| async move {
            let mut fleet = Fleet::start().await;
            let users = paid_users(&fleet, 2).await;
            fleet.converge().await;
            fleet.reconfigure("SUPABASE_SERVICE_ROLE_KEY", "service-key-rotated-0b5e");
            crash_at(&fleet, point).await;
            fleet.converge().await;
            assert_invariants(&fleet, &users, &[], point).await;
        },
    );
}

/// An app deleted outside the controller (flyctl by hand, or lost on Fly's side) is rebuilt with
/// its secrets and IPs, also when the rebuild is interrupted.
#[test]
fn a_crash_while_rebuilding_an_app_deleted_out_of_band_still_restores_secrets_and_ips() {
    each_point(
        &[
            fp::PROVISION_APP_CREATE_AFTER_RECORD,
            fp::PROVISION_SECRETS_AFTER_CALL,
            fp::PROVISION_IPS_BEFORE,
            fp::PROVISION_MACHINE_CREATE_BEFORE,
        ],
        |point| async move {
            let fleet = Fleet::start().await;
            let users = paid_users(&fleet, 2).await;
            fleet.converge().await;
            let row = fleet.row(users[0]).await;
            assert!(fleet.sim.delete_app_out_of_band(&row.fly_app_name));
            fleet.relist().await;
            crash_at(&fleet, point).await;
            fleet.converge().await;
            assert_invariants(&fleet, &users, &[], point).await;
        },
    );
}

/// The same crash in a second rollout: the first rollout's per-app state (its machine version
/// above all) must not make the resumed move skip its update or judge the old machine.
#[test]
fn a_crash_during_a_second_rollouts_move_resumes_on_that_rollouts_own_state() {
    each_point(
        &[
            fp::ROLLOUT_MOVING_RECORDED,
            fp::UPDATE_MACHINE_BEFORE,
            fp::UPDATE_MACHINE_AFTER_CALL,
            fp::ROLLOUT_VERDICT_BEFORE_RECORD,
        ],
        |point| async move {
            const V2: &str = "registry.fly.io/vyx-screener:v2";
            const V3: &str = "registry.fly.io/vyx-screener:v3";
            let mut fleet = Fleet::start().await;
            let users = paid_users(&fleet, 2).await;
            fleet.converge().await;
            fleet.reconfigure("USER_APP_IMAGE", V2);
            fleet.converge().await;
            fleet.sim.clear_calls();
            fleet.reconfigure("USER_APP_IMAGE", V3);
            crash_at(&fleet, point).await;
            fleet.converge().await;
            assert_invariants(&fleet, &users, &[], point).await;
            let mut updates: BTreeMap<String, usize> = BTreeMap::new();
            for c in fleet
                .writes()
                .iter()
                .filter(|c| c.class == "machines.update" && c.write_applied)
            {
                *updates.entry(c.path.clone()).or_default() += 1;
            }
            assert_eq!(updates.len(), 2, "[{point}] {updates:?}");
            assert!(updates.values().all(|n| *n == 1), "[{point}] {updates:?}");
            for u in &users {
                let row = fleet.row(*u).await;
                let machine = fleet.app(&row.fly_app_name).unwrap().machines[0].clone();
                assert_eq!(machine.config["image"], V3, "[{point}]");
                assert_eq!(row.docker_image.as_deref(), Some(V3), "[{point}]");
                let (version,): (Option<String>,) = sqlx::query_as(
                    "SELECT rollout_machine_version FROM public.user_fly_apps WHERE id = $1",
                )
                .bind(row.id)
                .fetch_one(&fleet.db.pool)
                .await
                .unwrap();
                assert_eq!(
                    version,
                    Some(machine.version),
                    "[{point}] the row's version is this move's"
                );
            }
        },
    );
}
