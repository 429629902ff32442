//! SEMANTICS.md section 5: `or_goto` on transfers. A scp or rsync transfer
//! that fails for a reason of its own (here: a missing source) jumps to its
//! tag and is reported `Jumped` with its `Transfer` error, on the local
//! transport, the fault transport and over SSH on both servers; a connection
//! lost during a transfer is not jumped over but goes to error handling.

use std::path::Path;

use ssh_parallel::fault::{Fault, FaultLog};
use ssh_parallel::{
    Command, ErrorKind, Here, Host, OnError, Parallel, Report, RsyncGet, RsyncPut, ScpGet, ScpPut, TaskStatus,
};
use TaskStatus::{Failed, Jumped, Skipped, Succeeded};

#[path = "common/servers.rs"]
mod servers;
use servers::Server;

const LABELS: [&str; 4] = ["scp_get", "scp_put", "rsync_get", "rsync_put"];

/// One label per transfer kind, each copying a missing file with `or_goto`,
/// then a command that must be skipped, the tag and a command that must run.
fn push_failing_transfers(p: &mut Parallel, dir: &Path) {
    let d = dir.display();
    let missing = format!("{d}/missing-%LABEL%");
    let target = format!("{d}/out-%LABEL%");
    p.push("scp_get", ScpGet::new(missing.clone(), target.clone()).or_goto("T"))
        .unwrap();
    p.push("scp_put", ScpPut::new(missing.clone(), target.clone()).or_goto("T"))
        .unwrap();
    p.push("rsync_get", RsyncGet::new(missing.clone(), target.clone()).or_goto("T"))
        .unwrap();
    p.push("rsync_put", RsyncPut::new(missing, target).or_goto("T"))
        .unwrap();
    p.all(Command::new("echo skipped")).unwrap();
    p.all(Here::new("T")).unwrap();
    p.all(Command::new("echo landed")).unwrap();
}

fn assert_jumped(report: &Report) {
    assert!(report.success(), "{report}");
    for l in LABELS {
        let tasks = report.label(l).expect("label").tasks();
        let st: Vec<TaskStatus> = tasks.iter().map(|t| t.status()).collect();
        assert_eq!(st, [Jumped, Skipped, Succeeded, Succeeded], "{l}: {report}");
        let e = tasks[0].error().expect("the jumped transfer keeps its error");
        assert_eq!(e.kind(), ErrorKind::Transfer, "{l}: {e}");
        assert!(e.to_string().contains(l), "the error names its label: {e}");
        assert_eq!(tasks[3].stdout_str(), "landed\n", "{l}");
    }
}

#[test]
fn failed_transfers_jump_on_the_local_transport() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Parallel::new();
    for l in LABELS {
        p.add_host(l, Host::local()).unwrap();
    }
    push_failing_transfers(&mut p, dir.path());
    assert_jumped(&p.run());
}

#[test]
fn failed_transfers_without_or_goto_still_go_to_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let mut p = Parallel::new();
    p.add_host("a", Host::local()).unwrap();
    p.push("a", ScpGet::new(format!("{d}/missing"), format!("{d}/out")))
        .unwrap();
    p.push("a", Command::new("echo never")).unwrap();
    let report = p.run();
    assert!(!report.success());
    let st: Vec<TaskStatus> = report.label("a").unwrap().tasks().iter().map(|t| t.status()).collect();
    assert_eq!(st, [Failed, TaskStatus::Cancelled]);
    assert_eq!(p.get_error("a").unwrap().map(|e| e.kind()), Some(ErrorKind::Transfer));
}

#[test]
fn failed_transfers_jump_on_the_fault_transport() {
    let log = FaultLog::new();
    let mut p = Parallel::new();
    let transfers = [
        ("scp_get", "scp_get /r -> /l"),
        ("scp_put", "scp_put /l -> /r"),
        ("rsync_get", "rsync_get /r -> /l"),
        ("rsync_put", "rsync_put /l -> /r"),
    ];
    for (l, desc) in transfers {
        p.add_host(l, Host::fault(Fault::new().exit_code(desc, 23).log(&log)))
            .unwrap();
    }
    p.push("scp_get", ScpGet::new("/r", "/l").or_goto("T")).unwrap();
    p.push("scp_put", ScpPut::new("/l", "/r").or_goto("T")).unwrap();
    p.push("rsync_get", RsyncGet::new("/r", "/l").or_goto("T")).unwrap();
    p.push("rsync_put", RsyncPut::new("/l", "/r").or_goto("T")).unwrap();
    p.all(Command::new("skipped")).unwrap();
    p.all(Here::new("T")).unwrap();
    p.all(Command::new("landed")).unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
    for (l, desc) in transfers {
        let tasks = report.label(l).unwrap().tasks();
        let st: Vec<TaskStatus> = tasks.iter().map(|t| t.status()).collect();
        assert_eq!(st, [Jumped, Skipped, Succeeded, Succeeded], "{l}");
        assert_eq!(tasks[0].error().map(|e| e.kind()), Some(ErrorKind::Transfer));
        assert_eq!(log.ran(l), [desc, "landed"], "{l}: the connection was kept");
        assert_eq!(log.connect_attempts(l), 1, "{l}");
    }
}

#[test]
fn a_connection_lost_during_a_transfer_is_not_jumped_over() {
    let log = FaultLog::new();
    let mut p = Parallel::builder().reconnections(1).build().unwrap();
    p.add_host("a", Host::fault(Fault::new().drop_on("scp_put /l -> /r", 5).log(&log)))
        .unwrap();
    p.add_host(
        "b",
        Host::fault(Fault::new().drop_on("rsync_get /r -> /l", 5).log(&log)),
    )
    .unwrap();
    p.push("a", ScpPut::new("/l", "/r").or_goto("T").on_error(OnError::Done))
        .unwrap();
    p.push("b", RsyncGet::new("/r", "/l").or_goto("T")).unwrap();
    p.all(Here::new("T")).unwrap();
    p.all(Command::new("after")).unwrap();
    let report = p.run();
    for l in ["a", "b"] {
        let tasks = report.label(l).unwrap().tasks();
        assert_eq!(tasks[0].status(), Failed, "{l}: {report}");
        assert_eq!(tasks[0].error().map(|e| e.kind()), Some(ErrorKind::Connect), "{l}");
        assert_eq!(tasks[0].reruns(), 1, "{l}: re-run once after reconnecting");
        assert_eq!(tasks[2].status(), TaskStatus::Cancelled, "{l}");
        assert!(!log.ran(l).contains(&"after".to_owned()), "{l}");
    }
    assert_eq!(p.get_error("b").unwrap().map(|e| e.kind()), Some(ErrorKind::Connect));
}

fn failed_transfers_jump_over_ssh(server: &Server) {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Parallel::new();
    for l in LABELS {
        p.add_host(l, server.host()).unwrap();
    }
    push_failing_transfers(&mut p, dir.path());
    let report = p.run();
    assert_jumped(&report);
    assert_eq!(server.logins(), LABELS.len(), "each label kept its one connection");
}

on_both!(failed_transfers_jump_over_ssh);
