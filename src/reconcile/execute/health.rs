//! Where an app's health verdict comes from. Two sources, one [`HealthSource::read`], one
//! [`Reading`]: the probe and the repair ladder never see which one spoke.
//!
//! - [`HealthSource::Endpoint`]: `GET` the app's own health endpoint (`HEALTH_URL_TEMPLATE`,
//!   `https://{app}.fly.dev/health` by default) straight over HTTP. Costs Fly's API nothing, so it
//!   is what the prober asks every app, every `HEALTH_PROBE_INTERVAL`.
//! - [`HealthSource::FlyChecks`]: the machine `GET` with Fly's checks (REFERENCE §3.5). One API
//!   call, so only asked when the endpoint fails, to confirm and to say why (state, checks).

use std::sync::Arc;
use std::time::Duration;

use crate::fly::{FlyClient, FlyError, Machine};

/// Patience for an app's endpoint: a healthy app answers in milliseconds; one that takes longer is
/// failing as far as its users are concerned.
pub(crate) const ENDPOINT_TIMEOUT: Duration = Duration::from_secs(5);

/// An HTTP client for [`HealthSource::Endpoint`], its own: never the Fly client, its token or its
/// rate limiter.
fn endpoint_client() -> reqwest::Client {
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
pub(crate) enum HealthSource {
    /// The machine's state and Fly's checks: healthy when `started` and every configured check
    /// reports `passing`.
    #[default]
    FlyChecks,
    /// The app's own endpoint: healthy on a 2xx; a connect error, a timeout or any other status
    /// is failing.
    Endpoint {
        client: reqwest::Client,
        /// `HEALTH_URL_TEMPLATE`; `{app}` is replaced by the app name.
        template: Arc<str>,
    },
}

/// One reading of an app's health.
#[derive(Debug, Clone)]
pub(crate) struct Reading {
    pub healthy: bool,
    /// Why not healthy (machine state and the checks not passing, or the endpoint's answer), for
    /// the event and the log.
    pub detail: String,
    /// The machine as read, when the source read it (drift detection uses its config).
    pub machine: Option<Machine>,
}

impl HealthSource {
    /// The apps' own endpoints, `template` naming each (`{app}` stands for the name), through a
    /// client of their own.
    pub(crate) fn endpoint(template: Arc<str>) -> Self {
        Self::Endpoint {
            client: endpoint_client(),
            template,
        }
    }

    /// Read `app` once; `machine` is the machine its row records (only Fly's checks look at it).
    /// `Ok(None)`: nothing to judge (no machine recorded, or it is gone; the planner repairs a
    /// missing machine from the org list). An endpoint is never an error: one that cannot be
    /// reached is a failing one.
    pub(crate) async fn read(
        &self,
        fly: &FlyClient,
        app: &str,
        machine: Option<&str>,
    ) -> Result<Option<Reading>, FlyError> {
        match self {
            Self::FlyChecks => {
                let Some(id) = machine else {
                    return Ok(None);
                };
                let m = match fly.get_machine(app, id).await {
                    Ok(m) => m,
                    Err(FlyError::NotFound { .. }) => return Ok(None),
                    Err(e) => return Err(e),
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
            Self::Endpoint { client, template } => Ok(Some(endpoint(client, template, app).await)),
        }
    }
}

async fn endpoint(client: &reqwest::Client, template: &str, app: &str) -> Reading {
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
