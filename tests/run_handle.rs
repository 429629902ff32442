//! `Parallel::start`: the events of a watched run, in order per label;
//! cancelling (locally and over SSH on the embedded server); `wait_timeout`;
//! dropping the handle.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ssh_parallel::{
    Command, ErrorKind, Host, Join, OnError, OutputStream, Parallel, Report, RunEvent, TaskReport, TaskStatus,
};

#[path = "common/servers.rs"]
mod servers;
use servers::Server;

/// Checks every label's events against the report: per task, `Started`
/// before its lines and its lines before its one `Finished`, which carries
/// the report's entry; `LabelDone` last. Returns the lines per (label, seq).
fn check_events(events: &[RunEvent], report: &Report) -> HashMap<(String, usize), Vec<(OutputStream, String)>> {
    let mut lines: HashMap<(String, usize), Vec<(OutputStream, String)>> = HashMap::new();
    for l in report.labels() {
        let mine: Vec<&RunEvent> = events.iter().filter(|e| e.label() == l.label()).collect();
        assert!(
            matches!(mine.last(), Some(RunEvent::LabelDone { error, .. }) if error.as_ref().map(|e| e.kind()) == l.error().map(|e| e.kind())),
            "{}: LabelDone last: {mine:?}",
            l.label()
        );
        let mut finished: Vec<&TaskReport> = Vec::new();
        let mut running: Option<usize> = None;
        for e in &mine[..mine.len() - 1] {
            match e {
                RunEvent::Started { seq, .. } => {
                    assert!(
                        finished.iter().all(|r| r.seq() != *seq),
                        "started after finished: {e:?}"
                    );
                    running = Some(*seq);
                }
                RunEvent::Line { seq, stream, line, .. } => {
                    assert_eq!(running, Some(*seq), "a line outside its task's run: {e:?}");
                    lines
                        .entry((l.label().to_owned(), *seq))
                        .or_default()
                        .push((*stream, line.clone()));
                }
                RunEvent::Finished { report, .. } => {
                    finished.push(report);
                    running = None;
                }
                other => panic!("{}: unexpected {other:?}", l.label()),
            }
        }
        let got: Vec<(usize, TaskStatus)> = finished.iter().map(|r| (r.seq(), r.status())).collect();
        let want: Vec<(usize, TaskStatus)> = l.tasks().iter().map(|r| (r.seq(), r.status())).collect();
        assert_eq!(got, want, "{}: one Finished per task, in report order", l.label());
    }
    lines
}

#[test]
fn events_arrive_in_order_per_label_and_output_is_still_captured() {
    let mut p = Parallel::new();
    for l in ["a", "b"] {
        p.add_host(l, Host::local()).unwrap();
    }
    p.all(Command::new("echo one; echo two >&2; printf three")).unwrap();
    p.push("a", Command::new("exit 3").on_error(OnError::Ignore)).unwrap();
    p.push("b", Join::new("a")).unwrap();
    p.all(Command::new("echo %LABEL%")).unwrap();
    let run = p.start();
    let events = run.events().clone();
    let report = run.wait();
    assert!(report.success(), "{report}");
    let events: Vec<RunEvent> = events.try_iter().collect();
    let lines = check_events(&events, &report);
    for l in ["a", "b"] {
        let mut first = lines[&(l.to_owned(), 0)].clone();
        first.sort_by_key(|(s, _)| *s == OutputStream::Stderr);
        assert_eq!(
            first,
            [
                (OutputStream::Stdout, "one".to_owned()),
                (OutputStream::Stdout, "three".to_owned()),
                (OutputStream::Stderr, "two".to_owned()),
            ]
        );
        assert_eq!(lines[&(l.to_owned(), 2)], [(OutputStream::Stdout, l.to_owned())]);
        let t = &report.label(l).unwrap().tasks()[0];
        assert_eq!(
            (t.stdout_str().as_str(), t.stderr_str().as_str()),
            ("one\nthree", "two\n")
        );
    }
    assert_eq!(report.label("a").unwrap().tasks()[1].status(), TaskStatus::Ignored);
    // `get_error` answers for the started run, and the queues are empty.
    assert!(p.get_error("a").unwrap().is_none());
    assert_eq!(p.queued_tasks(), 0);
}

/// Starts `p`, waits until `running` labels have started their first task,
/// cancels, and checks the report: prompt, complete, everything cancelled.
fn cancel_while_running(mut p: Parallel, running: &[&str], queued: &[&str]) {
    let run = p.start();
    let events = run.events().clone();
    let mut seen = Vec::new();
    let t0 = Instant::now();
    while running.iter().any(|l| !seen.contains(&l.to_string())) {
        match events.recv_timeout(Duration::from_secs(20)) {
            Ok(RunEvent::Started { label, .. }) => seen.push(label.to_string()),
            Ok(_) => {}
            Err(e) => panic!("no start: {e}"),
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    run.cancel();
    let report = run.wait();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "cancelled promptly: {:?}",
        t.elapsed()
    );
    assert!(t0.elapsed() < Duration::from_secs(25));
    let events: Vec<RunEvent> = events.try_iter().collect();
    check_events(&events, &report);
    for l in running {
        let tasks = report.label(l).unwrap().tasks();
        assert_eq!(tasks.len(), 2, "{l}: every task exactly once");
        assert_eq!(tasks[0].status(), TaskStatus::Cancelled, "{l}: {report}");
        let e = tasks[0].error().expect("a cancelled task says why");
        assert_eq!(e.kind(), ErrorKind::Cancelled);
        assert!(e.to_string().contains("cancelled while running"), "{e}");
        assert_eq!(tasks[1].status(), TaskStatus::Cancelled);
        assert_eq!(tasks[1].error().map(|e| e.kind()), Some(ErrorKind::Cancelled));
    }
    for l in queued {
        let tasks = report.label(l).unwrap().tasks();
        assert_eq!(tasks.len(), 2, "{l}");
        for t in tasks {
            assert_eq!(t.status(), TaskStatus::Cancelled, "{l}: {report}");
            let e = t.error().expect("a cancelled task says why");
            assert!(e.to_string().contains("cancelled before this task"), "{e}");
        }
    }
    for l in running.iter().chain(queued) {
        assert_eq!(
            p.get_error(l).unwrap().map(|e| e.kind()),
            Some(ErrorKind::Cancelled),
            "{l}"
        );
    }
    assert!(!report.success());
}

fn sleepy(p: &mut Parallel, labels: &[&str]) {
    for l in labels {
        p.push(*l, Command::new("sleep 30")).unwrap();
        p.push(*l, Command::new("echo never")).unwrap();
    }
}

#[test]
fn cancel_stops_a_local_run_promptly_and_reports_every_task() {
    // Two workers: `c` waits for a slot behind the two sleepers.
    let mut p = Parallel::builder().workers(2).build().unwrap();
    for l in ["a", "b", "c"] {
        p.add_host(l, Host::local()).unwrap();
    }
    sleepy(&mut p, &["a", "b", "c"]);
    cancel_while_running(p, &["a", "b"], &["c"]);
}

#[test]
fn cancel_stops_an_ssh_run_promptly_and_reports_every_task() {
    let server = Server::embedded();
    let mut p = Parallel::builder().workers(2).build().unwrap();
    for l in ["a", "b", "c"] {
        p.add_host(l, server.host()).unwrap();
    }
    sleepy(&mut p, &["a", "b", "c"]);
    cancel_while_running(p, &["a", "b"], &["c"]);
}

#[test]
fn wait_timeout_gives_the_handle_back_until_the_run_ends() {
    let mut p = Parallel::new();
    p.add_host("a", Host::local()).unwrap();
    p.push("a", Command::new("sleep 0.5")).unwrap();
    let t = Instant::now();
    let run = match p.start().wait_timeout(Duration::from_millis(20)) {
        Ok(r) => panic!("ended too early: {r}"),
        Err(run) => run,
    };
    assert!(!run.is_finished());
    let report = run
        .wait_timeout(Duration::from_secs(20))
        .expect("ends within the deadline");
    assert!(report.success(), "{report}");
    assert!(t.elapsed() >= Duration::from_millis(500));
}

#[test]
fn dropping_the_handle_cancels_and_puts_the_plan_back() {
    let mut p = Parallel::new();
    p.add_host("a", Host::local()).unwrap();
    p.push("a", Command::new("sleep 30")).unwrap();
    let t = Instant::now();
    {
        let run = p.start();
        let events = run.events().clone();
        assert!(matches!(
            events.recv_timeout(Duration::from_secs(10)),
            Ok(RunEvent::Started { .. })
        ));
    }
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(p.get_error("a").unwrap().map(|e| e.kind()), Some(ErrorKind::Cancelled));
    // The plan is back: the label is there, and another run works.
    p.push("a", Command::new("echo again")).unwrap();
    assert!(p.run().success());
}

/// The event channel is closed after the last event, so a plain blocking
/// loop over it ends with the run, locally and over SSH.
#[test]
fn the_event_channel_closes_after_the_last_event() {
    for server in [None, Some(Server::embedded())] {
        let mut p = Parallel::new();
        for l in ["a", "b"] {
            let host = server.as_ref().map_or_else(Host::local, |s| s.host());
            p.add_host(l, host).unwrap();
        }
        p.all(Command::new("echo hi from %LABEL%")).unwrap();
        let run = p.start();
        let events = run.events().clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let n = events.iter().count();
            let _ = tx.send(n);
        });
        let report = run.wait();
        assert!(report.success(), "{report}");
        let n = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the event channel is still open after the run ended");
        // Started, Line, Finished and LabelDone for each of the two labels.
        assert_eq!(n, 8, "events of a two-label, one-line run");
    }
}
