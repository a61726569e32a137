//! Where an app's health verdict comes from. Today one source: the Fly machine `GET` with its
//! checks (REFERENCE §3.5). A later source (an HTTP `/health` probe of the app itself) is a new
//! variant here, not a rewrite of the probe or the repair ladder, which only see a [`Reading`].

use super::{Ctx, ExecError};
use crate::fly::{FlyError, Machine};
use crate::reconcile::recorded::AppRow;

/// A health source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HealthSource {
    /// The machine's state and Fly's checks: healthy when `started` and every configured check
    /// reports `passing`.
    #[default]
    FlyChecks,
}

/// One reading of an app's health.
#[derive(Debug, Clone)]
pub struct Reading {
    pub healthy: bool,
    /// Why not healthy (machine state and the checks not passing), for the event and the log.
    pub detail: String,
    /// The machine as read, when the source read it (drift detection uses its config).
    pub machine: Option<Machine>,
}

impl HealthSource {
    /// Read `row`'s app once. `Ok(None)`: nothing to judge (no machine recorded, or it is gone;
    /// the planner repairs a missing machine from the org list).
    pub async fn read(self, ctx: &Ctx, row: &AppRow) -> Result<Option<Reading>, ExecError> {
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
        }
    }
}
