//! Typed Fly Machines API client (REFERENCE.md): one [`FlyClient`], one error enum
//! ([`FlyError`]), wire types, client-side rate limiting and a conservative retry policy.
//!
//! Layout:
//! - `client`: options, the request loop and its retry policy; `transport`: capped body reads;
//!   `affinity`: the bounded, expiring store for Fly's affinity cookies;
//! - `apps`, `machines`, `secrets`, `ips`: one `impl FlyClient` block per resource;
//! - `types`, `machine`, `config`, `duration`: wire types;
//! - `error` ([`FlyError`]) and `classify` (status + body → error, `Retry-After`);
//! - `gate` ([`WriteGate`]: no write leaves after the leader's acting deadline);
//! - `ratelimit` (token buckets), `route` (the fixed set of calls), `token` (auth header).

mod affinity;
mod apps;
mod classify;
mod client;
mod config;
mod duration;
mod error;
mod gate;
mod ips;
mod machine;
mod machines;
mod ratelimit;
mod route;
mod secrets;
pub mod token;
mod transport;
mod types;
mod window;

pub use classify::{MAX_MESSAGE_CHARS, parse_retry_after};
pub use client::{ClientOptions, DEFAULT_LIST_PAGE_SIZE, FlyClient, MAX_BODY_BYTES};
pub use config::{Autostop, Check, Guest, MachineConfig, Port, Restart, Service, StopConfig};
pub use duration::{FlyDuration, format_go_duration, parse_go_duration};
pub use error::{CallInfo, FlyError};
pub use gate::{Verifier, WriteGate};
pub use machine::{
    CheckStatus, ImageRef, Machine, MachineState, OrgMachine, OrgMachineConfig, WaitResult,
};
pub use machines::{ListOrgMachines, OrgMachineList, OrgPages};
pub use ratelimit::{BucketSpec, RateLimiter, RateLimits};
pub use route::Route;
pub use types::{
    App, CreateAppRequest, CreateMachineRequest, CreatedApp, IpAssignment, IpNetwork, IpPair,
    IpType, ListMachines, Organization, StopMachineRequest, UpdateMachineRequest,
};
pub use window::WindowSpec;

#[cfg(test)]
mod tests;
