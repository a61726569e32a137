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
