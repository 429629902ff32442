//! A command that is stopped (its `timeout` or its `idle_timeout` passed)
//! leaves no process behind on the host, over both SSH servers and locally:
//! a plain command, a pipeline, and a command that ignores SIGHUP. The host
//! is this machine, so `ps` tells whether a process with the command's
//! unique marker still runs. And the idle timeout: a chatty command is not
//! stopped, a silent one is, reported as a `Timeout` with its output kept.

use std::time::{Duration, Instant};

use ssh_parallel::{Command, ErrorKind, Host, OnError, Parallel, ParallelBuilder, Report, TaskReport, TaskStatus};

mod common;
#[path = "common/servers.rs"]
mod servers;
use common::wait_until;
use servers::Server;

on_both!(
    timed_out_command_leaves_no_process,
    timed_out_pipeline_leaves_no_process,
    timed_out_command_ignoring_sighup_leaves_no_process,
    chatty_command_outlives_its_idle_timeout,
    silent_command_is_stopped_by_its_idle_timeout,
    builder_idle_timeout_is_the_default,
);

/// A marker no other process on this machine has in its command line; a
/// number, so that it can be `sleep`'s own argument (a comment after an
/// `exec` would not show in any process's arguments).
fn marker() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("1000.{}{n:03}{nanos:09}", std::process::id())
}

/// Pids of the processes whose command line holds `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    let out = std::process::Command::new("ps")
        .args(["-eo", "pid=,args="])
        .output()
        .expect("run ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(marker))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Waits (a few seconds) until no process holds `marker`; on failure kills
/// what is left (processes this test started) and says what it was.
fn assert_gone(marker: &str, server: &str, log: impl FnOnce() -> String) {
    if wait_until(Duration::from_secs(5), || processes_with(marker).is_empty()) {
        return;
    }
    let left = processes_with(marker);
    for pid in &left {
        // SAFETY: a process this test started (through the server), found by its unique marker.
        unsafe {
            libc::kill(*pid as libc::pid_t, libc::SIGKILL);
        }
    }
    panic!(
        "{server}: processes of the stopped command still run: {left:?}\n{}",
        log()
    );
}

fn server_log(s: &Server) -> String {
    match s {
        Server::OpenSsh(b) => format!("sshd log:\n{}", b.0.log()),
        Server::Embedded(_) => String::new(),
    }
}

fn first(report: &Report, label: &str) -> TaskReport {
    report.label(label).expect("label").tasks()[0].clone()
}

/// Runs `cmd` under a 1 s timeout, then `echo after`; checks the timeout
/// report and that nothing with `marker` is left.
fn stop_by_timeout(host: Host, cmd: String, marker: &str, server: &str, log: impl FnOnce() -> String) {
    let mut p = Parallel::new();
    p.add_host("t", host).unwrap();
    p.push(
        "t",
        Command::new(cmd)
            .timeout(Duration::from_secs(1))
            .on_error(OnError::Ignore),
    )
    .unwrap();
    p.push("t", Command::new("echo after")).unwrap();
    let t0 = Instant::now();
    let report = p.run();
    assert!(report.success(), "{report}");
    let t = first(&report, "t");
    assert_eq!(t.status(), TaskStatus::Ignored, "{t:?}");
    assert_eq!(t.error().map(|e| e.kind()), Some(ErrorKind::Timeout), "{t:?}");
    assert_eq!(t.stdout_str(), "started\n");
    assert_eq!(report.label("t").unwrap().tasks()[1].stdout_str(), "after\n");
    assert!(t0.elapsed() < Duration::from_secs(10), "took {:?}", t0.elapsed());
    assert_gone(marker, server, log);
}

fn timed_out_command_leaves_no_process(s: &Server) {
    let m = marker();
    stop_by_timeout(s.host(), format!("echo started; exec sleep {m}"), &m, s.name(), || {
        server_log(s)
    });
}

fn timed_out_pipeline_leaves_no_process(s: &Server) {
    let m = marker();
    let cmd = format!("echo started; sleep {m} | sh -c 'cat; : {m}'");
    stop_by_timeout(s.host(), cmd, &m, s.name(), || server_log(s));
}

fn timed_out_command_ignoring_sighup_leaves_no_process(s: &Server) {
    let m = marker();
    let cmd = format!("trap '' HUP; echo started; sleep {m}; : {m}");
    stop_by_timeout(s.host(), cmd, &m, s.name(), || server_log(s));
}

/// A line every 200 ms for 2 s never leaves it silent for its 1 s idle timeout.
fn chatty(host: Host) {
    let mut p = Parallel::new();
    p.add_host("c", host).unwrap();
    p.push(
        "c",
        Command::new("for i in 1 2 3 4 5 6 7 8 9 10; do echo $i; sleep 0.2; done").idle_timeout(Duration::from_secs(1)),
    )
    .unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
    assert_eq!(first(&report, "c").stdout_str().lines().count(), 10);
}

fn chatty_command_outlives_its_idle_timeout(s: &Server) {
    chatty(s.host());
}

/// Prints, goes silent: stopped ~`idle` later, a `Timeout` naming the idle
/// timeout, its output kept, nothing left running.
fn silent(mut p: Parallel, host: Host, idle: Option<Duration>, server: &str, log: impl FnOnce() -> String) {
    let m = marker();
    p.add_host("s", host).unwrap();
    let mut c = Command::new(format!("echo hello; echo oops >&2; sleep {m}; : {m}")).on_error(OnError::Ignore);
    if let Some(d) = idle {
        c = c.idle_timeout(d);
    }
    p.push("s", c).unwrap();
    p.push("s", Command::new("echo after")).unwrap();
    let t0 = Instant::now();
    let report = p.run();
    let took = t0.elapsed();
    assert!(report.success(), "{report}");
    let t = first(&report, "s");
    assert_eq!(t.status(), TaskStatus::Ignored, "{t:?}");
    let e = t.error().expect("an error");
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(e.to_string().contains("idle timeout"), "{e}");
    assert_eq!(t.stdout_str(), "hello\n");
    assert_eq!(t.stderr_str(), "oops\n");
    assert_eq!(report.label("s").unwrap().tasks()[1].stdout_str(), "after\n");
    assert!(took >= Duration::from_millis(900), "stopped too early: {took:?}");
    assert!(took < Duration::from_secs(8), "stopped too late: {took:?}");
    assert_gone(&m, server, log);
}

fn silent_command_is_stopped_by_its_idle_timeout(s: &Server) {
    silent(
        Parallel::new(),
        s.host(),
        Some(Duration::from_secs(1)),
        s.name(),
        || server_log(s),
    );
}

fn builder_idle_timeout_is_the_default(s: &Server) {
    let p = ParallelBuilder::default()
        .idle_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    silent(p, s.host(), None, s.name(), || server_log(s));
}

// ---- the local transport -----------------------------------------------------

#[test]
fn local_timed_out_pipeline_and_sighup_ignoring_command_leave_no_process() {
    let m = marker();
    let cmd = format!("echo started; sleep {m} | sh -c 'cat; : {m}'");
    stop_by_timeout(Host::local(), cmd, &m, "local", String::new);
    let m = marker();
    let cmd = format!("trap '' HUP; echo started; sleep {m}; : {m}");
    stop_by_timeout(Host::local(), cmd, &m, "local", String::new);
}

#[test]
fn local_chatty_command_outlives_its_idle_timeout() {
    chatty(Host::local());
}

#[test]
fn local_silent_command_is_stopped_by_its_idle_timeout() {
    silent(
        Parallel::new(),
        Host::local(),
        Some(Duration::from_secs(1)),
        "local",
        String::new,
    );
}

#[test]
fn local_builder_idle_timeout_is_the_default() {
    let p = ParallelBuilder::default()
        .idle_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    silent(p, Host::local(), None, "local", String::new);
}

// ---- OpenSSH honouring the signal request -------------------------------------

/// The throwaway account of the password tests in `ssh_openssh` (the
/// password is public: the account exists only on test machines).
const TEST_USER: &str = "sshpar-test";
const TEST_PASSWORD: &str = "sshpar-Throwaway-7";

/// For a user other than root sshd runs the session with privilege
/// separation and so honours the `signal` request (for root it refuses it,
/// and the killer channel alone stops the command): the command is stopped
/// either way, and sshd logs no refusal.
#[test]
fn openssh_user_login_gets_the_signal_request() {
    if !testbed::prereq::sshd() {
        return;
    }
    match testbed::OpenSshServer::ensure_user(TEST_USER, TEST_PASSWORD) {
        Ok(()) => {}
        Err(testbed::Error::Unavailable(why)) => {
            testbed::prereq::skip(format!("needs the {TEST_USER} account: {why}"));
            return;
        }
        Err(e) => panic!("cannot create the test user {TEST_USER}: {e}"),
    }
    let sshd = testbed::OpenSshServer::builder()
        .password_logins()
        .start()
        .expect("start sshd with PAM");
    let host = Host::new("127.0.0.1")
        .port(sshd.port)
        .user(TEST_USER)
        .password(TEST_PASSWORD)
        .agent(false)
        .host_key_check(ssh_parallel::HostKeyCheck::Off)
        .connect_timeout(Duration::from_secs(10));
    let m = marker();
    let cmd = format!("trap '' HUP; echo started; sleep {m} | sh -c 'cat; : {m}'");
    stop_by_timeout(host, cmd, &m, "openssh (user)", || sshd.log());
    assert!(
        !sshd.log().contains("session_signal_req"),
        "sshd refused the signal request:\n{}",
        sshd.log()
    );
}
