//! The one deadline-bounded wait of every test and harness: poll a condition until it holds,
//! never a bare sleep as synchronisation.
//!
//! ```ignore
//! wait_for("the host caught up", WAIT, async || host.has_all(&ids)).await?;
//! let lag = wait_for("lag shows", WAIT, async || lag_of(&stack).await.filter(|l| *l > 0)).await?;
//! ```
//!
//! The condition is an async closure returning `bool` (wait until true) or `Option<T>` (wait
//! for `Some`, which is returned). It is polled at once, then at growing intervals up to
//! 20 ms, and the wait fails with an error naming `what` when `timeout` has passed.

use std::time::Duration;

use anyhow::{Result, bail};
use tokio::time::Instant;

/// Longest pause between two polls.
const MAX_POLL: Duration = Duration::from_millis(20);

/// What a condition returns: `true`/`Some` when the wait is over.
pub trait Outcome {
    /// What the wait returns.
    type Value;
    /// `Some` when the condition holds.
    fn done(self) -> Option<Self::Value>;
}

impl Outcome for bool {
    type Value = ();
    fn done(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Outcome for Option<T> {
    type Value = T;
    fn done(self) -> Option<T> {
        self
    }
}

/// Poll `cond` until it holds, or fail after `timeout` with `what` in the error.
///
/// # Errors
/// The condition did not hold within `timeout`.
pub async fn wait_for<C, O>(what: &str, timeout: Duration, mut cond: C) -> Result<O::Value>
where
    C: AsyncFnMut() -> O,
    O: Outcome,
{
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(v) = cond().await.done() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_POLL);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn returns_the_value_once_the_condition_holds() {
        let mut polls = 0;
        let v = wait_for("the third poll", Duration::from_secs(5), async || {
            polls += 1;
            (polls >= 3).then_some(polls * 10)
        })
        .await
        .unwrap();
        assert_eq!(v, 30);
    }

    #[tokio::test]
    async fn fails_after_the_deadline_naming_what_it_waited_for() {
        let start = Instant::now();
        let err = wait_for("never", Duration::from_millis(100), async || false)
            .await
            .unwrap_err();
        assert!(start.elapsed() >= Duration::from_millis(100));
        assert_eq!(err.to_string(), "timed out after 100ms waiting for never");
    }
}
