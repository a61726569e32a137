//! Alerts to an incoming webhook: a receiver on loopback records every `{"text": ...}` it gets.
//! Black-box tests run the daemon; the two-replica race runs two evaluations at once in-process.

mod bin_support;
mod console_support;
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use bin_support::{BinEnv, Daemon, World, assert_no_secrets, secs, wait_until};
use console_support::{hold_deletions, inert_env};
use serde_json::Value;
use support::{UserFixture, migrated_db};
use vyx_fleet::alerts::{self, AlertConfig};
use vyx_fleet::secret::Secret;
use vyx_fleet::sim::SimConfig;

/// The path part that makes a webhook URL a credential; no message or log may contain it.
const HOOK_SECRET: &str = "T000-B000-HOOKSECRET";

#[derive(Clone, Default)]
struct Receiver {
    texts: Arc<Mutex<Vec<String>>>,
    /// Never answer: a webhook that hangs.
    hang: bool,
}

impl Receiver {
    async fn start(hang: bool) -> (Receiver, String) {
        let r = Receiver {
            hang,
            ..Receiver::default()
        };
        let app = axum::Router::new()
            .route(&format!("/services/{HOOK_SECRET}"), post(receive))
            .with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/services/{HOOK_SECRET}",
            listener.local_addr().unwrap()
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        (r, url)
    }

    fn texts(&self) -> Vec<String> {
        self.texts.lock().unwrap().clone()
    }

    fn about(&self, needle: &str) -> Vec<String> {
        self.texts()
            .into_iter()
            .filter(|t| t.contains(needle))
            .collect()
    }

    /// Waits until `n` messages mention `needle`.
    async fn wait_for(&self, needle: &str, n: usize) -> Vec<String> {
        wait_until(
            &format!("{n} webhook message(s) about {needle:?}"),
            secs(60),
            || async {
                let got = self.about(needle);
                if got.len() >= n {
                    Ok(got)
                } else {
                    Err(format!("so far: {:?}", self.texts()))
                }
            },
        )
        .await
    }
}

async fn receive(State(r): State<Receiver>, Json(body): Json<Value>) -> &'static str {
    let text = body["text"]
        .as_str()
        .unwrap_or("<no text field>")
        .to_string();
    r.texts.lock().unwrap().push(text);
    if r.hang {
        std::future::pending::<()>().await;
    }
    "ok"
}

fn config(url: &str) -> AlertConfig {
    AlertConfig {
        webhook: Some(Secret::new(url)),
        repeat: Duration::from_secs(3600),
        unhealthy_after: Duration::from_secs(900),
        retry_threshold: 5,
        leader_stale_after: Duration::from_secs(3600),
        every: Duration::from_secs(1),
        timeout: Duration::from_secs(5),
    }
}

const BREAKER: &str = "blast-radius breaker";

#[tokio::test]
async fn a_tripped_then_confirmed_breaker_sends_exactly_one_start_and_one_clear() {
    let db = migrated_db().await;
    let (hook, url) = Receiver::start(false).await;
    let env: BinEnv = inert_env(&db.url).with("ALERT_WEBHOOK_URL", &url);
    // Two replicas: both evaluate every second; the database claim lets only one of them send.
    let a = Daemon::spawn(&env, "alerts-a");
    let b = Daemon::spawn(&env, "alerts-b");
    let user = UserFixture::paid("pro").insert(&db.pool).await;
    hold_deletions(
        &db.pool,
        &[
            ("vyx-user-gone0001", Some(user)),
            ("vyx-user-orph0001", None),
        ],
    )
    .await;

    let start = hook.wait_for(BREAKER, 1).await;
    assert!(start[0].contains("vyx-user-gone0001") && start[0].contains(&user.to_string()));
    assert!(start[0].contains("vyx-user-orph0001"));
    // A later alert's start proves both loops went round again with the breaker still holding.
    sqlx::query("INSERT INTO vyx_fleet.orphans VALUES ('vyx-user-barrier1', now(), now())")
        .execute(&db.pool)
        .await
        .unwrap();
    hook.wait_for("vyx-user-barrier1", 1).await;

    let n = vyx_fleet::db::breaker::confirm_held(&db.pool, "ops")
        .await
        .unwrap();
    assert_eq!(n, 2);
    hook.wait_for("RESOLVED: the blast-radius breaker", 1).await;
    sqlx::query("DELETE FROM vyx_fleet.orphans")
        .execute(&db.pool)
        .await
        .unwrap();
    hook.wait_for("RESOLVED: no orphan", 1).await;

    let about_breaker = hook.about("breaker");
    assert_eq!(about_breaker.len(), 2, "{about_breaker:#?}");
    assert!(about_breaker[0].starts_with("[vyx-fleet] ALERT:"));
    assert!(about_breaker[1].starts_with("[vyx-fleet] RESOLVED:"));
    let mut secrets = env.secret_values();
    secrets.push(HOOK_SECRET.to_string());
    assert_no_secrets(&hook.texts().join("\n"), &secrets, "webhook messages");
    assert_no_secrets(&(a.stdout() + &b.stdout()), &secrets, "daemon logs");
}

#[tokio::test]
async fn two_replicas_evaluating_at_the_same_moment_send_each_message_once() {
    let db = migrated_db().await;
    let (hook, url) = Receiver::start(false).await;
    let cfg = config(&url);
    let client = reqwest::Client::new();
    let started = chrono::Utc::now();
    hold_deletions(&db.pool, &[("vyx-user-race0001", None)]).await;
    let (x, y) = tokio::join!(
        alerts::tick(&db.pool, &cfg, started, &client),
        alerts::tick(&db.pool, &cfg, started, &client)
    );
    assert_eq!(x.len() + y.len(), 1, "{x:?} {y:?}");
    vyx_fleet::db::breaker::confirm_held(&db.pool, "ops")
        .await
        .unwrap();
    let (x, y) = tokio::join!(
        alerts::tick(&db.pool, &cfg, started, &client),
        alerts::tick(&db.pool, &cfg, started, &client)
    );
    assert_eq!(x.len() + y.len(), 1, "{x:?} {y:?}");
    let sent = hook.wait_for(BREAKER, 2).await;
    assert_eq!(sent.len(), 2);
}

#[tokio::test]
async fn a_flapping_alert_is_not_announced_again_within_the_repeat_interval() {
    let db = migrated_db().await;
    let (hook, url) = Receiver::start(false).await;
    let cfg = config(&url);
    let client = reqwest::Client::new();
    let started = chrono::Utc::now();
    let orphan = |add: bool| {
        let pool = db.pool.clone();
        async move {
            let sql = if add {
                "INSERT INTO vyx_fleet.orphans VALUES ('vyx-user-flap0001', now(), now())"
            } else {
                "DELETE FROM vyx_fleet.orphans"
            };
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
    };
    let mut sent = Vec::new();
    for round in 0..3 {
        orphan(true).await;
        sent.extend(alerts::tick(&db.pool, &cfg, started, &client).await);
        orphan(false).await;
        sent.extend(alerts::tick(&db.pool, &cfg, started, &client).await);
        assert_eq!(sent.len(), 2, "after round {round}: {sent:#?}");
    }
    // The first start and its clear; every later flap inside the hour stays quiet.
    assert!(sent[0].contains("ALERT") && sent[1].contains("RESOLVED"));
    hook.wait_for("flap", 1).await;
    hook.wait_for("RESOLVED", 1).await;
}

#[tokio::test]
async fn the_standby_reports_a_leader_that_stopped_recording_passes() {
    let db = migrated_db().await;
    let (_hook, url) = Receiver::start(false).await;
    let mut cfg = config(&url);
    cfg.leader_stale_after = Duration::from_secs(60);
    let client = reqwest::Client::new();
    let set_last_pass = |ago: &'static str| {
        let pool = db.pool.clone();
        async move {
            sqlx::query(
                "INSERT INTO vyx_fleet.settings (key, value) VALUES ('last_pass_at',
                    to_char((now() - $1::interval) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'))
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            )
            .bind(ago)
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    set_last_pass("1 hour").await;
    let sent = alerts::tick(&db.pool, &cfg, chrono::Utc::now(), &client).await;
    assert!(
        sent.len() == 1 && sent[0].contains("no reconcile pass since"),
        "{sent:?}"
    );
    set_last_pass("1 second").await;
    let sent = alerts::tick(&db.pool, &cfg, chrono::Utc::now(), &client).await;
    assert!(
        sent.len() == 1 && sent[0].contains("RESOLVED: the leader records passes again"),
        "{sent:?}"
    );
}

#[tokio::test]
async fn a_webhook_that_never_answers_does_not_delay_passes() {
    let world = World::start(SimConfig::default()).await;
    let (hook, url) = Receiver::start(true).await;
    let env = world.env.clone().with("ALERT_WEBHOOK_URL", &url);
    let _d = Daemon::spawn(&env, "alerts-hang");
    hold_deletions(world.pool(), &[("vyx-user-hang0001", None)]).await;
    hook.wait_for(BREAKER, 1).await;
    // The delivery now hangs. Passes go on: the leader records each one (every second here), so
    // the record moves on twice after the hang began; a pass loop that waited on the webhook
    // would record nothing more. (A new user would prove nothing: the NOTIFY queue serves it
    // whatever the passes do.)
    let last_pass = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT value FROM vyx_fleet.settings WHERE key = 'last_pass_at'",
        )
        .fetch_optional(world.pool())
        .await
        .unwrap()
    };
    let mut seen = last_pass().await;
    for n in 1..=2 {
        let deadline = std::time::Instant::now() + secs(60);
        loop {
            let now = last_pass().await;
            if now.is_some() && now > seen {
                seen = now;
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "pass {n} after the hang was never recorded (last {seen:?})"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

/// The whole story through the real breaker, not a hand-written held set: every user of a fleet
/// downgrades, the breaker holds the deletions (all live apps would go), the webhook hears it once;
/// an operator confirms, every held app is deleted, and the webhook hears the clear once.
#[tokio::test]
async fn a_real_mass_downgrade_alerts_once_and_clears_once_after_the_confirmation() {
    let world = World::start(SimConfig::default()).await;
    let (hook, url) = Receiver::start(false).await;
    let env = world.env.clone().with("ALERT_WEBHOOK_URL", &url);
    let _d = Daemon::spawn(&env, "alerts-real-breaker");
    let mut users = Vec::new();
    for _ in 0..3 {
        users.push(UserFixture::paid("pro").insert(world.pool()).await);
    }
    for u in &users {
        world.wait_provisioned(*u, secs(90)).await;
    }

    for u in &users {
        support::set_subscription(world.pool(), *u, "free", "active").await;
    }
    let start = hook.wait_for(BREAKER, 1).await;
    assert!(start[0].starts_with("[vyx-fleet] ALERT:"), "{start:?}");
    let held = vyx_fleet::db::breaker::load_held(world.pool())
        .await
        .unwrap();
    assert_eq!(held.len(), users.len(), "the whole fleet is held: {held:?}");
    assert!(
        world.managed_apps().len() == users.len(),
        "nothing deleted before the confirmation"
    );

    let n = vyx_fleet::db::breaker::confirm_held(world.pool(), "ops")
        .await
        .unwrap();
    assert_eq!(n as usize, users.len());
    wait_until("every held app deleted", secs(90), || async {
        let left = world.managed_apps().len();
        if left == 0 {
            Ok(())
        } else {
            Err(format!("{left} apps left"))
        }
    })
    .await;
    hook.wait_for("RESOLVED: the blast-radius breaker", 1).await;

    let about_breaker = hook.about("breaker");
    assert_eq!(
        about_breaker.len(),
        2,
        "one start, one clear: {about_breaker:#?}"
    );
    assert!(about_breaker[1].starts_with("[vyx-fleet] RESOLVED:"));
}

#[tokio::test]
async fn failing_and_unhealthy_apps_are_named_in_their_alerts() {
    let db = migrated_db().await;
    let (_hook, url) = Receiver::start(false).await;
    let mut cfg = config(&url);
    cfg.unhealthy_after = Duration::ZERO;
    let client = reqwest::Client::new();
    let user = UserFixture::paid("pro").insert(&db.pool).await;
    console_support::RowFixture::active(user, "vyx-user-sick0001")
        .failing(7, "machine create: 503")
        .insert(&db.pool)
        .await;
    let sent = alerts::tick(&db.pool, &cfg, chrono::Utc::now(), &client).await;
    let failing = sent.iter().find(|m| m.contains("attempts in a row"));
    let unhealthy = sent.iter().find(|m| m.contains("unhealthy for more than"));
    for m in [failing, unhealthy] {
        let m = m.unwrap_or_else(|| panic!("{sent:#?}"));
        assert!(
            m.contains("vyx-user-sick0001") && m.contains(&user.to_string()),
            "{m}"
        );
        assert!(
            !m.contains("503"),
            "messages name apps, not error text: {m}"
        );
    }
    // Nothing new: the next evaluation stays quiet.
    assert!(
        alerts::tick(&db.pool, &cfg, chrono::Utc::now(), &client)
            .await
            .is_empty()
    );
}
