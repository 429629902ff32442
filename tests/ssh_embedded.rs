//! The SSH transport against the embedded russh server (testbed): the
//! scheduling scenarios that touch connections, over real SSH, and each
//! injected server fault giving its documented error kind, with no hang.

#[path = "common/servers.rs"]
mod servers;

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use servers::{PASSWORD, USER};
use ssh_parallel::{Command, ErrorKind, Host, HostKeyCheck, Join, OnError, Parallel, TaskStatus};
use testbed::{ClientKey, EmbeddedServer, Fault as ServerFault, KeyType};

fn server() -> EmbeddedServer {
    EmbeddedServer::builder()
        .password(USER, PASSWORD)
        .start()
        .expect("start the embedded server")
}

fn host(server: &EmbeddedServer) -> Host {
    servers::password_host(server.port())
}

#[test]
fn fanout_over_real_ssh_reuses_one_connection_per_label() {
    let server = server();
    let mut pssh = Parallel::new();
    for i in 0..30 {
        pssh.add_host(format!("n{i:02}"), host(&server)).unwrap();
    }
    pssh.all(Command::new("echo %LABEL%; echo warn >&2; exit 4").ok_exit_codes([4]))
        .unwrap();
    pssh.all(Command::new("printf second")).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    for l in report.labels() {
        let t = l.tasks();
        assert_eq!(t[0].stdout_str(), format!("{}\n", l.label()));
        assert_eq!(t[0].stderr_str(), "warn\n");
        assert_eq!(t[0].exit_code(), Some(4));
        assert_eq!(t[1].stdout_str(), "second");
    }
    let stats = server.stats();
    assert_eq!(stats.connections, 30, "one connection per label: {stats:?}");
    assert_eq!(stats.commands, 60);
}

#[test]
fn join_pipeline_orders_work_across_labels_over_ssh() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let log = log.display();
    let mut pssh = Parallel::new();
    for l in ["web1", "web2", "db"] {
        pssh.add_host(l, host(&server)).unwrap();
    }
    pssh.push("web*", Command::new(format!("sleep 0.2; echo %LABEL% >> {log}")))
        .unwrap();
    pssh.push("db", Join::new("web*")).unwrap();
    pssh.push("db", Command::new(format!("echo db >> {log}; wc -l < {log}")))
        .unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    let text = fs::read_to_string(dir.path().join("log")).unwrap();
    assert_eq!(text.lines().last(), Some("db"), "{text}");
    let db = report.label("db").unwrap();
    assert_eq!(db.tasks()[1].stdout_str().trim(), "3");
}

#[test]
fn key_file_auth_over_real_ssh() {
    let key = ClientKey::generate(KeyType::Ed25519, None).unwrap();
    let server = EmbeddedServer::builder()
        .authorized_key(USER, key.public_line())
        .start()
        .unwrap();
    let mut pssh = Parallel::new();
    let h = Host::new("127.0.0.1")
        .port(server.port())
        .user(USER)
        .key_file(key.private_path())
        .host_key_check(HostKeyCheck::Off);
    pssh.add_host("k", h).unwrap();
    pssh.all(Command::new("echo keyed")).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert_eq!(report.label("k").unwrap().tasks()[0].stdout_str(), "keyed\n");
}

#[test]
fn key_login_sends_no_none_probe_password_login_asks_first() {
    let key = ClientKey::generate(KeyType::Ed25519, None).unwrap();
    let server = EmbeddedServer::builder()
        .authorized_key(USER, key.public_line())
        .password(USER, PASSWORD)
        .start()
        .unwrap();
    let keyed = Host::new("127.0.0.1")
        .port(server.port())
        .user(USER)
        .key_file(key.private_path())
        .host_key_check(HostKeyCheck::Off);
    let mut pssh = Parallel::new();
    pssh.add_host("k", keyed).unwrap();
    pssh.all(Command::new("true")).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    let stats = server.stats();
    assert_eq!(stats.authenticated, 1, "{stats:?}");
    // A key login goes straight to the key: no `none` request, no failure.
    assert_eq!(stats.none_probes, 0, "{stats:?}");
    assert_eq!(stats.auth_failures, 0, "{stats:?}");

    // A password-only host asks for the methods first (so that default keys
    // the server may refuse do not spend its MaxAuthTries).
    let mut pssh = Parallel::new();
    pssh.add_host("p", host(&server)).unwrap();
    pssh.all(Command::new("true")).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    let stats = server.stats();
    assert_eq!(stats.authenticated, 2, "{stats:?}");
    assert_eq!(stats.none_probes, 1, "{stats:?}");
}

#[test]
fn the_next_commands_channel_is_opened_while_the_current_one_runs() {
    let server = server();
    let mut pssh = Parallel::new();
    for l in ["a", "b", "c"] {
        pssh.add_host(l, host(&server)).unwrap();
    }
    // Lockstep: a join between each of the 5 commands. Each runs for a while,
    // so that an open sent right behind its exec cannot be read by the server
    // after it ended, however loaded the machine.
    for i in 0..5 {
        pssh.all(Command::new(format!("sleep 0.3; echo {i}-%LABEL%"))).unwrap();
        pssh.all(Join::new("*")).unwrap();
    }
    // A label whose queue ends in a parsub opens no channel ahead of it.
    pssh.add_host("p", host(&server)).unwrap();
    pssh.push("p", Command::new("echo before")).unwrap();
    pssh.push(
        "p",
        ssh_parallel::Parsub::new(|_label: &str, s: &mut ssh_parallel::Session| {
            let out = s.exec("echo from-parsub")?;
            if out.stdout != b"from-parsub\n" {
                return Err(format!("parsub output {:?}", out.stdout).into());
            }
            Ok(())
        }),
    )
    .unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    for l in ["a", "b", "c"] {
        let outs: Vec<String> = report
            .label(l)
            .unwrap()
            .tasks()
            .iter()
            .map(|t| t.stdout_str())
            .collect();
        let want: Vec<String> = (0..5).map(|i| format!("{i}-{l}\n")).collect();
        let got: Vec<&String> = outs.iter().filter(|o| !o.is_empty()).collect();
        assert_eq!(got, want.iter().collect::<Vec<_>>(), "{l}");
    }
    let stats = server.stats();
    assert_eq!(stats.connections, 4, "{stats:?}");
    assert_eq!(stats.commands, 3 * 5 + 2, "{stats:?}");
    // Each label's commands 2..5 ran on channels opened while the previous
    // command's channel was open; the last command opened none it did not
    // need, nor did `echo before`, which a parsub follows.
    assert_eq!(stats.channels_opened, 3 * 5 + 2, "{stats:?}");
    assert_eq!(stats.channels_opened_ahead, 3 * 4, "{stats:?}");

    // Off when asked.
    let mut pssh = Parallel::builder().channels_ahead(false).build().unwrap();
    pssh.add_host("d", host(&server)).unwrap();
    for i in 0..3 {
        pssh.push("d", Command::new(format!("sleep 0.3; echo {i}"))).unwrap();
    }
    assert!(pssh.run().success());
    let after = server.stats();
    assert_eq!(after.channels_opened - stats.channels_opened, 3, "{after:?}");
    assert_eq!(after.channels_opened_ahead, stats.channels_opened_ahead, "{after:?}");
}

#[test]
fn rejected_auth_is_a_connect_error_under_the_policy() {
    let server = EmbeddedServer::builder()
        .password(USER, PASSWORD)
        .fault(ServerFault::RejectAuth)
        .start()
        .unwrap();
    let mut pssh = Parallel::new();
    pssh.add_host("a", host(&server)).unwrap();
    pssh.add_host("b", host(&server).on_error(OnError::Done)).unwrap();
    pssh.push("a", Command::new("true")).unwrap();
    pssh.push("b", Command::new("true")).unwrap();
    pssh.push("b", Command::new("echo never")).unwrap();
    let report = pssh.run();
    for l in ["a", "b"] {
        let e = pssh.get_error(l).unwrap().expect("an error");
        assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
        assert!(e.to_string().contains("password"), "names the methods tried: {e}");
    }
    let b = report.label("b").unwrap();
    assert_eq!(b.tasks()[1].status(), TaskStatus::Cancelled);
}

#[test]
fn refused_and_silent_handshakes_fail_without_hanging() {
    for fault in [ServerFault::RefuseHandshake, ServerFault::NoBanner] {
        let server = EmbeddedServer::builder()
            .password(USER, PASSWORD)
            .fault(fault.clone())
            .start()
            .unwrap();
        let mut pssh = Parallel::new();
        pssh.add_host("x", host(&server).connect_timeout(Duration::from_millis(800)))
            .unwrap();
        pssh.all(Command::new("true")).unwrap();
        let start = Instant::now();
        pssh.run();
        let e = pssh.get_error("x").unwrap().expect("an error");
        assert_eq!(e.kind(), ErrorKind::Connect, "{fault:?}: {e}");
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{fault:?} took {:?}",
            start.elapsed()
        );
    }
}

#[test]
fn sha1_only_server_gets_an_error_that_says_so() {
    let server = EmbeddedServer::builder()
        .password(USER, PASSWORD)
        .fault(ServerFault::Sha1Only)
        .start()
        .unwrap();
    let mut pssh = Parallel::new();
    pssh.add_host("old", host(&server)).unwrap();
    pssh.all(Command::new("true")).unwrap();
    pssh.run();
    let e = pssh.get_error("old").unwrap().expect("an error");
    assert_eq!(e.kind(), ErrorKind::Connect);
    assert!(e.to_string().contains("SHA-1"), "{e}");
}

#[test]
fn command_interrupted_by_a_dropped_connection_is_rerun_after_reconnecting() {
    let server = Arc::new(
        EmbeddedServer::builder()
            .password(USER, PASSWORD)
            .fault(ServerFault::DropDuringCommand(Duration::from_millis(200)))
            .start()
            .unwrap(),
    );
    // Lift the fault once the first connection has dropped, so the re-run
    // (after the reconnect delay) goes through.
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (server, done) = (server.clone(), done.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !done.load(Ordering::Relaxed) && Instant::now() < deadline {
                let s = server.stats();
                if s.commands >= 1 && s.active_connections == 0 {
                    server.clear_faults();
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let mut pssh = Parallel::builder()
        .reconnections(1)
        .reconnect_delay(Duration::from_millis(700))
        .build()
        .unwrap();
    pssh.add_host("r", host(&server)).unwrap();
    pssh.all(Command::new("sleep 1; echo finished")).unwrap();
    let report = pssh.run();
    done.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    assert!(report.success(), "{report}");
    let t = &report.label("r").unwrap().tasks()[0];
    assert_eq!(t.reruns(), 1);
    assert_eq!(t.stdout_str(), "finished\n");
    assert_eq!(server.stats().connections, 2);
}

#[test]
fn dropped_connection_without_reconnections_is_a_connect_error() {
    let server = EmbeddedServer::builder()
        .password(USER, PASSWORD)
        .fault(ServerFault::DropDuringCommand(Duration::from_millis(100)))
        .start()
        .unwrap();
    let mut pssh = Parallel::new();
    pssh.add_host("d", host(&server)).unwrap();
    pssh.all(Command::new("sleep 5")).unwrap();
    let start = Instant::now();
    pssh.run();
    let e = pssh.get_error("d").unwrap().expect("an error");
    assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
}

#[test]
fn timeout_over_ssh_is_a_timeout_and_the_label_goes_on() {
    let server = server();
    let mut pssh = Parallel::new();
    pssh.add_host("t", host(&server)).unwrap();
    pssh.all(
        Command::new("sleep 30")
            .timeout(Duration::from_millis(500))
            .on_error(OnError::Ignore),
    )
    .unwrap();
    pssh.all(Command::new("echo after")).unwrap();
    let start = Instant::now();
    let report = pssh.run();
    assert!(start.elapsed() < Duration::from_secs(15), "{:?}", start.elapsed());
    let t = report.label("t").unwrap().tasks();
    assert_eq!(t[0].status(), TaskStatus::Ignored);
    assert_eq!(t[0].error().unwrap().kind(), ErrorKind::Timeout);
    assert_eq!(t[1].stdout_str(), "after\n");
}

#[test]
fn connections_limit_holds_over_real_ssh() {
    let server = server();
    let mut pssh = Parallel::builder().connections(2).build().unwrap();
    for i in 0..6 {
        pssh.add_host(format!("c{i}"), host(&server)).unwrap();
    }
    // Everyone connects, waits on a join holding an idle connection, and
    // connects again for the last command: eviction must make room.
    pssh.all(Command::new("echo one")).unwrap();
    pssh.all(Join::new("*")).unwrap();
    pssh.all(Command::new("echo two")).unwrap();
    let watch = {
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let port = server.port();
        // Connections that exist before the run are not ours (another test's
        // server may have had this port).
        let before = established_to(port);
        let h = std::thread::spawn(move || {
            let mut max = 0;
            while !s2.load(Ordering::Relaxed) {
                max = max.max(established_to(port).difference(&before).count());
                std::thread::sleep(Duration::from_millis(2));
            }
            max
        });
        (stop, h)
    };
    let report = pssh.run();
    watch.0.store(true, Ordering::Relaxed);
    let max = watch.1.join().unwrap();
    assert!(report.success(), "{report}");
    assert!(max <= 2, "at most 2 connections at once, saw {max}");
    assert!(
        server.stats().connections >= 7,
        "evictions forced reconnections: {:?}",
        server.stats()
    );
}

/// The local ends of the established TCP connections from this machine to
/// `port` (client side), read from /proc/net/tcp.
fn established_to(port: u16) -> std::collections::HashSet<String> {
    let text = fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let want = format!(":{port:04X}");
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // remote address ends with the server's port; state 01 = ESTABLISHED
            (f.len() > 3 && f[2].ends_with(&want) && f[3] == "01").then(|| f[1].to_owned())
        })
        .collect()
}

#[test]
fn scp_put_and_get_over_the_embedded_server_keep_content_and_mode() {
    use std::os::unix::fs::PermissionsExt;
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("payload.bin");
    // 3 MB of non-repeating bytes.
    let data: Vec<u8> = (0u32..3 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    fs::write(&src, &data).unwrap();
    fs::set_permissions(&src, fs::Permissions::from_mode(0o640)).unwrap();
    let d = dir.path().display();
    let mut pssh = Parallel::new();
    for l in ["p1", "p2"] {
        pssh.add_host(l, host(&server)).unwrap();
    }
    pssh.all(ssh_parallel::ScpPut::new(
        src.display().to_string(),
        format!("{d}/remote-%LABEL%.bin"),
    ))
    .unwrap();
    pssh.all(ssh_parallel::ScpGet::new(
        format!("{d}/remote-%LABEL%.bin"),
        format!("{d}/back-%LABEL%.bin"),
    ))
    .unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    for l in ["p1", "p2"] {
        let back = dir.path().join(format!("back-{l}.bin"));
        assert!(fs::read(&back).unwrap() == data, "{l}: content differs");
        assert_eq!(fs::metadata(&back).unwrap().permissions().mode() & 0o777, 0o640);
    }
}
