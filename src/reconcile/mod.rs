//! The reconcile loop: read what should exist (`desired`) and what does (`recorded` rows,
//! `observe`d Fly state), decide ([`plan`], pure), act (`execute`), one pass at a time, on the
//! schedule the [`Controller`] keeps.
//!
//! Layout:
//! - `controller` (the schedule, leadership, NOTIFY), `sweep` (which users need work),
//!   `queue` (one user at a time, bounded), `targeted` (one user's run), `pass` (a full pass),
//!   `pass_rollout` (the rollout's share of a pass), `leadership` (the lease, kept and lost);
//! - `desired`, `recorded`, `observed` and `observe` (with `cache`): the planner's three inputs;
//! - [`plan`] with `plan_rollout`, `plan_health`, `breaker`, `rollout`: the pure decision;
//! - `execute`: one action against Fly, recorded before and after every call;
//! - `prober` (with `probe_schedule`), `wake`, `naming`, `spec`.
//!
//! Everything is crate-private except what follows: the daemon is assembled inside the crate, and
//! the integration tests and the bench assemble it the same way and drive its steps one by one.

mod breaker;
mod cache;
mod controller;
mod desired;
mod execute;
mod leadership;
pub mod naming;
mod observe;
mod observed;
mod pass;
mod pass_clock;
mod pass_execute;
mod pass_rollout;
pub mod plan;
mod plan_health;
mod plan_rollout;
mod probe_schedule;
mod prober;
mod queue;
mod recorded;
mod rollout;
mod spec;
mod sweep;
mod targeted;
mod wake;

// The daemon's assembly (`wiring`, the CLI, the demo), and the tests' harness and the bench,
// which assemble it the same way.
pub use cache::ObserveCache;
pub use controller::{Controller, LoopConfig};
pub use desired::PaidPolicy;
pub use execute::{Ctx, ExecError, Outcome, Slot, Timeouts, Wanted};
pub use leadership::{RenewConfig, run_once};
pub use pass::{PassConfig, PassError, PlanSettingsTemplate, plan_pass};
pub use queue::WorkQueue;
pub use rollout::WaveSettings;
pub use spec::AppSpec;

// The tests and the bench: one pass, one user, one sweep tick or one probe round run by hand.
pub use cache::{OVERLAP, ObserveKind};
pub use execute::run as run_action;
pub use leadership::OnceError;
pub use pass::{PassReport, run_pass};
pub use prober::{Prober, ProberHandle, spawn as spawn_prober};
pub use sweep::{Sweeper, Tick};
pub use targeted::{action_user, run_user};

// The sweep's contract tests build the planner's inputs from the database and compare the work
// list with the plan; the rollout tests read the recorded rollout; the bench seeds Fly as the
// controller would; the example sizes an observation.
pub use desired::desired;
pub use execute::desired_config;
pub use observed::{Observation, ObservedApp, ObservedMachine};
pub use pass::plan_settings;
pub use recorded::{AppRow, RowStatus};
pub use rollout::{AppState, Halt, HaltReason, Tally, max_in_transition};
pub use spec::{config_digest, monthly_cost_estimate_usd, secrets_digest, spec_digest};
pub use sweep::{
    explain_work_list, explain_work_list_since, watermark, work_list, work_list_since,
};
