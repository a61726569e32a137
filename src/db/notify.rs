//! The `vyx_fleet` NOTIFY channel: who publishes on it, what a payload means, and the leader's
//! listener.
//!
//! Publishers: the migrations' triggers (a subscription or override changed: the user id), the
//! console's "retry now" (the user id), and a confirmation of held deletions
//! ([`DELETIONS_CONFIRMED`]). Each sends inside the transaction that made the change, so the hint
//! is delivered on commit or not at all.
//!
//! # Caveats
//! - Only a hint: a NOTIFY sent while no leader listens is lost, and the interval sweep finds the
//!   change instead.

use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use tracing::warn;
use uuid::Uuid;

/// NOTIFY channel the migrations' triggers publish on (payload: the user id).
pub(crate) const CHANNEL: &str = "vyx_fleet";

/// `NOTIFY vyx_fleet` payload of a confirmation of held deletions (any other payload is a user id).
pub(crate) const DELETIONS_CONFIRMED: &str = "deletions_confirmed";

/// How often a leader without a working LISTEN tries to set it up again.
const LISTEN_RETRY: Duration = Duration::from_secs(30);

/// What one payload asks of the leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notification {
    /// This user's facts or row changed: reconcile them alone.
    User(Uuid),
    /// An operator confirmed held deletions: the fleet-level work is due now.
    DeletionsConfirmed,
    /// Neither: a payload this version does not know (the next pass covers whatever it meant).
    Unknown(String),
}

impl Notification {
    pub(crate) fn parse(payload: &str) -> Notification {
        let p = payload.trim();
        if p == DELETIONS_CONFIRMED {
            return Notification::DeletionsConfirmed;
        }
        match p.parse::<Uuid>() {
            Ok(user) => Notification::User(user),
            Err(_) => Notification::Unknown(payload.to_string()),
        }
    }
}

/// Sends `payload` on the channel as part of the caller's transaction (delivered on commit).
pub(crate) async fn send(conn: &mut PgConnection, payload: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(payload)
        .execute(conn)
        .await?;
    Ok(())
}

/// A connection listening on the channel; `None` (logged) when LISTEN cannot be set up.
pub(crate) async fn listen(pool: &PgPool) -> Option<PgListener> {
    let mut l = match PgListener::connect_with(pool).await {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, "LISTEN unavailable; relying on the interval");
            return None;
        }
    };
    match l.listen(CHANNEL).await {
        Ok(()) => Some(l),
        Err(e) => {
            warn!(error = %e, "LISTEN failed; relying on the interval");
            None
        }
    }
}

/// Next NOTIFY; `None` if the listener is broken (or, without one, after a while), so the caller
/// can try to LISTEN again.
pub(crate) async fn next(listener: &mut Option<PgListener>) -> Option<Notification> {
    match listener {
        Some(l) => match l.recv().await {
            Ok(n) => Some(Notification::parse(n.payload())),
            Err(e) => {
                warn!(error = %e, "LISTEN connection lost");
                *listener = None;
                None
            }
        },
        None => {
            tokio::time::sleep(LISTEN_RETRY).await;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_is_a_user_a_confirmation_or_unknown() {
        let user = Uuid::from_u128(7);
        assert_eq!(
            Notification::parse(&format!(" {user}\n")),
            Notification::User(user)
        );
        assert_eq!(
            Notification::parse("deletions_confirmed"),
            Notification::DeletionsConfirmed
        );
        assert_eq!(
            Notification::parse("hello"),
            Notification::Unknown("hello".into())
        );
    }
}
