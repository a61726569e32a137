//! `vyx-fleet rollout resume`, and the rollout part of `status` (read-only from `vyx_fleet.rollout`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use std::fmt::Write;
use std::path::Path;

use crate::config;
use crate::db::{self, rollout::RolloutRecord};

use super::{EXIT_CONFIG, EXIT_FAILURE};

/// The current rollout as `status --json` shows it under `rollout` (`null`: never had one).
#[derive(Debug, Serialize, PartialEq)]
pub struct RolloutStatus {
    pub target: Target,
    pub started_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub progress: Progress,
    pub halted: bool,
    /// Why and since when, while halted.
    pub halt: Option<HaltStatus>,
    /// The last operator resume, if any.
    pub resumed: Option<Resumed>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Target {
    /// `spec_digest` of the machine spec (image, guest, region, env, layout, secrets).
    pub digest: String,
    pub image: String,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Progress {
    pub waves_done: i32,
    /// Apps that moved to the target in this rollout.
    pub moved: i32,
    /// Apps that failed on the target (rolled back or not yet).
    pub failed: i32,
    pub rolled_back: i32,
    /// Live apps whose machine runs the target now (moved, or provisioned on it).
    pub on_target: i64,
    pub live: i64,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct HaltStatus {
    /// `canary_failed` or `too_many_failures`.
    pub kind: Option<String>,
    pub reason: String,
    pub at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Resumed {
    pub by: Option<String>,
    pub at: Option<DateTime<Utc>>,
}

impl RolloutStatus {
    fn from_record(r: RolloutRecord, on_target: i64, live: i64) -> Self {
        RolloutStatus {
            target: Target {
                digest: r.target_digest,
                image: r.target_image,
            },
            started_at: r.started_at,
            completed_at: r.completed_at,
            progress: Progress {
                waves_done: r.waves_done,
                moved: r.moved,
                failed: r.failed,
                rolled_back: r.rolled_back,
                on_target,
                live,
            },
            halted: r.halted,
            halt: r.halted.then(|| HaltStatus {
                kind: r.halt_kind,
                reason: r.halt_reason.unwrap_or_default(),
                at: r.halted_at,
            }),
            resumed: r.resumed_at.map(|at| Resumed {
                by: r.resumed_by,
                at: Some(at),
            }),
        }
    }
}

/// The current rollout, with how many live apps run its target.
pub async fn load(pool: &sqlx::PgPool) -> Result<Option<RolloutStatus>, sqlx::Error> {
    let Some(r) = db::rollout::load_current(pool).await? else {
        return Ok(None);
    };
    let (on_target, live): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE spec_digest = $1), count(*) \
           FROM public.user_fly_apps WHERE deleted_at IS NULL AND status <> 'deleted'",
    )
    .bind(&r.target_digest)
    .fetch_one(pool)
    .await?;
    Ok(Some(RolloutStatus::from_record(r, on_target, live)))
}

/// The rollout lines under the status table.
pub fn render(rollout: Option<&RolloutStatus>) -> String {
    let mut out = String::new();
    let Some(r) = rollout else {
        let _ = writeln!(out, "rollout: none yet");
        return out;
    };
    let p = &r.progress;
    let digest = r.target.digest.get(..12).unwrap_or(&r.target.digest);
    let state = if r.halted {
        "HALTED"
    } else if r.completed_at.is_some() {
        "complete"
    } else {
        "in progress"
    };
    let _ = writeln!(
        out,
        "rollout: {} (spec {digest}) {state}: {}/{} live apps on target, {} moved in {} wave(s), \
         {} failed, {} rolled back; started {}",
        r.target.image,
        p.on_target,
        p.live,
        p.moved,
        p.waves_done,
        p.failed,
        p.rolled_back,
        r.started_at.format("%Y-%m-%d %H:%M:%SZ")
    );
    if let Some(h) = &r.halt {
        let since = h.at.map_or(String::new(), |t| {
            format!(" since {}", t.format("%Y-%m-%d %H:%M:%SZ"))
        });
        let _ = writeln!(
            out,
            "  ! ALERT rollout halted{since}: {}; after checking, run `vyx-fleet rollout resume` \
             (or set a new USER_APP_IMAGE)",
            h.reason
        );
    }
    out
}

/// `vyx-fleet rollout resume`: clears the current rollout's halt. Exit 0 when it resumed one, 1 when
/// nothing was halted or the database failed, 2 on a bad `DATABASE_URL`.
pub async fn resume(cfg: Option<&Path>) -> u8 {
    let url = match config::load_database_url(cfg) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("{e}");
            return EXIT_CONFIG;
        }
    };
    let pool = match db::connect(url.expose(), 2).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cannot connect to the database: {e}");
            return EXIT_FAILURE;
        }
    };
    // Who resumed, for the table's `resumed_by`: the operator's login where the shell says it.
    let by = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .map_or_else(|_| "cli".to_string(), |u| format!("cli:{u}"));
    match db::rollout::resume(&pool, &by).await {
        Ok(Some(r)) => {
            println!(
                "rollout of {} resumed: the next pass continues with a new canary wave; \
                 {} earlier failure(s) forgiven",
                r.target_image, r.failures_forgiven
            );
            0
        }
        Ok(None) => {
            eprintln!("no halted rollout to resume");
            EXIT_FAILURE
        }
        Err(e) => {
            eprintln!("cannot resume the rollout: {e}");
            EXIT_FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> RolloutRecord {
        let t = DateTime::parse_from_rfc3339("2026-11-30T08:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        RolloutRecord {
            id: 3,
            target_digest: "0123456789abcdef0123".into(),
            target_image: "registry.fly.io/vyx-app:v43".into(),
            started_at: t,
            waves_done: 1,
            moved: 1,
            failed: 1,
            rolled_back: 1,
            failures_forgiven: 0,
            halted: true,
            halt_kind: Some("canary_failed".into()),
            halt_reason: Some("the canary failed on the new spec".into()),
            halted_at: Some(t),
            resumed_by: None,
            resumed_at: None,
            completed_at: None,
            updated_at: t,
            target_spec: None,
            base_spec: None,
        }
    }

    #[test]
    fn a_halted_rollout_shows_its_reason_and_how_to_resume() {
        let s = RolloutStatus::from_record(record(), 0, 12);
        let text = render(Some(&s));
        assert!(text.contains("HALTED"), "{text}");
        assert!(text.contains("ALERT rollout halted"), "{text}");
        assert!(text.contains("the canary failed"), "{text}");
        assert!(text.contains("vyx-fleet rollout resume"), "{text}");
        assert!(text.contains("0/12 live apps on target"), "{text}");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["halted"], true);
        assert_eq!(json["halt"]["kind"], "canary_failed");
        assert_eq!(json["target"]["image"], "registry.fly.io/vyx-app:v43");
        assert_eq!(json["progress"]["live"], 12);
    }

    #[test]
    fn a_fleet_that_never_rolled_out_says_so() {
        assert_eq!(render(None), "rollout: none yet\n");
        let mut r = record();
        r.halted = false;
        r.halt_reason = None;
        r.completed_at = Some(r.started_at);
        let s = RolloutStatus::from_record(r, 12, 12);
        assert!(s.halt.is_none());
        assert!(render(Some(&s)).contains("complete"));
    }
}
