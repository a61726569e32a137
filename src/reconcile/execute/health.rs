//! Where an app's health verdict comes from. Two sources, one [`Reading`]: the probe and the repair
//! ladder never see which one spoke.
//!
//! - [`HealthSource::Endpoint`]: `GET` the app's own health endpoint (`HEALTH_URL_TEMPLATE`,
//!   `https://{app}.fly.dev/health` by default) straight over HTTP. Costs Fly's API nothing, so it
//!   is what the prober asks every app, every `HEALTH_PROBE_INTERVAL`.
//! - [`HealthSource::FlyChecks`]: the machine `GET` with Fly's checks (REFERENCE §3.5). One API
//!   call, so only asked when the endpoint fails, to confirm and to say why (state, checks).

use std::time::Duration;

use super::{Ctx, ExecError};
use crate::fly::{FlyError, Machine};
use crate::reconcile::recorded::AppRow;

/// Patience for an app's endpoint: a healthy app answers in milliseconds; one that takes longer is
/// failing as far as its users are concerned.
pub const ENDPOINT_TIMEOUT: Duration = Duration::from_secs(5);

/// An HTTP client for [`HealthSource::Endpoint`], its own: never the Fly client, its token or its
/// rate limiter.
pub fn endpoint_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(ENDPOINT_TIMEOUT)
        .connect_timeout(ENDPOINT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("vyx-fleet-prober/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("a client without custom TLS roots builds")
}

/// A health source.
#[derive(Debug, Clone, Default)]
pub enum HealthSource {
    /// The machine's state and Fly's checks: healthy when `started` and every configured check
    /// reports `passing`.
    #[default]
    FlyChecks,
    /// The app's own endpoint: healthy on a 2xx; a connect error, a timeout or any other status
    /// is failing.
    Endpoint {
        client: reqwest::Client,
        /// `HEALTH_URL_TEMPLATE`; `{app}` is replaced by the app name.
        template: String,
    },
}

/// One reading of an app's health.
#[derive(Debug, Clone)]
pub struct Reading {
    pub healthy: bool,
    /// Why not healthy (machine state and the checks not passing, or the endpoint's answer), for
    /// the event and the log.
    pub detail: String,
    /// The machine as read, when the source read it (drift detection uses its config).
    pub machine: Option<Machine>,
}

impl HealthSource {
    /// Read `row`'s app once. `Ok(None)`: nothing to judge (no machine recorded, or it is gone;
    /// the planner repairs a missing machine from the org list).
    pub async fn read(&self, ctx: &Ctx, row: &AppRow) -> Result<Option<Reading>, ExecError> {
        match self {
            Self::FlyChecks => {
                let Some(id) = row.machine_id.as_deref() else {
                    return Ok(None);
                };
                let m = match ctx.fly.get_machine(&row.fly_app_name, id).await {
                    Ok(m) => m,
                    Err(FlyError::NotFound { .. }) => return Ok(None),
                    Err(e) => return Err(e.into()),
                };
                let failing: Vec<String> = m
                    .checks
                    .iter()
                    .filter(|c| !c.is_passing())
                    .map(|c| format!("{}={}", c.name, c.status))
                    .collect();
                Ok(Some(Reading {
                    healthy: m.is_healthy(),
                    detail: format!(
                        "state {}; checks not passing: [{}]",
                        m.state.as_str(),
                        failing.join(", ")
                    ),
                    machine: Some(m),
                }))
            }
            Self::Endpoint { client, template } => {
                Ok(Some(endpoint(client, template, &row.fly_app_name).await))
            }
        }
    }
}

/// `GET` `app`'s endpoint once. Never an error: an endpoint that cannot be reached is a failing one.
pub async fn endpoint(client: &reqwest::Client, template: &str, app: &str) -> Reading {
    let url = template.replace("{app}", app);
    let (healthy, detail) = match client.get(&url).send().await {
        Ok(r) if r.status().is_success() => (true, String::new()),
        Ok(r) => (false, format!("GET {url}: {}", r.status().as_u16())),
        // `without_url`: the URL is in the detail already, and reqwest's message adds nothing.
        Err(e) if e.is_timeout() => (false, format!("GET {url}: timed out")),
        Err(e) => (false, format!("GET {url}: {}", e.without_url())),
    };
    Reading {
        healthy,
        detail,
        machine: None,
    }
}
