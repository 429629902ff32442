//! Credentials beyond key files and passwords, on both servers: every
//! identity of an ssh-agent, keys held in memory (with passphrases), and the
//! authentication deadline.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use ssh_parallel::{Command, ErrorKind, Host, HostKeyCheck, Parallel};
use testbed::{ClientKey, EmbeddedServer, KeyType, OpenSshServer};

#[path = "common/servers.rs"]
mod servers;
use servers::USER;

/// A server that authorizes `key` for the login user.
enum Server {
    Embedded(Box<EmbeddedServer>),
    OpenSsh(Box<OpenSshServer>),
}

impl Server {
    fn embedded(key: &ClientKey) -> Server {
        Server::Embedded(Box::new(
            EmbeddedServer::builder()
                .authorized_key(USER, key.public_line())
                .start()
                .expect("start the embedded server"),
        ))
    }

    fn openssh(key: &ClientKey) -> Option<Server> {
        if !testbed::prereq::sshd() {
            return None;
        }
        let sshd = OpenSshServer::builder().authorize(key).start().expect("start sshd");
        Some(Server::OpenSsh(Box::new(sshd)))
    }

    /// A host with no credentials yet (and no agent unless one is given).
    fn host(&self) -> Host {
        let (port, user) = match self {
            Server::Embedded(s) => (s.port(), USER.to_owned()),
            Server::OpenSsh(s) => (s.port, testbed::current_user()),
        };
        Host::new("127.0.0.1")
            .port(port)
            .user(user)
            .agent(false)
            .host_key_check(HostKeyCheck::Off)
            .connect_timeout(Duration::from_secs(10))
    }
}

/// An `ssh-agent -D` on its own socket, killed by its pid on drop.
struct Agent {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    fn start(keys: &[&ClientKey]) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let child = Process::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ssh-agent (openssh-client)");
        // The socket file appears at bind(), before the agent listens: wait
        // until `ssh-add -l` reaches it (exit 1 means "no identities", 2
        // "cannot connect").
        let t0 = Instant::now();
        loop {
            let listed = Process::new("ssh-add")
                .arg("-l")
                .env("SSH_AUTH_SOCK", &socket)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("run ssh-add (openssh-client)");
            if matches!(listed.code(), Some(0 | 1)) {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "ssh-agent did not answer on its socket"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        for key in keys {
            let st = Process::new("ssh-add")
                .arg(key.private_path())
                .env("SSH_AUTH_SOCK", &socket)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap();
            assert!(st.success(), "ssh-add {}", key.private_path().display());
        }
        Agent {
            child,
            socket,
            _dir: dir,
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_one(host: Host) -> (Parallel, ssh_parallel::Report) {
    let mut pssh = Parallel::new();
    pssh.add_host("h", host).unwrap();
    pssh.push("h", Command::new("echo in")).unwrap();
    let report = pssh.run();
    (pssh, report)
}

fn connect_error(report: &ssh_parallel::Report) -> String {
    let e = report.label("h").unwrap().error().expect("the login failed");
    assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
    e.to_string()
}

/// One `#[test]` per server for a scenario `fn(&dyn Fn(&ClientKey) -> Server)`.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(#[test] fn $name() { super::$name(&|k| Some(super::Server::embedded(k))) })*
        }
        mod openssh {
            $(#[test] fn $name() { super::$name(&super::Server::openssh) })*
        }
    };
}

on_both!(
    agent_identities_are_all_tried_until_one_is_accepted,
    agent_without_an_accepted_identity_lists_what_was_tried,
    keys_from_memory_with_and_without_passphrase,
);

type MakeServer<'a> = &'a dyn Fn(&ClientKey) -> Option<Server>;

fn agent_identities_are_all_tried_until_one_is_accepted(make: MakeServer<'_>) {
    let good = ClientKey::generate(KeyType::Ecdsa, None).unwrap();
    let Some(server) = make(&good) else { return };
    let other1 = ClientKey::ed25519().unwrap();
    let other2 = ClientKey::generate(KeyType::Rsa, None).unwrap();
    // The accepted identity comes last: libssh2's own agent auth would stop
    // at the first.
    let agent = Agent::start(&[&other1, &other2, &good]);
    let (_, report) = run_one(server.host().agent_socket(&agent.socket));
    assert!(report.success(), "{report}");
    assert_eq!(report.label("h").unwrap().tasks()[0].stdout_str(), "in\n");
}

fn agent_without_an_accepted_identity_lists_what_was_tried(make: MakeServer<'_>) {
    let good = ClientKey::ed25519().unwrap();
    let Some(server) = make(&good) else { return };
    let other = ClientKey::ed25519().unwrap();
    let agent = Agent::start(&[&other]);
    let (_, report) = run_one(server.host().agent_socket(&agent.socket));
    let msg = connect_error(&report);
    assert!(msg.contains("agent key"), "names the agent identity tried: {msg}");
    assert!(msg.contains("authentication failed"), "{msg}");
    // An agent that is not there is reported too, not silently skipped.
    let (_, report) = run_one(server.host().agent_socket("/nonexistent/agent.sock"));
    let msg = connect_error(&report);
    assert!(msg.contains("/nonexistent/agent.sock"), "{msg}");
}

fn keys_from_memory_with_and_without_passphrase(make: MakeServer<'_>) {
    let plain = ClientKey::ed25519().unwrap();
    let Some(server) = make(&plain) else { return };
    let locked = ClientKey::generate(KeyType::Ed25519, Some("open sesame")).unwrap();
    match &server {
        Server::Embedded(s) => s.add_authorized_key(USER, locked.public_line()).unwrap(),
        Server::OpenSsh(s) => s.authorize(&locked).unwrap(),
    }
    let pem = |k: &ClientKey| fs::read_to_string(k.private_path()).unwrap();
    let (_, report) = run_one(server.host().key_data(pem(&plain)));
    assert!(report.success(), "plain in-memory key: {report}");
    let (_, report) = run_one(server.host().key_data(pem(&locked)).passphrase("open sesame"));
    assert!(report.success(), "in-memory key with passphrase: {report}");
    let (_, report) = run_one(server.host().key_data(pem(&locked)).passphrase("wrong"));
    let msg = connect_error(&report);
    assert!(msg.contains("in-memory key #1"), "names the key: {msg}");
    assert!(!msg.contains("BEGIN"), "never prints the key: {msg}");
}

#[test]
fn auth_deadline_is_separate_from_the_connect_deadline() {
    let key = ClientKey::ed25519().unwrap();
    // Every rejected attempt is answered after 30 s: only our deadline ends it.
    let server = EmbeddedServer::builder()
        .authorized_key(USER, key.public_line())
        .auth_rejection_time(Duration::from_secs(30))
        .start()
        .unwrap();
    let host = Host::new("127.0.0.1")
        .port(server.port())
        .user(USER)
        .agent(false)
        .password("not the password")
        .host_key_check(HostKeyCheck::Off)
        .connect_timeout(Duration::from_secs(20))
        .auth_timeout(Duration::from_millis(700));
    let t0 = Instant::now();
    let (_, report) = run_one(host);
    let msg = connect_error(&report);
    assert!(msg.contains("authenticating"), "{msg}");
    assert!(
        msg.contains("700ms"),
        "names the auth deadline, not the connect one: {msg}"
    );
    assert!(t0.elapsed() < Duration::from_secs(15), "took {:?}", t0.elapsed());
}
