//! Wire types for apps, machines, org-wide listings, IPs and requests (REFERENCE §2–§5).
//!
//! Decoding is lenient where Fly is loose (missing fields, Go `null`s, unknown states) and strict
//! only about what identifies a thing (`id`, `name`): an answer without those is a decode error,
//! never a panic.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::config::{Guest, MachineConfig};
use super::duration::{FlyDuration, null_default};

// ---------------------------------------------------------------------------------------------
// Apps

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct App {
    #[serde(default, deserialize_with = "null_default")]
    pub id: String,
    pub name: String,
    /// `pending`, `deployed`, `suspended`, …
    #[serde(default, deserialize_with = "null_default")]
    pub status: String,
    #[serde(default)]
    pub organization: Option<Organization>,
    #[serde(default)]
    pub network: Option<String>,
    #[serde(default)]
    pub machine_count: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Organization {
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    #[serde(default, deserialize_with = "null_default")]
    pub slug: String,
}

/// `POST /v1/apps` body. fly-go's field names (`name`, not the older `app_name`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CreateAppRequest {
    pub name: String,
    pub org_slug: String,
    /// Own 6PN network so users cannot reach each other over `.internal` (DESIGN §3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Makes a retried create return the first app instead of `name_taken` (spec-only so far).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct CreatedApp {
    #[serde(default, deserialize_with = "null_default")]
    pub id: String,
    /// Unix milliseconds.
    #[serde(default)]
    pub created_at: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListAppsPage {
    #[serde(default, deserialize_with = "null_default")]
    pub apps: Vec<App>,
    #[serde(default)]
    pub next_cursor: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Machines

/// Machine state (REFERENCE §3.6); states this client does not know are kept in `Other`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum MachineState {
    Creating,
    Created,
    Starting,
    Started,
    Stopping,
    Stopped,
    Suspending,
    Suspended,
    Restarting,
    Updating,
    Replacing,
    Destroying,
    Destroyed,
    Replaced,
    Migrated,
    Failed,
    LaunchFailed,
    Other(String),
    /// The field was absent.
    #[default]
    Unknown,
}

impl MachineState {
    pub fn as_str(&self) -> &str {
        use MachineState::*;
        match self {
            Creating => "creating",
            Created => "created",
            Starting => "starting",
            Started => "started",
            Stopping => "stopping",
            Stopped => "stopped",
            Suspending => "suspending",
            Suspended => "suspended",
            Restarting => "restarting",
            Updating => "updating",
            Replacing => "replacing",
            Destroying => "destroying",
            Destroyed => "destroyed",
            Replaced => "replaced",
            Migrated => "migrated",
            Failed => "failed",
            LaunchFailed => "launch_failed",
            Other(s) => s,
            Unknown => "",
        }
    }

    pub fn parse(s: &str) -> Self {
        use MachineState::*;
        match s {
            "creating" => Creating,
            "created" => Created,
            "starting" => Starting,
            "started" => Started,
            "stopping" => Stopping,
            "stopped" => Stopped,
            "suspending" => Suspending,
            "suspended" => Suspended,
            "restarting" => Restarting,
            "updating" => Updating,
            "replacing" => Replacing,
            "destroying" => Destroying,
            "destroyed" => Destroyed,
            "replaced" => Replaced,
            "migrated" => Migrated,
            "failed" => Failed,
            "launch_failed" => LaunchFailed,
            "" => Unknown,
            other => Other(other.to_owned()),
        }
    }

    /// The machine is gone or superseded for good (`destroyed`, `replaced`, `migrated`) or on its
    /// way there (`destroying`): lists may still show it; do not act on it (REFERENCE §7).
    pub fn is_gone(&self) -> bool {
        use MachineState::*;
        matches!(self, Destroying | Destroyed | Replaced | Migrated)
    }
}

impl fmt::Display for MachineState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for MachineState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for MachineState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Option::<String>::deserialize(d)?
            .map(|s| MachineState::parse(&s))
            .unwrap_or_default())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub id: String,
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    #[serde(default)]
    pub state: MachineState,
    #[serde(default, deserialize_with = "null_default")]
    pub region: String,
    /// Current config version; pass as `current_version` on update and `version` on wait.
    #[serde(default)]
    pub version: Option<String>,
    /// Deprecated alias of `version`.
    #[serde(default)]
    pub instance_id: Option<String>,
    #[serde(default)]
    pub private_ip: Option<String>,
    /// Absent with `summary=true`.
    #[serde(default)]
    pub config: Option<MachineConfig>,
    #[serde(default)]
    pub image_ref: Option<ImageRef>,
    /// Absent until the first check runs.
    #[serde(default, deserialize_with = "null_default")]
    pub checks: Vec<CheckStatus>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
    /// `ok` | `unknown` | `unreachable`.
    #[serde(default)]
    pub host_status: Option<String>,
    /// Only on create with `lease_ttl`.
    #[serde(default)]
    pub nonce: Option<String>,
}

impl Machine {
    /// `version`, falling back to the deprecated `instance_id`.
    pub fn current_version(&self) -> Option<&str> {
        self.version.as_deref().or(self.instance_id.as_deref())
    }

    /// Config metadata (empty when the config was omitted).
    pub fn metadata(&self) -> Option<&BTreeMap<String, String>> {
        self.config.as_ref().map(|c| &c.metadata)
    }

    /// Healthy = `started` and every check `passing` (REFERENCE §3.5). `started` alone only means
    /// the VM booted, so when the config defines checks but none has reported yet, the machine is
    /// not (yet) healthy.
    pub fn is_healthy(&self) -> bool {
        if self.state != MachineState::Started {
            return false;
        }
        let expected = self.config.as_ref().map_or(0, MachineConfig::check_count);
        if self.checks.len() < expected {
            return false;
        }
        self.checks.iter().all(CheckStatus::is_passing)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckStatus {
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// `passing` | `warning` | `critical`.
    #[serde(default, deserialize_with = "null_default")]
    pub status: String,
    #[serde(default, deserialize_with = "null_default")]
    pub output: String,
    #[serde(default)]
    pub updated_at: Option<String>,
}

impl CheckStatus {
    pub fn is_passing(&self) -> bool {
        self.status == "passing"
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    #[serde(default)]
    pub registry: Option<String>,
    #[serde(default)]
    pub repository: Option<String>,
    #[serde(default)]
    pub tag: Option<String>,
    #[serde(default)]
    pub digest: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub labels: BTreeMap<String, String>,
}

/// One entry of `GET /v1/orgs/{org}/machines` (REFERENCE §3.9).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OrgMachine {
    #[serde(default, deserialize_with = "null_default")]
    pub app_name: String,
    pub id: String,
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    #[serde(default)]
    pub state: MachineState,
    #[serde(default, deserialize_with = "null_default")]
    pub region: String,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub private_ip: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
    #[serde(default)]
    pub config: Option<OrgMachineConfig>,
}

/// The slice of config the org-wide list carries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OrgMachineConfig {
    #[serde(default, deserialize_with = "null_default")]
    pub image: String,
    #[serde(default)]
    pub guest: Option<Guest>,
    #[serde(default, deserialize_with = "null_default")]
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct OrgMachinesPage {
    #[serde(default, deserialize_with = "null_default")]
    pub machines: Vec<OrgMachine>,
    #[serde(default)]
    pub next_cursor: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub error_regions: Vec<String>,
}

/// Filters for `list_machines` (REFERENCE §3.9).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListMachines {
    /// `metadata.<k>=<v>`; all must match.
    pub metadata: BTreeMap<String, String>,
    /// `include_deleted=`; unset = Fly's default.
    pub include_deleted: Option<bool>,
    /// States to keep (sent comma-separated); empty = Fly's default.
    pub state: Vec<String>,
    pub region: Option<String>,
    /// `summary=true` omits config, checks and events.
    pub summary: bool,
    /// Page size (1–1000); defaults to 500.
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CreateMachineRequest {
    pub config: MachineConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_launch: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_service_registration: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_ttl: Option<u64>,
    /// Boot only with app secrets at least this version (REFERENCE §4.1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_secrets_version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_secrets: Option<bool>,
}

/// `POST …/machines/{id}`: the whole config (REFERENCE §3.4).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UpdateMachineRequest {
    pub config: MachineConfig,
    /// Optimistic-concurrency guard: mismatch → 409, nothing applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_secrets_version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_launch: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_secrets: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_ttl: Option<u64>,
}

/// `POST …/stop` body: `{"signal": "SIGTERM", "timeout": "10s"}`; both optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StopMachineRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<FlyDuration>,
}

/// `GET …/wait` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct WaitResult {
    #[serde(default)]
    pub ok: bool,
    #[serde(default)]
    pub state: MachineState,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub event_id: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Secrets and IPs

#[derive(Debug, Deserialize)]
pub(crate) struct SetSecretsResponse {
    #[serde(default)]
    pub version: Option<u64>,
    /// Deprecated spelling, still sent.
    #[serde(default, rename = "Version")]
    pub version_deprecated: Option<u64>,
}

/// IP types for `POST …/ip_assignments` (REFERENCE §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IpType {
    /// Dedicated IPv4 (billed).
    V4,
    /// Dedicated public IPv6 (free).
    V6,
    /// Shared IPv4 (free; routes by hostname).
    SharedV4,
    /// Flycast.
    PrivateV6,
    EgressV4,
    EgressV6,
    EgressPair,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct AssignIpRequest {
    #[serde(rename = "type")]
    pub ip_type: IpType,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpAssignment {
    /// Null for `egress_pair` (see `ip_pair`).
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub shared: bool,
    #[serde(default)]
    pub service_name: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub egress: bool,
    /// Only for Flycast (`private_v6`).
    #[serde(default)]
    pub network: Option<IpNetwork>,
    #[serde(default)]
    pub ip_pair: Option<IpPair>,
}

impl IpAssignment {
    /// The shared IPv4 every `<app>.fly.dev` needs.
    pub fn is_shared_v4(&self) -> bool {
        self.shared && !self.egress
    }

    /// A public (non-Flycast, non-egress) IPv6.
    pub fn is_public_v6(&self) -> bool {
        !self.shared
            && !self.egress
            && self.network.is_none()
            && self.ip.as_deref().is_some_and(|ip| ip.contains(':'))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpNetwork {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub org_slug: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpPair {
    #[serde(default)]
    pub v4: Option<String>,
    #[serde(default)]
    pub v6: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListIpsResponse {
    #[serde(default, deserialize_with = "null_default")]
    pub ips: Vec<IpAssignment>,
}

#[cfg(test)]
#[path = "types_tests.rs"]
mod tests;
