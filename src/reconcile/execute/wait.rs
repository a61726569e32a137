//! Patience for Fly's asynchronous steps: poll with growing pauses until a condition holds or a
//! deadline passes. Production waiting, not test synchronisation.

use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

use super::ExecError;

/// Poll `check` until it returns `Some`, pausing 100 ms, 200 ms, … up to 2 s between tries; give up
/// with `StillWaiting(what)` after `patience`.
pub(crate) async fn until<T, F, Fut>(
    patience: Duration,
    what: &'static str,
    mut check: F,
) -> Result<T, ExecError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, ExecError>>,
{
    let deadline = Instant::now() + patience;
    let mut pause = Duration::from_millis(100);
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(ExecError::StillWaiting(what));
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}
