//! A cancelled SFTP transfer (here by its `timeout`, midway through a file
//! too big to finish) closes what it had opened on the session: its file
//! handle, the sftp subsystem and the subsystem's channel. The server sees
//! the channel closed (its sftp process, OpenSSH's `sftp-server` under the
//! embedded server, sshd's `internal-sftp` child, is gone while the
//! connection stays up), the same connection runs further SFTP transfers
//! and commands without reconnecting, and cancelled transfers do not pile up
//! channels: with sshd's `MaxSessions 3`, five in a row leave room for the
//! next task. A transfer whose connection drops lets go of its objects with
//! the session, and the label goes on over a new connection.
//!
//! The host is this machine, so the test looks at the server's processes
//! itself, from a `Sub` that runs between the label's tasks (while its
//! connection is open). The big file is sparse (nothing on disk) and goes to
//! or comes from `/dev/null`.

mod common;
#[path = "common/copy.rs"]
mod copy;
#[path = "common/servers.rs"]
mod servers;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use copy::{make_file, ps};
use servers::{Server, PASSWORD, USER};
use ssh_parallel::{Command, ErrorKind, OnError, Parallel, Report, ScpGet, ScpPut, Sub, TaskStatus};

/// Long enough that the subsystem is up and data flows when it passes.
const CANCEL_AFTER: Duration = Duration::from_millis(1500);
/// Far more than any transfer moves in [`CANCEL_AFTER`] here.
const SPARSE_SIZE: u64 = 64 << 30;

/// Where a test's sftp processes can be told from any other test's.
enum Marker {
    /// The embedded server's working directory: its `sftp-server` children run there.
    Cwd(PathBuf),
    /// The sshd listener: `internal-sftp` runs in a descendant of it.
    Sshd(u32),
}

/// The embedded server, its commands (and so its `sftp-server`) running in `dir`.
fn embedded_in(dir: &Path) -> (Server, Marker) {
    testbed::raise_fd_limit();
    let server = testbed::EmbeddedServer::builder()
        .password(USER, PASSWORD)
        .working_dir(dir)
        .start()
        .expect("start the embedded server");
    (Server::Embedded(Box::new(server)), Marker::Cwd(dir.to_owned()))
}

/// sshd with `MaxSessions max_sessions`; `None` only when it cannot run and skipping is allowed.
fn sshd(max_sessions: u32) -> Option<(Server, Marker)> {
    if !testbed::prereq::sshd() {
        return None;
    }
    let key = testbed::ClientKey::ed25519().expect("generate a client key");
    let sshd = testbed::OpenSshServer::builder()
        .authorize(&key)
        .max_sessions(max_sessions)
        .start()
        .expect("start sshd");
    let pid = sshd.pid;
    Some((Server::OpenSsh(Box::new((sshd, key))), Marker::Sshd(pid)))
}

/// The parent of process `pid`, from `/proc/PID/stat` (`None` once it is gone).
fn parent(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name (in parentheses) may hold spaces: the fields after it are fixed.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The sftp server processes of `marker`'s server, as `PID ARGS`.
fn sftp_processes(marker: &Marker) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let ours = match marker {
            Marker::Cwd(cwd) => {
                args.contains("sftp-server") && fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|d| d == *cwd)
            }
            Marker::Sshd(listener) => {
                args.contains("internal-sftp") && {
                    let mut p = pid;
                    let mut below = false;
                    for _ in 0..64 {
                        match parent(p) {
                            Some(q) if q == *listener => {
                                below = true;
                                break;
                            }
                            Some(q) if q > 1 => p = q,
                            _ => break,
                        }
                    }
                    below
                }
            }
        };
        if ours {
            found.push(format!("{pid} {}", args.trim()));
        }
    }
    found
}

/// A `Sub` that waits (up to 5 s) for `marker`'s sftp processes to end and
/// records in `seen` those still there.
fn check_gone(marker: Arc<Marker>, seen: Arc<Mutex<Vec<Vec<String>>>>) -> Sub {
    Sub::new(move |_| {
        let mut left = sftp_processes(&marker);
        common::wait_until(Duration::from_secs(5), || {
            left = sftp_processes(&marker);
            left.is_empty()
        });
        seen.lock().unwrap().push(left);
        Ok(())
    })
}

/// A sparse file of [`SPARSE_SIZE`] bytes in `dir`.
fn sparse(dir: &Path) -> String {
    let path = dir.join("sparse");
    fs::File::create(&path).unwrap().set_len(SPARSE_SIZE).unwrap();
    ps(&path)
}

fn cancelled_put(big: &str, timeout: Duration) -> ScpPut {
    ScpPut::new(big, "/dev/null")
        .sftp()
        .timeout(timeout)
        .on_error(OnError::Ignore)
}

fn cancelled_get(big: &str, timeout: Duration) -> ScpGet {
    ScpGet::new(big, "/dev/null")
        .sftp()
        .timeout(timeout)
        .on_error(OnError::Ignore)
}

/// Asserts that task `i` was cancelled by its timeout.
fn assert_timed_out(report: &Report, i: usize) {
    let t = &report.label("h").unwrap().tasks()[i];
    assert_eq!(t.status(), TaskStatus::Ignored, "task {i}: {report}");
    assert_eq!(t.error().unwrap().kind(), ErrorKind::Timeout, "task {i}: {report}");
}

/// A put and a get cancelled midway; then the sftp processes are gone and the
/// same connection runs a put, a get and a command.
fn cancelled_transfers_close_their_channel((s, marker): (Server, Marker)) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let big = sparse(d);
    make_file(&d.join("small"), b"after the cancel\n", 0o640, 1_234_567_890);
    let marker = Arc::new(marker);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut p = Parallel::new();
    p.add_host("h", s.host()).unwrap();
    p.push("h", cancelled_put(&big, CANCEL_AFTER)).unwrap();
    p.push("h", check_gone(marker.clone(), seen.clone())).unwrap();
    p.push("h", cancelled_get(&big, CANCEL_AFTER)).unwrap();
    p.push("h", check_gone(marker.clone(), seen.clone())).unwrap();
    p.push("h", ScpPut::new(ps(&d.join("small")), ps(&d.join("up"))).sftp())
        .unwrap();
    p.push("h", ScpGet::new(ps(&d.join("up")), ps(&d.join("down"))).sftp())
        .unwrap();
    p.push("h", Command::new("echo still-here")).unwrap();
    p.push("h", check_gone(marker, seen.clone())).unwrap();
    let report = p.run();
    assert_timed_out(&report, 0);
    assert_timed_out(&report, 2);
    let t = report.label("h").unwrap().tasks();
    for (i, task) in t.iter().enumerate().skip(3) {
        assert_eq!(task.status(), TaskStatus::Succeeded, "task {i}: {report}");
    }
    assert_eq!(t[6].stdout_str(), "still-here\n");
    for side in ["up", "down"] {
        assert_eq!(fs::read(d.join(side)).unwrap(), b"after the cancel\n", "{side}");
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3, "{report}");
    for (after, left) in ["the cancelled put", "the cancelled get", "the last tasks"]
        .iter()
        .zip(seen.iter())
    {
        assert!(
            left.is_empty(),
            "{}: sftp processes still running after {after}: {left:?}",
            s.name()
        );
    }
    assert_eq!(s.logins(), 1, "{}: one connection for every task", s.name());
}

#[test]
fn embedded_cancelled_transfers_close_their_channel() {
    let dir = tempfile::tempdir().unwrap();
    cancelled_transfers_close_their_channel(embedded_in(dir.path()));
}

#[test]
fn openssh_cancelled_transfers_close_their_channel() {
    if let Some(server) = sshd(100) {
        cancelled_transfers_close_their_channel(server);
    }
}

/// Five transfers cancelled in a row on one connection to sshd with
/// `MaxSessions 3`: a channel left open by each would use up the sessions
/// after three (the next open refused, the connection given up). Then a
/// command and a transfer run, on the same connection, and no sftp process
/// remains.
#[test]
fn openssh_cancelled_transfers_do_not_use_up_sessions() {
    let Some((s, marker)) = sshd(3) else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let big = sparse(d);
    make_file(&d.join("small"), b"small\n", 0o600, 1_000_000_000);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut p = Parallel::new();
    p.add_host("h", s.host()).unwrap();
    let quick = Duration::from_millis(400);
    for i in 0..5 {
        if i % 2 == 0 {
            p.push("h", cancelled_put(&big, quick)).unwrap();
        } else {
            p.push("h", cancelled_get(&big, quick)).unwrap();
        }
    }
    p.push("h", Command::new("echo room-left")).unwrap();
    p.push("h", ScpPut::new(ps(&d.join("small")), ps(&d.join("up"))).sftp())
        .unwrap();
    p.push("h", check_gone(Arc::new(marker), seen.clone())).unwrap();
    let report = p.run();
    for i in 0..5 {
        assert_timed_out(&report, i);
    }
    let t = report.label("h").unwrap().tasks();
    assert_eq!(t[5].status(), TaskStatus::Succeeded, "{report}");
    assert_eq!(t[5].stdout_str(), "room-left\n");
    assert_eq!(t[6].status(), TaskStatus::Succeeded, "{report}");
    assert_eq!(fs::read(d.join("up")).unwrap(), b"small\n");
    assert_eq!(*seen.lock().unwrap(), vec![Vec::<String>::new()], "sftp processes left");
    assert_eq!(s.logins(), 1, "one connection for every task");
}

/// A transfer whose connection drops midway (the embedded server cuts it)
/// gives up its SFTP objects with the session, without waiting on it: the
/// task fails on the lost connection, the label's next transfer and command
/// run on a new one, and no sftp process is left.
#[test]
fn embedded_transfer_on_a_dropped_connection_lets_go() {
    testbed::raise_fd_limit();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = Arc::new(Server::Embedded(Box::new(
        testbed::EmbeddedServer::builder()
            .password(USER, PASSWORD)
            .working_dir(d)
            .fault(testbed::Fault::DropDuringCommand(Duration::from_millis(500)))
            .start()
            .expect("start the embedded server"),
    )));
    let big = sparse(d);
    make_file(&d.join("small"), b"small\n", 0o600, 1_000_000_000);
    let marker = Arc::new(Marker::Cwd(d.to_owned()));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut p = Parallel::new();
    p.add_host("h", server.host()).unwrap();
    p.push("h", ScpPut::new(&big, "/dev/null").sftp().on_error(OnError::Ignore))
        .unwrap();
    let s = server.clone();
    p.push(
        "h",
        Sub::new(move |_| {
            if let Server::Embedded(e) = &*s {
                e.clear_faults();
            }
            Ok(())
        }),
    )
    .unwrap();
    p.push("h", ScpPut::new(ps(&d.join("small")), ps(&d.join("up"))).sftp())
        .unwrap();
    p.push("h", Command::new("echo reconnected")).unwrap();
    p.push("h", check_gone(marker, seen.clone())).unwrap();
    let report = p.run();
    let t = report.label("h").unwrap().tasks();
    assert_eq!(t[0].status(), TaskStatus::Ignored, "{report}");
    // A lost connection with no reconnections left is a `Connect` error.
    assert_eq!(t[0].error().unwrap().kind(), ErrorKind::Connect, "{report}");
    for (i, task) in t.iter().enumerate().skip(1) {
        assert_eq!(task.status(), TaskStatus::Succeeded, "task {i}: {report}");
    }
    assert_eq!(t[3].stdout_str(), "reconnected\n");
    assert_eq!(fs::read(d.join("up")).unwrap(), b"small\n");
    assert_eq!(*seen.lock().unwrap(), vec![Vec::<String>::new()], "sftp processes left");
    assert_eq!(server.logins(), 2, "the dropped connection and a new one");
}
