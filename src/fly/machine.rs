//! Machine wire types: state, machine, checks, org-wide listing, wait answer (REFERENCE §3).
//!
//! Lenient where Fly is loose (missing fields, Go `null`s, unknown states), strict only about
//! `id`: a machine without one is a decode error, never a panic.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::config::{Guest, MachineConfig};
use super::duration::null_default;

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
