//! Host-key checking against the known_hosts files (by default
//! `~/.ssh/known_hosts`; with OpenSSH configuration, `UserKnownHostsFile`
//! then `GlobalKnownHostsFile`, plain or hashed `|1|` entries) under the
//! host's policy (strict, accept-new, off), and recording a new key
//! (accept-new) in the first user file, its name hashed under
//! `HashKnownHosts yes`.
//!
//! Invariant: a mismatch always fails, whatever the policy but `Off`; a key
//! is only ever appended, never replaced.
//!
//! May use: `auth` (`home`), `host`.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use ssh2::{CheckResult, HashType, KnownHostFileKind, Session};

use super::auth::home;
use crate::host::{Host, HostKeyCheck};

/// Checks the server's key against the known_hosts files under the host's policy.
pub(super) fn check_host_key(sess: &Session, host: &Host, port: u16) -> Result<(), String> {
    if host.host_key_check == HostKeyCheck::Off {
        return Ok(());
    }
    // HostKeyAlias replaces the name and the port, as in OpenSSH.
    let (lookup, lookup_port) = match &host.ssh.host_key_alias {
        Some(alias) => (alias.clone(), 22),
        None => (host.hostname.clone(), port),
    };
    let name = if lookup_port == 22 {
        lookup.clone()
    } else {
        format!("[{lookup}]:{lookup_port}")
    };
    let (key, _) = sess
        .host_key()
        .ok_or_else(|| format!("{name}: the server sent no host key"))?;
    let key_type = key_type_name(key);
    let fp = sess
        .host_key_hash(HashType::Sha256)
        .map(|h| format!("SHA256:{}", base64(h, false)))
        .unwrap_or_else(|| "(no fingerprint)".into());
    let (user_files, global_files) = match &host.ssh.known_hosts {
        Some(k) => (k.user.clone(), k.global.clone()),
        None => (
            vec![home()
                .map(|h| h.join(".ssh").join("known_hosts"))
                .ok_or_else(|| format!("{name}: cannot check the host key: HOME is not set"))?],
            Vec::new(),
        ),
    };
    let mut mismatch: Option<&PathBuf> = None;
    for path in user_files.iter().chain(&global_files) {
        let mut kh = sess
            .known_hosts()
            .map_err(|e| format!("{name}: cannot check the host key: {e}"))?;
        let text = std::fs::read_to_string(path).unwrap_or_default();
        // Line by line: libssh2 stops reading a file at the first line it cannot parse.
        for line in text.lines().map(str::trim) {
            if !line.is_empty() && !line.starts_with('#') {
                let _ = kh.read_str(line, KnownHostFileKind::OpenSSH);
            }
        }
        match kh.check_port(&lookup, lookup_port, key) {
            CheckResult::Match => return Ok(()),
            CheckResult::Mismatch => mismatch = mismatch.or(Some(path)),
            CheckResult::NotFound | CheckResult::Failure => {}
        }
    }
    if let Some(path) = mismatch {
        return Err(format!(
            "host key verification failed for {name}: the server's {key_type} key {fp} does not match the one \
             recorded in {}; if the host was really reinstalled, remove the old entry",
            path.display()
        ));
    }
    let files = user_files
        .iter()
        .chain(&global_files)
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>();
    let files = if files.is_empty() {
        "(no known_hosts file: UserKnownHostsFile and GlobalKnownHostsFile are none)".to_owned()
    } else {
        files.join(", ")
    };
    match (host.host_key_check, user_files.first()) {
        (HostKeyCheck::AcceptNew, Some(path)) => {
            let written = if host.ssh.hash_known_hosts {
                hashed_name(&name)?
            } else {
                name.clone()
            };
            record_host_key(path, &written, &key_type, key)
                .map_err(|e| format!("{name}: cannot record its host key {fp} in {}: {e}", path.display()))
        }
        (HostKeyCheck::AcceptNew, None) => Err(format!(
            "host key verification failed for {name}: no key for it in {files}, and no user known_hosts file \
             to record the server's {key_type} {fp} in"
        )),
        _ => Err(format!(
            "host key verification failed for {name}: no key for it in {files} (the server offers {key_type} {fp}); \
             add it there or use HostKeyCheck::AcceptNew"
        )),
    }
}

/// OpenSSH's hashed host name: `|1|base64(salt)|base64(HMAC-SHA1(salt, name))`
/// with a random 20-byte salt.
fn hashed_name(name: &str) -> Result<String, String> {
    let mut salt = [0u8; 20];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut salt))
        .map_err(|e| format!("cannot get a random salt to hash {name}: {e}"))?;
    Ok(hash_with_salt(name, &salt))
}

/// The hashed form of `name` under `salt`.
fn hash_with_salt(name: &str, salt: &[u8]) -> String {
    // HMAC accepts keys of any length: this cannot fail.
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(salt).expect("HMAC takes any key length");
    mac.update(name.as_bytes());
    let hash = mac.finalize().into_bytes();
    format!("|1|{}|{}", base64(salt, true), base64(&hash, true))
}

/// Appends `name type base64` to known_hosts (accept-new).
fn record_host_key(path: &Path, name: &str, key_type: &str, key: &[u8]) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let old = std::fs::read(path).unwrap_or_default();
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    let sep = if old.is_empty() || old.ends_with(b"\n") {
        ""
    } else {
        "\n"
    };
    f.write_all(format!("{sep}{name} {key_type} {}\n", base64(key, true)).as_bytes())
}

/// The key type named at the start of an SSH public key blob.
fn key_type_name(blob: &[u8]) -> String {
    if blob.len() >= 4 {
        let n = u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]) as usize;
        if let Some(t) = blob.get(4..4 + n) {
            return String::from_utf8_lossy(t).into_owned();
        }
    }
    "unknown".to_owned()
}

/// Standard base64 (RFC 4648), with or without `=` padding.
fn base64(data: &[u8], pad: bool) -> String {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
    use base64::Engine as _;
    if pad {
        STANDARD.encode(data)
    } else {
        STANDARD_NO_PAD.encode(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b"", true), "");
        assert_eq!(base64(b"f", true), "Zg==");
        assert_eq!(base64(b"fo", true), "Zm8=");
        assert_eq!(base64(b"foo", true), "Zm9v");
        assert_eq!(base64(b"foob", false), "Zm9vYg");
    }

    #[test]
    fn hashed_names_match_openssh() {
        // HMAC-SHA1 keyed with the salt, over the name (RFC 2104 test tooling agrees).
        let line = hash_with_salt("example.com", &STANDARD_SALT);
        assert_eq!(line, "|1|AAECAwQFBgcICQoLDA0ODxAREhM=|nnUK16ANsXd3hL31YfAkGOluSjU=");
        assert!(
            hashed_name("h").unwrap() != hashed_name("h").unwrap(),
            "a fresh salt each time"
        );
    }

    const STANDARD_SALT: [u8; 20] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19];

    #[test]
    fn key_type_from_blob() {
        let mut blob = vec![0, 0, 0, 11];
        blob.extend_from_slice(b"ssh-ed25519");
        blob.extend_from_slice(&[0, 0, 0, 1, 7]);
        assert_eq!(key_type_name(&blob), "ssh-ed25519");
        assert_eq!(key_type_name(&[1]), "unknown");
    }
}
