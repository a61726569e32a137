//! Wire types for apps, requests, secrets and IPs (REFERENCE §2–§5); machines are in `machine`.
//!
//! Decoding is lenient where Fly is loose (missing fields, Go `null`s, unknown states) and strict
//! only about what identifies a thing (`id`, `name`): an answer without those is a decode error,
//! never a panic.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::config::MachineConfig;
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
