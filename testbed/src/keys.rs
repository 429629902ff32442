//! Throwaway client key pairs generated with `ssh-keygen`, or in-process for ed25519.
//!
//! Invariant: a [`ClientKey`]'s files live in its own temporary directory (private key
//! mode 0600), which is removed when it drops; nothing is written anywhere else.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{io_err, Error, Result};

/// Key algorithm for [`ClientKey::generate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyType {
    /// `ssh-ed25519` (the default).
    #[default]
    Ed25519,
    /// `ecdsa-sha2-nistp256`.
    Ecdsa,
    /// RSA, 2048 bits (signatures with rsa-sha2-256/512).
    Rsa,
}

impl KeyType {
    fn keygen_args(self) -> &'static [&'static str] {
        match self {
            KeyType::Ed25519 => &["-t", "ed25519"],
            KeyType::Ecdsa => &["-t", "ecdsa", "-b", "256"],
            KeyType::Rsa => &["-t", "rsa", "-b", "2048"],
        }
    }
}

/// A client key pair in a temporary directory (deleted on drop), made by `ssh-keygen`.
#[derive(Debug)]
pub struct ClientKey {
    /// The temporary directory holding both files (removed on drop).
    dir: tempfile::TempDir,
    /// The private key, in OpenSSH format, inside `dir`.
    private_path: PathBuf,
    /// The public key (`private_path` + `.pub`), inside `dir`.
    public_path: PathBuf,
    /// The public key file's line, trimmed: `ssh-ed25519 AAAA... comment`.
    public_line: String,
    /// The passphrase the private key is encrypted with, if any.
    passphrase: Option<String>,
}

impl ClientKey {
    /// Generates a key pair of type `kind`, encrypted with `passphrase` if given.
    pub fn generate(kind: KeyType, passphrase: Option<&str>) -> Result<ClientKey> {
        let dir = tempfile::Builder::new()
            .prefix("testbed-key")
            .tempdir()
            .map_err(io_err("creating a temporary directory"))?;
        let private_path = dir.path().join("id_key");
        keygen(&private_path, kind, passphrase.unwrap_or(""), "testbed-client")?;
        let public_path = dir.path().join("id_key.pub");
        let public_line = std::fs::read_to_string(&public_path)
            .map_err(io_err(format!("reading {}", public_path.display())))?
            .trim()
            .to_string();
        Ok(ClientKey {
            dir,
            private_path,
            public_path,
            public_line,
            passphrase: passphrase.map(str::to_string),
        })
    }

    /// Generates an unencrypted ed25519 key pair.
    pub fn ed25519() -> Result<ClientKey> {
        Self::generate(KeyType::Ed25519, None)
    }

    /// Generates an unencrypted ed25519 key pair in this process, without `ssh-keygen`
    /// (for machines that have no OpenSSH client). The files are in the same OpenSSH formats
    /// as `ssh-keygen` writes.
    pub fn ed25519_in_process() -> Result<ClientKey> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = tempfile::Builder::new()
            .prefix("testbed-key")
            .tempdir()
            .map_err(io_err("creating a temporary directory"))?;
        let mut key = crate::embedded::generate_ed25519()?;
        key.set_comment("testbed-client");
        let pem = key
            .to_openssh(russh::keys::ssh_key::LineEnding::LF)
            .map_err(|e| Error::Key(format!("encoding the private key: {e}")))?;
        let public_line = key
            .public_key()
            .to_openssh()
            .map_err(|e| Error::Key(format!("encoding the public key: {e}")))?;
        let private_path = dir.path().join("id_key");
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&private_path)
            .and_then(|mut f| f.write_all(pem.as_bytes()))
            .map_err(io_err(format!("writing {}", private_path.display())))?;
        let public_path = dir.path().join("id_key.pub");
        std::fs::write(&public_path, format!("{public_line}\n"))
            .map_err(io_err(format!("writing {}", public_path.display())))?;
        Ok(ClientKey {
            dir,
            private_path,
            public_path,
            public_line,
            passphrase: None,
        })
    }

    /// Path of the private key file (OpenSSH format, mode 0600).
    pub fn private_path(&self) -> &Path {
        &self.private_path
    }

    /// Path of the public key file.
    pub fn public_path(&self) -> &Path {
        &self.public_path
    }

    /// The public key as one `authorized_keys` line (`ssh-ed25519 AAAA... testbed-client`).
    pub fn public_line(&self) -> &str {
        &self.public_line
    }

    /// The private key file's contents (for "key from memory" authentication).
    pub fn private_pem(&self) -> Result<String> {
        std::fs::read_to_string(&self.private_path).map_err(io_err(format!("reading {}", self.private_path.display())))
    }

    /// The passphrase the private key is encrypted with, if any.
    pub fn passphrase(&self) -> Option<&str> {
        self.passphrase.as_deref()
    }

    /// The temporary directory holding the key files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Appends the public key to an `authorized_keys` file.
    pub fn authorize_in(&self, authorized_keys: &Path) -> Result<()> {
        crate::append_line(authorized_keys, &self.public_line)
    }
}

/// Runs `ssh-keygen -q -f path -N passphrase -C comment -t ...`.
pub(crate) fn keygen(path: &Path, kind: KeyType, passphrase: &str, comment: &str) -> Result<()> {
    let output = Command::new("ssh-keygen")
        .arg("-q")
        .args(kind.keygen_args())
        .arg("-N")
        .arg(passphrase)
        .arg("-C")
        .arg(comment)
        .arg("-f")
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::Unavailable("ssh-keygen not found (install openssh-client)".into())
            } else {
                Error::Io {
                    context: "running ssh-keygen".into(),
                    source: e,
                }
            }
        })?;
    if !output.status.success() {
        return Err(Error::Key(format!(
            "ssh-keygen failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}
