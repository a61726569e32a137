//! The target an app converges to, derived from the settings, and the digests that detect drift
//! without a per-app Fly call (invariant 9: a quiet pass costs only the list pages).

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

use crate::secret::Secret;

/// Everything vyx-fleet decides about a user's machine, except the user id and the image (the image
/// is chosen per row by the planner, so a halted rollout can keep old images in place).
#[derive(Debug, Clone)]
pub struct AppSpec {
    pub org_slug: String,
    pub image: String,
    pub region: String,
    pub cpus: u32,
    pub memory_mb: u32,
    pub supabase_url: Option<String>,
    /// Fly secrets for every app: the service key and the `USER_APP_SECRETS` copies.
    pub secrets: BTreeMap<String, Secret>,
}

/// The env a user's machine runs with. Secrets are never in here (DESIGN §3: never in `config.env`).
pub fn machine_env(spec: &AppSpec, user_id: uuid::Uuid) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("USER_ID".to_string(), user_id.to_string());
    env.insert("RUN_MODE".to_string(), "user_dedicated".to_string());
    if let Some(url) = &spec.supabase_url {
        env.insert("SUPABASE_URL".to_string(), url.clone());
    }
    env
}

/// Version of the machine layout below (services, checks, restart policy, stop config). Bump it when
/// the config built in `execute::machine_config` changes shape, so every app is rolled once.
pub const LAYOUT_VERSION: u32 = 1;

/// Digest of the non-image, non-secret parts of the config, as recorded in `config_digest` after a
/// successful apply. Image, guest and region are compared against the org machine list directly.
pub fn config_digest(spec: &AppSpec) -> String {
    let mut h = Sha256::new();
    h.update(format!("layout={LAYOUT_VERSION}\n").as_bytes());
    h.update(format!("region={}\n", spec.region).as_bytes());
    h.update(format!("guest=shared/{}/{}\n", spec.cpus, spec.memory_mb).as_bytes());
    h.update(format!("supabase_url={:?}\n", spec.supabase_url).as_bytes());
    hex(&h.finalize())
}

/// Digest over secret names and values: changes when a key rotates or `USER_APP_SECRETS` changes.
/// Stored in the row, so it is a one-way digest with a domain prefix; the values never leave memory.
pub fn secrets_digest(secrets: &BTreeMap<String, Secret>) -> String {
    let mut h = Sha256::new();
    h.update(b"vyx-fleet secrets v1\n");
    for (name, value) in secrets {
        h.update((name.len() as u64).to_be_bytes());
        h.update(name.as_bytes());
        h.update((value.expose().len() as u64).to_be_bytes());
        h.update(value.expose().as_bytes());
    }
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Rough monthly cost of one always-on machine, REFERENCE §8: shared-cpu-1x 256 MB ≈ $1.94/month,
/// each extra shared vCPU the same again, extra RAM ≈ $5 per GB-month. A floor, not an invoice.
pub fn monthly_cost_estimate_usd(cpus: u32, memory_mb: u32) -> f64 {
    let base = 1.94 * f64::from(cpus);
    let included_mb = 256.0 * f64::from(cpus);
    let extra_gb = ((f64::from(memory_mb) - included_mb).max(0.0)) / 1024.0;
    ((base + extra_gb * 5.0) * 100.0).round() / 100.0
}

/// The spec the unit tests share.
#[cfg(test)]
pub(crate) fn test_spec() -> AppSpec {
    AppSpec {
        org_slug: "vyx".into(),
        image: "img:1".into(),
        region: "sin".into(),
        cpus: 2,
        memory_mb: 512,
        supabase_url: Some("https://x.supabase.co".into()),
        secrets: BTreeMap::from([("SUPABASE_SERVICE_ROLE_KEY".into(), Secret::new("k1"))]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> AppSpec {
        test_spec()
    }

    #[test]
    fn rotating_a_secret_changes_the_secrets_digest_but_not_the_config_digest() {
        let a = spec();
        let mut b = spec();
        b.secrets
            .insert("SUPABASE_SERVICE_ROLE_KEY".into(), Secret::new("k2"));
        assert_ne!(secrets_digest(&a.secrets), secrets_digest(&b.secrets));
        assert_eq!(config_digest(&a), config_digest(&b));
        assert!(!secrets_digest(&a.secrets).contains("k1"));
    }

    #[test]
    fn the_image_is_not_part_of_the_config_digest() {
        let a = spec();
        let mut b = spec();
        b.image = "img:2".into();
        assert_eq!(config_digest(&a), config_digest(&b));
        b.memory_mb = 1024;
        assert_ne!(config_digest(&a), config_digest(&b));
    }

    #[test]
    fn cost_grows_with_size() {
        assert_eq!(monthly_cost_estimate_usd(1, 256), 1.94);
        assert!(monthly_cost_estimate_usd(2, 512) < monthly_cost_estimate_usd(2, 1024));
    }
}
