//! SEMANTICS sections 8 (variable expansion) and 9 (results).

use std::fs;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ssh_parallel::{
    Command, ErrorKind, Host, OnError, Output, Parallel, Parsub, Report, RsyncGet, RsyncPut, ScpGet, ScpPut, Stdin,
    Sub, TaskStatus,
};

mod common;
use common::*;

fn statuses(report: &Report, label: &str) -> Vec<TaskStatus> {
    tasks(report, label).iter().map(|t| t.status()).collect()
}

// ---- 8. Variable expansion ------------------------------------------------------

#[test]
fn label_host_user_port_and_host_vars_expand_in_commands_paths_and_output_files() {
    if !testbed::prereq::program("rsync", "rsync") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = path_str(dir.path());
    let mut p = Parallel::new();
    p.add_host(
        "web1",
        Host::local()
            .user("alice")
            .port(2222)
            .var("ROLE", "front")
            .var("lower_9", "x"),
    )
    .unwrap();
    p.add_host("db1", Host::local().var("ROLE", "store").var("lower_9", "y"))
        .unwrap();
    let default_user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "root".to_owned());

    fs::write(dir.path().join("front.src"), "front data").unwrap();
    fs::write(dir.path().join("store.src"), "store data").unwrap();
    fs::write(dir.path().join("web1.in"), "stdin of web1").unwrap();
    fs::write(dir.path().join("db1.in"), "stdin of db1").unwrap();

    // Commands.
    p.all(Command::new("echo %LABEL% %HOST% %USER% %PORT% %ROLE% %lower_9%"))
        .unwrap();
    // Output and input file names.
    p.all(
        Command::new("cat; echo; echo err >&2")
            .stdin(Stdin::file(format!("{d}/%LABEL%.in")))
            .stdout(Output::file(format!("{d}/%LABEL%-%ROLE%.out")))
            .stderr(Output::file(format!("{d}/%LABEL%.err"))),
    )
    .unwrap();
    // Transfer paths, source and target, for each transfer action.
    p.all(ScpPut::new(format!("{d}/%ROLE%.src"), format!("{d}/%LABEL%.put")))
        .unwrap();
    p.all(ScpGet::new(
        format!("{d}/%LABEL%.put"),
        format!("{d}/%LABEL%-%ROLE%.get"),
    ))
    .unwrap();
    p.all(RsyncPut::new(format!("{d}/%ROLE%.src"), format!("{d}/%LABEL%.rput")))
        .unwrap();
    p.all(RsyncGet::new(
        format!("{d}/%LABEL%.rput"),
        format!("{d}/%USER%-%LABEL%.rget"),
    ))
    .unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");

    assert_eq!(
        task(&report, "web1", 0).stdout_str(),
        "web1 localhost alice 2222 front x\n"
    );
    assert_eq!(
        task(&report, "db1", 0).stdout_str(),
        format!("db1 localhost {default_user} 22 store y\n")
    );
    assert_eq!(
        task(&report, "web1", 0).description(),
        "command `echo web1 localhost alice 2222 front x`"
    );
    let read = |name: &str| fs::read_to_string(dir.path().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    for (l, role, user) in [("web1", "front", "alice"), ("db1", "store", default_user.as_str())] {
        assert_eq!(read(&format!("{l}-{role}.out")), format!("stdin of {l}\n"));
        assert_eq!(read(&format!("{l}.err")), "err\n");
        assert_eq!(read(&format!("{l}.put")), format!("{role} data"));
        assert_eq!(read(&format!("{l}-{role}.get")), format!("{role} data"));
        assert_eq!(read(&format!("{l}.rput")), format!("{role} data"));
        assert_eq!(read(&format!("{user}-{l}.rget")), format!("{role} data"));
    }
}

#[test]
fn variables_expand_in_dynamic_pushes() {
    let mut p = Parallel::new();
    p.add_host("a", Host::local().var("N", "1")).unwrap();
    p.add_host("b", Host::local().var("N", "2")).unwrap();
    p.push(
        "a",
        Sub::new(|ctx| {
            ctx.push("*", Command::new("echo %LABEL%=%N%"))
                .map(|_| ())
                .map_err(Into::into)
        }),
    )
    .unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
    assert_eq!(task(&report, "a", 1).stdout_str(), "a=1\n");
    assert_eq!(task(&report, "b", 0).stdout_str(), "b=2\n");
}

#[test]
fn percent_percent_is_literal() {
    let mut p = local(&["a"]);
    p.push("a", Command::new("echo 100%% %%LABEL%% %LABEL%%%")).unwrap();
    // A lone % that does not close a name stays as it is.
    p.push("a", Command::new("echo 50% done; date -d @0 -u +%Y-%m"))
        .unwrap();
    p.push("a", Command::new("printf '%%s|%%s' x %%%%")).unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
    assert_eq!(task(&report, "a", 0).stdout_str(), "100% %LABEL% a%\n");
    assert_eq!(task(&report, "a", 1).stdout_str(), "50% done\n1970-01\n");
    assert_eq!(task(&report, "a", 2).stdout_str(), "x|%%");
}

#[test]
fn unknown_variable_is_error_at_push_time() {
    let dir = tempfile::tempdir().unwrap();
    let d = path_str(dir.path());
    let mut p = Parallel::new();
    p.add_host("a", Host::local().var("ROLE", "web")).unwrap();
    p.add_host("b", Host::local()).unwrap();
    p.push("*", Command::new("echo before")).unwrap();

    // Defined for a, not for b: the whole push fails and a gets nothing either.
    let e = p.push("*", Command::new("echo %ROLE%")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnknownVariable);
    assert!(e.to_string().contains("ROLE"), "message must name the variable: {e}");
    assert!(e.to_string().contains('b'), "message should name the label: {e}");
    assert_eq!(e.label(), Some("b"));
    assert_eq!(p.queued_tasks(), 2);

    // Typos, case, and every place where variables expand.
    let failing: Vec<(&str, ssh_parallel::Action)> = vec![
        ("%LABLE%", Command::new("echo %LABLE%").into()),
        ("%label%", Command::new("echo %label%").into()),
        (
            "%OUT%",
            Command::new("true").stdout(Output::file(format!("{d}/%OUT%"))).into(),
        ),
        (
            "%ERR%",
            Command::new("true").stderr(Output::append(format!("{d}/%ERR%"))).into(),
        ),
        (
            "%IN%",
            Command::new("cat").stdin(Stdin::file(format!("{d}/%IN%"))).into(),
        ),
        ("%SRC%", ScpPut::new("%SRC%", d.clone()).into()),
        ("%DST%", ScpGet::new(d.clone(), "%DST%").into()),
        ("%R1%", RsyncPut::many([d.clone(), "%R1%".to_owned()], d.clone()).into()),
        ("%R2%", RsyncGet::new(d.clone(), "%R2%").into()),
    ];
    for (name, action) in failing {
        let e = p.push("a", action).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnknownVariable, "{name}: {e}");
        assert!(e.to_string().contains(name), "message must name {name}: {e}");
    }
    assert_eq!(p.queued_tasks(), 2, "failed pushes leave the plan unchanged");

    // From a sub: the same error, returned to the sub.
    let seen = Arc::new(Mutex::new(None));
    let s = seen.clone();
    p.push(
        "a",
        Sub::new(move |ctx| {
            *s.lock().unwrap() = ctx.push("*", Command::new("echo %NOPE%")).err().map(|e| e.kind());
            Ok(())
        }),
    )
    .unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
    assert_eq!(*seen.lock().unwrap(), Some(ErrorKind::UnknownVariable));
    let a: Vec<_> = tasks(&report, "a").iter().map(|t| t.description().to_owned()).collect();
    assert_eq!(a, vec!["command `echo before`", "sub"]);
    assert_eq!(tasks(&report, "b").len(), 1);
    // No file was created for the rejected output file names.
    assert!(fs::read_dir(dir.path()).unwrap().next().is_none());
}

#[test]
fn expansion_can_be_turned_off_per_host() {
    let dir = tempfile::tempdir().unwrap();
    let d = path_str(dir.path());
    let mut p = Parallel::new();
    p.add_host("raw", Host::local().expand_vars(false)).unwrap();
    p.add_host("cooked", Host::local()).unwrap();
    p.all(Command::new("echo %LABEL% 100%%").stdout(Output::file(format!("{d}/%LABEL%.out"))))
        .unwrap();
    // Unknown names are no error where expansion is off.
    p.push("raw", Command::new("echo %UNDEFINED%")).unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
    assert_eq!(
        fs::read_to_string(dir.path().join("%LABEL%.out")).unwrap(),
        "%LABEL% 100%%\n"
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("cooked.out")).unwrap(),
        "cooked 100%\n"
    );
    assert_eq!(task(&report, "raw", 1).stdout_str(), "%UNDEFINED%\n");
}

// ---- 9. Results ---------------------------------------------------------------

#[test]
fn report_lists_every_task_outcome_per_label() {
    let dir = tempfile::tempdir().unwrap();
    let counter = path_str(&dir.path().join("count"));
    let mut p = local(&["a", "b", "c", "d"]);
    p.push("a", Command::new("echo one")).unwrap();
    p.push("a", Command::new("echo bad >&2; exit 3").on_error(OnError::Ignore))
        .unwrap();
    p.push("a", Command::new("sleep 0.1; echo three").stderr(Output::null()))
        .unwrap();
    p.push("b", Command::new("echo b0")).unwrap();
    p.push("b", Command::new("exit 1")).unwrap();
    p.push("b", Command::new("echo never")).unwrap();
    p.push("b", Sub::new(|_| Ok(()))).unwrap();
    // Fails twice, then succeeds: three attempts.
    let flaky = format!("n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}; [ $n -ge 3 ]");
    p.push("d", Command::new(flaky).on_error(OnError::retry(5))).unwrap();
    let before = SystemTime::now();
    let report = p.run();

    let labels: Vec<_> = report.labels().iter().map(|l| l.label()).collect();
    assert_eq!(labels, vec!["a", "b", "c", "d"], "every label, in registration order");
    assert!(report.label("nosuch").is_none());

    let a = tasks(&report, "a");
    assert_eq!(
        statuses(&report, "a"),
        vec![TaskStatus::Succeeded, TaskStatus::Ignored, TaskStatus::Succeeded]
    );
    assert_eq!(a.iter().map(|t| t.seq()).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert_eq!(a[0].description(), "command `echo one`");
    assert_eq!((a[0].exit_code(), a[0].stdout_str().as_str()), (Some(0), "one\n"));
    assert_eq!((a[1].exit_code(), a[1].stderr_str().as_str()), (Some(3), "bad\n"));
    assert_eq!(
        a[1].error().unwrap().kind(),
        ErrorKind::Command,
        "an ignored failure is still recorded"
    );
    assert_eq!(a[2].stdout_str(), "three\n");
    assert_eq!(a[2].stderr(), None, "only what was asked is captured");
    assert!(a[2].duration() >= Duration::from_millis(90), "{:?}", a[2].duration());
    for t in a {
        assert_eq!(t.attempts(), 1);
        assert_eq!(t.reruns(), 0);
        let started = t.started().expect("a task that ran has a start time");
        assert!(started >= before - Duration::from_secs(1) && started <= SystemTime::now());
    }
    assert!(report.label("a").unwrap().success());

    assert_eq!(
        statuses(&report, "b"),
        vec![
            TaskStatus::Succeeded,
            TaskStatus::Failed,
            TaskStatus::Cancelled,
            TaskStatus::Cancelled
        ]
    );
    let b = tasks(&report, "b");
    assert_eq!(b[1].exit_code(), Some(1));
    assert_eq!(b[1].error().unwrap().kind(), ErrorKind::Command);
    for t in &b[2..] {
        assert_eq!(t.attempts(), 0, "a cancelled task never ran");
        assert!(t.started().is_none());
        assert!(t.error().is_none());
    }
    assert_eq!(b[3].description(), "sub");
    let be = report.label("b").unwrap().error().unwrap();
    assert_eq!(be.kind(), ErrorKind::Command);
    assert_eq!(be.task(), Some("task #1 (command `exit 1`)"));
    assert_eq!(be.to_string(), "b: task #1 (command `exit 1`): exited with status 1");

    assert!(tasks(&report, "c").is_empty());
    assert!(report.label("c").unwrap().success());

    let d = task(&report, "d", 0);
    assert_eq!(
        (d.status(), d.attempts(), d.exit_code()),
        (TaskStatus::Succeeded, 3, Some(0))
    );

    assert_eq!(report.count(TaskStatus::Succeeded), 4);
    assert_eq!(report.count(TaskStatus::Ignored), 1);
    assert_eq!(report.count(TaskStatus::Failed), 1);
    assert_eq!(report.count(TaskStatus::Cancelled), 2);
    assert_eq!(report.label("b").unwrap().with_status(TaskStatus::Cancelled).count(), 2);
    assert!(report.duration() >= Duration::from_millis(90));
    let text = report.to_string();
    assert!(
        text.contains("FAILED") && text.contains("exited with status 1"),
        "{text}"
    );
    assert!(text.contains("4 labels, 1 failed"), "{text}");
}

#[test]
fn report_success_iff_no_label_error() {
    // Ignored failures only: successful.
    let mut p = local(&["a", "b"]);
    p.push("a", Command::new("exit 2").on_error(OnError::Ignore)).unwrap();
    p.push("b", Sub::new(|_| Err("meh".into())).on_error(OnError::Ignore))
        .unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
    assert!(report.errors().is_empty());
    assert!(p.get_errors().is_empty());
    assert_eq!(report.count(TaskStatus::Ignored), 2);

    // One label stopped with Done: not successful, though the others are.
    let mut p = local(&["a", "b"]);
    p.push("a", Command::new("exit 2").on_error(OnError::Done)).unwrap();
    p.push("b", Command::new("true")).unwrap();
    let report = p.run();
    assert!(!report.success());
    assert!(!report.label("a").unwrap().success());
    assert!(report.label("b").unwrap().success());
    assert_eq!(report.errors().len(), 1);

    // Nothing at all: successful.
    let mut p = local(&["a"]);
    let report = p.run();
    assert!(report.success());
    assert!(tasks(&report, "a").is_empty());
    let mut p = Parallel::new();
    assert!(p.run().success());
}

#[test]
fn run_twice_clears_previous_errors() {
    let mut p = local(&["a", "b"]);
    p.push("a", Command::new("echo run1; exit 7")).unwrap();
    p.push("a", Command::new("echo never")).unwrap();
    p.push("b", Command::new("echo run1")).unwrap();
    let first = p.run();
    assert!(!first.success());
    assert_eq!(p.get_error("a").unwrap().unwrap().exit_code(), Some(7));
    assert_eq!(p.get_errors().len(), 1);
    assert_eq!(p.queued_tasks(), 0, "the queues are empty after a run");

    p.push("a", Command::new("echo run2")).unwrap();
    let second = p.run();
    assert!(second.success(), "{second}");
    assert!(p.get_error("a").unwrap().is_none());
    assert!(p.get_errors().is_empty());
    // The second report covers the second run only.
    assert_eq!(tasks(&second, "a").len(), 1);
    assert_eq!(task(&second, "a", 0).seq(), 0);
    assert_eq!(task(&second, "a", 0).stdout_str(), "run2\n");
    assert!(tasks(&second, "b").is_empty());
    // The first report is unchanged.
    assert_eq!(tasks(&first, "a").len(), 2);

    // A third run fails a different label: only its error is there.
    p.push("b", Command::new("exit 1")).unwrap();
    p.run();
    assert!(p.get_error("a").unwrap().is_none());
    assert_eq!(p.get_errors().iter().map(|(l, _)| *l).collect::<Vec<_>>(), vec!["b"]);
}

#[test]
fn get_error_unknown_label_is_error() {
    let mut p = local(&["a"]);
    assert!(p.get_error("a").unwrap().is_none(), "no run yet: no error");
    let e = p.get_error("zz").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnknownLabel);
    assert!(e.to_string().contains("zz"), "{e}");
    p.push("a", Command::new("exit 1")).unwrap();
    p.run();
    assert_eq!(p.get_error("a").unwrap().unwrap().kind(), ErrorKind::Command);
    assert_eq!(p.get_error("zz").unwrap_err().kind(), ErrorKind::UnknownLabel);
    assert_eq!(
        p.get_error("a*").unwrap_err().kind(),
        ErrorKind::UnknownLabel,
        "not a selector"
    );
    assert_eq!(p.get_error("A").unwrap_err().kind(), ErrorKind::UnknownLabel);
}

#[test]
fn get_errors_sorted_by_label() {
    let mut p = local(&["delta", "alpha", "charlie", "bravo", "echo"]);
    p.push("delta", Command::new("exit 4")).unwrap();
    p.push("alpha", Command::new("exit 1")).unwrap();
    p.push("charlie", Sub::new(|_| Err("three".into()))).unwrap();
    p.push("echo", Parsub::new(|_, _| Err("five".into()))).unwrap();
    p.push("bravo", Command::new("true")).unwrap();
    let report = p.run();
    let got: Vec<_> = p.get_errors().iter().map(|(l, e)| (l.to_string(), e.kind())).collect();
    let want = vec![
        ("alpha".to_owned(), ErrorKind::Command),
        ("charlie".to_owned(), ErrorKind::Local),
        ("delta".to_owned(), ErrorKind::Command),
        ("echo".to_owned(), ErrorKind::Local),
    ];
    assert_eq!(got, want);
    let from_report: Vec<_> = report.errors().iter().map(|(l, e)| (l.to_string(), e.kind())).collect();
    assert_eq!(from_report, want);
    for (l, e) in p.get_errors() {
        assert_eq!(e.label(), Some(l), "each error carries its label");
        assert!(e.task().is_some(), "each error carries its task: {e}");
        assert!(e.to_string().starts_with(&format!("{l}: task #0 (")), "{e}");
    }
}

#[test]
fn panic_in_sub_never_crashes_run() {
    let mut p = local(&["s", "ps", "nossh", "ok", "retry", "hooks"]);
    p.push("s", Sub::new(|_| panic!("sub {} panicked", "formatted")))
        .unwrap();
    p.push("ps", Parsub::new(|_, _| panic!("parsub {} panicked", "formatted")))
        .unwrap();
    p.push("nossh", Parsub::new(|_, _| panic!("static parsub panic")).no_ssh())
        .unwrap();
    p.push("ok", Command::new("echo fine")).unwrap();
    // A sub that panics once, then succeeds when retried.
    p.push(
        "retry",
        Sub::new(|ctx| {
            if ctx.attempt() == 1 {
                panic!("first attempt");
            }
            Ok(())
        })
        .on_error(OnError::retry(3)),
    )
    .unwrap();
    // Panicking callbacks elsewhere do not crash the run either.
    p.push(
        "hooks",
        Command::new("echo x").stdout(Output::lines(|_, _| panic!("line callback"))),
    )
    .unwrap();
    p.push(
        "hooks",
        Command::new("exit 1").on_error(OnError::callback(|_| panic!("policy callback"))),
    )
    .unwrap();
    let report = p.run();

    for (l, msg) in [("s", "sub formatted panicked"), ("ps", "parsub formatted panicked")] {
        let e = report
            .label(l)
            .unwrap()
            .error()
            .unwrap_or_else(|| panic!("{l} must fail"));
        assert_eq!(e.kind(), ErrorKind::Local, "{e}");
        assert_eq!(e.label(), Some(l));
        assert!(e.to_string().contains(msg), "the panic message must be kept: {e}");
    }
    let e = report.label("nossh").unwrap().error().unwrap();
    assert_eq!(e.kind(), ErrorKind::Local, "{e}");
    assert!(
        e.to_string().contains("static parsub panic"),
        "the panic message must be kept: {e}"
    );
    assert_eq!(task(&report, "ok", 0).stdout_str(), "fine\n");
    assert!(report.label("ok").unwrap().success());
    let r = task(&report, "retry", 0);
    assert_eq!((r.status(), r.attempts()), (TaskStatus::Succeeded, 2));
    assert_eq!(
        statuses(&report, "hooks"),
        vec![TaskStatus::Succeeded, TaskStatus::Failed]
    );
    // And the scheduler is usable afterwards.
    p.push("s", Command::new("echo again")).unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
}

#[test]
fn host_parse_forms_and_errors() {
    let cases: &[(&str, Option<&str>, &str, Option<u16>)] = &[
        ("web1", None, "web1", None),
        ("root@web1", Some("root"), "web1", None),
        ("root@web1:2222", Some("root"), "web1", Some(2222)),
        ("web1.example.com:22", None, "web1.example.com", Some(22)),
        ("10.0.0.1:65535", None, "10.0.0.1", Some(65535)),
        ("[::1]:2222", None, "::1", Some(2222)),
        ("[::1]", None, "::1", None),
        ("u@[fe80::1]:1", Some("u"), "fe80::1", Some(1)),
        ("fe80::1", None, "fe80::1", None),
        ("me@corp@bastion", Some("me@corp"), "bastion", None),
    ];
    for &(spec, user, host, port) in cases {
        let h = Host::parse(spec).unwrap_or_else(|e| panic!("{spec:?}: {e}"));
        assert_eq!(
            (h.user_name(), h.hostname(), h.port_number()),
            (user, host, port),
            "{spec:?}"
        );
    }
    for bad in [
        "", "@h", "u@", ":22", "h:", "h:0", "h:x", "h:70000", "h:-1", "[::1", "[::1]x", "a b", "u@a b:22",
    ] {
        let e = Host::parse(bad)
            .err()
            .unwrap_or_else(|| panic!("{bad:?} must be rejected"));
        assert_eq!(e.kind(), ErrorKind::InvalidHost, "{bad:?}: {e}");
        assert!(
            e.to_string().contains(&format!("{bad:?}")),
            "message must name the spec: {e}"
        );
    }
    // A parsed host is used as given when registered, and its parts expand.
    let mut p = Parallel::new();
    p.add_host("x", Host::parse("bob@example.org:2022").unwrap()).unwrap();
    let h = p.host("x").unwrap();
    assert_eq!(
        (h.user_name(), h.hostname(), h.port_number()),
        (Some("bob"), "example.org", Some(2022))
    );
}
