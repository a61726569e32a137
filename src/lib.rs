//! vyx-fleet: keeps one Fly.io app per paying Vyx user.
//!
//! The crate is laid out as the loop it runs:
//! - [`reconcile`]'s `desired` and `observe`: read what should exist (Postgres) and what does (Fly);
//! - [`reconcile::plan`]: a pure function from those to actions;
//! - [`reconcile`]'s `execute`: performs one action, recording progress before and after every Fly
//!   call;
//! - [`reconcile::Controller`]: schedules passes (interval, NOTIFY, leadership).
//!
//! Around it: [`model`] (the domain types the layers share), [`config`], [`db`] (queries,
//! migrations, lease, NOTIFY), [`fly`] (typed Machines API client), [`sim`] (an independent Fly
//! Machines API simulator), [`liveness`], [`http`] and [`metrics`], [`telemetry`], [`admin`] (the
//! dashboard and its controls) and [`alerts`] (webhook alerts). The modules form layers without
//! cycles (docs/ARCHITECTURE.md, "Layering"; checked by `scripts/module-deps`).

pub mod admin;
pub mod alerts;
pub mod cli;
pub mod config;
pub mod db;
pub mod demo;
pub mod failpoint;
pub mod fleet_status;
pub mod fly;
pub mod http;
pub mod liveness;
pub mod metrics;
pub mod model;
pub mod pgtemp;
pub mod reconcile;
pub mod retry;
pub mod secret;
pub mod sim;
pub mod telemetry;
pub mod wiring;

/// jemalloc, not glibc's malloc. The daemon runs for months on a multi-threaded runtime whose
/// workers free what other workers allocated; glibc's per-thread arenas are known to keep such
/// memory, jemalloc returns unused pages on its own (its decay). Measured at 100,000 apps (the
/// bench's steady section, same code, same machine): the full pass peaked 5 MB lower above a
/// purged base (138 against 144 MB) with 7 % less CPU. Declared in the library so every binary
/// that runs the controller (the daemon, the bench, the tests) runs it on the same allocator.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
