//! The operations settings: how rollouts pace and halt, how often health is probed, when a broken
//! app is repaired. Parsed here so `mod.rs` keeps the identity and Fly settings.

use std::time::Duration;

use super::amount::CountOrPercent;
use super::{ConfigError, Sources, check, rules};

/// See README "Rollouts" for why: at most 2% of the fleet restarts at once, so every rollout takes
/// about 55 waves (≈ 2-2.5 h) whatever the fleet size, and 10,000 apps never take days.
pub const DEFAULT_ROLLOUT_MAX_UNAVAILABLE: &str = "2%";
/// Halt once more than 1% of the moved apps failed (below 100 moved apps: at the first failure).
pub const DEFAULT_ROLLOUT_FAILURE_THRESHOLD: &str = "1%";
pub const DEFAULT_ROLLOUT_SOAK: &str = "60s";
pub const DEFAULT_HEALTH_PROBE_INTERVAL: &str = "5m";
pub const DEFAULT_REPAIR_AFTER: &str = "5m";
/// Each app's own health endpoint (its services and checks already serve `/health`); probing it
/// costs Fly's API nothing.
pub const DEFAULT_HEALTH_URL_TEMPLATE: &str = "https://{app}.fly.dev/health";
/// Restarts and replacements per pass: a Fly-wide incident must not become a replace storm.
pub const DEFAULT_REPAIR_MAX_PER_PASS: usize = 5;
pub const REPAIR_MAX_PER_PASS_RANGE: std::ops::RangeInclusive<usize> = 1..=1000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operations {
    /// Apps in transition at once (moving or soaking), of the live apps. Never zero: a rollout
    /// must be able to move its canary.
    pub rollout_max_unavailable: CountOrPercent,
    /// Failures tolerated after the canary wave, of the apps moved so far; more halt the rollout.
    pub rollout_failure_threshold: CountOrPercent,
    /// How long every app of a wave must stay healthy on the new spec before the next wave.
    pub rollout_soak: Duration,
    /// How often each live app's health endpoint is probed.
    pub health_probe_interval: Duration,
    /// The health endpoint's URL, `{app}` standing for the app name.
    pub health_url_template: String,
    /// How long an app stays unhealthy before it is restarted (and, after as long again, replaced).
    pub repair_after: Duration,
    pub repair_max_per_pass: usize,
}

impl Default for Operations {
    fn default() -> Self {
        let parse = |s: &str| s.parse::<CountOrPercent>().expect("default parses");
        let dur = |s: &str| super::parse_duration(s).expect("default parses");
        Operations {
            rollout_max_unavailable: parse(DEFAULT_ROLLOUT_MAX_UNAVAILABLE),
            rollout_failure_threshold: parse(DEFAULT_ROLLOUT_FAILURE_THRESHOLD),
            rollout_soak: dur(DEFAULT_ROLLOUT_SOAK),
            health_probe_interval: dur(DEFAULT_HEALTH_PROBE_INTERVAL),
            health_url_template: DEFAULT_HEALTH_URL_TEMPLATE.to_string(),
            repair_after: dur(DEFAULT_REPAIR_AFTER),
            repair_max_per_pass: DEFAULT_REPAIR_MAX_PER_PASS,
        }
    }
}

/// In the order of `KNOWN_KEYS`, so the first bad key reported is the first one listed.
pub(super) fn parse(src: &Sources<'_>) -> Result<Operations, ConfigError> {
    const MAX_UNAVAILABLE: &str = "ROLLOUT_MAX_UNAVAILABLE";
    let value = src.or_default(MAX_UNAVAILABLE, DEFAULT_ROLLOUT_MAX_UNAVAILABLE)?;
    let rollout_max_unavailable = check(MAX_UNAVAILABLE, value.parse::<CountOrPercent>())?;
    if rollout_max_unavailable.is_zero() {
        return Err(ConfigError::new(
            MAX_UNAVAILABLE,
            "must be at least 1 (or 1%): with 0 no app could ever move to a new spec",
        ));
    }
    const THRESHOLD: &str = "ROLLOUT_FAILURE_THRESHOLD";
    let value = src.or_default(THRESHOLD, DEFAULT_ROLLOUT_FAILURE_THRESHOLD)?;
    let rollout_failure_threshold = check(THRESHOLD, value.parse::<CountOrPercent>())?;
    let rollout_soak = src.duration("ROLLOUT_SOAK", DEFAULT_ROLLOUT_SOAK)?;
    let health_probe_interval =
        src.duration("HEALTH_PROBE_INTERVAL", DEFAULT_HEALTH_PROBE_INTERVAL)?;
    const TEMPLATE: &str = "HEALTH_URL_TEMPLATE";
    let health_url_template = src.or_default(TEMPLATE, DEFAULT_HEALTH_URL_TEMPLATE)?;
    check(TEMPLATE, health_url_template_rule(&health_url_template))?;
    let repair_after = src.duration("REPAIR_AFTER", DEFAULT_REPAIR_AFTER)?;
    const REPAIRS: &str = "REPAIR_MAX_PER_PASS";
    let value = src.or_default(REPAIRS, &DEFAULT_REPAIR_MAX_PER_PASS.to_string())?;
    let repair_max_per_pass = check(
        REPAIRS,
        rules::bounded_count(&value, &REPAIR_MAX_PER_PASS_RANGE),
    )?;
    Ok(Operations {
        rollout_max_unavailable,
        rollout_failure_threshold,
        rollout_soak,
        health_probe_interval,
        health_url_template: health_url_template.trim().to_string(),
        repair_after,
        repair_max_per_pass,
    })
}

/// An http(s) URL once `{app}` is filled in, and `{app}` must be there: one URL for every app
/// would judge the whole fleet by one endpoint.
fn health_url_template_rule(value: &str) -> Result<(), String> {
    if !value.contains("{app}") {
        return Err("must contain {app} (replaced by each app's name)".into());
    }
    rules::http_url(value.trim().replace("{app}", "vyx-user-x").as_str())
}
