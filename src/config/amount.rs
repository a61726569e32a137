//! A count or a percentage of some total, like Kubernetes' `maxUnavailable`: `10` or `2%`.

use std::fmt;
use std::str::FromStr;

/// `N` (a number of apps) or `P%` (a whole percentage, 0 to 100, of a total known only later: the
/// live apps, the apps moved so far). Resolved with [`CountOrPercent::of`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CountOrPercent {
    Count(u32),
    Percent(u8),
}

impl CountOrPercent {
    /// The amount out of `total`. A percentage rounds down (2% of 149 is 2), so a percentage never
    /// admits more than it says; callers that need progress on small totals add their own floor.
    pub fn of(self, total: usize) -> usize {
        match self {
            CountOrPercent::Count(n) => n as usize,
            CountOrPercent::Percent(p) => total.saturating_mul(usize::from(p)) / 100,
        }
    }

    pub fn is_zero(self) -> bool {
        matches!(self, CountOrPercent::Count(0) | CountOrPercent::Percent(0))
    }
}

impl FromStr for CountOrPercent {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let text = s.trim();
        let hint = "expected a whole number of apps (10) or a whole percentage (2%)";
        if let Some(number) = text.strip_suffix('%') {
            let number = number.trim_end();
            if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("{text:?} is not a percentage; {hint}"));
            }
            return match number.parse::<u8>() {
                Ok(p) if p <= 100 => Ok(CountOrPercent::Percent(p)),
                _ => Err(format!("{text:?} is more than 100%")),
            };
        }
        // Digits only: "+5", "-1", "1.5" and "1e3" are refused rather than guessed at.
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{text:?} is not a count or a percentage; {hint}"));
        }
        text.parse::<u32>()
            .map(CountOrPercent::Count)
            .map_err(|_| format!("{text:?} is too large"))
    }
}

impl fmt::Display for CountOrPercent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CountOrPercent::Count(n) => write!(f, "{n}"),
            CountOrPercent::Percent(p) => write!(f, "{p}%"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::CountOrPercent::{self, Count, Percent};

    #[test]
    fn counts_and_percentages_parse() {
        let cases = [
            ("10", Count(10)),
            (" 0 ", Count(0)),
            ("2%", Percent(2)),
            ("100%", Percent(100)),
            ("0%", Percent(0)),
            ("25 %", Percent(25)),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<CountOrPercent>(), Ok(want), "{text:?}");
        }
    }

    #[test]
    fn anything_else_is_refused_in_one_line() {
        for text in [
            "",
            "%",
            "-1",
            "+5",
            "1.5",
            "1.5%",
            "101%",
            "1000%",
            "ten",
            "5 apps",
            "1e3",
            "%5",
            "99999999999",
        ] {
            let err = text.parse::<CountOrPercent>().unwrap_err();
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn a_percentage_of_a_total_rounds_down() {
        assert_eq!(Percent(2).of(10_000), 200);
        assert_eq!(Percent(2).of(149), 2);
        assert_eq!(Percent(2).of(49), 0);
        assert_eq!(Percent(100).of(7), 7);
        assert_eq!(Count(5).of(3), 5, "a count ignores the total");
    }

    #[test]
    fn display_round_trips() {
        for v in [Count(0), Count(250), Percent(0), Percent(2), Percent(100)] {
            assert_eq!(v.to_string().parse::<CountOrPercent>(), Ok(v));
        }
    }

    proptest::proptest! {
        /// A percentage never admits more than the total, and grows with it.
        #[test]
        fn a_percentage_stays_within_the_total(p in 0u8..=100, total in 0usize..1_000_000) {
            let n = Percent(p).of(total);
            proptest::prop_assert!(n <= total);
            proptest::prop_assert!(Percent(p).of(total + 1) >= n);
        }

        #[test]
        fn parsing_never_panics(text in "\\PC{0,12}") {
            let _ = text.parse::<CountOrPercent>();
        }
    }
}
