//! The log's file operations behind one small trait, so tests can make the disk fail.
//!
//! Every operation whose failure the log must survive or report goes through a
//! [`Filesystem`]: creating, opening, writing, syncing, truncating and deleting segment files,
//! and syncing the directory. [`StdFilesystem`] does exactly what `std::fs` does; a test
//! implements the trait to answer `EIO` or `ENOSPC` from the call it wants to fail (or to hold
//! a call until the test releases it), which no real disk does on demand.
//!
//! Reads of records go through the `File` an `open_read` returned; a read error surfaces as
//! [`ReadError::Io`](super::ReadError::Io) like any other.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// File operations the log performs. Every method has the `std` behaviour as its default, so
/// an implementation overrides only the calls it wants to change.
pub trait Filesystem: Send + Sync + fmt::Debug + 'static {
    /// Create a file that must not exist yet, open for reading and appending.
    ///
    /// # Errors
    /// As `OpenOptions::open` with `create_new`.
    fn create_new(&self, path: &Path) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(path)
    }

    /// Open an existing file for reading and appending (the active segment on recovery).
    ///
    /// # Errors
    /// As `OpenOptions::open`.
    fn open_append(&self, path: &Path) -> io::Result<File> {
        OpenOptions::new().read(true).append(true).open(path)
    }

    /// Open an existing file for reading.
    ///
    /// # Errors
    /// As `File::open`.
    fn open_read(&self, path: &Path) -> io::Result<File> {
        File::open(path)
    }

    /// Write all of `buf` at the end of `file` (opened for appending).
    ///
    /// # Errors
    /// As `Write::write_all`; part of `buf` may have been written.
    fn write_all(&self, mut file: &File, buf: &[u8]) -> io::Result<()> {
        file.write_all(buf)
    }

    /// `fdatasync(2)`.
    ///
    /// # Errors
    /// As `File::sync_data`. Linux reports a failed write-back once per open file: the caller
    /// must treat an error as the possible loss of everything written since the last
    /// successful sync, whoever else syncs the same file.
    fn sync_data(&self, file: &File) -> io::Result<()> {
        file.sync_data()
    }

    /// `ftruncate(2)`.
    ///
    /// # Errors
    /// As `File::set_len`.
    fn set_len(&self, file: &File, len: u64) -> io::Result<()> {
        file.set_len(len)
    }

    /// `unlink(2)`.
    ///
    /// # Errors
    /// As `std::fs::remove_file`.
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    /// Make creations, renames and deletions in `dir` durable (`fsync` of the directory).
    ///
    /// # Errors
    /// Opening or syncing the directory failed.
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// The real disk: every operation as `std::fs` does it.
#[derive(Clone, Copy, Debug, Default)]
pub struct StdFilesystem;

impl Filesystem for StdFilesystem {}

/// A [`Filesystem`] for tests: fails, or holds, chosen operations on demand.
#[cfg(test)]
pub(crate) mod faulty {
    use std::collections::{HashMap, VecDeque};
    use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
    use std::time::{Duration, Instant};

    use super::*;

    /// `EIO` on Linux.
    pub(crate) const EIO: i32 = 5;
    /// `ENOSPC` on Linux.
    pub(crate) const ENOSPC: i32 = 28;

    /// The operations a test can target.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub(crate) enum Op {
        CreateNew,
        OpenAppend,
        OpenRead,
        Write,
        SyncData,
        SetLen,
        Remove,
        SyncDir,
    }

    /// What the next call of an operation does.
    #[derive(Clone)]
    pub(crate) enum Step {
        /// Fail with this errno without doing anything.
        Fail(i32),
        /// Wait until the gate opens, then do the operation for real and fail with this errno
        /// (an `fdatasync` whose write-back fails while other syncs run).
        HoldThenFail(Arc<Gate>, i32),
        /// Writes only: write the first bytes of the buffer, then fail (a disk filling up
        /// mid-write). Other operations fail without doing anything.
        Partial(usize, i32),
    }

    /// A call held until the test opens the gate.
    #[derive(Default)]
    pub(crate) struct Gate {
        state: Mutex<(bool, bool)>,
        changed: Condvar,
    }

    impl Gate {
        fn guard(&self) -> MutexGuard<'_, (bool, bool)> {
            self.state.lock().unwrap_or_else(PoisonError::into_inner)
        }

        fn pass(&self) {
            let mut s = self.guard();
            s.0 = true;
            self.changed.notify_all();
            while !s.1 {
                s = self.changed.wait(s).unwrap_or_else(PoisonError::into_inner);
            }
        }

        /// Wait (up to `limit`) until a call is held at the gate.
        pub(crate) fn wait_entered(&self, limit: Duration) -> bool {
            let deadline = Instant::now() + limit;
            let mut s = self.guard();
            while !s.0 {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return false;
                }
                s = self
                    .changed
                    .wait_timeout(s, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            true
        }

        pub(crate) fn open(&self) {
            self.guard().1 = true;
            self.changed.notify_all();
        }
    }

    #[derive(Default)]
    struct Script {
        /// Steps for the next calls, in order.
        next: HashMap<Op, VecDeque<Step>>,
        /// Fail every call of these with the errno until healed.
        always: HashMap<Op, i32>,
        /// Calls that returned, successful or not.
        done: HashMap<Op, usize>,
    }

    /// The real disk, except where a test said otherwise.
    #[derive(Default)]
    pub(crate) struct FaultyFs {
        script: Mutex<Script>,
        returned: Condvar,
    }

    impl fmt::Debug for FaultyFs {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("FaultyFs")
        }
    }

    impl FaultyFs {
        fn script(&self) -> MutexGuard<'_, Script> {
            self.script.lock().unwrap_or_else(PoisonError::into_inner)
        }

        /// Queue `step` for the next call of `op` not claimed by an earlier step.
        pub(crate) fn next(&self, op: Op, step: Step) {
            self.script().next.entry(op).or_default().push_back(step);
        }

        /// Fail every call of `op` with `errno` until [`FaultyFs::heal`].
        pub(crate) fn fail_always(&self, op: Op, errno: i32) {
            self.script().always.insert(op, errno);
        }

        pub(crate) fn heal(&self, op: Op) {
            let mut s = self.script();
            s.always.remove(&op);
            s.next.remove(&op);
        }

        /// Calls of `op` that have returned.
        pub(crate) fn returned(&self, op: Op) -> usize {
            self.script().done.get(&op).copied().unwrap_or(0)
        }

        /// Wait (up to `limit`) until `n` calls of `op` have returned.
        pub(crate) fn wait_returned(&self, op: Op, n: usize, limit: Duration) -> bool {
            let deadline = Instant::now() + limit;
            let mut s = self.script();
            while s.done.get(&op).copied().unwrap_or(0) < n {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return false;
                }
                s = self
                    .returned
                    .wait_timeout(s, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            true
        }

        /// The step for this call of `op`, if any.
        fn take(&self, op: Op) -> Option<Step> {
            let mut s = self.script();
            match s.always.get(&op) {
                Some(errno) => Some(Step::Fail(*errno)),
                None => s.next.get_mut(&op).and_then(VecDeque::pop_front),
            }
        }

        fn returned_now(&self, op: Op) {
            *self.script().done.entry(op).or_default() += 1;
            self.returned.notify_all();
        }

        fn run<T>(&self, op: Op, real: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
            let result = match self.take(op) {
                None => real(),
                Some(Step::Fail(errno) | Step::Partial(_, errno)) => {
                    Err(io::Error::from_raw_os_error(errno))
                }
                Some(Step::HoldThenFail(gate, errno)) => {
                    gate.pass();
                    real().and(Err(io::Error::from_raw_os_error(errno)))
                }
            };
            self.returned_now(op);
            result
        }
    }

    impl Filesystem for FaultyFs {
        fn create_new(&self, path: &Path) -> io::Result<File> {
            self.run(Op::CreateNew, || StdFilesystem.create_new(path))
        }
        fn open_append(&self, path: &Path) -> io::Result<File> {
            self.run(Op::OpenAppend, || StdFilesystem.open_append(path))
        }
        fn open_read(&self, path: &Path) -> io::Result<File> {
            self.run(Op::OpenRead, || StdFilesystem.open_read(path))
        }
        fn write_all(&self, file: &File, buf: &[u8]) -> io::Result<()> {
            let result = match self.take(Op::Write) {
                None => StdFilesystem.write_all(file, buf),
                Some(Step::Partial(n, errno)) => StdFilesystem
                    .write_all(file, &buf[..n.min(buf.len())])
                    .and(Err(io::Error::from_raw_os_error(errno))),
                Some(Step::Fail(errno)) => Err(io::Error::from_raw_os_error(errno)),
                Some(Step::HoldThenFail(gate, errno)) => {
                    gate.pass();
                    StdFilesystem
                        .write_all(file, buf)
                        .and(Err(io::Error::from_raw_os_error(errno)))
                }
            };
            self.returned_now(Op::Write);
            result
        }
        fn sync_data(&self, file: &File) -> io::Result<()> {
            self.run(Op::SyncData, || StdFilesystem.sync_data(file))
        }
        fn set_len(&self, file: &File, len: u64) -> io::Result<()> {
            self.run(Op::SetLen, || StdFilesystem.set_len(file, len))
        }
        fn remove_file(&self, path: &Path) -> io::Result<()> {
            self.run(Op::Remove, || StdFilesystem.remove_file(path))
        }
        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            self.run(Op::SyncDir, || StdFilesystem.sync_dir(dir))
        }
    }
}
