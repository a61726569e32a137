//! Human durations for settings: `500ms`, `30s`, `10m`, `1h`, `1h30m`, `1d`.

use std::time::Duration;

/// Parses a duration written as one or more `<integer><unit>` parts, units `ms`, `s`, `m`, `h`, `d`,
/// largest first, each unit at most once (`1h30m`, `2m30s`, `1500ms`).
///
/// Rejects: an empty string, a bare number (`30`: seconds or milliseconds? Fly's own config reads bare
/// check durations as milliseconds, so we refuse to guess), signs (`-5s`, `+5s`), fractions (`1.5h`:
/// write `1h30m`), unknown units, repeated or out-of-order units, and overflow. `0s` parses to zero;
/// whether zero makes sense is the caller's decision (every duration setting rejects it).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    if text.is_empty() {
        return Err("is empty; expected a duration such as 30s, 10m, 1h30m or 500ms".into());
    }
    if text.starts_with('-') {
        return Err("must not be negative".into());
    }
    let bytes = text.as_bytes();
    let mut total = Duration::ZERO;
    let mut i = 0;
    // Rank of the last unit seen; each next unit must be strictly smaller.
    let mut last_rank = usize::MAX;
    while i < bytes.len() {
        let digits_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == digits_start {
            return Err(format!(
                "{text:?} is not a duration: expected digits at position {} (write e.g. 30s, 10m, 1h30m, 500ms)",
                digits_start + 1
            ));
        }
        let number: u64 = text[digits_start..i]
            .parse()
            .map_err(|_| format!("{text:?} is too large"))?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = &text[unit_start..i];
        let (rank, part) = match unit {
            "d" => (4, number.checked_mul(86_400).map(Duration::from_secs)),
            "h" => (3, number.checked_mul(3_600).map(Duration::from_secs)),
            "m" => (2, number.checked_mul(60).map(Duration::from_secs)),
            "s" => (1, Some(Duration::from_secs(number))),
            "ms" => (0, Some(Duration::from_millis(number))),
            "" => {
                return Err(format!(
                    "{text:?} has no unit; write e.g. {number}s or {number}ms (bare numbers are ambiguous)"
                ));
            }
            other => {
                return Err(format!(
                    "{text:?} has unknown unit {other:?}; use ms, s, m, h or d"
                ));
            }
        };
        if rank >= last_rank {
            return Err(format!(
                "{text:?}: units must appear once each, largest first (e.g. 1h30m)"
            ));
        }
        last_rank = rank;
        let part = part.ok_or_else(|| format!("{text:?} is too large"))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| format!("{text:?} is too large"))?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_forms() {
        let cases = [
            ("500ms", Duration::from_millis(500)),
            ("30s", Duration::from_secs(30)),
            ("10m", Duration::from_secs(600)),
            ("1h", Duration::from_secs(3600)),
            ("1h30m", Duration::from_secs(5400)),
            ("2m30s", Duration::from_secs(150)),
            ("1d", Duration::from_secs(86_400)),
            ("1s500ms", Duration::from_millis(1500)),
            (" 45s ", Duration::from_secs(45)),
            ("0s", Duration::ZERO),
        ];
        for (input, want) in cases {
            assert_eq!(parse_duration(input), Ok(want), "input {input:?}");
        }
    }

    #[test]
    fn rejects_garbage() {
        for input in [
            "",
            "   ",
            "30",
            "-5s",
            "+5s",
            "1.5h",
            "5 s",
            "5sec",
            "s",
            "ms5",
            "30m1h",
            "1h1h",
            "1m1m",
            "10x",
            "1h 30m",
            "abc",
            "99999999999999999999s",
            "18446744073709551615d",
        ] {
            assert!(
                parse_duration(input).is_err(),
                "{input:?} should be rejected, got {:?}",
                parse_duration(input)
            );
        }
    }

    #[test]
    fn messages_are_one_line() {
        for input in ["30", "-5s", "1.5h", "10x", "30m1h", ""] {
            let msg = parse_duration(input).unwrap_err();
            assert!(!msg.contains('\n'), "{msg}");
        }
    }

    proptest::proptest! {
        #[test]
        fn round_trips_hms(h in 0u64..1000, m in 0u64..60, s in 0u64..60, ms in 0u64..1000) {
            let text = format!("{h}h{m}m{s}s{ms}ms");
            let want = Duration::from_secs(h * 3600 + m * 60 + s) + Duration::from_millis(ms);
            proptest::prop_assert_eq!(parse_duration(&text), Ok(want));
        }

        #[test]
        fn never_panics(input in "\\PC{0,20}") {
            let _ = parse_duration(&input);
        }
    }
}
