//! `MachineConfig` (REFERENCE §3.3): typed fields the controller reads and writes, plus everything
//! else kept verbatim.
//!
//! Updates send the whole config (§3.4), so every struct here carries `extra`: unknown fields are
//! kept on GET and sent back on POST. Optional fields are skipped when unset rather than sent as
//! `null`, and `null` collections from Go are read as empty.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::duration::{FlyDuration, null_default};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineConfig {
    #[serde(default, deserialize_with = "null_default")]
    pub image: String,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<Guest>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub metadata: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<Restart>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub services: Vec<Service>,
    /// Top-level checks, keyed by name.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub checks: BTreeMap<String, Check>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_config: Option<StopConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_destroy: Option<bool>,
    /// Every other field (`init`, `files`, `mounts`, `dns`, `size`, …), round-tripped untouched.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl MachineConfig {
    /// How many health checks this config defines (service checks plus top-level checks).
    pub fn check_count(&self) -> usize {
        self.checks.len() + self.services.iter().map(|s| s.checks.len()).sum::<usize>()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Guest {
    /// `shared` or `performance`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u32>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Restart {
    /// `no` | `always` | `on-failure`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Service {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_port: Option<u16>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ports: Vec<Port>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autostart: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autostop: Option<Autostop>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_machines_running: Option<u32>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub checks: Vec<Check>,
    /// `concurrency`, `force_instance_key`, …
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Port {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub handlers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_https: Option<bool>,
    /// `start_port`, `end_port`, `tls_options`, `http_options`, …
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A health check: an entry of `services[].checks` or a value of the top-level `checks` map.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// `tcp` or `http`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<FlyDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<FlyDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period: Option<FlyDuration>,
    /// `protocol`, `headers`, `tls_skip_verify`, top-level `kind`, …
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StopConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<FlyDuration>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `services[].autostop`: a string in requests; responses may echo booleans (`false` = off,
/// `true` = stop). Sent as the string form.
#[derive(Debug, Clone, PartialEq)]
pub enum Autostop {
    Off,
    Stop,
    Suspend,
    /// Anything else, kept verbatim.
    Other(Value),
}

impl Serialize for Autostop {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Autostop::Off => s.serialize_str("off"),
            Autostop::Stop => s.serialize_str("stop"),
            Autostop::Suspend => s.serialize_str("suspend"),
            Autostop::Other(v) => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Autostop {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Ok(match &v {
            Value::Bool(false) => Autostop::Off,
            Value::Bool(true) => Autostop::Stop,
            Value::String(s) if s == "off" => Autostop::Off,
            Value::String(s) if s == "stop" => Autostop::Stop,
            Value::String(s) if s == "suspend" => Autostop::Suspend,
            _ => Autostop::Other(v),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const REFERENCE_CONFIG: &str = r#"{
      "image": "registry.fly.io/shared-image:tag",
      "env": {"USER_ID": "u_123"},
      "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 512, "kernel_args": ["quiet"]},
      "metadata": {"user_id": "u_123", "provisioner_op": "01J"},
      "restart": {"policy": "on-failure", "max_retries": 10},
      "auto_destroy": false,
      "services": [{
        "protocol": "tcp", "internal_port": 8080,
        "ports": [{"port": 80, "handlers": ["http"], "force_https": true},
                  {"port": 443, "handlers": ["tls", "http"], "tls_options": {"alpn": ["h2"]}}],
        "autostart": true, "autostop": "off", "min_machines_running": 1,
        "concurrency": {"type": "requests", "soft_limit": 20, "hard_limit": 25},
        "checks": [{"type": "http", "port": 8080, "method": "GET", "path": "/healthz",
                    "interval": "15s", "timeout": "2s", "grace_period": "5s",
                    "headers": [{"name": "X", "values": ["y"]}]}]
      }],
      "checks": {"alive": {"type": "tcp", "port": 8080, "interval": 15000000000, "timeout": "2s", "kind": "readiness"}},
      "stop_config": {"signal": "SIGTERM", "timeout": "10s"},
      "init": {"cmd": ["serve"], "swap_size_mb": 256},
      "files": [{"guest_path": "/etc/x", "secret_name": "X"}],
      "dns": {"skip_registration": false},
      "future_field": {"nested": [1, 2, 3]}
    }"#;

    #[test]
    fn reference_config_decodes_into_typed_fields() {
        let c: MachineConfig = serde_json::from_str(REFERENCE_CONFIG).unwrap();
        assert_eq!(c.image, "registry.fly.io/shared-image:tag");
        assert_eq!(c.env["USER_ID"], "u_123");
        let g = c.guest.as_ref().unwrap();
        assert_eq!(
            (g.cpu_kind.as_deref(), g.cpus, g.memory_mb),
            (Some("shared"), Some(1), Some(512))
        );
        assert_eq!(
            c.restart.as_ref().unwrap().policy.as_deref(),
            Some("on-failure")
        );
        let svc = &c.services[0];
        assert_eq!(svc.internal_port, Some(8080));
        assert_eq!(svc.ports[0].force_https, Some(true));
        assert_eq!(svc.autostop, Some(Autostop::Off));
        let chk = &svc.checks[0];
        assert_eq!(chk.kind.as_deref(), Some("http"));
        assert_eq!(
            chk.interval.as_ref().and_then(FlyDuration::as_duration),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            c.checks["alive"]
                .interval
                .as_ref()
                .and_then(FlyDuration::as_duration),
            Some(Duration::from_secs(15))
        );
        assert_eq!(c.check_count(), 2);
        assert!(c.extra.contains_key("init") && c.extra.contains_key("future_field"));
    }

    #[test]
    fn round_trip_keeps_unknown_fields_at_every_level() {
        let mut c: MachineConfig = serde_json::from_str(REFERENCE_CONFIG).unwrap();
        c.image = "registry.fly.io/shared-image:v2".into();
        let sent: Value = serde_json::to_value(&c).unwrap();
        let mut want: Value = serde_json::from_str(REFERENCE_CONFIG).unwrap();
        want["image"] = "registry.fly.io/shared-image:v2".into();
        // The only normalisation: integer-nanosecond durations go back as Go strings.
        want["checks"]["alive"]["interval"] = "15s".into();
        assert_eq!(sent, want);
    }

    #[test]
    fn go_nulls_and_boolean_autostop_are_accepted() {
        let c: MachineConfig = serde_json::from_str(
            r#"{"image":"i","env":null,"metadata":null,"services":[{"ports":null,"checks":null,"autostop":true}],"checks":null}"#,
        )
        .unwrap();
        assert!(c.env.is_empty() && c.metadata.is_empty() && c.checks.is_empty());
        assert_eq!(c.services[0].autostop, Some(Autostop::Stop));
        let back = serde_json::to_value(&c).unwrap();
        assert_eq!(back["services"][0]["autostop"], "stop");
        assert!(back.get("env").is_none());
    }

    #[test]
    fn minimal_config_serialises_minimally() {
        let c = MachineConfig {
            image: "img".into(),
            ..Default::default()
        };
        assert_eq!(serde_json::to_string(&c).unwrap(), r#"{"image":"img"}"#);
    }
}
