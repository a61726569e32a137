//! The SET fragments and binds the rollout's one-statement writes share: an app's progress
//! columns and what its machine runs.

use chrono::{DateTime, Utc};

use super::{RowRolloutState, Running};
use crate::db::apps::Bind;
use crate::model::cost::monthly_cost_estimate_usd;

/// The rollout progress columns, from binds `$3` (rollout id), `$4` (wave), `$5` (state), `$6`
/// (machine version) and `$7` (when; `NULL` for the database's now). The version rule is
/// [`Store::set_app_rollout_state`]'s.
macro_rules! progress {
    () => {
        "rollout_id = $3, rollout_wave = $4, rollout_state = $5, \
         rollout_state_at = coalesce($7, now()), \
         rollout_machine_version = CASE \
           WHEN a.rollout_id IS DISTINCT FROM $3 \
             OR ($5 = 'moving' AND a.rollout_state IS DISTINCT FROM 'moving') THEN $6 \
           ELSE coalesce($6, a.rollout_machine_version) END"
    };
}
pub(super) use progress;

/// What runs, from six binds starting at `$n` (`running_binds`).
macro_rules! running {
    (3) => {
        running!(@ "$3", "$4", "$5", "$6", "$7", "$8")
    };
    (8) => {
        running!(@ "$8", "$9", "$10", "$11", "$12", "$13")
    };
    (@ $i:literal, $d:literal, $r:literal, $c:literal, $m:literal, $usd:literal) => {
        concat!(
            "docker_image = ", $i, ", config_digest = ", $d, ", deployed_at = now(), region = ", $r,
            ", cpu_count = ", $c, ", memory_mb = ", $m,
            ", monthly_cost_estimate_usd = ", $usd, "::float8::numeric"
        )
    };
}
pub(super) use running;

pub(super) fn running_binds(r: &Running<'_>) -> Vec<Bind> {
    vec![
        Bind::Text(Some(r.image.to_string())),
        Bind::Text(Some(r.config_digest.to_string())),
        Bind::Text(Some(r.region.to_string())),
        Bind::Int(Some(i64::from(r.cpus))),
        Bind::Int(Some(i64::from(r.memory_mb))),
        Bind::Float(Some(monthly_cost_estimate_usd(r.cpus, r.memory_mb))),
    ]
}

/// An app's rollout progress as binds `$3`..`$7` of [`progress!`].
pub(super) struct Progress<'a> {
    rollout_id: i64,
    wave: u32,
    state: RowRolloutState,
    version: Option<&'a str>,
    at: Option<DateTime<Utc>>,
}

impl<'a> Progress<'a> {
    pub(super) fn new(
        rollout_id: i64,
        wave: u32,
        state: RowRolloutState,
        version: Option<&'a str>,
        at: Option<DateTime<Utc>>,
    ) -> Self {
        Progress {
            rollout_id,
            wave,
            state,
            version,
            at,
        }
    }

    pub(super) fn binds(&self) -> Vec<Bind> {
        vec![
            Bind::Int(Some(self.rollout_id)),
            Bind::Int(Some(i64::from(self.wave))),
            Bind::Text(Some(self.state.as_str().to_string())),
            Bind::Text(self.version.map(str::to_string)),
            Bind::Time(self.at),
        ]
    }
}

/// The spec an app ran healthily through its soak: its digest and image, the spec a failure goes
/// back to, and the image's digest when Fly reported one.
pub(crate) struct HealthySpec<'a> {
    pub spec_digest: &'a str,
    pub image: &'a str,
    pub spec: &'a serde_json::Value,
    pub image_digest: Option<&'a str>,
}
