//! The machine config a user's app runs (DESIGN §3), and the comparison that says whether a running
//! machine matches it. Only the fields vyx-fleet manages are set or compared; everything else Fly or
//! an operator put in the config is carried over untouched (updates send the whole config).

use std::collections::BTreeMap;
use uuid::Uuid;

use crate::fly::{
    Autostop, Check, FlyDuration, Guest, MachineConfig, Port, Restart, Service, StopConfig,
};
use crate::reconcile::observed::{META_MANAGED_BY, META_MANAGED_BY_VALUE, META_OP, META_USER_ID};
use crate::reconcile::spec::{AppSpec, machine_env};

/// Port the Go screener listens on inside the machine.
const INTERNAL_PORT: u16 = 8080;

/// Grace the machine gets on SIGTERM before Fly kills it.
const STOP_TIMEOUT_SECS: u64 = 10;

/// The managed parts of the config for `user_id`, laid over `base` (the machine's current config, or
/// the default for a new machine).
pub fn desired_config(
    base: MachineConfig,
    spec: &AppSpec,
    image: &str,
    user_id: Uuid,
    op: &str,
) -> MachineConfig {
    let mut c = base;
    c.image = image.to_string();
    c.env = machine_env(spec, user_id);
    let mut guest = c.guest.take().unwrap_or_default();
    guest.cpu_kind = Some("shared".into());
    guest.cpus = Some(spec.cpus);
    guest.memory_mb = Some(spec.memory_mb);
    c.guest = Some(guest);
    c.metadata
        .insert(META_MANAGED_BY.into(), META_MANAGED_BY_VALUE.into());
    c.metadata.insert(META_USER_ID.into(), user_id.to_string());
    c.metadata.insert(META_OP.into(), op.to_string());
    c.restart = Some(Restart {
        policy: Some("always".into()),
        ..c.restart.take().unwrap_or_default()
    });
    c.auto_destroy = Some(false);
    c.services = vec![service()];
    c.stop_config = Some(StopConfig {
        signal: Some("SIGTERM".into()),
        timeout: Some(FlyDuration::from_secs(STOP_TIMEOUT_SECS)),
        ..Default::default()
    });
    c
}

fn service() -> Service {
    Service {
        protocol: Some("tcp".into()),
        internal_port: Some(INTERNAL_PORT),
        ports: vec![
            Port {
                port: Some(80),
                handlers: vec!["http".into()],
                force_https: Some(true),
                ..Default::default()
            },
            Port {
                port: Some(443),
                handlers: vec!["tls".into(), "http".into()],
                ..Default::default()
            },
        ],
        // The app runs 24/7: the proxy must never stop it for idleness.
        autostart: Some(true),
        autostop: Some(Autostop::Off),
        min_machines_running: Some(1),
        checks: vec![Check {
            kind: Some("http".into()),
            port: Some(INTERNAL_PORT),
            method: Some("GET".into()),
            path: Some("/health".into()),
            interval: Some(FlyDuration::from_secs(15)),
            timeout: Some(FlyDuration::from_secs(2)),
            grace_period: Some(FlyDuration::from_secs(10)),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Does `actual` already run what `desired` asks for? Compared field by field on what vyx-fleet
/// manages, so values the platform adds (`fly_*` metadata, defaults echoed back) are not drift.
pub(crate) fn matches(actual: &MachineConfig, desired: &MachineConfig) -> bool {
    let guest = |g: &Option<Guest>| {
        g.as_ref()
            .map(|g| (g.cpu_kind.clone(), g.cpus, g.memory_mb))
            .unwrap_or_default()
    };
    let ours = |m: &BTreeMap<String, String>| {
        [META_MANAGED_BY, META_USER_ID]
            .iter()
            .map(|k| m.get(*k).cloned())
            .collect::<Vec<_>>()
    };
    let svc = |s: &[Service]| {
        s.iter()
            .map(|s| {
                (
                    s.internal_port,
                    s.ports.iter().map(|p| p.port).collect::<Vec<_>>(),
                    s.checks
                        .iter()
                        .map(|c| (c.kind.clone(), c.port, c.path.clone()))
                        .collect::<Vec<_>>(),
                )
            })
            .collect::<Vec<_>>()
    };
    actual.image == desired.image
        && actual.env == desired.env
        && guest(&actual.guest) == guest(&desired.guest)
        && ours(&actual.metadata) == ours(&desired.metadata)
        && actual.restart.as_ref().and_then(|r| r.policy.clone())
            == desired.restart.as_ref().and_then(|r| r.policy.clone())
        && svc(&actual.services) == svc(&desired.services)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> AppSpec {
        crate::reconcile::spec::test_spec()
    }

    #[test]
    fn the_config_runs_the_user_dedicated_screener_without_secrets_in_env() {
        let u = Uuid::from_u128(9);
        let c = desired_config(MachineConfig::default(), &spec(), "img:1", u, "op1");
        assert_eq!(c.env["USER_ID"], u.to_string());
        assert_eq!(c.env["RUN_MODE"], "user_dedicated");
        assert_eq!(c.env["SUPABASE_URL"], "https://x.supabase.co");
        assert!(
            !c.env.values().any(|v| v == "k"),
            "service key must be a Fly secret"
        );
        assert_eq!(
            c.restart.as_ref().unwrap().policy.as_deref(),
            Some("always")
        );
        assert_eq!(c.metadata[META_USER_ID], u.to_string());
        let g = c.guest.as_ref().unwrap();
        assert_eq!(
            (g.cpus, g.memory_mb, g.cpu_kind.as_deref()),
            (Some(2), Some(512), Some("shared"))
        );
        assert_eq!(c.services[0].checks[0].path.as_deref(), Some("/health"));
    }

    #[test]
    fn platform_additions_are_kept_and_are_not_drift() {
        let u = Uuid::from_u128(9);
        let mut actual = desired_config(MachineConfig::default(), &spec(), "img:1", u, "op1");
        actual
            .metadata
            .insert("fly_platform_version".into(), "v2".into());
        actual
            .extra
            .insert("init".into(), serde_json::json!({"cmd": ["x"]}));
        let desired = desired_config(actual.clone(), &spec(), "img:1", u, "op2");
        assert!(matches(&actual, &desired));
        assert_eq!(desired.metadata["fly_platform_version"], "v2");
        assert!(desired.extra.contains_key("init"));
    }

    #[test]
    fn image_env_and_size_changes_are_drift() {
        let u = Uuid::from_u128(9);
        let actual = desired_config(MachineConfig::default(), &spec(), "img:1", u, "op1");
        assert!(!matches(
            &actual,
            &desired_config(actual.clone(), &spec(), "img:2", u, "op1")
        ));
        let mut bigger = spec();
        bigger.memory_mb = 1024;
        assert!(!matches(
            &actual,
            &desired_config(actual.clone(), &bigger, "img:1", u, "op1")
        ));
        let mut tampered = actual.clone();
        tampered.env.insert("RUN_MODE".into(), "shared".into());
        assert!(!matches(&tampered, &actual));
    }
}
