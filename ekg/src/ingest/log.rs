//! [`IngestLog`]: the position in the log this host has applied.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use shared::{Epoch, Offset};

use crate::config::{Config, Mode};

/// Applied offset and epoch, behind one mutex: holding it is what serialises applying.
#[derive(Debug)]
pub struct IngestLog {
    cursor: Mutex<Cursor>,
    ready: AtomicBool,
}

/// Where this host stands in the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    pub epoch: Epoch,
    pub applied: Offset,
}

impl IngestLog {
    pub fn new(config: &Config) -> IngestLog {
        IngestLog {
            cursor: Mutex::new(Cursor::default()),
            ready: AtomicBool::new(matches!(config.mode, Mode::Standalone { .. })),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Cursor> {
        self.cursor.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Where this host stands now.
    pub fn cursor(&self) -> Cursor {
        *self.lock()
    }

    /// Caught up with the log since start (standalone: always).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub(crate) fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }
}
