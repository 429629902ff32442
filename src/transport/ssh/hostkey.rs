//! Host-key checking against `~/.ssh/known_hosts` under the host's policy
//! (strict, accept-new, off), and recording a new key (accept-new).
//!
//! Invariant: a mismatch always fails, whatever the policy but `Off`; a key
//! is only ever appended, never replaced.
//!
//! May use: `auth` (`home`), `host`.

use std::io::{self, Write};
use std::path::Path;

use ssh2::{CheckResult, HashType, KnownHostFileKind, Session};

use super::auth::home;
use crate::host::{Host, HostKeyCheck};

/// Checks the server's key against `~/.ssh/known_hosts` under the host's policy.
pub(super) fn check_host_key(sess: &Session, host: &Host, port: u16) -> Result<(), String> {
    if host.host_key_check == HostKeyCheck::Off {
        return Ok(());
    }
    let name = if port == 22 {
        host.hostname.clone()
    } else {
        format!("[{}]:{port}", host.hostname)
    };
    let (key, _) = sess
        .host_key()
        .ok_or_else(|| format!("{name}: the server sent no host key"))?;
    let key_type = key_type_name(key);
    let fp = sess
        .host_key_hash(HashType::Sha256)
        .map(|h| format!("SHA256:{}", base64(h, false)))
        .unwrap_or_else(|| "(no fingerprint)".into());
    let path = home()
        .map(|h| h.join(".ssh").join("known_hosts"))
        .ok_or_else(|| format!("{name}: cannot check the host key: HOME is not set"))?;
    let mut kh = sess
        .known_hosts()
        .map_err(|e| format!("{name}: cannot check the host key: {e}"))?;
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    // Line by line: libssh2 stops reading a file at the first line it cannot parse.
    for line in text.lines().map(str::trim) {
        if !line.is_empty() && !line.starts_with('#') {
            let _ = kh.read_str(line, KnownHostFileKind::OpenSSH);
        }
    }
    match kh.check_port(&host.hostname, port, key) {
        CheckResult::Match => Ok(()),
        CheckResult::Mismatch => Err(format!(
            "host key verification failed for {name}: the server's {key_type} key {fp} does not match the one \
             recorded in {}; if the host was really reinstalled, remove the old entry",
            path.display()
        )),
        CheckResult::NotFound | CheckResult::Failure => match host.host_key_check {
            HostKeyCheck::AcceptNew => record_host_key(&path, &text, &name, &key_type, key)
                .map_err(|e| format!("{name}: cannot record its host key {fp} in {}: {e}", path.display())),
            _ => Err(format!(
                "host key verification failed for {name}: no key for it in {} (the server offers {key_type} {fp}); \
                 add it there or use HostKeyCheck::AcceptNew",
                path.display()
            )),
        },
    }
}

/// Appends `name type base64` to known_hosts (accept-new).
fn record_host_key(path: &Path, old: &str, name: &str, key_type: &str, key: &[u8]) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    let sep = if old.is_empty() || old.ends_with('\n') {
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
    fn key_type_from_blob() {
        let mut blob = vec![0, 0, 0, 11];
        blob.extend_from_slice(b"ssh-ed25519");
        blob.extend_from_slice(&[0, 0, 0, 1, 7]);
        assert_eq!(key_type_name(&blob), "ssh-ed25519");
        assert_eq!(key_type_name(&[1]), "unknown");
    }
}
