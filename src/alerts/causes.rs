//! The failures that stop every pass, named by cause: a Fly token Fly refuses, passes that keep
//! failing for another reason, a database a replica cannot reach. "No pass since …" alone sends an
//! operator to the wrong place (the leader looks alive; `/healthz` says so) while a new paying user
//! silently gets nothing.

use sqlx::PgPool;
use tracing::warn;

use crate::db::console;
use crate::fly::FlyError;
use crate::reconcile::pass::PassError;

/// Why a pass failed: a fixed word stored in `vyx_fleet.settings` (never an error's text, which may
/// carry a URL or a body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassFailure {
    /// Fly answered 401 or 403 to the list calls: the token is revoked, expired or of another org.
    FlyTokenRefused,
    /// Fly's API failed otherwise (5xx, 429, timeouts).
    FlyUnavailable,
    /// The leader could not read or write the database.
    Database,
    /// The planner panicked.
    Planner,
}

impl PassFailure {
    pub fn of(e: &PassError) -> PassFailure {
        match e {
            PassError::Observe(FlyError::Unauthorized { .. } | FlyError::Forbidden { .. }) => {
                PassFailure::FlyTokenRefused
            }
            PassError::Observe(_) => PassFailure::FlyUnavailable,
            PassError::Db(_) => PassFailure::Database,
            PassError::Planner(_) => PassFailure::Planner,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PassFailure::FlyTokenRefused => "fly_token_refused",
            PassFailure::FlyUnavailable => "fly_unavailable",
            PassFailure::Database => "database",
            PassFailure::Planner => "planner",
        }
    }

    pub fn parse(s: &str) -> Option<PassFailure> {
        [
            PassFailure::FlyTokenRefused,
            PassFailure::FlyUnavailable,
            PassFailure::Database,
            PassFailure::Planner,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }

    /// What happened and what to do, for a person.
    pub fn advice(self) -> &'static str {
        match self {
            PassFailure::FlyTokenRefused => {
                "Fly refuses FLY_API_TOKEN (401/403 on the list calls): every pass is skipped and new \
                 paying users get no app. Create an org token (`fly tokens create org -o <FLY_ORG_SLUG>`), \
                 then set it: `fly secrets set FLY_API_TOKEN=<token> -a vyx-fleet`"
            }
            PassFailure::FlyUnavailable => {
                "Fly's Machines API keeps failing (5xx, rate limits or timeouts); check \
                 https://status.flyio.net and the daemon's log"
            }
            PassFailure::Database => {
                "the leader cannot use the database; check the database's status, DATABASE_URL and \
                 the connection limit"
            }
            PassFailure::Planner => "the planner fails (a bug); see the daemon's log for the panic",
        }
    }
}

/// After a failed pass: records its cause for the alerts. Spawned, so the pass loop never waits on it.
pub fn record_failure(pool: &PgPool, term: i64, e: &PassError) {
    let cause = PassFailure::of(e);
    let pool = pool.clone();
    tokio::spawn(async move {
        if let Err(e) = console::record_pass_failure(&pool, term, cause.as_str()).await {
            warn!(error = %e, "could not record the pass failure for the alerts");
        }
    });
}

/// A replica's own view of the database, for the alert the database itself cannot carry: when it is
/// unreachable, no replica can claim an alert row, so each replica says so itself (once when it
/// starts, once when it ends).
#[derive(Debug, Default)]
pub(crate) struct DbWatch {
    failed_ticks: u32,
    since: Option<chrono::DateTime<chrono::Utc>>,
    announced: bool,
}

/// Evaluations in a row that must fail before the database counts as unreachable (one can be a
/// blip).
const UNREACHABLE_AFTER_TICKS: u32 = 3;

impl DbWatch {
    /// The message to send after a tick whose database reads failed (`failed`) or worked.
    pub fn after_tick(&mut self, failed: bool) -> Option<String> {
        if failed {
            self.failed_ticks += 1;
            let since = *self.since.get_or_insert_with(chrono::Utc::now);
            if self.failed_ticks >= UNREACHABLE_AFTER_TICKS && !self.announced {
                self.announced = true;
                return Some(format!(
                    "[vyx-fleet] ALERT: the database is unreachable from a vyx-fleet replica since {}: \
                     no pass and no other alert can run. Check the database's status and DATABASE_URL",
                    since.format("%Y-%m-%d %H:%M:%S UTC")
                ));
            }
            return None;
        }
        let was = std::mem::take(self);
        was.announced
            .then(|| "[vyx-fleet] RESOLVED: the database is reachable again".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_alert_starts_after_three_failed_ticks_and_clears_once() {
        let mut w = DbWatch::default();
        assert_eq!(w.after_tick(true), None);
        assert_eq!(w.after_tick(true), None);
        assert!(
            w.after_tick(true)
                .unwrap()
                .contains("database is unreachable")
        );
        assert_eq!(w.after_tick(true), None, "announced once");
        assert!(w.after_tick(false).unwrap().contains("RESOLVED"));
        assert_eq!(w.after_tick(false), None);
        assert_eq!(
            w.after_tick(true),
            None,
            "a blip after recovery is not an alert"
        );
    }

    #[test]
    fn causes_round_trip_through_their_stored_words() {
        for c in [
            PassFailure::FlyTokenRefused,
            PassFailure::FlyUnavailable,
            PassFailure::Database,
            PassFailure::Planner,
        ] {
            assert_eq!(PassFailure::parse(c.as_str()), Some(c));
        }
        assert_eq!(PassFailure::parse("something else"), None);
    }
}
