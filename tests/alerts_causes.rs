//! Alerts that name the failure that stops everything (a Fly token Fly refuses), the halt reason the
//! rollout recorded, and subjects that stay small whatever the fleet size.

mod bin_support;
mod console_support;
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use bin_support::{Daemon, World, assert_no_secrets, secs, wait_until};
use serde_json::Value;
use support::{UserFixture, migrated_db};
use vyx_fleet::alerts::{self, AlertConfig};
use vyx_fleet::sim::{SimConfig, TokenConfig};

/// Records every `{"text": ...}` a webhook receives.
#[derive(Clone, Default)]
struct Hook(Arc<Mutex<Vec<String>>>);

impl Hook {
    async fn start() -> (Hook, String) {
        let hook = Hook::default();
        let app = axum::Router::new()
            .route("/hook", post(receive))
            .with_state(hook.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (hook, url)
    }

    async fn wait_for(&self, needle: &str) -> String {
        wait_until(&format!("a message about {needle:?}"), secs(90), || async {
            let texts = self.0.lock().unwrap().clone();
            texts
                .iter()
                .find(|t| t.contains(needle))
                .cloned()
                .ok_or(format!("{texts:?}"))
        })
        .await
    }
}

async fn receive(State(h): State<Hook>, Json(body): Json<Value>) -> &'static str {
    h.0.lock()
        .unwrap()
        .push(body["text"].as_str().unwrap_or("").to_string());
    "ok"
}

fn config() -> AlertConfig {
    AlertConfig {
        webhook: None,
        repeat: Duration::from_secs(3600),
        unhealthy_after: Duration::from_secs(900),
        retry_threshold: 5,
        leader_stale_after: Duration::from_secs(3600),
        every: Duration::from_secs(1),
        timeout: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn a_fly_token_fly_refuses_raises_an_alert_naming_it_and_clears_once_a_good_token_is_set() {
    let good = "fm2_the-token-fly-knows";
    let world = World::start(SimConfig {
        any_token_org: None,
        tokens: vec![TokenConfig {
            token: good.to_string(),
            orgs: vec![bin_support::ORG.to_string()],
        }],
        ..SimConfig::default()
    })
    .await;
    let (hook, url) = Hook::start().await;
    let env = world.env.clone().with("ALERT_WEBHOOK_URL", &url);
    let refused = Daemon::spawn(&env, "alerts-token-refused");
    let text = hook.wait_for("ALERT").await;
    assert!(
        text.contains("Fly refuses FLY_API_TOKEN") && text.contains("fly tokens create org"),
        "{text}"
    );
    assert!(
        !text.contains("leader silent"),
        "not the wrong cause: {text}"
    );
    assert_no_secrets(&refused.stdout(), &env.secret_values(), "daemon log");
    drop(refused);

    let fixed = env.clone().with("FLY_API_TOKEN", good);
    let _d = Daemon::spawn(&fixed, "alerts-token-fixed");
    hook.wait_for("RESOLVED: Fly accepts the API token again")
        .await;
    let user = UserFixture::paid("pro").insert(world.pool()).await;
    world.wait_provisioned(user, secs(90)).await;
}

#[tokio::test]
async fn rollout_halted_states_the_reason_the_rollout_recorded() {
    let db = migrated_db().await;
    sqlx::query(
        "INSERT INTO vyx_fleet.rollout (target_digest, target_image, halted, halt_kind, halt_reason,
                                        halted_at)
         VALUES ('d', 'registry.fly.io/vyx-screener:bb-9', true, 'canary_failed',
                 'canary vyx-user-c0000001 stopped on the new spec', now())",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let client = reqwest::Client::new();
    let sent = alerts::tick(&db.pool, &config(), chrono::Utc::now(), &client).await;
    let halted = sent
        .iter()
        .find(|m| m.contains("is halted"))
        .unwrap_or_else(|| panic!("{sent:#?}"));
    assert!(
        halted.contains("canary vyx-user-c0000001 stopped on the new spec"),
        "{halted}"
    );
    assert!(!halted.contains("too many apps"), "{halted}");
    sqlx::query(
        "UPDATE vyx_fleet.rollout SET halted = false, halt_reason = NULL, halted_at = NULL",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let sent = alerts::tick(&db.pool, &config(), chrono::Utc::now(), &client).await;
    assert!(
        sent.iter()
            .any(|m| m.contains("RESOLVED: the rollout is no longer halted")),
        "{sent:?}"
    );
}

#[tokio::test]
async fn an_alert_about_many_apps_keeps_a_small_subject_and_names_ten() {
    let db = migrated_db().await;
    sqlx::query(
        "WITH u AS (
            INSERT INTO auth.users (id, email)
            SELECT gen_random_uuid(), 'u' || g || '@example.test' FROM generate_series(1, 300) g
            RETURNING id)
         INSERT INTO public.user_fly_apps
             (user_id, fly_app_name, fly_org_slug, status, health_status, retry_count)
         SELECT id, 'vyx-user-' || lpad(to_hex(row_number() OVER ()), 8, '0'), 'vyx-test', 'error',
                'unhealthy', 9
           FROM u",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let client = reqwest::Client::new();
    let sent = alerts::tick(&db.pool, &config(), chrono::Utc::now(), &client).await;
    let failing = sent
        .iter()
        .find(|m| m.contains("attempts in a row"))
        .unwrap_or_else(|| panic!("{sent:#?}"));
    assert!(failing.contains("and 290 more"), "{failing}");
    let subject: String =
        sqlx::query_scalar("SELECT subject FROM vyx_fleet.alerts WHERE kind = 'converge_failing'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(subject.len() < 40, "{subject}");
    assert!(subject.starts_with("300 "), "{subject}");
}
