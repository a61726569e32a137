//! The executor's failure paths of converge and deprovision, each reproduced against real
//! PostgreSQL and the Fly simulator. The machine lifecycle's smaller paths are in
//! `hardening_exec/lifecycle.rs`, the recorded size and cost in `hardening_exec/recorded_size.rs`.

mod fleet_support;
mod support;

#[path = "hardening_exec/lifecycle.rs"]
mod lifecycle;
#[path = "hardening_exec/recorded_size.rs"]
mod recorded_size;

use std::time::Duration;

use fleet_support::{Fleet, SERVICE_KEY};
use support::UserFixture;
use vyx_fleet::fly::FlyError;
use vyx_fleet::sim::{AppSnapshot, FaultKind, FaultRule, Faults};

fn only(rules: Vec<FaultRule>) -> Faults {
    Faults {
        rules,
        ..Faults::default()
    }
}

fn sha256_hex(s: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Delete an app the way an operator with flyctl would, and wait until Fly answers 404 for it.
async fn delete_app_by_hand(fleet: &Fleet, name: &str) {
    fleet
        .ctx
        .fly
        .delete_app(name)
        .await
        .expect("delete accepted");
    let gone = async {
        loop {
            match fleet.ctx.fly.get_app(name).await {
                Err(FlyError::NotFound { .. }) => break,
                _ => tokio::task::yield_now().await,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), gone)
        .await
        .expect("the app disappears after its delete");
    // No machine event reports a deleted app: the resync would find it; bring it forward.
    fleet.relist().await;
}

fn live_machines(app: &AppSnapshot) -> Vec<&vyx_fleet::sim::MachineSnapshot> {
    app.machines
        .iter()
        .filter(|m| m.state != "destroyed")
        .collect()
}

/// Secrets, IPs and the machine of a fully provisioned app, checked against what Fly holds.
async fn assert_fully_provisioned(fleet: &Fleet, user: uuid::Uuid) {
    let row = fleet.row(user).await;
    assert_eq!(row.status, "active", "{row:?}");
    let app = fleet.app(&row.fly_app_name).expect("app exists");
    assert_eq!(row.fly_app_id.as_deref(), Some(app.id.as_str()));
    let key = app
        .secrets
        .iter()
        .find(|s| s.name == "SUPABASE_SERVICE_ROLE_KEY")
        .expect("service key set on the app");
    assert_eq!(key.value_sha256, sha256_hex(SERVICE_KEY));
    assert_eq!(
        row.secrets_version,
        Some(app.secrets_version as i64),
        "the row records this app's secrets version"
    );
    assert!(app.ips.iter().any(|ip| ip.kind == "v6"), "{:?}", app.ips);
    assert!(app.ips.iter().any(|ip| ip.kind == "shared_v4"));
    let live = live_machines(&app);
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(row.machine_id.as_deref(), Some(live[0].id.as_str()));
    assert_eq!(live[0].state, "started");
}

// ---- a change of the app behind a row resets every per-app marker ----

#[tokio::test]
async fn an_app_deleted_by_hand_is_rebuilt_with_its_secrets_and_ips() {
    let fleet = Fleet::start().await;
    let user = UserFixture::paid("pro").insert(&fleet.db.pool).await;
    fleet.converge().await;
    let before = fleet.row(user).await;
    let old_id = before.fly_app_id.clone();

    delete_app_by_hand(&fleet, &before.fly_app_name).await;
    fleet.converge_within(20).await;

    let after = fleet.row(user).await;
    assert_eq!(after.fly_app_name, before.fly_app_name, "same name");
    assert_ne!(after.fly_app_id, old_id, "a new app behind the row");
    assert_fully_provisioned(&fleet, user).await;
}

#[tokio::test]
async fn a_row_moved_to_the_next_name_starts_that_app_from_scratch() {
    let fleet = Fleet::start().await;
    let user = uuid::Uuid::new_v4();
    let taken = vyx_fleet::reconcile::naming::candidate("vyx-user-", user, 0);
    UserFixture::paid("pro")
        .with_id(user)
        .insert(&fleet.db.pool)
        .await;
    // A row that never learnt an app id but carries markers (e.g. written by an earlier version
    // or by hand), whose name another org holds: the rename must not carry them to the new app.
    sqlx::query(
        "INSERT INTO public.user_fly_apps (user_id, fly_app_name, fly_org_slug, status, \
           secrets_version, secrets_digest, ips_ready, machine_op_id) \
         VALUES ($1, $2, $3, 'provisioning', 7, 'stale', true, 'stale-op')",
    )
    .bind(user)
    .bind(&taken)
    .bind(fleet_support::ORG)
    .execute(&fleet.db.pool)
    .await
    .unwrap();
    fleet.sim.seed_app("someone-else", &taken);

    fleet.converge_within(20).await;

    let row = fleet.row(user).await;
    assert_eq!(
        row.fly_app_name,
        vyx_fleet::reconcile::naming::candidate("vyx-user-", user, 1)
    );
    assert_fully_provisioned(&fleet, user).await;
}

// ---- a secret rotation reaches the machine even if the machine update fails ----

/// Whether Fly applied a machine update after the last secrets write it applied (REFERENCE §4.3: a
/// machine sees new secrets only after an update or restart).
fn machine_updated_after_last_secrets_write(fleet: &Fleet) -> bool {
    let calls = fleet.sim.calls();
    let Some(secrets) = calls
        .iter()
        .filter(|c| c.class == "secrets.set" && c.write_applied)
        .map(|c| c.seq)
        .max()
    else {
        return false;
    };
    calls
        .iter()
        .any(|c| c.class == "machines.update" && c.write_applied && c.seq > secrets)
}

#[tokio::test]
async fn a_rotated_secret_reaches_the_machine_even_when_the_first_update_fails() {
    let mut fleet = Fleet::start().await;
    let user = UserFixture::paid("pro").insert(&fleet.db.pool).await;
    fleet.converge().await;

    fleet.reconfigure("SUPABASE_SERVICE_ROLE_KEY", "rotated-key-do-not-leak-5e1b");
    fleet.sim.set_faults(only(vec![FaultRule::new(
        "machines.update",
        1.0,
        FaultKind::ServerError { status: 500 },
    )]));
    fleet.pass().await;
    assert!(
        !machine_updated_after_last_secrets_write(&fleet),
        "the update failed; the machine still runs the old secrets"
    );

    fleet.sim.set_faults(Faults::default());
    fleet.converge().await;

    assert!(
        machine_updated_after_last_secrets_write(&fleet),
        "nothing noticed that the machine never picked up the rotated secret"
    );
    let row = fleet.row(user).await;
    assert_eq!(row.status, "active");
    let app = fleet.app(&row.fly_app_name).unwrap();
    assert_eq!(row.secrets_version, Some(app.secrets_version as i64));
}

// ---- a transient Fly error on a serving app keeps it `active` ----

#[tokio::test]
async fn a_429_or_5xx_while_rolling_a_serving_app_keeps_it_active_with_the_error_kind() {
    let mut fleet = Fleet::start().await;
    let user = UserFixture::paid("pro").insert(&fleet.db.pool).await;
    fleet.converge().await;

    fleet.reconfigure("USER_APP_IMAGE", "registry.fly.io/vyx-screener:v2");
    for (status, kind) in [(429, "rate_limited"), (503, "server")] {
        fleet.sim.set_faults(only(vec![FaultRule::new(
            "machines.update",
            1.0,
            FaultKind::ServerError { status },
        )]));
        sqlx::query("UPDATE public.user_fly_apps SET next_attempt_at = NULL WHERE user_id = $1")
            .bind(user)
            .execute(&fleet.db.pool)
            .await
            .unwrap();
        fleet.pass().await;
        let row = fleet.row(user).await;
        assert_eq!(
            row.status, "active",
            "[{status}] the old machine still serves"
        );
        assert_eq!(row.last_error_kind.as_deref(), Some(kind), "[{status}]");
        assert!(row.next_attempt_at.is_some(), "[{status}] backoff recorded");
    }

    fleet.sim.set_faults(Faults::default());
    fleet.converge().await;
    let row = fleet.row(user).await;
    assert_eq!(row.status, "active");
    assert_eq!(row.last_error_kind, None);
    assert_eq!(
        row.docker_image.as_deref(),
        Some("registry.fly.io/vyx-screener:v2")
    );
}

#[tokio::test]
async fn an_app_that_no_longer_serves_turns_error_when_its_repair_fails() {
    let fleet = Fleet::start().await;
    let user = UserFixture::paid("pro").insert(&fleet.db.pool).await;
    fleet.converge().await;
    let row = fleet.row(user).await;
    delete_app_by_hand(&fleet, &row.fly_app_name).await;

    fleet.sim.set_faults(only(vec![FaultRule::new(
        "apps.create",
        1.0,
        FaultKind::ServerError { status: 500 },
    )]));
    fleet.pass().await;

    let row = fleet.row(user).await;
    assert_eq!(row.status, "error", "the user has no working app");
}

// ---- a transient 403 never renames a row ----

/// `apps.get` faults (403) from a seeded RNG; `seed` picks which GETs fail. The test checks in the
/// call log that the pattern it needs really happened, so a change of RNG fails loudly.
fn forbidden_gets(seed: u64) -> Faults {
    Faults {
        rules: vec![FaultRule::new(
            "apps.get",
            0.5,
            FaultKind::ServerError { status: 403 },
        )],
        seed: Some(seed),
        ..Faults::default()
    }
}

#[tokio::test]
async fn a_403_right_after_our_own_create_does_not_rename_the_app() {
    let fleet = Fleet::start().await;
    let user = uuid::Uuid::new_v4();
    // The seed answers the GETs before the create normally and the first one after it with 403.
    fleet.sim.set_faults(forbidden_gets(9));
    UserFixture::paid("pro")
        .with_id(user)
        .insert(&fleet.db.pool)
        .await;
    fleet.pass().await;
    fleet.sim.set_faults(Faults::default());
    fleet.converge().await;

    let calls = fleet.sim.calls();
    let created = calls
        .iter()
        .find(|c| c.class == "apps.create" && c.write_applied)
        .expect("an app was created");
    let next_get = calls
        .iter()
        .find(|c| c.class == "apps.get" && c.seq > created.seq)
        .expect("a GET followed the create");
    assert_eq!(
        next_get.status,
        Some(403),
        "the seed no longer injects the 403 right after the create; pick another"
    );
    let row = fleet.row(user).await;
    assert_eq!(
        row.fly_app_name,
        vyx_fleet::reconcile::naming::candidate("vyx-user-", user, 0),
        "the row keeps the name of the app it created"
    );
    assert_eq!(fleet.apps().len(), 1, "no second app, no orphan");
    let creates = calls
        .iter()
        .filter(|c| c.class == "apps.create" && c.write_applied)
        .count();
    assert_eq!(creates, 1);
    assert_fully_provisioned(&fleet, user).await;
}

#[tokio::test]
async fn a_row_that_knows_its_app_id_is_never_renamed_on_a_403() {
    let fleet = Fleet::start().await;
    let user = UserFixture::paid("pro").insert(&fleet.db.pool).await;
    fleet.converge().await;
    let before = fleet.row(user).await;
    // The machine record is gone (e.g. the machine vanished), so only the app id protects the name.
    sqlx::query("UPDATE public.user_fly_apps SET machine_id = NULL, status = 'provisioning' WHERE user_id = $1")
        .bind(user)
        .execute(&fleet.db.pool)
        .await
        .unwrap();
    fleet.sim.set_faults(only(vec![FaultRule::new(
        "apps.get",
        1.0,
        FaultKind::ServerError { status: 403 },
    )]));
    fleet.pass().await;
    fleet.sim.set_faults(Faults::default());

    let row = fleet.row(user).await;
    assert_eq!(row.fly_app_name, before.fly_app_name, "not renamed");
    fleet.converge().await;
    assert_eq!(fleet.apps().len(), 1, "no second app, no orphan");
    assert_fully_provisioned(&fleet, user).await;
}
