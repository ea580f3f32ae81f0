//! Shutdown signalling: SIGTERM or SIGINT cancels a [`CancellationToken`] every task watches.
//!
//! Both binaries call [`on_signal`] before they bind and announce: the handlers are registered
//! with the OS before it returns, so a SIGTERM that arrives right after the listening line is a
//! clean shutdown (exit 0), never the default action (the process killed mid-write).

use std::io;

pub use tokio_util::sync::CancellationToken;
pub use tokio_util::task::TaskTracker;

/// Register SIGTERM and SIGINT handlers now and return a token cancelled by the first of them.
/// The signal is logged. Must be called inside a Tokio runtime.
///
/// # Errors
/// The OS refused to install a handler.
pub fn on_signal() -> io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let cancel = token.clone();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
                _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
            }
            cancel.cancel();
        });
    }
    #[cfg(not(unix))]
    {
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                tracing::info!("Ctrl-C received, shutting down");
                cancel.cancel();
            }
        });
    }
    Ok(token)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The handler is in place when `on_signal` returns: a SIGINT sent at once (before the task
    /// that waits for it ever ran) cancels the token instead of killing the test process.
    #[tokio::test(flavor = "current_thread")]
    async fn a_signal_right_after_install_cancels_the_token() {
        let token = on_signal().unwrap();
        let status = std::process::Command::new("kill")
            .arg("-INT")
            .arg(std::process::id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(10), token.cancelled())
            .await
            .expect("SIGINT cancels the token");
    }
}
