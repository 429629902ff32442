//! Configuration files lexed once per process: resolving 5,000 aliases read
//! and lexed `~/.ssh/config` and `/etc/ssh/ssh_config` 5,000 times each
//! (about a quarter of the command line's CPU for 5,000 hosts). A file's
//! lines are kept with its [`FileStamp`] and used again only while the stamp
//! holds, so an edited file is read afresh at the next resolution.
//!
//! Invariant: what is returned is what lexing the file's current content
//! gives; only regular files are kept (a pipe or a device is read each
//! time), and errors are never kept.
//!
//! May use: `lexer`, `file_stamp`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use super::lexer::{self, Line};
use super::ConfigError;
use crate::file_stamp::FileStamp;

/// Largest configuration file read: `Include /dev/zero` must fail, not
/// exhaust memory.
const MAX_FILE_SIZE: u64 = 16 << 20;

/// The lexed files, by path, with the stamp they were read under.
type Kept = HashMap<PathBuf, (FileStamp, Arc<[Line]>)>;

fn kept() -> &'static Mutex<Kept> {
    static KEPT: OnceLock<Mutex<Kept>> = OnceLock::new();
    KEPT.get_or_init(Mutex::default)
}

/// The lines of the file at `path`: `Err` when it cannot be read (the caller
/// decides whether a missing file matters), `Ok(Err)` when it does not lex.
pub(crate) fn lines(path: &Path) -> std::io::Result<Result<Arc<[Line]>, ConfigError>> {
    let stamp = FileStamp::of_file(path);
    if let Some((_, lines)) = stamp.and_then(|s| kept().lock().get(path).filter(|(k, _)| *k == s).cloned()) {
        return Ok(Ok(lines));
    }
    let bytes = read_capped(path)?;
    let lines: Arc<[Line]> = match lexer::parse(&bytes, path) {
        Ok(lines) => lines.into(),
        Err(e) => return Ok(Err(e)),
    };
    // Kept only if the file did not change while being read.
    if let Some(s) = stamp.filter(|s| FileStamp::of_file(path) == Some(*s)) {
        kept().lock().insert(path.to_owned(), (s, Arc::clone(&lines)));
    }
    Ok(Ok(lines))
}

/// Reads a whole file of at most [`MAX_FILE_SIZE`] bytes.
fn read_capped(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "file larger than 16 MiB",
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keywords(path: &Path) -> Vec<String> {
        lines(path)
            .unwrap()
            .unwrap()
            .iter()
            .map(|l| l.keyword.clone())
            .collect()
    }

    #[test]
    fn a_file_is_lexed_once_and_again_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, "Host a\n  User x\n").unwrap();
        let first = lines(&path).unwrap().unwrap();
        assert!(
            Arc::ptr_eq(&first, &lines(&path).unwrap().unwrap()),
            "kept while unchanged"
        );
        std::fs::write(&path, "Host a\n  Port 2\n  User x\n").unwrap();
        assert_eq!(
            keywords(&path),
            ["host", "port", "user"],
            "an edited file is read again"
        );
        // Replaced by another file (a new inode) of the same length.
        let other = dir.path().join("other");
        std::fs::write(&other, "Host b\n  Port 3\n  User y\n").unwrap();
        std::fs::rename(&other, &path).unwrap();
        let now = lines(&path).unwrap().unwrap();
        assert_eq!(now[0].args, ["b"]);
    }

    #[test]
    fn errors_are_not_kept_and_a_missing_file_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, "Host a\0\n").unwrap();
        assert!(lines(&path).unwrap().is_err(), "a NUL byte does not lex");
        std::fs::write(&path, "Host fixed\n").unwrap();
        assert_eq!(keywords(&path), ["host"]);
        let missing = lines(&dir.path().join("absent")).map(|_| ()).unwrap_err();
        assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
        // Not a regular file: read each time, never kept.
        assert!(lines(Path::new("/dev/null")).unwrap().unwrap().is_empty());
        assert!(!kept().lock().contains_key(Path::new("/dev/null")));
    }
}
