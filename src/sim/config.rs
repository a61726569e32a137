//! Simulator configuration: orgs and tokens, timings, rate limits, faults.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::faults::Faults;
use super::images::ImageBehaviour;

/// An organisation known to the simulator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrgConfig {
    pub slug: String,
    pub name: String,
}

/// A token and the orgs it may act in. The first org is what `personal` resolves to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenConfig {
    pub token: String,
    pub orgs: Vec<String>,
}

/// Delays of the asynchronous parts of the platform and of its consistency windows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Timings {
    /// `created` -> `starting` after a create (unless `skip_launch`).
    pub machine_create: Duration,
    /// `starting` -> `started`.
    pub machine_start: Duration,
    /// `stopping` -> `stopped`.
    pub machine_stop: Duration,
    /// `destroying` -> `destroyed`.
    pub machine_destroy: Duration,
    /// `replacing`/`updating` -> `starting` after an update of a running machine.
    pub machine_update: Duration,
    /// From `started` until configured checks settle (`passing`, or `critical` for failing images).
    pub checks_settle: Duration,
    /// From `DELETE /v1/apps/{name}` (202) until the app and everything in it is gone [S1][S5].
    pub app_delete: Duration,
    /// Post-create window during which `GET /v1/apps/{name}` and the app's sub-resources answer 404
    /// (fly-go `WaitForApp` retries exactly this [S9]; "failed to get app" after create [S35]).
    pub app_visible_after: Duration,
    /// A freshly created app is missing from `GET /v1/apps` for this long (spec: apps created seconds
    /// before the first page may be missing [S1]).
    pub apps_list_lag: Duration,
    /// A freshly created machine is missing from list endpoints for this long (Corrosion replication
    /// lag [S15]).
    pub machine_list_lag: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            machine_create: Duration::from_millis(100),
            machine_start: Duration::from_millis(200),
            machine_stop: Duration::from_millis(150),
            machine_destroy: Duration::from_millis(150),
            machine_update: Duration::from_millis(100),
            checks_settle: Duration::from_millis(300),
            app_delete: Duration::from_millis(300),
            app_visible_after: Duration::from_millis(150),
            apps_list_lag: Duration::from_millis(100),
            machine_list_lag: Duration::from_millis(100),
        }
    }
}

impl Timings {
    /// Every delay and window zero: transitions still happen on tokio tasks, just at once.
    pub fn instant() -> Self {
        Timings {
            machine_create: Duration::ZERO,
            machine_start: Duration::ZERO,
            machine_stop: Duration::ZERO,
            machine_destroy: Duration::ZERO,
            machine_update: Duration::ZERO,
            checks_settle: Duration::ZERO,
            app_delete: Duration::ZERO,
            app_visible_after: Duration::ZERO,
            apps_list_lag: Duration::ZERO,
            machine_list_lag: Duration::ZERO,
        }
    }
}

/// A token bucket: `per_second` sustained, up to `burst` at once.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct BucketConfig {
    pub per_second: f64,
    pub burst: u32,
}

/// Rate limits per route class per identifier (machine id, else app name, else org) [S2][S32].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RateLimitConfig {
    pub enabled: bool,
    /// Add `Retry-After` (whole seconds) to 429s. Off by default: no source confirms Fly sends it [S1].
    pub retry_after: bool,
    /// Bucket for classes not listed in `classes`; `None` leaves them unlimited.
    pub default: Option<BucketConfig>,
    /// Per route class (e.g. `machines.get`); overrides `default`.
    pub classes: BTreeMap<String, BucketConfig>,
}

impl Default for RateLimitConfig {
    /// The documented limits [S2][S32]: 1 req/s with bursts of 3 per action and identifier;
    /// get-machine 5 req/s bursting to 10; app deletions 100 per minute.
    fn default() -> Self {
        let mut classes = BTreeMap::new();
        classes.insert(
            "machines.get".to_string(),
            BucketConfig {
                per_second: 5.0,
                burst: 10,
            },
        );
        classes.insert(
            "apps.delete".to_string(),
            BucketConfig {
                per_second: 100.0 / 60.0,
                burst: 100,
            },
        );
        RateLimitConfig {
            enabled: true,
            retry_after: false,
            default: Some(BucketConfig {
                per_second: 1.0,
                burst: 3,
            }),
            classes,
        }
    }
}

impl RateLimitConfig {
    pub fn disabled() -> Self {
        RateLimitConfig {
            enabled: false,
            ..RateLimitConfig::default()
        }
    }

    pub(crate) fn bucket_for(&self, class: &str) -> Option<BucketConfig> {
        if !self.enabled {
            return None;
        }
        self.classes.get(class).copied().or(self.default)
    }
}

/// Everything the simulator can be told at start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimConfig {
    pub orgs: Vec<OrgConfig>,
    pub tokens: Vec<TokenConfig>,
    /// Accept any non-empty token as a member of this org (CLI/demo default).
    pub any_token_org: Option<String>,
    pub timings: Timings,
    pub rate_limits: RateLimitConfig,
    pub faults: Faults,
    /// Images whose checks never pass (stay `critical`).
    pub failing_images: Vec<String>,
    /// Other image behaviours (a process that exits at once, a machine that ends `failed`); an
    /// image named here is not looked up in `failing_images`.
    #[serde(default)]
    pub image_behaviours: BTreeMap<String, ImageBehaviour>,
    /// Regions accepted on machine create; anything else is rejected.
    pub regions: Vec<String>,
    /// Region used when a create names none ("near the API endpoint" [S4]).
    pub default_region: String,
    /// A machine booted without `min_secrets_version` reads the app's secrets as they were this
    /// long ago: the host's copy lags writes (REFERENCE §3.2, §4.1, §7). With the minimum it waits
    /// for at least that version. Zero: every boot sees the latest secrets.
    #[serde(default)]
    pub secrets_lag: Duration,
    /// Share of machine list calls (per app and org-wide) served by a replica `machine_list_lag`
    /// behind, which still shows machines as they were before recent updates and destroys
    /// (REFERENCE §3.9, §7; `replica.rs`). 0 (the default): only new machines lag.
    #[serde(default)]
    pub stale_list_reads: f64,
    /// Seeds the fault RNG so runs are reproducible.
    pub seed: u64,
    /// Call-log entries kept (oldest dropped first).
    pub max_call_log: usize,
    /// A request carrying the app's affinity cookie (set on create, `Path=/v1/apps/<app>`) skips
    /// the post-create 404 window: it lands on the backend that did the write [S10]. Off by
    /// default, since only fly-go's test fixture documents the cookie.
    pub affinity_cookie_skips_window: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            orgs: vec![OrgConfig {
                slug: "vyx-test".into(),
                name: "Vyx Test".into(),
            }],
            tokens: Vec::new(),
            any_token_org: Some("vyx-test".into()),
            timings: Timings::default(),
            rate_limits: RateLimitConfig::default(),
            faults: Faults::default(),
            failing_images: Vec::new(),
            image_behaviours: BTreeMap::new(),
            regions: [
                "sin", "iad", "ams", "fra", "syd", "sjc", "lhr", "nrt", "ord", "cdg",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            default_region: "iad".into(),
            secrets_lag: Duration::from_secs(1),
            stale_list_reads: 0.0,
            seed: 42,
            max_call_log: 100_000,
            affinity_cookie_skips_window: false,
        }
    }
}

impl SimConfig {
    /// Default config with zero delays/windows, no secrets lag and no rate limits: for tests that
    /// exercise something else and want speed.
    pub fn fast() -> Self {
        SimConfig {
            timings: Timings::instant(),
            rate_limits: RateLimitConfig::disabled(),
            secrets_lag: Duration::ZERO,
            ..SimConfig::default()
        }
    }

    /// Adds a token that may act in `org` (creating the org entry if needed).
    pub fn with_token(mut self, token: &str, org: &str) -> Self {
        if !self.orgs.iter().any(|o| o.slug == org) {
            self.orgs.push(OrgConfig {
                slug: org.into(),
                name: org.into(),
            });
        }
        self.tokens.push(TokenConfig {
            token: token.into(),
            orgs: vec![org.into()],
        });
        self
    }
}
