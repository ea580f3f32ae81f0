//! Whether to retry, apart from how: the retry table of `docs/PROTOCOL.md` as one pure
//! function ([`action`]), and the backoff between attempts ([`backoff`]).

use std::time::Duration;

use super::HostMode;

/// First backoff step.
pub const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Longest wait between two attempts.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// How a delivery attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The host answered with this status.
    Status(u16),
    /// No answer within `--delivery-timeout`.
    Timeout,
    /// Connecting, sending or reading failed.
    Transport(String),
    /// The request could not even be built from the record (it can never be sent).
    Unsendable(String),
}

/// What the worker does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// The host took it: move the cursor past the records sent.
    Advance,
    /// The host applied less than believed (409 with an ack): rewind to `applied + 1`.
    Rewind,
    /// Send the same thing again after a backoff.
    Retry,
    /// The host refuses the record on its merits: dead-letter it and move on.
    DeadLetter,
}

/// The retry table. `has_ack` says whether the answer's body parsed as an ingest ack.
pub fn action(mode: HostMode, answer: &Answer, has_ack: bool) -> Action {
    match *answer {
        Answer::Status(s) if (200..300).contains(&s) => Action::Advance,
        Answer::Status(409) if mode == HostMode::Batch && has_ack => Action::Rewind,
        Answer::Status(408 | 429) => Action::Retry,
        Answer::Status(s) if (500..600).contains(&s) => Action::Retry,
        Answer::Status(s) if (400..500).contains(&s) => Action::DeadLetter,
        // 1xx/3xx are not answers a host should give; keep retrying (and show it as the
        // host's last error) rather than drop anything.
        Answer::Status(_) | Answer::Timeout | Answer::Transport(_) => Action::Retry,
        Answer::Unsendable(_) => Action::DeadLetter,
    }
}

/// Wait before retry number `attempt` (0-based): uniformly random between zero and
/// `min(cap, base * 2^attempt)` ("full jitter").
pub fn backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
        .min(BACKOFF_CAP);
    let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(fastrand::u64(0..=ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_table() {
        use Action::*;
        use HostMode::*;
        let t = |s| Answer::Status(s);
        let cases = [
            (Batch, t(200), true, Advance),
            (Batch, t(204), false, Advance),
            (Replay, t(201), false, Advance),
            (Batch, t(409), true, Rewind),
            (Batch, t(409), false, DeadLetter),
            (Replay, t(409), true, DeadLetter),
            (Batch, t(408), false, Retry),
            (Batch, t(429), false, Retry),
            (Batch, t(500), false, Retry),
            (Replay, t(501), false, Retry),
            (Batch, t(503), false, Retry),
            (Batch, t(599), false, Retry),
            (Batch, t(400), false, DeadLetter),
            (Replay, t(401), false, DeadLetter),
            (Replay, t(404), false, DeadLetter),
            (Batch, t(422), false, DeadLetter),
            (Batch, t(302), false, Retry),
            (Batch, Answer::Timeout, false, Retry),
            (Replay, Answer::Transport("refused".into()), false, Retry),
            (
                Replay,
                Answer::Unsendable("bad header".into()),
                false,
                DeadLetter,
            ),
        ];
        for (mode, answer, ack, want) in cases {
            assert_eq!(
                action(mode, &answer, ack),
                want,
                "{mode:?} {answer:?} ack={ack}"
            );
        }
    }

    #[test]
    fn backoff_stays_within_the_doubling_ceiling_and_the_cap() {
        for attempt in 0..64 {
            let ceiling = (100u64 << attempt.min(20)).min(30_000);
            for _ in 0..200 {
                let d = backoff(attempt);
                assert!(d <= Duration::from_millis(ceiling), "{attempt}: {d:?}");
            }
        }
        // Full jitter: later attempts spread over the whole range, not just near the cap.
        let spread: Vec<_> = (0..500).map(|_| backoff(30)).collect();
        assert!(spread.iter().any(|d| *d < Duration::from_secs(10)));
        assert!(spread.iter().any(|d| *d > Duration::from_secs(20)));
    }
}
