//! Low-level response handling: capped body reads, header extraction, transport errors.

use reqwest::header::HeaderMap;

use super::classify::sanitize_message;
use super::error::{CallInfo, FlyError};

/// A response header as text (visible ASCII only; anything else is treated as absent), trimmed,
/// at most `max_len` bytes. Opaque values such as cursors must be passed whole: callers pick a
/// `max_len` that does not cut them.
pub(crate) fn header_str(headers: &HeaderMap, name: &str, max_len: usize) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.len() <= max_len)
        .map(str::to_owned)
}

pub(crate) fn transport(call: CallInfo, e: &reqwest::Error) -> FlyError {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connect failed"
    } else if e.is_body() || e.is_decode() {
        "reading the body failed"
    } else if e.is_request() {
        "sending the request failed"
    } else {
        "failed"
    };
    // The chain below reqwest (hyper, io) names causes, never URLs or headers.
    let mut detail = kind.to_owned();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    FlyError::Transport {
        call,
        detail: sanitize_message(&detail),
    }
}

/// Read the whole body if it fits in `limit` bytes; `Ok(None)` if it does not.
pub(crate) async fn read_body(
    resp: &mut reqwest::Response,
    limit: usize,
) -> Result<Option<Vec<u8>>, reqwest::Error> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Ok(None);
    }
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if buf.len() + chunk.len() > limit {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Some(buf))
}

/// Up to `limit` bytes of the body, ignoring read errors (best effort for error answers).
pub(crate) async fn read_prefix(resp: &mut reqwest::Response, limit: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = limit - buf.len();
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if buf.len() >= limit {
            break;
        }
    }
    buf
}
