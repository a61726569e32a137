//! Point 8: the breaker counts over a sliding window and holds a confirmed set.

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
