//! What should exist: paid users, adjusted by admin overrides (DESIGN §2).
//!
//! Desired state of user U: override `present`/`absent` if set; `paused` freezes U (observed and
//! reported, never changed); no override = follow the tier: wanted iff the subscription's tier is in
//! `PAID_TIERS` and its status in `PAID_STATUSES`. A user without a subscription row is free.

use std::collections::BTreeMap;
use uuid::Uuid;

pub use crate::model::desired::PaidPolicy;
pub(crate) use crate::model::desired::UserFacts;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Intent {
    /// An app should exist and converge to the spec.
    Present,
    /// No app should exist.
    Absent,
    /// Admin froze this user: observe and report, change nothing.
    Paused,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntentSource {
    Tier,
    Override,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserIntent {
    pub intent: Intent,
    pub source: IntentSource,
}

/// Desired intent per user, for every user with a subscription or an override. Users absent from the
/// map are free (Absent by default). Unknown override values are reported in the second list and the
/// user falls back to Paused: acting on a value nobody understands could delete a paying user's app.
pub fn desired(
    facts: &[UserFacts],
    policy: &PaidPolicy,
) -> (BTreeMap<Uuid, UserIntent>, Vec<(Uuid, String)>) {
    let mut out = BTreeMap::new();
    let mut bad = Vec::new();
    for f in facts {
        let intent = match f.override_desired.as_deref() {
            Some("present") => UserIntent {
                intent: Intent::Present,
                source: IntentSource::Override,
            },
            Some("absent") => UserIntent {
                intent: Intent::Absent,
                source: IntentSource::Override,
            },
            Some("paused") => UserIntent {
                intent: Intent::Paused,
                source: IntentSource::Override,
            },
            Some(other) => {
                bad.push((f.user_id, other.to_string()));
                UserIntent {
                    intent: Intent::Paused,
                    source: IntentSource::Override,
                }
            }
            None => {
                let paid = matches!((&f.tier, &f.sub_status), (Some(t), Some(s))
                    if policy.tiers.iter().any(|x| x == t) && policy.statuses.iter().any(|x| x == s));
                UserIntent {
                    intent: if paid {
                        Intent::Present
                    } else {
                        Intent::Absent
                    },
                    source: IntentSource::Tier,
                }
            }
        };
        out.insert(f.user_id, intent);
    }
    (out, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> PaidPolicy {
        PaidPolicy {
            tiers: vec!["pro".into(), "elite".into()],
            statuses: vec!["active".into(), "past_due".into()],
        }
    }

    fn facts(tier: Option<&str>, status: Option<&str>, ov: Option<&str>) -> UserFacts {
        UserFacts {
            user_id: Uuid::from_u128(7),
            tier: tier.map(String::from),
            sub_status: status.map(String::from),
            override_desired: ov.map(String::from),
        }
    }

    fn intent_of(f: UserFacts) -> Intent {
        desired(&[f], &policy()).0[&Uuid::from_u128(7)].intent
    }

    #[test]
    fn paid_tier_with_paying_status_is_wanted() {
        assert_eq!(
            intent_of(facts(Some("pro"), Some("active"), None)),
            Intent::Present
        );
        assert_eq!(
            intent_of(facts(Some("elite"), Some("past_due"), None)),
            Intent::Present
        );
    }

    #[test]
    fn free_or_cancelled_is_not_wanted() {
        assert_eq!(
            intent_of(facts(Some("free"), Some("active"), None)),
            Intent::Absent
        );
        assert_eq!(
            intent_of(facts(Some("pro"), Some("cancelled"), None)),
            Intent::Absent
        );
        assert_eq!(intent_of(facts(None, None, None)), Intent::Absent);
    }

    #[test]
    fn overrides_beat_the_tier() {
        assert_eq!(
            intent_of(facts(Some("free"), Some("active"), Some("present"))),
            Intent::Present
        );
        assert_eq!(
            intent_of(facts(Some("elite"), Some("active"), Some("absent"))),
            Intent::Absent
        );
        assert_eq!(
            intent_of(facts(Some("elite"), Some("active"), Some("paused"))),
            Intent::Paused
        );
    }

    #[test]
    fn an_unknown_override_freezes_the_user_and_is_reported() {
        let (map, bad) = desired(
            &[facts(Some("pro"), Some("active"), Some("delete-all"))],
            &policy(),
        );
        assert_eq!(map[&Uuid::from_u128(7)].intent, Intent::Paused);
        assert_eq!(bad, vec![(Uuid::from_u128(7), "delete-all".to_string())]);
    }
}
