//! What an image does once a machine boots it, and what Fly's restart policy then does about it.
//!
//! Every image not named is [`ImageBehaviour::Healthy`]. The others are the ways a bad release
//! looks from the Machines API:
//! - [`ImageBehaviour::ChecksCritical`] (the older `failing_images`): the machine runs, its checks
//!   never pass. `started` only means the VM booted [S24].
//! - [`ImageBehaviour::ExitsAtOnce`]: the process exits (code 1) right after the machine reaches
//!   `started`; each exit is an `exit` event. Fly's restart policy decides what follows
//!   (REFERENCE §3.3, [S19]): `no` leaves the machine `stopped` at the first exit; `on-failure`
//!   (the default when no policy is given) and `always` restart it up to `max_retries` times
//!   (default 10), then it stays `stopped`. The reference bounds only `on-failure`; `always` is
//!   bounded the same way so a crash loop ends, as the rollout tests need it to.
//! - [`ImageBehaviour::Fails`]: the VM never runs; `starting` ends in the persistent `failed`
//!   state (REFERENCE §3.6), which a start or a destroy can leave.
//!
//! Timing: a crashing process lives for one `machine_start` delay after `started`, and a flyd
//! restart boots it again after another; with [`super::Timings::instant`] the loop runs at once.
//! A behaviour applies from the next boot: a machine already running keeps running.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a machine running an image does after it boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ImageBehaviour {
    /// Boots, and its checks pass.
    #[default]
    Healthy,
    /// Boots, and its checks stay `critical`.
    ChecksCritical,
    /// The process exits at once after `started`; the restart policy then applies.
    ExitsAtOnce,
    /// `starting` ends `failed`: the machine never runs.
    Fails,
}

/// Per-image behaviours; `failing_images` counts as [`ImageBehaviour::ChecksCritical`], and an
/// explicit behaviour wins over it.
#[derive(Debug, Default, Clone)]
pub(crate) struct ImageTable {
    pub failing: HashSet<String>,
    pub behaviours: HashMap<String, ImageBehaviour>,
}

impl ImageTable {
    pub fn new(failing: &[String], behaviours: &BTreeMap<String, ImageBehaviour>) -> Self {
        ImageTable {
            failing: failing.iter().cloned().collect(),
            behaviours: behaviours.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        }
    }

    pub fn of(&self, image: &str) -> ImageBehaviour {
        match self.behaviours.get(image) {
            Some(b) => *b,
            None if self.failing.contains(image) => ImageBehaviour::ChecksCritical,
            None => ImageBehaviour::Healthy,
        }
    }
}

/// `on-failure`'s default `max_retries` [S1][S19].
const DEFAULT_MAX_RETRIES: u64 = 10;

/// How many times flyd restarts a machine whose process exited with a failure, under the
/// machine's `config.restart` (REFERENCE §3.3).
pub(crate) fn restarts_allowed(config: &Value) -> u64 {
    let restart = config.get("restart");
    let policy = restart
        .and_then(|r| r.get("policy"))
        .and_then(Value::as_str)
        .unwrap_or("on-failure");
    let max = restart
        .and_then(|r| r.get("max_retries"))
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_MAX_RETRIES);
    match policy {
        "no" => 0,
        _ => max,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn restart_policy_no_never_restarts_and_the_others_take_max_retries_or_ten() {
        assert_eq!(restarts_allowed(&json!({"restart": {"policy": "no"}})), 0);
        let always = json!({"restart": {"policy": "always", "max_retries": 3}});
        assert_eq!(restarts_allowed(&always), 3);
        assert_eq!(
            restarts_allowed(&json!({"restart": {"policy": "on-failure"}})),
            10
        );
        assert_eq!(restarts_allowed(&json!({"image": "x"})), 10);
    }

    #[test]
    fn an_explicit_behaviour_wins_over_the_failing_images_list() {
        let mut t = ImageTable::new(&["a".into(), "b".into()], &BTreeMap::new());
        t.behaviours.insert("b".into(), ImageBehaviour::Fails);
        assert_eq!(t.of("a"), ImageBehaviour::ChecksCritical);
        assert_eq!(t.of("b"), ImageBehaviour::Fails);
        assert_eq!(t.of("c"), ImageBehaviour::Healthy);
    }
}
