//! Alerts to a Slack/Discord-style incoming webhook (`ALERT_WEBHOOK_URL`, body `{"text": ...}`).
//!
//! # Expected flow
//! 1. Every replica runs [`run`], its own task beside the controller: every `every` it computes each
//!    [`AlertKind`]'s condition from the database (the standby too: it is the one that notices a
//!    silent leader).
//! 2. Each change is claimed in `vyx_fleet.alerts` ([`crate::db::alerts`]); the replica whose claim
//!    succeeds sends the message, in a task of its own with a timeout.
//!
//! # Guarantees
//! - One message when an alert starts and one when it clears, never more than one per kind per
//!   `ALERT_REPEAT_INTERVAL` otherwise (see the claim rules in [`crate::db::alerts`]).
//! - Nothing here runs on a pass's path: a slow or failing webhook delays only its own task.
//! - Messages carry app names, user ids and image references, never a setting's value; the webhook
//!   URL itself (a credential) is never logged.
//!
//! # Caveats
//! - A message whose delivery fails after its retries is lost (logged); the claim is not undone, so
//!   the other replica does not send it either.

mod db_watch;

use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::Settings;
use crate::db::alerts::{self as store, AppRef, Claim};
use crate::db::{breaker, console};
use crate::model::pass::PassFailure;
use crate::secret::Secret;

/// What an alert is about. Each kind is one row of `vyx_fleet.alerts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertKind {
    /// The blast-radius breaker holds deletions nobody has confirmed.
    BreakerHolding,
    /// The leader's last pass found the rollout of the configured image halted.
    RolloutHalted,
    /// Apps unhealthy for longer than `ALERT_UNHEALTHY_AFTER`.
    AppsUnhealthy,
    /// Users whose converge (or deprovision) failed `ALERT_RETRY_THRESHOLD` times in a row.
    ConvergeFailing,
    /// Apps under the managed prefix that no row owns.
    OrphansFound,
    /// No pass recorded for longer than the leader's staleness window, and no failure either.
    LeaderSilent,
    /// Fly refuses the API token: every pass is skipped.
    FlyTokenRefused,
    /// No successful pass for longer than the leader's staleness window, while passes are attempted
    /// and fail (named by cause).
    PassesFailing,
}

impl AlertKind {
    pub const ALL: [AlertKind; 8] = [
        AlertKind::BreakerHolding,
        AlertKind::RolloutHalted,
        AlertKind::AppsUnhealthy,
        AlertKind::ConvergeFailing,
        AlertKind::OrphansFound,
        AlertKind::LeaderSilent,
        AlertKind::FlyTokenRefused,
        AlertKind::PassesFailing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::BreakerHolding => "breaker_holding",
            AlertKind::RolloutHalted => "rollout_halted",
            AlertKind::AppsUnhealthy => "apps_unhealthy",
            AlertKind::ConvergeFailing => "converge_failing",
            AlertKind::OrphansFound => "orphans_found",
            AlertKind::LeaderSilent => "leader_silent",
            AlertKind::FlyTokenRefused => "fly_token_refused",
            AlertKind::PassesFailing => "passes_failing",
        }
    }

    fn cleared_text(self) -> &'static str {
        match self {
            AlertKind::BreakerHolding => "the blast-radius breaker holds no unconfirmed deletions",
            AlertKind::RolloutHalted => "the rollout is no longer halted",
            AlertKind::AppsUnhealthy => "no app is unhealthy past the threshold",
            AlertKind::ConvergeFailing => "no user's converge keeps failing",
            AlertKind::OrphansFound => "no orphan app is left",
            AlertKind::LeaderSilent => "the leader records passes again",
            AlertKind::FlyTokenRefused => "Fly accepts the API token again",
            AlertKind::PassesFailing => "reconcile passes succeed again",
        }
    }
}

/// A condition that holds: `subject` identifies what it concerns (a change re-announces), `text`
/// says it to a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firing {
    pub subject: String,
    pub text: String,
}

#[derive(Debug, Clone)]
pub struct AlertConfig {
    pub webhook: Option<Secret>,
    pub repeat: Duration,
    pub unhealthy_after: Duration,
    pub retry_threshold: i32,
    /// A pass older than this means the leader is silent.
    pub leader_stale_after: Duration,
    /// How often conditions are evaluated.
    pub every: Duration,
    /// Per delivery attempt.
    pub timeout: Duration,
}

impl AlertConfig {
    pub fn from_settings(s: &Settings) -> AlertConfig {
        AlertConfig {
            webhook: s.alert_webhook_url.clone(),
            repeat: s.alert_repeat_interval,
            unhealthy_after: s.alert_unhealthy_after,
            retry_threshold: s.alert_retry_threshold,
            leader_stale_after: s.heartbeat_staleness(),
            every: s
                .reconcile_interval
                .clamp(Duration::from_secs(1), Duration::from_secs(30)),
            timeout: Duration::from_secs(10),
        }
    }
}

/// At most this many apps are named in one message.
const NAMED_MAX: usize = 10;

fn name_apps(apps: &[AppRef]) -> String {
    let mut parts: Vec<String> = apps
        .iter()
        .take(NAMED_MAX)
        .map(|a| format!("{} (user {})", a.app_name, a.user_id))
        .collect();
    if apps.len() > NAMED_MAX {
        parts.push(format!("and {} more", apps.len() - NAMED_MAX));
    }
    parts.join(", ")
}

/// What a firing alert concerns, bounded whatever the fleet size: the count and a digest of the
/// sorted names (a change of names re-announces; 10,000 names do not become a 10,000-name row).
fn subject_of(names: impl Iterator<Item = String>) -> String {
    use sha2::{Digest, Sha256};
    let mut names: Vec<String> = names.collect();
    names.sort_unstable();
    let mut h = Sha256::new();
    for n in &names {
        h.update(n.as_bytes());
        h.update(b"\n");
    }
    let digest: String = h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{} {digest}", names.len())
}

/// `kind`'s condition now; `started` is when this process began (a fleet with no pass recorded yet is
/// judged from then).
async fn evaluate(
    pool: &PgPool,
    cfg: &AlertConfig,
    kind: AlertKind,
    started: chrono::DateTime<chrono::Utc>,
) -> Result<Option<Firing>, sqlx::Error> {
    let apps_firing = |apps: Vec<AppRef>, what: &str| {
        (!apps.is_empty()).then(|| Firing {
            subject: subject_of(apps.iter().map(|a| a.app_name.clone())),
            text: format!("{} {what}: {}", apps.len(), name_apps(&apps)),
        })
    };
    Ok(match kind {
        AlertKind::BreakerHolding => {
            let held: Vec<_> = breaker::load_held(pool)
                .await?
                .into_iter()
                .filter(|h| h.confirmed_at.is_none())
                .collect();
            let refs: Vec<String> = held
                .iter()
                .take(NAMED_MAX)
                .map(|h| match h.user_id {
                    Some(u) => format!("{} (user {u}, {})", h.app_name, h.kind),
                    None => format!("{} ({})", h.app_name, h.kind),
                })
                .collect();
            (!held.is_empty()).then(|| Firing {
                subject: subject_of(held.iter().map(|h| h.app_name.clone())),
                text: format!(
                    "the blast-radius breaker holds {} deletion(s): {}{}. Check them, then confirm on \
                     the dashboard or run `vyx-fleet confirm-deletions`",
                    held.len(),
                    refs.join(", "),
                    if held.len() > NAMED_MAX { ", ..." } else { "" }
                ),
            })
        }
        // The halt as the rollout recorded it (kind and sentence), not a guess at its cause.
        AlertKind::RolloutHalted => crate::db::rollout::load_current(pool)
            .await?
            .filter(|r| r.halted)
            .map(|r| Firing {
                subject: format!(
                    "{} {}",
                    r.target_image,
                    r.halted_at.map(|t| t.timestamp()).unwrap_or_default()
                ),
                text: format!(
                    "the rollout of {} is halted{}: {}. After checking, resume it on the dashboard                      or run `vyx-fleet rollout resume`",
                    r.target_image,
                    r.halted_at
                        .map(|t| format!(" since {}", t.format("%Y-%m-%d %H:%M:%S UTC")))
                        .unwrap_or_default(),
                    r.halt_reason.as_deref().unwrap_or("no reason recorded")
                ),
            }),
        AlertKind::AppsUnhealthy => apps_firing(
            store::unhealthy_apps(pool, cfg.unhealthy_after).await?,
            &format!(
                "app(s) unhealthy for more than {}s",
                cfg.unhealthy_after.as_secs()
            ),
        ),
        AlertKind::ConvergeFailing => apps_firing(
            store::failing_apps(pool, cfg.retry_threshold).await?,
            &format!(
                "app(s) failed {} or more attempts in a row",
                cfg.retry_threshold
            ),
        ),
        AlertKind::OrphansFound => {
            let names = store::orphans(pool).await?;
            (!names.is_empty()).then(|| Firing {
                subject: subject_of(names.iter().cloned()),
                text: format!(
                    "{} orphan app(s) under the managed prefix (deleted after ORPHAN_GRACE): {}",
                    names.len(),
                    names
                        .iter()
                        .take(NAMED_MAX)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
        }
        AlertKind::LeaderSilent => {
            let now = store::db_now(pool).await?;
            let last = console::pass_record(pool).await?.0;
            let since = last.unwrap_or(started);
            let stale =
                chrono::Duration::from_std(cfg.leader_stale_after).unwrap_or(chrono::Duration::MAX);
            // A leader that records failures is not silent: its failures have alerts of their own.
            let failing = recent_failure(pool, now, stale).await?.is_some();
            (now - since > stale && !failing).then(|| Firing {
                subject: String::new(),
                text: match last {
                    Some(t) => format!(
                        "no reconcile pass since {} (leader silent or stuck)",
                        t.to_rfc3339()
                    ),
                    None => "no reconcile pass recorded since this replica started".to_string(),
                },
            })
        }
        AlertKind::FlyTokenRefused => {
            let now = store::db_now(pool).await?;
            let stale =
                chrono::Duration::from_std(cfg.leader_stale_after).unwrap_or(chrono::Duration::MAX);
            recent_failure(pool, now, stale)
                .await?
                .filter(|(cause, _)| *cause == PassFailure::FlyTokenRefused)
                .map(|(cause, at)| Firing {
                    subject: String::new(),
                    text: format!(
                        "{} (last refused at {})",
                        cause.advice(),
                        at.format("%Y-%m-%d %H:%M:%S UTC")
                    ),
                })
        }
        AlertKind::PassesFailing => {
            let now = store::db_now(pool).await?;
            let last = console::pass_record(pool).await?.0;
            let stale =
                chrono::Duration::from_std(cfg.leader_stale_after).unwrap_or(chrono::Duration::MAX);
            let since = last.unwrap_or(started);
            recent_failure(pool, now, stale)
                .await?
                .filter(|(cause, _)| *cause != PassFailure::FlyTokenRefused)
                .filter(|_| now - since > stale)
                .map(|(cause, _)| Firing {
                    subject: cause.as_str().to_string(),
                    text: format!(
                        "no successful reconcile pass since {}: {}",
                        last.map_or("this replica started".to_string(), |t| t
                            .format("%Y-%m-%d %H:%M:%S UTC")
                            .to_string()),
                        cause.advice()
                    ),
                })
        }
    })
}

/// The last pass failure's cause, if it was recorded within `window` and no pass has worked since.
async fn recent_failure(
    pool: &PgPool,
    now: chrono::DateTime<chrono::Utc>,
    window: chrono::Duration,
) -> Result<Option<(PassFailure, chrono::DateTime<chrono::Utc>)>, sqlx::Error> {
    Ok(console::pass_failure(pool)
        .await?
        .filter(|(_, at)| now - *at <= window)
        .and_then(|(c, at)| PassFailure::parse(&c).map(|c| (c, at))))
}

/// Evaluates every kind once and sends what the claims allow. Returns the messages sent (for tests
/// and the log).
pub async fn tick(
    pool: &PgPool,
    cfg: &AlertConfig,
    started: chrono::DateTime<chrono::Utc>,
    client: &reqwest::Client,
) -> Vec<String> {
    tick_checked(pool, cfg, started, client).await.0
}

/// [`tick`], and whether every evaluation failed (the database did not answer).
async fn tick_checked(
    pool: &PgPool,
    cfg: &AlertConfig,
    started: chrono::DateTime<chrono::Utc>,
    client: &reqwest::Client,
) -> (Vec<String>, bool) {
    let mut sent = Vec::new();
    let mut failures = 0;
    for kind in AlertKind::ALL {
        let claim = match evaluate(pool, cfg, kind, started).await {
            Ok(Some(f)) => store::claim_firing(pool, kind.as_str(), &f.subject, cfg.repeat)
                .await
                .map(|c| (c, Some(f))),
            Ok(None) => store::claim_resolved(pool, kind.as_str())
                .await
                .map(|c| (c, None)),
            Err(e) => Err(e),
        };
        let text = match claim {
            Ok((Claim::Start, Some(f))) => format!("[vyx-fleet] ALERT: {}", f.text),
            Ok((Claim::Update, Some(f))) => format!("[vyx-fleet] ALERT (still firing): {}", f.text),
            Ok((Claim::Clear, _)) => format!("[vyx-fleet] RESOLVED: {}", kind.cleared_text()),
            Ok(_) => continue,
            Err(e) => {
                warn!(kind = kind.as_str(), error = %e, "alerts: evaluation failed");
                failures += 1;
                continue;
            }
        };
        send(cfg, client, kind.as_str(), &text);
        sent.push(text);
    }
    (sent, failures == AlertKind::ALL.len())
}

fn send(cfg: &AlertConfig, client: &reqwest::Client, kind: &str, text: &str) {
    info!(kind, message = %text, "alert");
    if let Some(url) = &cfg.webhook {
        tokio::spawn(deliver(
            client.clone(),
            url.clone(),
            text.to_string(),
            cfg.timeout,
        ));
    }
}

/// POSTs `{"text": ...}`, three attempts; only the outcome is logged (never the URL).
async fn deliver(client: reqwest::Client, url: Secret, text: String, timeout: Duration) {
    let body = json!({ "text": text });
    for attempt in 1..=3u32 {
        let res = client
            .post(url.expose())
            .json(&body)
            .timeout(timeout)
            .send()
            .await;
        match res {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => warn!(
                attempt,
                status = r.status().as_u16(),
                "alerts: webhook refused the message"
            ),
            Err(e) => warn!(
                attempt,
                timeout = e.is_timeout(),
                "alerts: webhook unreachable"
            ),
        }
        tokio::time::sleep(Duration::from_secs(2u64.pow(attempt))).await;
    }
    warn!("alerts: message dropped after 3 attempts");
}

/// The alert loop of one replica, until `shutdown` flips to true.
pub async fn run(pool: PgPool, cfg: AlertConfig, mut shutdown: watch::Receiver<bool>) {
    let started = chrono::Utc::now();
    // No redirects: a webhook answering with one must not send the text somewhere else.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default();
    let mut db_watch = db_watch::DbWatch::default();
    let mut tick_every = tokio::time::interval(cfg.every);
    tick_every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick_every.tick() => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
        let (_, db_failed) = tick_checked(&pool, &cfg, started, &client).await;
        if let Some(text) = db_watch.after_tick(db_failed) {
            send(&cfg, &client, "database_unreachable", &text);
        }
    }
}
