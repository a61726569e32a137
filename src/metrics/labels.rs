//! The label values: one enum per label, so a series carries only the words listed here.

/// One label's values: a fieldless enum, `ALL` in declaration order and `as_str`, the word exported.
macro_rules! label_values {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $value:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The label value as exported.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $value,)+
                }
            }
        }
    };
}

label_values! {
    /// How a pass or an interval tick ended (`vyx_fleet_passes_total{outcome}`).
    pub enum PassOutcome {
        /// A full pass whose every action finished.
        Ok => "ok",
        /// A full pass in which some actions failed; they retry after their backoff.
        Partial => "partial",
        /// The lease was lost mid-pass; this replica stopped acting.
        Fenced => "fenced",
        /// The database or the Fly observation failed: nothing was acted on.
        Error => "error",
        /// An interval tick that needed no full pass; its users, if any, went to the work queue.
        Sweep => "sweep",
    }
}

label_values! {
    /// An action's kind (`vyx_fleet_actions_total{action}`), one per planned action and rollout
    /// or repair step.
    pub enum ActionKind {
        Converge => "converge",
        RolloutMove => "rollout_move",
        RolloutCheck => "rollout_check",
        RolloutSettle => "rollout_settle",
        RolloutBack => "rollout_back",
        /// The start of a deprovision grace (database only).
        ScheduleDeprovision => "schedule_deprovision",
        CancelDeprovision => "cancel_deprovision",
        Deprovision => "deprovision",
        RepairRestart => "repair_restart",
        RepairReplace => "repair_replace",
        SyncOrphans => "sync_orphans",
        OrphanDelete => "orphan_delete",
    }
}

label_values! {
    /// How an action ended (`vyx_fleet_actions_total{outcome}`).
    pub enum ActionOutcome {
        Ok => "ok",
        /// Failed in a way that will be retried after backoff.
        Retry => "retry",
        /// Lost the lease mid-action; a deposed leader's write was refused.
        Fenced => "fenced",
        /// Planned by a full pass from an older read and dropped under the user's claim: the user's
        /// facts (subscription, override) no longer call for it.
        Stale => "stale",
    }
}

label_values! {
    /// The class of a Fly answer that failed an action (`vyx_fleet_fly_errors_total{kind}`), the
    /// same word the Fly client's error reports as its kind. A write refused because this replica
    /// was deposed is not among them: it counts as a `fenced` action.
    pub enum FlyErrorKind {
        Unauthorized => "unauthorized",
        Forbidden => "forbidden",
        NotFound => "not_found",
        Timeout => "timeout",
        Conflict => "conflict",
        PreconditionFailed => "precondition_failed",
        NameTaken => "name_taken",
        InsufficientCapacity => "insufficient_capacity",
        Invalid => "invalid",
        RateLimited => "rate_limited",
        Server => "server",
        Transport => "transport",
        Decode => "decode",
        BodyTooLarge => "body_too_large",
        Incomplete => "incomplete",
        UnexpectedStatus => "unexpected_status",
        Config => "config",
    }
}

label_values! {
    /// A `user_fly_apps.status` (`vyx_fleet_apps{status}`).
    pub enum AppStatus {
        Provisioning => "provisioning",
        Active => "active",
        Error => "error",
        Deprovisioning => "deprovisioning",
        Deleted => "deleted",
        /// A status the controller does not know (written by something else); exported only once
        /// such a row has been seen.
        Other => "other",
    }
}

label_values! {
    /// An app's state in the current rollout (`vyx_fleet_rollout_apps{state}`).
    pub enum RolloutState {
        Pending => "pending",
        Moving => "moving",
        Soaking => "soaking",
        /// Including apps already on the target when the rollout started.
        Healthy => "healthy",
        Failed => "failed",
        RolledBack => "rolled_back",
    }
}
