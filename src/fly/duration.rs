//! Lenient wire helpers: Fly durations (Go strings or integer nanoseconds, REFERENCE §3.3) and
//! Go's habit of sending `null` for empty maps and slices.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// A duration as Fly writes it. Responses may carry `"15s"`, `"1m30s"` or `15000000000`; requests
/// are always sent as a Go duration string. A value that parses as neither is kept verbatim
/// (`Unparsed`) so a GET→modify→POST round-trip does not fail or change it.
#[derive(Debug, Clone, PartialEq)]
pub enum FlyDuration {
    Parsed(Duration),
    Unparsed(Value),
}

impl FlyDuration {
    pub fn from_secs(secs: u64) -> Self {
        FlyDuration::Parsed(Duration::from_secs(secs))
    }

    pub fn as_duration(&self) -> Option<Duration> {
        match self {
            FlyDuration::Parsed(d) => Some(*d),
            FlyDuration::Unparsed(_) => None,
        }
    }
}

impl From<Duration> for FlyDuration {
    fn from(d: Duration) -> Self {
        FlyDuration::Parsed(d)
    }
}

impl fmt::Display for FlyDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlyDuration::Parsed(d) => f.write_str(&format_go_duration(*d)),
            FlyDuration::Unparsed(v) => write!(f, "{v}"),
        }
    }
}

impl Serialize for FlyDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            FlyDuration::Parsed(d) => s.serialize_str(&format_go_duration(*d)),
            FlyDuration::Unparsed(v) => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for FlyDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let parsed = match &v {
            Value::String(s) => parse_go_duration(s),
            Value::Number(n) => n.as_u64().map(Duration::from_nanos).or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite() && *f >= 0.0)
                    .and_then(|f| Duration::try_from_secs_f64(f / 1e9).ok())
            }),
            _ => None,
        };
        Ok(match parsed {
            Some(d) => FlyDuration::Parsed(d),
            None => FlyDuration::Unparsed(v),
        })
    }
}

/// Go `time.Duration` text for `d`, in the largest unit that represents it exactly.
pub fn format_go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        "0s".to_owned()
    } else if nanos.is_multiple_of(1_000_000_000) {
        format!("{}s", nanos / 1_000_000_000)
    } else if nanos.is_multiple_of(1_000_000) {
        format!("{}ms", nanos / 1_000_000)
    } else if nanos.is_multiple_of(1_000) {
        format!("{}us", nanos / 1_000)
    } else {
        format!("{nanos}ns")
    }
}

/// Parse Go's `time.ParseDuration` syntax (`"300ms"`, `"1.5h"`, `"2h45m"`, `"0"`). Negative or
/// overflowing values give `None`.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() || s.starts_with('-') {
        return None;
    }
    // Integer nanoseconds throughout, so "1000us" is exactly 1 ms.
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
            return None;
        }
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let mut part = int.checked_mul(scale)?;
        // Fractional digits beyond nanosecond precision do not matter.
        let frac = &frac[..frac.len().min(18)];
        if !frac.is_empty() {
            let digits: u128 = frac.parse().ok()?;
            part = part.checked_add(digits * scale / 10u128.pow(frac.len() as u32))?;
        }
        total = total.checked_add(part)?;
        rest = tail;
    }
    let secs = u64::try_from(total / 1_000_000_000).ok()?;
    Some(Duration::new(secs, (total % 1_000_000_000) as u32))
}

/// `#[serde(deserialize_with = "null_default")]`: treat `null` like a missing field.
pub(crate) fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_duration_strings_parse() {
        let cases = [
            ("15s", Some(15_000)),
            ("2s", Some(2_000)),
            ("500ms", Some(500)),
            ("1m30s", Some(90_000)),
            ("1.5h", Some(5_400_000)),
            ("0", Some(0)),
            ("0s", Some(0)),
            ("+3s", Some(3_000)),
            ("1000us", Some(1)),
            ("-1s", None),
            ("", None),
            ("s", None),
            ("15", None),
            ("1x", None),
            ("1e400h", None),
            (".s", None),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_go_duration(input).map(|d| d.as_millis() as u64),
                want,
                "{input:?}"
            );
        }
    }

    #[test]
    fn durations_accept_strings_and_integer_nanoseconds() {
        let d: FlyDuration = serde_json::from_str("\"10s\"").unwrap();
        assert_eq!(d.as_duration(), Some(Duration::from_secs(10)));
        let d: FlyDuration = serde_json::from_str("15000000000").unwrap();
        assert_eq!(d.as_duration(), Some(Duration::from_secs(15)));
        let d: FlyDuration = serde_json::from_str("2.5e9").unwrap();
        assert_eq!(d.as_duration(), Some(Duration::from_millis(2500)));
    }

    #[test]
    fn unparseable_durations_survive_round_trip() {
        for raw in ["\"forever\"", "-5", "true", "{\"a\":1}"] {
            let d: FlyDuration = serde_json::from_str(raw).unwrap();
            assert_eq!(d.as_duration(), None);
            assert_eq!(serde_json::to_string(&d).unwrap(), raw);
        }
    }

    #[test]
    fn durations_are_sent_as_go_strings() {
        let s = |d| serde_json::to_string(&FlyDuration::Parsed(d)).unwrap();
        assert_eq!(s(Duration::from_secs(15)), "\"15s\"");
        assert_eq!(s(Duration::from_millis(1500)), "\"1500ms\"");
        assert_eq!(s(Duration::ZERO), "\"0s\"");
        assert_eq!(s(Duration::from_nanos(7)), "\"7ns\"");
        let nanos: FlyDuration = serde_json::from_str("10000000000").unwrap();
        assert_eq!(serde_json::to_string(&nanos).unwrap(), "\"10s\"");
    }
}
