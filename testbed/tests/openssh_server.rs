//! The OpenSSH `sshd` helper.
//!
//! When sshd cannot run here (not installed, not root) these tests print `SKIP` and pass,
//! unless `TESTBED_REQUIRE_SSHD=1` is set (CI), in which case they fail.

mod common;

use std::time::Duration;

use common::*;
use testbed::{ClientKey, Error, KeyType, OpenSshServer};

fn start(key: &ClientKey) -> Option<OpenSshServer> {
    match OpenSshServer::builder().authorize(key).start() {
        Ok(server) => Some(server),
        Err(Error::Unavailable(why)) if std::env::var("TESTBED_REQUIRE_SSHD").as_deref() != Ok("1") => {
            eprintln!("SKIP: {why}");
            None
        }
        Err(e) => panic!("cannot start sshd: {e}"),
    }
}

#[test]
fn sshd_runs_a_command_for_ssh_and_ssh2_with_the_generated_key() {
    let key = ClientKey::ed25519().unwrap();
    let Some(server) = start(&key) else { return };
    assert!(server.pid > 0);
    let user = testbed::current_user();
    let out = run_with_timeout(
        &mut ssh_key_command(server.port, key.private_path(), &user, "echo hi"),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "ssh: {}\nsshd log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    assert_eq!(out.stdout, b"hi\n");

    // Strict host-key checking against the generated known_hosts line.
    let dir = tempfile::tempdir().unwrap();
    let known = dir.path().join("known_hosts");
    server.write_known_hosts(&known).unwrap();
    let mut c = ssh_strict_command(server.port, key.private_path(), &known, &user, "echo $SHLVL; exit 4");
    let out = run_with_timeout(&mut c, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));

    // libssh2 with a passphrase-protected key authorized at run time.
    let rsa = ClientKey::generate(KeyType::Rsa, Some("pw")).unwrap();
    server.authorize(&rsa).unwrap();
    let session = ssh2_connect(server.port, 10_000).unwrap();
    session
        .userauth_pubkey_file(&user, None, rsa.private_path(), Some("pw"))
        .unwrap();
    let r = ssh2_exec(&session, "echo out; echo err >&2; exit 2", b"").unwrap();
    assert_eq!(
        (r.stdout_str().as_str(), r.stderr.as_str(), r.status),
        ("out\n", "err\n", 2)
    );
}

#[test]
fn several_sshd_instances_and_kill_on_drop() {
    let key = ClientKey::ed25519().unwrap();
    let Some(a) = start(&key) else { return };
    let b = start(&key).unwrap();
    assert_ne!(a.port, b.port);
    let (pid, port) = (a.pid, a.port);
    // A session running a command when the server is dropped: its processes die too.
    let mut client = ssh_key_command(a.port, key.private_path(), &testbed::current_user(), "sleep 45.25")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count_processes("sleep 45.25") == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(count_processes("sleep 45.25"), 1);
    drop(a);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while client.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "ssh client still connected");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(count_processes("sleep 45.25"), 0);
    // The listener is gone: its pid is reaped and the port refuses connections.
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    testbed::wait_for_ssh_banner(b.port, Duration::from_secs(2)).unwrap();
}

fn count_processes(pattern: &str) -> usize {
    let out = std::process::Command::new("pgrep")
        .args(["-f", "-x", pattern])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}
