//! Rolling runs: `ParallelBuilder::waves` (labels started wave after wave)
//! and `ParallelBuilder::max_failures` (no label started once too many have
//! failed), on fault-injection hosts whose shared log orders what ran.

use std::collections::HashMap;
use std::time::Duration;

use ssh_parallel::fault::{Fault, FaultEvent, FaultLog};
use ssh_parallel::{
    Amount, Command, ErrorKind, Host, Join, OnError, Parallel, ParallelBuilder, Report, RunEvent, Sub, TaskStatus,
};

mod common;
use common::*;

const WORK: &str = "work";

/// Labels `n0..n{count-1}` on fault hosts logging to `log`; each runs `work`
/// (40 ms), which exits 1 on the labels in `failing`.
fn fleet(builder: ParallelBuilder, count: usize, failing: &[usize], log: &FaultLog) -> Parallel {
    let mut pssh = builder.build().unwrap();
    for i in 0..count {
        let mut f = Fault::new().delay(Duration::from_millis(40)).log(log);
        if failing.contains(&i) {
            f = f.exit_code(WORK, 1);
        }
        pssh.add_host(format!("n{i}"), Host::fault(f)).unwrap();
    }
    pssh
}

fn names(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("n{i}")).collect()
}

/// Position in the log of each label's first `Run` and last `Finished`.
fn spans(log: &FaultLog) -> HashMap<String, (usize, usize)> {
    let mut out: HashMap<String, (usize, usize)> = HashMap::new();
    for (i, (label, ev)) in log.events().into_iter().enumerate() {
        match ev {
            FaultEvent::Run(_) => {
                out.entry(label).or_insert((i, i));
            }
            FaultEvent::Finished(..) => {
                if let Some(s) = out.get_mut(&label) {
                    s.1 = i;
                }
            }
            _ => {}
        }
    }
    out
}

/// Asserts that every label of each wave ran, and that each wave started
/// only after every label of the one before had finished.
fn assert_waves(log: &FaultLog, waves: &[Vec<String>]) {
    let s = spans(log);
    let span = |l: &String| *s.get(l).unwrap_or_else(|| panic!("{l} never ran: {:?}", log.events()));
    for pair in waves.windows(2) {
        let last_end = pair[0].iter().map(|l| span(l).1).max().unwrap();
        let first_start = pair[1].iter().map(|l| span(l).0).min().unwrap();
        assert!(
            last_end < first_start,
            "wave {:?} started before wave {:?} ended: {:?}",
            pair[1],
            pair[0],
            log.events()
        );
    }
}

fn ran(log: &FaultLog, label: &str) -> bool {
    !log.ran(label).is_empty()
}

#[test]
fn waves_of_a_count_run_one_after_the_other() {
    let log = FaultLog::new();
    let mut pssh = fleet(Parallel::builder().waves(2), 5, &[], &log);
    pssh.all(Command::new(WORK)).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert_waves(&log, &[names(0..2), names(2..4), names(4..5)]);
    // Within a wave the labels run together.
    assert_eq!(log.max_running(), 2);
}

#[test]
fn a_percentage_rounds_down_but_is_at_least_one_label() {
    // 50% of 5 labels is 2.5: waves of 2 (Ansible's `serial` rounds down).
    let log = FaultLog::new();
    let mut pssh = fleet(Parallel::builder().waves(Amount::percent(50)), 5, &[], &log);
    pssh.all(Command::new(WORK)).unwrap();
    assert!(pssh.run().success());
    assert_waves(&log, &[names(0..2), names(2..4), names(4..5)]);
    assert_eq!(log.max_running(), 2);

    // 10% of 5 labels is 0.5: still one label a wave.
    let log = FaultLog::new();
    let mut pssh = fleet(Parallel::builder().waves(Amount::percent(10)), 5, &[], &log);
    pssh.all(Command::new(WORK)).unwrap();
    assert!(pssh.run().success());
    assert_eq!(log.max_running(), 1);
    assert_waves(&log, &(0..5).map(|i| names(i..i + 1)).collect::<Vec<_>>());
}

#[test]
fn labels_without_work_take_no_part_in_waves() {
    // 50% of the 2 labels with work is 1: n1 and n3 are idle, and do not
    // make the waves 2 labels wide.
    let log = FaultLog::new();
    let mut pssh = fleet(Parallel::builder().waves(Amount::percent(50)), 4, &[], &log);
    pssh.push("n0,n2", Command::new(WORK)).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert_eq!(log.max_running(), 1);
    assert_waves(&log, &[vec!["n0".into()], vec!["n2".into()]]);
}

#[test]
fn a_wave_waits_for_whole_queues_including_joins() {
    // Wave 1 is n0 (two commands) and n1 (a join on n0, then a command):
    // wave 2 (n2) starts only once n1's command after the join has finished.
    let log = FaultLog::new();
    let mut pssh = fleet(Parallel::builder().waves(2), 3, &[], &log);
    pssh.all(Command::new(WORK)).unwrap();
    pssh.push("n0", Command::new("more")).unwrap();
    pssh.push("n1", Join::new("n0")).unwrap();
    pssh.push("n1", Command::new("after")).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert_waves(&log, &[names(0..2), names(2..3)]);
    let ev = log.events();
    let pos = |l: &str, e: FaultEvent| ev.iter().position(|(x, y)| x == l && *y == e).unwrap();
    assert!(pos("n2", FaultEvent::Run(WORK.into())) > pos("n1", FaultEvent::Finished("after".into(), 0)));
}

#[test]
fn a_label_a_sub_revives_holds_its_wave_back() {
    // n1's sub pushes one more command to n0 after n0 has finished: wave 2
    // must wait for it too.
    let log = FaultLog::new();
    let mut pssh = fleet(Parallel::builder().waves(2), 3, &[], &log);
    pssh.push("n0,n2", Command::new(WORK)).unwrap();
    pssh.push("n1", Command::new("slow")).unwrap();
    pssh.push(
        "n1",
        Sub::new(|ctx| {
            ctx.push("n0", Command::new("late"))?;
            Ok(())
        }),
    )
    .unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    let ev = log.events();
    let pos = |l: &str, e: FaultEvent| ev.iter().position(|(x, y)| x == l && *y == e).unwrap();
    assert!(pos("n0", FaultEvent::Finished(WORK.into(), 0)) < pos("n1", FaultEvent::Finished("slow".into(), 0)));
    assert!(
        pos("n2", FaultEvent::Run(WORK.into())) > pos("n0", FaultEvent::Finished("late".into(), 0)),
        "{ev:?}"
    );
}

#[test]
fn max_failures_with_waves_stops_the_waves_not_started() {
    // Waves of 2; n0, n1 (wave 1) and n2 (wave 2) fail: the third failure is
    // above 2. n3 was running beside n2 and finishes; n4..n9 never start.
    let log = FaultLog::new();
    let mut pssh = fleet(Parallel::builder().waves(2).max_failures(2), 10, &[0, 1, 2], &log);
    pssh.all(Command::new(WORK)).unwrap();
    pssh.all(Command::new("second")).unwrap();
    let report = pssh.run();
    for l in ["n0", "n1", "n2"] {
        assert_eq!(kind(&pssh, l), Some(ErrorKind::Command), "{l}");
    }
    assert_eq!(kind(&pssh, "n3"), None, "{report}");
    assert_eq!(statuses(&report, "n3"), [TaskStatus::Succeeded, TaskStatus::Succeeded]);
    for l in names(4..10) {
        assert!(!ran(&log, &l), "{l} started after the threshold: {:?}", log.events());
        assert_eq!(
            statuses(&report, &l),
            [TaskStatus::Cancelled, TaskStatus::Cancelled],
            "{l}"
        );
        let e = pssh.get_error(&l).unwrap().expect("an error");
        assert_eq!(e.kind(), ErrorKind::Cancelled);
        assert!(
            e.to_string()
                .contains("not started: 3 of 10 labels failed, above max_failures 2"),
            "{e}"
        );
        // Each task carries the error too.
        for t in tasks(&report, &l) {
            assert!(t.error().unwrap().to_string().contains("above max_failures 2"));
        }
    }
}

#[test]
fn max_failures_as_a_percentage_names_the_threshold_in_labels() {
    // 20% of 10 labels is 2: the third failure trips it.
    let log = FaultLog::new();
    let mut pssh = fleet(
        Parallel::builder().waves(1).max_failures(Amount::percent(20)),
        10,
        &[0, 1, 2],
        &log,
    );
    pssh.all(Command::new(WORK)).unwrap();
    let report = pssh.run();
    assert!(ran(&log, "n2"));
    assert!(!ran(&log, "n3"), "{:?}", log.events());
    let e = report.label("n9").unwrap().error().unwrap();
    assert!(
        e.to_string()
            .contains("not started: 3 of 10 labels failed, above max_failures 20% (2 of 10 labels)"),
        "{e}"
    );
}

#[test]
fn at_the_threshold_nothing_is_stopped() {
    // Two failures are not more than 2: every label runs.
    let log = FaultLog::new();
    let mut pssh = fleet(Parallel::builder().waves(1).max_failures(2), 5, &[0, 1], &log);
    pssh.all(Command::new(WORK)).unwrap();
    let report = pssh.run();
    for l in names(0..5) {
        assert!(ran(&log, &l), "{l}");
    }
    assert_eq!(report.labels().iter().filter(|l| l.error().is_some()).count(), 2);
}

#[test]
fn max_failures_without_waves_stops_labels_waiting_for_a_worker() {
    // One worker: n0 fails while n1..n3 wait for the slot, never started.
    let log = FaultLog::new();
    let mut pssh = fleet(Parallel::builder().workers(1).max_failures(0), 4, &[0], &log);
    pssh.all(Command::new(WORK)).unwrap();
    let report = pssh.run();
    assert_eq!(log.ran("n0"), [WORK]);
    for l in names(1..4) {
        assert!(!ran(&log, &l), "{l}: {:?}", log.events());
        let e = report.label(&l).unwrap().error().unwrap();
        assert_eq!(e.kind(), ErrorKind::Cancelled);
        assert!(
            e.to_string().contains("1 of 4 labels failed, above max_failures 0"),
            "{e}"
        );
    }
}

#[test]
fn max_failures_without_a_limit_lets_started_labels_finish() {
    // No waves, no workers limit: every label starts at once, so none is
    // stopped, even though n0 fails at once with max_failures 0.
    let log = FaultLog::new();
    let mut pssh = Parallel::builder().max_failures(0).build().unwrap();
    pssh.add_host("n0", Host::fault(Fault::new().exit_code(WORK, 1).log(&log)))
        .unwrap();
    for l in ["n1", "n2"] {
        pssh.add_host(l, Host::fault(Fault::new().delay(Duration::from_millis(100)).log(&log)))
            .unwrap();
    }
    pssh.all(Command::new(WORK)).unwrap();
    pssh.push("n1,n2", Command::new("next")).unwrap();
    let report = pssh.run();
    assert_eq!(kind(&pssh, "n0"), Some(ErrorKind::Command));
    for l in ["n1", "n2"] {
        assert_eq!(
            statuses(&report, l),
            [TaskStatus::Succeeded, TaskStatus::Succeeded],
            "{l}"
        );
    }
}

#[test]
fn ignored_failures_do_not_count() {
    let log = FaultLog::new();
    let mut pssh = fleet(
        Parallel::builder().waves(1).max_failures(0).on_error(OnError::Ignore),
        3,
        &[0, 1],
        &log,
    );
    pssh.all(Command::new(WORK)).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert!(ran(&log, "n2"));
}

#[test]
fn a_join_on_a_later_wave_is_reported_by_validate_and_fails_at_run_time() {
    let log = FaultLog::new();
    let mut pssh = fleet(Parallel::builder().waves(2), 4, &[], &log);
    pssh.all(Command::new(WORK)).unwrap();
    pssh.push("n1", Join::new("n3")).unwrap();
    pssh.push("n1", Command::new("after")).unwrap();
    let e = pssh.validate().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig);
    assert!(
        e.to_string().contains("label n1 (wave 1) joins on label n3 (wave 2)"),
        "{e}"
    );
    let report = pssh.run();
    let e = report.label("n1").unwrap().error().unwrap();
    assert_eq!(e.kind(), ErrorKind::JoinFailed);
    assert!(e.to_string().contains("waits for label n3 of wave 2"), "{e}");
    assert_eq!(
        statuses(&report, "n1"),
        [TaskStatus::Succeeded, TaskStatus::Failed, TaskStatus::Cancelled]
    );
    // The run did not hang, and the later wave still ran.
    assert!(ran(&log, "n3"));
    assert_eq!(log.ran("n1"), [WORK]);
}

#[test]
fn a_join_on_an_earlier_wave_is_fine() {
    let log = FaultLog::new();
    let mut pssh = fleet(Parallel::builder().waves(2), 4, &[], &log);
    pssh.all(Command::new(WORK)).unwrap();
    pssh.push("n3", Join::new("n0")).unwrap();
    pssh.push("n3", Command::new("after")).unwrap();
    pssh.validate().unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert_eq!(log.ran("n3"), [WORK, "after"]);
}

#[test]
fn cancel_and_abort_all_stop_the_held_waves() {
    let log = FaultLog::new();
    let mut pssh = fleet(Parallel::builder().waves(1), 3, &[], &log);
    pssh.push("n0", Command::new("long")).unwrap();
    pssh.all(Command::new(WORK)).unwrap();
    let handle = pssh.start();
    let c = handle.canceller();
    assert!(wait_until(Duration::from_secs(5), || ran(&log, "n0")));
    c.cancel();
    let report = handle.wait();
    for l in ["n1", "n2"] {
        assert!(!ran(&log, l));
        assert_eq!(statuses(&report, l), [TaskStatus::Cancelled], "{l}");
        assert_eq!(report.label(l).unwrap().error().unwrap().kind(), ErrorKind::Cancelled);
    }

    let log = FaultLog::new();
    let mut pssh = fleet(Parallel::builder().waves(1).on_error(OnError::AbortAll), 3, &[0], &log);
    pssh.all(Command::new(WORK)).unwrap();
    let report = pssh.run();
    for l in ["n1", "n2"] {
        assert!(!ran(&log, l));
        assert_eq!(
            report.label(l).unwrap().error().unwrap().kind(),
            ErrorKind::Aborted,
            "{l}"
        );
    }
}

#[test]
fn every_task_is_reported_exactly_once_in_events_and_report() {
    let log = FaultLog::new();
    let mut pssh = fleet(
        Parallel::builder().waves(2).workers(1).max_failures(1),
        8,
        &[1, 2],
        &log,
    );
    pssh.all(Command::new(WORK)).unwrap();
    pssh.push("n5", Join::new("n0")).unwrap();
    pssh.all(Command::new("second")).unwrap();
    let queued = pssh.queued_tasks();
    let handle = pssh.start();
    let events = handle.events().clone();
    let report: Report = handle.wait();
    let mut finished: HashMap<(String, usize), usize> = HashMap::new();
    let mut done: HashMap<String, usize> = HashMap::new();
    for ev in events.try_iter() {
        match ev {
            RunEvent::Finished { label, report } => {
                *finished.entry((label.to_string(), report.seq())).or_default() += 1
            }
            RunEvent::LabelDone { label, .. } => *done.entry(label.to_string()).or_default() += 1,
            _ => {}
        }
    }
    let reported: usize = report.labels().iter().map(|l| l.tasks().len()).sum();
    assert_eq!(reported, queued, "{report}");
    assert_eq!(finished.len(), queued);
    assert!(finished.values().all(|&n| n == 1), "{finished:?}");
    assert_eq!(done.len(), 8);
    assert!(done.values().all(|&n| n == 1), "{done:?}");
    // n2's failure is the second: waves 3 and 4 never start.
    for l in names(4..8) {
        assert!(!ran(&log, &l), "{l}");
    }
}

#[test]
fn bad_amounts_are_build_errors() {
    for b in [
        Parallel::builder().waves(0),
        Parallel::builder().waves(Amount::percent(0)),
        Parallel::builder().waves(Amount::percent(101)),
        Parallel::builder().max_failures(Amount::percent(101)),
    ] {
        let e = b.build().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
        assert!(
            e.to_string().contains("waves") || e.to_string().contains("max_failures"),
            "{e}"
        );
    }
    Parallel::builder().max_failures(0).build().unwrap();
    Parallel::builder().waves(Amount::percent(100)).build().unwrap();
}
