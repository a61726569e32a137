//! The alert for a database no replica can reach. Pass failures are named by their stored cause
//! (`model::pass::PassFailure`); this one cannot be stored, so each replica raises it itself.

/// A replica's own view of the database, for the alert the database itself cannot carry: when it is
/// unreachable, no replica can claim an alert row, so each replica says so itself (once when it
/// starts, once when it ends).
#[derive(Debug, Default)]
pub(crate) struct DbWatch {
    failed_ticks: u32,
    since: Option<chrono::DateTime<chrono::Utc>>,
    announced: bool,
}

/// Evaluations in a row that must fail before the database counts as unreachable (one can be a
/// blip).
const UNREACHABLE_AFTER_TICKS: u32 = 3;

impl DbWatch {
    /// The message to send after a tick whose database reads failed (`failed`) or worked.
    pub fn after_tick(&mut self, failed: bool) -> Option<String> {
        if failed {
            self.failed_ticks += 1;
            let since = *self.since.get_or_insert_with(chrono::Utc::now);
            if self.failed_ticks >= UNREACHABLE_AFTER_TICKS && !self.announced {
                self.announced = true;
                return Some(format!(
                    "[vyx-fleet] ALERT: the database is unreachable from a vyx-fleet replica since {}: \
                     no pass and no other alert can run. Check the database's status and DATABASE_URL",
                    since.format("%Y-%m-%d %H:%M:%S UTC")
                ));
            }
            return None;
        }
        let was = std::mem::take(self);
        was.announced
            .then(|| "[vyx-fleet] RESOLVED: the database is reachable again".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn the_database_alert_starts_after_three_failed_ticks_and_clears_once() {
        let mut w = DbWatch::default();
        assert_eq!(w.after_tick(true), None);
        assert_eq!(w.after_tick(true), None);
        assert!(
            w.after_tick(true)
                .unwrap()
                .contains("database is unreachable")
        );
        assert_eq!(w.after_tick(true), None, "announced once");
        assert!(w.after_tick(false).unwrap().contains("RESOLVED"));
        assert_eq!(w.after_tick(false), None);
        assert_eq!(
            w.after_tick(true),
            None,
            "a blip after recovery is not an alert"
        );
    }
}
