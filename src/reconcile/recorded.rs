//! What vyx-fleet recorded: one `user_fly_apps` row per user ever provisioned, as the planner sees it.
//! The row is the model's ([`crate::model::app_row`]): the database layer returns it too.

pub use crate::model::app_row::{AppRow, RowStatus};

#[cfg(test)]
pub(crate) use crate::model::app_row::fixture;
