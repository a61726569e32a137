//! [`FlyError`]: every way a Fly call can fail, classified by HTTP status and the body's `status`
//! field only — never by message text (REFERENCE §1).
//!
//! Display is one line: the route, the class and Fly's `message`/`error` text (truncated, control
//! characters removed). It never contains the token, request headers or the request body; the
//! client additionally scrubs any secret value out of Fly's text before it gets here.

use std::fmt;
use std::time::Duration;

use super::route::Route;

/// Which call failed: the route class and Fly's `fly-request-id` (give it to Fly support).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallInfo {
    pub route: Route,
    pub request_id: Option<String>,
}

impl CallInfo {
    pub fn new(route: Route) -> Self {
        CallInfo {
            route,
            request_id: None,
        }
    }
}

impl fmt::Display for CallInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fly {}", self.route)
    }
}

/// A failed Fly Machines API call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FlyError {
    /// 401: the token is missing, malformed, expired or revoked. Retrying will not help; alert an
    /// operator. (Right after an app create Fly may briefly answer 401 for that app, REFERENCE §7:
    /// callers polling a fresh app may treat it like 404 for a bounded time.)
    #[error("{call}: unauthorized (401): {message}")]
    Unauthorized { call: CallInfo, message: String },

    /// 403: the token cannot see this resource. On `GET /v1/apps/{name}` this means the name is held
    /// by an app in another org: pick another name. Elsewhere: a token-scope problem; alert.
    #[error("{call}: forbidden (403): {message}")]
    Forbidden { call: CallInfo, message: String },

    /// 404: app or machine does not exist (or is not yet propagated / already deleted). Deletes
    /// treat it as done; reads after a create may retry for a bounded time (REFERENCE §7).
    #[error("{call}: not found (404): {message}")]
    NotFound { call: CallInfo, message: String },

    /// 408 from Fly, or a `wait_machine` whose overall timeout expired. On a write the outcome is
    /// unknown (the machine may exist): re-observe before retrying.
    #[error("{call}: timed out (408): {message}")]
    Timeout { call: CallInfo, message: String },

    /// 409: `current_version` mismatch on update, or a lease held by someone else. Nothing was
    /// applied: re-read the machine and plan again.
    #[error("{call}: conflict (409): {message}")]
    Conflict { call: CallInfo, message: String },

    /// 412: a metadata/version precondition failed. Nothing was applied: re-read and retry.
    #[error("{call}: precondition failed (412): {message}")]
    PreconditionFailed { call: CallInfo, message: String },

    /// The app name is in use (422 or 409 with `status: name_taken`, or any 409 on app create,
    /// REFERENCE §2.2). It may be ours: `get_app` tells (200 ours, 403 someone else's).
    #[error("{call}: name taken ({status}): {message}")]
    NameTaken {
        call: CallInfo,
        status: u16,
        message: String,
    },

    /// `status: insufficient_capacity` / `volume_placement_capacity`: the region has no room now.
    /// Retry later with backoff, or choose another region.
    #[error("{call}: insufficient capacity ({status}): {message}")]
    InsufficientCapacity {
        call: CallInfo,
        status: u16,
        message: String,
    },

    /// 400, a 422 that is not `name_taken`, or another 4xx: Fly rejected the request (bad config,
    /// account gate such as "add a payment method"). Retrying the same request will not help; record
    /// the message and alert.
    #[error("{call}: rejected ({status}): {message}")]
    Invalid {
        call: CallInfo,
        status: u16,
        message: String,
    },

    /// 429: Fly did not process the request. Wait `retry_after` (if Fly sent one) or back off, then
    /// retry; the client already did so up to its retry budget.
    #[error("{call}: rate limited (429){}: {message}", fmt_retry_after(*.retry_after))]
    RateLimited {
        call: CallInfo,
        retry_after: Option<Duration>,
        message: String,
    },

    /// 5xx. On a GET the client already retried 502/503; on a write the outcome is unknown:
    /// re-observe before retrying.
    #[error("{call}: server error ({status}): {message}")]
    Server {
        call: CallInfo,
        status: u16,
        message: String,
    },

    /// The connection failed, was reset or closed, or the HTTP request timed out client-side. On a
    /// write the request may or may not have been applied: re-observe before retrying.
    #[error("{call}: transport error: {detail}")]
    Transport { call: CallInfo, detail: String },

    /// A 2xx answer whose body did not parse (truncated JSON, wrong types, missing fields). On a
    /// write the change probably happened: re-observe.
    #[error("{call}: undecodable {status} response: {detail}")]
    Decode {
        call: CallInfo,
        status: u16,
        detail: String,
    },

    /// The response body exceeded the client's cap; it was not read further.
    #[error("{call}: response body larger than {limit} bytes (status {status})")]
    BodyTooLarge {
        call: CallInfo,
        status: u16,
        limit: usize,
    },

    /// A 2xx list answer that Fly marked incomplete (`error_regions` on the org-wide machine
    /// list). The missing machines may exist: do not treat absence as deletion; retry later.
    #[error("{call}: incomplete answer, regions failed: {}", .error_regions.join(","))]
    Incomplete {
        call: CallInfo,
        error_regions: Vec<String>,
    },

    /// The write was not sent: this replica's [`super::WriteGate`] is closed (its lease is no
    /// longer known to be valid). Nothing happened on Fly; stop acting, the new leader resumes.
    #[error("{call}: not sent: this replica no longer holds a valid leader lease")]
    Deposed { call: CallInfo },

    /// A status the API does not use (1xx/3xx; redirects are not followed).
    #[error("{call}: unexpected status {status}")]
    UnexpectedStatus { call: CallInfo, status: u16 },

    /// The client cannot be built or the request cannot be formed (bad base URL, unusable token,
    /// unserialisable body). A programming or configuration error: do not retry.
    #[error("fly client configuration: {message}")]
    Config { message: String },
}

fn fmt_retry_after(d: Option<Duration>) -> String {
    match d {
        Some(d) => format!(", retry after {}s", d.as_secs_f64().ceil() as u64),
        None => String::new(),
    }
}

impl FlyError {
    pub(crate) fn config(message: impl Into<String>) -> Self {
        FlyError::Config {
            message: message.into(),
        }
    }

    /// The call this error belongs to (None for `Config` errors raised before a call).
    pub fn call(&self) -> Option<&CallInfo> {
        use FlyError::*;
        match self {
            Unauthorized { call, .. }
            | Forbidden { call, .. }
            | NotFound { call, .. }
            | Timeout { call, .. }
            | Conflict { call, .. }
            | PreconditionFailed { call, .. }
            | NameTaken { call, .. }
            | InsufficientCapacity { call, .. }
            | Invalid { call, .. }
            | RateLimited { call, .. }
            | Server { call, .. }
            | Transport { call, .. }
            | Decode { call, .. }
            | BodyTooLarge { call, .. }
            | Incomplete { call, .. }
            | UnexpectedStatus { call, .. }
            | Deposed { call } => Some(call),
            Config { .. } => None,
        }
    }

    /// Fly's `fly-request-id` for the failed call, when an answer arrived.
    pub fn request_id(&self) -> Option<&str> {
        self.call().and_then(|c| c.request_id.as_deref())
    }

    /// The route class of the failed call.
    pub fn route(&self) -> Option<Route> {
        self.call().map(|c| c.route)
    }

    /// HTTP status, when an answer arrived.
    pub fn status(&self) -> Option<u16> {
        use FlyError::*;
        match self {
            Unauthorized { .. } => Some(401),
            Forbidden { .. } => Some(403),
            NotFound { .. } => Some(404),
            Timeout { .. } => Some(408),
            Conflict { .. } => Some(409),
            PreconditionFailed { .. } => Some(412),
            RateLimited { .. } => Some(429),
            NameTaken { status, .. }
            | InsufficientCapacity { status, .. }
            | Invalid { status, .. }
            | Server { status, .. }
            | Decode { status, .. }
            | BodyTooLarge { status, .. }
            | UnexpectedStatus { status, .. } => Some(*status),
            Incomplete { .. } => Some(200),
            Transport { .. } | Config { .. } | Deposed { .. } => None,
        }
    }

    /// 404: the thing is gone (deletes treat this as success).
    pub fn is_not_found(&self) -> bool {
        matches!(self, FlyError::NotFound { .. })
    }

    /// Fixed-cardinality label for metrics and the database (`last_error_kind`).
    pub fn kind(&self) -> &'static str {
        use FlyError::*;
        match self {
            Unauthorized { .. } => "unauthorized",
            Forbidden { .. } => "forbidden",
            NotFound { .. } => "not_found",
            Timeout { .. } => "timeout",
            Conflict { .. } => "conflict",
            PreconditionFailed { .. } => "precondition_failed",
            NameTaken { .. } => "name_taken",
            InsufficientCapacity { .. } => "insufficient_capacity",
            Invalid { .. } => "invalid",
            RateLimited { .. } => "rate_limited",
            Server { .. } => "server",
            Transport { .. } => "transport",
            Decode { .. } => "decode",
            BodyTooLarge { .. } => "body_too_large",
            Incomplete { .. } => "incomplete",
            UnexpectedStatus { .. } => "unexpected_status",
            Config { .. } => "config",
            Deposed { .. } => "deposed",
        }
    }

    /// True when the same call may succeed later without anyone changing anything: timeouts, 429,
    /// 5xx, transport failures, capacity shortages, conflicts (after a re-read), incomplete lists.
    pub fn is_transient(&self) -> bool {
        use FlyError::*;
        matches!(
            self,
            Timeout { .. }
                | RateLimited { .. }
                | Server { .. }
                | Transport { .. }
                | InsufficientCapacity { .. }
                | Conflict { .. }
                | PreconditionFailed { .. }
                | Incomplete { .. }
        )
    }

    /// True when a write may or may not have been applied (transport failure, 408, 5xx, or a 2xx
    /// whose body was unusable): the caller must re-observe Fly before retrying it. Always false
    /// for reads and for answers that say nothing happened (4xx, 429).
    pub fn write_outcome_unknown(&self) -> bool {
        use FlyError::*;
        let Some(call) = self.call() else {
            return false;
        };
        call.route.is_write()
            && match self {
                Transport { .. } | Timeout { .. } | Server { .. } => true,
                Decode { status, .. } | BodyTooLarge { status, .. } => (200..300).contains(status),
                _ => false,
            }
    }

    /// `Retry-After` hint carried by a 429.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FlyError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

#[cfg(test)]
#[path = "error_tests.rs"]
mod tests;
