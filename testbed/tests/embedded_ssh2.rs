//! The embedded server against the `ssh2` crate (libssh2): auth, exec, streams, faults.

mod common;

use std::time::{Duration, Instant};

use common::*;
use testbed::{ClientKey, EmbeddedServer, Fault, KeyType};

fn connect_err(port: u16, timeout_ms: u32) -> String {
    match ssh2_connect(port, timeout_ms) {
        Ok(_) => panic!("handshake unexpectedly succeeded"),
        Err(e) => e.to_string(),
    }
}

fn server() -> EmbeddedServer {
    EmbeddedServer::builder()
        .password("alice", "secret")
        .start()
        .expect("start server")
}

#[test]
fn password_auth_exec_stdout_stderr_exit_code() {
    let server = server();
    let session = ssh2_password(server.port(), "alice", "secret").unwrap();
    assert!(session.authenticated());
    let r = ssh2_exec(&session, "echo hi; echo oops >&2; exit 3", b"").unwrap();
    assert_eq!(r.stdout_str(), "hi\n");
    assert_eq!(r.stderr, "oops\n");
    assert_eq!(r.status, 3);
    assert_eq!(r.signal, None);
    let r = ssh2_exec(&session, "true", b"").unwrap();
    assert_eq!(r.status, 0);
    let stats = server.stats();
    assert_eq!(stats.connections, 1);
    assert_eq!(stats.authenticated, 1);
    assert_eq!(stats.commands, 2);
    assert_eq!(
        server.commands(),
        vec!["echo hi; echo oops >&2; exit 3".to_string(), "true".to_string()]
    );
}

#[test]
fn host_key_matches_known_hosts_line() {
    let server = server();
    let session = ssh2_connect(server.port(), 5000).unwrap();
    let (key, kind) = session.host_key().unwrap();
    assert!(matches!(kind, ssh2::HostKeyType::Ed25519));
    let line = server.known_hosts_line();
    assert!(
        line.starts_with(&format!("[127.0.0.1]:{} ssh-ed25519 ", server.port())),
        "{line}"
    );
    // libssh2's own known_hosts parser accepts the line and matches the key.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("known_hosts");
    server.write_known_hosts(&path).unwrap();
    let mut known = session.known_hosts().unwrap();
    known.read_file(&path, ssh2::KnownHostFileKind::OpenSSH).unwrap();
    assert!(matches!(
        known.check_port("127.0.0.1", server.port(), key),
        ssh2::CheckResult::Match
    ));
    assert!(server.host_key_fingerprint().starts_with("SHA256:"));
}

#[test]
fn wrong_password_and_unknown_user_are_rejected() {
    let server = EmbeddedServer::builder()
        .users(["alice"])
        .password("*", "secret")
        .start()
        .unwrap();
    assert!(ssh2_password(server.port(), "alice", "wrong").is_err());
    assert!(ssh2_password(server.port(), "bob", "secret").is_err());
    assert!(ssh2_password(server.port(), "alice", "secret").is_ok());
}

#[test]
fn public_key_auth_plain_and_with_passphrase() {
    let plain = ClientKey::ed25519().unwrap();
    let ecdsa = ClientKey::generate(KeyType::Ecdsa, Some("pass phrase")).unwrap();
    let stranger = ClientKey::ed25519().unwrap();
    let server = EmbeddedServer::builder()
        .authorized_key("alice", plain.public_line())
        .authorized_key("*", ecdsa.public_line())
        .start()
        .unwrap();
    let s = ssh2_connect(server.port(), 5000).unwrap();
    s.userauth_pubkey_file("alice", None, plain.private_path(), None)
        .unwrap();
    assert_eq!(ssh2_exec(&s, "echo key", b"").unwrap().stdout_str(), "key\n");

    let s = ssh2_connect(server.port(), 5000).unwrap();
    s.userauth_pubkey_file("anyone", None, ecdsa.private_path(), ecdsa.passphrase())
        .unwrap();
    assert!(s.authenticated());

    let s = ssh2_connect(server.port(), 5000).unwrap();
    assert!(s
        .userauth_pubkey_file("alice", None, stranger.private_path(), None)
        .is_err());
    // A key authorized for alice only does not work for bob.
    let s = ssh2_connect(server.port(), 5000).unwrap();
    assert!(s.userauth_pubkey_file("bob", None, plain.private_path(), None).is_err());
    // Keys from memory, and keys added at run time.
    server.add_authorized_key("carol", stranger.public_line()).unwrap();
    let s = ssh2_connect(server.port(), 5000).unwrap();
    s.userauth_pubkey_memory("carol", None, &stranger.private_pem().unwrap(), None)
        .unwrap();
    assert!(s.authenticated());
}

#[test]
fn in_process_key_works_with_libssh2_and_matches_ssh_keygen_formats() {
    let key = ClientKey::ed25519_in_process().unwrap();
    assert!(key.public_line().starts_with("ssh-ed25519 "), "{}", key.public_line());
    assert!(key.public_line().ends_with(" testbed-client"), "{}", key.public_line());
    let pem = key.private_pem().unwrap();
    assert!(pem.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n"), "{pem}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(key.private_path()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let server = EmbeddedServer::builder()
        .authorized_key("alice", key.public_line())
        .start()
        .unwrap();
    let s = ssh2_connect(server.port(), 5000).unwrap();
    s.userauth_pubkey_file("alice", None, key.private_path(), None).unwrap();
    assert_eq!(
        ssh2_exec(&s, "echo in-process", b"").unwrap().stdout_str(),
        "in-process\n"
    );
    // ssh-keygen, where installed, reads the same files.
    if let Ok(out) = std::process::Command::new("ssh-keygen")
        .arg("-y")
        .arg("-f")
        .arg(key.private_path())
        .output()
    {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let derived = String::from_utf8_lossy(&out.stdout);
        let blob = |l: &str| l.split_whitespace().nth(1).unwrap_or_default().to_owned();
        assert_eq!(blob(&derived), blob(key.public_line()));
    }
}

struct Answer(&'static str);

impl ssh2::KeyboardInteractivePrompt for Answer {
    fn prompt<'a>(&mut self, _user: &str, _instructions: &str, prompts: &[ssh2::Prompt<'a>]) -> Vec<String> {
        prompts.iter().map(|_| self.0.to_string()).collect()
    }
}

#[test]
fn keyboard_interactive_answers_with_the_password() {
    let server = server();
    let s = ssh2_connect(server.port(), 5000).unwrap();
    let methods = s.auth_methods("alice").unwrap().to_string();
    assert!(methods.contains("keyboard-interactive") && methods.contains("password") && methods.contains("publickey"));
    s.userauth_keyboard_interactive("alice", &mut Answer("secret")).unwrap();
    assert!(s.authenticated());
    let s = ssh2_connect(server.port(), 5000).unwrap();
    assert!(s.userauth_keyboard_interactive("alice", &mut Answer("nope")).is_err());
}

#[test]
fn stdin_env_pty_and_exit_signal() {
    let server = server();
    let s = ssh2_password(server.port(), "alice", "secret").unwrap();
    let input: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let r = ssh2_exec(&s, "cat", &input).unwrap();
    assert_eq!(r.stdout, input);
    let r = ssh2_exec(&s, "wc -c", &input).unwrap();
    assert_eq!(r.stdout_str().trim(), "300000");

    let r = ssh2_exec_with(&s, "echo $FOO-$TERM", b"", |c| {
        c.setenv("FOO", "bar")?;
        c.request_pty("xterm", None, None)?;
        Ok(())
    })
    .unwrap();
    assert_eq!(r.stdout_str(), "bar-xterm\n");

    let r = ssh2_exec(&s, "kill -TERM $$", b"").unwrap();
    assert_eq!(r.signal.as_deref(), Some("TERM"));
    // Commands run in the home directory with a clean environment.
    let r = ssh2_exec(&s, "pwd; echo $HOME; echo ${CARGO_PKG_NAME:-unset}", b"").unwrap();
    let home = testbed::home_dir();
    let home = home.to_string_lossy();
    assert_eq!(r.stdout_str(), format!("{home}\n{home}\nunset\n"));
}

#[test]
fn large_output_50_mb() {
    let server = server();
    let s = ssh2_password(server.port(), "alice", "secret").unwrap();
    s.set_timeout(120_000);
    let started = Instant::now();
    let r = ssh2_exec(&s, "head -c 50000000 /dev/zero; echo done >&2", b"").unwrap();
    eprintln!("50 MB in {:?}", started.elapsed());
    assert_eq!(r.stdout.len(), 50_000_000);
    assert!(r.stdout.iter().all(|&b| b == 0));
    assert_eq!(r.stderr, "done\n");
    assert_eq!(r.status, 0);
}

#[test]
fn many_concurrent_sessions() {
    let server = server();
    let port = server.port();
    let threads: Vec<_> = (0..50)
        .map(|i| {
            std::thread::spawn(move || {
                let s = ssh2_password(port, "alice", "secret").unwrap();
                let r = ssh2_exec(&s, &format!("echo {i}"), b"").unwrap();
                assert_eq!(r.stdout_str(), format!("{i}\n"));
                s
            })
        })
        .collect();
    let sessions: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(server.stats().active_connections, 50);
    assert_eq!(server.stats().commands, 50);
    drop(sessions);
}

#[test]
fn a_thousand_concurrent_connections() {
    let server = server();
    let port = server.port();
    let started = Instant::now();
    let threads: Vec<_> = (0..20)
        .map(|t| {
            std::thread::spawn(move || {
                (0..50)
                    .map(|i| {
                        let s = ssh2_password(port, "alice", "secret").unwrap();
                        if i % 10 == 0 {
                            assert_eq!(
                                ssh2_exec(&s, "echo $((1 + 1))", b"").unwrap().stdout_str(),
                                "2\n",
                                "thread {t}"
                            );
                        }
                        s
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let sessions: Vec<_> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    eprintln!("1000 logins in {:?}", started.elapsed());
    assert_eq!(server.stats().active_connections, 1000);
    assert_eq!(server.stats().commands, 100);
    drop(sessions);
}

// ---- faults -------------------------------------------------------------------------------

#[test]
fn fault_refuse_handshake() {
    let server = fault_server(Fault::RefuseHandshake);
    let started = Instant::now();
    let err = connect_err(server.port(), 5000);
    eprintln!("refused: {err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    // Clearing the fault lets the next connection through.
    server.clear_faults();
    assert!(ssh2_password(server.port(), "alice", "secret").is_ok());
}

#[test]
fn fault_delay_handshake() {
    let server = fault_server(Fault::DelayHandshake(Duration::from_millis(1500)));
    let started = Instant::now();
    let err = connect_err(server.port(), 500);
    eprintln!("delayed, short timeout: {err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    let started = Instant::now();
    let s = ssh2_connect(server.port(), 10_000).unwrap();
    assert!(started.elapsed() >= Duration::from_millis(1500));
    s.userauth_password("alice", "secret").unwrap();
}

#[test]
fn fault_reject_auth() {
    let key = ClientKey::ed25519().unwrap();
    let server = EmbeddedServer::builder()
        .password("alice", "secret")
        .authorized_key("alice", key.public_line())
        .fault(Fault::RejectAuth)
        .start()
        .unwrap();
    let s = ssh2_connect(server.port(), 5000).unwrap();
    let err = s.userauth_password("alice", "secret").unwrap_err();
    eprintln!("reject auth: {err}");
    assert!(s.userauth_pubkey_file("alice", None, key.private_path(), None).is_err());
    assert!(s.userauth_keyboard_interactive("alice", &mut Answer("secret")).is_err());
    assert!(!s.authenticated());
}

#[test]
fn fault_drop_after_bytes_during_handshake_and_during_output() {
    let server = fault_server(Fault::DropAfterBytes(100));
    let started = Instant::now();
    assert!(ssh2_connect(server.port(), 5000).is_err());
    assert!(started.elapsed() < Duration::from_secs(3));

    server.set_faults(vec![Fault::DropAfterBytes(200_000)]);
    let s = ssh2_password(server.port(), "alice", "secret").unwrap();
    let started = Instant::now();
    let err = ssh2_exec(&s, "head -c 1000000 /dev/zero", b"").unwrap_err();
    eprintln!("dropped after bytes: {err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn fault_drop_during_command() {
    let server = fault_server(Fault::DropDuringCommand(Duration::from_millis(300)));
    let s = ssh2_password(server.port(), "alice", "secret").unwrap();
    let started = Instant::now();
    let err = ssh2_exec(&s, "echo started; sleep 30", b"").unwrap_err();
    eprintln!("dropped during command: {err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn fault_no_banner_hangs_until_client_timeout() {
    let server = fault_server(Fault::NoBanner);
    let started = Instant::now();
    let err = connect_err(server.port(), 700);
    eprintln!("no banner: {err}");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(600) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
}

#[test]
fn fault_sha1_only_fails_key_exchange() {
    let server = fault_server(Fault::Sha1Only);
    let err = connect_err(server.port(), 5000);
    assert!(err.contains("Unable to exchange encryption keys"), "{err}");
}

#[test]
fn drop_connections_and_stop_are_prompt() {
    let mut server = fault_server(Fault::DelayHandshake(Duration::ZERO));
    let s = ssh2_password(server.port(), "alice", "secret").unwrap();
    let port = server.port();
    // A running command, a live idle session and a hung pre-banner connection.
    let runner = std::thread::spawn(move || {
        let s = ssh2_password(port, "alice", "secret").unwrap();
        ssh2_exec(&s, "sleep 60", b"").map(|_| ()).map_err(|e| e.to_string())
    });
    std::thread::sleep(Duration::from_millis(500));
    server.set_faults(vec![Fault::NoBanner]);
    let hung = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    server.drop_connections();
    assert!(runner.join().unwrap().is_err());
    assert!(ssh2_exec(&s, "true", b"").is_err());
    let started = Instant::now();
    server.stop();
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    // The hung connection was closed by the server.
    let mut hung = hung;
    hung.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 1];
    assert!(matches!(std::io::Read::read(&mut hung, &mut buf), Ok(0) | Err(_)));
}
