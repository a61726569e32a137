//! The admin console served by `vyx-fleet run` beside `/healthz` on `HTTP_ADDR`.
//!
//! Pages read the database only, so every replica serves them (the standby included). Controls are
//! POSTs that write what an admin could write by hand (an override, a cleared backoff, a deletion
//! confirmation); they exist only when `ADMIN_TOKEN` is set, and without it every control route
//! answers 403.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | fleet summary, held deletions, the app table (filter, sort, paging in the database) |
//! | `GET /users/{id}` | one user: row, override, last recorded machine state, event timeline |
//! | `GET /signin`, `POST /signin`, `POST /signout` | the session ([`auth`]) |
//! | `POST /controls/override`, `/controls/override/clear`, `/controls/retry`, `/controls/confirm-deletions` | [`controls`] |
//! | `GET /static/console.css` | the embedded stylesheet |

mod auth;
mod controls;
mod dashboard;
mod pages;
mod user_page;
mod view;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sqlx::PgPool;

use crate::config::Settings;
use crate::secret::Secret;

/// What the pages need from the settings (never a secret but the token, held as [`auth::Keys`]).
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    pub image: String,
    pub paid_tiers: Vec<String>,
    pub paid_statuses: Vec<String>,
    pub admin_token: Option<Secret>,
}

impl ConsoleConfig {
    pub fn from_settings(s: &Settings) -> ConsoleConfig {
        ConsoleConfig {
            image: s.user_app_image.clone(),
            paid_tiers: s.paid_tiers.clone(),
            paid_statuses: s.paid_statuses.clone(),
            admin_token: s.admin_token.clone(),
        }
    }
}

/// Shared by the console's handlers. Cheap to clone.
#[derive(Clone)]
pub struct ConsoleState {
    pool: PgPool,
    cfg: Arc<ConsoleConfig>,
    /// `None`: read-only console.
    keys: Option<Arc<auth::Keys>>,
    limiter: Arc<auth::SignInLimiter>,
}

impl std::fmt::Debug for ConsoleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleState")
            .field("image", &self.cfg.image)
            .field("controls", &self.keys.is_some())
            .finish()
    }
}

impl ConsoleState {
    pub fn new(pool: PgPool, cfg: ConsoleConfig) -> ConsoleState {
        let keys = cfg
            .admin_token
            .as_ref()
            .map(|t| Arc::new(auth::Keys::new(t)));
        ConsoleState {
            pool,
            cfg: Arc::new(cfg),
            keys,
            limiter: Arc::new(auth::SignInLimiter::default()),
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
        .route("/signin", get(pages::signin_form).post(controls::signin))
        .route("/signout", post(controls::signout))
        .route("/controls/override", post(controls::set_override))
        .route("/controls/override/clear", post(controls::clear_override))
        .route("/controls/retry", post(controls::retry))
        .route(
            "/controls/confirm-deletions",
            post(controls::confirm_deletions),
        )
        .route("/static/console.css", get(stylesheet))
        .with_state(state)
}

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
