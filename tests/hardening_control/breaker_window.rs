//! The breaker counts over a sliding window and holds a confirmed set.

#[allow(unused_imports)]
use super::*;

#[tokio::test]
async fn deletions_that_trickle_in_over_several_passes_trip_the_breaker_within_the_window() {
    let fleet = Fleet::start().await;
    let users = paid(&fleet, 20).await;
    fleet.converge().await;
    // Five downgrades: exactly the limit (max(5, 10 % of 20)), allowed.
    for u in &users[..5] {
        set_subscription(&fleet.db.pool, *u, "free", "cancelled").await;
    }
    fleet.converge().await;
    assert_eq!(fleet.apps().len(), 15);
    // Three more in the same hour: eight deletions in the window, more than five.
    for u in &users[5..8] {
        set_subscription(&fleet.db.pool, *u, "free", "cancelled").await;
    }
    fleet.pass().await;
    let report = fleet.pass().await;
    assert!(blocked(&report.plan.findings), "{:?}", report.plan.findings);
    assert_eq!(fleet.apps().len(), 15, "nothing more deleted");
    for u in &users[5..8] {
        assert_eq!(fleet.row(*u).await.status, "active");
    }
}

#[tokio::test]
async fn one_confirmation_lets_every_held_deletion_through_even_across_passes() {
    let fleet = Fleet::start().await;
    let users = paid(&fleet, 4).await;
    fleet.converge().await;
    for u in &users {
        set_subscription(&fleet.db.pool, *u, "free", "cancelled").await;
    }
    fleet.pass().await;
    let report = fleet.pass().await;
    assert!(blocked(&report.plan.findings), "{:?}", report.plan.findings);
    assert_eq!(fleet.apps().len(), 4);

    assert_eq!(
        breaker::confirm_held(&fleet.db.pool, "ops").await.unwrap(),
        4
    );
    // One user's earlier attempt failed: it waits out its backoff while the other three go.
    sqlx::query(
        "UPDATE public.user_fly_apps SET next_attempt_at = now() + interval '1 hour' WHERE user_id = $1",
    )
    .bind(users[3])
    .execute(&fleet.db.pool)
    .await
    .unwrap();
    fleet.pass().await;
    assert_eq!(fleet.apps().len(), 1);
    sqlx::query("UPDATE public.user_fly_apps SET next_attempt_at = NULL")
        .execute(&fleet.db.pool)
        .await
        .unwrap();
    fleet.converge().await;
    assert!(fleet.apps().is_empty(), "the 4th app was held again");
    for u in &users {
        assert_eq!(fleet.row(*u).await.status, "deleted");
    }
}

/// The window slides: deletions older than an hour stop counting. Time is moved in the deletion
/// log itself (the breaker judges it on the database clock), not waited for.
#[tokio::test]
async fn deletions_that_leave_the_window_stop_counting() {
    let fleet = Fleet::start().await;
    let users = paid(&fleet, 20).await;
    fleet.converge().await;
    // Five deletions: exactly the limit (max(5, 10 % of 20)).
    for u in &users[..5] {
        set_subscription(&fleet.db.pool, *u, "free", "cancelled").await;
    }
    fleet.converge().await;
    assert_eq!(fleet.apps().len(), 15);
    let age = |minutes: i32| {
        let pool = fleet.db.pool.clone();
        async move {
            sqlx::query(
                "UPDATE vyx_fleet.deletions SET deleted_at = deleted_at - make_interval(mins => $1)",
            )
            .bind(minutes)
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    let would_delete = |findings: &[Finding]| {
        findings.iter().find_map(|f| match f {
            Finding::DeletionsBlocked { would_delete, .. } => Some(*would_delete),
            _ => None,
        })
    };

    // 59 minutes on, the five still count: one more deletion is a sixth, and is held.
    age(59).await;
    set_subscription(&fleet.db.pool, users[5], "free", "cancelled").await;
    fleet.pass().await;
    let report = fleet.pass().await;
    assert_eq!(
        would_delete(&report.plan.findings),
        Some(1),
        "{:?}",
        report.plan.findings
    );
    assert_eq!(fleet.apps().len(), 15);

    // Past the hour they leave the window: three more deletions (with the held one, four) are
    // within the limit and go through. The held one stays held: only an operator lets it go.
    age(2).await;
    for u in &users[6..9] {
        set_subscription(&fleet.db.pool, *u, "free", "cancelled").await;
    }
    fleet.pass().await;
    let report = fleet.pass().await;
    assert_eq!(
        would_delete(&report.plan.findings),
        Some(1),
        "{:?}",
        report.plan.findings
    );
    fleet.converge().await;
    assert_eq!(fleet.apps().len(), 12);
    for u in &users[6..9] {
        assert_eq!(fleet.row(*u).await.status, "deleted");
    }
    assert_eq!(fleet.row(users[5]).await.status, "active", "still held");
}
