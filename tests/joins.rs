//! SEMANTICS.md section 4: joins.

use std::time::Duration;

use ssh_parallel::fault::{Fault, FaultEvent, FaultLog};
use ssh_parallel::{Command, ErrorKind, Goto, Here, Host, Join, OnError, Parallel, Report, Stop};

/// Index in the log of the first event `ev` of `label`.
mod common;
use common::*;

fn pos(log: &FaultLog, label: &str, ev: &FaultEvent) -> usize {
    log.events()
        .iter()
        .position(|(l, e)| l == label && e == ev)
        .unwrap_or_else(|| panic!("no event {ev:?} for {label} in {:?}", log.events()))
}

fn run_ev(cmd: &str) -> FaultEvent {
    FaultEvent::Run(cmd.to_owned())
}

fn done_ev(cmd: &str, code: i32) -> FaultEvent {
    FaultEvent::Finished(cmd.to_owned(), code)
}

use ssh_parallel::TaskStatus::*;

#[test]
fn join_waits_only_for_tasks_queued_at_push_time() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host(
        "a",
        Host::fault(Fault::new().delay_on("a2", Duration::from_millis(400)).log(&log)),
    )
    .unwrap();
    pssh.add_host("b", host(&log)).unwrap();
    pssh.push("a", Command::new("a1")).unwrap();
    pssh.push("b", Join::new("a")).unwrap();
    pssh.push("b", Command::new("b1")).unwrap();
    // Pushed after the join: b must not wait for it.
    pssh.push("a", Command::new("a2")).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert!(pos(&log, "b", &run_ev("b1")) > pos(&log, "a", &done_ev("a1", 0)));
    assert!(
        pos(&log, "b", &run_ev("b1")) < pos(&log, "a", &done_ev("a2", 0)),
        "b waited for a task pushed after its join: {:?}",
        log.events()
    );
}

#[test]
fn join_waits_only_for_tasks_queued_at_push_time_even_when_later_tasks_join_back() {
    // If the join on `a` also waited for a's later `join b`, a and b would wait on
    // each other forever.
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", host(&log)).unwrap();
    pssh.add_host("b", host(&log)).unwrap();
    pssh.push("a", Command::new("a1")).unwrap();
    pssh.push("b", Join::new("a")).unwrap();
    pssh.push("b", Command::new("b1")).unwrap();
    pssh.push("a", Join::new("b")).unwrap();
    pssh.push("a", Command::new("a2")).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert_eq!(log.ran("a"), ["a1", "a2"]);
    assert_eq!(log.ran("b"), ["b1"]);
    assert!(pos(&log, "a", &run_ev("a2")) > pos(&log, "b", &done_ev("b1", 0)));
    assert!(pos(&log, "b", &run_ev("b1")) > pos(&log, "a", &done_ev("a1", 0)));
}

#[test]
fn join_waits_for_every_target() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", host(&log)).unwrap();
    pssh.add_host(
        "b",
        Host::fault(Fault::new().delay_on("b1", Duration::from_millis(150)).log(&log)),
    )
    .unwrap();
    pssh.add_host("c", host(&log)).unwrap();
    pssh.push("a", Command::new("a1")).unwrap();
    pssh.push("b", Command::new("b1")).unwrap();
    pssh.push("c", Join::new("a, b")).unwrap();
    pssh.push("c", Command::new("c1")).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    let c1 = pos(&log, "c", &run_ev("c1"));
    assert!(c1 > pos(&log, "a", &done_ev("a1", 0)));
    assert!(c1 > pos(&log, "b", &done_ev("b1", 0)));
}

#[test]
fn join_is_one_node_per_push_with_markers_not_counted_as_tasks() {
    // One push of join(T) from W appends one marker per target (internal, not a
    // task) and one join entry per waiter; large W x T still runs quickly.
    let n = 300;
    let mut pssh = Parallel::new();
    for i in 0..n {
        pssh.add_host(format!("t{i}"), Host::fault(Fault::new())).unwrap();
        pssh.add_host(format!("w{i}"), Host::fault(Fault::new())).unwrap();
    }
    pssh.push("t*", Command::new("work")).unwrap();
    let sel = pssh.push("w*", Join::new("t*")).unwrap();
    assert_eq!(sel.len(), n);
    pssh.push("w*", Command::new("after")).unwrap();
    // n commands on targets + n joins + n commands on waiters; markers are not tasks.
    assert_eq!(pssh.queued_tasks(), 3 * n);
    let report = pssh.run();
    assert!(report.success(), "{report}");
    for i in 0..n {
        assert_eq!(statuses(&report, &format!("t{i}")), [Succeeded]);
        assert_eq!(statuses(&report, &format!("w{i}")), [Succeeded, Succeeded]);
    }
    assert!(
        report.duration() < Duration::from_secs(30),
        "took {:?}",
        report.duration()
    );
}

#[test]
fn label_joining_itself_does_not_deadlock() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", host(&log)).unwrap();
    pssh.push("a", Command::new("a1")).unwrap();
    pssh.push("a", Join::new("a")).unwrap();
    pssh.push("a", Command::new("a2")).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert_eq!(log.ran("a"), ["a1", "a2"]);
    assert_eq!(statuses(&report, "a"), [Succeeded, Succeeded, Succeeded]);
}

#[test]
fn all_labels_joining_all_labels_does_not_deadlock() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host(
        "a",
        Host::fault(Fault::new().delay_on("a1", Duration::from_millis(100)).log(&log)),
    )
    .unwrap();
    pssh.add_host("b", host(&log)).unwrap();
    pssh.push("a", Command::new("a1")).unwrap();
    pssh.push("b", Command::new("b1")).unwrap();
    pssh.all(Join::new("*")).unwrap();
    pssh.push("a", Command::new("a2")).unwrap();
    pssh.push("b", Command::new("b2")).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert!(pos(&log, "b", &run_ev("b2")) > pos(&log, "a", &done_ev("a1", 0)));
    assert!(pos(&log, "a", &run_ev("a2")) > pos(&log, "b", &done_ev("b1", 0)));
}

#[test]
fn join_target_with_empty_queue_is_satisfied_at_once() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", host(&log)).unwrap();
    pssh.add_host("idle", host(&log)).unwrap();
    pssh.push("a", Join::new("idle")).unwrap();
    pssh.push("a", Command::new("a1")).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert_eq!(log.ran("a"), ["a1"]);
    assert_eq!(statuses(&report, "a"), [Succeeded, Succeeded]);
    assert!(report.label("idle").unwrap().tasks().is_empty());
    assert!(log.ran("idle").is_empty());
}

#[test]
fn joins_cannot_deadlock_crosswise() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", host(&log)).unwrap();
    pssh.add_host("b", host(&log)).unwrap();
    pssh.push("a", Command::new("a0")).unwrap();
    pssh.push("a", Join::new("b")).unwrap();
    pssh.push("b", Join::new("a")).unwrap();
    pssh.push("a", Command::new("a1")).unwrap();
    pssh.push("b", Command::new("b1")).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert_eq!(log.ran("a"), ["a0", "a1"]);
    assert_eq!(log.ran("b"), ["b1"]);
    // b's join was pushed after a's `join b`: it waits for a0 (and a's join), not a1.
    assert!(pos(&log, "b", &run_ev("b1")) > pos(&log, "a", &done_ev("a0", 0)));
}

#[test]
fn join_target_selector_matching_nothing_is_noop() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", host(&log)).unwrap();
    pssh.push("a", Command::new("a1")).unwrap();
    let before = pssh.queued_tasks();
    let sel = pssh.push("a", Join::new("nobody*")).unwrap();
    assert!(sel.is_empty(), "a join on nothing must say it did nothing");
    assert_eq!(pssh.queued_tasks(), before);
    pssh.push("a", Command::new("a2")).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert_eq!(log.ran("a"), ["a1", "a2"]);
    assert_eq!(statuses(&report, "a"), [Succeeded, Succeeded]);
}

#[test]
fn join_fails_when_target_aborted() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", Host::fault(Fault::new().exit_code("boom", 1).log(&log)))
        .unwrap();
    pssh.add_host("b", host(&log)).unwrap();
    pssh.push("a", Command::new("boom")).unwrap();
    pssh.push("b", Join::new("a")).unwrap();
    pssh.push("b", Command::new("b1")).unwrap();
    let report = pssh.run();
    assert!(!report.success());
    assert_eq!(kind(&pssh, "a"), Some(ErrorKind::Command));
    assert_eq!(kind(&pssh, "b"), Some(ErrorKind::JoinFailed));
    assert!(log.ran("b").is_empty());
    assert_eq!(statuses(&report, "b"), [Failed, Cancelled]);
    let e = pssh.get_error("b").unwrap().unwrap();
    assert_eq!(e.label(), Some("b"));
    assert!(e.task().is_some_and(|t| t.contains("join a")), "{e:?}");
    assert!(e.to_string().contains("a"), "{e}");
    let join_task = &report.label("b").unwrap().tasks()[0];
    assert_eq!(join_task.error().map(|e| e.kind()), Some(ErrorKind::JoinFailed));
}

#[test]
fn join_fails_when_one_of_several_targets_aborted() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("ok", host(&log)).unwrap();
    pssh.add_host("bad", Host::fault(Fault::new().exit_code("boom", 1).log(&log)))
        .unwrap();
    pssh.add_host("w", host(&log)).unwrap();
    pssh.push("ok", Command::new("fine")).unwrap();
    pssh.push("bad", Command::new("boom")).unwrap();
    pssh.push("w", Join::new("ok,bad")).unwrap();
    pssh.push("w", Command::new("w1")).unwrap();
    let report = pssh.run();
    assert!(report.label("ok").unwrap().success());
    assert_eq!(kind(&pssh, "w"), Some(ErrorKind::JoinFailed));
    assert!(log.ran("w").is_empty());
}

#[test]
fn join_fails_when_target_marker_discarded_by_abort_all() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("t", Host::fault(Fault::new().exit_code("boom", 1).log(&log)))
        .unwrap();
    pssh.add_host("w", host(&log)).unwrap();
    pssh.push("t", Command::new("boom").on_error(OnError::AbortAll))
        .unwrap();
    pssh.push("t", Command::new("t2")).unwrap();
    pssh.push("w", Join::new("t")).unwrap();
    pssh.push("w", Command::new("w1")).unwrap();
    let report = pssh.run();
    assert!(!report.success());
    assert_eq!(kind(&pssh, "t"), Some(ErrorKind::Command));
    // The waiter is stopped either by the failed join or by AbortAll itself.
    let wk = kind(&pssh, "w");
    assert!(matches!(wk, Some(ErrorKind::JoinFailed | ErrorKind::Aborted)), "{wk:?}");
    assert!(log.ran("w").is_empty());
    assert!(!statuses(&report, "w").contains(&Succeeded));
}

#[test]
fn join_succeeds_when_target_fails_after_its_marker() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", Host::fault(Fault::new().exit_code("boom", 1).log(&log)))
        .unwrap();
    pssh.add_host("b", host(&log)).unwrap();
    pssh.push("a", Command::new("a1")).unwrap();
    pssh.push("b", Join::new("a")).unwrap();
    pssh.push("b", Command::new("b1")).unwrap();
    pssh.push("a", Command::new("boom")).unwrap();
    let report = pssh.run();
    assert_eq!(kind(&pssh, "a"), Some(ErrorKind::Command));
    assert_eq!(kind(&pssh, "b"), None);
    assert_eq!(log.ran("b"), ["b1"]);
    assert_eq!(statuses(&report, "b"), [Succeeded, Succeeded]);
}

#[test]
fn discarded_marker_under_done_releases_join_as_success() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", Host::fault(Fault::new().exit_code("boom", 1).log(&log)))
        .unwrap();
    pssh.add_host("b", host(&log)).unwrap();
    pssh.push("a", Command::new("boom").on_error(OnError::Done)).unwrap();
    pssh.push("a", Command::new("a2")).unwrap();
    pssh.push("b", Join::new("a")).unwrap();
    pssh.push("b", Command::new("b1")).unwrap();
    let report = pssh.run();
    assert_eq!(kind(&pssh, "a"), Some(ErrorKind::Command));
    assert_eq!(statuses(&report, "a"), [Failed, Cancelled]);
    assert_eq!(log.ran("a"), ["boom"]);
    assert_eq!(kind(&pssh, "b"), None);
    assert_eq!(log.ran("b"), ["b1"]);
    assert_eq!(statuses(&report, "b"), [Succeeded, Succeeded]);
}

#[test]
fn marker_skipped_by_goto_releases_join_as_success() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", host(&log)).unwrap();
    pssh.add_host("b", host(&log)).unwrap();
    pssh.push("a", Goto::new("X")).unwrap();
    pssh.push("a", Command::new("a1")).unwrap();
    pssh.push("b", Join::new("a")).unwrap(); // marker between a1 and here X
    pssh.push("b", Command::new("b1")).unwrap();
    pssh.push("a", Here::new("X")).unwrap();
    pssh.push("a", Command::new("a2")).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert_eq!(log.ran("a"), ["a2"]);
    assert_eq!(statuses(&report, "a"), [Succeeded, Skipped, Succeeded, Succeeded]);
    assert_eq!(log.ran("b"), ["b1"]);
    assert_eq!(statuses(&report, "b"), [Succeeded, Succeeded]);
}

#[test]
fn marker_skipped_by_stop_releases_join_as_success() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", host(&log)).unwrap();
    pssh.add_host("b", host(&log)).unwrap();
    pssh.push("a", Stop).unwrap();
    pssh.push("a", Command::new("a1")).unwrap();
    pssh.push("b", Join::new("a")).unwrap();
    pssh.push("b", Command::new("b1")).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert!(log.ran("a").is_empty());
    assert_eq!(statuses(&report, "a"), [Succeeded, Skipped]);
    assert_eq!(log.ran("b"), ["b1"]);
}

#[test]
fn marker_skipped_by_or_goto_releases_join_as_success() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", Host::fault(Fault::new().exit_code("check", 1).log(&log)))
        .unwrap();
    pssh.add_host("b", host(&log)).unwrap();
    pssh.push("a", Command::new("check").or_goto("X")).unwrap();
    pssh.push("a", Command::new("a1")).unwrap();
    pssh.push("b", Join::new("a")).unwrap();
    pssh.push("b", Command::new("b1")).unwrap();
    pssh.push("a", Here::new("X")).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert_eq!(log.ran("a"), ["check"]);
    assert_eq!(statuses(&report, "a"), [Jumped, Skipped, Succeeded]);
    assert_eq!(log.ran("b"), ["b1"]);
    assert_eq!(statuses(&report, "b"), [Succeeded, Succeeded]);
}

/// a fails; b joins a; c joins b; d joins c.
fn chain(log: &FaultLog, b_join_policy: Option<OnError>) -> (Parallel, Report) {
    let mut pssh = Parallel::new();
    pssh.add_host("a", Host::fault(Fault::new().exit_code("boom", 1).log(log)))
        .unwrap();
    for l in ["b", "c", "d"] {
        pssh.add_host(l, host(log)).unwrap();
    }
    pssh.push("a", Command::new("boom")).unwrap();
    let j = Join::new("a");
    let j = match b_join_policy {
        Some(p) => j.on_error(p),
        None => j,
    };
    pssh.push("b", j).unwrap();
    pssh.push("b", Command::new("b1")).unwrap();
    pssh.push("c", Join::new("b")).unwrap();
    pssh.push("c", Command::new("c1")).unwrap();
    pssh.push("d", Join::new("c")).unwrap();
    pssh.push("d", Command::new("d1")).unwrap();
    let report = pssh.run();
    (pssh, report)
}

#[test]
fn join_failure_cascades_through_chain_under_abort_and_done_stops_it() {
    // Abort (the default): every label down the chain fails with JoinFailed.
    let log = FaultLog::new();
    let (pssh, report) = chain(&log, None);
    assert_eq!(kind(&pssh, "a"), Some(ErrorKind::Command));
    for l in ["b", "c", "d"] {
        assert_eq!(kind(&pssh, l), Some(ErrorKind::JoinFailed), "label {l}");
        assert!(log.ran(l).is_empty(), "label {l} ran {:?}", log.ran(l));
        assert_eq!(statuses(&report, l), [Failed, Cancelled], "label {l}");
    }

    // Done on b's join: b records JoinFailed, but its marker releases c's join as success.
    let log = FaultLog::new();
    let (pssh, report) = chain(&log, Some(OnError::Done));
    assert_eq!(kind(&pssh, "b"), Some(ErrorKind::JoinFailed));
    assert_eq!(statuses(&report, "b"), [Failed, Cancelled]);
    assert!(log.ran("b").is_empty());
    for l in ["c", "d"] {
        assert_eq!(kind(&pssh, l), None, "label {l}");
        assert_eq!(log.ran(l), [format!("{l}1")]);
    }
}

#[test]
fn join_failure_under_ignore_continues_after_the_join() {
    let log = FaultLog::new();
    let (pssh, report) = chain(&log, Some(OnError::Ignore));
    assert_eq!(kind(&pssh, "b"), None);
    assert_eq!(log.ran("b"), ["b1"]);
    assert_eq!(statuses(&report, "b"), [Ignored, Succeeded]);
    let join_task = &report.label("b").unwrap().tasks()[0];
    assert_eq!(join_task.error().map(|e| e.kind()), Some(ErrorKind::JoinFailed));
    for l in ["c", "d"] {
        assert_eq!(kind(&pssh, l), None, "label {l}");
        assert_eq!(log.ran(l), [format!("{l}1")]);
    }
}

#[test]
fn join_failure_is_handled_by_the_waiters_host_policy() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", Host::fault(Fault::new().exit_code("boom", 1).log(&log)))
        .unwrap();
    pssh.add_host("b", host(&log).on_error(OnError::Done)).unwrap();
    pssh.add_host("c", host(&log)).unwrap();
    pssh.push("a", Command::new("boom")).unwrap();
    pssh.push("b", Join::new("a")).unwrap();
    pssh.push("b", Command::new("b1")).unwrap();
    pssh.push("c", Join::new("b")).unwrap();
    pssh.push("c", Command::new("c1")).unwrap();
    let _ = pssh.run();
    assert_eq!(kind(&pssh, "b"), Some(ErrorKind::JoinFailed));
    assert!(log.ran("b").is_empty());
    assert_eq!(kind(&pssh, "c"), None);
    assert_eq!(log.ran("c"), ["c1"]);
}

#[test]
fn join_failure_under_retry_policy_terminates() {
    // A failed join cannot succeed by retrying: the run must still end.
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", Host::fault(Fault::new().exit_code("boom", 1).log(&log)))
        .unwrap();
    pssh.add_host("b", host(&log)).unwrap();
    pssh.push("a", Command::new("boom")).unwrap();
    pssh.push("b", Join::new("a").on_error(OnError::Retry)).unwrap();
    pssh.push("b", Command::new("b1")).unwrap();
    let report = pssh.run();
    assert!(!report.success());
    assert_eq!(kind(&pssh, "b"), Some(ErrorKind::JoinFailed));
    assert!(log.ran("b").is_empty());
}

#[test]
fn join_pushed_by_sub_waits_for_targets_queue_at_that_moment() {
    use ssh_parallel::Sub;
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host(
        "t",
        Host::fault(Fault::new().delay_on("t1", Duration::from_millis(150)).log(&log)),
    )
    .unwrap();
    pssh.add_host("w", host(&log)).unwrap();
    pssh.add_host("idle", host(&log)).unwrap();
    pssh.push("t", Command::new("t1")).unwrap();
    pssh.push(
        "w",
        Sub::new(|ctx| {
            // `idle` has already finished: a join on it is satisfied at once.
            ctx.push("w", Join::new("idle"))?;
            ctx.push("w", Command::new("w1"))?;
            ctx.push("w", Join::new("t"))?;
            ctx.push("w", Command::new("w2"))?;
            // Pushed after the join: not waited for.
            ctx.push("t", Command::new("t2"))?;
            Ok(())
        }),
    )
    .unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert_eq!(log.ran("w"), ["w1", "w2"]);
    assert_eq!(log.ran("t"), ["t1", "t2"]);
    assert!(pos(&log, "w", &run_ev("w2")) > pos(&log, "t", &done_ev("t1", 0)));
    assert!(pos(&log, "w", &run_ev("w1")) < pos(&log, "t", &done_ev("t1", 0)));
}
