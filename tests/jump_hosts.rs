//! Jump hosts (ProxyJump), natively, on the OpenSSH tier: bastion sshds
//! (`AllowTcpForwarding yes`, `PermitOpen` limited to the targets) in front
//! of target servers (embedded russh servers and sshd). Checked from the
//! bastion's own log: many labels behind one bastion cost one login there;
//! a chain of two jumps; a bastion killed mid-run and restarted (the labels
//! reconnect per their rules, the jump session is re-established once); a
//! wrong host key on the bastion (the error names the hop, nothing runs);
//! a configuration under a temporary home (`HostName`, `User`, `Port`,
//! `IdentityFile`, `UserKnownHostsFile`, `ProxyJump`) with bare
//! `Host::new(alias)`. And on the embedded tier (the test server as the
//! bastion): one session for 40 labels, forwards refused, forwards cut
//! mid-run (the labels come back through the same jump session).
//!
//! A missing sshd (or not root) fails these tests, or skips them loudly
//! with `TESTBED_ALLOW_SKIP=1` (`testbed::prereq`).

mod common;
#[path = "common/routes.rs"]
mod routes;
#[path = "common/servers.rs"]
mod servers;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::wait_until;
use routes::{all_ok, embedded_target, first_error, first_ok, parallel, parallel_in_new_home};
use servers::{PASSWORD, USER};
use ssh_parallel::{Command, Host, HostKeyCheck, Join, OnError, Parallel, ParallelBuilder, TaskStatus};
use tempfile::TempDir;
use testbed::{ClientKey, EmbeddedServer, OpenSshServer};

/// A bastion sshd that forwards only to `ports` on 127.0.0.1, with the key
/// that logs in to it.
struct Bastion {
    sshd: OpenSshServer,
    key: ClientKey,
}

impl Bastion {
    /// `None` only when sshd cannot run here and skipping is allowed.
    fn start(ports: &[u16]) -> Option<Bastion> {
        if !testbed::prereq::sshd() {
            return None;
        }
        let key = ClientKey::ed25519().expect("generate a client key");
        let permit: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let sshd = OpenSshServer::builder()
            .authorize(&key)
            .config_line("AllowTcpForwarding yes")
            .config_line(format!("PermitOpen {}", permit.join(" ")))
            .log_level("DEBUG1")
            .start()
            .expect("start the bastion sshd");
        Some(Bastion { sshd, key })
    }

    /// The bastion as a jump host (its key is checked against the
    /// configuration's `UserKnownHostsFile`).
    fn hop(&self) -> Host {
        Host::new("127.0.0.1")
            .port(self.sshd.port)
            .user(testbed::current_user())
            .key_file(self.key.private_path())
            .agent(false)
            .host_key_check(HostKeyCheck::Strict)
            .connect_timeout(Duration::from_secs(10))
    }

    fn logins(&self) -> usize {
        self.sshd.log().matches("Accepted publickey").count()
    }

    /// `direct-tcpip` channels the bastion opened so far.
    fn forwards(&self) -> usize {
        self.sshd.log().matches("server_request_direct_tcpip").count()
    }
}

/// Waits (20 s at most) until `n` commands containing `marker` have started
/// on `target`.
fn wait_for_commands(target: &EmbeddedServer, marker: &str, n: usize) {
    let running = wait_until(Duration::from_secs(20), || {
        target.commands().iter().filter(|c| c.contains(marker)).count() == n
    });
    assert!(running, "the commands started: {:?}", target.commands());
}

/// A target behind `hops`, logging in with the test password.
fn behind(target: &EmbeddedServer, hops: &[Host]) -> Host {
    let mut h = Host::new("127.0.0.1")
        .port(target.addr().port())
        .user(USER)
        .password(PASSWORD)
        .agent(false)
        .host_key_check(HostKeyCheck::Off);
    for hop in hops {
        h = h.jump(hop.clone());
    }
    h
}

/// Adds the labels `{prefix}0`..`{prefix}{n-1}`, each reaching `target`
/// behind `hops`.
fn add_behind(pssh: &mut Parallel, prefix: &str, n: usize, target: &EmbeddedServer, hops: &[Host]) {
    for i in 0..n {
        pssh.add_host(format!("{prefix}{i}"), behind(target, hops)).unwrap();
    }
}

/// An embedded target and a bastion sshd that forwards to it alone; `None`
/// only when sshd cannot run here and skipping is allowed.
fn target_and_bastion() -> Option<(EmbeddedServer, Bastion)> {
    let target = embedded_target();
    let bastion = Bastion::start(&[target.addr().port()])?;
    Some((target, bastion))
}

/// A `Parallel` from `builder` under a fresh home (returned, to outlive it)
/// whose only configuration makes `127.0.0.1` (the bastions' name here)
/// trust the keys of `bastions` and nothing else.
fn trusting(bastions: &[&Bastion], builder: ParallelBuilder) -> (TempDir, Parallel) {
    let home = tempfile::tempdir().unwrap();
    let kh = home.path().join("known_hosts");
    let lines: String = bastions
        .iter()
        .map(|b| format!("{}\n", b.sshd.known_hosts_line))
        .collect();
    fs::write(&kh, lines).unwrap();
    let config = format!(
        "Host *\n  UserKnownHostsFile {}\n  GlobalKnownHostsFile none\n",
        kh.display()
    );
    let pssh = parallel(home.path(), &config, builder);
    (home, pssh)
}

#[test]
fn many_labels_behind_one_bastion_cost_one_login_there() {
    let Some((target, bastion)) = target_and_bastion() else {
        return;
    };
    let (_home, mut pssh) = trusting(&[&bastion], Parallel::builder().io_threads(3).workers(40));
    const N: usize = 24;
    add_behind(&mut pssh, "web", N, &target, &[bastion.hop()]);
    pssh.all(Command::new("echo hello-%LABEL%")).unwrap();
    pssh.all(Command::new("echo again")).unwrap();
    let report = pssh.run();
    for i in 0..N {
        let label = format!("web{i}");
        let tasks = all_ok(&report, &label);
        assert_eq!(tasks[0].stdout_str().trim(), format!("hello-{label}"));
    }
    assert_eq!(bastion.logins(), 1, "one login on the bastion for {N} labels");
    assert_eq!(bastion.forwards(), N, "one tunnel through the bastion per label");
    assert_eq!(
        target.stats().connections as usize,
        N,
        "one session per label on the target"
    );
}

#[test]
fn a_chain_of_two_jumps_logs_in_once_on_each() {
    let Some((target, inner)) = target_and_bastion() else {
        return;
    };
    let Some(outer) = Bastion::start(&[inner.sshd.port]) else {
        return;
    };
    let (_home, mut pssh) = trusting(&[&outer, &inner], Parallel::builder());
    let hops = [outer.hop(), inner.hop()];
    add_behind(&mut pssh, "t", 4, &target, &hops);
    pssh.all(Command::new("echo through-two")).unwrap();
    let report = pssh.run();
    for i in 0..4 {
        first_ok(&report, &format!("t{i}"), "through-two");
    }
    assert_eq!((outer.logins(), inner.logins()), (1, 1), "one login per hop");
    // The outer bastion carries one tunnel (to the inner one), the inner one a tunnel per label.
    assert_eq!((outer.forwards(), inner.forwards()), (1, 4));
}

#[test]
fn a_bastion_killed_mid_run_is_logged_in_to_again_once() {
    let Some((target, mut bastion)) = target_and_bastion() else {
        return;
    };
    let (_home, mut pssh) = trusting(
        &[&bastion],
        Parallel::builder()
            .reconnections(5)
            .reconnect_delay(Duration::from_millis(300)),
    );
    const N: usize = 8;
    add_behind(
        &mut pssh,
        "w",
        N,
        &target,
        &[bastion.hop().keepalive(Duration::from_secs(1))],
    );
    pssh.all(Command::new("sleep 3; echo first")).unwrap();
    pssh.all(Command::new("echo second")).unwrap();
    let handle = pssh.start();
    // Once every label's command runs, the bastion dies (its sessions too), then comes back.
    wait_for_commands(&target, "first", N);
    bastion.sshd.stop();
    std::thread::sleep(Duration::from_millis(200));
    bastion.sshd.start_listener().expect("restart the bastion");
    let report = handle.wait();
    for i in 0..N {
        let tasks = all_ok(&report, &format!("w{i}"));
        assert!(
            tasks[0].reruns() >= 1,
            "w{i}: the first command was re-run after the loss"
        );
        assert_eq!(tasks[0].stdout_str().trim(), "first");
    }
    assert_eq!(
        bastion.logins(),
        2,
        "one login before the loss, one after, for {N} labels"
    );
}

/// A `Parallel` under a fresh home (returned, to outlive it) reading the
/// OpenSSH configuration of the tests below: `bastion` and `web*` aliases
/// with their keys (a fresh one for the target), and `~/kh` holding
/// `known_hosts` as the only known hosts.
fn fleet(bastion: &Bastion, target: &EmbeddedServer, known_hosts: &str) -> (TempDir, Parallel) {
    let home = tempfile::tempdir().unwrap();
    web_key(home.path(), target);
    fs::write(home.path().join("kh"), known_hosts).unwrap();
    let config = fleet_config(home.path(), bastion, target);
    let pssh = parallel(home.path(), &config, Parallel::builder());
    (home, pssh)
}

/// The configuration of [`fleet`].
fn fleet_config(home: &Path, bastion: &Bastion, target: &EmbeddedServer) -> String {
    let ssh = home.join(".ssh");
    fs::create_dir_all(&ssh).unwrap();
    fs::copy(bastion.key.private_path(), ssh.join("id_bastion")).unwrap();
    format!(
        "Host bastion\n  HostName 127.0.0.1\n  Port {}\n  User {}\n  IdentityFile ~/.ssh/id_bastion\n\
         Host web*\n  HostName 127.0.0.1\n  Port {}\n  User {USER}\n  IdentityFile ~/.ssh/id_web\n  ProxyJump bastion\n\
         Host *\n  IdentityAgent none\n  UserKnownHostsFile ~/kh\n  GlobalKnownHostsFile none\n  \
         StrictHostKeyChecking yes\n",
        bastion.sshd.port,
        testbed::current_user(),
        target.addr().port()
    )
}

/// Authorizes a fresh key for `USER` on `target`, saved as `~/.ssh/id_web`
/// (a copy: the key's own files go when it is dropped).
fn web_key(home: &Path, target: &EmbeddedServer) {
    let key = ClientKey::ed25519().unwrap();
    target.add_authorized_key(USER, key.public_line()).unwrap();
    fs::create_dir_all(home.join(".ssh")).unwrap();
    fs::copy(key.private_path(), home.join(".ssh/id_web")).unwrap();
}

#[test]
fn a_config_under_home_gives_every_detail_and_the_jump_host() {
    let Some((target, bastion)) = target_and_bastion() else {
        return;
    };
    let known = format!("{}\n{}\n", bastion.sshd.known_hosts_line, target.known_hosts_line());
    let (_home, mut pssh) = fleet(&bastion, &target, &known);
    for i in 0..5 {
        pssh.add_host(format!("w{i}"), Host::new(format!("web{i}"))).unwrap();
    }
    let hop = &pssh.host("w0").unwrap().jump_hosts()[0];
    assert_eq!((hop.alias(), hop.port_number()), ("bastion", Some(bastion.sshd.port)));
    pssh.all(Command::new("echo via-config")).unwrap();
    let report = pssh.run();
    for i in 0..5 {
        first_ok(&report, &format!("w{i}"), "via-config");
    }
    assert_eq!(bastion.logins(), 1);
    assert_eq!(target.stats().connections, 5);
}

#[test]
fn a_wrong_host_key_on_the_bastion_names_the_hop_and_nothing_runs() {
    let Some((target, bastion)) = target_and_bastion() else {
        return;
    };
    // The bastion's port recorded with another server's key.
    let wrong = format!("[127.0.0.1]:{} {}", bastion.sshd.port, target.host_key_openssh());
    let known = format!("{wrong}\n{}\n", target.known_hosts_line());
    let (_home, mut pssh) = fleet(&bastion, &target, &known);
    for i in 0..3 {
        pssh.add_host(format!("w{i}"), Host::new(format!("web{i}"))).unwrap();
    }
    pssh.all(Command::new("echo must-not-run")).unwrap();
    let report = pssh.run();
    for i in 0..3 {
        let msg = first_error(&report, &format!("w{i}"));
        assert!(msg.contains("via bastion"), "{msg}");
        assert!(msg.contains("jump host bastion"), "{msg}");
        assert!(msg.contains("host key verification failed"), "{msg}");
    }
    assert_eq!(bastion.logins(), 0, "no login on a bastion whose key does not match");
    assert_eq!(target.stats().connections, 0, "nothing reached the target");
    assert!(target.commands().is_empty());
}

#[test]
fn an_sshd_target_behind_the_bastion_and_a_refused_forward() {
    let Some(target) = servers::Server::openssh() else {
        return;
    };
    let other = embedded_target();
    // The bastion forwards to the sshd target only, not to `other`.
    let Some(bastion) = Bastion::start(&[target.addr().port()]) else {
        return;
    };
    let (_home, mut pssh) = trusting(&[&bastion], Parallel::builder());
    let hop = bastion.hop();
    for i in 0..3 {
        pssh.add_host(format!("s{i}"), target.host().jump(hop.clone())).unwrap();
    }
    pssh.add_host("refused", behind(&other, std::slice::from_ref(&hop)))
        .unwrap();
    pssh.all(Command::new("echo sshd-%LABEL%")).unwrap();
    let report = pssh.run();
    for i in 0..3 {
        first_ok(&report, &format!("s{i}"), &format!("sshd-s{i}"));
    }
    let msg = first_error(&report, "refused");
    assert!(msg.contains("refused to forward"), "{msg}");
    assert!(msg.contains(&format!("127.0.0.1:{}", other.addr().port())), "{msg}");
    assert_eq!(other.stats().connections, 0);
    assert_eq!(
        bastion.logins(),
        1,
        "the refused forward did not cost the others their session"
    );
}

// The embedded tier: the test server as the bastion (it relays `direct-tcpip`
// to 127.0.0.0/8), where jump faults can be injected.

/// An embedded server as a jump host (password login, no host-key check).
fn embedded_hop(bastion: &EmbeddedServer) -> Host {
    Host::new("127.0.0.1")
        .port(bastion.addr().port())
        .user(USER)
        .password(PASSWORD)
        .agent(false)
        .host_key_check(HostKeyCheck::Off)
}

/// 40 labels behind an embedded bastion with `faults`, each echoing its
/// label, which must all succeed; returns the bastion's logins, after
/// checking one tunnel per label (none opened twice) and one target session
/// per label.
fn forty_behind_an_embedded_bastion(faults: Vec<testbed::Fault>, builder: ParallelBuilder) -> u64 {
    let (target, bastion) = (embedded_target(), embedded_target());
    bastion.set_faults(faults);
    let (_home, mut pssh) = parallel_in_new_home("", builder.workers(64));
    const N: usize = 40;
    add_behind(&mut pssh, "e", N, &target, &[embedded_hop(&bastion)]);
    pssh.all(Command::new("echo e-%LABEL%")).unwrap();
    let report = pssh.run();
    for i in 0..N {
        first_ok(&report, &format!("e{i}"), &format!("e-e{i}"));
    }
    let stats = bastion.stats();
    assert_eq!(
        stats.forwards_opened as usize, N,
        "one tunnel per label, none opened twice"
    );
    assert_eq!(target.stats().connections as usize, N);
    stats.connections
}

#[test]
fn embedded_bastion_serves_many_labels_over_one_session() {
    let logins = forty_behind_an_embedded_bastion(Vec::new(), Parallel::builder().io_threads(2));
    assert_eq!(logins, 1, "one session on the bastion");
}

#[test]
fn slow_tunnel_opens_are_spread_over_more_sessions_to_the_bastion() {
    // A distant bastion: each `direct-tcpip` open is answered 60 ms after it
    // arrives. libssh2 opens one channel at a time per session, so on one
    // session 40 opens would take 2.4 s; the pool opens more sessions.
    let slow = vec![testbed::Fault::DelayForwardOpen(Duration::from_millis(60))];
    let logins = forty_behind_an_embedded_bastion(slow, Parallel::builder().io_threads(1));
    assert!(
        (2..=8).contains(&logins),
        "more sessions on a slow bastion, at most 8: {logins}"
    );
}

#[test]
fn embedded_bastion_refusing_forwards_fails_each_label_naming_the_hop() {
    let (target, bastion) = (embedded_target(), embedded_target());
    bastion.set_faults(vec![testbed::Fault::RefuseForwarding]);
    let (_home, mut pssh) = parallel_in_new_home("", Parallel::builder());
    add_behind(&mut pssh, "r", 3, &target, &[embedded_hop(&bastion)]);
    pssh.all(Command::new("echo must-not-run")).unwrap();
    let report = pssh.run();
    for i in 0..3 {
        let msg = first_error(&report, &format!("r{i}"));
        assert!(msg.contains("via 127.0.0.1"), "{msg}");
        assert!(msg.contains("refused to forward"), "{msg}");
    }
    assert_eq!(bastion.stats().connections, 1, "the refusals cost one session");
    assert_eq!(bastion.stats().forwards_refused, 3);
    assert_eq!(target.stats().connections, 0);
}

#[test]
fn dropped_forwards_reconnect_through_the_same_jump_session() {
    let (target, bastion) = (embedded_target(), embedded_target());
    let (_home, mut pssh) = parallel_in_new_home(
        "",
        Parallel::builder()
            .reconnections(3)
            .reconnect_delay(Duration::from_millis(100)),
    );
    const N: usize = 5;
    add_behind(&mut pssh, "d", N, &target, &[embedded_hop(&bastion)]);
    pssh.all(Command::new("sleep 2; echo done")).unwrap();
    let handle = pssh.start();
    wait_for_commands(&target, "sleep 2", N);
    // Every tunnel is cut; the bastion session itself stays up.
    bastion.drop_forwards();
    let report = handle.wait();
    for i in 0..N {
        let t = first_ok(&report, &format!("d{i}"), "done");
        assert!(t.reruns() >= 1, "d{i} was re-run after its tunnel was cut");
    }
    assert_eq!(
        bastion.stats().connections,
        1,
        "the labels came back through the same jump session"
    );
    assert_eq!(bastion.stats().forwards_opened as usize, 2 * N);
}

#[test]
fn a_jump_host_that_dies_is_named_in_every_label_error() {
    let target = embedded_target();
    let mut bastion = embedded_target();
    let port = bastion.addr().port();
    let home = tempfile::tempdir().unwrap();
    // One reconnection: the labels cut mid-command try once more, through a
    // gateway that is gone by then; `late` starts only after it died.
    let mut pssh = parallel(
        home.path(),
        "",
        Parallel::builder()
            .reconnections(1)
            .reconnect_delay(Duration::from_millis(50)),
    );
    const N: usize = 4;
    for i in 0..N {
        // Done: their failure releases `late`'s join, which then connects.
        let host = behind(&target, &[embedded_hop(&bastion)]).on_error(OnError::Done);
        pssh.add_host(format!("k{i}"), host).unwrap();
    }
    pssh.add_host("late", behind(&target, &[embedded_hop(&bastion)]))
        .unwrap();
    pssh.push("k*", Command::new("sleep 3600")).unwrap();
    pssh.push("late", Join::new("k*")).unwrap();
    pssh.push("late", Command::new("echo must-not-run")).unwrap();
    let handle = pssh.start();
    wait_for_commands(&target, "sleep 3600", N);
    bastion.stop();
    let report = handle.wait();
    // Not a symptom of the dead tunnel ("Failed getting banner"): the hop and
    // what happened to it.
    let hop = format!("jump host 127.0.0.1:{port}");
    for i in 0..N {
        let msg = first_error(&report, &format!("k{i}"));
        assert!(msg.contains(&format!("via 127.0.0.1:{port}")), "{msg}");
        assert!(msg.contains(&hop), "{msg}");
    }
    let late = report.label("late").unwrap();
    assert_eq!(late.tasks()[0].status(), TaskStatus::Succeeded, "the join is released");
    let t = &late.tasks()[1];
    assert_eq!(t.status(), TaskStatus::Failed);
    let msg = t.error().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        msg.contains(&hop),
        "a connection opened after the jump host died: {msg}"
    );
    assert_eq!(
        target.commands().iter().filter(|c| c.contains("must-not-run")).count(),
        0
    );
}
