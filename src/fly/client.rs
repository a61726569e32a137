//! [`FlyClient`]: one reqwest client (cookie store on, REFERENCE §1 affinity cookie), the auth
//! header, token buckets, and the request loop with its retry policy.
//!
//! Retry policy (see [`FlyClient::execute`]):
//! - 429 on any method: Fly did not process it; wait `Retry-After` (or back off) and resend.
//! - GETs (including wait) on transport errors, 408, 502 and 503: resend with jittered backoff.
//! - Writes on 5xx, 408 or transport errors: never resent; the error says the outcome is unknown
//!   ([`FlyError::write_outcome_unknown`]) and the caller re-observes.
//!
//! Every attempt is bounded by `request_timeout`, the number of retries by `max_retries`, and the
//! whole call by a deadline (`request_timeout × (max_retries + 1)`, or the caller's for wait).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Method, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::classify::{ErrorBody, classify, parse_retry_after, sanitize_message, scrub};
use super::error::{CallInfo, FlyError};
use super::ratelimit::{RateLimiter, RateLimits};
use super::route::Route;
use super::token;
use super::transport::{header_str, read_body, read_prefix, transport};
use crate::retry::{Backoff, RetryPolicy};
use crate::secret::Secret;

/// Largest 2xx body the client reads (a full machine list page is far below this).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Error bodies are only read this far: enough for Fly's JSON, not for a proxy's novel.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// Longest pause the client will take for one `Retry-After`/backoff before giving up.
const MAX_SINGLE_RETRY_DELAY: Duration = Duration::from_secs(60);

/// How to build a [`FlyClient`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `https://api.machines.dev` (or the simulator's address).
    pub base_url: String,
    /// Fly token in any of its spellings (see [`super::token`]).
    pub token: Secret,
    pub rate_limits: RateLimits,
    /// Per-attempt HTTP timeout (wait long-polls get their poll time on top).
    pub request_timeout: Duration,
    /// Retries after the first attempt, for the cases the policy allows.
    pub max_retries: u32,
    pub user_agent: String,
    /// Items asked per page of the list calls (apps, machines, org machines; clamped to what Fly
    /// accepts). [`DEFAULT_LIST_PAGE_SIZE`] in production; tests set a few items so every list
    /// spans several pages.
    pub list_page_size: u32,
}

/// Page size of the list calls unless [`ClientOptions::list_page_size`] says otherwise.
pub const DEFAULT_LIST_PAGE_SIZE: u32 = 500;

impl ClientOptions {
    /// Defaults: documented rate limits, 30 s per attempt, 3 retries.
    pub fn new(base_url: impl Into<String>, token: Secret) -> Self {
        ClientOptions {
            base_url: base_url.into(),
            token,
            rate_limits: RateLimits::with_margin(),
            request_timeout: Duration::from_secs(30),
            max_retries: 3,
            user_agent: concat!("vyx-fleet/", env!("CARGO_PKG_VERSION")).to_owned(),
            list_page_size: DEFAULT_LIST_PAGE_SIZE,
        }
    }
}

/// Typed Fly Machines API client. Cheap to clone; clones share connections, cookies and buckets.
#[derive(Clone)]
pub struct FlyClient {
    pub(crate) inner: Arc<Inner>,
    /// When set, writes are refused once it closes (a leader's acting deadline).
    gate: Option<super::WriteGate>,
}

pub(crate) struct Inner {
    http: reqwest::Client,
    base: Url,
    auth: HeaderValue,
    token: Secret,
    limiter: RateLimiter,
    request_timeout: Duration,
    max_retries: u32,
    policy: RetryPolicy,
    pub(crate) list_page_size: u32,
}

impl std::fmt::Debug for FlyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlyClient")
            .field("base_url", &self.inner.base.as_str())
            .field("request_timeout", &self.inner.request_timeout)
            .field("max_retries", &self.inner.max_retries)
            .finish_non_exhaustive()
    }
}

/// One logical call, before retries.
pub(crate) struct Request<'a> {
    pub route: Route,
    /// Path segments after the base URL (percent-encoded here).
    pub path: Vec<&'a str>,
    pub query: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    /// Rate-limit identifier (app name, machine id or org slug).
    pub rate_id: &'a str,
    /// Per-attempt timeout override.
    pub attempt_timeout: Option<Duration>,
    /// Overall deadline override.
    pub deadline: Option<Instant>,
    /// Values to scrub from any error text (secret values sent in the body).
    pub scrub: Vec<&'a str>,
}

impl<'a> Request<'a> {
    pub fn new(route: Route, path: Vec<&'a str>, rate_id: &'a str) -> Self {
        Request {
            route,
            path,
            query: Vec::new(),
            body: None,
            rate_id,
            attempt_timeout: None,
            deadline: None,
            scrub: Vec::new(),
        }
    }

    pub fn query(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.query.push((k.into(), v.into()));
        self
    }

    pub fn json<T: Serialize + ?Sized>(mut self, body: &T) -> Result<Self, FlyError> {
        let bytes = serde_json::to_vec(body).map_err(|e| {
            FlyError::config(format!(
                "cannot encode {} request body: {}",
                self.route.as_str(),
                e.classify_name()
            ))
        })?;
        self.body = Some(bytes);
        Ok(self)
    }
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "io",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Data => "data",
            serde_json::error::Category::Eof => "eof",
        }
    }
}

/// A 2xx answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    pub request_id: Option<String>,
    /// `fly-next-cursor` header (machine list pagination).
    pub next_cursor: Option<String>,
    /// The `Date` header: the API's clock when it answered (whole seconds).
    pub date: Option<chrono::DateTime<chrono::Utc>>,
}

impl Answer {
    pub fn call(&self, route: Route) -> CallInfo {
        CallInfo {
            route,
            request_id: self.request_id.clone(),
        }
    }
}

impl FlyClient {
    pub fn new(opts: ClientOptions) -> Result<Self, FlyError> {
        let mut base = Url::parse(opts.base_url.trim())
            .map_err(|e| FlyError::config(format!("invalid base URL: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(FlyError::config("base URL must be an http(s) URL"));
        }
        base.set_query(None);
        base.set_fragment(None);
        if !base.username().is_empty() || base.password().is_some() {
            return Err(FlyError::config("base URL must not carry credentials"));
        }
        let auth =
            token::authorization_header(&opts.token).map_err(|p| FlyError::config(p.describe()))?;
        if opts.request_timeout.is_zero() {
            return Err(FlyError::config("request_timeout must be positive"));
        }
        let http = reqwest::Client::builder()
            .cookie_provider(Arc::new(super::affinity::AffinityCookies::default()))
            .user_agent(opts.user_agent.as_str())
            // The API does not redirect; following one could hand the token to another host.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(opts.request_timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|_| FlyError::config("cannot build the HTTP client"))?;
        Ok(FlyClient {
            inner: Arc::new(Inner {
                http,
                base,
                auth,
                token: opts.token,
                limiter: RateLimiter::new(opts.rate_limits),
                request_timeout: opts.request_timeout,
                max_retries: opts.max_retries,
                policy: RetryPolicy::fly_default(),
                list_page_size: opts.list_page_size.max(1),
            }),
            gate: None,
        })
    }

    /// This client (same connections, cookies and buckets) sending writes only while `gate` is
    /// open: what a leader's term acts through.
    pub fn with_write_gate(&self, gate: super::WriteGate) -> FlyClient {
        FlyClient {
            inner: self.inner.clone(),
            gate: Some(gate),
        }
    }

    /// Test hook: a faster retry policy (delays still jittered).
    #[cfg(test)]
    pub(crate) fn with_policy(opts: ClientOptions, policy: RetryPolicy) -> Self {
        let mut c = FlyClient::new(opts).expect("test client");
        Arc::get_mut(&mut c.inner).expect("fresh client").policy = policy;
        c
    }

    pub(crate) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.base.clone();
        if let Ok(mut p) = url.path_segments_mut() {
            p.pop_if_empty().extend(segments);
        }
        url
    }

    /// Send `req` with the retry policy described in the module docs.
    pub(crate) async fn execute(&self, req: &Request<'_>) -> Result<Answer, FlyError> {
        let inner = &self.inner;
        let attempt_timeout = req.attempt_timeout.unwrap_or(inner.request_timeout);
        let deadline = req.deadline.unwrap_or_else(|| {
            deadline_after(inner.request_timeout.saturating_mul(inner.max_retries + 1))
        });
        let mut backoff = Backoff::new(inner.policy.with_max_retries(inner.max_retries));
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            inner.limiter.acquire(req.route, req.rate_id).await;
            // Checked after the (possibly long) bucket wait, right before the request leaves.
            let admitted = match (&self.gate, req.route.is_write()) {
                (Some(g), true) => g.admit().await,
                _ => true,
            };
            if !admitted {
                return Err(FlyError::Deposed {
                    call: CallInfo::new(req.route),
                });
            }
            let err = match self.send_once(req, attempt_timeout).await {
                Ok(answer) => return Ok(answer),
                Err(e) => e,
            };
            let delay = if should_retry(req.route, &err) {
                backoff
                    .next_delay()
                    .map(|d| err.retry_after().unwrap_or(d))
                    .filter(|d| *d <= MAX_SINGLE_RETRY_DELAY && deadline_after(*d) < deadline)
            } else {
                None
            };
            log_failure(&err, attempt, delay);
            match delay {
                Some(d) => tokio::time::sleep(d).await,
                None => return Err(err),
            }
        }
    }

    async fn send_once(&self, req: &Request<'_>, timeout: Duration) -> Result<Answer, FlyError> {
        let inner = &self.inner;
        let mut call = CallInfo::new(req.route);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, inner.auth.clone());
        let mut builder = inner
            .http
            .request(req.route.method(), self.url(&req.path))
            .timeout(timeout);
        if !req.query.is_empty() {
            builder = builder.query(&req.query);
        }
        if let Some(body) = &req.body {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            builder = builder.body(body.clone());
        }
        let mut resp = builder
            .headers(headers)
            .send()
            .await
            .map_err(|e| transport(call.clone(), &e))?;

        let status = resp.status().as_u16();
        call.request_id = header_str(resp.headers(), "fly-request-id", 256);
        // A cursor is opaque: passed on whole, never truncated.
        let next_cursor = header_str(resp.headers(), "fly-next-cursor", 64 * 1024);
        let date = header_str(resp.headers(), "date", 64)
            .and_then(|d| chrono::DateTime::parse_from_rfc2822(&d).ok())
            .map(|d| d.with_timezone(&chrono::Utc));
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));

        if (200..300).contains(&status) {
            let body = match read_body(&mut resp, MAX_BODY_BYTES).await {
                Ok(Some(body)) => body,
                Ok(None) => {
                    return Err(FlyError::BodyTooLarge {
                        call,
                        status,
                        limit: MAX_BODY_BYTES,
                    });
                }
                Err(e) => return Err(transport(call, &e)),
            };
            return Ok(Answer {
                status,
                body,
                request_id: call.request_id,
                next_cursor,
                date,
            });
        }
        // An error body that is too long or breaks off is still an error of this status.
        let body = read_prefix(&mut resp, MAX_ERROR_BODY_BYTES).await;
        let mut parsed = ErrorBody::parse(&body);
        let mut secrets: Vec<&str> = req.scrub.clone();
        let stripped = token::strip_scheme(inner.token.expose());
        secrets.push(stripped);
        secrets.extend(stripped.split(','));
        parsed.message = scrub(&parsed.message, &secrets);
        Err(classify(call, status, &parsed, retry_after))
    }
}

/// `now + d`, saturating at a year instead of panicking on overflow.
pub(crate) fn deadline_after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

/// Decode a 2xx body into `T`; failures become [`FlyError::Decode`], never a panic.
pub(crate) fn decode<T: DeserializeOwned>(route: Route, answer: &Answer) -> Result<T, FlyError> {
    serde_json::from_slice(&answer.body).map_err(|e| FlyError::Decode {
        call: answer.call(route),
        status: answer.status,
        detail: sanitize_message(&e.to_string()),
    })
}

/// The retry policy: 429 anywhere (not processed); GETs on transport errors, 408 (except wait,
/// whose 408 is its own loop's business) and 502/503.
fn should_retry(route: Route, err: &FlyError) -> bool {
    match err {
        FlyError::RateLimited { .. } => true,
        _ if route.method() != Method::GET => false,
        FlyError::Transport { .. } => true,
        FlyError::Timeout { .. } => route != Route::WaitMachine,
        FlyError::Server { status, .. } => matches!(status, 502 | 503),
        _ => false,
    }
}

fn log_failure(err: &FlyError, attempt: u32, retry_in: Option<Duration>) {
    let route = err.route().map_or("", Route::as_str);
    let method = err.route().map_or("", Route::method_str);
    let status = err.status().unwrap_or(0);
    let retry_in_ms = retry_in.map(|d| d.as_millis() as u64);
    // A wait that times out is the long-poll working as designed; a 404/403 on a GET is an answer
    // the caller asked for (is the name free? is the app gone?), not a failure.
    let expected = (matches!(err, FlyError::Timeout { .. })
        && err.route() == Some(Route::WaitMachine))
        || (method == "GET"
            && matches!(err, FlyError::NotFound { .. } | FlyError::Forbidden { .. }));
    if expected {
        tracing::debug!(
            fly_request_id = err.request_id(),
            method,
            route,
            status,
            attempt,
            "fly call answered as expected"
        );
        return;
    }
    tracing::warn!(
        fly_request_id = err.request_id(),
        method,
        route,
        status,
        kind = err.kind(),
        attempt,
        retry_in_ms,
        error = %err,
        "fly call failed"
    );
}
