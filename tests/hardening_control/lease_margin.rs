//! A one-off pass stops at a lost lease.

#[allow(unused_imports)]
use super::*;

#[tokio::test]
async fn a_one_off_pass_stops_calling_fly_once_its_lease_is_lost() {
    let fleet = Fleet::start().await;
    paid(&fleet, 3).await;
    fleet.converge().await;
    // Probes are due, so the pass has Fly calls to make after observing.
    sqlx::query("UPDATE public.user_fly_apps SET last_health_check = now() - interval '1 day'")
        .execute(&fleet.db.pool)
        .await
        .unwrap();
    lease::release(&fleet.db.pool, &fleet.holder, fleet.term)
        .await
        .unwrap();
    fleet.sim.set_faults(Faults {
        rules: vec![FaultRule::new("*", 1.0, FaultKind::Latency { ms: 3000 })],
        ..Faults::default()
    });
    fleet.sim.clear_calls();
    let renew = RenewConfig {
        ttl: std::time::Duration::from_secs(60),
        renew_every: std::time::Duration::from_millis(20),
        act_margin: std::time::Duration::from_secs(30),
    };
    let once = tokio::spawn({
        let (ctx, cfg) = (fleet.ctx.clone(), fleet.pass_cfg.clone());
        async move { run_once(&ctx, &cfg, &Metrics::new(), "once", renew).await }
    });
    guard(async {
        while fleet.sim.in_flight() == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    // Another replica takes over while the first Fly call is in flight.
    sqlx::query(
        "UPDATE vyx_fleet.lease SET holder = 'other', term = term + 1,
                expires_at = clock_timestamp() + interval '1 minute'",
    )
    .execute(&fleet.db.pool)
    .await
    .unwrap();
    let result = guard(once).await.unwrap();
    assert!(matches!(result, Err(OnceError::LeaseLost)), "{result:?}");
    guard(async {
        while fleet.sim.in_flight() > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    let calls: Vec<String> = fleet.sim.calls().iter().map(|c| c.path.clone()).collect();
    // The call in flight at the takeover may or may not be logged (its client went away); nothing
    // after it was sent.
    assert!(
        calls.len() <= 1,
        "only the call in flight at the takeover: {calls:?}"
    );
}
