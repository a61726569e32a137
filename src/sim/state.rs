//! The simulated platform: orgs, apps, machines, IPs, secrets.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub(crate) struct Org {
    pub name: String,
    pub numeric_id: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct SecretEntry {
    pub value: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct IpEntry {
    pub ip: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub region: String,
    pub shared: bool,
    pub service_name: String,
    pub network: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// `checks[]` entry of the Machine JSON [S1].
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct CheckStatus {
    pub name: String,
    pub status: String,
    pub output: String,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct MachineEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    pub source: String,
    pub timestamp: i64,
    /// What caused it, where Fly says: an `exit` event carries `exit_event` [S1].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<Value>,
}

/// Copies of a machine as it was before its recent changes, oldest first, each with the instant it
/// stopped being current: what a list replica that lags still serves (`replica.rs`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Past {
    /// Copies that stopped being current longer ago than this are dropped.
    pub keep: std::time::Duration,
    pub copies: Vec<(Instant, Machine)>,
}

/// A machine lease (REFERENCE §3.10): whoever presents `nonce` may change the machine.
#[derive(Debug, Clone)]
pub(crate) struct Lease {
    pub nonce: String,
    pub owner: String,
    pub description: String,
    pub expires: Instant,
    pub expires_at: DateTime<Utc>,
    /// The machine's version when the lease was taken (the spec's `Lease.version` [S1]).
    pub version: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Machine {
    pub id: String,
    pub name: String,
    pub seq: u64,
    pub region: String,
    pub state: String,
    pub version: String,
    pub private_ip: String,
    pub config: Value,
    /// Earlier `(version, config)` pairs; those versions now count as `replaced` [S6b].
    pub history: Vec<(String, Value)>,
    pub checks: Vec<CheckStatus>,
    pub events: Vec<MachineEvent>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Missing from list endpoints until then (replication lag [S15]).
    pub listed_at: Instant,
    /// Bumped by every user action; a scheduled transition of an older generation is void.
    pub generation: u64,
    /// The machine lease, if one was taken (REFERENCE §3.10); over once `expires` passes.
    pub lease: Option<Lease>,
    /// From the create/update that made the current version: boot only with app secrets at least
    /// this version (REFERENCE §3.2, §4.1).
    pub min_secrets_version: Option<u64>,
    /// From the same request: boot without app secrets.
    pub skip_secrets: bool,
    /// The app's secrets version read at the last boot. Secrets are read when the VM boots; a
    /// running machine keeps them until updated or restarted (REFERENCE §4.3).
    pub booted_secrets_version: Option<u64>,
    /// The platform's clock, shared by every machine of one simulator (`clock.rs`).
    pub clock: std::sync::Arc<super::clock::Clock>,
    /// How far this machine's host clock is off the platform's: its stamps carry it.
    pub host_skew: chrono::TimeDelta,
    /// Earlier copies of this machine, kept while stale list reads are on (`replica.rs`).
    pub past: Option<Box<Past>>,
    /// flyd restarts after exits since the last launch by a user (create, update, start): what the
    /// restart policy's `max_retries` counts (REFERENCE §3.3).
    pub restarts: u64,
}

impl Machine {
    pub fn set_state(&mut self, state: &str, event: &str, source: &str) {
        self.set_state_because(state, event, source, None);
    }

    /// [`Machine::set_state`] with the event's `request` (e.g. an `exit_event`).
    pub fn set_state_because(
        &mut self,
        state: &str,
        event: &str,
        source: &str,
        request: Option<Value>,
    ) {
        let now = self.now();
        self.state = state.to_string();
        self.updated_at = now;
        self.events.push(MachineEvent {
            id: new_version_id(),
            kind: event.to_string(),
            status: state.to_string(),
            source: source.to_string(),
            timestamp: now.timestamp_millis(),
            request,
        });
        if self.events.len() > 50 {
            self.events.remove(0);
        }
    }

    pub fn image(&self) -> &str {
        self.config
            .get("image")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// Enters `starting`: the host reads the app's secrets now (REFERENCE §4.3), from a replica
    /// that holds `replica_secrets_version`; with `min_secrets_version` it waits for at least that
    /// one (REFERENCE §3.2, §4.1).
    pub fn boot(&mut self, replica_secrets_version: u64, event: &str, source: &str) {
        let version = replica_secrets_version.max(self.min_secrets_version.unwrap_or(0));
        self.booted_secrets_version = (!self.skip_secrets).then_some(version);
        self.set_state("starting", event, source);
    }

    /// What this machine's host stamps now (`updated_at`, events, checks), to the millisecond:
    /// the precision the JSON shows, so a stamp read back and sent as `updated_after` is the stamp.
    pub fn now(&self) -> DateTime<Utc> {
        use chrono::SubsecRound;
        (self.clock.now() + self.host_skew).trunc_subsecs(3)
    }

    /// The lease, unless there is none or it has expired.
    pub fn active_lease(&self) -> Option<&Lease> {
        self.lease.as_ref().filter(|l| Instant::now() < l.expires)
    }

    /// `metadata.<k>` of the config, as a string.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.config.get("metadata")?.get(key)?.as_str()
    }
}

#[derive(Debug, Clone)]
pub(crate) struct App {
    pub id: String,
    pub name: String,
    pub org: String,
    pub network: String,
    pub numeric_id: u64,
    pub seq: u64,
    pub created_at: DateTime<Utc>,
    /// Before this instant the app answers 404 on reads (post-create window [S9][S35]).
    pub visible_at: Instant,
    /// Before this instant the app is missing from `GET /v1/apps` [S1].
    pub listed_at: Instant,
    /// `DELETE` accepted; gone once the delete delay passes [S1].
    pub deleting: bool,
    pub machines: BTreeMap<String, Machine>,
    pub secrets: BTreeMap<String, SecretEntry>,
    pub secrets_version: u64,
    /// When each recent secrets version became current, oldest first: what a host's lagging copy
    /// of the app's secrets holds (`App::replica_secrets_version`).
    pub secrets_history: Vec<(Instant, u64)>,
    pub ips: Vec<IpEntry>,
    pub idempotency_key: Option<String>,
}

impl App {
    /// `pending` for a new app (docs example [S3]), `deployed` once a machine runs, `suspended`
    /// when every machine is parked.
    pub fn status(&self) -> &'static str {
        let live: Vec<&Machine> = self
            .machines
            .values()
            .filter(|m| m.state != "destroyed")
            .collect();
        if live.iter().any(|m| m.state == "started") {
            "deployed"
        } else if !live.is_empty()
            && live
                .iter()
                .all(|m| m.state == "stopped" || m.state == "suspended")
        {
            "suspended"
        } else {
            "pending"
        }
    }

    /// Records a secrets write: the next version becomes current now. History older than `lag` is
    /// dropped but for the newest such entry, which a lagging replica still holds.
    pub fn bump_secrets_version(&mut self, lag: std::time::Duration) -> u64 {
        self.secrets_version += 1;
        let now = Instant::now();
        self.secrets_history.push((now, self.secrets_version));
        if let Some(cutoff) = now.checked_sub(lag) {
            let old = self
                .secrets_history
                .iter()
                .take_while(|(t, _)| *t <= cutoff)
                .count();
            self.secrets_history.drain(..old.saturating_sub(1));
        }
        self.secrets_version
    }

    /// The secrets version a host boots with when the machine did not ask for a minimum: the one
    /// current `lag` ago (REFERENCE §3.2, §4.1: without `min_secrets_version` a machine may boot
    /// with an older snapshot; §7 "Secrets not applied"). An app younger than `lag` gives its first
    /// version.
    pub fn replica_secrets_version(&self, lag: std::time::Duration) -> u64 {
        let Some(cutoff) = Instant::now().checked_sub(lag) else {
            return self.secrets_history.first().map_or(0, |(_, v)| *v);
        };
        self.secrets_history
            .iter()
            .rev()
            .find(|(t, _)| *t <= cutoff)
            .or(self.secrets_history.first())
            .map_or(self.secrets_version, |(_, v)| *v)
    }

    pub fn machine_count(&self) -> usize {
        self.machines
            .values()
            .filter(|m| m.state != "destroyed")
            .count()
    }
}

#[derive(Debug, Default)]
pub(crate) struct World {
    pub orgs: BTreeMap<String, Org>,
    pub apps: BTreeMap<String, App>,
    /// App names by creation number, so an app listing walks one page, not the fleet. Written where
    /// apps are inserted; an entry whose app is gone (or is a newer app of that name) is stale and
    /// skipped, so removals need not touch it.
    pub apps_by_seq: BTreeMap<u64, String>,
    pub seq: u64,
    pub ip_seq: u64,
}

impl World {
    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// The app `seq` names, if it is still the app of that creation number.
    pub fn app_by_seq(&self, seq: u64) -> Option<&App> {
        let name = self.apps_by_seq.get(&seq)?;
        self.apps.get(name).filter(|a| a.seq == seq)
    }

    pub fn ensure_org(&mut self, slug: &str, name: &str) {
        let n = self.orgs.len() as u64 + 1;
        self.orgs.entry(slug.to_string()).or_insert_with(|| Org {
            name: name.to_string(),
            numeric_id: 10_000 + n,
        });
    }
}

/// A 14-hex-char machine id, like `7811701f564258`.
pub(crate) fn new_machine_id() -> String {
    let u = uuid::Uuid::new_v4().simple().to_string();
    u[..14].to_string()
}

/// A 26-char Crockford base32 id, the shape of machine `version`s and event ids [S1].
pub(crate) fn new_version_id() -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut v = uuid::Uuid::new_v4().as_u128();
    let mut out = [0u8; 26];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(v & 31) as usize];
        v >>= 5;
    }
    out.iter().map(|&b| b as char).collect()
}

pub(crate) fn sha256_hex(s: &str) -> String {
    let d = Sha256::digest(s.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_fly_shapes() {
        let v = new_version_id();
        assert_eq!(v.len(), 26);
        assert!(v.chars().all(|c| c.is_ascii_alphanumeric()));
        let m = new_machine_id();
        assert_eq!(m.len(), 14);
        assert_ne!(new_machine_id(), m);
    }
}
