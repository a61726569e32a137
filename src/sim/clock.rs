//! The platform's clock: what `updated_at`, `created_at`, event timestamps and the `Date` header
//! say. Tests move it to get past windows measured in Fly's time (the org list's `updated_after`,
//! REFERENCE §3.9) without waiting, and give one machine's host a clock of its own: Fly hosts stamp
//! `updated_at`, and nothing says their clocks agree (REFERENCE §7, list lag and skew).

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, TimeDelta, Utc};

/// Wall time plus an offset tests can move.
#[derive(Debug, Default)]
pub(crate) struct Clock {
    offset_micros: AtomicI64,
}

impl Clock {
    pub fn now(&self) -> DateTime<Utc> {
        let offset = TimeDelta::microseconds(self.offset_micros.load(Ordering::SeqCst));
        Utc::now() + offset
    }

    pub fn advance(&self, by: TimeDelta) {
        let micros = by.num_microseconds().unwrap_or(i64::MAX);
        self.offset_micros.fetch_add(micros, Ordering::SeqCst);
    }
}

/// An HTTP `Date` value (IMF-fixdate, RFC 9110 §5.6.7).
pub(crate) fn http_date(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}
