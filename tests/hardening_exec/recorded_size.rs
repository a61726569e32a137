//! The row describes what actually runs (region, size, cost).

use std::time::Duration;

use super::fleet_support::{self, Fleet};
use super::support::UserFixture;
use super::*;

/// `(region, cpu_count, memory_mb, monthly_cost_estimate_usd)` as recorded.
async fn recorded_size(fleet: &Fleet, user: uuid::Uuid) -> (String, i32, i32, f64) {
    sqlx::query_as(
        "SELECT region, cpu_count, memory_mb, monthly_cost_estimate_usd::float8 \
         FROM public.user_fly_apps WHERE user_id = $1",
    )
    .bind(user)
    .fetch_one(&fleet.db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_region_move_and_a_resize_are_recorded_with_the_new_cost() {
    use vyx_fleet::reconcile::monthly_cost_estimate_usd;
    let mut fleet = Fleet::start().await;
    let user = UserFixture::paid("pro").insert(&fleet.db.pool).await;
    fleet.converge().await;
    assert_eq!(
        recorded_size(&fleet, user).await,
        ("sin".into(), 2, 512, monthly_cost_estimate_usd(2, 512))
    );

    fleet.reconfigure("USER_APP_REGION", "ams");
    fleet.reconfigure("USER_APP_MEMORY_MB", "1024");
    fleet.converge().await;

    let row = fleet.row(user).await;
    let app = fleet.app(&row.fly_app_name).unwrap();
    let live = live_machines(&app);
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].region, "ams");
    assert_eq!(
        recorded_size(&fleet, user).await,
        ("ams".into(), 2, 1024, monthly_cost_estimate_usd(2, 1024))
    );
}

#[tokio::test]
async fn an_adopted_row_records_the_size_and_cost_of_what_it_runs() {
    use vyx_fleet::fly::{CreateAppRequest, CreateMachineRequest, MachineConfig};
    use vyx_fleet::reconcile::monthly_cost_estimate_usd;
    let fleet = Fleet::start().await;
    let user = UserFixture::paid("pro").insert(&fleet.db.pool).await;
    let legacy = "vyx-user-legacy02";
    fleet
        .ctx
        .fly
        .create_app(&CreateAppRequest {
            name: legacy.into(),
            org_slug: fleet_support::ORG.into(),
            network: None,
            idempotency_key: None,
        })
        .await
        .unwrap();
    let visible = async {
        while fleet.ctx.fly.get_app(legacy).await.is_err() {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), visible)
        .await
        .unwrap();
    fleet
        .ctx
        .fly
        .create_machine(
            legacy,
            &CreateMachineRequest {
                config: MachineConfig {
                    image: fleet_support::IMAGE.into(),
                    ..Default::default()
                },
                region: Some("sin".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // What the old edge function recorded: another size, another region, its own cost figure.
    sqlx::query(
        "INSERT INTO public.user_fly_apps \
           (user_id, fly_app_name, fly_org_slug, status, region, cpu_count, memory_mb, monthly_cost_estimate_usd) \
         VALUES ($1, $2, $3, 'active', 'iad', 1, 256, 42.00)",
    )
    .bind(user)
    .bind(legacy)
    .bind(fleet_support::ORG)
    .execute(&fleet.db.pool)
    .await
    .unwrap();

    fleet.converge().await;

    assert_eq!(fleet.row(user).await.fly_app_name, legacy);
    assert_eq!(
        recorded_size(&fleet, user).await,
        ("sin".into(), 2, 512, monthly_cost_estimate_usd(2, 512))
    );
}
