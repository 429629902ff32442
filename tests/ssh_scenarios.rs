//! Every scenario of the behaviour contract that touches connections
//! (SEMANTICS §7, and the connection-facing parts of §3 to §6), written once
//! against a *server under test* and run on both SSH servers of the test bed:
//! the embedded russh server (`<scenario>_embedded`) and a real OpenSSH sshd
//! (`<scenario>_openssh`; a failure when sshd cannot run here, or a loud,
//! counted skip with `TESTBED_ALLOW_SKIP=1`: see `testbed::prereq`).
//!
//! How things are observed, the same way on both servers:
//! * logins and TCP connections accepted: the embedded server's counters; for
//!   sshd, its log (`Accepted <method> for`, `Connection from`), less the
//!   readiness probes the test bed makes;
//! * connections the client holds open: /proc/net/tcp (client ends only);
//! * a connection lost under a running command: the command records its start
//!   in a file and a watcher cuts the server's connections when it appears
//!   (embedded: `drop_connections`; sshd: SIGKILL to its per-connection
//!   processes, the listener stays);
//! * connect failures: the embedded server refuses handshakes; sshd gets an
//!   empty authorized_keys file until it has logged the failed logins.
//!
//! Time is only asserted as a lower bound where a delay must be waited, or as
//! a generous no-hang upper bound.

mod common;

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{open_client_sockets, random_bytes, sha256, statuses, task, tasks, wait_until};
use ssh_parallel::{
    Command, Connect, ErrorKind, Goto, Here, Host, Join, OnError, Output, Parallel, Report, ScpGet, ScpPut, Stdin,
    Stop, Sub, TaskStatus,
};
use testbed::{ClientKey, EmbeddedServer, Fault as ServerFault, OpenSshServer};

use TaskStatus::{Cancelled, Failed, Ignored, Jumped, Skipped, Succeeded};

// ---- what every test of this binary shares ----------------------------------

struct Fixture {
    known_hosts: PathBuf,
    known_hosts_lock: Mutex<()>,
    /// Authorized on every sshd.
    key: ClientKey,
    /// Authorized nowhere.
    wrong_key: ClientKey,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // Lives as long as the test process (statics are not dropped).
        let home = tempfile::Builder::new()
            .prefix("ssh-scenarios-home")
            .tempdir()
            .unwrap()
            .keep();
        fs::create_dir_all(home.join(".ssh")).unwrap();
        // The library reads ~/.ssh/known_hosts; HOME is process-wide, so it is
        // set once, before any server or run starts.
        std::env::set_var("HOME", &home);
        Fixture {
            known_hosts: home.join(".ssh/known_hosts"),
            known_hosts_lock: Mutex::new(()),
            key: ClientKey::ed25519().unwrap(),
            wrong_key: ClientKey::ed25519().unwrap(),
        }
    })
}

/// Records a server's host key: every scenario checks host keys strictly.
fn trust(known_hosts_line: &str) {
    let f = fixture();
    let _guard = f.known_hosts_lock.lock().unwrap();
    common::append_known_host(&f.known_hosts, known_hosts_line);
}

// ---- the servers under test -------------------------------------------------

/// One SSH server the scenarios run against.
trait Server: Sync {
    fn port(&self) -> u16;
    /// A host that logs in (its host key is in known_hosts; strict checking).
    fn host(&self) -> Host;
    /// A host whose login the server refuses (wrong credentials).
    fn bad_auth_host(&self) -> Host;
    /// The method `bad_auth_host` tries, as the library names it.
    fn auth_method(&self) -> &'static str;
    /// Successful logins since the server started.
    fn logins(&self) -> usize;
    /// TCP connections accepted since the server started (failed ones too).
    fn connections(&self) -> usize;
    /// Cuts every open connection at once; new ones are still accepted.
    fn drop_connections(&self);
    /// The next `n` connections fail to log in (embedded: the handshake is
    /// refused; sshd: authentication fails); then logins work again.
    fn refuse_next(&self, n: usize) -> Refusal;
}

/// A running [`Server::refuse_next`]; dropping it ends the refusals.
struct Refusal {
    stop: Arc<AtomicBool>,
    over: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Refusal {
    /// Set once the server accepts logins again.
    fn over_flag(&self) -> Arc<AtomicBool> {
        self.over.clone()
    }
}

impl Drop for Refusal {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

const USER: &str = "alice";
const PASSWORD: &str = "wonderland";

struct Embedded {
    server: Arc<EmbeddedServer>,
}

impl Embedded {
    fn start() -> Embedded {
        fixture();
        let server = EmbeddedServer::builder()
            .password(USER, PASSWORD)
            .start()
            .expect("start the embedded server");
        trust(&server.known_hosts_line());
        Embedded {
            server: Arc::new(server),
        }
    }
}

impl Server for Embedded {
    fn port(&self) -> u16 {
        self.server.port()
    }

    fn host(&self) -> Host {
        Host::new("127.0.0.1")
            .port(self.port())
            .user(USER)
            .password(PASSWORD)
            .connect_timeout(Duration::from_secs(10))
    }

    fn bad_auth_host(&self) -> Host {
        self.host().password("not-the-password")
    }

    fn auth_method(&self) -> &'static str {
        "password"
    }

    fn logins(&self) -> usize {
        self.server.stats().authenticated as usize
    }

    fn connections(&self) -> usize {
        self.server.stats().connections as usize
    }

    fn drop_connections(&self) {
        self.server.drop_connections();
    }

    fn refuse_next(&self, n: usize) -> Refusal {
        let base = self.server.stats().connections as usize;
        self.server.set_faults(vec![ServerFault::RefuseHandshake]);
        let stop = Arc::new(AtomicBool::new(false));
        let over = Arc::new(AtomicBool::new(false));
        let (server, stop2, over2) = (self.server.clone(), stop.clone(), over.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                if server.stats().connections as usize >= base + n {
                    // The server counts a connection just before it reads the
                    // faults: give the n-th one time to read them. (The client's
                    // next attempt comes after the reconnect delay, >= 300 ms.)
                    std::thread::sleep(Duration::from_millis(50));
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            server.clear_faults();
            over2.store(true, Ordering::Relaxed);
        });
        Refusal {
            stop,
            over,
            thread: Some(thread),
        }
    }
}

struct OpenSsh {
    server: Mutex<OpenSshServer>,
    port: u16,
}

impl OpenSsh {
    fn start() -> Option<OpenSsh> {
        fixture();
        match OpenSshServer::builder().authorize(&fixture().key).start() {
            Ok(server) => {
                trust(&server.known_hosts_line);
                Some(OpenSsh {
                    port: server.port,
                    server: Mutex::new(server),
                })
            }
            Err(testbed::Error::Unavailable(why)) => {
                testbed::prereq::skip(format!("OpenSSH tier: {why}"));
                None
            }
            Err(e) => panic!("cannot start sshd: {e}"),
        }
    }

    fn sshd(&self) -> std::sync::MutexGuard<'_, OpenSshServer> {
        self.server.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Server for OpenSsh {
    fn port(&self) -> u16 {
        self.port
    }

    fn host(&self) -> Host {
        Host::new("127.0.0.1")
            .port(self.port)
            .user(testbed::current_user())
            .key_file(fixture().key.private_path())
            .connect_timeout(Duration::from_secs(10))
    }

    fn bad_auth_host(&self) -> Host {
        Host::new("127.0.0.1")
            .port(self.port)
            .user(testbed::current_user())
            .key_file(fixture().wrong_key.private_path())
            .connect_timeout(Duration::from_secs(10))
    }

    fn auth_method(&self) -> &'static str {
        "publickey"
    }

    fn logins(&self) -> usize {
        self.sshd().logins_logged()
    }

    fn connections(&self) -> usize {
        // Less the readiness probe `start` made.
        self.sshd().connections_logged() - 1
    }

    fn drop_connections(&self) {
        self.sshd().drop_connections();
    }

    fn refuse_next(&self, n: usize) -> Refusal {
        // sshd reads authorized_keys at every login: empty it, and put it back
        // once n logins have failed and their connections are closed.
        let (keys_path, log_path) = {
            let sshd = self.sshd();
            (sshd.authorized_keys.clone(), sshd.log_path.clone())
        };
        let closed_unauthenticated = move || {
            fs::read_to_string(&log_path)
                .unwrap_or_default()
                .lines()
                .filter(|l| {
                    (l.starts_with("Connection closed by authenticating user")
                        || l.starts_with("Disconnected from authenticating user"))
                        && l.ends_with("[preauth]")
                })
                .count()
        };
        let base = closed_unauthenticated();
        let keys = fs::read(&keys_path).unwrap();
        fs::write(&keys_path, "").unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let over = Arc::new(AtomicBool::new(false));
        let (stop2, over2) = (stop.clone(), over.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) && closed_unauthenticated() < base + n {
                std::thread::sleep(Duration::from_millis(2));
            }
            fs::write(&keys_path, keys).unwrap();
            over2.store(true, Ordering::Relaxed);
        });
        Refusal {
            stop,
            over,
            thread: Some(thread),
        }
    }
}

/// Generates `#[test] fn <embedded>` and `#[test] fn <openssh>` for each scenario.
/// Attributes written before a test's name apply to that test only.
macro_rules! on_both_servers {
    ($($scenario:ident => $(#[$e_attr:meta])* $embedded:ident, $(#[$o_attr:meta])* $openssh:ident;)*) => {$(
        #[test]
        $(#[$e_attr])*
        fn $embedded() {
            $scenario(&Embedded::start());
        }

        #[test]
        $(#[$o_attr])*
        fn $openssh() {
            if let Some(server) = OpenSsh::start() {
                $scenario(&server);
            }
        }
    )*};
}

on_both_servers! {
    one_connection_per_label => one_connection_per_label_embedded, one_connection_per_label_openssh;
    label_closes_its_connection_when_its_queue_is_empty
        => label_closes_its_connection_when_its_queue_is_empty_embedded,
           label_closes_its_connection_when_its_queue_is_empty_openssh;
    all_labels_connect_and_run_at_once => all_labels_connect_and_run_at_once_embedded, all_labels_connect_and_run_at_once_openssh;
    workers_limit_holds => workers_limit_holds_embedded, workers_limit_holds_openssh;
    local_tasks_take_no_worker_slot => local_tasks_take_no_worker_slot_embedded, local_tasks_take_no_worker_slot_openssh;
    worker_slots_go_to_labels_in_fifo_order
        => worker_slots_go_to_labels_in_fifo_order_embedded, worker_slots_go_to_labels_in_fifo_order_openssh;
    connections_limit_evicts_the_least_recently_used_idle_connection
        => connections_limit_evicts_the_least_recently_used_idle_connection_embedded,
           connections_limit_evicts_the_least_recently_used_idle_connection_openssh;
    reconnects_after_failed_connects_with_a_delay
        => reconnects_after_failed_connects_with_a_delay_embedded,
           reconnects_after_failed_connects_with_a_delay_openssh;
    failed_connects_exhaust_reconnections_then_the_policy_applies
        => failed_connects_exhaust_reconnections_then_the_policy_applies_embedded,
           failed_connects_exhaust_reconnections_then_the_policy_applies_openssh;
    lost_connection_reruns_the_task => lost_connection_reruns_the_task_embedded, lost_connection_reruns_the_task_openssh;
    lost_connection_with_reconnections_exhausted_under_each_policy
        => lost_connection_with_reconnections_exhausted_under_each_policy_embedded,
           lost_connection_with_reconnections_exhausted_under_each_policy_openssh;
    task_reconnections_override_the_host_and_global_ones
        => task_reconnections_override_the_host_and_global_ones_embedded,
           task_reconnections_override_the_host_and_global_ones_openssh;
    lost_connection_is_not_jumped_over_by_or_goto
        => lost_connection_is_not_jumped_over_by_or_goto_embedded,
           lost_connection_is_not_jumped_over_by_or_goto_openssh;
    idle_connection_lost_between_tasks_reconnects
        => idle_connection_lost_between_tasks_reconnects_embedded,
           idle_connection_lost_between_tasks_reconnects_openssh;
    unreachable_host_under_each_policy => unreachable_host_under_each_policy_embedded, unreachable_host_under_each_policy_openssh;
    auth_failure_under_each_policy => auth_failure_under_each_policy_embedded, auth_failure_under_each_policy_openssh;
    joins_over_ssh => joins_over_ssh_embedded, joins_over_ssh_openssh;
    goto_here_stop_and_or_goto_over_ssh => goto_here_stop_and_or_goto_over_ssh_embedded, goto_here_stop_and_or_goto_over_ssh_openssh;
    timeout_closes_the_channel_and_a_pty_command_gets_sighup
        => timeout_closes_the_channel_and_a_pty_command_gets_sighup_embedded,
           timeout_closes_the_channel_and_a_pty_command_gets_sighup_openssh;
    timeout_without_a_pty_ends_the_remote_command
        => timeout_without_a_pty_ends_the_remote_command_embedded,
           timeout_without_a_pty_ends_the_remote_command_openssh;
    capture_limits_and_truncation => capture_limits_and_truncation_embedded, capture_limits_and_truncation_openssh;
    output_to_files_and_line_callbacks_per_label
        => output_to_files_and_line_callbacks_per_label_embedded,
           output_to_files_and_line_callbacks_per_label_openssh;
    stdin_env_exit_codes_and_signals => stdin_env_exit_codes_and_signals_embedded, stdin_env_exit_codes_and_signals_openssh;
    scp_put_and_get_verified_by_sha256
        => scp_put_and_get_verified_by_sha256_embedded, scp_put_and_get_verified_by_sha256_openssh;
    scp_interrupted_by_a_lost_connection_is_rerun
        => scp_interrupted_by_a_lost_connection_is_rerun_embedded,
           scp_interrupted_by_a_lost_connection_is_rerun_openssh;
}

// ---- helpers ----------------------------------------------------------------

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("ssh-scenario").tempdir().unwrap()
}

fn line_count(path: &Path) -> usize {
    fs::read_to_string(path).map(|t| t.lines().count()).unwrap_or(0)
}

/// A shell loop waiting (at most ~20 s) until `path` exists; exits 9 if it never does.
fn wait_for_file(path: &Path) -> String {
    format!(
        "i=0; while [ ! -e {p} ]; do i=$((i+1)); if [ $i -gt 400 ]; then echo gave-up >&2; exit 9; fi; sleep 0.05; done",
        p = path.display()
    )
}

/// A command that records each of its starts in `starts`; for the first `drops`
/// starts it waits for its connection to be cut (at most 30 s), afterwards it
/// prints `done-N` (N: which start this is).
fn droppable(starts: &Path, drops: usize) -> String {
    let f = starts.display();
    format!("echo x >> {f}; n=$(grep -c x {f}); if [ $n -le {drops} ]; then sleep 30; fi; echo done-$n")
}

/// Runs `p` while cutting `server`'s connections each time `starts` gains a
/// line, `drops` times at most. Returns the report, the run's duration and how
/// many cuts were made.
fn run_cutting(server: &dyn Server, p: &mut Parallel, starts: &Path, drops: usize) -> (Report, Duration, usize) {
    run_cutting_when(server, p, drops, || line_count(starts))
}

/// Like [`run_cutting`], with `started()` counting the starts seen so far.
fn run_cutting_when(
    server: &dyn Server,
    p: &mut Parallel,
    drops: usize,
    started: impl Fn() -> usize + Sync,
) -> (Report, Duration, usize) {
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let cutter = scope.spawn(|| {
            let mut cuts = 0;
            while !stop.load(Ordering::Relaxed) {
                if cuts < drops && started() > cuts {
                    server.drop_connections();
                    cuts += 1;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            cuts
        });
        let t0 = Instant::now();
        let report = p.run();
        let took = t0.elapsed();
        stop.store(true, Ordering::Relaxed);
        (report, took, cutter.join().unwrap())
    })
}

/// Runs `p` while sampling how many connections the client holds to `port`;
/// returns the report and the highest count seen.
fn run_sampling(p: &mut Parallel, port: u16) -> (Report, usize) {
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut max = 0;
            while !stop.load(Ordering::Relaxed) {
                let n = open_client_sockets(port);
                max = max.max(n);
                std::thread::sleep(Duration::from_millis(1));
            }
            max
        });
        let report = p.run();
        stop.store(true, Ordering::Relaxed);
        (report, sampler.join().unwrap())
    })
}

fn assert_statuses(report: &Report, label: &str, want: &[TaskStatus]) {
    assert_eq!(
        statuses(report, label),
        want,
        "{label}: {:#?}\n{report}",
        tasks(report, label)
    );
}

fn label_error_kind(report: &Report, label: &str) -> Option<ErrorKind> {
    report.label(label).unwrap().error().map(|e| e.kind())
}

fn task_error_kind(report: &Report, label: &str, i: usize) -> Option<ErrorKind> {
    task(report, label, i).error().map(|e| e.kind())
}

/// `true` once process `pid` has exited (gone, or a zombie).
fn process_gone(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

fn read_pid(path: &Path) -> u32 {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

// ---- §7 connection reuse, closing, concurrency, limits ------------------------

/// A label keeps one connection for all its tasks (commands, scp, connect).
fn one_connection_per_label(s: &dyn Server) {
    let dir = tempdir();
    let d = dir.path().display().to_string();
    fs::write(dir.path().join("payload"), "payload\n").unwrap();
    let labels = ["r1", "r2", "r3", "r4"];
    let mut p = Parallel::new();
    for l in labels {
        p.add_host(l, s.host()).unwrap();
    }
    p.all(Connect::new()).unwrap();
    for i in 0..5 {
        p.all(Command::new(format!("echo %LABEL%-{i}"))).unwrap();
    }
    p.all(ScpPut::new(format!("{d}/payload"), format!("{d}/%LABEL%.put")))
        .unwrap();
    p.all(Command::new(format!("cat {d}/%LABEL%.put"))).unwrap();
    let (c0, l0) = (s.connections(), s.logins());
    let report = p.run();
    assert!(report.success(), "{report}");
    for l in labels {
        let t = tasks(&report, l);
        assert_eq!(t.len(), 8, "{l}");
        for (i, r) in t.iter().enumerate() {
            assert_eq!(
                (r.status(), r.attempts(), r.reruns()),
                (Succeeded, 1, 0),
                "{l} task {i}: {r:?}"
            );
        }
        for i in 0..5 {
            assert_eq!(t[1 + i].stdout_str(), format!("{l}-{i}\n"));
            assert_eq!(t[1 + i].exit_code(), Some(0));
        }
        assert_eq!(t[7].stdout_str(), "payload\n");
    }
    assert_eq!(s.logins() - l0, 4, "one login per label");
    assert_eq!(s.connections() - c0, 4, "one connection per label");
    // The run closes every connection before it returns.
    assert!(
        wait_until(Duration::from_secs(5), || open_client_sockets(s.port()) == 0),
        "{} connections still open",
        open_client_sockets(s.port())
    );
}

/// A label whose queue is empty closes its connection while others still run.
fn label_closes_its_connection_when_its_queue_is_empty(s: &dyn Server) {
    let dir = tempdir();
    let (started, go) = (dir.path().join("b-started"), dir.path().join("go"));
    let mut p = Parallel::new();
    p.add_host("a", s.host()).unwrap();
    p.add_host("b", s.host()).unwrap();
    p.push("a", Command::new("echo a")).unwrap();
    p.push("b", Join::new("a")).unwrap();
    p.push(
        "b",
        Command::new(format!("touch {}; {}; echo b", started.display(), wait_for_file(&go))),
    )
    .unwrap();
    let only_b_open = AtomicBool::new(false);
    let report = std::thread::scope(|scope| {
        scope.spawn(|| {
            // b runs (and waits for `go`) after a's queue is empty: a's
            // connection must go away while b's stays.
            if wait_until(Duration::from_secs(30), || started.exists()) {
                let one = wait_until(Duration::from_secs(10), || open_client_sockets(s.port()) == 1);
                only_b_open.store(one, Ordering::Relaxed);
            }
            fs::write(&go, "").unwrap();
        });
        p.run()
    });
    assert!(report.success(), "{report}");
    assert!(
        only_b_open.load(Ordering::Relaxed),
        "a's connection stayed open while b ran"
    );
    assert_eq!(task(&report, "b", 1).stdout_str(), "b\n");
    assert_eq!(s.logins(), 2);
}

/// Without limits every label connects and runs at once: each command waits
/// until all six have started.
fn all_labels_connect_and_run_at_once(s: &dyn Server) {
    let dir = tempdir();
    let f = dir.path().join("started");
    let n = 6;
    let mut p = Parallel::new();
    for i in 0..n {
        p.add_host(format!("c{i}"), s.host()).unwrap();
    }
    p.all(Command::new(format!(
        "echo x >> {f}; i=0; while [ $(grep -c x {f}) -lt {n} ]; do i=$((i+1)); if [ $i -gt 400 ]; then exit 9; fi; sleep 0.05; done; echo all-{n}",
        f = f.display()
    )))
    .unwrap();
    let report = p.run();
    assert!(report.success(), "not all at once: {report}");
    for i in 0..n {
        assert_eq!(task(&report, &format!("c{i}"), 0).stdout_str(), format!("all-{n}\n"));
    }
    assert_eq!(s.logins(), n);
}

/// `workers(2)`: never more than two labels running remote tasks, and two do
/// run together (the first two wait for each other).
fn workers_limit_holds(s: &dyn Server) {
    let dir = tempdir();
    let log = dir.path().join("log");
    let mut p = Parallel::builder().workers(2).build().unwrap();
    for i in 0..6 {
        p.add_host(format!("w{i}"), s.host()).unwrap();
    }
    p.all(Command::new(format!(
        "echo + >> {f}; i=0; while [ $(grep -c + {f}) -lt 2 ]; do i=$((i+1)); if [ $i -gt 400 ]; then exit 9; fi; sleep 0.05; done; sleep 0.2; echo - >> {f}",
        f = log.display()
    )))
    .unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
    let (mut running, mut max) = (0i32, 0i32);
    for line in fs::read_to_string(&log).unwrap().lines() {
        running += if line == "+" { 1 } else { -1 };
        max = max.max(running);
    }
    assert_eq!(max, 2, "at most (and here exactly) two remote tasks at once");
    assert_eq!(s.logins(), 6);
}

/// Local tasks never take a worker slot: with `workers(1)` held by a remote
/// command waiting for a file, a sub on another label still runs and writes it.
fn local_tasks_take_no_worker_slot(s: &dyn Server) {
    let dir = tempdir();
    let flag = dir.path().join("flag");
    let mut p = Parallel::builder().workers(1).build().unwrap();
    p.add_host("remote", s.host()).unwrap();
    p.add_host("subs", s.host()).unwrap();
    p.push(
        "remote",
        Command::new(format!("{}; echo saw-flag", wait_for_file(&flag))),
    )
    .unwrap();
    let f2 = flag.clone();
    p.push(
        "subs",
        Sub::new(move |_| {
            fs::write(&f2, "")?;
            Ok(())
        }),
    )
    .unwrap();
    p.push("subs", Here::new("done")).unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
    assert_eq!(task(&report, "remote", 0).stdout_str(), "saw-flag\n");
    assert_statuses(&report, "subs", &[Succeeded, Succeeded]);
    assert_eq!(s.logins(), 1, "the sub-only label never connects");
}

/// `workers(1)`: slots go to labels in the order they became ready, and a
/// label coming back for its next task queues behind those already waiting.
fn worker_slots_go_to_labels_in_fifo_order(s: &dyn Server) {
    let dir = tempdir();
    let log = dir.path().join("log");
    let labels = ["l0", "l1", "l2", "l3"];
    let mut p = Parallel::builder().workers(1).build().unwrap();
    for l in labels {
        p.add_host(l, s.host()).unwrap();
    }
    p.all(Command::new(format!("echo %LABEL%-a >> {}", log.display())))
        .unwrap();
    p.all(Command::new(format!("echo %LABEL%-b >> {}", log.display())))
        .unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
    let order = fs::read_to_string(&log).unwrap();
    let want: Vec<String> = ["a", "b"]
        .iter()
        .flat_map(|t| labels.map(|l| format!("{l}-{t}")))
        .collect();
    assert_eq!(order.lines().collect::<Vec<_>>(), want, "{order}");
    assert_eq!(s.logins(), 4, "labels keep their connection while waiting for a slot");
}

/// `connections(2)`: x and y hold idle connections while waiting on a join;
/// z needs one, so the least recently used (x's) is closed; x reconnects for
/// its last task, y never does. Never more than two connections at once.
fn connections_limit_evicts_the_least_recently_used_idle_connection(s: &dyn Server) {
    let mut p = Parallel::builder().connections(2).build().unwrap();
    for l in ["x", "y", "z"] {
        p.add_host(l, s.host()).unwrap();
    }
    p.push("x", Command::new("echo x1")).unwrap();
    p.push("y", Join::new("x")).unwrap(); // y starts after x1: x goes idle first
    p.push("y", Command::new("echo y1")).unwrap();
    p.push("z", Join::new("y")).unwrap(); // z starts after y1
    p.push("z", Command::new("echo z1")).unwrap();
    p.push("x", Join::new("z")).unwrap(); // x idle (since x1), waiting for z
    p.push("x", Command::new("echo x2")).unwrap();
    p.push("y", Join::new("z")).unwrap(); // y idle (since y1), waiting for z
    let (report, max_open) = run_sampling(&mut p, s.port());
    assert!(report.success(), "{report}");
    assert_statuses(&report, "x", &[Succeeded, Succeeded, Succeeded]);
    assert_statuses(&report, "y", &[Succeeded, Succeeded, Succeeded]);
    assert_statuses(&report, "z", &[Succeeded, Succeeded]);
    assert_eq!(task(&report, "x", 2).stdout_str(), "x2\n");
    assert_eq!(task(&report, "z", 1).stdout_str(), "z1\n");
    assert!(max_open <= 2, "saw {max_open} connections open at once");
    // x (LRU) was evicted and logged in again; evicting y instead would make 3.
    assert_eq!(s.logins(), 4, "x, y, z, then x again");
}

// ---- §7 reconnections ---------------------------------------------------------

/// Connect failures consume reconnections (with the delay between attempts);
/// the task then runs once, and is not marked as re-run.
fn reconnects_after_failed_connects_with_a_delay(s: &dyn Server) {
    let delay = Duration::from_millis(500);
    let mut p = Parallel::builder().reconnect_delay(delay).build().unwrap();
    // The host's reconnections override the global default (0).
    p.add_host("r", s.host().reconnections(2)).unwrap();
    p.push("r", Command::new("echo up")).unwrap();
    p.push("r", Command::new("echo again")).unwrap();
    let (c0, l0) = (s.connections(), s.logins());
    let refusal = s.refuse_next(2);
    let t0 = Instant::now();
    let report = p.run();
    let took = t0.elapsed();
    drop(refusal);
    assert!(report.success(), "{report}");
    let t = task(&report, "r", 0);
    assert_eq!((t.status(), t.attempts(), t.reruns()), (Succeeded, 1, 0), "{t:?}");
    assert_eq!(t.stdout_str(), "up\n");
    assert_eq!(task(&report, "r", 1).stdout_str(), "again\n");
    assert_eq!(s.connections() - c0, 3, "two refused, then one that stays");
    assert_eq!(s.logins() - l0, 1);
    assert!(took >= delay * 2, "two reconnect delays were waited: {took:?}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

/// When every connection attempt fails, the task's policy applies (here Done:
/// its join is released, the waiter runs).
fn failed_connects_exhaust_reconnections_then_the_policy_applies(s: &dyn Server) {
    let delay = Duration::from_millis(300);
    let mut p = Parallel::builder()
        .reconnections(1)
        .reconnect_delay(delay)
        .build()
        .unwrap();
    p.add_host("r", s.host()).unwrap();
    p.add_host("w", s.host()).unwrap();
    p.push("r", Command::new("echo never").on_error(OnError::Done)).unwrap();
    p.push("r", Command::new("echo never either")).unwrap();
    p.push("w", Join::new("r")).unwrap();
    let (c0, l0) = (s.connections(), s.logins());
    let refusal = s.refuse_next(2);
    let over = refusal.over_flag();
    // w connects only once the server accepts logins again.
    p.push(
        "w",
        Sub::new(move |_| {
            if wait_until(Duration::from_secs(10), || over.load(Ordering::Relaxed)) {
                Ok(())
            } else {
                Err("the refusals never ended".into())
            }
        }),
    )
    .unwrap();
    p.push("w", Command::new("echo w")).unwrap();
    let t0 = Instant::now();
    let report = p.run();
    let took = t0.elapsed();
    drop(refusal);
    assert_statuses(&report, "r", &[Failed, Cancelled]);
    let t = task(&report, "r", 0);
    assert_eq!((t.attempts(), t.reruns()), (1, 0), "{t:?}");
    let e = report.label("r").unwrap().error().expect("r failed");
    assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
    assert_eq!(e.label(), Some("r"));
    assert!(e.to_string().starts_with("r: task #0 (command `echo never`): "), "{e}");
    assert_statuses(&report, "w", &[Succeeded, Succeeded, Succeeded]);
    assert_eq!(task(&report, "w", 2).stdout_str(), "w\n");
    assert!(report.label("w").unwrap().success());
    assert_eq!(s.connections() - c0, 3, "r: 1 + 1 reconnection, then w");
    assert_eq!(s.logins() - l0, 1);
    assert!(took >= delay, "{took:?}");
}

/// A command whose connection dies under it is re-run after reconnecting
/// while reconnections remain, and marked as re-run; the label then goes on
/// on the new connection.
fn lost_connection_reruns_the_task(s: &dyn Server) {
    let dir = tempdir();
    let starts = dir.path().join("starts");
    let delay = Duration::from_millis(300);
    let mut p = Parallel::builder().reconnect_delay(delay).build().unwrap();
    p.add_host("r", s.host()).unwrap();
    p.push("r", Command::new(droppable(&starts, 2)).reconnections(2))
        .unwrap();
    p.push("r", Command::new("echo next")).unwrap();
    let (report, took, cuts) = run_cutting(s, &mut p, &starts, 2);
    assert_eq!(cuts, 2);
    assert!(report.success(), "{report}");
    let t = task(&report, "r", 0);
    assert_eq!((t.status(), t.attempts(), t.reruns()), (Succeeded, 1, 2), "{t:?}");
    assert_eq!(t.stdout_str(), "done-3\n", "the third run completed");
    assert!(format!("{t:?}").contains("reruns: 2"), "{t:?}");
    assert_eq!(task(&report, "r", 1).stdout_str(), "next\n");
    assert_eq!(line_count(&starts), 3);
    assert_eq!(s.logins(), 3, "the first login and two reconnections");
    assert!(took >= delay * 2, "{took:?}");
    assert!(took < Duration::from_secs(25), "{took:?}");
}

/// One reconnection, two losses: the policy decides (Ignore, Done, Abort,
/// AbortAll, a bounded retry), with the waiter on a join seeing the outcome.
fn lost_connection_with_reconnections_exhausted_under_each_policy(s: &dyn Server) {
    let cases: [(&str, OnError); 5] = [
        ("ignore", OnError::Ignore),
        ("done", OnError::Done),
        ("abort", OnError::Abort),
        ("abort-all", OnError::AbortAll),
        ("retry", OnError::retry(2).into()),
    ];
    for (name, policy) in cases {
        let dir = tempdir();
        let starts = dir.path().join("starts");
        let mut p = Parallel::builder()
            .reconnections(1)
            .reconnect_delay(Duration::from_millis(100))
            .build()
            .unwrap();
        p.add_host("v", s.host()).unwrap();
        p.add_host("w", s.host()).unwrap();
        p.push("v", Command::new(droppable(&starts, 2)).on_error(policy))
            .unwrap();
        p.push("v", Command::new("echo after")).unwrap();
        p.push("w", Join::new("v")).unwrap();
        p.push("w", Command::new("echo w")).unwrap();
        let (report, _, cuts) = run_cutting(s, &mut p, &starts, 2);
        assert_eq!(cuts, 2, "{name}");
        let v0 = task(&report, "v", 0);
        let lost = |r: &Report| {
            let e = task(r, "v", 0).error().unwrap_or_else(|| panic!("{name}: {r}"));
            assert_eq!(e.kind(), ErrorKind::Connect, "{name}: {e}");
            assert!(e.to_string().contains("connection lost"), "{name}: {e}");
        };
        match name {
            "ignore" => {
                assert_statuses(&report, "v", &[Ignored, Succeeded]);
                lost(&report);
                assert_eq!((v0.attempts(), v0.reruns()), (1, 1), "{name}: {v0:?}");
                assert_eq!(task(&report, "v", 1).stdout_str(), "after\n");
                assert_statuses(&report, "w", &[Succeeded, Succeeded]);
                assert!(report.success(), "{name}: {report}");
            }
            "done" | "abort" | "abort-all" => {
                assert_statuses(&report, "v", &[Failed, Cancelled]);
                lost(&report);
                assert_eq!((v0.attempts(), v0.reruns()), (1, 1), "{name}: {v0:?}");
                assert_eq!(label_error_kind(&report, "v"), Some(ErrorKind::Connect));
                match name {
                    "done" => {
                        assert_statuses(&report, "w", &[Succeeded, Succeeded]);
                        assert_eq!(task(&report, "w", 1).stdout_str(), "w\n");
                    }
                    "abort" => {
                        assert_statuses(&report, "w", &[Failed, Cancelled]);
                        assert_eq!(label_error_kind(&report, "w"), Some(ErrorKind::JoinFailed));
                    }
                    _ => {
                        assert_statuses(&report, "w", &[Cancelled, Cancelled]);
                        assert_eq!(label_error_kind(&report, "w"), Some(ErrorKind::Aborted));
                    }
                }
            }
            _ => {
                // Retry: a fresh reconnection budget; the third run completes.
                assert_statuses(&report, "v", &[Succeeded, Succeeded]);
                assert_eq!((v0.attempts(), v0.reruns()), (2, 1), "{name}: {v0:?}");
                assert_eq!(v0.stdout_str(), "done-3\n");
                assert!(report.success(), "{name}: {report}");
            }
        }
        assert_eq!(line_count(&starts), if name == "retry" { 3 } else { 2 }, "{name}");
    }
}

/// The task's reconnections win over the host's, which win over the global
/// ones: a task with none fails at its first lost connection.
fn task_reconnections_override_the_host_and_global_ones(s: &dyn Server) {
    let dir = tempdir();
    let starts = dir.path().join("starts");
    let mut p = Parallel::builder().reconnections(3).build().unwrap();
    p.add_host("t", s.host().reconnections(2)).unwrap();
    p.push("t", Command::new(droppable(&starts, 1)).reconnections(0))
        .unwrap();
    let (report, _, cuts) = run_cutting(s, &mut p, &starts, 1);
    assert_eq!(cuts, 1);
    assert_statuses(&report, "t", &[Failed]);
    let t = task(&report, "t", 0);
    assert_eq!((t.attempts(), t.reruns()), (1, 0), "{t:?}");
    assert_eq!(label_error_kind(&report, "t"), Some(ErrorKind::Connect));
    assert_eq!(line_count(&starts), 1, "not re-run");

    // The host's 2 apply when the task sets none (the global 3 do not).
    let dir = tempdir();
    let starts = dir.path().join("starts");
    let mut p = Parallel::builder().reconnections(3).build().unwrap();
    p.add_host("h", s.host().reconnections(2)).unwrap();
    p.push("h", Command::new(droppable(&starts, 3)).on_error(OnError::Ignore))
        .unwrap();
    let (report, _, cuts) = run_cutting(s, &mut p, &starts, 3);
    assert_eq!(cuts, 3);
    assert_statuses(&report, "h", &[Ignored]);
    let t = task(&report, "h", 0);
    assert_eq!((t.attempts(), t.reruns()), (1, 2), "{t:?}");
    assert_eq!(task_error_kind(&report, "h", 0), Some(ErrorKind::Connect));
    assert_eq!(line_count(&starts), 3);
}

/// `or_goto` jumps over non-zero exits only: a lost connection goes to the
/// policy (default Abort) instead.
fn lost_connection_is_not_jumped_over_by_or_goto(s: &dyn Server) {
    let dir = tempdir();
    let starts = dir.path().join("starts");
    let mut p = Parallel::new();
    p.add_host("g", s.host()).unwrap();
    p.push("g", Command::new(droppable(&starts, 1)).or_goto("skip"))
        .unwrap();
    p.push("g", Command::new("echo skipped")).unwrap();
    p.push("g", Here::new("skip")).unwrap();
    p.push("g", Command::new("echo landed")).unwrap();
    let (report, _, cuts) = run_cutting(s, &mut p, &starts, 1);
    assert_eq!(cuts, 1);
    assert_statuses(&report, "g", &[Failed, Cancelled, Cancelled, Cancelled]);
    assert_eq!(task_error_kind(&report, "g", 0), Some(ErrorKind::Connect));
    assert_eq!(label_error_kind(&report, "g"), Some(ErrorKind::Connect));
    assert_eq!(task(&report, "g", 0).exit_code(), None);
}

/// An idle connection that dies between tasks is noticed; the next task opens
/// a new one without using a reconnection (there are none here).
fn idle_connection_lost_between_tasks_reconnects(s: &dyn Server) {
    let dir = tempdir();
    let (ran, go) = (dir.path().join("a1"), dir.path().join("go"));
    let mut p = Parallel::new();
    p.add_host("a", s.host()).unwrap();
    p.add_host("b", Host::local()).unwrap();
    p.push("b", Command::new(wait_for_file(&go))).unwrap();
    p.push("a", Command::new(format!("echo a1; touch {}", ran.display())))
        .unwrap();
    p.push("a", Join::new("b")).unwrap();
    p.push("a", Command::new("echo a2")).unwrap();
    let noticed = AtomicBool::new(false);
    let report = std::thread::scope(|scope| {
        scope.spawn(|| {
            if wait_until(Duration::from_secs(30), || {
                ran.exists() && open_client_sockets(s.port()) == 1
            }) {
                s.drop_connections();
                // The client closes its end once it notices.
                let closed = wait_until(Duration::from_secs(10), || open_client_sockets(s.port()) == 0);
                noticed.store(closed, Ordering::Relaxed);
            }
            fs::write(&go, "").unwrap();
        });
        p.run()
    });
    assert!(
        noticed.load(Ordering::Relaxed),
        "the lost idle connection was not closed"
    );
    assert!(report.success(), "{report}");
    assert_statuses(&report, "a", &[Succeeded, Succeeded, Succeeded]);
    let t = task(&report, "a", 2);
    assert_eq!((t.stdout_str().as_str(), t.attempts(), t.reruns()), ("a2\n", 1, 0));
    assert_eq!(s.logins(), 2);
}

// ---- §6 connect errors under each policy --------------------------------------

fn unreachable_host_under_each_policy(s: &dyn Server) {
    let port = free_port();
    let bad = move || {
        Host::new("127.0.0.1")
            .port(port)
            .connect_timeout(Duration::from_secs(5))
    };
    connect_error_under_each_policy(s, &bad, &port.to_string(), false);
}

fn auth_failure_under_each_policy(s: &dyn Server) {
    connect_error_under_each_policy(s, &|| s.bad_auth_host(), "authentication failed", true);
}

/// Label `bad` cannot connect (`bad_host`; `message` is in its error;
/// `counted`: the server sees its attempts). Its first task runs under each
/// policy; `w` waits on a join for it. Checks statuses, errors, attempts, and
/// (for auth failures) how many connections the server saw.
fn connect_error_under_each_policy(s: &dyn Server, bad_host: &dyn Fn() -> Host, message: &str, counted: bool) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let callback = OnError::callback(move |ctx| {
        seen2
            .lock()
            .unwrap()
            .push((ctx.label().to_owned(), ctx.error().kind(), ctx.attempt()));
        OnError::Done
    });
    struct Case {
        name: &'static str,
        policy: OnError,
        reconnections: u32,
        /// bad's statuses, bad's attempts, bad's label error, w's statuses, w's label error
        bad: [TaskStatus; 2],
        attempts: u32,
        bad_error: Option<ErrorKind>,
        w: [TaskStatus; 2],
        w_error: Option<ErrorKind>,
        /// Connections bad makes.
        tries: usize,
    }
    let ok_w = [Succeeded, Succeeded];
    let cases = vec![
        Case {
            name: "ignore",
            policy: OnError::Ignore,
            reconnections: 0,
            bad: [Ignored, Succeeded],
            attempts: 1,
            bad_error: None,
            w: ok_w,
            w_error: None,
            tries: 1,
        },
        Case {
            name: "done",
            policy: OnError::Done,
            reconnections: 0,
            bad: [Failed, Cancelled],
            attempts: 1,
            bad_error: Some(ErrorKind::Connect),
            w: ok_w,
            w_error: None,
            tries: 1,
        },
        Case {
            name: "abort",
            policy: OnError::Abort,
            reconnections: 0,
            bad: [Failed, Cancelled],
            attempts: 1,
            bad_error: Some(ErrorKind::Connect),
            w: [Failed, Cancelled],
            w_error: Some(ErrorKind::JoinFailed),
            tries: 1,
        },
        Case {
            name: "abort-all",
            policy: OnError::AbortAll,
            reconnections: 0,
            bad: [Failed, Cancelled],
            attempts: 1,
            bad_error: Some(ErrorKind::Connect),
            w: [Cancelled, Cancelled],
            w_error: Some(ErrorKind::Aborted),
            tries: 1,
        },
        Case {
            name: "retry(3)",
            policy: OnError::retry(3).into(),
            reconnections: 0,
            bad: [Failed, Cancelled],
            attempts: 3,
            bad_error: Some(ErrorKind::Connect),
            w: [Failed, Cancelled],
            w_error: Some(ErrorKind::JoinFailed),
            tries: 3,
        },
        Case {
            name: "retry(2).then(ignore)",
            policy: OnError::retry(2).then(OnError::Ignore).into(),
            reconnections: 0,
            bad: [Ignored, Succeeded],
            attempts: 2,
            bad_error: None,
            w: ok_w,
            w_error: None,
            tries: 2,
        },
        Case {
            name: "callback",
            policy: callback,
            reconnections: 0,
            bad: [Failed, Cancelled],
            attempts: 1,
            bad_error: Some(ErrorKind::Connect),
            w: ok_w,
            w_error: None,
            tries: 1,
        },
        Case {
            name: "reconnections(2) + ignore",
            policy: OnError::Ignore,
            reconnections: 2,
            bad: [Ignored, Succeeded],
            attempts: 1,
            bad_error: None,
            w: ok_w,
            w_error: None,
            tries: 3,
        },
    ];
    for case in cases {
        let name = case.name;
        let mut p = Parallel::new();
        p.add_host("bad", bad_host().reconnections(case.reconnections)).unwrap();
        p.add_host("w", s.host()).unwrap();
        p.push("bad", Command::new("echo unreachable").on_error(case.policy))
            .unwrap();
        p.push("bad", Here::new("after")).unwrap();
        p.push("w", Join::new("bad")).unwrap();
        p.push("w", Command::new("echo w")).unwrap();
        let c0 = s.connections();
        let t0 = Instant::now();
        let report = p.run();
        assert!(t0.elapsed() < Duration::from_secs(30), "{name}: {:?}", t0.elapsed());
        assert_statuses(&report, "bad", &case.bad);
        assert_statuses(&report, "w", &case.w);
        let t = task(&report, "bad", 0);
        assert_eq!((t.attempts(), t.reruns()), (case.attempts, 0), "{name}: {t:?}");
        let e = t.error().unwrap_or_else(|| panic!("{name}: no error: {report}"));
        assert_eq!(e.kind(), ErrorKind::Connect, "{name}: {e}");
        assert_eq!(e.label(), Some("bad"), "{name}");
        assert_eq!(e.task(), Some("task #0 (command `echo unreachable`)"), "{name}");
        let msg = e.to_string();
        assert!(msg.contains(message), "{name}: {msg}");
        if counted {
            assert!(msg.contains(s.auth_method()), "{name}: names the method tried: {msg}");
        }
        assert_eq!(label_error_kind(&report, "bad"), case.bad_error, "{name}: {report}");
        assert_eq!(label_error_kind(&report, "w"), case.w_error, "{name}: {report}");
        assert_eq!(p.get_error("bad").unwrap().map(|e| e.kind()), case.bad_error, "{name}");
        if case.w[1] == Succeeded {
            assert_eq!(task(&report, "w", 1).stdout_str(), "w\n", "{name}");
        }
        let w_connects = usize::from(case.w[1] == Succeeded);
        let expected = if counted { case.tries } else { 0 } + w_connects;
        assert_eq!(s.connections() - c0, expected, "{name}: connections the server saw");
    }
    assert_eq!(
        *seen.lock().unwrap(),
        vec![("bad".to_owned(), ErrorKind::Connect, 1)],
        "the callback saw the label, the error and the attempt"
    );
}

// ---- §4 and §5 over SSH -------------------------------------------------------

fn joins_over_ssh(s: &dyn Server) {
    let dir = tempdir();
    let log = dir.path().join("log");
    let lg = log.display();
    let mut p = Parallel::new();
    for l in ["p1", "p2", "q", "a", "b", "c", "d", "e", "f"] {
        p.add_host(l, s.host()).unwrap();
    }
    // A pipeline: q runs after both p's.
    p.push("p*", Command::new(format!("sleep 0.2; echo %LABEL% >> {lg}")))
        .unwrap();
    p.push("q", Join::new("p*")).unwrap();
    p.push("q", Command::new(format!("echo q >> {lg}; cat {lg}"))).unwrap();
    // A failure cascades through Abort, stops at Done, is passed by Ignore.
    p.push("a", Command::new("echo a; exit 3")).unwrap();
    p.push("b", Join::new("a")).unwrap();
    p.push("b", Command::new("echo b")).unwrap();
    p.push("c", Join::new("b")).unwrap();
    p.push("c", Command::new("echo c")).unwrap();
    p.push("d", Join::new("a").on_error(OnError::Ignore)).unwrap();
    p.push("d", Command::new("echo d")).unwrap();
    p.push("e", Join::new("a").on_error(OnError::Done)).unwrap();
    p.push("e", Command::new("echo e")).unwrap();
    p.push("f", Join::new("e")).unwrap();
    p.push("f", Command::new("echo f")).unwrap();
    let report = p.run();

    assert_statuses(&report, "q", &[Succeeded, Succeeded]);
    let out = task(&report, "q", 1).stdout_str();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[2], "q", "q ran after both p's: {out}");

    assert_statuses(&report, "a", &[Failed]);
    let e = report.label("a").unwrap().error().unwrap();
    assert_eq!((e.kind(), e.exit_code()), (ErrorKind::Command, Some(3)), "{e}");
    assert_eq!(task(&report, "a", 0).stdout_str(), "a\n");

    for (l, by) in [("b", "a"), ("c", "b")] {
        assert_statuses(&report, l, &[Failed, Cancelled]);
        let e = report.label(l).unwrap().error().unwrap();
        assert_eq!(e.kind(), ErrorKind::JoinFailed, "{e}");
        assert!(e.to_string().contains(&format!("label {by} was aborted")), "{e}");
    }
    assert_statuses(&report, "d", &[Ignored, Succeeded]);
    assert_eq!(task_error_kind(&report, "d", 0), Some(ErrorKind::JoinFailed));
    assert_eq!(task(&report, "d", 1).stdout_str(), "d\n");
    assert!(report.label("d").unwrap().success());
    assert_statuses(&report, "e", &[Failed, Cancelled]);
    assert_eq!(label_error_kind(&report, "e"), Some(ErrorKind::JoinFailed));
    assert_statuses(&report, "f", &[Succeeded, Succeeded]);
    assert_eq!(task(&report, "f", 1).stdout_str(), "f\n");
    // Labels that never run a remote task never connect.
    assert_eq!(s.logins(), 6, "p1, p2, q, a, d, f");
}

fn goto_here_stop_and_or_goto_over_ssh(s: &dyn Server) {
    let mut p = Parallel::new();
    p.add_host("g", s.host()).unwrap();
    p.add_host("h", s.host()).unwrap();
    // A remote exit 255 is an exit status like any other: or_goto jumps.
    p.push("g", Command::new("echo before; exit 255").or_goto("skip"))
        .unwrap();
    p.push("g", Command::new("echo skipped")).unwrap();
    p.push("g", Here::new("skip")).unwrap();
    p.push("g", Command::new("echo landed")).unwrap();
    p.push("g", Goto::new("end")).unwrap();
    p.push("g", Command::new("echo never")).unwrap();
    p.push("g", Here::new("end")).unwrap();
    p.push("g", Stop).unwrap();
    p.push("g", Command::new("echo after stop")).unwrap();
    // A missing or_goto tag is GotoFailed under the task's own policy.
    p.push("h", Command::new("exit 3").or_goto("nowhere").on_error(OnError::Ignore))
        .unwrap();
    p.push("h", Command::new("echo next")).unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
    assert_statuses(
        &report,
        "g",
        &[
            Jumped, Skipped, Succeeded, Succeeded, Succeeded, Skipped, Succeeded, Succeeded, Skipped,
        ],
    );
    let t = task(&report, "g", 0);
    assert_eq!((t.exit_code(), t.stdout_str().as_str()), (Some(255), "before\n"));
    let e = t.error().expect("the jumped task keeps its error");
    assert_eq!((e.kind(), e.exit_code()), (ErrorKind::Command, Some(255)), "{e}");
    assert_eq!(task(&report, "g", 3).stdout_str(), "landed\n");
    assert_statuses(&report, "h", &[Ignored, Succeeded]);
    assert_eq!(task_error_kind(&report, "h", 0), Some(ErrorKind::GotoFailed));
    assert_eq!(task(&report, "h", 1).stdout_str(), "next\n");
    assert_eq!(s.logins(), 2);
}

// ---- §3 command options over SSH ----------------------------------------------

/// A timeout answers the task at once and closes its channel: with a pty the
/// remote shell gets SIGHUP and is gone. The session is kept for the next task.
fn timeout_closes_the_channel_and_a_pty_command_gets_sighup(s: &dyn Server) {
    let dir = tempdir();
    let d = dir.path();
    let (pid, hup) = (d.join("pid"), d.join("hup"));
    let mut p = Parallel::new();
    p.add_host("t", s.host()).unwrap();
    p.push(
        "t",
        Command::new(format!(
            "trap 'echo hup > {hup}; exit 1' HUP; echo $$ > {pid}; echo started; while :; do sleep 0.1; done",
            hup = hup.display(),
            pid = pid.display()
        ))
        .pty(true)
        .timeout(Duration::from_secs(1))
        .on_error(OnError::Ignore),
    )
    .unwrap();
    p.push("t", Command::new("echo after")).unwrap();
    let t0 = Instant::now();
    let report = p.run();
    let took = t0.elapsed();
    assert!(report.success(), "{report}");
    assert_statuses(&report, "t", &[Ignored, Succeeded]);
    let t = task(&report, "t", 0);
    let e = t.error().unwrap();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(
        t.stdout_str().contains("started"),
        "output before the timeout is kept: {t:?}"
    );
    assert_eq!(task(&report, "t", 1).stdout_str(), "after\n");
    assert_eq!(s.logins(), 1, "the session outlives the cancelled channel");
    assert!(took < Duration::from_secs(15), "took {took:?}");

    let shell = read_pid(&pid);
    // The trap writes the file: wait for its content, not just its creation.
    assert!(
        wait_until(Duration::from_secs(10), || fs::read_to_string(&hup)
            .is_ok_and(|t| t == "hup\n")),
        "the pty command got no SIGHUP (hup file: {:?}; shell {shell} {})",
        fs::read_to_string(&hup),
        if process_gone(shell) { "gone" } else { "still running" }
    );
    assert!(
        wait_until(Duration::from_secs(10), || process_gone(shell)),
        "the pty command {shell} still runs"
    );
}

/// Without a pty, a timed-out command must end too (README: "a command that
/// times out is killed").
fn timeout_without_a_pty_ends_the_remote_command(s: &dyn Server) {
    let dir = tempdir();
    let pid = dir.path().join("pid");
    let mut p = Parallel::new();
    p.add_host("t", s.host()).unwrap();
    p.push(
        "t",
        Command::new(format!("echo $$ > {}; echo started; exec sleep 30", pid.display()))
            .timeout(Duration::from_secs(1))
            .on_error(OnError::Ignore),
    )
    .unwrap();
    p.push("t", Command::new("echo after")).unwrap();
    let t0 = Instant::now();
    let report = p.run();
    let took = t0.elapsed();
    assert!(report.success(), "{report}");
    assert_statuses(&report, "t", &[Ignored, Succeeded]);
    assert_eq!(task_error_kind(&report, "t", 0), Some(ErrorKind::Timeout));
    assert_eq!(task(&report, "t", 0).stdout_str(), "started\n");
    assert_eq!(task(&report, "t", 1).stdout_str(), "after\n");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    let remote = read_pid(&pid);
    let gone = wait_until(Duration::from_secs(10), || process_gone(remote));
    if !gone {
        // SAFETY: a process this test started (through the server), by its pid.
        unsafe {
            libc::kill(remote as libc::pid_t, libc::SIGKILL);
        }
    }
    assert!(gone, "the timed-out command {remote} still ran 10 s after its timeout");
}

fn capture_limits_and_truncation(s: &dyn Server) {
    let mut p = Parallel::new();
    p.add_host("c", s.host()).unwrap();
    p.push(
        "c",
        Command::new("head -c 1000 /dev/zero | tr '\\0' a; printf err >&2").stdout(Output::capture_limit(100)),
    )
    .unwrap();
    p.push(
        "c",
        Command::new("head -c 100 /dev/zero | tr '\\0' b").stdout(Output::capture_limit(100)),
    )
    .unwrap();
    // The default cap: 1 MiB.
    p.push("c", Command::new("head -c 3000000 /dev/zero | tr '\\0' c"))
        .unwrap();
    p.push(
        "c",
        Command::new("echo hidden; echo shown >&2")
            .stdout(Output::null())
            .stderr(Output::capture_limit(3)),
    )
    .unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
    let t = tasks(&report, "c");
    assert_eq!(t[0].stdout().unwrap(), &[b'a'; 100][..]);
    assert!(t[0].stdout_truncated());
    assert_eq!(t[0].stderr_str(), "err");
    assert!(!t[0].stderr_truncated());
    assert_eq!(t[1].stdout().unwrap(), &[b'b'; 100][..]);
    assert!(!t[1].stdout_truncated(), "exactly at the limit is not truncated");
    assert_eq!(t[2].stdout().unwrap().len(), ssh_parallel::DEFAULT_CAPTURE_LIMIT);
    assert!(t[2].stdout().unwrap().iter().all(|&b| b == b'c'));
    assert!(t[2].stdout_truncated());
    assert_eq!(t[3].stdout(), None);
    assert_eq!(t[3].stderr_str(), "sho");
    assert!(t[3].stderr_truncated());
}

fn output_to_files_and_line_callbacks_per_label(s: &dyn Server) {
    let dir = tempdir();
    let d = dir.path().display().to_string();
    let labels = ["f1", "f2", "f3"];
    for l in labels {
        fs::write(dir.path().join(format!("{l}.out")), "old content, replaced\n").unwrap();
    }
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let mut p = Parallel::new();
    for l in labels {
        p.add_host(l, s.host()).unwrap();
    }
    p.all(
        Command::new("echo out-%LABEL%; echo err-%LABEL% >&2")
            .stdout(Output::file(format!("{d}/%LABEL%.out")))
            .stderr(Output::append(format!("{d}/%LABEL%.err"))),
    )
    .unwrap();
    p.all(Command::new("echo again >&2").stderr(Output::append(format!("{d}/%LABEL%.err"))))
        .unwrap();
    p.all(
        Command::new("echo line1; printf 'line2\\nline3'").stdout(Output::lines(move |label, line| {
            sink.lock().unwrap().push(format!("{label}:{line}"))
        })),
    )
    .unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
    for l in labels {
        let read = |ext: &str| fs::read_to_string(dir.path().join(format!("{l}.{ext}"))).unwrap();
        assert_eq!(read("out"), format!("out-{l}\n"));
        assert_eq!(read("err"), format!("err-{l}\nagain\n"));
        let t = tasks(&report, l);
        assert_eq!((t[0].stdout(), t[0].stderr()), (None, None), "not captured");
        assert_eq!(t[2].stdout(), None);
    }
    let mut got = lines.lock().unwrap().clone();
    got.sort();
    let mut want: Vec<String> = labels
        .iter()
        .flat_map(|l| ["line1", "line2", "line3"].map(|x| format!("{l}:{x}")))
        .collect();
    want.sort();
    assert_eq!(got, want, "every line, the last one without its newline too");
}

fn stdin_env_exit_codes_and_signals(s: &dyn Server) {
    let dir = tempdir();
    let d = dir.path();
    let data = random_bytes(300_000, 7);
    fs::write(d.join("data"), &data).unwrap();
    let data_sum = sha256(&d.join("data"));
    fs::write(d.join("x.in"), "from a file for x\n").unwrap();
    let mut p = Parallel::new();
    p.add_host("x", s.host()).unwrap();
    let steps: Vec<Command> = vec![
        // 0: binary stdin, zeros included
        Command::new("sha256sum").stdin(Stdin::data(data)),
        // 1: stdin from a local file, its path expanded per label
        Command::new("cat").stdin(Stdin::file(format!("{}/%LABEL%.in", d.display()))),
        // 2: env
        Command::new("printf '%s|%s' \"$A\" \"$B\"")
            .env("A", "a b 'c'")
            .env("B", "x;$HOME"),
        // 3: accepted exit code
        Command::new("exit 7").ok_exit_codes([0, 7]),
        // 4: refused exit code
        Command::new("echo seven; exit 7").on_error(OnError::Ignore),
        // 5, 6: signals
        Command::new("kill -TERM $$").on_error(OnError::Ignore),
        Command::new("kill -KILL $$").on_error(OnError::Ignore),
        // 7: 255 is an exit status, not a lost connection
        Command::new("exit 255").on_error(OnError::Ignore),
        // 8: argv, every word quoted
        Command::argv(["printf", "[%s]", "a b", "it's", "$HOME", ";"]),
        // 9: the host's variables
        Command::new("echo %LABEL% %HOST% %PORT% %USER% 100%%"),
        Command::new("echo last"),
    ];
    for c in steps {
        p.push("x", c).unwrap();
    }
    let report = p.run();
    assert!(report.success(), "{report}");
    let t = tasks(&report, "x");
    assert_eq!(t[0].stdout_str().split_whitespace().next(), Some(data_sum.as_str()));
    assert_eq!(t[1].stdout_str(), "from a file for x\n");
    assert_eq!(t[2].stdout_str(), "a b 'c'|x;$HOME");
    assert_eq!((t[3].status(), t[3].exit_code()), (Succeeded, Some(7)));
    assert_eq!(t[3].error().map(|e| e.kind()), None);
    assert_eq!((t[4].status(), t[4].exit_code()), (Ignored, Some(7)));
    let e = t[4].error().unwrap();
    assert_eq!(
        (e.kind(), e.exit_code(), e.signal()),
        (ErrorKind::Command, Some(7), None)
    );
    assert_eq!(t[4].stdout_str(), "seven\n");
    for (i, sig) in [(5, libc::SIGTERM), (6, libc::SIGKILL)] {
        assert_eq!(
            (t[i].status(), t[i].exit_code(), t[i].signal()),
            (Ignored, None, Some(sig)),
            "{:?}",
            t[i]
        );
        let e = t[i].error().unwrap();
        assert_eq!((e.kind(), e.signal()), (ErrorKind::Command, Some(sig)), "{e}");
    }
    assert_eq!(t[7].exit_code(), Some(255));
    assert_eq!(t[7].error().map(|e| e.kind()), Some(ErrorKind::Command));
    assert_eq!(t[8].stdout_str(), "[a b][it's][$HOME][;]");
    let user = s.host().user_name().unwrap().to_owned();
    assert_eq!(t[9].stdout_str(), format!("x 127.0.0.1 {} {user} 100%\n", s.port()));
    assert_eq!(t[10].stdout_str(), "last\n");
    assert_eq!(s.logins(), 1, "every task on one session");
}

fn scp_put_and_get_verified_by_sha256(s: &dyn Server) {
    let dir = tempdir();
    let d = dir.path();
    let labels = ["s1", "s2", "s3"];
    for (i, l) in labels.iter().enumerate() {
        fs::write(
            d.join(format!("src-{l}.bin")),
            random_bytes(1_500_000 + i * 1000, i as u64 + 1),
        )
        .unwrap();
    }
    fs::create_dir_all(d.join("tree/sub")).unwrap();
    fs::write(d.join("tree/a"), random_bytes(70_000, 11)).unwrap();
    fs::write(d.join("tree/sub/b"), random_bytes(3, 12)).unwrap();
    for sub in ["remote", "back"] {
        fs::create_dir(d.join(sub)).unwrap();
    }
    let dd = d.display().to_string();
    let mut p = Parallel::new();
    for l in labels {
        p.add_host(l, s.host()).unwrap();
    }
    p.all(ScpPut::new(
        format!("{dd}/src-%LABEL%.bin"),
        format!("{dd}/remote/%LABEL%.bin"),
    ))
    .unwrap();
    p.all(ScpGet::new(
        format!("{dd}/remote/%LABEL%.bin"),
        format!("{dd}/back/%LABEL%.bin"),
    ))
    .unwrap();
    p.all(ScpPut::new(format!("{dd}/tree"), format!("{dd}/remote/tree-%LABEL%")).recursive(true))
        .unwrap();
    p.all(ScpGet::new(format!("{dd}/remote/tree-%LABEL%"), format!("{dd}/back/tree-%LABEL%")).recursive(true))
        .unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
    for l in labels {
        let src = sha256(&d.join(format!("src-{l}.bin")));
        assert_eq!(sha256(&d.join(format!("remote/{l}.bin"))), src, "{l} put");
        assert_eq!(sha256(&d.join(format!("back/{l}.bin"))), src, "{l} get");
        for f in ["a", "sub/b"] {
            let want = sha256(&d.join("tree").join(f));
            assert_eq!(
                sha256(&d.join(format!("remote/tree-{l}/{f}"))),
                want,
                "{l} tree put {f}"
            );
            assert_eq!(sha256(&d.join(format!("back/tree-{l}/{f}"))), want, "{l} tree get {f}");
        }
        for t in tasks(&report, l) {
            assert_eq!((t.status(), t.attempts(), t.reruns()), (Succeeded, 1, 0), "{t:?}");
        }
    }
    assert_eq!(s.logins(), 3, "transfers reuse each label's session");
}

/// A transfer whose connection dies midway is re-run from the start after
/// reconnecting, like a command, and the copy is whole.
fn scp_interrupted_by_a_lost_connection_is_rerun(s: &dyn Server) {
    let dir = tempdir();
    let d = dir.path();
    let src = d.join("src.bin");
    // Big enough that the cut lands well before the end even on a busy machine
    // (about half a second of transfer here).
    fs::write(&src, random_bytes(48 << 20, 99)).unwrap();
    let sum = sha256(&src);
    for (name, target) in [("put", d.join("remote.bin")), ("get", d.join("back.bin"))] {
        let mut p = Parallel::builder()
            .reconnections(1)
            .reconnect_delay(Duration::from_millis(100))
            .build()
            .unwrap();
        p.add_host(name, s.host()).unwrap();
        let (from, to) = (src.display().to_string(), target.display().to_string());
        if name == "put" {
            p.push(name, ScpPut::new(from, to)).unwrap();
        } else {
            p.push(name, ScpGet::new(from, to)).unwrap();
        }
        let l0 = s.logins();
        // Cut as soon as data arrives.
        let (report, _, cuts) = run_cutting_when(s, &mut p, 1, || {
            usize::from(fs::metadata(&target).is_ok_and(|m| m.len() > 0))
        });
        assert_eq!(cuts, 1, "{name}");
        assert!(report.success(), "{name}: {report}");
        let t = task(&report, name, 0);
        assert_eq!(
            (t.status(), t.attempts(), t.reruns()),
            (Succeeded, 1, 1),
            "{name}: {t:?}"
        );
        assert_eq!(sha256(&target), sum, "{name}: the copy is whole");
        assert_eq!(s.logins() - l0, 2, "{name}: one reconnection");
    }
}

// ---- scenarios only one server can stage ----------------------------------------

/// Connection attempts start concurrently: eight handshakes each delayed by
/// one second by the embedded server take about one second, not eight.
#[test]
fn connection_attempts_start_concurrently_embedded() {
    fixture();
    let server = EmbeddedServer::builder()
        .password(USER, PASSWORD)
        .fault(ServerFault::DelayHandshake(Duration::from_secs(1)))
        .start()
        .unwrap();
    trust(&server.known_hosts_line());
    let sut = Embedded {
        server: Arc::new(server),
    };
    let mut p = Parallel::new();
    for i in 0..8 {
        p.add_host(format!("d{i}"), sut.host()).unwrap();
    }
    p.all(Command::new("echo %LABEL%")).unwrap();
    let t0 = Instant::now();
    let report = p.run();
    let took = t0.elapsed();
    assert!(report.success(), "{report}");
    assert!(took >= Duration::from_secs(1), "{took:?}");
    // Serially this would take 8 s at least.
    assert!(took < Duration::from_secs(6), "connects were not concurrent: {took:?}");
}
