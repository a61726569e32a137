//! The rollout's persisted state against a real PostgreSQL: the current rollout survives a leader
//! change, per-app progress maps back to the decision's states, a deposed leader's writes change
//! nothing, and an operator's resume clears a halt and forgives the failures so far.

mod support;

use std::time::Duration;

use chrono::{TimeZone, Utc};
use sqlx::PgPool;
use support::{UserFixture, migrated_db};
use uuid::Uuid;
use vyx_fleet::db::lease;
use vyx_fleet::db::rollout::{self, RowRolloutState};
use vyx_fleet::db::{Store, StoreError};
use vyx_fleet::reconcile::{AppState, Halt, HaltReason, Tally};

const TTL: Duration = Duration::from_secs(30);

async fn leader(pool: &PgPool, holder: &str) -> Store {
    let term = lease::try_acquire(pool, holder, TTL)
        .await
        .unwrap()
        .unwrap();
    Store::new(pool.clone(), term)
}

async fn expire_lease(pool: &PgPool) {
    sqlx::query(
        "UPDATE vyx_fleet.lease SET expires_at = clock_timestamp() - interval '1 second'
          WHERE name = 'controller'",
    )
    .execute(pool)
    .await
    .unwrap();
}

async fn app_row(pool: &PgPool, n: u32) -> Uuid {
    let user = UserFixture::paid("pro").insert(pool).await;
    sqlx::query_scalar(
        "INSERT INTO public.user_fly_apps (user_id, fly_app_name, fly_org_slug, status)
         VALUES ($1, $2, 'vyx', 'active') RETURNING id",
    )
    .bind(user)
    .bind(format!("vyx-user-{n:08}"))
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_new_target_starts_a_rollout_and_the_same_target_finds_it_again() {
    let db = migrated_db().await;
    assert_eq!(rollout::load_current(&db.pool).await.unwrap(), None);
    let store = leader(&db.pool, "a").await;
    let first = store.start_rollout("spec-a", "img:1").await.unwrap();
    assert_eq!(
        (first.target_digest.as_str(), first.target_image.as_str()),
        ("spec-a", "img:1")
    );
    assert!(!first.halted);

    // A restarted leader with the same target carries on with the same rollout.
    expire_lease(&db.pool).await;
    let store = leader(&db.pool, "b").await;
    let again = store.start_rollout("spec-a", "img:1").await.unwrap();
    assert_eq!(again.id, first.id);

    // A new target (even a return to an earlier spec) is a new rollout with fresh counts.
    let second = store.start_rollout("spec-b", "img:2").await.unwrap();
    assert!(second.id > first.id);
    let back = store.start_rollout("spec-a", "img:1").await.unwrap();
    assert!(back.id > second.id);
    assert_eq!(rollout::load_current(&db.pool).await.unwrap(), Some(back));
}

#[tokio::test]
async fn app_progress_round_trips_into_the_decisions_states() {
    let db = migrated_db().await;
    let store = leader(&db.pool, "a").await;
    let current = store.start_rollout("spec-b", "img:2").await.unwrap();
    let rows = [
        app_row(&db.pool, 1).await,
        app_row(&db.pool, 2).await,
        app_row(&db.pool, 3).await,
        app_row(&db.pool, 4).await,
    ];
    let t = Utc.with_ymd_and_hms(2026, 11, 30, 8, 0, 0).unwrap();
    store
        .set_app_rollout_state(
            rows[0],
            current.id,
            1,
            RowRolloutState::Soaking,
            t,
            Some("01JVERSION"),
        )
        .await
        .unwrap();
    store
        .set_app_rollout_state(rows[1], current.id, 2, RowRolloutState::Failed, t, None)
        .await
        .unwrap();
    store
        .record_healthy_spec(
            rows[2],
            "spec-b",
            "img:2",
            &serde_json::json!({"image": "img:2"}),
            Some("sha256:abc"),
        )
        .await
        .unwrap();

    let progress = rollout::load_progress(&db.pool).await.unwrap();
    let state = |row: Uuid| {
        progress
            .iter()
            .find(|p| p.row_id == row)
            .unwrap()
            .state_in(&current)
    };
    assert_eq!(state(rows[0]), AppState::Soaking { wave: 1, since: t });
    assert_eq!(state(rows[1]), AppState::Failed { wave: 2 });
    assert_eq!(
        state(rows[2]),
        AppState::Healthy { wave: 0 },
        "already on the target"
    );
    assert_eq!(state(rows[3]), AppState::Pending);
    let soaking = progress.iter().find(|p| p.row_id == rows[0]).unwrap();
    assert_eq!(
        soaking.rollout_machine_version.as_deref(),
        Some("01JVERSION")
    );
    let healthy = progress.iter().find(|p| p.row_id == rows[2]).unwrap();
    assert_eq!(healthy.healthy_image.as_deref(), Some("img:2"));

    // Under the next rollout, the old progress no longer counts: the app is pending again.
    let next = store.start_rollout("spec-c", "img:3").await.unwrap();
    let progress = rollout::load_progress(&db.pool).await.unwrap();
    assert!(
        progress
            .iter()
            .all(|p| p.state_in(&next) == AppState::Pending)
    );
}

#[tokio::test]
async fn a_halt_persists_until_an_operator_resumes_and_forgives_the_failures_so_far() {
    let db = migrated_db().await;
    let store = leader(&db.pool, "a").await;
    let r = store.start_rollout("spec-b", "img:2").await.unwrap();
    assert_eq!(rollout::resume(&db.pool, "ops").await.unwrap(), None);

    let tally = Tally {
        healthy: 3,
        failed: 1,
        rolled_back: 1,
        waves_done: 2,
        ..Tally::default()
    };
    store
        .save_rollout_progress(r.id, &tally, false)
        .await
        .unwrap();
    let at = Utc.with_ymd_and_hms(2026, 11, 30, 8, 5, 0).unwrap();
    let halt = Halt {
        reason: HaltReason::TooManyFailures {
            failed: 2,
            moved: 5,
            allowed: 1,
        },
        at,
    };
    store.halt_rollout(r.id, &halt).await.unwrap();
    // A second halt keeps the first reason.
    let later = Halt {
        reason: HaltReason::Recorded("later".into()),
        at: at + chrono::Duration::minutes(1),
    };
    store.halt_rollout(r.id, &later).await.unwrap();

    let halted = rollout::load_current(&db.pool).await.unwrap().unwrap();
    assert!(halted.halted);
    assert_eq!(halted.halt_kind.as_deref(), Some("too_many_failures"));
    assert_eq!(halted.halted_at, Some(at));
    assert_eq!(
        (
            halted.waves_done,
            halted.moved,
            halted.failed,
            halted.rolled_back
        ),
        (2, 5, 2, 1)
    );
    let view = halted.to_rollout();
    assert!(view.halted.is_some());
    assert!(
        view.halted
            .unwrap()
            .reason
            .to_string()
            .contains("2 of 5 moved apps failed")
    );

    let resumed = rollout::resume(&db.pool, "ops@vyx").await.unwrap().unwrap();
    assert!(!resumed.halted && resumed.halt_reason.is_none());
    assert_eq!(resumed.resumed_by.as_deref(), Some("ops@vyx"));
    assert_eq!(resumed.to_rollout().failures_forgiven, 2);
    assert_eq!(
        rollout::resume(&db.pool, "ops").await.unwrap(),
        None,
        "nothing left to resume"
    );
}

#[tokio::test]
async fn a_deposed_leaders_rollout_writes_change_nothing() {
    let db = migrated_db().await;
    let old = leader(&db.pool, "a").await;
    let r = old.start_rollout("spec-b", "img:2").await.unwrap();
    let row = app_row(&db.pool, 1).await;
    expire_lease(&db.pool).await;
    let _new = leader(&db.pool, "b").await;

    let t = Utc::now();
    fn fenced<T>(e: Result<T, StoreError>) -> bool {
        matches!(e, Err(StoreError::Fenced))
    }
    assert!(fenced(old.start_rollout("spec-c", "img:3").await));
    assert!(fenced(
        old.set_app_rollout_state(row, r.id, 1, RowRolloutState::Moving, t, None)
            .await
    ));
    assert!(fenced(
        old.save_rollout_progress(r.id, &Tally::default(), true)
            .await
    ));
    let halt = Halt {
        reason: HaltReason::Recorded("x".into()),
        at: t,
    };
    assert!(fenced(old.halt_rollout(r.id, &halt).await));
    assert!(fenced(
        old.record_healthy_spec(row, "spec-b", "img:2", &serde_json::json!({}), None)
            .await
    ));

    let current = rollout::load_current(&db.pool).await.unwrap().unwrap();
    assert_eq!(current, r, "the rollout row is untouched");
    let progress = rollout::load_progress(&db.pool).await.unwrap();
    assert_eq!(progress[0].rollout_state, None);
    assert_eq!(progress[0].spec_digest, None);
}

#[tokio::test]
async fn the_table_refuses_a_halt_without_a_reason_and_a_stray_app_state_never_reads_as_pending() {
    let db = migrated_db().await;
    let store = leader(&db.pool, "a").await;
    let r = store.start_rollout("spec-b", "img:2").await.unwrap();
    let bad_halt = sqlx::query("UPDATE vyx_fleet.rollout SET halted = true WHERE id = $1")
        .bind(r.id)
        .execute(&db.pool)
        .await;
    assert!(bad_halt.is_err());
    let row = app_row(&db.pool, 1).await;
    sqlx::query(
        "UPDATE public.user_fly_apps SET rollout_id = $2, rollout_wave = 3, rollout_state = 'paused'
          WHERE id = $1",
    )
    .bind(row)
    .bind(r.id)
    .execute(&db.pool)
    .await
    .unwrap();
    let progress = rollout::load_progress(&db.pool).await.unwrap();
    assert_eq!(progress[0].state_in(&r), AppState::Moving { wave: 3 });
}

async fn version_of(pool: &PgPool, row: Uuid) -> Option<String> {
    rollout::load_row_progress(pool, row)
        .await
        .unwrap()
        .unwrap()
        .rollout_machine_version
}

#[tokio::test]
async fn a_moves_machine_version_is_never_read_by_the_next_rollouts_move() {
    let db = migrated_db().await;
    let store = leader(&db.pool, "a").await;
    let row = app_row(&db.pool, 1).await;
    let first = store.start_rollout("spec-a", "img:1").await.unwrap();
    let at = Utc::now();
    store
        .set_app_rollout_state(row, first.id, 1, RowRolloutState::Moving, at, None)
        .await
        .unwrap();
    store
        .set_app_rollout_state(row, first.id, 1, RowRolloutState::Moving, at, Some("v1"))
        .await
        .unwrap();
    // Later steps of the same move keep the version the update returned.
    store
        .set_app_rollout_state(row, first.id, 1, RowRolloutState::Soaking, at, None)
        .await
        .unwrap();
    store
        .set_app_rollout_state(row, first.id, 1, RowRolloutState::Healthy, at, None)
        .await
        .unwrap();
    assert_eq!(version_of(&db.pool, row).await.as_deref(), Some("v1"));

    // The next rollout records `moving` before its update: nothing of the first move survives,
    // so a retry after a failed update sends the update instead of judging the old machine.
    let second = store.start_rollout("spec-b", "img:2").await.unwrap();
    store
        .set_app_rollout_state(row, second.id, 1, RowRolloutState::Moving, at, None)
        .await
        .unwrap();
    assert_eq!(version_of(&db.pool, row).await, None);

    // Within one rollout too: a move that failed and moves again starts without a version.
    store
        .set_app_rollout_state(row, second.id, 1, RowRolloutState::Failed, at, None)
        .await
        .unwrap();
    store
        .set_app_rollout_state(row, second.id, 2, RowRolloutState::Moving, at, None)
        .await
        .unwrap();
    assert_eq!(version_of(&db.pool, row).await, None);
}

#[tokio::test]
async fn a_deleted_row_forgets_its_rollout_progress_so_a_re_provisioned_app_is_not_judged_by_it() {
    let db = migrated_db().await;
    let store = leader(&db.pool, "a").await;
    let row = app_row(&db.pool, 1).await;
    let r = store.start_rollout("spec-a", "img:1").await.unwrap();
    store
        .set_app_rollout_state(
            row,
            r.id,
            1,
            RowRolloutState::Failed,
            Utc::now(),
            Some("v3"),
        )
        .await
        .unwrap();
    store.mark_deleted(row, &[]).await.unwrap();
    let p = rollout::load_row_progress(&db.pool, row)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            p.rollout_id,
            p.rollout_state,
            p.rollout_machine_version,
            p.spec_digest
        ),
        (None, None, None, None)
    );
}
