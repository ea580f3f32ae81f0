//! [`ConnectionLimiter`]: `--max-connections` as a semaphore. A stream acquires a permit
//! before it upgrades and holds it for its whole life; when none is left the upgrade is
//! answered `503` instead.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::http::ApiError;
use crate::telemetry;

/// The two streaming transports, for metrics labels and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Ws,
    Sse,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Sse => "sse",
        }
    }
}

/// Bounds open streaming connections across both transports. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ConnectionLimiter {
    permits: Arc<Semaphore>,
    max: usize,
}

impl ConnectionLimiter {
    pub fn new(max: usize) -> ConnectionLimiter {
        let max = max.min(Semaphore::MAX_PERMITS);
        ConnectionLimiter {
            permits: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// Take a slot for one connection, or `None` when all `--max-connections` are in use.
    pub fn try_acquire(&self, transport: Transport) -> Option<ConnectionPermit> {
        match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => {
                metrics::gauge!(telemetry::CONNECTIONS, "transport" => transport.as_str())
                    .increment(1.0);
                Some(ConnectionPermit {
                    _permit: permit,
                    transport,
                })
            }
            Err(_) => {
                metrics::counter!(telemetry::CONNECTIONS_REFUSED).increment(1);
                None
            }
        }
    }

    /// [`ConnectionLimiter::try_acquire`], or the `503 too_many_connections` to answer.
    ///
    /// # Errors
    /// `503` when every slot is taken.
    pub fn acquire_or_503(&self, transport: Transport) -> Result<ConnectionPermit, ApiError> {
        self.try_acquire(transport).ok_or_else(|| {
            ApiError::unavailable(
                "too_many_connections",
                "this host is at its connection limit; try another host or retry",
            )
        })
    }

    /// Connections open now.
    pub fn in_use(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

/// One open connection; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnectionPermit {
    _permit: OwnedSemaphorePermit,
    transport: Transport,
}

impl ConnectionPermit {
    pub fn transport(&self) -> Transport {
        self.transport
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        metrics::gauge!(telemetry::CONNECTIONS, "transport" => self.transport.as_str())
            .decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_holds_and_a_dropped_permit_frees_its_slot() {
        let limiter = ConnectionLimiter::new(2);
        let a = limiter.try_acquire(Transport::Ws).unwrap();
        let _b = limiter.try_acquire(Transport::Sse).unwrap();
        assert!(limiter.try_acquire(Transport::Ws).is_none());
        assert_eq!(
            limiter.acquire_or_503(Transport::Ws).unwrap_err().status,
            503
        );
        assert_eq!(limiter.in_use(), 2);
        drop(a);
        assert!(limiter.try_acquire(Transport::Ws).is_some());
    }
}
