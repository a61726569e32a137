//! The admin console served by `vyx-fleet run` beside `/healthz` on `HTTP_ADDR`.
//!
//! Every page shows user data, so every page needs a signed-in admin ([`auth`]); only the sign-in
//! form and the stylesheet are open. Requests naming a `Host` outside the allowlist ([`hosts`]) are
//! refused before anything else. Pages read the database only, so every replica serves them (the
//! standby included). Controls are POSTs that write what an admin could write by hand (an override,
//! a cleared backoff, a deletion confirmation, a rollout resume), each with its row in the admin
//! trail (`vyx_fleet.admin_actions`) in the same transaction.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | fleet summary, rollout, held deletions, the app table (filter, sort, paging in the database) |
//! | `GET /users/{id}` | one user: row, override, last recorded machine state, events and admin actions |
//! | `GET /activity` | the admin trail, newest first |
//! | `GET /charts` | the fleet over time (samples in `vyx_fleet.fleet_samples`, SVG drawn here) |
//! | `GET /signin`, `POST /signin`, `POST /signout` | the session ([`auth`]) |
//! | `POST /controls/override`, `/controls/override/clear`, `/controls/retry`, `/controls/keep`, `/controls/confirm-deletions`, `/controls/rollout/resume` | [`controls`] |
//! | `GET /static/console.css` | the embedded stylesheet |

mod activity;
mod auth;
mod charts;
mod contrast;
mod controls;
mod dashboard;
mod held;
mod hosts;
mod oncall;
mod pages;
mod throttle;
mod user_page;
mod view;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sqlx::PgPool;

use crate::config::Settings;
use crate::secret::Secret;

/// What the pages need from the settings (never a secret but the break-glass token, held as
/// [`auth::Keys`]).
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    pub image: String,
    pub paid_tiers: Vec<String>,
    pub paid_statuses: Vec<String>,
    /// The break-glass `ADMIN_TOKEN`: signs in under a typed name when no named admin can.
    pub admin_token: Option<Secret>,
    /// `ADMIN_ALLOWED_HOSTS`, or `None` for [`hosts::DEFAULT_HOSTS`].
    pub allowed_hosts: Option<Vec<String>>,
    /// Fly sets `FLY_APP_NAME` in every machine: its `<app>.fly.dev` joins the default allowlist.
    pub fly_app_name: Option<String>,
    pub trust_fly_client_ip: bool,
    /// When an orphan is deleted after it is first seen (the on-call panel says when).
    pub orphan_grace: Duration,
}

impl ConsoleConfig {
    pub fn from_settings(s: &Settings) -> ConsoleConfig {
        ConsoleConfig {
            image: s.user_app_image.clone(),
            paid_tiers: s.paid_tiers.clone(),
            paid_statuses: s.paid_statuses.clone(),
            admin_token: s.admin_token.clone(),
            allowed_hosts: s.admin_allowed_hosts.clone(),
            fly_app_name: std::env::var("FLY_APP_NAME").ok(),
            trust_fly_client_ip: s.admin_trust_fly_client_ip,
            orphan_grace: s.orphan_grace,
        }
    }
}

/// Shared by the console's handlers. Cheap to clone.
#[derive(Clone)]
pub struct ConsoleState {
    pool: PgPool,
    cfg: Arc<ConsoleConfig>,
    /// The break-glass token, when set.
    keys: Option<Arc<auth::Keys>>,
    throttle: Arc<throttle::SignInThrottle>,
    hosts: Arc<hosts::HostAllowlist>,
}

impl std::fmt::Debug for ConsoleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleState")
            .field("image", &self.cfg.image)
            .field("break_glass", &self.keys.is_some())
            .field("hosts", &self.hosts.patterns())
            .finish()
    }
}

impl ConsoleState {
    pub fn new(pool: PgPool, cfg: ConsoleConfig) -> ConsoleState {
        let keys = cfg
            .admin_token
            .as_ref()
            .map(|t| Arc::new(auth::Keys::new(t)));
        let hosts = match &cfg.allowed_hosts {
            Some(h) => hosts::HostAllowlist::new(h),
            None => hosts::HostAllowlist::defaults(cfg.fly_app_name.as_deref()),
        };
        ConsoleState {
            pool,
            throttle: Arc::new(throttle::SignInThrottle::new(cfg.trust_fly_client_ip)),
            hosts: Arc::new(hosts),
            cfg: Arc::new(cfg),
            keys,
        }
    }
}

/// How long one page may wait for the database before answering 503: a stuck database must not pile
/// up handlers.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

pub fn router(state: ConsoleState) -> Router {
    Router::new()
        .route("/", get(pages::dashboard))
        .route("/users/{id}", get(pages::user))
        .route("/activity", get(activity::show))
        .route("/charts", get(charts::show))
        .route("/signin", get(pages::signin_form).post(controls::signin))
        .route("/signout", post(controls::signout))
        .route("/controls/override", post(controls::set_override))
        .route("/controls/override/clear", post(controls::clear_override))
        .route("/controls/retry", post(controls::retry))
        .route("/controls/keep", post(held::keep))
        .route("/controls/confirm-deletions", post(held::confirm))
        .route("/controls/rollout/resume", post(controls::rollout_resume))
        .route("/static/console.css", get(stylesheet))
        .layer(middleware::from_fn_with_state(state.clone(), allowed_host))
        .with_state(state)
}

/// Refuses a request whose `Host` is not one of the console's names, before any handler runs.
async fn allowed_host(State(state): State<ConsoleState>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if state.hosts.allows(host) {
        return next.run(req).await;
    }
    (
        StatusCode::MISDIRECTED_REQUEST,
        "this console does not answer to that host name (see ADMIN_ALLOWED_HOSTS)",
    )
        .into_response()
}

/// Nothing the daemon serves runs script or is meant to be framed or sniffed: every response
/// (probes and metrics included) says so, unless its handler said something stricter.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    let defaults = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CONTENT_SECURITY_POLICY, CSP),
    ];
    for (name, value) in defaults {
        if !h.contains_key(&name) {
            h.insert(name, HeaderValue::from_static(value));
        }
    }
    resp
}

/// The pages' policy: no script at all, styles and images only from the console itself.
pub(crate) const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("style.css"),
    )
        .into_response()
}

pub use charts::run_sampler;

/// A page that could not be built: the cause is logged, the reply says only what failed.
fn unavailable(what: &str, e: impl std::fmt::Display) -> Response {
    tracing::warn!(error = %e, "console: {what} failed");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CACHE_CONTROL, "no-store")],
        format!("{what} failed: the database did not answer; see the daemon's log"),
    )
        .into_response()
}
