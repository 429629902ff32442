//! The shared job queue (`JobQueue`, `Drain`): exactly-once delivery under
//! several drainers, jobs pushed while the run goes on (from another thread
//! and from a `Sub`), daemon mode (an open queue keeps its drainers waiting),
//! retries moving a job to another label, a failing drainer leaving its jobs
//! to the others, joins after drains, the jobs a queue refuses, a queue left
//! with no drainer, the `workers` limit and run events: on the local
//! transport, and over SSH to the embedded server and OpenSSH's sshd.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::{local, wait_until};
use ssh_parallel::{
    Command, Drain, ErrorKind, Goto, Here, Host, JobQueue, Join, OnError, Parallel, RunEvent, ScpPut, Stop, Sub,
    TaskStatus,
};

#[path = "common/servers.rs"]
mod servers;
use servers::Server;

/// Every job of the report, as (job number, label that ran it, status).
fn outcomes(report: &ssh_parallel::Report) -> Vec<(u64, Option<String>, TaskStatus)> {
    report
        .jobs()
        .iter()
        .map(|j| (j.id().get(), j.label().map(str::to_owned), j.report().status()))
        .collect()
}

#[test]
fn each_of_1000_jobs_runs_exactly_once_under_three_drainers() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ran");
    let mut pssh = local(&["w1", "w2", "w3"]);
    let jobs = JobQueue::new();
    let mut ids = Vec::new();
    for i in 0..1000 {
        // O_APPEND writes of one short line do not interleave: one line per run.
        let cmd = format!("echo {i} %LABEL% >> {}; echo {i}", log.display());
        ids.push(jobs.push(Command::new(cmd)).unwrap());
    }
    jobs.close();
    assert_eq!(pssh.push("w*", Drain::new(&jobs)).unwrap().len(), 3);
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert!(jobs.is_empty());

    // The report: every job once, succeeded, with its label and its own output.
    let listed = report.jobs();
    assert_eq!(listed.len(), 1000);
    let got: Vec<_> = listed.iter().map(|j| j.id()).collect();
    assert_eq!(got, ids, "every job once, in job order");
    let mut per_label = BTreeMap::new();
    for (i, j) in listed.iter().enumerate() {
        assert_eq!(j.report().status(), TaskStatus::Succeeded);
        assert_eq!(j.report().stdout_str(), format!("{i}\n"));
        assert_eq!(j.report().job(), Some(j.id()));
        *per_label.entry(j.label().unwrap().to_owned()).or_insert(0) += 1;
    }
    assert_eq!(per_label.len(), 3, "every drainer took jobs: {per_label:?}");
    for l in ["w1", "w2", "w3"] {
        // The label's own list: its jobs, then its drain, last.
        let tasks = report.label(l).unwrap().tasks();
        assert_eq!(tasks.len(), per_label[l] + 1);
        let last = tasks.last().unwrap();
        assert!(last.description().starts_with("drain job queue #"), "{last:?}");
        assert_eq!(last.job(), None);
    }

    // The side effect: 1000 lines, each job number once, on the label the report names.
    let text = fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1000);
    let mut seen = BTreeSet::new();
    for line in lines {
        let (n, label) = line.split_once(' ').unwrap();
        let n: usize = n.parse().unwrap();
        assert!(seen.insert(n), "job {n} ran twice");
        assert_eq!(Some(label), listed[n].label());
    }
}

#[test]
fn jobs_pushed_from_another_thread_while_the_run_goes_on_are_taken() {
    let mut pssh = local(&["a", "b"]);
    let jobs = JobQueue::new();
    pssh.push("*", Drain::new(&jobs)).unwrap();
    let pusher = {
        let jobs = jobs.clone();
        std::thread::spawn(move || {
            for i in 0..20 {
                jobs.push(Command::new(format!("echo {i}"))).unwrap();
                std::thread::sleep(Duration::from_millis(10));
            }
            jobs.close();
        })
    };
    let report = pssh.run();
    pusher.join().unwrap();
    assert!(report.success(), "{report}");
    let outs: Vec<String> = report.jobs().iter().map(|j| j.report().stdout_str()).collect();
    let want: Vec<String> = (0..20).map(|i| format!("{i}\n")).collect();
    assert_eq!(outs, want);
}

#[test]
fn jobs_pushed_by_a_sub_during_the_run_are_taken() {
    let mut pssh = local(&["ctl", "w1", "w2"]);
    let jobs = JobQueue::new();
    let q = jobs.clone();
    pssh.push(
        "ctl",
        Sub::new(move |_| {
            for i in 0..10 {
                q.push(Command::new(format!("echo from-sub-{i}")))?;
            }
            q.close();
            Ok(())
        }),
    )
    .unwrap();
    pssh.push("w*", Drain::new(&jobs)).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    let listed = report.jobs();
    assert_eq!(listed.len(), 10);
    for (i, j) in listed.iter().enumerate() {
        assert_eq!(j.report().stdout_str(), format!("from-sub-{i}\n"));
        assert!(matches!(j.label(), Some("w1" | "w2")), "{:?}", j.label());
    }
}

#[test]
fn an_open_queue_keeps_its_drainers_waiting_until_pushes_then_close() {
    let mut pssh = local(&["a", "b"]);
    let jobs = JobQueue::new();
    pssh.push("*", Drain::new(&jobs)).unwrap();
    pssh.push("*", Command::new("echo after-the-drain")).unwrap();
    let run = pssh.start();
    let events = run.events().clone();
    // Open and empty: nothing ends, however long we wait.
    let run = run
        .wait_timeout(Duration::from_millis(300))
        .expect_err("an open queue keeps the run going");
    assert!(events.try_iter().all(|e| !matches!(e, RunEvent::Finished { .. })));

    // A thread pushes later: the job runs at once, the run goes on waiting.
    let later = {
        let jobs = jobs.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            jobs.push(Command::new("echo late")).unwrap()
        })
    };
    let id = later.join().unwrap();
    let mut finished = None;
    assert!(wait_until(Duration::from_secs(10), || {
        for e in events.try_iter() {
            if let RunEvent::Finished { label, report } = e {
                finished = Some((label, report));
            }
        }
        finished.is_some()
    }));
    let (label, job) = finished.unwrap();
    assert_eq!((job.job(), job.stdout_str().as_str()), (Some(id), "late\n"), "{label}");
    let run = run.wait_timeout(Duration::from_millis(200)).expect_err("still open");

    // The close ends the drains; the tasks after them run.
    let closed_at = SystemTime::now();
    jobs.close();
    let report = run.wait();
    assert!(report.success(), "{report}");
    for l in ["a", "b"] {
        let tasks = report.label(l).unwrap().tasks();
        let last = tasks.last().unwrap();
        assert_eq!(last.stdout_str(), "after-the-drain\n");
        assert!(last.started().unwrap() >= closed_at, "{l} went on only after the close");
    }
    assert_eq!(report.jobs().len(), 1);
}

#[test]
fn a_retried_job_goes_back_to_the_queue_and_runs_on_another_label() {
    let mut pssh = local(&["a", "b"]);
    let jobs = JobQueue::new();
    // a takes the first job (labels start in registration order) and fails it;
    // b is busy meanwhile, then takes it back from the queue while a waits out
    // its retry delay.
    let flaky = jobs
        .push(
            Command::new("test %LABEL% = b && echo ok on %LABEL%")
                .on_error(OnError::retry(5).delay(Duration::from_secs(2))),
        )
        .unwrap();
    jobs.push(Command::new("sleep 0.3")).unwrap();
    jobs.close();
    pssh.push("*", Drain::new(&jobs)).unwrap();
    let run = pssh.start();
    let events = run.events().clone();
    let report = run.wait();
    assert!(report.success(), "{report}");
    let entry = report.jobs().into_iter().find(|j| j.id() == flaky).unwrap();
    assert_eq!(entry.label(), Some("b"));
    assert_eq!(entry.report().stdout_str(), "ok on b\n");
    assert_eq!(entry.report().attempts(), 2, "the attempt on a counts");
    // Listed once, on b only; a tried it (its Started event) but does not report it.
    assert!(report
        .label("a")
        .unwrap()
        .tasks()
        .iter()
        .all(|t| t.job() != Some(flaky)));
    let started: Vec<(String, u32)> = events
        .try_iter()
        .filter_map(|e| match e {
            RunEvent::Started {
                label,
                description,
                attempt,
                ..
            } if description.contains("test ") => Some((label.to_string(), attempt)),
            _ => None,
        })
        .collect();
    assert_eq!(started, [("a".to_owned(), 1), ("b".to_owned(), 2)]);
}

#[test]
fn a_drainer_failing_under_abort_leaves_its_untaken_jobs_to_the_others() {
    let mut pssh = local(&["bad", "good1", "good2"]);
    let jobs = JobQueue::new();
    for i in 0..12 {
        jobs.push(Command::new(format!("test %LABEL% != bad && echo {i}")))
            .unwrap();
    }
    jobs.close();
    pssh.push("*", Drain::new(&jobs)).unwrap();
    let report = pssh.run();
    let bad = report.label("bad").unwrap();
    assert_eq!(bad.error().map(|e| e.kind()), Some(ErrorKind::Command));
    // bad failed the one job it took; its drain was dropped, not run.
    let statuses: Vec<_> = bad.tasks().iter().map(|t| t.status()).collect();
    assert_eq!(statuses, [TaskStatus::Failed, TaskStatus::Cancelled]);
    assert!(bad.tasks()[0].job().is_some());
    assert!(report.label("good1").unwrap().success() && report.label("good2").unwrap().success());
    let all = outcomes(&report);
    assert_eq!(all.len(), 12, "{all:?}");
    for (_, label, status) in &all[1..] {
        assert_eq!(*status, TaskStatus::Succeeded);
        assert!(matches!(label.as_deref(), Some("good1" | "good2")));
    }
    assert!(report.jobs_not_run().is_empty());
}

#[test]
fn abort_all_stops_every_drainer_and_reports_the_jobs_left() {
    let mut pssh = local(&["a", "b"]);
    let jobs = JobQueue::new();
    jobs.push(Command::new("exit 3").on_error(OnError::AbortAll)).unwrap();
    for _ in 0..5 {
        jobs.push(Command::new("sleep 1")).unwrap();
    }
    jobs.close();
    pssh.push("*", Drain::new(&jobs)).unwrap();
    let report = pssh.run();
    assert!(!report.success());
    let all = outcomes(&report);
    assert_eq!(all.len(), 6, "every job reported: {all:?}");
    let ran = all.iter().filter(|(_, l, _)| l.is_some()).count();
    // b may have started one job before a's failure; nothing starts after it.
    assert!((1..=2).contains(&ran), "{all:?}");
    for t in report.jobs_not_run() {
        assert_eq!(t.status(), TaskStatus::Cancelled);
        let e = t.error().unwrap();
        assert_eq!(e.kind(), ErrorKind::Aborted);
        assert!(e.to_string().contains("stopped before taking it"), "{e}");
    }
}

#[test]
fn a_join_after_a_drain_waits_for_every_job_the_drainers_took() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let mut pssh = local(&["w1", "w2", "post"]);
    let jobs = JobQueue::new();
    for i in 0..8 {
        jobs.push(Command::new(format!("sleep 0.05; touch {d}/job-{i}")))
            .unwrap();
    }
    jobs.close();
    pssh.push("w*", Drain::new(&jobs)).unwrap();
    pssh.push("post", Join::new("w*")).unwrap();
    pssh.push("post", Command::new(format!("ls {d} | wc -l"))).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    let post = report.label("post").unwrap().tasks();
    assert_eq!(post[1].stdout_str().trim(), "8");
    let joined = post[1].started().unwrap();
    for j in report.jobs() {
        let r = j.report();
        assert!(
            r.started().unwrap() + r.duration() <= joined,
            "job {} ended before the join",
            j.id()
        );
    }
}

#[test]
fn flow_actions_and_pushes_to_a_closed_queue_are_refused_with_typed_errors() {
    let jobs = JobQueue::new();
    let other = JobQueue::new();
    let refused: Vec<ssh_parallel::Action> = vec![
        Join::new("*").into(),
        Here::new("x").into(),
        Goto::new("x").into(),
        Stop.into(),
        Drain::new(&other).into(),
        Command::new("true").or_goto("x").into(),
    ];
    for a in refused {
        let what = a.describe();
        let e = jobs.push(a).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{what}: {e}");
        assert!(e.to_string().contains(&format!("job queue #{}", jobs.id())), "{e}");
        if !what.starts_with("command") {
            assert!(e.to_string().contains(&what), "{e} names {what}");
        }
    }
    assert!(jobs.is_empty(), "nothing refused was queued");
    jobs.push(Command::new("true")).unwrap();
    jobs.close();
    let e = jobs.push(Command::new("echo late")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::QueueClosed);
    assert!(e.to_string().contains("echo late"), "{e}");
    assert_eq!(jobs.len(), 1);
    assert!(jobs.is_closed());
}

#[test]
fn jobs_no_drainer_will_take_are_reported_not_run_and_the_run_ends() {
    // The only drainer aborts before its drain, on an open queue: the run
    // must not wait for it, and the jobs are reported, not lost.
    let mut pssh = local(&["only"]);
    let jobs = JobQueue::new();
    for i in 0..3 {
        jobs.push(Command::new(format!("echo {i}"))).unwrap();
    }
    pssh.push("only", Command::new("exit 9")).unwrap();
    pssh.push("only", Drain::new(&jobs)).unwrap();
    let started = Instant::now();
    let report = pssh.run();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!report.success());
    let all = outcomes(&report);
    assert_eq!(all.len(), 3);
    assert!(
        all.iter().all(|(_, l, s)| l.is_none() && *s == TaskStatus::Cancelled),
        "{all:?}"
    );
    let e = report.jobs_not_run()[0].error().unwrap();
    assert_eq!(e.kind(), ErrorKind::Aborted);
    assert!(e.to_string().contains("only (command: exited with status 9)"), "{e}");
    assert!(jobs.is_empty(), "reported jobs left the queue");
    assert!(report.to_string().contains("3 jobs not run"), "{report}");

    // A drain pushed to no label: the run never met the queue, which keeps its jobs.
    let mut pssh = local(&["x"]);
    let jobs = JobQueue::new();
    jobs.push(Command::new("true")).unwrap();
    jobs.close();
    assert!(pssh.push("nobody*", Drain::new(&jobs)).unwrap().is_empty());
    let report = pssh.run();
    assert!(report.success() && report.jobs().is_empty());
    assert_eq!(jobs.len(), 1);
}

#[test]
fn the_workers_limit_applies_to_jobs_and_idle_drainers_hold_no_slot() {
    let mut pssh = Parallel::builder().workers(1).build().unwrap();
    for l in ["a", "b", "c"] {
        pssh.add_host(l, Host::local()).unwrap();
    }
    let jobs = JobQueue::new();
    for _ in 0..6 {
        jobs.push(Command::new("sleep 0.05")).unwrap();
    }
    pssh.push("*", Drain::new(&jobs)).unwrap();
    // d needs the single slot for its own command while the drainers wait on
    // the open queue; only then does it close the queue. Were an idle drainer
    // holding the slot, this run would never end.
    pssh.add_host("d", Host::local()).unwrap();
    pssh.push("d", Command::new("sleep 0.3")).unwrap();
    let closer = jobs.clone();
    pssh.push(
        "d",
        Sub::new(move |_| {
            closer.close();
            Ok(())
        }),
    )
    .unwrap();
    let report = match pssh.start().wait_timeout(Duration::from_secs(60)) {
        Ok(r) => r,
        Err(run) => {
            run.cancel();
            panic!("the run did not end: an idle drainer held the only worker slot");
        }
    };
    assert!(report.success(), "{report}");
    // No two tasks overlapped: one slot for everyone, jobs included.
    let mut spans: Vec<(SystemTime, SystemTime)> = report
        .labels()
        .iter()
        .flat_map(|l| l.tasks())
        .filter(|t| t.description().starts_with("command"))
        .map(|t| (t.started().unwrap(), t.started().unwrap() + t.duration()))
        .collect();
    assert_eq!(spans.len(), 7);
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0, "overlap under workers(1): {w:?}");
    }
}

#[test]
fn job_tasks_show_in_run_events_and_a_cancel_ends_a_waiting_daemon() {
    let mut pssh = local(&["a", "b"]);
    let jobs = JobQueue::new();
    let id = jobs.push(Command::new("echo hello")).unwrap();
    pssh.push("*", Drain::new(&jobs)).unwrap();
    let run = pssh.start();
    let events = run.events().clone();
    let mut seen = Vec::new();
    assert!(wait_until(Duration::from_secs(10), || {
        seen.extend(events.try_iter());
        seen.iter()
            .any(|e| matches!(e, RunEvent::Finished { report, .. } if report.job() == Some(id)))
    }));
    let label = seen
        .iter()
        .find_map(|e| match e {
            RunEvent::Started {
                label,
                description,
                job,
                ..
            } if &**description == "command `echo hello`" => {
                assert_eq!(*job, Some(id), "the Started event names the job");
                Some(label.clone())
            }
            _ => None,
        })
        .expect("a Started event for the job");
    assert!(seen
        .iter()
        .any(|e| matches!(e, RunEvent::Line { line, label: l, .. } if line == "hello" && *l == label)));
    // The queue stays open: only a cancel ends this run.
    let cancelled_at = Instant::now();
    run.cancel();
    let report = run.wait();
    assert!(cancelled_at.elapsed() < Duration::from_secs(5));
    for l in ["a", "b"] {
        let err = report.label(l).unwrap().error().unwrap();
        assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
    }
    assert_eq!(report.jobs().len(), 1);
}

#[test]
fn a_sub_job_runs_on_the_label_that_takes_it() {
    let mut pssh = local(&["a", "b", "c"]);
    let jobs = JobQueue::new();
    let count = Arc::new(AtomicUsize::new(0));
    for _ in 0..30 {
        let count = count.clone();
        jobs.push(Sub::new(move |ctx| {
            assert!(["a", "b", "c"].contains(&ctx.label()));
            count.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }))
        .unwrap();
    }
    jobs.close();
    pssh.all(Drain::new(&jobs)).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert_eq!(count.load(Ordering::SeqCst), 30);
    assert_eq!(report.jobs().len(), 30);
}

/// Over SSH (the embedded server, and OpenSSH's sshd): commands and a
/// transfer taken as jobs, pushed after the run started, each expanded for
/// the label that took it, over one connection per label.
fn jobs_over_ssh(server: &Server) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    fs::write(dir.path().join("payload"), "shipped\n").unwrap();
    let mut pssh = Parallel::new();
    for l in ["n1", "n2", "n3"] {
        pssh.add_host(l, server.host()).unwrap();
    }
    let jobs = JobQueue::new();
    pssh.push("*", Drain::new(&jobs)).unwrap();
    let run = pssh.start();
    for i in 0..30 {
        jobs.push(Command::new(format!("echo {i} on %LABEL% at %HOST%")))
            .unwrap();
    }
    let copy = jobs
        .push(ScpPut::new(format!("{d}/payload"), format!("{d}/copied-by-%LABEL%")))
        .unwrap();
    jobs.close();
    let report = run.wait();
    assert!(report.success(), "{}: {report}", server.name());
    let listed = report.jobs();
    assert_eq!(listed.len(), 31);
    for (i, j) in listed[..30].iter().enumerate() {
        let label = j.label().unwrap();
        assert_eq!(j.report().stdout_str(), format!("{i} on {label} at 127.0.0.1\n"));
    }
    let by = listed[30].label().unwrap();
    assert_eq!(listed[30].id(), copy);
    assert_eq!(
        fs::read_to_string(dir.path().join(format!("copied-by-{by}"))).unwrap(),
        "shipped\n"
    );
    assert!(
        server.logins() <= 3,
        "one connection per label at most: {}",
        server.logins()
    );
}

on_both!(jobs_over_ssh);

#[test]
fn validate_accepts_a_drain_with_tasks_after_it_and_json_names_the_jobs() {
    let mut pssh = local(&["a", "dead"]);
    let jobs = JobQueue::new();
    let id = jobs.push(Command::new("echo job")).unwrap();
    jobs.close();
    pssh.push("a", Command::new("true").or_goto("after")).unwrap();
    pssh.push("a", Drain::new(&jobs)).unwrap();
    pssh.push("a", Here::new("after")).unwrap();
    pssh.push("a", Command::new("echo tail")).unwrap();
    pssh.validate()
        .expect("a drain with the rest of the queue after it is a valid plan");
    let report = pssh.run();
    assert!(report.success(), "{report}");
    let v: serde_json::Value = serde_json::to_value(&report).unwrap();
    let tasks = v["labels"][0]["tasks"].as_array().unwrap();
    let jobs_in_json: Vec<_> = tasks.iter().filter_map(|t| t.get("job")).collect();
    assert_eq!(jobs_in_json, [&serde_json::json!(id.get())]);
    assert_eq!(tasks.last().unwrap()["stdout"], "tail\n");
    assert!(v.get("jobs_not_run").is_none(), "only when jobs were given up on");

    // Jobs given up on are in the JSON too.
    let left = JobQueue::new();
    left.push(Command::new("echo never")).unwrap();
    pssh.push("dead", Command::new("exit 1")).unwrap();
    pssh.push("dead", Drain::new(&left)).unwrap();
    let report = pssh.run();
    let v: serde_json::Value = serde_json::to_value(&report).unwrap();
    let not_run = v["jobs_not_run"].as_array().expect("jobs_not_run");
    assert_eq!(not_run.len(), 1);
    assert_eq!(not_run[0]["status"], "cancelled");
    assert_eq!(not_run[0]["error"]["kind"], "Aborted");
}

#[test]
fn a_drainer_that_cannot_connect_leaves_the_job_it_took_to_the_others() {
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut pssh = Parallel::builder().no_ssh_config().build().unwrap();
    let dead = Host::new("127.0.0.1")
        .port(closed_port)
        .user("nobody")
        .connect_timeout(Duration::from_secs(5));
    pssh.add_host("dead", dead).unwrap();
    pssh.add_host("live", Host::local()).unwrap();
    let jobs = JobQueue::new();
    for i in 0..10 {
        jobs.push(Command::new(format!("echo {i} on %LABEL%"))).unwrap();
    }
    jobs.close();
    pssh.push("*", Drain::new(&jobs)).unwrap();
    let report = pssh.run();
    let dead = report.label("dead").unwrap();
    assert_eq!(dead.error().map(|e| e.kind()), Some(ErrorKind::Connect));
    // Only its drain, dropped: the job it took (job 0) never reached a host.
    assert_eq!(dead.tasks().len(), 1);
    assert_eq!(dead.tasks()[0].status(), TaskStatus::Cancelled);
    let listed = report.jobs();
    assert_eq!(listed.len(), 10);
    for (i, j) in listed.iter().enumerate() {
        assert_eq!(j.label(), Some("live"));
        assert_eq!(j.report().stdout_str(), format!("{i} on live\n"));
        assert_eq!(j.report().attempts(), 1, "a try that never connected is not an attempt");
    }
}

#[test]
fn a_job_removed_before_any_label_takes_it_never_runs() {
    let mut pssh = local(&["a"]);
    let jobs = JobQueue::new();
    let ids: Vec<_> = (0..3)
        .map(|i| jobs.push(Command::new(format!("echo {i}"))).unwrap())
        .collect();
    assert!(jobs.remove(ids[1]));
    assert!(!jobs.remove(ids[1]), "only once");
    assert_eq!(jobs.pending(), [ids[0], ids[2]]);
    jobs.close();
    pssh.push("a", Drain::new(&jobs)).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    let ran: Vec<_> = report
        .jobs()
        .iter()
        .map(|j| (j.id(), j.report().stdout_str()))
        .collect();
    assert_eq!(ran, [(ids[0], "0\n".to_owned()), (ids[2], "2\n".to_owned())]);
    assert!(!jobs.remove(ids[0]), "a job already taken cannot be removed");
}

#[test]
fn a_cancelled_run_reports_its_running_job_cancelled_and_the_waiting_ones_not_run() {
    let mut pssh = local(&["a"]);
    let jobs = JobQueue::new();
    let running = jobs.push(Command::new("sleep 30")).unwrap();
    let waiting = jobs.push(Command::new("echo never")).unwrap();
    pssh.push("a", Drain::new(&jobs)).unwrap();
    let run = pssh.start();
    let events = run.events().clone();
    let mut started = false;
    assert!(wait_until(Duration::from_secs(10), || {
        started |= events
            .try_iter()
            .any(|e| matches!(e, RunEvent::Started { job, .. } if job == Some(running)));
        started
    }));
    let t0 = Instant::now();
    run.cancel();
    let report = run.wait();
    assert!(t0.elapsed() < Duration::from_secs(10), "the running job was stopped");
    let all = report.jobs();
    assert_eq!(all.len(), 2);
    assert_eq!((all[0].id(), all[0].label()), (running, Some("a")));
    assert_eq!(all[0].report().status(), TaskStatus::Cancelled);
    assert_eq!((all[1].id(), all[1].label()), (waiting, None));
    let e = all[1].report().error().unwrap();
    assert_eq!(e.kind(), ErrorKind::Cancelled, "{e}");
    assert!(e.to_string().contains("the run was cancelled"), "{e}");
    assert!(jobs.is_empty());
}
