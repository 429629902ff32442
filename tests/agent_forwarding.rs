//! Agent forwarding against OpenSSH's sshd: a throwaway `ssh-agent` (its
//! socket in a temporary directory, killed by pid at the end) holds a
//! generated key; a label with forwarding on sees that key with `ssh-add -l`
//! on the host and logs in to a second sshd with it, a label without
//! forwarding sees no agent. Forwarding comes from the API
//! (`Host::forward_agent`) or from `ForwardAgent` in an OpenSSH
//! configuration, and the relayed agent traffic never reaches the logs, even
//! at `trace` level.
//!
//! A missing sshd or ssh-agent fails the tests (or skips them loudly with
//! `TESTBED_ALLOW_SKIP=1`: see `testbed::prereq`).

#[path = "common/child.rs"]
mod child;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use ssh_parallel::{Command, Host, HostKeyCheck, OnError, Parallel, Report};
use testbed::{ClientKey, OpenSshServer};

/// A distinctive comment for the agent's key, so that a hit in the logs can only be a leak.
const AGENT_KEY_COMMENT: &str = "agent-key-7f3a9c-forwarded";
const CHILD: &str = "SSH_PARALLEL_AGENT_FORWARDING_CHILD";

/// A throwaway ssh-agent holding one generated key; killed (by pid) when dropped.
struct Agent {
    child: Child,
    dir: tempfile::TempDir,
    socket: PathBuf,
    /// The key's private half (also in the agent).
    key: PathBuf,
    /// Its public key line.
    public: String,
    /// `SHA256:...`, as `ssh-add -l` prints it.
    fingerprint: String,
}

impl Agent {
    fn start() -> Agent {
        let dir = tempfile::Builder::new().prefix("agent-fwd-").tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let child = Process::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ssh-agent");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "ssh-agent made no socket");
            std::thread::sleep(Duration::from_millis(10));
        }
        let key = dir.path().join("agent_key");
        let st = Process::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", AGENT_KEY_COMMENT, "-f"])
            .arg(&key)
            .status()
            .expect("ssh-keygen");
        assert!(st.success());
        let mut agent = Agent {
            child,
            public: fs::read_to_string(key.with_extension("pub")).unwrap().trim().to_owned(),
            fingerprint: String::new(),
            key,
            socket,
            dir,
        };
        let out = Process::new("ssh-add")
            .arg(&agent.key)
            .env("SSH_AUTH_SOCK", &agent.socket)
            .output()
            .expect("ssh-add");
        assert!(
            out.status.success(),
            "ssh-add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Process::new("ssh-keygen")
            .arg("-lf")
            .arg(agent.key.with_extension("pub"))
            .output()
            .unwrap();
        agent.fingerprint = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)
            .expect("a fingerprint")
            .to_owned();
        assert!(agent.fingerprint.starts_with("SHA256:"), "{}", agent.fingerprint);
        agent
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // `Child::kill` signals this child's pid, nothing else.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether sshd and the OpenSSH client tools are here (else a failure, or a loud skip).
fn usable() -> bool {
    testbed::prereq::sshd()
        && testbed::prereq::program("ssh-agent", "openssh-client")
        && testbed::prereq::program("ssh-add", "openssh-client")
        && testbed::prereq::program("ssh", "openssh-client")
}

/// An sshd letting in `key` (sshd's default `AllowAgentForwarding yes`, said anyway).
fn sshd_for(key_line: &str) -> OpenSshServer {
    OpenSshServer::builder()
        .authorized_key(key_line)
        .config_line("AllowAgentForwarding yes")
        .start()
        .expect("start sshd")
}

/// An sshd letting in a generated login key, and a throwaway agent holding
/// another key. Fields in drop order: sshd first, the agent last.
struct Rig {
    sshd: OpenSshServer,
    /// Logs in to `sshd` (from a file, never through the agent).
    login: ClientKey,
    agent: Agent,
}

impl Rig {
    fn start() -> Rig {
        let agent = Agent::start();
        let login = ClientKey::ed25519().unwrap();
        let sshd = sshd_for(login.public_line());
        Rig { sshd, login, agent }
    }

    /// A host logging in to the sshd with the login key that knows the agent
    /// by its socket (not by `$SSH_AUTH_SOCK`: tests share the environment)
    /// but does not log in through it; forwarding is left to the caller.
    fn agent_host(&self) -> Host {
        Host::new("127.0.0.1")
            .port(self.sshd.port)
            .user(testbed::current_user())
            .key_file(self.login.private_path())
            .host_key_check(HostKeyCheck::Off)
            .connect_timeout(Duration::from_secs(10))
            .agent_socket(&self.agent.socket)
            // Naming the socket turns the agent login on: off again, after it.
            .agent(false)
    }
}

/// A `Parallel` that reads no OpenSSH configuration.
fn parallel() -> Parallel {
    Parallel::builder().no_ssh_config().build().unwrap()
}

/// Every task's stdout and stderr of `label`, in order.
fn outputs(report: &Report, label: &str) -> Vec<String> {
    report
        .label(label)
        .unwrap_or_else(|| panic!("no label {label}"))
        .tasks()
        .iter()
        .map(|t| format!("{}{}", t.stdout_str(), t.stderr_str()))
        .collect()
}

const LIST: &str = "ssh-add -l; echo rc=$?";
const NO_AGENT: &str = "Could not open a connection to your authentication agent";

#[test]
fn a_forwarded_agent_lists_its_key_on_the_host_and_none_without_forwarding() {
    if !usable() {
        return;
    }
    let rig = Rig::start();
    let agent = &rig.agent;
    let mut p = parallel();
    p.add_host("on", rig.agent_host().forward_agent(true)).unwrap();
    p.add_host("off", rig.agent_host().forward_agent(false)).unwrap();
    p.add_host("default", rig.agent_host()).unwrap();
    // Twice: the second command reuses the session, and forwards again.
    p.all(Command::new(LIST).on_error(OnError::Ignore)).unwrap();
    p.all(Command::new(LIST).on_error(OnError::Ignore)).unwrap();
    let report = p.run();
    for out in outputs(&report, "on") {
        assert!(
            out.contains(&agent.fingerprint),
            "on: {out}\n{report} {:?}",
            outputs(&report, "on")
        );
        assert!(out.contains(AGENT_KEY_COMMENT) && out.contains("rc=0"), "on: {out}");
    }
    for label in ["off", "default"] {
        for out in outputs(&report, label) {
            assert!(out.contains(NO_AGENT) && out.contains("rc=2"), "{label}: {out}");
            assert!(!out.contains(&agent.fingerprint), "{label}: {out}");
        }
    }
}

#[test]
fn twenty_labels_forward_at_once_each_to_its_own_relays() {
    if !usable() {
        return;
    }
    let rig = Rig::start();
    let mut p = parallel();
    for i in 0..20 {
        p.add_host(format!("h{i}"), rig.agent_host().forward_agent(true))
            .unwrap();
    }
    // Three agent connections one after the other, and three at once, per label.
    p.all(Command::new("for i in 1 2 3; do ssh-add -l; done | grep -c SHA256"))
        .unwrap();
    p.all(Command::new(
        "(ssh-add -l & ssh-add -l & ssh-add -l & wait) | grep -c SHA256",
    ))
    .unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
    for i in 0..20 {
        for out in outputs(&report, &format!("h{i}")) {
            assert_eq!(out, "3\n", "h{i}\n{report}");
        }
    }
}

/// Runs `ssh-add -l` once on each `(label, host, forwarded)` under an OpenSSH
/// configuration written by `config` (given the lines every host needs to log in
/// to a fresh sshd, and the agent's socket) and a builder default of
/// `builder_default`; checks which labels see the agent.
fn check_under_config(
    builder_default: Option<bool>,
    config: impl FnOnce(&str, &Path) -> String,
    hosts: Vec<(&str, Host, bool)>,
) {
    let Rig { agent, login, sshd } = Rig::start();
    let login_lines = format!(
        "  HostName 127.0.0.1\n  Port {}\n  User {}\n  IdentityFile {}\n  StrictHostKeyChecking no\n  \
         UserKnownHostsFile /dev/null\n",
        sshd.port,
        testbed::current_user(),
        login.private_path().display()
    );
    let path = agent.dir.path().join("ssh_config");
    fs::write(&path, config(&login_lines, &agent.socket)).unwrap();
    let mut builder = Parallel::builder().ssh_config(&path);
    if let Some(on) = builder_default {
        builder = builder.forward_agent(on);
    }
    let mut p = builder.build().unwrap();
    let mut expected = Vec::new();
    for (label, host, forwarded) in hosts {
        p.add_host(label, host).unwrap();
        expected.push((label, forwarded));
    }
    p.all(Command::new(LIST).on_error(OnError::Ignore)).unwrap();
    let report = p.run();
    for (label, forwarded) in expected {
        let out = &outputs(&report, label)[0];
        if forwarded {
            assert!(
                out.contains(&agent.fingerprint) && out.contains("rc=0"),
                "{label}: {out}\n{report}"
            );
        } else {
            assert!(out.contains(NO_AGENT), "{label}: {out}\n{report}");
        }
    }
}

#[test]
fn forward_agent_from_the_openssh_configuration_and_the_api_wins_over_it() {
    if !usable() {
        return;
    }
    check_under_config(
        None,
        // The agent is only named by ForwardAgent (no agent is used to log in).
        |login, socket| {
            format!(
                "Host fwd\n  ForwardAgent {}\n  IdentityAgent none\n{login}\nHost plain\n  IdentityAgent none\n{login}",
                socket.display()
            )
        },
        vec![
            ("fwd", Host::new("fwd"), true),
            ("plain", Host::new("plain"), false),
            ("vetoed", Host::new("fwd").forward_agent(false), false),
        ],
    );
}

#[test]
fn the_builder_default_forwards_where_neither_the_api_nor_the_configuration_decides() {
    if !usable() {
        return;
    }
    check_under_config(
        Some(true),
        // The agent is known (IdentityAgent) but not used to log in (IdentitiesOnly).
        |login, socket| {
            format!(
                "Host nofwd\n  ForwardAgent no\nHost *\n  IdentitiesOnly yes\n  IdentityAgent {}\n{login}",
                socket.display()
            )
        },
        vec![
            ("dflt", Host::new("dflt"), true),
            ("nofwd", Host::new("nofwd"), false),
            ("api_off", Host::new("dflt").forward_agent(false), false),
        ],
    );
}

/// `ssh` from the host to `second` (which lets in only the agent's key).
fn hop(second: &OpenSshServer) -> String {
    format!(
        "ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
         -p {} {}@127.0.0.1 echo second-hop-ok",
        second.port,
        testbed::current_user()
    )
}

#[test]
fn a_second_hop_logs_in_with_the_forwarded_agent() {
    if !usable() {
        return;
    }
    let rig = Rig::start();
    // Only the agent's key opens the second server: its private half never
    // leaves this machine, so the hop can only sign through the forwarded agent.
    let second = sshd_for(&rig.agent.public);
    let mut p = parallel();
    p.add_host("on", rig.agent_host().forward_agent(true)).unwrap();
    p.add_host("off", rig.agent_host()).unwrap();
    p.all(Command::new(hop(&second)).on_error(OnError::Ignore)).unwrap();
    let report = p.run();
    let on = report.label("on").unwrap();
    assert!(on.success(), "{report}");
    assert_eq!(on.tasks()[0].stdout_str(), "second-hop-ok\n");
    let off = report.label("off").unwrap();
    assert_ne!(off.tasks()[0].exit_code(), Some(0), "{report}");
    assert!(off.tasks()[0].stderr_str().contains("Permission denied"), "{report}");
    assert_eq!(second.log().matches("Accepted publickey").count(), 1);
}

/// The child's side of [`the_relayed_agent_traffic_stays_out_of_trace_logs`]:
/// runs forwarded commands with `env_logger` at trace level.
#[test]
#[ignore = "run as a child process by the_relayed_agent_traffic_stays_out_of_trace_logs"]
fn child_forwards_at_trace_level() {
    let Some(public_file) = std::env::var_os(CHILD) else {
        eprintln!("child_forwards_at_trace_level runs only as the child of its parent test");
        return;
    };
    env_logger::builder().is_test(false).init();
    log::trace!("child logger up");
    let rig = Rig::start();
    // For the parent to search its output for.
    fs::write(public_file, &rig.agent.public).unwrap();
    let second = sshd_for(&rig.agent.public);
    let mut p = parallel();
    p.add_host("on", rig.agent_host().forward_agent(true)).unwrap();
    // Neither the listing nor the hop prints the key: only the relay carries it.
    p.all(Command::new("ssh-add -l | wc -l")).unwrap();
    p.all(Command::new(hop(&second))).unwrap();
    let report = p.run();
    let tasks = report.label("on").unwrap().tasks();
    assert_eq!(tasks[0].stdout_str().trim(), "1", "{report}");
    assert_eq!(tasks[1].stdout_str(), "second-hop-ok\n", "{report}");
    println!("report debug:\n{report:#?}");
    println!("{}", child::DONE);
}

#[test]
fn the_relayed_agent_traffic_stays_out_of_trace_logs() {
    if !usable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let public_file = dir.path().join("agent_key.pub");
    let all = child::run_at_trace("child_forwards_at_trace_level", [(CHILD, &public_file)]);
    assert!(
        all.contains("TRACE") && all.contains("child logger up") && all.contains("forwarded agent connection opened"),
        "no trace logs of the forwarding:\n{all}"
    );
    // The agent's answers carry the key's comment and public blob; its
    // signatures only ever travel next to them.
    assert!(!all.contains(AGENT_KEY_COMMENT), "the agent traffic leaked:\n{all}");
    let public = fs::read_to_string(&public_file).expect("the child wrote its agent's key");
    let blob = public.split_whitespace().nth(1).expect("a public key blob");
    // Its middle too: a log could show the blob cut or wrapped.
    for part in [blob, &blob[40..]] {
        assert!(!all.contains(part), "the agent's key leaked:\n{all}");
    }
}
