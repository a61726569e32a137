//! The target an app converges to, derived from the settings, and the digests that detect drift
//! without a per-app Fly call (invariant 9: a quiet pass costs only the list pages).

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

pub use crate::model::cost::monthly_cost_estimate_usd;
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
pub(crate) fn machine_env(spec: &AppSpec, user_id: uuid::Uuid) -> BTreeMap<String, String> {
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
pub(crate) const LAYOUT_VERSION: u32 = 1;

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

/// The identity of the machine spec every app should run: image, guest, region, env,
/// services/checks layout ([`config_digest`]) and the secrets the machine must boot with
/// ([`secrets_digest`]). Any change to it is a rollout: apps move to it in waves. Stored per row
/// (`spec_digest`, what the app runs) and in `vyx_fleet.rollout` (the target).
///
/// Not in it, on purpose: the org (not part of a machine), `USER_ID` (per user, never changes for
/// a row) and Fly's per-app secrets *version* (a counter each app has its own value of; the digest
/// says which values, the version only which write delivered them). Built from the two digests so
/// the parts already stored per row stay comparable on their own.
pub fn spec_digest(spec: &AppSpec) -> String {
    let mut h = Sha256::new();
    h.update(b"vyx-fleet spec v1\n");
    for (name, value) in [
        ("image", spec.image.as_str()),
        ("config", config_digest(spec).as_str()),
        ("secrets", secrets_digest(&spec.secrets).as_str()),
    ] {
        // Length-prefixed: no value can be forged to look like another field.
        h.update(name.as_bytes());
        h.update((value.len() as u64).to_be_bytes());
        h.update(value.as_bytes());
    }
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The non-secret parts of a spec, as a rollout records its target (`vyx_fleet.rollout`), so a
/// later rollout can fall back to it while halted. Secret values are never in it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredSpec {
    pub image: String,
    pub region: String,
    pub cpus: u32,
    pub memory_mb: u32,
    pub supabase_url: Option<String>,
    /// The layout this version builds; a stored spec of another layout cannot be rebuilt whole.
    pub layout: u32,
}

impl StoredSpec {
    pub(crate) fn of(spec: &AppSpec) -> StoredSpec {
        StoredSpec {
            image: spec.image.clone(),
            region: spec.region.clone(),
            cpus: spec.cpus,
            memory_mb: spec.memory_mb,
            supabase_url: spec.supabase_url.clone(),
            layout: LAYOUT_VERSION,
        }
    }

    /// The spec to converge to: these parts over `current` (its org and secrets; the old secret
    /// values are not known). `None` when this version cannot build it (another layout).
    pub(crate) fn over(&self, current: &AppSpec) -> Option<AppSpec> {
        (self.layout == LAYOUT_VERSION).then(|| AppSpec {
            image: self.image.clone(),
            region: self.region.clone(),
            cpus: self.cpus,
            memory_mb: self.memory_mb,
            supabase_url: self.supabase_url.clone(),
            ..current.clone()
        })
    }
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
    fn every_part_of_the_machine_spec_changes_the_spec_digest() {
        let base = spec_digest(&spec());
        type Change = Box<dyn Fn(&mut AppSpec)>;
        let changes: Vec<(&str, Change)> = vec![
            ("image", Box::new(|s| s.image = "img:2".into())),
            ("region", Box::new(|s| s.region = "ams".into())),
            ("cpus", Box::new(|s| s.cpus = 4)),
            ("memory", Box::new(|s| s.memory_mb = 1024)),
            (
                "env SUPABASE_URL",
                Box::new(|s| s.supabase_url = Some("https://y.supabase.co".into())),
            ),
            (
                "env SUPABASE_URL unset",
                Box::new(|s| s.supabase_url = None),
            ),
            (
                "rotated secret",
                Box::new(|s| {
                    s.secrets
                        .insert("SUPABASE_SERVICE_ROLE_KEY".into(), Secret::new("k2"));
                }),
            ),
            (
                "added secret",
                Box::new(|s| {
                    s.secrets.insert("GEMINI_API_KEY".into(), Secret::new("g"));
                }),
            ),
            ("removed secret", Box::new(|s| s.secrets.clear())),
        ];
        for (what, change) in changes {
            let mut s = spec();
            change(&mut s);
            assert_ne!(spec_digest(&s), base, "{what} must change the spec digest");
        }
    }

    #[test]
    fn the_spec_digest_ignores_the_org_and_the_order_secrets_were_listed_in() {
        let mut a = spec();
        a.secrets.insert("A_KEY".into(), Secret::new("a"));
        a.secrets.insert("Z_KEY".into(), Secret::new("z"));
        let mut b = spec();
        b.secrets.insert("Z_KEY".into(), Secret::new("z"));
        b.secrets.insert("A_KEY".into(), Secret::new("a"));
        b.org_slug = "other-org".into();
        assert_eq!(spec_digest(&a), spec_digest(&b));
        assert_eq!(spec_digest(&a), spec_digest(&a.clone()), "deterministic");
    }

    #[test]
    fn the_spec_digest_shows_no_secret_and_no_input() {
        let d = spec_digest(&spec());
        assert_eq!(d.len(), 64);
        assert!(d.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(!d.contains("k1") && !d.contains("img"));
    }

    proptest::proptest! {
        /// Two images, or a secret moved between name and value, never share a digest.
        #[test]
        fn distinct_images_and_secrets_give_distinct_spec_digests(
            a in "[a-z0-9:/.]{1,20}", b in "[a-z0-9:/.]{1,20}",
            name in "[A-Z]{1,6}", value in "[a-z]{1,6}",
        ) {
            let mut x = spec();
            x.image = a.clone();
            let mut y = spec();
            y.image = b.clone();
            proptest::prop_assert_eq!(a == b, spec_digest(&x) == spec_digest(&y));
            let mut p = spec();
            p.secrets.insert(format!("{name}{value}"), Secret::new(""));
            let mut q = spec();
            q.secrets.insert(name.clone(), Secret::new(value.clone()));
            proptest::prop_assert_ne!(spec_digest(&p), spec_digest(&q));
        }
    }
}
