//! What tells one version of a file from another without reading it:
//! device, inode, length, and the modification and change times. The
//! caches of files read once (configuration files, identity files) are
//! valid only while the stamp they were read under holds.
//!
//! May use: nothing of the crate.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A file's identity and version.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

impl FileStamp {
    /// The stamp of what `m` describes.
    pub(crate) fn of(m: &Metadata) -> FileStamp {
        FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            modified: (m.mtime(), m.mtime_nsec()),
            changed: (m.ctime(), m.ctime_nsec()),
        }
    }

    /// The stamp of the regular file at `path` (symbolic links followed);
    /// `None` when it is missing or not a regular file (a pipe or a device
    /// has no version to trust).
    pub(crate) fn of_file(path: &Path) -> Option<FileStamp> {
        std::fs::metadata(path)
            .ok()
            .filter(Metadata::is_file)
            .map(|m| FileStamp::of(&m))
    }
}
