//! SEMANTICS section 7 (connections, reconnections, limits), task timeouts and
//! the builder's validation, tested on the fault-injection transport.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ssh_parallel::fault::{Fault, FaultEvent, FaultLog};
use ssh_parallel::{Command, Connect, Error, ErrorKind, Host, Join, OnError, Parallel, Sub, TaskStatus};

type R = Result<(), Error>;
/// Snapshots of the fault log.
type Snapshots = Arc<Mutex<Vec<Vec<(String, FaultEvent)>>>>;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The error kind recorded for `label` in the last run.
fn kind(pssh: &Parallel, label: &str) -> Option<ErrorKind> {
    pssh.get_error(label).expect("known label").map(Error::kind)
}

/// `label`'s events, in order.
fn events_of(log: &FaultLog, label: &str) -> Vec<FaultEvent> {
    log.events()
        .into_iter()
        .filter(|(l, _)| l == label)
        .map(|(_, e)| e)
        .collect()
}

/// Index in the whole log of the first event `ev` of `label`.
fn first(events: &[(String, FaultEvent)], label: &str, ev: &FaultEvent) -> Option<usize> {
    events.iter().position(|(l, e)| l == label && e == ev)
}

fn run(s: &str) -> FaultEvent {
    FaultEvent::Run(s.to_owned())
}

fn finished(s: &str) -> FaultEvent {
    FaultEvent::Finished(s.to_owned(), 0)
}

// ---- reconnections -------------------------------------------------------

#[test]
fn reconnections_counted_per_task_then_host_then_global() -> R {
    let log = FaultLog::new();
    let mut pssh = Parallel::builder().reconnections(1).build()?;
    let f = |n| Fault::new().fail_connects(n).log(&log);
    // Global: 1 extra attempt.
    pssh.add_host("global_ok", Host::fault(f(1)))?;
    pssh.add_host("global_fail", Host::fault(f(2)))?;
    // Host: 3 extra attempts, overriding the global 1.
    pssh.add_host("host_ok", Host::fault(f(3)).reconnections(3))?;
    pssh.add_host("host_fail", Host::fault(f(4)).reconnections(3))?;
    // Host 0 overrides the global 1 too.
    pssh.add_host("host_zero", Host::fault(f(1)).reconnections(0))?;
    // Task: overrides host and global.
    pssh.add_host("task_ok", Host::fault(f(2)).reconnections(0))?;
    pssh.add_host("task_fail", Host::fault(f(3)).reconnections(0))?;
    pssh.add_host("task_zero", Host::fault(f(1)).reconnections(3))?;

    pssh.push("global_*,host_*", Command::new("work"))?;
    pssh.push("task_ok,task_fail", Command::new("work").reconnections(2))?;
    pssh.push("task_zero", Command::new("work").reconnections(0))?;
    let report = pssh.run();
    assert!(!report.success());

    for (label, attempts, ok) in [
        ("global_ok", 2, true),
        ("global_fail", 2, false),
        ("host_ok", 4, true),
        ("host_fail", 4, false),
        ("host_zero", 1, false),
        ("task_ok", 3, true),
        ("task_fail", 3, false),
        ("task_zero", 1, false),
    ] {
        assert_eq!(log.connect_attempts(label), attempts, "connect attempts of {label}");
        if ok {
            assert_eq!(kind(&pssh, label), None, "{label}");
            assert_eq!(log.ran(label), ["work"], "{label}");
        } else {
            assert_eq!(kind(&pssh, label), Some(ErrorKind::Connect), "{label}");
            assert!(log.ran(label).is_empty(), "{label}");
        }
    }
    Ok(())
}

#[test]
fn reconnection_budget_is_renewed_for_each_task_and_shared_within_one() -> R {
    let log = FaultLog::new();
    let mut pssh = Parallel::builder().reconnections(1).build()?;
    // Each task loses its connection once: each has its own budget of 1.
    pssh.add_host(
        "a",
        Host::fault(Fault::new().drop_on("one", 1).drop_on("two", 1).log(&log)),
    )?;
    // One failed connect plus one drop in the same task: 2 > 1.
    pssh.add_host(
        "b",
        Host::fault(Fault::new().fail_connects(1).drop_on("one", 1).log(&log)),
    )?;
    pssh.push("a", Command::new("one"))?;
    pssh.push("a", Command::new("two"))?;
    pssh.push("b", Command::new("one"))?;
    let report = pssh.run();

    assert_eq!(kind(&pssh, "a"), None);
    assert_eq!(log.ran("a"), ["one", "one", "two", "two"]);
    assert_eq!(log.connect_attempts("a"), 3);
    let a = report.label("a").unwrap();
    assert!(a
        .tasks()
        .iter()
        .all(|t| t.status() == TaskStatus::Succeeded && t.reruns() == 1));

    assert_eq!(kind(&pssh, "b"), Some(ErrorKind::Connect));
    assert_eq!(log.connect_attempts("b"), 2);
    assert_eq!(log.ran("b"), ["one"]);
    Ok(())
}

#[test]
fn connect_failures_beyond_reconnections_give_connect_error_under_policy() -> R {
    let log = FaultLog::new();
    let mut pssh = Parallel::builder().reconnections(1).build()?;
    pssh.add_host("abort", Host::fault(Fault::new().fail_connects(5).log(&log)))?;
    // Ignore: the first task fails for good (2 attempts), the second gets a
    // fresh budget and connects on the 3rd attempt overall.
    pssh.add_host(
        "ignore",
        Host::fault(Fault::new().fail_connects(2).log(&log)).on_error(OnError::Ignore),
    )?;
    pssh.add_host(
        "done",
        Host::fault(Fault::new().fail_connects(5).log(&log)).on_error(OnError::Done),
    )?;
    pssh.all(Command::new("first"))?;
    pssh.all(Command::new("second"))?;
    let report = pssh.run();

    // Abort (the default).
    assert_eq!(kind(&pssh, "abort"), Some(ErrorKind::Connect));
    assert_eq!(log.connect_attempts("abort"), 2);
    assert!(log.ran("abort").is_empty());
    let tasks = report.label("abort").unwrap().tasks();
    assert_eq!(tasks.len(), 2);
    assert_eq!(tasks[0].status(), TaskStatus::Failed);
    assert_eq!(tasks[0].error().map(Error::kind), Some(ErrorKind::Connect));
    assert_eq!(tasks[1].status(), TaskStatus::Cancelled);

    // Done.
    assert_eq!(kind(&pssh, "done"), Some(ErrorKind::Connect));
    assert_eq!(log.connect_attempts("done"), 2);

    // Ignore.
    assert_eq!(kind(&pssh, "ignore"), None);
    assert_eq!(log.connect_attempts("ignore"), 3);
    assert_eq!(log.ran("ignore"), ["second"]);
    let tasks = report.label("ignore").unwrap().tasks();
    assert_eq!(tasks[0].status(), TaskStatus::Ignored);
    assert_eq!(tasks[0].error().map(Error::kind), Some(ErrorKind::Connect));
    assert_eq!(tasks[1].status(), TaskStatus::Succeeded);
    Ok(())
}

#[test]
fn task_interrupted_by_lost_connection_is_rerun_and_marked() -> R {
    let log = FaultLog::new();
    let mut pssh = Parallel::builder().reconnections(1).build()?;
    pssh.add_host("a", Host::fault(Fault::new().drop_on("work", 1).log(&log)))?;
    pssh.push("a", Command::new("work"))?;
    pssh.push("a", Command::new("after"))?;
    let report = pssh.run();

    assert!(report.success(), "{report}");
    use FaultEvent::*;
    assert_eq!(
        events_of(&log, "a"),
        [
            Connect,
            Connected,
            run("work"),
            Dropped("work".into()),
            Connect,
            Connected,
            run("work"),
            finished("work"),
            run("after"),
            finished("after"),
            Disconnected,
        ]
    );
    let tasks = report.label("a").unwrap().tasks();
    assert_eq!(tasks[0].status(), TaskStatus::Succeeded);
    assert_eq!(tasks[0].reruns(), 1);
    // A re-run after a lost connection is not a policy retry.
    assert_eq!(tasks[0].attempts(), 1);
    assert_eq!(tasks[0].exit_code(), Some(0));
    assert_eq!(tasks[1].reruns(), 0);
    Ok(())
}

#[test]
fn reruns_recorded_even_when_reconnections_run_out() -> R {
    let log = FaultLog::new();
    let mut pssh = Parallel::builder().reconnections(2).build()?;
    pssh.add_host("a", Host::fault(Fault::new().drop_on("work", 3).log(&log)))?;
    pssh.push("a", Command::new("work"))?;
    let report = pssh.run();

    assert_eq!(kind(&pssh, "a"), Some(ErrorKind::Connect));
    assert_eq!(log.ran("a"), ["work", "work", "work"]);
    let t = &report.label("a").unwrap().tasks()[0];
    assert_eq!(t.status(), TaskStatus::Failed);
    // It was re-run twice before the last loss ended it: the report must say so.
    assert_eq!(t.reruns(), 2, "{t:?}");
    Ok(())
}

#[test]
fn lost_connection_without_reconnections_is_connect_error() -> R {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("abort", Host::fault(Fault::new().drop_on("work", 1).log(&log)))?;
    pssh.add_host(
        "ignore",
        Host::fault(Fault::new().drop_on("work", 1).log(&log)).on_error(OnError::Ignore),
    )?;
    pssh.all(Command::new("work"))?;
    pssh.all(Command::new("next"))?;
    let report = pssh.run();

    assert_eq!(kind(&pssh, "abort"), Some(ErrorKind::Connect));
    assert_eq!(log.ran("abort"), ["work"]);
    assert_eq!(log.connect_attempts("abort"), 1);
    let tasks = report.label("abort").unwrap().tasks();
    assert_eq!(tasks[0].status(), TaskStatus::Failed);
    assert_eq!(tasks[0].error().map(Error::kind), Some(ErrorKind::Connect));
    assert_eq!(tasks[0].reruns(), 0);
    assert_eq!(tasks[1].status(), TaskStatus::Cancelled);

    // Ignored: the next task needs (and gets) a new connection.
    assert_eq!(kind(&pssh, "ignore"), None);
    assert_eq!(log.ran("ignore"), ["work", "next"]);
    assert_eq!(log.connect_attempts("ignore"), 2);
    let tasks = report.label("ignore").unwrap().tasks();
    assert_eq!(tasks[0].status(), TaskStatus::Ignored);
    assert_eq!(tasks[0].error().map(Error::kind), Some(ErrorKind::Connect));
    assert_eq!(tasks[1].status(), TaskStatus::Succeeded);
    Ok(())
}

#[test]
fn remote_exit_255_is_not_a_lost_connection() -> R {
    let log = FaultLog::new();
    let mut pssh = Parallel::builder().reconnections(3).build()?;
    pssh.add_host("a", Host::fault(Fault::new().exit_code("work", 255).log(&log)))?;
    pssh.push("a", Command::new("work"))?;
    let report = pssh.run();

    let e = pssh.get_error("a")?.expect("an error");
    assert_eq!(e.kind(), ErrorKind::Command);
    assert_eq!(e.exit_code(), Some(255));
    assert_eq!(log.ran("a"), ["work"]);
    assert_eq!(log.connect_attempts("a"), 1);
    assert_eq!(report.label("a").unwrap().tasks()[0].reruns(), 0);
    Ok(())
}

#[test]
fn reconnect_delay_is_waited() -> R {
    let delay = ms(300);
    let log = FaultLog::new();
    let mut pssh = Parallel::builder().reconnections(2).reconnect_delay(delay).build()?;
    pssh.add_host("connect", Host::fault(Fault::new().fail_connects(2).log(&log)))?;
    pssh.add_host("drop", Host::fault(Fault::new().drop_on("work", 1).log(&log)))?;
    pssh.all(Command::new("work"))?;
    let t0 = Instant::now();
    let report = pssh.run();
    let took = t0.elapsed();
    assert!(report.success(), "{report}");

    let ev = log.timed_events();
    let at = |label: &str, pred: &dyn Fn(&FaultEvent) -> bool| -> Vec<Instant> {
        ev.iter()
            .filter(|(l, e, _)| l == label && pred(e))
            .map(|(_, _, t)| *t)
            .collect()
    };
    // Connect failures: each new attempt waits the delay after the failure.
    let failed = at("connect", &|e| *e == FaultEvent::ConnectFailed);
    let connects = at("connect", &|e| *e == FaultEvent::Connect);
    assert_eq!((failed.len(), connects.len()), (2, 3));
    for i in 0..2 {
        let gap = connects[i + 1] - failed[i];
        assert!(gap >= delay, "reconnection {i} after {gap:?}");
    }
    // A lost connection: the reconnection waits too.
    let dropped = at("drop", &|e| matches!(e, FaultEvent::Dropped(_)));
    let connects = at("drop", &|e| *e == FaultEvent::Connect);
    assert_eq!((dropped.len(), connects.len()), (1, 2));
    assert!(connects[1] - dropped[0] >= delay);

    assert!(took >= 2 * delay, "{took:?}");
    assert!(took < Duration::from_secs(20), "{took:?}");
    Ok(())
}

#[test]
fn policy_consulted_only_when_reconnections_exhausted() -> R {
    let log = FaultLog::new();
    let calls: Arc<Mutex<Vec<(String, ErrorKind, u32)>>> = Arc::default();
    let c = calls.clone();
    let policy = OnError::callback(move |ctx| {
        c.lock()
            .unwrap()
            .push((ctx.label().to_owned(), ctx.error().kind(), ctx.attempt()));
        OnError::Ignore
    });
    let mut pssh = Parallel::builder().reconnections(2).on_error(policy).build()?;
    pssh.add_host("connect_ok", Host::fault(Fault::new().fail_connects(2).log(&log)))?;
    pssh.add_host("drop_ok", Host::fault(Fault::new().drop_on("work", 2).log(&log)))?;
    pssh.add_host(
        "connect_exhausted",
        Host::fault(Fault::new().fail_connects(3).log(&log)),
    )?;
    pssh.add_host("drop_exhausted", Host::fault(Fault::new().drop_on("work", 3).log(&log)))?;
    pssh.all(Command::new("work"))?;
    let report = pssh.run();

    assert!(report.success(), "{report}");
    let mut calls = calls.lock().unwrap().clone();
    calls.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        calls,
        [
            ("connect_exhausted".to_owned(), ErrorKind::Connect, 1),
            ("drop_exhausted".to_owned(), ErrorKind::Connect, 1),
        ]
    );
    assert_eq!(log.connect_attempts("connect_ok"), 3);
    assert_eq!(log.connect_attempts("connect_exhausted"), 3);
    assert_eq!(log.ran("drop_ok").len(), 3);
    assert_eq!(log.ran("drop_exhausted").len(), 3);
    for (label, status) in [
        ("connect_ok", TaskStatus::Succeeded),
        ("drop_ok", TaskStatus::Succeeded),
        ("connect_exhausted", TaskStatus::Ignored),
        ("drop_exhausted", TaskStatus::Ignored),
    ] {
        assert_eq!(report.label(label).unwrap().tasks()[0].status(), status, "{label}");
    }
    Ok(())
}

// ---- workers -------------------------------------------------------------

/// The most labels busy at once, a label being busy from its first connection
/// attempt until its (single) task finished.
fn max_busy(log: &FaultLog) -> usize {
    let (mut busy, mut max) = (0usize, 0usize);
    let mut started = std::collections::HashSet::new();
    for (l, e) in log.events() {
        match e {
            FaultEvent::Connect if started.insert(l) => busy += 1,
            FaultEvent::Finished(..) => busy -= 1,
            _ => {}
        }
        max = max.max(busy);
    }
    max
}

#[test]
fn workers_3_over_9_labels_never_more_than_3_at_once() -> R {
    let log = FaultLog::new();
    let mut pssh = Parallel::builder().workers(3).build()?;
    for i in 0..9 {
        let f = Fault::new().connect_delay(ms(20)).delay(ms(100)).log(&log);
        pssh.add_host(format!("h{i}"), Host::fault(f))?;
    }
    pssh.all(Command::new("work"))?;
    let report = pssh.run();

    assert!(report.success(), "{report}");
    assert_eq!(report.count(TaskStatus::Succeeded), 9);
    assert_eq!(log.max_running(), 3);
    // Connecting counts as well as running.
    assert_eq!(max_busy(&log), 3);
    for i in 0..9 {
        assert_eq!(log.ran(&format!("h{i}")), ["work"]);
    }
    Ok(())
}

#[test]
fn local_tasks_take_no_worker_slot() -> R {
    let log = FaultLog::new();
    let mut pssh = Parallel::builder().workers(1).build()?;
    pssh.add_host("busy1", Host::fault(Fault::new().delay(ms(300)).log(&log)))?;
    pssh.add_host("busy2", Host::fault(Fault::new().delay(ms(300)).log(&log)))?;
    pssh.add_host("local", Host::local())?;
    pssh.push("busy*", Command::new("work"))?;
    // What the log held when each sub ran.
    let seen: Snapshots = Arc::default();
    for _ in 0..2 {
        let (seen, log) = (seen.clone(), log.clone());
        pssh.push(
            "local",
            Sub::new(move |_| {
                seen.lock().unwrap().push(log.events());
                Ok(())
            }),
        )?;
    }
    let report = pssh.run();

    assert!(report.success(), "{report}");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    for snapshot in seen.iter() {
        // The only worker was taken by busy1 and busy2 waited for it: the subs
        // ran anyway, before any remote task finished.
        assert!(
            !snapshot.iter().any(|(_, e)| matches!(e, FaultEvent::Finished(..))),
            "a sub waited for a worker slot: {snapshot:?}"
        );
        assert!(!snapshot.iter().any(|(l, _)| l == "busy2"), "{snapshot:?}");
    }
    assert_eq!(log.max_running(), 1);
    Ok(())
}

// ---- connections ---------------------------------------------------------

#[test]
fn connections_1_evicts_lru_idle_connection() -> R {
    let log = FaultLog::new();
    let mut pssh = Parallel::builder().workers(1).connections(1).build()?;
    pssh.add_host("a", Host::fault(Fault::new().log(&log)))?;
    pssh.add_host("b", Host::fault(Fault::new().log(&log)))?;
    pssh.push("b", Command::new("b1"))?;
    pssh.push("a", Command::new("a1"))?;
    pssh.push("a", Join::new("b"))?;
    pssh.push("a", Command::new("a2"))?;
    let report = pssh.run();

    assert!(report.success(), "{report}");
    assert_eq!(log.max_open(), 1);
    // a waits on the join holding an idle connection; b needs one, so a's is closed.
    let s = |l: &str, e: FaultEvent| (l.to_owned(), e);
    use FaultEvent::*;
    assert_eq!(
        log.events(),
        [
            s("a", Connect),
            s("a", Connected),
            s("a", run("a1")),
            s("a", finished("a1")),
            s("a", Disconnected),
            s("b", Connect),
            s("b", Connected),
            s("b", run("b1")),
            s("b", finished("b1")),
            s("b", Disconnected),
            s("a", Connect),
            s("a", Connected),
            s("a", run("a2")),
            s("a", finished("a2")),
            s("a", Disconnected),
        ]
    );
    Ok(())
}

#[test]
fn connections_limit_evicts_the_least_recently_used_idle_connection() -> R {
    let log = FaultLog::new();
    let mut pssh = Parallel::builder().workers(1).connections(2).build()?;
    for l in ["x", "y", "z"] {
        pssh.add_host(l, Host::fault(Fault::new().log(&log)))?;
    }
    pssh.push("x", Command::new("x1"))?;
    pssh.push("y", Command::new("y1"))?;
    pssh.push("z", Join::new("x,y"))?;
    pssh.push("z", Command::new("z1"))?;
    pssh.push("x,y", Join::new("z"))?;
    pssh.push("x", Command::new("x2"))?;
    pssh.push("y", Command::new("y2"))?;
    let report = pssh.run();

    assert!(report.success(), "{report}");
    assert_eq!(log.max_open(), 2);
    assert_eq!(log.ran("x"), ["x1", "x2"]);
    assert_eq!(log.ran("y"), ["y1", "y2"]);
    assert_eq!(log.ran("z"), ["z1"]);
    let ev = log.events();
    // x went idle first (workers=1 serialises x1 then y1): x is the LRU victim.
    let x_closed = first(&ev, "x", &FaultEvent::Disconnected).unwrap();
    let z_connect = first(&ev, "z", &FaultEvent::Connect).unwrap();
    assert!(x_closed < z_connect, "{ev:?}");
    assert!(
        first(&ev, "y", &FaultEvent::Disconnected).unwrap() > z_connect,
        "y (more recently used) was closed instead of x: {ev:?}"
    );
    Ok(())
}

#[test]
fn connections_less_than_workers_is_build_error() {
    let e = Parallel::builder().workers(4).connections(2).build().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig);
    let msg = e.to_string();
    assert!(msg.contains("connections") && msg.contains("workers"), "{msg}");

    // Unlimited workers cannot fit in a limited number of connections.
    let e = Parallel::builder().workers(0).connections(2).build().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig);

    // Fine: equal, more connections, unlimited connections, nothing set.
    assert!(Parallel::builder().workers(2).connections(2).build().is_ok());
    assert!(Parallel::builder().workers(2).connections(5).build().is_ok());
    assert!(Parallel::builder().workers(5).connections(0).build().is_ok());
    assert!(Parallel::builder().workers(5).build().is_ok());
    assert!(Parallel::builder().build().is_ok());
}

#[test]
fn connections_alone_sets_workers() -> R {
    let log = FaultLog::new();
    let mut pssh = Parallel::builder().connections(2).build()?;
    for i in 0..6 {
        pssh.add_host(format!("h{i}"), Host::fault(Fault::new().delay(ms(80)).log(&log)))?;
    }
    pssh.all(Command::new("work"))?;
    let report = pssh.run();

    assert!(report.success(), "{report}");
    assert_eq!(log.max_running(), 2);
    assert_eq!(max_busy(&log), 2);
    assert_eq!(log.max_open(), 2);
    Ok(())
}

#[test]
fn zero_limits_mean_unlimited() -> R {
    let log = FaultLog::new();
    let mut pssh = Parallel::builder().workers(0).connections(0).build()?;
    for i in 0..6 {
        let f = Fault::new().connect_delay(ms(100)).delay(ms(100)).log(&log);
        pssh.add_host(format!("h{i}"), Host::fault(f))?;
    }
    pssh.all(Command::new("work"))?;
    let report = pssh.run();

    assert!(report.success(), "{report}");
    assert_eq!(log.max_open(), 6);
    assert_eq!(log.max_running(), 6);
    Ok(())
}

#[test]
fn label_keeps_connection_between_tasks_and_closes_when_queue_empty() -> R {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("a", Host::fault(Fault::new().log(&log)))?;
    pssh.add_host("slow", Host::fault(Fault::new().delay(ms(300)).log(&log)))?;
    pssh.add_host("quick", Host::fault(Fault::new().log(&log)))?;
    pssh.push("slow", Command::new("s1"))?;
    pssh.push("a", Command::new("a1"))?;
    pssh.push("a", Sub::new(|_| Ok(())))?;
    pssh.push("a", Command::new("a2"))?;
    pssh.push("a", Join::new("slow"))?;
    pssh.push("a", Command::new("a3"))?;
    pssh.push("quick", Command::new("q1"))?;
    let report = pssh.run();

    assert!(report.success(), "{report}");
    use FaultEvent::*;
    assert_eq!(
        events_of(&log, "a"),
        [
            Connect,
            Connected,
            run("a1"),
            finished("a1"),
            run("a2"),
            finished("a2"),
            run("a3"),
            finished("a3"),
            Disconnected,
        ]
    );
    for l in ["a", "slow", "quick"] {
        assert_eq!(log.connect_attempts(l), 1, "{l}");
        assert_eq!(log.disconnects(l), 1, "{l}");
    }
    // quick closes as soon as its queue is empty, not at the end of the run.
    let ev = log.events();
    let quick_closed = first(&ev, "quick", &Disconnected).unwrap();
    let slow_done = first(&ev, "slow", &finished("s1")).unwrap();
    assert!(quick_closed < slow_done, "{ev:?}");
    assert_eq!(log.current(), (0, 0));
    Ok(())
}

// ---- fairness and concurrency ------------------------------------------------

#[test]
fn fifo_fairness_slots_in_ready_order() -> R {
    let log = FaultLog::new();
    let mut pssh = Parallel::builder().workers(1).build()?;
    let labels = ["delta", "alpha", "foxtrot", "charlie", "bravo", "echo", "golf"];
    for l in labels {
        pssh.add_host(l, Host::fault(Fault::new().log(&log)))?;
    }
    pssh.all(Command::new("work %LABEL%"))?;
    let report = pssh.run();

    assert!(report.success(), "{report}");
    let order: Vec<String> = log
        .events()
        .into_iter()
        .filter(|(_, e)| matches!(e, FaultEvent::Run(_)))
        .map(|(l, _)| l)
        .collect();
    assert_eq!(order, labels);
    let connects: Vec<String> = log
        .events()
        .into_iter()
        .filter(|(_, e)| *e == FaultEvent::Connect)
        .map(|(l, _)| l)
        .collect();
    assert_eq!(connects, labels);
    Ok(())
}

#[test]
fn fifo_fairness_label_back_for_more_queues_behind_waiting_labels() -> R {
    // "a" releases its slot after a1; "b" has been waiting for one since the
    // start, so b1 must come before a2.
    let log = FaultLog::new();
    let mut pssh = Parallel::builder().workers(1).build()?;
    pssh.add_host("a", Host::fault(Fault::new().log(&log)))?;
    pssh.add_host("b", Host::fault(Fault::new().log(&log)))?;
    pssh.push("a", Command::new("a1"))?;
    pssh.push("a", Command::new("a2"))?;
    pssh.push("b", Command::new("b1"))?;
    let report = pssh.run();

    assert!(report.success(), "{report}");
    let order: Vec<String> = log
        .events()
        .into_iter()
        .filter_map(|(_, e)| match e {
            FaultEvent::Run(t) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(order, ["a1", "b1", "a2"]);
    Ok(())
}

#[test]
fn connection_attempts_start_concurrently() -> R {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    for i in 0..6 {
        pssh.add_host(
            format!("h{i}"),
            Host::fault(Fault::new().connect_delay(ms(200)).log(&log)),
        )?;
    }
    pssh.all(Command::new("work"))?;
    let report = pssh.run();

    assert!(report.success(), "{report}");
    let ev = log.events();
    let first_connected = ev.iter().position(|(_, e)| *e == FaultEvent::Connected).unwrap();
    let last_connect = ev.iter().rposition(|(_, e)| *e == FaultEvent::Connect).unwrap();
    assert!(last_connect < first_connected, "{ev:?}");
    assert_eq!(log.max_open(), 6);

    // With a workers limit, the labels holding a slot connect concurrently too.
    let log = FaultLog::new();
    let mut pssh = Parallel::builder().workers(3).build()?;
    for i in 0..6 {
        pssh.add_host(
            format!("h{i}"),
            Host::fault(Fault::new().connect_delay(ms(200)).log(&log)),
        )?;
    }
    pssh.all(Command::new("work"))?;
    assert!(pssh.run().success());
    let ev = log.events();
    let first_connected = ev.iter().position(|(_, e)| *e == FaultEvent::Connected).unwrap();
    assert_eq!(
        ev[..first_connected]
            .iter()
            .filter(|(_, e)| *e == FaultEvent::Connect)
            .count(),
        3
    );
    Ok(())
}

// ---- timeouts --------------------------------------------------------------

#[test]
fn timeout_kills_local_command_and_reports_timeout() -> R {
    let mut pssh = Parallel::new();
    pssh.add_host("l", Host::local())?;
    pssh.push("l", Command::new("sleep 5").timeout(ms(200)))?;
    pssh.push("l", Command::new("echo after"))?;
    let t0 = Instant::now();
    let report = pssh.run();
    let took = t0.elapsed();

    assert_eq!(kind(&pssh, "l"), Some(ErrorKind::Timeout));
    assert!(took < Duration::from_secs(4), "the command was not killed: {took:?}");
    assert!(took >= ms(200), "{took:?}");
    let tasks = report.label("l").unwrap().tasks();
    assert_eq!(tasks[0].status(), TaskStatus::Failed);
    assert_eq!(tasks[0].error().map(Error::kind), Some(ErrorKind::Timeout));
    assert_eq!(tasks[1].status(), TaskStatus::Cancelled);
    Ok(())
}

#[test]
fn timeout_on_fault_task() -> R {
    let log = FaultLog::new();
    // Timeouts are not connection losses: reconnections do not re-run them.
    let mut pssh = Parallel::builder().reconnections(3).build()?;
    let f = || Fault::new().delay_on("slow", Duration::from_secs(5)).log(&log);
    pssh.add_host("abort", Host::fault(f()))?;
    pssh.add_host("ignore", Host::fault(f()).on_error(OnError::Ignore))?;
    pssh.all(Command::new("slow").timeout(ms(200)))?;
    pssh.all(Command::new("after"))?;
    let t0 = Instant::now();
    let report = pssh.run();
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(4), "{took:?}");

    assert_eq!(kind(&pssh, "abort"), Some(ErrorKind::Timeout));
    assert_eq!(log.ran("abort"), ["slow"]);
    assert!(events_of(&log, "abort").contains(&FaultEvent::Cancelled("slow".into())));
    let tasks = report.label("abort").unwrap().tasks();
    assert_eq!(tasks[0].status(), TaskStatus::Failed);
    assert_eq!(tasks[0].reruns(), 0);
    assert_eq!(tasks[1].status(), TaskStatus::Cancelled);

    // Ignored: the label goes on, on the same connection.
    assert_eq!(kind(&pssh, "ignore"), None);
    assert_eq!(log.ran("ignore"), ["slow", "after"]);
    assert_eq!(log.connect_attempts("ignore"), 1);
    let tasks = report.label("ignore").unwrap().tasks();
    assert_eq!(tasks[0].status(), TaskStatus::Ignored);
    assert_eq!(tasks[0].error().map(Error::kind), Some(ErrorKind::Timeout));
    assert_eq!(tasks[1].status(), TaskStatus::Succeeded);
    Ok(())
}

#[test]
fn timeout_counts_from_task_start_not_connection() -> R {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    let f = Fault::new()
        .connect_delay(Duration::from_millis(1500))
        .delay(ms(20))
        .log(&log);
    pssh.add_host("a", Host::fault(f))?;
    pssh.push("a", Command::new("work").timeout(Duration::from_secs(1)))?;
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert_eq!(log.ran("a"), ["work"]);
    Ok(())
}

#[test]
fn timeout_on_sub_reports_timeout() -> R {
    let mut pssh = Parallel::new();
    pssh.add_host("l", Host::local())?;
    pssh.push(
        "l",
        Sub::new(|_| {
            std::thread::sleep(ms(300));
            Ok(())
        })
        .timeout(ms(50)),
    )?;
    let report = pssh.run();
    assert_eq!(kind(&pssh, "l"), Some(ErrorKind::Timeout));
    assert_eq!(report.label("l").unwrap().tasks()[0].status(), TaskStatus::Failed);
    Ok(())
}

// ---- connect -----------------------------------------------------------------

#[test]
fn connect_task_connects_and_runs_nothing() -> R {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("only", Host::fault(Fault::new().log(&log)))?;
    pssh.add_host("then", Host::fault(Fault::new().log(&log)))?;
    pssh.add_host("local", Host::local())?;
    pssh.all(ssh_parallel::Connect::new())?;
    pssh.push("then", Command::new("work"))?;
    let report = pssh.run();

    assert!(report.success(), "{report}");
    use FaultEvent::*;
    // No command ran: the fault transport sees only the connect task itself.
    assert_eq!(
        events_of(&log, "only"),
        [Connect, Connected, run("connect"), finished("connect"), Disconnected]
    );
    // The connection it made is the one the next task uses.
    assert_eq!(log.connect_attempts("then"), 1);
    assert_eq!(log.ran("then"), ["connect", "work"]);
    for l in ["only", "then", "local"] {
        let t = &report.label(l).unwrap().tasks()[0];
        assert_eq!(t.description(), "connect");
        assert_eq!(t.status(), TaskStatus::Succeeded);
        assert_eq!(t.stdout_str(), "");
    }
    Ok(())
}

#[test]
fn connect_task_fails_and_reconnects_like_any_remote_task() -> R {
    let log = FaultLog::new();
    let mut pssh = Parallel::new();
    pssh.add_host("fail", Host::fault(Fault::new().fail_connects(1).log(&log)))?;
    pssh.add_host(
        "retry",
        Host::fault(Fault::new().fail_connects(1).log(&log)).reconnections(1),
    )?;
    pssh.all(Connect::new())?;
    let report = pssh.run();

    assert_eq!(kind(&pssh, "fail"), Some(ErrorKind::Connect));
    assert_eq!(report.label("fail").unwrap().tasks()[0].status(), TaskStatus::Failed);
    assert_eq!(kind(&pssh, "retry"), None);
    assert_eq!(log.connect_attempts("retry"), 2);
    Ok(())
}
