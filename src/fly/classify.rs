//! Turning an HTTP answer into a [`FlyError`]: the error body, the status table, `Retry-After`.
//!
//! Classification uses the HTTP status and the body's `status` field only, never the message
//! text (REFERENCE §1). Fly's text is kept for humans: one line, truncated, scrubbed of secrets.

use std::time::{Duration, SystemTime};

use super::error::{CallInfo, FlyError};
use super::route::Route;

/// Longest Fly message kept in an error, in characters.
pub const MAX_MESSAGE_CHARS: usize = 200;

/// The interesting parts of Fly's `ErrorResponse`, read leniently (wrong types are ignored).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ErrorBody {
    /// The body's `status` field (`name_taken`, `insufficient_capacity`, …).
    pub status: Option<String>,
    /// `message` if present, else `error` (fly-go's preference), sanitised and truncated.
    pub message: String,
}

impl ErrorBody {
    pub fn parse(body: &[u8]) -> ErrorBody {
        let trimmed = body.trim_ascii();
        if trimmed.is_empty() {
            return ErrorBody::default();
        }
        match serde_json::from_slice::<serde_json::Value>(trimmed) {
            Ok(serde_json::Value::Object(map)) => {
                let text = |k: &str| {
                    map.get(k)
                        .and_then(|v| v.as_str())
                        .filter(|s| !s.trim().is_empty())
                };
                ErrorBody {
                    status: text("status").map(str::to_owned),
                    message: sanitize_message(text("message").or(text("error")).unwrap_or("")),
                }
            }
            // Not Fly's JSON (an HTML page from a proxy, plain text, garbage): say what it was
            // without echoing it.
            _ => ErrorBody {
                status: None,
                message: format!("non-JSON error body ({} bytes)", body.len()),
            },
        }
    }
}

/// One line, no control characters, at most [`MAX_MESSAGE_CHARS`] characters.
pub(crate) fn sanitize_message(raw: &str) -> String {
    let mut out = String::new();
    let mut count = 0;
    let mut last_space = false;
    for c in raw.trim().chars() {
        let c = if c.is_control() || c.is_whitespace() {
            ' '
        } else {
            c
        };
        if c == ' ' && last_space {
            continue;
        }
        last_space = c == ' ';
        if count == MAX_MESSAGE_CHARS {
            out.push('…');
            break;
        }
        out.push(c);
        count += 1;
    }
    out
}

/// Replace every occurrence of each secret (length >= 4) in `message` with `[redacted]`.
pub(crate) fn scrub(message: &str, secrets: &[&str]) -> String {
    let mut out = message.to_owned();
    for s in secrets {
        let s = s.trim();
        if s.chars().count() >= 4 && out.contains(s) {
            out = out.replace(s, "[redacted]");
        }
    }
    out
}

/// Classify a non-2xx answer. `status` field first (`name_taken`, capacity), then the HTTP status.
pub(crate) fn classify(
    call: CallInfo,
    status: u16,
    body: &ErrorBody,
    retry_after: Option<Duration>,
) -> FlyError {
    let message = body.message.clone();
    match body.status.as_deref() {
        Some("name_taken") if (400..500).contains(&status) => {
            return FlyError::NameTaken {
                call,
                status,
                message,
            };
        }
        Some("insufficient_capacity" | "volume_placement_capacity") if status != 429 => {
            return FlyError::InsufficientCapacity {
                call,
                status,
                message,
            };
        }
        _ => {}
    }
    match status {
        401 => FlyError::Unauthorized { call, message },
        403 => FlyError::Forbidden { call, message },
        404 => FlyError::NotFound { call, message },
        408 => FlyError::Timeout { call, message },
        // Create-app has no other reason for a 409 than an existing name (REFERENCE §2.2).
        409 if call.route == Route::CreateApp => FlyError::NameTaken {
            call,
            status,
            message,
        },
        409 => FlyError::Conflict { call, message },
        412 => FlyError::PreconditionFailed { call, message },
        429 => FlyError::RateLimited {
            call,
            retry_after,
            message,
        },
        400..=499 => FlyError::Invalid {
            call,
            status,
            message,
        },
        500..=599 => FlyError::Server {
            call,
            status,
            message,
        },
        _ => FlyError::UnexpectedStatus { call, status },
    }
}

/// Parse `Retry-After`: delta-seconds or an HTTP-date (relative to `now`). Past dates give zero;
/// garbage gives `None`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    if v.bytes().all(|b| b.is_ascii_digit()) {
        return v.parse::<u64>().ok().map(Duration::from_secs);
    }
    let when = chrono::DateTime::parse_from_rfc2822(v)
        .ok()
        .map(|d| d.with_timezone(&chrono::Utc))
        .or_else(|| {
            // RFC 850 and asctime forms, both GMT.
            ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"]
                .iter()
                .find_map(|f| chrono::NaiveDateTime::parse_from_str(v, f).ok())
                .map(|n| n.and_utc())
        })?;
    let now: chrono::DateTime<chrono::Utc> = now.into();
    Some((when - now).to_std().unwrap_or(Duration::ZERO))
}
