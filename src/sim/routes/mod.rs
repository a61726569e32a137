//! `/v1` route handlers and what they share: the error body, query and body parsing, app access.

pub(crate) mod apps;
pub(crate) mod ips;
pub(crate) mod leases;
pub(crate) mod machine_actions;
pub(crate) mod machines;
pub(crate) mod orgs;
pub(crate) mod secrets;
pub(crate) mod validate;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::state::{App, World};

/// The caller as authenticated by the pipeline: the orgs its token may act in.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub orgs: Vec<String>,
    /// `fly-affinity` cookie values sent, when they are allowed to bypass the post-create window.
    pub affinity: Vec<String>,
    /// Inside a post-create window this call is answered 401, not 404 ([`crate::sim::Faults`]).
    pub window_401: bool,
    /// Who takes a lease with this token (the spec's `Lease.owner`, a user identifier [S1]).
    pub owner: String,
}

impl Caller {
    pub fn can_access(&self, org: &str) -> bool {
        self.orgs.iter().any(|o| o == org)
    }
}

/// `ErrorResponse` [S1]: `{"error": "...", "status": "..."}`; `status` only where one applies.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub http: StatusCode,
    pub error: String,
    pub status: Option<&'static str>,
}

impl ApiError {
    pub fn new(http: StatusCode, error: impl Into<String>) -> Self {
        ApiError {
            http,
            error: error.into(),
            status: None,
        }
    }
    pub fn with_status(mut self, status: &'static str) -> Self {
        self.status = Some(status);
        self
    }
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, msg)
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, msg)
    }
    pub fn app_not_found() -> Self {
        Self::not_found("app not found")
    }
    pub fn machine_not_found() -> Self {
        // "machine not found" is what acting on a destroyed machine gives [S25].
        Self::not_found("machine not found")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.error });
        if let Some(s) = self.status {
            body["status"] = Value::from(s);
        }
        (self.http, Json(body)).into_response()
    }
}

pub(crate) type ApiResult = Result<Response, ApiError>;

/// Query pairs in order, percent-decoded; repeated keys kept (the wait endpoint's `state`
/// may repeat [S1]).
pub(crate) fn parse_query(raw: Option<&str>) -> Vec<(String, String)> {
    raw.unwrap_or_default()
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn query_get<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

pub(crate) fn query_bool(q: &[(String, String)], key: &str) -> Result<bool, ApiError> {
    match query_get(q, key) {
        None => Ok(false),
        Some("" | "true" | "1" | "t" | "TRUE" | "True") => Ok(true),
        Some("false" | "0" | "f" | "FALSE" | "False") => Ok(false),
        Some(v) => Err(ApiError::bad_request(format!(
            "invalid value {v:?} for {key}: expected a boolean"
        ))),
    }
}

/// `limit` as a positive integer within `max`; `None` when absent.
pub(crate) fn query_limit(q: &[(String, String)], max: usize) -> Result<Option<usize>, ApiError> {
    match query_get(q, "limit") {
        None | Some("") => Ok(None),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(Some(n)),
            _ => Err(ApiError::bad_request(format!(
                "limit must be between 1 and {max}"
            ))),
        },
    }
}

/// Parses a JSON request body; anything malformed is a 400 with an error body.
pub(crate) fn parse_body(bytes: &[u8], allow_empty: bool) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return if allow_empty {
            Ok(Value::Object(Default::default()))
        } else {
            Err(ApiError::bad_request("request body is required"))
        };
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(ApiError::bad_request("request body must be a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!("invalid JSON body: {e}"))),
    }
}

/// Finds an app the caller may use: absent → 404; still inside its post-create window → 404, or 401
/// when injected [S9][S35]; held by an org the token cannot access → 403 [S9].
pub(crate) fn app_for<'a>(
    world: &'a World,
    caller: &Caller,
    name: &str,
) -> Result<&'a App, ApiError> {
    let app = world.apps.get(name).ok_or_else(ApiError::app_not_found)?;
    if Instant::now() < app.visible_at && !caller.affinity.contains(&affinity_value(app)) {
        // fly-go's WaitForApp retries 404 and 401 alike here [S9].
        return Err(if caller.window_401 {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized")
        } else {
            ApiError::app_not_found()
        });
    }
    if !caller.can_access(&app.org) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "unauthorized: token has no access to this app",
        ));
    }
    Ok(app)
}

/// The value of the app's path-scoped affinity cookie.
pub(crate) fn affinity_value(app: &App) -> String {
    app.id.chars().take(12).collect()
}

pub(crate) fn app_for_mut<'a>(
    world: &'a mut World,
    caller: &Caller,
    name: &str,
) -> Result<&'a mut App, ApiError> {
    app_for(world, caller, name)?;
    world.apps.get_mut(name).ok_or_else(ApiError::app_not_found)
}

/// Opaque pagination cursor over a position number.
pub(crate) fn encode_cursor(pos: u64) -> String {
    format!("c1.{pos:x}")
}

pub(crate) fn decode_cursor(c: &str) -> Result<u64, ApiError> {
    c.strip_prefix("c1.")
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .ok_or_else(|| ApiError::bad_request("invalid cursor"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing_keeps_repeats_and_decodes() {
        let q = parse_query(Some(
            "state=started&state=stopped%2Cdestroyed&metadata.k=a+b&x",
        ));
        assert_eq!(q[0], ("state".into(), "started".into()));
        assert_eq!(q[1], ("state".into(), "stopped,destroyed".into()));
        assert_eq!(q[2], ("metadata.k".into(), "a b".into()));
        assert_eq!(q[3], ("x".into(), "".into()));
        assert_eq!(parse_query(Some("a=%zz&b=%4"))[0].1, "%zz");
        assert_eq!(parse_query(Some("b=%4"))[0].1, "%4");
    }

    #[test]
    fn bodies() {
        assert!(parse_body(b"{", false).is_err());
        assert!(parse_body(b"[]", false).is_err());
        assert!(parse_body(b"", false).is_err());
        assert!(parse_body(b"", true).is_ok());
    }
}
