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

/// A host logging in to `sshd` with `login` (a key file), not through any agent.
fn host(sshd: &OpenSshServer, login: &ClientKey) -> Host {
    Host::new("127.0.0.1")
        .port(sshd.port)
        .user(testbed::current_user())
        .key_file(login.private_path())
        .agent(false)
        .host_key_check(HostKeyCheck::Off)
        .connect_timeout(Duration::from_secs(10))
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
    let agent = Agent::start();
    let login = ClientKey::ed25519().unwrap();
    let sshd = sshd_for(login.public_line());
    let mut p = parallel();
    // The agent is named by the host, not by $SSH_AUTH_SOCK (tests share the environment).
    let with_socket = || host(&sshd, &login).agent_socket(&agent.socket).agent(false);
    p.add_host("on", with_socket().forward_agent(true)).unwrap();
    p.add_host("off", with_socket().forward_agent(false)).unwrap();
    p.add_host("default", with_socket()).unwrap();
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

/// An ssh_config forwarding `fwd` (by `ForwardAgent PATH`) and not `plain`.
fn write_config(dir: &Path, sshd: &OpenSshServer, login: &ClientKey, agent: &Agent) -> PathBuf {
    let common = format!(
        "  HostName 127.0.0.1\n  Port {}\n  User {}\n  IdentityFile {}\n  IdentityAgent none\n  \
         StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n",
        sshd.port,
        testbed::current_user(),
        login.private_path().display()
    );
    let text = format!(
        "Host fwd\n  ForwardAgent {}\n{common}\nHost plain\n{common}",
        agent.socket.display()
    );
    let path = dir.join("ssh_config");
    fs::write(&path, text).unwrap();
    path
}

#[test]
fn forward_agent_from_the_openssh_configuration_and_the_api_wins_over_it() {
    if !usable() {
        return;
    }
    let agent = Agent::start();
    let login = ClientKey::ed25519().unwrap();
    let sshd = sshd_for(login.public_line());
    let config = write_config(agent.dir.path(), &sshd, &login, &agent);
    let mut p = Parallel::builder().ssh_config(&config).build().unwrap();
    p.add_host("fwd", Host::new("fwd")).unwrap();
    p.add_host("plain", Host::new("plain")).unwrap();
    p.add_host("vetoed", Host::new("fwd").forward_agent(false)).unwrap();
    p.all(Command::new(LIST).on_error(OnError::Ignore)).unwrap();
    let report = p.run();
    let fwd = &outputs(&report, "fwd")[0];
    assert!(
        fwd.contains(&agent.fingerprint) && fwd.contains("rc=0"),
        "fwd: {fwd}\n{report}"
    );
    for label in ["plain", "vetoed"] {
        let out = &outputs(&report, label)[0];
        assert!(out.contains(NO_AGENT), "{label}: {out}\n{report}");
    }
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
    let agent = Agent::start();
    let login = ClientKey::ed25519().unwrap();
    let first = sshd_for(login.public_line());
    // Only the agent's key opens the second server: its private half never
    // leaves this machine, so the hop can only sign through the forwarded agent.
    let second = sshd_for(&agent.public);
    let mut p = parallel();
    let base = || host(&first, &login).agent_socket(&agent.socket).agent(false);
    p.add_host("on", base().forward_agent(true)).unwrap();
    p.add_host("off", base()).unwrap();
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
    let agent = Agent::start();
    // For the parent to search its output for.
    fs::write(public_file, &agent.public).unwrap();
    let login = ClientKey::ed25519().unwrap();
    let first = sshd_for(login.public_line());
    let second = sshd_for(&agent.public);
    let mut p = parallel();
    p.add_host(
        "on",
        host(&first, &login)
            .agent_socket(&agent.socket)
            .agent(false)
            .forward_agent(true),
    )
    .unwrap();
    // Neither the listing nor the hop prints the key: only the relay carries it.
    p.all(Command::new("ssh-add -l | wc -l")).unwrap();
    p.all(Command::new(hop(&second))).unwrap();
    let report = p.run();
    let tasks = report.label("on").unwrap().tasks();
    assert_eq!(tasks[0].stdout_str().trim(), "1", "{report}");
    assert_eq!(tasks[1].stdout_str(), "second-hop-ok\n", "{report}");
    println!("report debug:\n{report:#?}");
    println!("CHILD-DONE");
}

#[test]
fn the_relayed_agent_traffic_stays_out_of_trace_logs() {
    if !usable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let public_file = dir.path().join("agent_key.pub");
    let out = Process::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_forwards_at_trace_level",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, &public_file)
        .env("RUST_LOG", "trace")
        .env_remove("RUST_LOG_STYLE")
        .output()
        .expect("re-run this test binary as the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let all = format!("{stdout}\n{stderr}");
    assert!(
        out.status.success() && stdout.contains("CHILD-DONE"),
        "the child failed ({}):\n{all}",
        out.status
    );
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
