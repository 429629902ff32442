//! The SSH transport's event loop itself: a fixed number of I/O threads
//! whatever the number of hosts, and connection loss found by deadline.

use std::fs;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ssh_parallel::{Command, ErrorKind, Host, HostKeyCheck, Parallel, Parsub};
use testbed::EmbeddedServer;

const USER: &str = "alice";
const PASSWORD: &str = "wonderland";

/// Thread counts are per process: tests that start I/O threads take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn server() -> EmbeddedServer {
    testbed::raise_fd_limit();
    EmbeddedServer::builder()
        .password(USER, PASSWORD)
        .start()
        .expect("start the embedded server")
}

fn host(port: u16) -> Host {
    Host::new("127.0.0.1")
        .port(port)
        .user(USER)
        .password(PASSWORD)
        .agent(false)
        .host_key_check(HostKeyCheck::Off)
        .connect_timeout(Duration::from_secs(10))
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
fn io_threads_seen(server: &EmbeddedServer, labels: usize, io_threads: Option<usize>) -> usize {
    let mut b = Parallel::builder();
    if let Some(n) = io_threads {
        b = b.io_threads(n);
    }
    let mut pssh = b.build().unwrap();
    for i in 0..labels {
        pssh.add_host(format!("n{i:03}"), host(server.port())).unwrap();
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
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let server = server();
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
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let server = server();
    let mut pssh = Parallel::builder().io_threads(4).build().unwrap();
    for i in 0..40 {
        pssh.add_host(format!("n{i:02}"), host(server.port())).unwrap();
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
    assert_eq!(server.stats().connections, 40, "one connection per label");
}
