//! What a plan says: the actions it asks for and the findings it reports.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{RepairStep, RolloutStep};
use crate::metrics::ActionKind;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConvergeReason {
    /// First provision of this user.
    New,
    /// A soft-deleted row comes back (re-upgrade): same row, same name.
    Reupgrade,
    /// A provision that did not finish (crash, error, backoff expired).
    Resume,
    AppMissing,
    MachineMissing,
    MachineDown,
    DuplicateMachines,
    ImageDrift,
    ConfigDrift,
    SecretsDrift,
}

impl ConvergeReason {
    /// A difference a rollout carries (image, guest, region, env, layout, secrets), as opposed to
    /// something broken that a repair fixes at once.
    pub(crate) fn is_spec_change(&self) -> bool {
        matches!(
            self,
            Self::ImageDrift | Self::ConfigDrift | Self::SecretsDrift
        )
    }

    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Reupgrade => "reupgrade",
            Self::Resume => "resume",
            Self::AppMissing => "app_missing",
            Self::MachineMissing => "machine_missing",
            Self::MachineDown => "machine_down",
            Self::DuplicateMachines => "duplicate_machines",
            Self::ImageDrift => "image_drift",
            Self::ConfigDrift => "config_drift",
            Self::SecretsDrift => "secrets_drift",
        }
    }
}

/// Which spec a converge brings the app to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvergeTo {
    /// The configured spec, whole: new users, re-upgrades, apps already on it.
    Target,
    /// The spec the app runs (its last healthy spec when its machine is gone): a repair of an app
    /// the rollout has not moved yet, or of any app while the rollout is halted. Repairing onto the
    /// target would move the app outside the waves, or spread a change the rollout halted.
    Current,
    /// The spec the fleet last ran healthily (the halted rollout's base): a user who never ran
    /// anything, while the rollout is halted. The target when no base is recorded.
    LastHealthy,
}

impl ConvergeTo {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Target => "target",
            Self::Current => "current",
            Self::LastHealthy => "last_healthy",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Bring the user's app to the spec: create, adopt, repair or roll, whatever is missing.
    Converge {
        user_id: Uuid,
        row_id: Option<Uuid>,
        reason: ConvergeReason,
        to: ConvergeTo,
    },
    /// One app's step in the current rollout (waves, soak, rollback: `plan_rollout`).
    Rollout {
        user_id: Uuid,
        row_id: Uuid,
        rollout_id: i64,
        wave: u32,
        step: RolloutStep,
    },
    /// The user stopped being wanted: start the deprovision grace (DB only).
    MarkUnwanted { user_id: Uuid, row_id: Uuid },
    /// The user is wanted again within the grace: nothing gets deleted (DB only).
    CancelDeprovision { user_id: Uuid, row_id: Uuid },
    /// Stop, delete, confirm gone, soft-delete the row.
    Deprovision {
        user_id: Uuid,
        row_id: Uuid,
        app: String,
    },
    /// A step of the repair ladder for an app unhealthy for `REPAIR_AFTER` (`plan_health`).
    Repair {
        user_id: Uuid,
        row_id: Uuid,
        step: RepairStep,
    },
    /// Record which managed apps no live row owns (first seen / still seen); one DB statement.
    SyncOrphans { names: Vec<String> },
    /// An orphan that stayed orphaned for `ORPHAN_GRACE`.
    DeleteOrphan { app: String },
}

impl Action {
    /// The action's kind, as its metrics and log lines name it.
    pub(crate) fn label(&self) -> ActionKind {
        match self {
            Self::Converge { .. } => ActionKind::Converge,
            Self::Rollout { step, .. } => step.label(),
            Self::MarkUnwanted { .. } => ActionKind::ScheduleDeprovision,
            Self::CancelDeprovision { .. } => ActionKind::CancelDeprovision,
            Self::Deprovision { .. } => ActionKind::Deprovision,
            Self::Repair { step, .. } => match step {
                RepairStep::Restart => ActionKind::RepairRestart,
                RepairStep::Replace => ActionKind::RepairReplace,
            },
            Self::SyncOrphans { .. } => ActionKind::SyncOrphans,
            Self::DeleteOrphan { .. } => ActionKind::OrphanDelete,
        }
    }

    pub fn kind(&self) -> &'static str {
        self.label().as_str()
    }

    #[cfg(test)]
    pub(crate) fn is_deletion(&self) -> bool {
        matches!(self, Self::Deprovision { .. } | Self::DeleteOrphan { .. })
    }
}

/// Something an operator should know that needs no action (or that the controller refuses to act on).
#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    Paused {
        user_id: Uuid,
        drift: bool,
    },
    UnmanagedRowName {
        row_id: Uuid,
        name: String,
    },
    ForeignOrgRow {
        row_id: Uuid,
        org: String,
    },
    UnknownStatus {
        row_id: Uuid,
        status: String,
    },
    UserMissing {
        row_id: Uuid,
        user_id: Uuid,
    },
    Orphan {
        app: String,
        since: DateTime<Utc>,
    },
    /// The current rollout is halted; `newly` = this pass found it (persist, `ALERT rollout halted`).
    RolloutHalted {
        image: String,
        reason: String,
        newly: bool,
    },
    DeletionsBlocked {
        would_delete: usize,
        live: usize,
    },
    /// Fly could not list machines in `regions`; `held_back` users there were left alone.
    RegionsUnavailable {
        regions: Vec<String>,
        held_back: usize,
    },
}
