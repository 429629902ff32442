//! The SSH transport's event loop itself: a fixed number of I/O threads
//! whatever the number of hosts, and connection loss found by deadline.

use std::fs;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ssh_parallel::{Command, ErrorKind, Host, Parallel, Parsub};

#[path = "common/servers.rs"]
mod servers;
use servers::Server;

/// Thread counts are per process: tests that start I/O threads take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// Names of this process's threads that start with `prefix`.
fn threads_named(prefix: &str) -> usize {
    fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count()
}

/// Runs `labels` SSH labels (each `sleep 0.4`) with `io_threads`, sampling the
/// number of I/O threads from a local parsub while they run.
fn io_threads_seen(server: &Server, labels: usize, io_threads: Option<usize>) -> usize {
    let mut b = Parallel::builder();
    if let Some(n) = io_threads {
        b = b.io_threads(n);
    }
    let mut pssh = b.build().unwrap();
    for i in 0..labels {
        pssh.add_host(format!("n{i:03}"), server.host()).unwrap();
    }
    pssh.add_host("probe", Host::local()).unwrap();
    pssh.push("n*", Command::new("sleep 0.4; echo done")).unwrap();
    let most = Arc::new(AtomicUsize::new(0));
    let seen = most.clone();
    pssh.push(
        "probe",
        Parsub::new(move |_, _| {
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_millis(700) {
                seen.fetch_max(threads_named("ssh-parallel-io"), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(())
        })
        .no_ssh(),
    )
    .unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    for i in 0..labels {
        let l = report.label(&format!("n{i:03}")).unwrap();
        assert_eq!(l.tasks()[0].stdout_str(), "done\n");
    }
    most.load(Ordering::SeqCst)
}

#[test]
fn io_thread_count_is_fixed_whatever_the_number_of_hosts() {
    let _turn = turn();
    let server = Server::embedded();
    assert_eq!(io_threads_seen(&server, 5, None), 1, "default: one I/O thread");
    assert_eq!(io_threads_seen(&server, 80, None), 1, "still one for 80 hosts");
    assert_eq!(io_threads_seen(&server, 80, Some(3)), 3, "as configured");
    assert_eq!(
        io_threads_seen(&server, 2, Some(3)),
        3,
        "the count does not follow the hosts"
    );
}

#[test]
fn zero_io_threads_is_a_config_error_naming_the_option() {
    let e = Parallel::builder().io_threads(0).build().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig);
    assert!(e.to_string().contains("io_threads"), "{e}");
}

#[test]
fn tasks_spread_over_io_threads_keep_per_label_order_and_connections() {
    let _turn = turn();
    let server = Server::embedded();
    let mut pssh = Parallel::builder().io_threads(4).build().unwrap();
    for i in 0..40 {
        pssh.add_host(format!("n{i:02}"), server.host()).unwrap();
    }
    for step in 0..5 {
        pssh.all(Command::new(format!("echo %LABEL%-{step}"))).unwrap();
    }
    let report = pssh.run();
    assert!(report.success(), "{report}");
    for l in report.labels() {
        let outs: Vec<String> = l.tasks().iter().map(|t| t.stdout_str()).collect();
        let want: Vec<String> = (0..5).map(|s| format!("{}-{s}\n", l.label())).collect();
        assert_eq!(outs, want);
    }
    assert_eq!(server.logins(), 40, "one connection per label");
}

/// A host reached through `proxy`, with fast dead-peer detection.
fn watched_host(server: &Server, proxy: &testbed::Proxy) -> Host {
    server
        .host_via(proxy.port())
        .keepalive(Duration::from_secs(1))
        .keepalive_count_max(2)
}

#[test]
fn idle_connection_to_a_silent_peer_is_declared_lost_and_replaced() {
    let _turn = turn();
    for target in Server::both() {
        let proxy = Arc::new(testbed::Proxy::start(target.addr()).unwrap());
        let mut pssh = Parallel::builder().reconnections(1).build().unwrap();
        pssh.add_host("h", watched_host(&target, &proxy)).unwrap();
        pssh.push("h", Command::new("echo one")).unwrap();
        let p = proxy.clone();
        // The peer goes silent while the label holds an idle connection.
        pssh.push(
            "h",
            ssh_parallel::Sub::new(move |_| {
                p.freeze();
                std::thread::sleep(Duration::from_secs(4));
                Ok(())
            }),
        )
        .unwrap();
        // Bounded so that a regression fails instead of hanging: sent to the
        // frozen connection, this would time out.
        pssh.push("h", Command::new("echo two").timeout(Duration::from_secs(20)))
            .unwrap();
        let report = pssh.run();
        assert!(report.success(), "{}: {report}", target.name());
        assert_eq!(report.label("h").unwrap().tasks()[2].stdout_str(), "two\n");
        assert_eq!(
            proxy.connections(),
            2,
            "{}: the lost connection was replaced",
            target.name()
        );
    }
}

#[test]
fn running_command_on_a_silent_peer_fails_by_deadline_not_never() {
    let _turn = turn();
    for target in Server::both() {
        let proxy = Arc::new(testbed::Proxy::start(target.addr()).unwrap());
        let p = proxy.clone();
        let freezer = std::thread::spawn(move || {
            assert!(p.wait_open_connections(1, Duration::from_secs(10)));
            std::thread::sleep(Duration::from_millis(700));
            p.freeze();
        });
        let mut pssh = Parallel::new();
        pssh.add_host("h", watched_host(&target, &proxy)).unwrap();
        // No output and no timeout of its own: only dead-peer detection ends it.
        pssh.push("h", Command::new("sleep 60")).unwrap();
        let t0 = Instant::now();
        let report = pssh.run();
        freezer.join().unwrap();
        let e = report.label("h").unwrap().error().expect("the connection was lost");
        assert_eq!(e.kind(), ErrorKind::Connect, "{}: {e}", target.name());
        assert!(e.to_string().contains("keepalive"), "says why: {e}");
        assert!(t0.elapsed() < Duration::from_secs(30), "took {:?}", t0.elapsed());
    }
}

#[test]
fn quiet_but_alive_peers_are_not_declared_lost() {
    let _turn = turn();
    for target in Server::both() {
        let proxy = testbed::Proxy::start(target.addr()).unwrap();
        let mut pssh = Parallel::new();
        pssh.add_host("h", watched_host(&target, &proxy)).unwrap();
        // Four keepalive intervals of silence from the command: the server
        // answers the keepalives, so the connection stays.
        pssh.push("h", Command::new("sleep 4; echo woke")).unwrap();
        pssh.push("h", Command::new("echo again")).unwrap();
        let report = pssh.run();
        assert!(report.success(), "{}: {report}", target.name());
        assert_eq!(report.label("h").unwrap().tasks()[0].stdout_str(), "woke\n");
        assert_eq!(proxy.connections(), 1, "{}", target.name());
    }
}
