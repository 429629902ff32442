//! The OpenSSH `sshd` helper.
//!
//! When sshd cannot run here (not installed, not root) these tests fail, or skip loudly
//! (counted) with `TESTBED_ALLOW_SKIP=1`: see `testbed::prereq`.

mod common;

use std::time::Duration;

use common::*;
use testbed::{ClientKey, Error, KeyType, OpenSshServer};

fn start(key: &ClientKey) -> Option<OpenSshServer> {
    start_with(OpenSshServer::builder().authorize(key))
}

fn start_with(builder: testbed::OpenSshServerBuilder) -> Option<OpenSshServer> {
    match builder.start() {
        Ok(server) => Some(server),
        Err(Error::Unavailable(why)) => {
            testbed::prereq::skip(why);
            None
        }
        Err(e) => panic!("cannot start sshd: {e}"),
    }
}

/// The throwaway account the password tests log in as (`.ci/run` creates it too).
const TEST_USER: &str = "sshpar-test";
const TEST_PASSWORD: &str = "sshpar-Throwaway-7";

fn ensure_test_user() -> bool {
    match OpenSshServer::ensure_user(TEST_USER, TEST_PASSWORD) {
        Ok(()) => true,
        Err(Error::Unavailable(why)) => {
            testbed::prereq::skip(why);
            false
        }
        Err(e) => panic!("cannot create the test user: {e}"),
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

#[test]
fn drop_connections_keeps_the_listener_and_start_listener_reuses_the_port() {
    let key = ClientKey::ed25519().unwrap();
    let Some(mut server) = start(&key) else { return };
    let user = testbed::current_user();
    let login = |port: u16| {
        let session = ssh2_connect(port, 10_000).unwrap();
        session
            .userauth_pubkey_file(&user, None, key.private_path(), None)
            .unwrap();
        session
    };
    let first = login(server.port);
    assert_eq!(ssh2_exec(&first, "echo one", b"").unwrap().stdout_str(), "one\n");
    assert!(server.drop_connections() > 0, "per-connection processes were killed");
    assert!(ssh2_exec(&first, "echo again", b"").is_err(), "the old session is cut");
    // Still listening: a new login works.
    let second = login(server.port);
    assert_eq!(ssh2_exec(&second, "echo two", b"").unwrap().stdout_str(), "two\n");
    assert_eq!(server.logins_logged(), 2, "{}", server.log());
    // The readiness probe plus two logins.
    assert_eq!(server.connections_logged(), 3, "{}", server.log());

    let (port, old_pid) = (server.port, server.pid);
    server.stop_listener();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    server.start_listener().unwrap();
    assert_eq!(server.port, port);
    assert_ne!(server.pid, old_pid);
    let third = login(server.port);
    assert_eq!(ssh2_exec(&third, "echo three", b"").unwrap().stdout_str(), "three\n");
    assert_eq!(server.logins_logged(), 3, "{}", server.log());
}

#[test]
fn a_second_server_can_take_over_a_port_with_another_host_key() {
    let key = ClientKey::ed25519().unwrap();
    let Some(first) = start(&key) else { return };
    let (port, first_key) = (first.port, first.host_public_key.clone());
    drop(first);
    let second = OpenSshServer::builder().authorize(&key).port(port).start().unwrap();
    assert_eq!(second.port, port);
    assert_ne!(second.host_public_key, first_key);
    let session = ssh2_connect(port, 10_000).unwrap();
    session
        .userauth_pubkey_file(&testbed::current_user(), None, key.private_path(), None)
        .unwrap();
}

#[test]
fn password_and_keyboard_interactive_logins_through_pam() {
    if !ensure_test_user() {
        return;
    }
    let builder = || OpenSshServer::builder().password_logins();
    let Some(password_only) = start_with(builder().authentication_methods("password")) else {
        return;
    };
    let config = std::fs::read_to_string(&password_only.config_path).unwrap();
    assert!(config.contains("UsePAM yes"), "{config}");
    let session = ssh2_password(password_only.port, TEST_USER, TEST_PASSWORD).unwrap();
    let out = ssh2_exec(&session, "id -un", b"").unwrap();
    assert_eq!(out.stdout_str(), format!("{TEST_USER}\n"));
    assert!(ssh2_password(password_only.port, TEST_USER, "wrong").is_err());
    let probe = ssh2_connect(password_only.port, 10_000).unwrap();
    assert_eq!(probe.auth_methods(TEST_USER).unwrap(), "password");

    let kbd_only = builder()
        .authentication_methods("keyboard-interactive")
        .start()
        .unwrap();
    let session = ssh2_connect(kbd_only.port, 10_000).unwrap();
    assert_eq!(session.auth_methods(TEST_USER).unwrap(), "keyboard-interactive");
    struct Answer(&'static str);
    impl ssh2::KeyboardInteractivePrompt for Answer {
        fn prompt<'a>(&mut self, _user: &str, _instructions: &str, prompts: &[ssh2::Prompt<'a>]) -> Vec<String> {
            prompts.iter().map(|_| self.0.to_string()).collect()
        }
    }
    session
        .userauth_keyboard_interactive(TEST_USER, &mut Answer(TEST_PASSWORD))
        .unwrap();
    let out = ssh2_exec(&session, "id -un", b"").unwrap();
    assert_eq!(out.stdout_str(), format!("{TEST_USER}\n"));
    assert!(
        kbd_only
            .log()
            .contains(&format!("Accepted keyboard-interactive/pam for {TEST_USER}")),
        "{}",
        kbd_only.log()
    );
    let wrong = ssh2_connect(kbd_only.port, 10_000).unwrap();
    assert!(wrong
        .userauth_keyboard_interactive(TEST_USER, &mut Answer("wrong"))
        .is_err());
}
