//! Helpers shared by the integration tests (each test crate uses a subset).
#![allow(dead_code)]

use std::path::Path;

use ssh_parallel::fault::{Fault, FaultLog};
use ssh_parallel::{ErrorKind, Host, Parallel, Report, TaskReport, TaskStatus};

pub fn host(log: &FaultLog) -> Host {
    Host::fault(Fault::new().log(log))
}

pub fn statuses(report: &Report, label: &str) -> Vec<TaskStatus> {
    report
        .label(label)
        .expect("label in report")
        .tasks()
        .iter()
        .map(|t| t.status())
        .collect()
}

pub fn kind(pssh: &Parallel, label: &str) -> Option<ErrorKind> {
    pssh.get_error(label).expect("known label").map(|e| e.kind())
}

pub fn local(labels: &[&str]) -> Parallel {
    let mut p = Parallel::new();
    for l in labels {
        p.add_host(*l, Host::local()).unwrap();
    }
    p
}

pub fn tasks<'r>(report: &'r Report, label: &str) -> &'r [TaskReport] {
    report.label(label).unwrap().tasks()
}

pub fn task<'r>(report: &'r Report, label: &str, i: usize) -> &'r TaskReport {
    &tasks(report, label)[i]
}

pub fn path_str(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

/// The client ends of the TCP connections from this machine to 127.0.0.1:`port`
/// that are still held open by their owner (connecting, established, or closed
/// by the peer but not yet by us), from /proc/net/tcp.
///
/// The kernel produces that file a page at a time, so while the table changes
/// a read can list a socket twice or miss one: sockets are counted by distinct
/// local address, over three reads in a row (the largest count wins).
pub fn open_client_sockets(port: u16) -> usize {
    let want = format!(":{port:04X}");
    (0..3)
        .map(|_| {
            let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
            text.lines()
                .skip(1)
                .filter_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    // remote address ends with the server's port; 01 ESTABLISHED, 02 SYN_SENT, 08 CLOSE_WAIT
                    (f.len() > 3 && f[2].ends_with(&want) && matches!(f[3], "01" | "02" | "08"))
                        .then(|| f[1].to_owned())
                })
                .collect::<std::collections::HashSet<_>>()
                .len()
        })
        .max()
        .unwrap_or(0)
}

/// Hex SHA-256 of a file, by `sha256sum`.
pub fn sha256(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// `SHA256:...`, the fingerprint `ssh-keygen -l` (and sshd's log) gives the
/// public key `public_key` (an `authorized_keys`-style line).
pub fn fingerprint(public_key: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("key.pub");
    std::fs::write(&f, format!("{public_key}\n")).unwrap();
    let out = std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&f)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned()
}

/// Polls `done` every 5 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: std::time::Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// `len` pseudo-random bytes (xorshift), so nothing compresses or repeats by chance.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut data = Vec::with_capacity(len + 8);
    while data.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(len);
    data
}

/// Appends `line` and a newline to a known_hosts file in a single write, so
/// that a run reading the file at the same time never sees it truncated or
/// half-written (a rewrite would truncate it first).
pub fn append_known_host(path: &Path, line: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    f.write_all(format!("{line}\n").as_bytes())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}
