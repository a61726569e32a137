//! The safety policies around the reconciler: the blast-radius breaker, the deprovision grace,
//! rollout halting, secret rotation and orphan collection.

mod fleet_support;
mod support;

use std::time::{Duration, Instant};

use fleet_support::{Fleet, ORG};
use support::{UserFixture, set_subscription};
use uuid::Uuid;
use vyx_fleet::db::breaker;
use vyx_fleet::reconcile::plan::{Action, Finding};
use vyx_fleet::sim::{CallRecord, Timings};

async fn paid(fleet: &Fleet, n: usize) -> Vec<Uuid> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(UserFixture::paid("pro").insert(&fleet.db.pool).await);
    }
    v
}

#[tokio::test]
async fn a_mass_downgrade_deletes_nothing_until_an_operator_confirms() {
    let fleet = Fleet::start().await;
    let users = paid(&fleet, 8).await;
    fleet.converge().await;
    for u in &users[..6] {
        set_subscription(&fleet.db.pool, *u, "free", "cancelled").await;
    }
    // Grace starts (DB only), then the deletions are held back.
    fleet.pass().await;
    fleet.sim.clear_calls();
    let report = fleet.pass().await;
    assert!(
        report.plan.findings.iter().any(|f| matches!(
            f,
            Finding::DeletionsBlocked {
                would_delete: 6,
                live: 8
            }
        )),
        "{:?}",
        report.plan.findings
    );
    assert!(
        !report
            .plan
            .actions
            .iter()
            .any(|a| matches!(a, Action::Deprovision { .. }))
    );
    assert!(
        fleet.writes().is_empty(),
        "nothing deleted: {:?}",
        fleet.writes()
    );
    assert_eq!(fleet.apps().len(), 8);

    assert_eq!(breaker::load_held(&fleet.db.pool).await.unwrap().len(), 6);
    assert_eq!(
        breaker::confirm_held(&fleet.db.pool, "test").await.unwrap(),
        6
    );
    fleet.converge().await;
    assert_eq!(fleet.apps().len(), 2);
    for u in &users[..6] {
        assert_eq!(fleet.row(*u).await.status, "deleted");
    }
    fleet.pass().await;
    assert!(
        breaker::load_held(&fleet.db.pool).await.unwrap().is_empty(),
        "a held entry leaves the set once its app is gone"
    );
}

#[tokio::test]
async fn a_downgrade_waits_for_the_grace_and_an_upgrade_within_it_cancels() {
    let mut fleet = Fleet::start().await;
    fleet.reconfigure("DEPROVISION_GRACE", "1h");
    let users = paid(&fleet, 3).await;
    fleet.converge().await;
    set_subscription(&fleet.db.pool, users[0], "free", "active").await;
    fleet.converge().await;
    let row = fleet.row(users[0]).await;
    assert_eq!(row.status, "active", "not deleted within the grace");
    assert!(row.unwanted_since.is_some());
    assert!(fleet.app(&row.fly_app_name).is_some());

    set_subscription(&fleet.db.pool, users[0], "pro", "active").await;
    fleet.converge().await;
    let row = fleet.row(users[0]).await;
    assert!(row.unwanted_since.is_none(), "the grace is cancelled");
    assert_eq!(row.status, "active");
}

#[tokio::test]
async fn a_rollout_halts_when_the_new_image_keeps_failing_its_checks() {
    let mut fleet = Fleet::builder().var("MAX_CONCURRENCY", "2").start().await;
    let users = paid(&fleet, 6).await;
    fleet.converge().await;
    let bad = "registry.fly.io/vyx-screener:broken";
    fleet.sim.clear_calls();
    fleet.sim.set_failing_images(vec![bad.to_string()]);
    fleet.reconfigure("USER_APP_IMAGE", bad);
    fleet.ctx.timeouts.healthy = std::time::Duration::from_secs(2);
    // The canary moves and fails its checks on the new version; the rollout halts there.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let report = fleet.pass().await;
        if report
            .plan
            .findings
            .iter()
            .any(|f| matches!(f, Finding::RolloutHalted { .. }))
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no halt");
    }
    // The rollback finishes; nothing else moves.
    fleet.converge().await;
    let updated: std::collections::BTreeSet<String> = fleet
        .writes()
        .into_iter()
        .filter(|c| c.class == "machines.update")
        .filter_map(|c| c.path.split('/').nth(3).map(str::to_string))
        .collect();
    assert_eq!(
        updated.len(),
        1,
        "only the canary got the broken image: {updated:?}"
    );
    for u in &users {
        let row = fleet.row(*u).await;
        let app = fleet.app(&row.fly_app_name).unwrap();
        assert_ne!(app.machines[0].config["image"], bad, "rolled back");
    }
}

#[tokio::test]
async fn rotating_the_service_key_resyncs_every_app() {
    let mut fleet = Fleet::start().await;
    let users = paid(&fleet, 2).await;
    fleet.converge().await;
    let before: Vec<u64> = fleet.apps().iter().map(|a| a.secrets_version).collect();
    fleet.reconfigure("SUPABASE_SERVICE_ROLE_KEY", "rotated-key-2");
    fleet.converge().await;
    for (app, old) in fleet.apps().iter().zip(before) {
        assert!(
            app.secrets_version > old,
            "{} secrets not rewritten",
            app.name
        );
    }
    for u in users {
        let row = fleet.row(u).await;
        assert_eq!(row.status, "active");
        let app = fleet.app(&row.fly_app_name).unwrap();
        assert_eq!(row.secrets_version, Some(app.secrets_version as i64));
    }
}

#[tokio::test]
async fn an_orphan_is_reported_then_deleted_only_after_its_grace_and_unprefixed_apps_never() {
    let fleet = Fleet::start().await;
    paid(&fleet, 6).await;
    fleet.converge().await;
    fleet.sim.seed_app(ORG, "vyx-user-leftover");
    fleet.sim.seed_app(ORG, "hand-made-app");
    fleet.relist().await;
    fleet.pass().await;
    fleet.pass().await;
    assert!(
        fleet.app("vyx-user-leftover").is_some(),
        "reported, not deleted, within the grace"
    );
    let tracked: Vec<String> = sqlx::query_scalar("SELECT app_name FROM vyx_fleet.orphans")
        .fetch_all(&fleet.db.pool)
        .await
        .unwrap();
    assert_eq!(tracked, ["vyx-user-leftover"]);

    sqlx::query("UPDATE vyx_fleet.orphans SET first_seen_at = now() - interval '61 minutes'")
        .execute(&fleet.db.pool)
        .await
        .unwrap();
    fleet.pass().await;
    assert!(
        fleet.app("vyx-user-leftover").is_none(),
        "deleted after the grace"
    );
    assert!(fleet.app("hand-made-app").is_some(), "never a candidate");
}

#[tokio::test]
async fn a_deletion_confirmation_expires_unused() {
    let fleet = Fleet::start().await;
    sqlx::query(
        "INSERT INTO vyx_fleet.held_deletions (app_name, kind) VALUES ('vyx-user-aaaaaaaa', 'orphan')",
    )
    .execute(&fleet.db.pool)
    .await
    .unwrap();
    breaker::confirm_held(&fleet.db.pool, "test").await.unwrap();
    let held = breaker::load_held(&fleet.db.pool).await.unwrap();
    assert!(held[0].confirmed_at.is_some());
    assert_eq!(held[0].confirmed_by.as_deref(), Some("test"));
    sqlx::query("UPDATE vyx_fleet.held_deletions SET confirmed_at = now() - interval '16 minutes'")
        .execute(&fleet.db.pool)
        .await
        .unwrap();
    let held = breaker::load_held(&fleet.db.pool).await.unwrap();
    assert!(
        held[0].confirmed_at.is_none(),
        "an old confirmation must not let the held deletion through"
    );
}

/// A deletion Fly accepted but has not finished holds none of the `MAX_CONCURRENCY` slots: with one
/// slot and Fly slow to finish deletions, the second downgraded user's app is deleted while the
/// first's is still there, unconfirmed; each row is soft-deleted only once its app answers 404.
#[tokio::test]
async fn a_deletion_waiting_for_fly_to_finish_leaves_its_slot_to_the_next() {
    let mut fleet = Fleet::start().await;
    fleet.reconfigure("MAX_CONCURRENCY", "1");
    // Only Fly finishing the deletion, never the executor's patience, ends the wait.
    fleet.ctx.timeouts.app_gone = Duration::from_secs(3600);
    let users = paid(&fleet, 3).await;
    fleet.converge().await;
    // Fly finishes no deletion by itself: the test finishes them, out of band, when it has seen both.
    fleet.sim.set_timings(Timings {
        app_delete: Duration::from_secs(3600),
        ..Timings::default()
    });
    for u in &users[..2] {
        set_subscription(&fleet.db.pool, *u, "free", "cancelled").await;
    }
    fleet.pass().await; // the grace (0 s) starts: database only
    fleet.sim.clear_calls();

    let deletes = |calls: &[CallRecord]| -> Vec<(u64, String)> {
        calls
            .iter()
            .filter(|c| c.class == "apps.delete" && c.status == Some(202))
            .map(|c| {
                (
                    c.seq,
                    c.path.rsplit('/').next().unwrap_or_default().to_string(),
                )
            })
            .collect()
    };
    let finish_both = async {
        let deadline = Instant::now() + Duration::from_secs(60);
        let (first, second) = loop {
            let calls = fleet.sim.calls();
            if let [first, second, ..] = &deletes(&calls)[..] {
                break (first.clone(), second.clone());
            }
            assert!(
                Instant::now() < deadline,
                "the second app's DELETE never reached Fly while the first deletion waited: {:#?}",
                calls
                    .iter()
                    .map(|c| (c.seq, c.method.as_str(), c.path.as_str(), c.status))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let calls = fleet.sim.calls();
        let first_confirmed_gone = calls.iter().any(|c| {
            c.class == "apps.get"
                && c.seq < second.0
                && c.path.ends_with(&format!("/{}", first.1))
                && c.status == Some(404)
        });
        assert!(!first_confirmed_gone, "{calls:#?}");
        let snapshot = fleet.sim.snapshot();
        let first_app = snapshot.app(&first.1).expect("the first app still exists");
        assert!(first_app.deleting, "its deletion pending");
        for u in &users[..2] {
            assert_eq!(
                fleet.row(*u).await.status,
                "deprovisioning",
                "no row is soft-deleted before its app answers 404"
            );
        }
        for (_, name) in [first, second] {
            assert!(fleet.sim.delete_app_out_of_band(&name));
        }
    };
    let (report, ()) = tokio::join!(fleet.pass(), finish_both);
    assert!(
        report
            .plan
            .actions
            .iter()
            .filter(|a| matches!(a, Action::Deprovision { .. }))
            .count()
            == 2,
        "{:?}",
        report.plan.actions
    );
    for u in &users[..2] {
        let row = fleet.row(*u).await;
        assert_eq!(row.status, "deleted");
        assert!(fleet.app(&row.fly_app_name).is_none());
    }
    assert_eq!(fleet.row(users[2]).await.status, "active");
    assert_eq!(fleet.apps().len(), 1);
}
