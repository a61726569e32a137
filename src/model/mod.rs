//! The fleet's domain types that several layers share: what the database layer reads and writes,
//! the planner judges and the console shows. Plain data and pure functions over it, so each of
//! those layers can depend on it without depending on each other.
//!
//! Nothing here uses another module of the crate: `model` is the bottom of the layering
//! (`scripts/module-deps`).

pub mod app_row;
pub mod cost;
pub mod desired;
pub mod health;
pub mod pass;
pub mod rollout;
pub mod shared_str;
