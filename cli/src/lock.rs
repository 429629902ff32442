//! The lock that serialises every change to a queue file: an exclusive
//! `flock` on `QUEUEFILE.lock` beside it, taken by the runner around each
//! read-modify-write of the queue and by `queue --edit` for as long as the
//! editor runs (Pegasus' lock mode).
//!
//! Why a file of its own rather than the queue file: editors save by
//! writing a new file and renaming it over the old one, and so does the
//! runner; a lock on the queue file's inode would be lost with the inode.
//! The lock file is never renamed nor removed, so every process locks the
//! same inode. `std::fs::File::lock` (`flock(2)` on Unix) is used: it is
//! released by the kernel when the process dies, so a crashed editor or
//! runner never leaves the queue locked.
//!
//! Invariant: a [`Held`] lock is released when it is dropped, and only then.
//!
//! May use: std only.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

/// The lock file of one queue file, open.
#[derive(Debug)]
pub struct QueueLock {
    /// `QUEUEFILE.lock`, open for writing (created if missing).
    file: File,
    /// Its path, for messages.
    path: PathBuf,
}

/// The lock, held until dropped.
#[derive(Debug)]
pub struct Held<'a>(&'a File);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        // Closing the file would release it too; an unlock that fails
        // leaves it to the process's end.
        let _ = self.0.unlock();
    }
}

/// The lock file's path for `queue`.
pub fn path_for(queue: &Path) -> PathBuf {
    let mut name = queue.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl QueueLock {
    /// Opens (creating it if needed) the lock file of `queue`.
    pub fn open(queue: &Path) -> io::Result<QueueLock> {
        let path = path_for(queue);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot open the lock file {}: {e}", path.display())))?;
        Ok(QueueLock { file, path })
    }

    /// Takes the lock, waiting as long as another process holds it.
    pub fn lock(&self) -> io::Result<Held<'_>> {
        self.file
            .lock()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot lock {}: {e}", self.path.display())))?;
        Ok(Held(&self.file))
    }

    /// Takes the lock if nobody holds it; `None` if somebody does.
    pub fn try_lock(&self) -> io::Result<Option<Held<'_>>> {
        match self.file.try_lock() {
            Ok(()) => Ok(Some(Held(&self.file))),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(io::Error::new(
                e.kind(),
                format!("cannot lock {}: {e}", self.path.display()),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_excludes_another_open_of_the_same_file_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let queue = dir.path().join("q.txt");
        let a = QueueLock::open(&queue).unwrap();
        let b = QueueLock::open(&queue).unwrap();
        assert_eq!(path_for(&queue), dir.path().join("q.txt.lock"));
        let held = a.lock().unwrap();
        assert!(b.try_lock().unwrap().is_none());
        drop(held);
        assert!(b.try_lock().unwrap().is_some());
    }
}
