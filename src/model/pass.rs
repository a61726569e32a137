//! Why a reconcile pass failed, as a fixed word: the controller classifies its failures into it,
//! the database keeps the word, the alerts name the cause and the fix. "No pass since …" alone
//! sends an operator to the wrong place (the leader looks alive; `/healthz` says so) while a new
//! paying user silently gets nothing.

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

#[cfg(test)]
mod tests {
    use super::*;

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
