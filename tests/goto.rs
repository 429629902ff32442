//! SEMANTICS.md section 5: here / goto / stop / or_goto.

use std::time::Duration;

use ssh_parallel::fault::{Fault, FaultEvent, FaultLog};
use ssh_parallel::TaskStatus::*;
use ssh_parallel::{Command, ErrorKind, Goto, Here, Host, Join, OnError, Parallel, Stop, Sub};

mod common;
use common::*;

fn pos(log: &FaultLog, label: &str, ev: &FaultEvent) -> usize {
    log.events()
        .iter()
        .position(|(l, e)| l == label && e == ev)
        .unwrap_or_else(|| panic!("no event {ev:?} for {label} in {:?}", log.events()))
}

#[test]
fn goto_discards_up_to_here() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", host(&log)).unwrap();
    pssh.push("a", Command::new("c1")).unwrap();
    pssh.push("a", Goto::new("X")).unwrap();
    pssh.push("a", Command::new("c2")).unwrap();
    pssh.push("a", Command::new("c3")).unwrap();
    pssh.push("a", Here::new("X")).unwrap();
    pssh.push("a", Command::new("c4")).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert_eq!(log.ran("a"), ["c1", "c4"]);
    assert_eq!(
        statuses(&report, "a"),
        [Succeeded, Succeeded, Skipped, Skipped, Succeeded, Succeeded]
    );
}

#[test]
fn goto_jumps_to_the_first_later_here() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", host(&log)).unwrap();
    pssh.push("a", Goto::new("X")).unwrap();
    pssh.push("a", Command::new("c1")).unwrap();
    pssh.push("a", Here::new("X")).unwrap();
    pssh.push("a", Command::new("c2")).unwrap();
    pssh.push("a", Here::new("X")).unwrap();
    pssh.push("a", Command::new("c3")).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert_eq!(log.ran("a"), ["c2", "c3"]);
    assert_eq!(
        statuses(&report, "a"),
        [Succeeded, Skipped, Succeeded, Succeeded, Succeeded, Succeeded]
    );
}

#[test]
fn goto_only_affects_its_own_label() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", host(&log)).unwrap();
    pssh.add_host("b", host(&log)).unwrap();
    pssh.push("a", Goto::new("X")).unwrap();
    pssh.all(Command::new("mid")).unwrap();
    pssh.all(Here::new("X")).unwrap();
    pssh.all(Command::new("end")).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert_eq!(log.ran("a"), ["end"]);
    assert_eq!(log.ran("b"), ["mid", "end"]);
}

#[test]
fn goto_past_joins_releases_waiters() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", host(&log)).unwrap();
    pssh.add_host("w1", host(&log)).unwrap();
    pssh.add_host("w2", host(&log)).unwrap();
    pssh.push("a", Goto::new("X")).unwrap();
    pssh.push("a", Command::new("skipped1")).unwrap();
    pssh.push("w1", Join::new("a")).unwrap();
    pssh.push("a", Command::new("skipped2")).unwrap();
    pssh.push("w2", Join::new("a")).unwrap();
    pssh.push("a", Here::new("X")).unwrap();
    pssh.all(Command::new("after")).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert_eq!(log.ran("a"), ["after"]);
    for w in ["w1", "w2"] {
        assert_eq!(log.ran(w), ["after"], "{w}");
        assert_eq!(statuses(&report, w), [Succeeded, Succeeded], "{w}");
    }
}

#[test]
fn goto_past_own_join_drops_the_wait() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", host(&log)).unwrap();
    pssh.add_host(
        "slow",
        Host::fault(Fault::new().delay_on("s1", Duration::from_millis(400)).log(&log)),
    )
    .unwrap();
    pssh.push("slow", Command::new("s1")).unwrap();
    pssh.push("a", Goto::new("X")).unwrap();
    pssh.push("a", Join::new("slow")).unwrap();
    pssh.push("a", Here::new("X")).unwrap();
    pssh.push("a", Command::new("a1")).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert_eq!(statuses(&report, "a"), [Succeeded, Skipped, Succeeded, Succeeded]);
    // a no longer waits for slow.
    assert!(
        pos(&log, "a", &FaultEvent::Run("a1".into())) < pos(&log, "slow", &FaultEvent::Finished("s1".into(), 0)),
        "{:?}",
        log.events()
    );
}

#[test]
fn goto_cannot_jump_backwards() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", host(&log)).unwrap();
    pssh.push("a", Here::new("X")).unwrap();
    pssh.push("a", Command::new("c1")).unwrap();
    pssh.push("a", Goto::new("X")).unwrap();
    pssh.push("a", Command::new("c2")).unwrap();
    let report = pssh.run();
    assert_eq!(log.ran("a"), ["c1"], "must not loop back");
    assert_eq!(kind(&pssh, "a"), Some(ErrorKind::GotoFailed));
    assert_eq!(statuses(&report, "a"), [Succeeded, Succeeded, Failed, Cancelled]);
}

#[test]
fn goto_end_discards_whole_queue() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", host(&log)).unwrap();
    pssh.push("a", Command::new("c1")).unwrap();
    pssh.push("a", Goto::new("END")).unwrap();
    pssh.push("a", Command::new("c2")).unwrap();
    pssh.push("a", Here::new("Y")).unwrap();
    pssh.push("a", Command::new("c3")).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert_eq!(log.ran("a"), ["c1"]);
    assert_eq!(
        statuses(&report, "a"),
        [Succeeded, Succeeded, Skipped, Skipped, Skipped]
    );
}

#[test]
fn goto_end_stops_at_here_end() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", host(&log)).unwrap();
    pssh.push("a", Goto::new("END")).unwrap();
    pssh.push("a", Command::new("c1")).unwrap();
    pssh.push("a", Here::new("END")).unwrap();
    pssh.push("a", Command::new("c2")).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert_eq!(log.ran("a"), ["c2"]);
    assert_eq!(statuses(&report, "a"), [Succeeded, Skipped, Succeeded, Succeeded]);
}

#[test]
fn stop_discards_whole_queue_unless_here_end() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", host(&log)).unwrap();
    pssh.add_host("b", host(&log)).unwrap();
    pssh.all(Command::new("c1")).unwrap();
    pssh.all(Stop).unwrap();
    pssh.all(Command::new("c2")).unwrap();
    pssh.push("b", Here::new("END")).unwrap();
    pssh.all(Command::new("c3")).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert_eq!(log.ran("a"), ["c1"]);
    assert_eq!(statuses(&report, "a"), [Succeeded, Succeeded, Skipped, Skipped]);
    assert_eq!(log.ran("b"), ["c1", "c3"]);
    assert_eq!(
        statuses(&report, "b"),
        [Succeeded, Succeeded, Skipped, Succeeded, Succeeded]
    );
}

#[test]
fn stop_pushed_by_a_sub_stops_the_label() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", host(&log)).unwrap();
    pssh.push(
        "a",
        Sub::new(|ctx| {
            ctx.push("a", Stop)?;
            ctx.push("a", Command::new("late"))?;
            Ok(())
        }),
    )
    .unwrap();
    pssh.push("a", Command::new("c1")).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    // The stop is queued after c1, so c1 runs and `late` does not.
    assert_eq!(log.ran("a"), ["c1"]);
}

#[test]
fn goto_missing_tag_is_goto_failed_queue_untouched() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", host(&log)).unwrap();
    pssh.add_host("b", host(&log)).unwrap();
    // Ignored: the queue after the goto is intact and runs in full.
    pssh.push("a", Command::new("c1")).unwrap();
    pssh.push("a", Goto::new("NOPE").on_error(OnError::Ignore)).unwrap();
    pssh.push("a", Command::new("c2")).unwrap();
    pssh.push("a", Here::new("X")).unwrap();
    pssh.push("a", Command::new("c3")).unwrap();
    // Default policy (Abort).
    pssh.push("b", Goto::new("NOPE")).unwrap();
    pssh.push("b", Command::new("b1")).unwrap();
    let report = pssh.run();

    assert_eq!(kind(&pssh, "a"), None);
    assert_eq!(log.ran("a"), ["c1", "c2", "c3"]);
    assert_eq!(
        statuses(&report, "a"),
        [Succeeded, Ignored, Succeeded, Succeeded, Succeeded]
    );
    let goto = &report.label("a").unwrap().tasks()[1];
    assert_eq!(goto.error().map(|e| e.kind()), Some(ErrorKind::GotoFailed));

    let e = pssh.get_error("b").unwrap().expect("b failed");
    assert_eq!(e.kind(), ErrorKind::GotoFailed);
    assert_eq!(e.label(), Some("b"));
    assert!(e.task().is_some_and(|t| t.contains("goto NOPE")), "{e:?}");
    assert!(e.to_string().contains("NOPE"), "{e}");
    assert!(log.ran("b").is_empty());
    assert_eq!(statuses(&report, "b"), [Failed, Cancelled]);
}

#[test]
fn goto_missing_tag_is_reported_by_validate() {
    let mut pssh = Parallel::new();
    pssh.add_host("a", Host::fault(Fault::new())).unwrap();
    pssh.push("a", Goto::new("END")).unwrap();
    assert!(pssh.validate().is_ok(), "END needs no here");
    pssh.push("a", Goto::new("NOPE")).unwrap();
    let e = pssh.validate().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MissingTag);
    assert!(e.to_string().contains("NOPE"), "{e}");
}

/// cmd (or_goto X); mid; here X; after.
fn or_goto_plan(pssh: &mut Parallel, label: &str, cmd: Command) {
    pssh.push(label, cmd.or_goto("X")).unwrap();
    pssh.push(label, Command::new("mid")).unwrap();
    pssh.push(label, Here::new("X")).unwrap();
    pssh.push(label, Command::new("after")).unwrap();
}

#[test]
fn or_goto_jumps_on_nonzero_exit_including_255() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    for (label, code) in [("e1", 1), ("e2", 2), ("e255", 255)] {
        pssh.add_host(label, Host::fault(Fault::new().exit_code("check", code).log(&log)))
            .unwrap();
        or_goto_plan(&mut pssh, label, Command::new("check"));
    }
    let report = pssh.run();
    assert!(report.success(), "{report}");
    for (label, code) in [("e1", 1), ("e2", 2), ("e255", 255)] {
        assert_eq!(log.ran(label), ["check", "after"], "{label}");
        assert_eq!(
            statuses(&report, label),
            [Jumped, Skipped, Succeeded, Succeeded],
            "{label}"
        );
        let t = &report.label(label).unwrap().tasks()[0];
        assert_eq!(t.exit_code(), Some(code), "{label}");
        assert_eq!(t.error().map(|e| e.kind()), Some(ErrorKind::Command), "{label}");
    }
}

#[test]
fn or_goto_jumps_on_local_exit_255() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    let t = trace.display();
    let mut pssh = Parallel::new();
    pssh.add_host("a", Host::local()).unwrap();
    pssh.push("a", Command::new("exit 255").or_goto("X")).unwrap();
    pssh.push("a", Command::new(format!("echo mid >> {t}"))).unwrap();
    pssh.push("a", Here::new("X")).unwrap();
    pssh.push("a", Command::new(format!("echo after >> {t}"))).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert_eq!(std::fs::read_to_string(&trace).unwrap(), "after\n");
    assert_eq!(statuses(&report, "a"), [Jumped, Skipped, Succeeded, Succeeded]);
    assert_eq!(report.label("a").unwrap().tasks()[0].exit_code(), Some(255));
}

#[test]
fn or_goto_not_taken_when_command_succeeds() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", host(&log)).unwrap();
    or_goto_plan(&mut pssh, "a", Command::new("check"));
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert_eq!(log.ran("a"), ["check", "mid", "after"]);
    assert_eq!(statuses(&report, "a"), [Succeeded, Succeeded, Succeeded, Succeeded]);
}

#[test]
fn or_goto_end_discards_whole_queue() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", Host::fault(Fault::new().exit_code("check", 3).log(&log)))
        .unwrap();
    pssh.push("a", Command::new("check").or_goto("END")).unwrap();
    pssh.push("a", Command::new("mid")).unwrap();
    pssh.push("a", Command::new("last")).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert_eq!(log.ran("a"), ["check"]);
    assert_eq!(statuses(&report, "a"), [Jumped, Skipped, Skipped]);
}

#[test]
fn or_goto_not_taken_on_connection_error_or_timeout() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    // Connection lost while the task runs.
    pssh.add_host("drop", Host::fault(Fault::new().drop_on("check", 1).log(&log)))
        .unwrap();
    // Could not connect.
    pssh.add_host("noconn", Host::fault(Fault::new().fail_connects(1).log(&log)))
        .unwrap();
    // Timed out.
    pssh.add_host(
        "slow",
        Host::fault(Fault::new().delay_on("check", Duration::from_secs(10)).log(&log)),
    )
    .unwrap();
    for l in ["drop", "noconn", "slow"] {
        let cmd = Command::new("check")
            .on_error(OnError::Ignore)
            .timeout(Duration::from_millis(50));
        or_goto_plan(&mut pssh, l, cmd);
    }
    let report = pssh.run();
    assert!(report.success(), "{report}");
    for (l, k) in [
        ("drop", ErrorKind::Connect),
        ("noconn", ErrorKind::Connect),
        ("slow", ErrorKind::Timeout),
    ] {
        // Not jumped: the failure went to the policy (Ignore) and `mid` ran.
        assert_eq!(statuses(&report, l), [Ignored, Succeeded, Succeeded, Succeeded], "{l}");
        let t = &report.label(l).unwrap().tasks()[0];
        assert_eq!(t.error().map(|e| e.kind()), Some(k), "{l}");
        assert!(
            log.ran(l).ends_with(&["mid".to_owned(), "after".to_owned()]),
            "{l}: {:?}",
            log.ran(l)
        );
    }
}

#[test]
fn or_goto_connection_error_goes_to_abort_policy() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", Host::fault(Fault::new().drop_on("check", 1).log(&log)))
        .unwrap();
    or_goto_plan(&mut pssh, "a", Command::new("check"));
    let report = pssh.run();
    assert_eq!(kind(&pssh, "a"), Some(ErrorKind::Connect));
    assert_eq!(log.ran("a"), ["check"]);
    assert_eq!(statuses(&report, "a"), [Failed, Cancelled, Cancelled, Cancelled]);
}

#[test]
fn or_goto_missing_tag_raises_goto_failed_under_task_policy() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    // The hosts' policy says Abort; each task's own policy must win.
    for l in ["ign", "done"] {
        pssh.add_host(
            l,
            Host::fault(Fault::new().exit_code("check", 1).log(&log)).on_error(OnError::Abort),
        )
        .unwrap();
    }
    pssh.add_host("w", host(&log)).unwrap();
    pssh.push("ign", Command::new("check").or_goto("NOPE").on_error(OnError::Ignore))
        .unwrap();
    pssh.push("ign", Command::new("next")).unwrap();
    pssh.push("done", Command::new("check").or_goto("NOPE").on_error(OnError::Done))
        .unwrap();
    pssh.push("done", Command::new("next")).unwrap();
    pssh.push("w", Join::new("done")).unwrap();
    pssh.push("w", Command::new("w1")).unwrap();
    let report = pssh.run();

    assert_eq!(kind(&pssh, "ign"), None);
    assert_eq!(log.ran("ign"), ["check", "next"]);
    assert_eq!(statuses(&report, "ign"), [Ignored, Succeeded]);
    let t = &report.label("ign").unwrap().tasks()[0];
    assert_eq!(t.error().map(|e| e.kind()), Some(ErrorKind::GotoFailed));

    let e = pssh.get_error("done").unwrap().expect("done failed");
    assert_eq!(e.kind(), ErrorKind::GotoFailed);
    assert_eq!(e.label(), Some("done"));
    assert!(e.to_string().contains("NOPE"), "{e}");
    assert_eq!(log.ran("done"), ["check"]);
    assert_eq!(statuses(&report, "done"), [Failed, Cancelled]);
    // Done, not Abort: the join on `done` succeeds.
    assert_eq!(kind(&pssh, "w"), None);
    assert_eq!(log.ran("w"), ["w1"]);
}

#[test]
fn or_goto_on_local_task_is_rejected_at_push() {
    let mut pssh = Parallel::new();
    pssh.add_host("a", Host::fault(Fault::new())).unwrap();
    let e = pssh.push("a", Sub::new(|_| Ok(())).or_goto("X")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig);
    assert_eq!(pssh.queued_tasks(), 0);
}

#[test]
fn stop_ignores_an_earlier_here_end() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", host(&log)).unwrap();
    pssh.push("a", Here::new("END")).unwrap();
    pssh.push("a", Command::new("c1")).unwrap();
    pssh.push("a", Stop).unwrap();
    pssh.push("a", Command::new("c2")).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert_eq!(log.ran("a"), ["c1"], "no jumping backwards");
    assert_eq!(statuses(&report, "a"), [Succeeded, Succeeded, Succeeded, Skipped]);
}
