//! The reconcile loop: read what should exist ([`desired`]) and what does ([`recorded`] rows,
//! [`observe`]d Fly state), decide ([`plan`], pure), act ([`execute`]), one [`pass`] at a time, on
//! the schedule the [`controller`] keeps.

pub mod breaker;
pub mod cache;
pub mod controller;
pub mod desired;
pub mod execute;
pub mod leadership;
pub mod naming;
pub mod observe;
pub mod observed;
pub mod pass;
mod pass_rollout;
pub mod plan;
pub mod plan_health;
pub mod plan_rollout;
pub mod probe_schedule;
pub mod prober;
pub mod queue;
pub mod recorded;
pub mod rollout;
pub mod spec;
pub mod sweep;
pub mod targeted;
pub mod wake;
