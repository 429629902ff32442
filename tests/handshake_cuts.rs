//! A connection cut at any point of the SSH handshake or of authentication (the
//! embedded server's `DropAfterBytes`, swept over the first kilobytes it sends) comes
//! back as a clean connect failure that spends exactly one reconnection: never a
//! hang until the connect or auth deadline, never a success.

use std::time::Duration;

use ssh_parallel::{Command, ErrorKind, Host, HostKeyCheck, Parallel, TaskStatus};
use testbed::{EmbeddedServer, Fault};

const USER: &str = "cut";
const PASSWORD: &str = "midway";
const RECONNECTIONS: u32 = 2;

/// Runs `true` on a server that cuts every connection after `bytes` bytes; returns the
/// error's text, or `None` when the command got through.
fn cut_after(bytes: u64) -> Option<String> {
    let server = EmbeddedServer::builder()
        .password(USER, PASSWORD)
        .curve25519_only(true)
        .fault(Fault::DropAfterBytes(bytes))
        .start()
        .expect("start the embedded server");
    let mut pssh = Parallel::new();
    // Deadlines far beyond a cut's effect: a failure that names them is a hang.
    let host = Host::new("127.0.0.1")
        .port(server.port())
        .user(USER)
        .password(PASSWORD)
        .agent(false)
        .host_key_check(HostKeyCheck::Off)
        .connect_timeout(Duration::from_secs(20))
        .auth_timeout(Duration::from_secs(20))
        .reconnections(RECONNECTIONS);
    pssh.add_host("x", host).unwrap();
    pssh.push("x", Command::new("true")).unwrap();
    let report = pssh.run();
    let task = &report.label("x").unwrap().tasks()[0];
    if task.status() == TaskStatus::Succeeded {
        return None;
    }
    let e = task.error().expect("a failed task has an error");
    assert_eq!(e.kind(), ErrorKind::Connect, "cut after {bytes} bytes: {e}");
    let text = e.to_string();
    assert!(
        !text.contains("timed out"),
        "cut after {bytes} bytes: waited for a deadline instead of failing at the cut: {text}"
    );
    assert_eq!(
        server.stats().connections,
        1 + u64::from(RECONNECTIONS),
        "cut after {bytes} bytes: each cut connection spends one reconnection ({text})"
    );
    Some(text)
}

#[test]
fn a_cut_during_handshake_or_auth_is_a_clean_connect_failure() {
    let mut failures = Vec::new();
    let mut bytes = 0;
    // Fine steps through the banner and the key exchange, coarser after; the sweep
    // ends once the command gets through (the cut then lands after it).
    let got_through = loop {
        if bytes > 64 * 1024 {
            break None;
        }
        match cut_after(bytes) {
            Some(text) => failures.push((bytes, text)),
            None => break Some(bytes),
        }
        bytes += if bytes < 256 { 16 } else { 64 };
    };
    for (bytes, text) in &failures {
        eprintln!("{bytes:>6} bytes: {text}");
    }
    let through = got_through.expect("some cut lands after the command: the sweep must end");
    assert!(
        failures.len() > 20,
        "the sweep must cross the handshake and authentication (got through at {through} bytes)"
    );
    assert!(
        failures.iter().any(|(_, t)| t.contains("auth")),
        "some cut must land during authentication: {failures:?}"
    );
}
