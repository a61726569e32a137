//! Fault injection: per route class, with probabilities, from a seeded RNG.
//!
//! The kinds mirror what the reference says a client meets in practice: 5xx (fly-go retries 502/503
//! [S9]), 408 "ambiguous for writes" [S2][S15], connection-level errors [S15], 429s [S2], and the
//! worst case behind flyctl's launch-ID idempotency: the write lands but the answer is lost [S15].

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::time::{Duration, Instant};

/// What goes wrong.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// Answer with this status (500/502/503...) and an error body, without doing anything.
    ServerError { status: u16 },
    /// Answer 408 with an error body, without doing anything.
    Timeout,
    /// Answer a spurious 404 "Could not find App" for something that exists: flaps sometimes
    /// does this for live apps [S36][S37].
    NotFound,
    /// Close the connection without any HTTP answer, without doing anything.
    Drop,
    /// Perform the call, then replace a successful answer with `status` (or drop the connection
    /// when `status` is `None`).
    LostAnswer {
        #[serde(default)]
        status: Option<u16>,
    },
    /// Delay the call by this many milliseconds, then handle it normally.
    Latency { ms: u64 },
    /// From now on, every call answers 429 for `ms` milliseconds.
    Burst429 { ms: u64 },
}

/// One rule: for calls of route class `class` (or `*`), inject `kind` with `probability`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    pub class: String,
    pub probability: f64,
    #[serde(flatten)]
    pub kind: FaultKind,
}

impl FaultRule {
    pub fn new(class: &str, probability: f64, kind: FaultKind) -> Self {
        FaultRule {
            class: class.to_string(),
            probability,
            kind,
        }
    }
}

/// The full fault setup; replaced as a whole at run time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Faults {
    #[serde(default)]
    pub rules: Vec<FaultRule>,
    /// Every call answers 429 for this long after the faults are set.
    #[serde(default)]
    pub burst_429_ms: Option<u64>,
    /// Reseed the RNG when these faults are set (else keep the running sequence).
    #[serde(default)]
    pub seed: Option<u64>,
    /// Machine creates in these regions fail with 412 and `status: "insufficient_capacity"`, the
    /// status Fly uses for capacity errors [S1][S4].
    #[serde(default)]
    pub no_capacity_regions: Vec<String>,
    /// Inside an app's post-create window, the share of calls answered 401 instead of 404: fly-go's
    /// `WaitForApp` retries both for up to a minute [S9] (REFERENCE §7).
    #[serde(default)]
    pub post_create_401: f64,
    /// What assigning an IP of a type the app already has answers (REFERENCE §5).
    #[serde(default)]
    pub ip_repeat: IpRepeat,
    /// Regions the org-wide machine list cannot reach: reported in `error_regions`, their machines
    /// missing from the answer (REFERENCE §3.9).
    #[serde(default)]
    pub error_regions: Vec<String>,
}

/// The answer to `POST /v1/apps/{app}/ip_assignments` for a type the app already has. REFERENCE §5
/// gives no single answer: dedicated types allocate (and bill) another address, shared IPv4 is one
/// per app; a third-party provisioner reports 409 or 422 ("already allocated") [S20].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IpRepeat {
    /// Another address for a dedicated type; the existing address for `shared_v4`.
    #[default]
    Allocate,
    /// 409 with an error body; nothing allocated.
    Conflict,
    /// 422 with an error body; nothing allocated.
    Unprocessable,
}

/// What the request pipeline must do for one call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    pub latency: Duration,
    /// Answer before the handler runs.
    pub pre: Option<PreFault>,
    /// Run the handler, then lose a successful answer.
    pub lose_answer: Option<Option<u16>>,
    /// Inside a post-create window, answer 401 rather than 404.
    pub window_401: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PreFault {
    Status(u16),
    Timeout,
    NotFound,
    Drop,
    TooMany,
}

/// `now + ms`, saturating at roughly a century instead of overflowing.
fn later(now: Instant, ms: u64) -> Instant {
    let century = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(Duration::from_millis(ms).min(century))
        .unwrap_or(now)
}

pub(crate) struct FaultState {
    pub faults: Faults,
    rng: StdRng,
    burst_until: Option<Instant>,
}

impl FaultState {
    pub fn new(faults: Faults, seed: u64) -> Self {
        let mut s = FaultState {
            faults: Faults::default(),
            rng: StdRng::seed_from_u64(seed),
            burst_until: None,
        };
        s.set(faults);
        s
    }

    pub fn set(&mut self, faults: Faults) {
        if let Some(seed) = faults.seed {
            self.rng = StdRng::seed_from_u64(seed);
        }
        self.burst_until = faults.burst_429_ms.map(|ms| later(Instant::now(), ms));
        self.faults = faults;
    }

    /// Rolls the dice for one call of `class`. Latency rules add up; the first other rule that
    /// fires wins.
    pub fn decide(&mut self, class: &str) -> Decision {
        self.decide_at(class, Instant::now())
    }

    pub fn decide_at(&mut self, class: &str, now: Instant) -> Decision {
        let mut d = Decision::default();
        let p401 = self.faults.post_create_401;
        // Rolled only when set, so seeded runs without it keep their sequence.
        if p401.is_finite() && p401 > 0.0 {
            d.window_401 = self.rng.random_bool(p401.min(1.0));
        }
        if self.burst_until.is_some_and(|t| now < t) {
            d.pre = Some(PreFault::TooMany);
            return d;
        }
        for rule in &self.faults.rules {
            if rule.class != "*" && rule.class != class {
                continue;
            }
            let p = if rule.probability.is_finite() {
                rule.probability.clamp(0.0, 1.0)
            } else {
                0.0
            };
            if !self.rng.random_bool(p) {
                continue;
            }
            match &rule.kind {
                FaultKind::Latency { ms } => {
                    d.latency = d.latency.saturating_add(Duration::from_millis(*ms))
                }
                _ if d.pre.is_some() || d.lose_answer.is_some() => {}
                FaultKind::ServerError { status } => d.pre = Some(PreFault::Status(*status)),
                FaultKind::Timeout => d.pre = Some(PreFault::Timeout),
                FaultKind::NotFound => d.pre = Some(PreFault::NotFound),
                FaultKind::Drop => d.pre = Some(PreFault::Drop),
                FaultKind::LostAnswer { status } => d.lose_answer = Some(*status),
                FaultKind::Burst429 { ms } => {
                    self.burst_until = Some(later(now, *ms));
                    d.pre = Some(PreFault::TooMany);
                }
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_decisions() {
        let faults = Faults {
            rules: vec![FaultRule::new(
                "*",
                0.5,
                FaultKind::ServerError { status: 503 },
            )],
            ..Faults::default()
        };
        let mut a = FaultState::new(faults.clone(), 7);
        let mut b = FaultState::new(faults, 7);
        let da: Vec<_> = (0..64).map(|_| a.decide("apps.get")).collect();
        let db: Vec<_> = (0..64).map(|_| b.decide("apps.get")).collect();
        assert_eq!(da, db);
        let hits = da.iter().filter(|d| d.pre.is_some()).count();
        assert!(hits > 10 && hits < 54, "p=0.5 gave {hits}/64");
    }

    #[test]
    fn class_filter_and_latency_stack() {
        let faults = Faults {
            rules: vec![
                FaultRule::new("apps.create", 1.0, FaultKind::Latency { ms: 5 }),
                FaultRule::new("*", 1.0, FaultKind::Latency { ms: 7 }),
                FaultRule::new("apps.create", 1.0, FaultKind::LostAnswer { status: None }),
                FaultRule::new("*", 1.0, FaultKind::Timeout),
            ],
            ..Faults::default()
        };
        let mut s = FaultState::new(faults, 1);
        let d = s.decide("apps.create");
        assert_eq!(d.latency, Duration::from_millis(12));
        assert_eq!(d.lose_answer, Some(None));
        assert_eq!(d.pre, None);
        let d = s.decide("apps.get");
        assert_eq!(d.latency, Duration::from_millis(7));
        assert_eq!(d.pre, Some(PreFault::Timeout));
    }

    #[test]
    fn burst_429_expires() {
        let mut s = FaultState::new(
            Faults {
                burst_429_ms: Some(1000),
                ..Faults::default()
            },
            1,
        );
        let t0 = Instant::now();
        assert_eq!(s.decide_at("x", t0).pre, Some(PreFault::TooMany));
        let later = t0 + Duration::from_millis(1001);
        assert_eq!(s.decide_at("x", later).pre, None);
    }

    #[test]
    fn rules_deserialize_from_json() {
        let f: Faults = serde_json::from_str(
            r#"{"rules":[{"class":"apps.create","probability":1,"kind":"lost_answer","status":502},
                         {"class":"*","probability":0.1,"kind":"drop"}]}"#,
        )
        .expect("valid faults json");
        assert_eq!(f.rules[0].kind, FaultKind::LostAnswer { status: Some(502) });
        assert_eq!(f.rules[1].kind, FaultKind::Drop);
    }
}
