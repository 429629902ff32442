//! SEMANTICS.md section 6: error kinds and policies.

use std::sync::Arc;
use std::time::Duration;

use recorder::Recorder;
use ssh_parallel::fault::{Fault, FaultEvent, FaultLog};
use ssh_parallel::TaskStatus::*;
use ssh_parallel::{Command, ErrorKind, Goto, Here, Host, Join, OnError, Parallel, ScpGet, Sub};

/// A tiny shared recorder for closures.
mod recorder {
    use std::sync::{Arc, Mutex};

    pub struct Recorder<T>(Arc<Mutex<Vec<T>>>);

    impl<T> Default for Recorder<T> {
        fn default() -> Self {
            Recorder(Arc::default())
        }
    }

    impl<T> Clone for Recorder<T> {
        fn clone(&self) -> Self {
            Recorder(self.0.clone())
        }
    }

    impl<T: Clone> Recorder<T> {
        pub fn push(&self, v: T) {
            self.0.lock().unwrap().push(v);
        }
        pub fn get(&self) -> Vec<T> {
            self.0.lock().unwrap().clone()
        }
    }
}

mod common;
use common::*;

fn failing(log: &FaultLog, cmd: &str, code: i32) -> Host {
    Host::fault(Fault::new().exit_code(cmd, code).log(log))
}

/// A local shell command that fails (exit 1) until it has run `n` times in all.
fn succeed_on_run(counter: &std::path::Path, n: u32) -> Command {
    let c = counter.display();
    Command::new(format!(
        "n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; [ $n -ge {n} ]"
    ))
}

fn runs(counter: &std::path::Path) -> u32 {
    std::fs::read_to_string(counter).unwrap().trim().parse().unwrap()
}

// ---- error kinds ---------------------------------------------------------

#[test]
fn command_error_records_exit_status() {
    let mut pssh = Parallel::new();
    pssh.add_host("a", Host::local()).unwrap();
    pssh.push("a", Command::new("exit 3")).unwrap();
    let report = pssh.run();
    let e = pssh.get_error("a").unwrap().expect("failed");
    assert_eq!(e.kind(), ErrorKind::Command);
    assert_eq!(e.exit_code(), Some(3));
    assert_eq!(e.signal(), None);
    assert_eq!(e.label(), Some("a"));
    assert!(e.task().is_some_and(|t| t.contains("exit 3")), "{e:?}");
    assert!(e.to_string().contains('3'), "{e}");
    assert_eq!(report.label("a").unwrap().tasks()[0].exit_code(), Some(3));
}

#[test]
fn command_error_records_signal() {
    let mut pssh = Parallel::new();
    pssh.add_host("a", Host::local()).unwrap();
    pssh.push("a", Command::new("kill -9 $$")).unwrap();
    let report = pssh.run();
    let e = pssh.get_error("a").unwrap().expect("failed");
    assert_eq!(e.kind(), ErrorKind::Command);
    assert_eq!(e.signal(), Some(9));
    assert_eq!(e.exit_code(), None);
    assert!(e.to_string().contains('9'), "{e}");
    assert_eq!(report.label("a").unwrap().tasks()[0].signal(), Some(9));
}

#[test]
fn transfer_error_kind_carries_cause() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("does-not-exist");
    let mut pssh = Parallel::new();
    pssh.add_host("a", Host::local()).unwrap();
    pssh.push(
        "a",
        ScpGet::new(
            missing.display().to_string(),
            dir.path().join("out").display().to_string(),
        ),
    )
    .unwrap();
    pssh.run();
    let e = pssh.get_error("a").unwrap().expect("failed");
    assert_eq!(e.kind(), ErrorKind::Transfer);
    assert_eq!(e.label(), Some("a"));
    assert!(e.task().is_some_and(|t| t.contains("scp_get")), "{e:?}");
    assert!(!e.detail().is_empty());
}

#[test]
fn local_error_kind_for_sub_error_and_panic() {
    let mut pssh = Parallel::new();
    pssh.add_host("err", Host::fault(Fault::new())).unwrap();
    pssh.add_host("panic", Host::fault(Fault::new())).unwrap();
    pssh.push("err", Sub::new(|_| Err("it broke".into()))).unwrap();
    pssh.push("panic", Sub::new(|_| panic!("kaboom"))).unwrap();
    let report = pssh.run();
    assert!(!report.success());
    let e = pssh.get_error("err").unwrap().expect("failed");
    assert_eq!(e.kind(), ErrorKind::Local);
    assert!(e.to_string().contains("it broke"), "{e}");
    assert_eq!(e.label(), Some("err"));
    assert!(e.task().is_some(), "{e:?}");
    let e = pssh.get_error("panic").unwrap().expect("failed");
    assert_eq!(e.kind(), ErrorKind::Local);
    assert!(e.to_string().contains("kaboom"), "{e}");
}

#[test]
fn timeout_error_kind() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host(
        "a",
        Host::fault(Fault::new().delay_on("slow", Duration::from_secs(10)).log(&log)),
    )
    .unwrap();
    pssh.push("a", Command::new("slow").timeout(Duration::from_millis(30)))
        .unwrap();
    let report = pssh.run();
    let e = pssh.get_error("a").unwrap().expect("failed");
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert_eq!(e.label(), Some("a"));
    assert!(e.task().is_some_and(|t| t.contains("slow")), "{e:?}");
    assert!(report.duration() < Duration::from_secs(9));
}

#[test]
fn connect_error_kind() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", Host::fault(Fault::new().fail_connects(1).log(&log)))
        .unwrap();
    pssh.push("a", Command::new("x")).unwrap();
    let report = pssh.run();
    let e = pssh.get_error("a").unwrap().expect("failed");
    assert_eq!(e.kind(), ErrorKind::Connect);
    assert_eq!(e.label(), Some("a"));
    assert!(e.task().is_some_and(|t| t.contains('x')), "{e:?}");
    assert!(log.ran("a").is_empty());
    assert_eq!(statuses(&report, "a"), [Failed]);
}

#[test]
fn aborted_error_carries_label_and_task() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host(
        "a",
        Host::fault(
            Fault::new()
                .exit_code("boom", 1)
                .delay_on("boom", Duration::from_millis(100))
                .log(&log),
        ),
    )
    .unwrap();
    pssh.add_host(
        "b",
        Host::fault(Fault::new().delay_on("b1", Duration::from_millis(300)).log(&log)),
    )
    .unwrap();
    pssh.push("a", Command::new("boom").on_error(OnError::AbortAll))
        .unwrap();
    pssh.push("b", Command::new("b1")).unwrap();
    pssh.push("b", Command::new("b2")).unwrap();
    pssh.run();
    let e = pssh.get_error("b").unwrap().expect("b aborted");
    assert_eq!(e.kind(), ErrorKind::Aborted);
    assert_eq!(e.label(), Some("b"));
    assert!(e.to_string().contains('a'), "{e}");
    // "Each error carries its label, the task, and a readable message."
    assert!(
        e.task().is_some_and(|t| t.contains("b2")),
        "Aborted error names no task: {e:?}"
    );
}

// ---- policy lookup -------------------------------------------------------

fn recording(rec: &Recorder<(String, String)>, who: &str, then: OnError) -> OnError {
    let rec = rec.clone();
    let who = who.to_owned();
    OnError::callback(move |ctx| {
        rec.push((who.clone(), ctx.label().to_owned()));
        then.clone()
    })
}

#[test]
fn policy_lookup_task_then_host_then_global_then_abort() {
    let rec = Recorder::default();
    let log = FaultLog::new();
    let mut pssh = Parallel::builder()
        .on_error(recording(&rec, "global", OnError::Ignore))
        .build()
        .unwrap();
    pssh.add_host(
        "t",
        failing(&log, "boom", 1).on_error(recording(&rec, "host-t", OnError::Ignore)),
    )
    .unwrap();
    pssh.add_host(
        "h",
        failing(&log, "boom", 1).on_error(recording(&rec, "host-h", OnError::Ignore)),
    )
    .unwrap();
    pssh.add_host("g", failing(&log, "boom", 1)).unwrap();
    pssh.push(
        "t",
        Command::new("boom").on_error(recording(&rec, "task", OnError::Ignore)),
    )
    .unwrap();
    pssh.push("h", Command::new("boom")).unwrap();
    pssh.push("g", Command::new("boom")).unwrap();
    pssh.all(Command::new("next")).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    let mut seen = rec.get();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("global".to_owned(), "g".to_owned()),
            ("host-h".to_owned(), "h".to_owned()),
            ("task".to_owned(), "t".to_owned()),
        ]
    );
    for l in ["t", "h", "g"] {
        assert_eq!(log.ran(l), ["boom", "next"], "{l}");
    }

    // Nothing set anywhere: Abort (the rest dropped, joins on it fail).
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", failing(&log, "boom", 1)).unwrap();
    pssh.add_host("w", host(&log)).unwrap();
    pssh.push("a", Command::new("boom")).unwrap();
    pssh.push("a", Command::new("a2")).unwrap();
    pssh.push("w", Join::new("a")).unwrap();
    let report = pssh.run();
    assert_eq!(kind(&pssh, "a"), Some(ErrorKind::Command));
    assert_eq!(statuses(&report, "a"), [Failed, Cancelled]);
    assert_eq!(kind(&pssh, "w"), Some(ErrorKind::JoinFailed));
}

#[test]
fn policy_task_overrides_host_and_host_overrides_global() {
    let log = FaultLog::new();
    let mut pssh = Parallel::builder().on_error(OnError::Abort).build().unwrap();
    // Host says Ignore, task says Done: Done.
    pssh.add_host("t", failing(&log, "boom", 1).on_error(OnError::Ignore))
        .unwrap();
    // Host says Ignore, global Abort: Ignore.
    pssh.add_host("h", failing(&log, "boom", 1).on_error(OnError::Ignore))
        .unwrap();
    pssh.push("t", Command::new("boom").on_error(OnError::Done)).unwrap();
    pssh.push("h", Command::new("boom")).unwrap();
    pssh.all(Command::new("next")).unwrap();
    let report = pssh.run();
    assert_eq!(kind(&pssh, "t"), Some(ErrorKind::Command));
    assert_eq!(log.ran("t"), ["boom"]);
    assert_eq!(statuses(&report, "t"), [Failed, Cancelled]);
    assert_eq!(kind(&pssh, "h"), None);
    assert_eq!(log.ran("h"), ["boom", "next"]);
}

// ---- the policies ----------------------------------------------------------

#[test]
fn ignore_records_failure_but_label_succeeds() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", failing(&log, "boom", 3)).unwrap();
    pssh.push("a", Command::new("boom").on_error(OnError::Ignore)).unwrap();
    pssh.push("a", Command::new("next")).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert_eq!(kind(&pssh, "a"), None);
    assert!(pssh.get_errors().is_empty());
    assert_eq!(log.ran("a"), ["boom", "next"]);
    assert_eq!(statuses(&report, "a"), [Ignored, Succeeded]);
    let t = &report.label("a").unwrap().tasks()[0];
    let e = t.error().expect("the ignored failure is recorded");
    assert_eq!(e.kind(), ErrorKind::Command);
    assert_eq!(e.exit_code(), Some(3));
    assert_eq!(t.exit_code(), Some(3));
    assert_eq!(report.count(Ignored), 1);
}

#[test]
fn done_drops_rest_records_error_and_releases_joins_as_success() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", failing(&log, "boom", 1)).unwrap();
    pssh.add_host("w", host(&log)).unwrap();
    pssh.push("a", Command::new("boom").on_error(OnError::Done)).unwrap();
    pssh.push("a", Command::new("a2")).unwrap();
    pssh.push("w", Join::new("a")).unwrap();
    pssh.push("w", Command::new("w1")).unwrap();
    pssh.push("a", Command::new("a3")).unwrap();
    let report = pssh.run();
    assert!(!report.success());
    assert_eq!(kind(&pssh, "a"), Some(ErrorKind::Command));
    assert_eq!(log.ran("a"), ["boom"]);
    assert_eq!(statuses(&report, "a"), [Failed, Cancelled, Cancelled]);
    assert_eq!(kind(&pssh, "w"), None);
    assert_eq!(log.ran("w"), ["w1"]);
    assert_eq!(pssh.get_errors().len(), 1);
}

#[test]
fn abort_drops_rest_records_error_and_fails_joins() {
    let log = FaultLog::new();
    let mut pssh = Parallel::builder().on_error(OnError::Ignore).build().unwrap();
    pssh.add_host("a", failing(&log, "boom", 1)).unwrap();
    pssh.add_host("w", host(&log).on_error(OnError::Abort)).unwrap();
    pssh.push("a", Command::new("boom").on_error(OnError::Abort)).unwrap();
    pssh.push("a", Command::new("a2")).unwrap();
    pssh.push("w", Join::new("a")).unwrap();
    pssh.push("w", Command::new("w1")).unwrap();
    let report = pssh.run();
    assert_eq!(kind(&pssh, "a"), Some(ErrorKind::Command));
    assert_eq!(log.ran("a"), ["boom"]);
    assert_eq!(statuses(&report, "a"), [Failed, Cancelled]);
    assert_eq!(kind(&pssh, "w"), Some(ErrorKind::JoinFailed));
    assert!(log.ran("w").is_empty());
}

#[test]
fn abort_all_stops_other_labels_at_task_boundary_with_aborted() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    // a fails after 150ms, while b's first task (500ms) is running.
    pssh.add_host(
        "a",
        Host::fault(
            Fault::new()
                .exit_code("boom", 1)
                .delay_on("boom", Duration::from_millis(150))
                .log(&log),
        ),
    )
    .unwrap();
    pssh.add_host(
        "b",
        Host::fault(Fault::new().delay_on("b1", Duration::from_millis(500)).log(&log)),
    )
    .unwrap();
    pssh.add_host("c", host(&log)).unwrap();
    pssh.add_host("done", host(&log)).unwrap();
    pssh.push("a", Command::new("boom").on_error(OnError::AbortAll))
        .unwrap();
    pssh.push("a", Command::new("a2")).unwrap();
    pssh.push("b", Command::new("b1")).unwrap();
    pssh.push("b", Command::new("b2")).unwrap();
    // c waits on b, so it is idle (waiting on a join) when a fails.
    pssh.push("c", Join::new("b")).unwrap();
    pssh.push("c", Command::new("c1")).unwrap();
    // `done` finishes its work before a fails.
    pssh.push("done", Command::new("d1")).unwrap();
    let report = pssh.run();
    assert!(!report.success());

    assert_eq!(kind(&pssh, "a"), Some(ErrorKind::Command));
    assert_eq!(statuses(&report, "a"), [Failed, Cancelled]);

    // b's running task finished first; its next one never started.
    assert_eq!(log.ran("b"), ["b1"]);
    assert!(log
        .events()
        .contains(&("b".to_owned(), FaultEvent::Finished("b1".into(), 0))));
    assert_eq!(statuses(&report, "b"), [Succeeded, Cancelled]);
    assert_eq!(kind(&pssh, "b"), Some(ErrorKind::Aborted));
    let e = pssh.get_error("b").unwrap().unwrap();
    assert_eq!(e.label(), Some("b"));

    assert!(log.ran("c").is_empty());
    assert_eq!(kind(&pssh, "c"), Some(ErrorKind::Aborted));
    assert!(!statuses(&report, "c").contains(&Succeeded));

    assert_eq!(log.ran("done"), ["d1"]);
    assert_eq!(kind(&pssh, "done"), None);
}

#[test]
fn aborted_error_is_always_handled_as_abort() {
    let consulted = Recorder::default();
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host(
        "a",
        Host::fault(
            Fault::new()
                .exit_code("boom", 1)
                .delay_on("boom", Duration::from_millis(100))
                .log(&log),
        ),
    )
    .unwrap();
    // b would ignore (or retry) anything: an Aborted error still stops it.
    let c = consulted.clone();
    let policy = OnError::callback(move |ctx| {
        c.push(ctx.error().kind());
        OnError::Ignore
    });
    pssh.add_host(
        "b",
        Host::fault(Fault::new().delay_on("b1", Duration::from_millis(400)).log(&log)).on_error(policy),
    )
    .unwrap();
    pssh.add_host("r", host(&log).on_error(OnError::Retry)).unwrap();
    pssh.push("a", Command::new("boom").on_error(OnError::AbortAll))
        .unwrap();
    pssh.push("b", Command::new("b1")).unwrap();
    pssh.push("b", Command::new("b2")).unwrap();
    pssh.push("r", Join::new("b")).unwrap();
    pssh.push("r", Command::new("r1")).unwrap();
    let report = pssh.run();
    assert_eq!(kind(&pssh, "b"), Some(ErrorKind::Aborted));
    assert_eq!(log.ran("b"), ["b1"]);
    assert_eq!(statuses(&report, "b"), [Succeeded, Cancelled]);
    assert!(
        !consulted.get().contains(&ErrorKind::Aborted),
        "the policy was consulted for Aborted: {:?}",
        consulted.get()
    );
    assert_eq!(kind(&pssh, "r"), Some(ErrorKind::Aborted));
    assert!(log.ran("r").is_empty());
}

#[test]
fn retry_unbounded_reruns_until_success() {
    let dir = tempfile::tempdir().unwrap();
    let counter = dir.path().join("n");
    let mut pssh = Parallel::new();
    pssh.add_host("a", Host::local()).unwrap();
    pssh.push("a", succeed_on_run(&counter, 4).on_error(OnError::Retry))
        .unwrap();
    pssh.push("a", Command::new("true")).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert_eq!(runs(&counter), 4);
    let t = &report.label("a").unwrap().tasks()[0];
    assert_eq!(t.status(), Succeeded);
    assert_eq!(t.attempts(), 4);
    assert_eq!(statuses(&report, "a"), [Succeeded, Succeeded]);
}

#[test]
fn retry_unbounded_reruns_sub_until_success() {
    let seen = Recorder::default();
    let mut pssh = Parallel::builder().on_error(OnError::Retry).build().unwrap();
    pssh.add_host("a", Host::fault(Fault::new())).unwrap();
    let s = seen.clone();
    pssh.push(
        "a",
        Sub::new(move |ctx| {
            s.push(ctx.attempt());
            if ctx.attempt() < 5 {
                Err("not yet".into())
            } else {
                Ok(())
            }
        }),
    )
    .unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert_eq!(seen.get(), [1, 2, 3, 4, 5]);
    assert_eq!(report.label("a").unwrap().tasks()[0].attempts(), 5);
}

#[test]
fn retry_reruns_task_after_connection_failures() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", Host::fault(Fault::new().fail_connects(3).log(&log)))
        .unwrap();
    pssh.push("a", Command::new("x").on_error(OnError::Retry)).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert_eq!(log.connect_attempts("a"), 4);
    assert_eq!(log.ran("a"), ["x"]);
}

#[test]
fn retry_bounded_stops_after_max_attempts_with_delay() {
    let log = FaultLog::new();
    let delay = Duration::from_millis(40);
    let mut pssh = Parallel::new();
    pssh.add_host("a", failing(&log, "boom", 1)).unwrap();
    pssh.push("a", Command::new("boom").on_error(OnError::retry(3).delay(delay)))
        .unwrap();
    pssh.push("a", Command::new("next")).unwrap();
    let report = pssh.run();
    assert_eq!(log.ran("a"), ["boom", "boom", "boom"]);
    let e = pssh.get_error("a").unwrap().expect("exhausted retries abort");
    assert_eq!(e.kind(), ErrorKind::Command);
    assert_eq!(statuses(&report, "a"), [Failed, Cancelled]);
    assert_eq!(report.label("a").unwrap().tasks()[0].attempts(), 3);
    // The attempts were spaced by at least the delay (a lower bound only).
    let starts: Vec<_> = log
        .timed_events()
        .into_iter()
        .filter(|(l, e, _)| l == "a" && matches!(e, FaultEvent::Run(_)))
        .map(|(_, _, t)| t)
        .collect();
    assert_eq!(starts.len(), 3);
    for w in starts.windows(2) {
        assert!(w[1] - w[0] >= delay, "attempts {:?} apart", w[1] - w[0]);
    }
}

#[test]
fn retry_bounded_succeeds_within_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let counter = dir.path().join("n");
    let mut pssh = Parallel::new();
    pssh.add_host("a", Host::local()).unwrap();
    pssh.push("a", succeed_on_run(&counter, 3).on_error(OnError::retry(5)))
        .unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert_eq!(runs(&counter), 3);
    assert_eq!(report.label("a").unwrap().tasks()[0].attempts(), 3);
}

#[test]
fn retry_bounded_then_policy_applies_when_exhausted() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", failing(&log, "boom", 1)).unwrap();
    pssh.push(
        "a",
        Command::new("boom").on_error(OnError::retry(2).then(OnError::Ignore)),
    )
    .unwrap();
    pssh.push("a", Command::new("next")).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert_eq!(log.ran("a"), ["boom", "boom", "next"]);
    assert_eq!(statuses(&report, "a"), [Ignored, Succeeded]);
}

#[test]
fn retry_bounded_counts_connection_failures_as_attempts() {
    // Every connection attempt fails (for a long while): a bounded retry of 3
    // must give up after 3 attempts with a Connect error.
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", Host::fault(Fault::new().fail_connects(12).log(&log)))
        .unwrap();
    pssh.push("a", Command::new("x").on_error(OnError::retry(3))).unwrap();
    let report = pssh.run();
    assert_eq!(
        log.connect_attempts("a"),
        3,
        "bounded retry made {} connection attempts",
        log.connect_attempts("a")
    );
    assert_eq!(kind(&pssh, "a"), Some(ErrorKind::Connect));
    assert!(log.ran("a").is_empty());
    assert_eq!(statuses(&report, "a"), [Failed]);
}

#[test]
fn retried_goto_failure_is_ignored() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("g", host(&log)).unwrap();
    pssh.add_host("o", failing(&log, "check", 1)).unwrap();
    pssh.add_host("b", failing(&log, "check", 1)).unwrap();
    pssh.push("g", Goto::new("NOPE").on_error(OnError::Retry)).unwrap();
    pssh.push("o", Command::new("check").or_goto("NOPE").on_error(OnError::Retry))
        .unwrap();
    pssh.push("b", Command::new("check").or_goto("NOPE").on_error(OnError::retry(5)))
        .unwrap();
    pssh.all(Command::new("next")).unwrap();
    pssh.all(Here::new("LATER")).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert_eq!(log.ran("g"), ["next"]);
    assert_eq!(log.ran("o"), ["check", "next"]);
    assert_eq!(log.ran("b"), ["check", "next"]);
    for l in ["g", "o", "b"] {
        assert_eq!(statuses(&report, l), [Ignored, Succeeded, Succeeded], "{l}");
        let t = &report.label(l).unwrap().tasks()[0];
        assert_eq!(t.error().map(|e| e.kind()), Some(ErrorKind::GotoFailed), "{l}");
    }
}

#[test]
fn callback_policy_gets_label_error_task_attempt() {
    let seen: Recorder<(String, ErrorKind, String, u32, Option<i32>)> = Recorder::default();
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", failing(&log, "boom", 4)).unwrap();
    pssh.add_host("w", host(&log)).unwrap();
    let s = seen.clone();
    let policy = OnError::callback(move |ctx| {
        s.push((
            ctx.label().to_owned(),
            ctx.error().kind(),
            ctx.task().to_owned(),
            ctx.attempt(),
            ctx.error().exit_code(),
        ));
        if ctx.attempt() < 3 {
            OnError::Retry
        } else {
            OnError::Done
        }
    });
    pssh.push("a", Command::new("ok")).unwrap();
    pssh.push("a", Command::new("boom").on_error(policy)).unwrap();
    pssh.push("a", Command::new("a3")).unwrap();
    pssh.push("w", Join::new("a")).unwrap();
    pssh.push("w", Command::new("w1")).unwrap();
    let report = pssh.run();
    let seen = seen.get();
    assert_eq!(seen.len(), 3, "{seen:?}");
    for (i, (label, kind_, task, attempt, code)) in seen.iter().enumerate() {
        assert_eq!(label, "a");
        assert_eq!(*kind_, ErrorKind::Command);
        assert!(task.contains("boom"), "{task}");
        assert_eq!(*attempt, i as u32 + 1);
        assert_eq!(*code, Some(4));
    }
    assert_eq!(log.ran("a"), ["ok", "boom", "boom", "boom"]);
    // The callback's final answer (Done) is applied: joins on a succeed.
    assert_eq!(kind(&pssh, "a"), Some(ErrorKind::Command));
    assert_eq!(statuses(&report, "a"), [Succeeded, Failed, Cancelled]);
    assert_eq!(kind(&pssh, "w"), None);
    assert_eq!(log.ran("w"), ["w1"]);
}

#[test]
fn callback_policy_can_return_every_policy() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    for l in ["ignore", "done", "abort"] {
        pssh.add_host(l, failing(&log, "boom", 1)).unwrap();
    }
    let answer = |p: OnError| OnError::callback(move |_| p.clone());
    pssh.push("ignore", Command::new("boom").on_error(answer(OnError::Ignore)))
        .unwrap();
    pssh.push("done", Command::new("boom").on_error(answer(OnError::Done)))
        .unwrap();
    pssh.push("abort", Command::new("boom").on_error(answer(OnError::Abort)))
        .unwrap();
    pssh.all(Command::new("next")).unwrap();
    let report = pssh.run();
    assert_eq!(kind(&pssh, "ignore"), None);
    assert_eq!(log.ran("ignore"), ["boom", "next"]);
    assert_eq!(kind(&pssh, "done"), Some(ErrorKind::Command));
    assert_eq!(log.ran("done"), ["boom"]);
    assert_eq!(kind(&pssh, "abort"), Some(ErrorKind::Command));
    assert_eq!(statuses(&report, "abort"), [Failed, Cancelled]);

    // A callback answering AbortAll stops the others with Aborted.
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", failing(&log, "boom", 1)).unwrap();
    pssh.add_host("other", host(&log)).unwrap();
    pssh.push("a", Command::new("boom").on_error(answer(OnError::AbortAll)))
        .unwrap();
    pssh.push("other", Join::new("a")).unwrap();
    pssh.push("other", Command::new("o1")).unwrap();
    pssh.run();
    assert_eq!(kind(&pssh, "a"), Some(ErrorKind::Command));
    assert!(matches!(
        kind(&pssh, "other"),
        Some(ErrorKind::Aborted | ErrorKind::JoinFailed)
    ));
    assert!(log.ran("other").is_empty());
}

#[test]
fn callback_for_join_failure_gets_real_attempt_number() {
    let seen = Recorder::default();
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", failing(&log, "boom", 1)).unwrap();
    pssh.add_host("w", host(&log)).unwrap();
    let s = seen.clone();
    let policy = OnError::callback(move |ctx| {
        s.push((ctx.error().kind(), ctx.attempt()));
        OnError::Done
    });
    pssh.push("a", Command::new("boom")).unwrap();
    pssh.push("w", Join::new("a").on_error(policy)).unwrap();
    pssh.run();
    assert_eq!(kind(&pssh, "w"), Some(ErrorKind::JoinFailed));
    assert_eq!(
        seen.get(),
        [(ErrorKind::JoinFailed, 1)],
        "a join that failed once is attempt 1"
    );
}

#[test]
fn policies_are_shared_across_labels_via_arc_callbacks() {
    // One callback value on the scheduler serves every label.
    let seen = Recorder::default();
    let s = seen.clone();
    let policy = OnError::Callback(Arc::new(move |ctx| {
        s.push(ctx.label().to_owned());
        OnError::Ignore
    }));
    let log = FaultLog::new();
    let mut pssh = Parallel::builder().on_error(policy).build().unwrap();
    for l in ["x", "y", "z"] {
        pssh.add_host(l, failing(&log, "boom", 1)).unwrap();
    }
    pssh.all(Command::new("boom")).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    let mut got = seen.get();
    got.sort();
    assert_eq!(got, ["x", "y", "z"]);
    for l in ["x", "y", "z"] {
        assert_eq!(statuses(&report, l), [Ignored]);
    }
}

#[test]
fn abort_all_interrupts_a_retry_delay() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host(
        "a",
        Host::fault(
            Fault::new()
                .exit_code("boom", 1)
                .delay_on("boom", Duration::from_millis(100))
                .log(&log),
        ),
    )
    .unwrap();
    pssh.add_host("r", failing(&log, "flaky", 1)).unwrap();
    pssh.push("a", Command::new("boom").on_error(OnError::AbortAll))
        .unwrap();
    pssh.push(
        "r",
        Command::new("flaky").on_error(OnError::retry_forever().delay(Duration::from_secs(20))),
    )
    .unwrap();
    let report = pssh.run();
    assert_eq!(kind(&pssh, "r"), Some(ErrorKind::Aborted));
    assert_eq!(log.ran("r"), ["flaky"]);
    assert!(
        report.duration() < Duration::from_secs(10),
        "took {:?}",
        report.duration()
    );
}

#[test]
fn abort_all_stops_labels_waiting_for_a_worker_slot() {
    let log = FaultLog::new();
    let mut pssh = Parallel::builder().workers(1).build().unwrap();
    pssh.add_host("a", failing(&log, "boom", 1)).unwrap();
    pssh.add_host("b", host(&log)).unwrap();
    pssh.push("a", Command::new("boom").on_error(OnError::AbortAll))
        .unwrap();
    pssh.push("b", Command::new("b1")).unwrap();
    let report = pssh.run();
    assert_eq!(kind(&pssh, "b"), Some(ErrorKind::Aborted));
    assert!(log.ran("b").is_empty());
    assert_eq!(statuses(&report, "b"), [Cancelled]);
}

#[test]
fn abort_all_stops_a_label_that_is_still_connecting() {
    // b is connecting (not running a task) when a fails: it is at a task
    // boundary and must not run b1.
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host(
        "a",
        Host::fault(
            Fault::new()
                .exit_code("boom", 1)
                .delay_on("boom", Duration::from_millis(50))
                .log(&log),
        ),
    )
    .unwrap();
    pssh.add_host(
        "b",
        Host::fault(Fault::new().connect_delay(Duration::from_millis(300)).log(&log)),
    )
    .unwrap();
    pssh.push("a", Command::new("boom").on_error(OnError::AbortAll))
        .unwrap();
    pssh.push("b", Command::new("b1")).unwrap();
    let report = pssh.run();
    assert_eq!(kind(&pssh, "b"), Some(ErrorKind::Aborted));
    assert!(log.ran("b").is_empty());
    assert_eq!(statuses(&report, "b"), [Cancelled]);
}

#[test]
fn retry_reruns_task_after_lost_connection() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", Host::fault(Fault::new().drop_on("x", 2).log(&log)))
        .unwrap();
    pssh.push("a", Command::new("x").on_error(OnError::Retry)).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert_eq!(log.ran("a"), ["x", "x", "x"]);
    assert_eq!(statuses(&report, "a"), [Succeeded]);
}

#[test]
fn retry_unbounded_with_delay_waits_between_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let counter = dir.path().join("n");
    let delay = Duration::from_millis(30);
    let mut pssh = Parallel::new();
    pssh.add_host("a", Host::local()).unwrap();
    pssh.push(
        "a",
        succeed_on_run(&counter, 3).on_error(OnError::retry_forever().delay(delay)),
    )
    .unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert_eq!(runs(&counter), 3);
    assert!(report.duration() >= delay * 2, "took {:?}", report.duration());
}

#[test]
fn or_goto_takes_precedence_over_retry_policy() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", failing(&log, "check", 1)).unwrap();
    pssh.push("a", Command::new("check").or_goto("X").on_error(OnError::Retry))
        .unwrap();
    pssh.push("a", Command::new("mid")).unwrap();
    pssh.push("a", Here::new("X")).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert_eq!(log.ran("a"), ["check"]);
    assert_eq!(statuses(&report, "a"), [Jumped, Skipped, Succeeded]);
}

#[test]
fn callback_may_return_another_callback() {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", failing(&log, "boom", 1)).unwrap();
    let policy = OnError::callback(|_| OnError::callback(|_| OnError::Ignore));
    pssh.push("a", Command::new("boom").on_error(policy)).unwrap();
    pssh.push("a", Command::new("next")).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert_eq!(log.ran("a"), ["boom", "next"]);
}
