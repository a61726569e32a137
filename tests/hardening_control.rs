//! Hardening of the control paths: the blast-radius breaker's sliding window and held set,
//! timeouts against a stuck database, lease margins, orphan re-checks, cutover gaps.

mod fleet_support;
mod support;

#[path = "hardening_control/breaker_window.rs"]
mod breaker_window;
#[path = "hardening_control/cancelled_begin.rs"]
mod cancelled_begin;
#[path = "hardening_control/cutover.rs"]
mod cutover;
#[path = "hardening_control/lease_margin.rs"]
mod lease_margin;
#[path = "hardening_control/orphans_clock.rs"]
mod orphans_clock;
#[path = "hardening_control/regions.rs"]
mod regions;
#[path = "hardening_control/timeouts.rs"]
mod timeouts;
#[path = "hardening_control/tls.rs"]
mod tls;

use std::path::PathBuf;

use fleet_support::Fleet;
use support::{UserFixture, set_subscription};
use uuid::Uuid;
use vyx_fleet::db::Store;
use vyx_fleet::db::{breaker, lease};
use vyx_fleet::metrics::Metrics;
use vyx_fleet::reconcile::plan::{Action, Finding};
use vyx_fleet::reconcile::{OnceError, RenewConfig, run_action, run_once};
use vyx_fleet::sim::{FaultKind, FaultRule, Faults};

async fn paid(fleet: &Fleet, n: usize) -> Vec<Uuid> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(UserFixture::paid("pro").insert(&fleet.db.pool).await);
    }
    v
}

fn blocked(findings: &[Finding]) -> bool {
    findings
        .iter()
        .any(|f| matches!(f, Finding::DeletionsBlocked { .. }))
}

/// Fails the test instead of hanging it when something wedges.
async fn guard<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(60), f)
        .await
        .expect("wedged: the call never returned")
}
