//! The queue file on disk, as the runner consumes it: taking the first job
//! moves it, in canonical form, to the consumed file beside the queue
//! (`QUEUEFILE.consumed`), under the queue's lock (`lock`).
//!
//! A take reads the whole file, checks it (`jobfile::parse`: a half-done
//! edit takes nothing), and removes the first entry's line by writing the
//! rest to a temporary file renamed over the queue, so that a reader never
//! sees half a file. A parametrised first entry is expanded in place: its
//! line becomes one canonical line per job, and the first of them is taken;
//! the others stay editable like any line. Lines before the first entry
//! (comments) stay where they are.
//!
//! The order of the writes makes a job run at most once: the queue loses
//! the job before the consumed file gains it, and the caller runs it after
//! both.
//!
//! Invariant: every job taken is in the consumed file, once, and is gone
//! from the queue file; nothing else of the queue file changes.
//!
//! May use: `jobfile`, `lock`.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::jobfile::{self, JobFileError};
use crate::lock::QueueLock;

/// Why the queue file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        source: io::Error,
    },
    /// The file is not a valid job file.
    #[error(transparent)]
    Invalid(#[from] JobFileError),
}

/// What the file looked like when last read: a changed stamp means another
/// read may find new jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

/// A queue file and its consumed file.
#[derive(Debug)]
pub struct QueueFile {
    /// The queue file as the user named it: in messages.
    shown: String,
    /// Where it is read and written (symbolic links resolved, so that the
    /// rename replaces the file, not the link).
    path: PathBuf,
    /// `QUEUEFILE.consumed`, appended to.
    consumed: PathBuf,
    /// The lock every read-modify-write holds.
    lock: QueueLock,
}

impl QueueFile {
    /// The queue at `path`, which must exist.
    pub fn open(path: &Path) -> Result<QueueFile, QueueError> {
        let shown = path.display().to_string();
        let io_err = |source| QueueError::Io {
            path: shown.clone(),
            source,
        };
        let real = fs::canonicalize(path).map_err(io_err)?;
        if !fs::metadata(&real).map_err(io_err)?.is_file() {
            return Err(io_err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            )));
        }
        let lock = QueueLock::open(&real).map_err(io_err)?;
        Ok(QueueFile {
            consumed: consumed_path(&real),
            path: real,
            lock,
            shown,
        })
    }

    /// The queue file as the user named it.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The file's stamp now (a missing file has the zero stamp).
    pub fn stamp(&self) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        match fs::metadata(&self.path) {
            Ok(m) => Stamp {
                len: m.len(),
                modified: m.modified().ok(),
                inode: m.ino(),
            },
            Err(_) => Stamp {
                len: 0,
                modified: None,
                inode: 0,
            },
        }
    }

    /// Takes the first job, under the lock (waiting while an editor holds
    /// it): removes it from the queue, appends it to the consumed file and
    /// returns it; `None` when the queue holds no job, or when `wanted`
    /// says no once the lock is held (the run ended during the wait: the
    /// job would have nowhere to run).
    pub fn take(&self, wanted: &dyn Fn() -> bool) -> Result<Option<String>, QueueError> {
        let _held = self.lock.lock().map_err(|e| self.io(e))?;
        if !wanted() {
            return Ok(None);
        }
        let text = self.read()?;
        let entries = jobfile::parse(&self.shown, &text)?;
        let Some(first) = entries.first() else {
            return Ok(None);
        };
        let mut jobs = first.jobs();
        let job = jobs.remove(0);
        let mut lines: Vec<&str> = text.split('\n').collect();
        let rest: Vec<String> = jobs.iter().map(|j| jobfile::canonical(j)).collect();
        lines.splice(first.index..=first.index, rest.iter().map(String::as_str));
        self.replace(&lines.join("\n"))?;
        self.append_consumed(&jobfile::canonical(&job))?;
        Ok(Some(job))
    }

    /// How many jobs the queue holds now, read under the lock: waiting for
    /// it when `wait`, else `None` if somebody holds it (an editor).
    pub fn remaining(&self, wait: bool) -> Result<Option<usize>, QueueError> {
        let _held = if wait {
            self.lock.lock().map_err(|e| self.io(e))?
        } else {
            match self.lock.try_lock().map_err(|e| self.io(e))? {
                Some(held) => held,
                None => return Ok(None),
            }
        };
        let text = self.read()?;
        Ok(Some(
            jobfile::parse(&self.shown, &text)?.iter().map(|e| e.count()).sum(),
        ))
    }

    fn read(&self) -> Result<String, QueueError> {
        match fs::read_to_string(&self.path) {
            Ok(t) => Ok(t),
            // Deleted while we run: an empty queue until it is back.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(self.io(e)),
        }
    }

    /// Writes `text` as the queue's new content: a temporary file beside it
    /// (same file system), given the queue's permissions, renamed over it.
    fn replace(&self, text: &str) -> Result<(), QueueError> {
        let mut tmp = self.path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let write = || -> io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            if let Ok(m) = fs::metadata(&self.path) {
                f.set_permissions(m.permissions())?;
            }
            drop(f);
            fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            self.io(e)
        })
    }

    fn append_consumed(&self, line: &str) -> Result<(), QueueError> {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.consumed)
            .map_err(|e| self.io_at(&self.consumed, e))?;
        // One write of the whole line: O_APPEND keeps concurrent appends
        // (two runners on one queue) from interleaving within it.
        f.write_all(format!("{line}\n").as_bytes())
            .map_err(|e| self.io_at(&self.consumed, e))
    }

    fn io(&self, source: io::Error) -> QueueError {
        QueueError::Io {
            path: self.shown.clone(),
            source,
        }
    }

    fn io_at(&self, path: &Path, source: io::Error) -> QueueError {
        QueueError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// `QUEUEFILE.consumed`.
pub fn consumed_path(queue: &Path) -> PathBuf {
    let mut name = queue.as_os_str().to_owned();
    name.push(".consumed");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests;
