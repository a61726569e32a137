//! A rollout's persisted state: the rollout of one target, why it halted, where each app stands on
//! it, and the counts by state. The database layer loads and saves them; the wave decision
//! (`reconcile::rollout`) judges them. Kept apart from the decision so the database layer can
//! return them without depending on the planner.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The rollout of one target as persisted in `vyx_fleet.rollout`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    pub target: String,
    pub halted: Option<Halt>,
    /// Failures an operator resumed past (the failed count at the last resume): only failures
    /// beyond these can halt again.
    pub failures_forgiven: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Halt {
    pub reason: HaltReason,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HaltReason {
    /// An app failed before any wave was clean: the change is bad, one app paid for it.
    CanaryFailed { app: Uuid },
    /// After the canary, more apps failed than `ROLLOUT_FAILURE_THRESHOLD` allows.
    TooManyFailures {
        failed: usize,
        moved: usize,
        allowed: usize,
    },
    /// Read back from the table: a reason written by another version, kept verbatim.
    Recorded(String),
}

impl HaltReason {
    /// Fixed-cardinality label (metrics, the table's `halt_kind`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::CanaryFailed { .. } => "canary_failed",
            Self::TooManyFailures { .. } => "too_many_failures",
            Self::Recorded(_) => "recorded",
        }
    }
}

impl std::fmt::Display for HaltReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::CanaryFailed { .. } => write!(f, "the canary failed on the new spec"),
            Self::TooManyFailures {
                failed,
                moved,
                allowed,
            } => write!(
                f,
                "{failed} of {moved} moved apps failed (ROLLOUT_FAILURE_THRESHOLD allows {allowed})"
            ),
            Self::Recorded(text) => f.write_str(text),
        }
    }
}

/// Where one app stands on the rollout's target. `wave` is the wave it moved in (1 = canary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppState {
    /// Runs an older spec and has not moved for this target.
    Pending,
    /// Update sent; not yet `started` with every check passing on the new machine version.
    Moving { wave: u32 },
    /// Healthy on the new version since `since`; done once it stays so for the soak.
    Soaking { wave: u32, since: DateTime<Utc> },
    /// Soaked: runs the target healthily. `wave` 0: ran it without moving (provisioned on it).
    Healthy { wave: u32 },
    /// Failed on the target; to be rolled back to the last spec it ran healthily.
    Failed { wave: u32 },
    /// Failed, then put back on its last healthy spec; waits for the next target.
    RolledBack { wave: u32 },
}

impl AppState {
    /// The wave the app moved in; `None` while pending.
    pub fn wave(self) -> Option<u32> {
        match self {
            Self::Pending => None,
            Self::Moving { wave }
            | Self::Soaking { wave, .. }
            | Self::Healthy { wave }
            | Self::Failed { wave }
            | Self::RolledBack { wave } => Some(wave),
        }
    }
}

/// Counts by state, for the table, `status` and `vyx_fleet_rollout_apps{state}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub pending: usize,
    pub moving: usize,
    pub soaking: usize,
    pub healthy: usize,
    pub failed: usize,
    pub rolled_back: usize,
    /// Ran the target without moving (provisioned on it, or rolled to it by an earlier rollout).
    pub already_on_target: usize,
    pub bypassed: usize,
    /// Waves with no app still moving or soaking.
    pub waves_done: u32,
}

impl Tally {
    /// Apps that moved for this target.
    pub fn moved(&self) -> usize {
        self.moving + self.soaking + self.healthy + self.failed + self.rolled_back
    }
}
