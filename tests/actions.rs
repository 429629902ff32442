//! SEMANTICS section 3 (actions), on the local transport.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ssh_parallel::{
    Command, Connect, ErrorKind, Join, OnError, Output, Parsub, RsyncGet, RsyncPut, ScpGet, ScpPut, Stdin, Sub,
    TaskReport, TaskStatus,
};

mod common;
use common::*;

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn mtime(p: &Path) -> SystemTime {
    fs::metadata(p).unwrap().modified().unwrap()
}

/// Writes `content` to `p` with `mode` and a fixed, old modification time.
fn make_file(p: &Path, content: &str, mode: u32, secs: u64) {
    fs::write(p, content).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    set_mtime(p, secs);
}

fn set_mtime(p: &Path, secs: u64) {
    let f = fs::File::open(p).unwrap();
    let t = UNIX_EPOCH + Duration::from_secs(secs);
    f.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
        .unwrap();
}

// ---- command ------------------------------------------------------------------

#[test]
fn command_captures_stdout_and_stderr_and_exit_code() {
    let mut p = local(&["a", "b"]);
    p.push("a", Command::new("echo out; echo err >&2; printf 'no newline'"))
        .unwrap();
    p.push("b", Command::new("echo partial; echo oops >&2; exit 3"))
        .unwrap();
    let report = p.run();

    let t = task(&report, "a", 0);
    assert_eq!(t.status(), TaskStatus::Succeeded);
    assert_eq!(t.stdout_str(), "out\nno newline");
    assert_eq!(t.stderr_str(), "err\n");
    assert_eq!(t.stdout(), Some(&b"out\nno newline"[..]));
    assert_eq!(t.exit_code(), Some(0));
    assert_eq!(t.signal(), None);
    assert!(t.error().is_none());
    assert!(!t.stdout_truncated() && !t.stderr_truncated());

    let t = task(&report, "b", 0);
    assert_eq!(t.status(), TaskStatus::Failed);
    assert_eq!(t.exit_code(), Some(3));
    assert_eq!(t.stdout_str(), "partial\n", "output of a failed command is kept");
    assert_eq!(t.stderr_str(), "oops\n");
    let e = t.error().unwrap();
    assert_eq!(e.kind(), ErrorKind::Command);
    assert_eq!(e.exit_code(), Some(3));
    assert_eq!(e.label(), Some("b"));
    assert!(e.task().unwrap().contains("exit 3"), "{e}");
    assert!(e.to_string().contains('3'), "{e}");
    assert_eq!(report.label("b").unwrap().error().unwrap().kind(), ErrorKind::Command);
    assert!(report.label("a").unwrap().success());
}

#[test]
fn command_argv_quotes_each_word() {
    let words = [
        "printf", "[%s]", "a b", "$HOME", "it's", "*", ";echo x", "\"q\"", "`id`", "",
    ];
    let c = Command::argv(words);
    assert!(c.command_line().starts_with("printf "), "{}", c.command_line());
    let mut p = local(&["a"]);
    p.push("a", c).unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
    assert_eq!(
        task(&report, "a", 0).stdout_str(),
        "[a b][$HOME][it's][*][;echo x][\"q\"][`id`][]"
    );
}

#[test]
fn ok_exit_codes_accept_nonzero() {
    let mut p = local(&["a", "b", "c"]);
    p.push("a", Command::new("exit 3").ok_exit_codes([0, 3])).unwrap();
    p.push("b", Command::new("exit 4").ok_exit_codes([0, 3])).unwrap();
    p.push("c", Command::new("exit 0").ok_exit_codes([1])).unwrap();
    let report = p.run();
    let t = task(&report, "a", 0);
    assert_eq!((t.status(), t.exit_code()), (TaskStatus::Succeeded, Some(3)));
    assert!(report.label("a").unwrap().success());
    let t = task(&report, "b", 0);
    assert_eq!((t.status(), t.exit_code()), (TaskStatus::Failed, Some(4)));
    assert_eq!(t.error().unwrap().kind(), ErrorKind::Command);
    let t = task(&report, "c", 0);
    assert_eq!(
        t.status(),
        TaskStatus::Failed,
        "0 is not accepted when the list leaves it out"
    );
    assert_eq!(t.error().unwrap().exit_code(), Some(0));
}

#[test]
fn stdout_to_file_with_label_expansion() {
    let dir = tempfile::tempdir().unwrap();
    let d = path_str(dir.path());
    let mut p = local(&["a", "b"]);
    p.all(
        Command::new("echo hi from %LABEL%; echo warn %LABEL% >&2")
            .stdout(Output::file(format!("{d}/%LABEL%.out")))
            .stderr(Output::file(format!("{d}/%LABEL%.err"))),
    )
    .unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
    for l in ["a", "b"] {
        assert_eq!(
            fs::read_to_string(dir.path().join(format!("{l}.out"))).unwrap(),
            format!("hi from {l}\n")
        );
        assert_eq!(
            fs::read_to_string(dir.path().join(format!("{l}.err"))).unwrap(),
            format!("warn {l}\n")
        );
        let t = task(&report, l, 0);
        assert_eq!(t.stdout(), None, "output sent to a file is not captured");
        assert_eq!(t.stderr(), None);
    }

    // Output::file truncates, Output::append appends.
    let mut p = local(&["a"]);
    p.push(
        "a",
        Command::new("echo one").stdout(Output::file(format!("{d}/%LABEL%.out"))),
    )
    .unwrap();
    p.push(
        "a",
        Command::new("echo two").stdout(Output::append(format!("{d}/%LABEL%.out"))),
    )
    .unwrap();
    assert!(p.run().success());
    assert_eq!(fs::read_to_string(dir.path().join("a.out")).unwrap(), "one\ntwo\n");

    // An output file that cannot be created fails the task, naming the file.
    let mut p = local(&["a"]);
    p.push(
        "a",
        Command::new("echo x").stdout(Output::file(format!("{d}/no/such/dir/%LABEL%.out"))),
    )
    .unwrap();
    let report = p.run();
    let e = task(&report, "a", 0).error().expect("the task must fail").clone();
    assert_eq!(e.kind(), ErrorKind::Local, "{e}");
    assert!(e.to_string().contains("no/such/dir/a.out"), "{e}");
}

#[test]
fn output_inherit() {
    let mut p = local(&["a"]);
    p.push(
        "a",
        Command::new("echo inherited line; echo inherited err >&2")
            .stdout(Output::inherit())
            .stderr(Output::inherit()),
    )
    .unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
    let t = task(&report, "a", 0);
    assert_eq!(t.stdout(), None, "inherited output is not captured");
    assert_eq!(t.stderr(), None);
}

#[test]
fn output_null() {
    let mut p = local(&["a"]);
    // Much more than a pipe buffer: the output is thrown away, nothing blocks.
    p.push(
        "a",
        Command::new("head -c 300000 /dev/zero; head -c 300000 /dev/zero >&2; echo done")
            .stdout(Output::null())
            .stderr(Output::null()),
    )
    .unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
    let t = task(&report, "a", 0);
    assert_eq!(t.stdout(), None);
    assert_eq!(t.stderr(), None);
    assert_eq!(t.exit_code(), Some(0));
}

#[test]
fn output_lines_callback() {
    let seen = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let s1 = seen.clone();
    let s2 = seen.clone();
    let mut p = local(&["a", "b"]);
    p.all(
        Command::new("echo one %LABEL%; printf 'two\\nthree'; echo err-%LABEL% >&2")
            .stdout(Output::lines(move |l, line| {
                s1.lock().unwrap().push((l.to_owned(), format!("out:{line}")))
            }))
            .stderr(Output::lines(move |l, line| {
                s2.lock().unwrap().push((l.to_owned(), format!("err:{line}")))
            })),
    )
    .unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
    let seen = seen.lock().unwrap();
    for l in ["a", "b"] {
        let outs: Vec<&str> = seen
            .iter()
            .filter(|(x, s)| x == l && s.starts_with("out:"))
            .map(|(_, s)| &s[..])
            .collect();
        assert_eq!(outs, vec![format!("out:one {l}"), "out:two".into(), "out:three".into()]);
        let errs: Vec<&str> = seen
            .iter()
            .filter(|(x, s)| x == l && s.starts_with("err:"))
            .map(|(_, s)| &s[..])
            .collect();
        assert_eq!(errs, vec![format!("err:err-{l}")]);
        assert_eq!(task(&report, l, 0).stdout(), None);
    }
    assert_eq!(seen.len(), 8);
}

#[test]
fn capture_limit_truncation_is_flagged() {
    let mut p = local(&["a", "b"]);
    p.push(
        "a",
        Command::new("printf 0123456789; printf abc >&2")
            .stdout(Output::capture_limit(5))
            .stderr(Output::capture_limit(5)),
    )
    .unwrap();
    // Exactly at the limit is not truncated.
    p.push("b", Command::new("printf 01234").stdout(Output::capture_limit(5)))
        .unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
    let t = task(&report, "a", 0);
    assert_eq!(t.stdout_str(), "01234");
    assert!(t.stdout_truncated());
    assert_eq!(t.stderr_str(), "abc");
    assert!(!t.stderr_truncated());
    let t = task(&report, "b", 0);
    assert_eq!(t.stdout_str(), "01234");
    assert!(!t.stdout_truncated());
}

#[test]
fn default_capture_limit_is_one_mib() {
    assert_eq!(ssh_parallel::DEFAULT_CAPTURE_LIMIT, 1 << 20);
    let mut p = local(&["a"]);
    p.push("a", Command::new("head -c 1100000 /dev/zero")).unwrap();
    let report = p.run();
    let t = task(&report, "a", 0);
    assert_eq!(t.stdout().unwrap().len(), 1 << 20);
    assert!(t.stdout_truncated());
}

#[test]
fn stdin_from_data_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = path_str(dir.path());
    fs::write(dir.path().join("a.in"), "from file a\n").unwrap();
    fs::write(dir.path().join("b.in"), "from file b\n").unwrap();
    let mut p = local(&["a", "b"]);
    p.all(Command::new("cat").stdin(Stdin::data(b"some\0bytes\n".to_vec())))
        .unwrap();
    p.all(Command::new("cat").stdin(Stdin::file(format!("{d}/%LABEL%.in"))))
        .unwrap();
    p.all(Command::new("cat; echo end")).unwrap(); // default: no input
    p.all(Command::new("wc -c").stdin(Stdin::null())).unwrap();
    // A large input is fed without deadlocking against the output.
    p.all(Command::new("cat").stdin(Stdin::data(vec![b'x'; 500_000])))
        .unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
    for l in ["a", "b"] {
        assert_eq!(task(&report, l, 0).stdout(), Some(&b"some\0bytes\n"[..]));
        assert_eq!(task(&report, l, 1).stdout_str(), format!("from file {l}\n"));
        assert_eq!(task(&report, l, 2).stdout_str(), "end\n");
        assert_eq!(task(&report, l, 3).stdout_str().trim(), "0");
        assert_eq!(task(&report, l, 4).stdout().unwrap().len(), 500_000);
    }

    let mut p = local(&["a"]);
    p.push(
        "a",
        Command::new("cat").stdin(Stdin::file(format!("{d}/missing-%LABEL%.in"))),
    )
    .unwrap();
    let report = p.run();
    let e = report
        .label("a")
        .unwrap()
        .error()
        .expect("a missing stdin file fails the task");
    assert_eq!(e.kind(), ErrorKind::Local, "{e}");
    assert!(e.to_string().contains("missing-a.in"), "{e}");
}

#[test]
fn env_is_passed() {
    let mut p = local(&["a"]);
    p.push(
        "a",
        Command::new("echo \"$FOO|$BAR|$HOME_IS_SET\"")
            .env("FOO", "bar baz")
            .env("BAR", "it's $x")
            .env("HOME_IS_SET", "yes"),
    )
    .unwrap();
    p.push("a", Command::new("echo \"[$FOO]\"")).unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
    assert_eq!(task(&report, "a", 0).stdout_str(), "bar baz|it's $x|yes\n");
    assert_eq!(task(&report, "a", 1).stdout_str(), "[]\n", "env is per command");
}

#[test]
fn command_killed_by_signal_records_signal() {
    let mut p = local(&["a"]);
    p.push("a", Command::new("echo before; kill -9 $$; echo after"))
        .unwrap();
    let report = p.run();
    let t = task(&report, "a", 0);
    assert_eq!(t.status(), TaskStatus::Failed);
    assert_eq!(t.signal(), Some(9));
    assert_eq!(t.exit_code(), None);
    assert_eq!(t.stdout_str(), "before\n");
    let e = t.error().unwrap();
    assert_eq!(e.kind(), ErrorKind::Command);
    assert_eq!(e.signal(), Some(9));
    assert!(e.to_string().contains("signal 9"), "{e}");
    // A killed command is not an exit status: ok_exit_codes cannot accept it.
    let mut p = local(&["a"]);
    p.push("a", Command::new("kill -TERM $$").ok_exit_codes(0..=255))
        .unwrap();
    let report = p.run();
    assert_eq!(task(&report, "a", 0).signal(), Some(15));
    assert_eq!(report.label("a").unwrap().error().unwrap().kind(), ErrorKind::Command);
}

#[test]
fn command_timeout_kills_it() {
    let mut p = local(&["a"]);
    p.push("a", Command::new("sleep 10").timeout(Duration::from_millis(200)))
        .unwrap();
    let start = Instant::now();
    let report = p.run();
    assert!(start.elapsed() < Duration::from_secs(5), "the command was not killed");
    let e = report.label("a").unwrap().error().unwrap();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
}

#[test]
fn pty_is_accepted_locally() {
    let mut p = local(&["a"]);
    p.push("a", Command::new("echo tty").pty(true)).unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
    assert_eq!(task(&report, "a", 0).stdout_str(), "tty\n");
}

#[test]
fn all_is_push_to_every_label() {
    let mut p = local(&["x", "y", "z"]);
    let sel = p.all(Command::new("echo %LABEL%")).unwrap();
    assert_eq!(sel.labels().collect::<Vec<_>>(), vec!["x", "y", "z"]);
    let report = p.run();
    for l in ["x", "y", "z"] {
        assert_eq!(task(&report, l, 0).stdout_str(), format!("{l}\n"));
    }
}

// ---- scp ----------------------------------------------------------------------

#[test]
fn scp_put_and_get_copy_files_with_modes_and_mtimes() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.txt");
    let exe = dir.path().join("tool.sh");
    make_file(&src, "payload\n", 0o640, 1_000_000_000);
    make_file(&exe, "#!/bin/sh\n", 0o751, 1_100_000_000);
    let put = dir.path().join("put.txt");
    let got = dir.path().join("got.sh");
    let mut p = local(&["a"]);
    p.push("a", ScpPut::new(path_str(&src), path_str(&put))).unwrap();
    p.push("a", ScpGet::new(path_str(&exe), path_str(&got))).unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
    assert_eq!(task(&report, "a", 0).status(), TaskStatus::Succeeded);
    assert!(task(&report, "a", 0).description().contains("scp_put"));
    assert!(task(&report, "a", 1).description().contains("scp_get"));
    assert_eq!(fs::read_to_string(&put).unwrap(), "payload\n");
    assert_eq!(mode(&put), 0o640);
    assert_eq!(mtime(&put), UNIX_EPOCH + Duration::from_secs(1_000_000_000));
    assert_eq!(fs::read_to_string(&got).unwrap(), "#!/bin/sh\n");
    assert_eq!(mode(&got), 0o751);
    assert_eq!(mtime(&got), UNIX_EPOCH + Duration::from_secs(1_100_000_000));

    // Into an existing directory: the file keeps its name.
    let into = dir.path().join("into");
    fs::create_dir(&into).unwrap();
    let mut p = local(&["a"]);
    p.push("a", ScpPut::new(path_str(&src), path_str(&into))).unwrap();
    assert!(p.run().success());
    assert_eq!(fs::read_to_string(into.join("src.txt")).unwrap(), "payload\n");

    // A missing source is a transfer error naming it.
    let mut p = local(&["a"]);
    p.push(
        "a",
        ScpGet::new(format!("{}/nope.txt", dir.path().display()), path_str(&into)),
    )
    .unwrap();
    let report = p.run();
    let e = report.label("a").unwrap().error().unwrap();
    assert_eq!(e.kind(), ErrorKind::Transfer, "{e}");
    assert!(e.to_string().contains("nope.txt"), "{e}");
}

#[test]
fn scp_directory_needs_recursive() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    fs::create_dir_all(tree.join("sub")).unwrap();
    make_file(&tree.join("f1"), "one", 0o600, 1_200_000_000);
    make_file(&tree.join("sub/f2"), "two", 0o755, 1_300_000_000);
    fs::set_permissions(tree.join("sub"), fs::Permissions::from_mode(0o750)).unwrap();
    set_mtime(&tree.join("sub"), 1_400_000_000);

    let dest = dir.path().join("copy");
    let mut p = local(&["a"]);
    p.push("a", ScpPut::new(path_str(&tree), path_str(&dest))).unwrap();
    let report = p.run();
    let e = report
        .label("a")
        .unwrap()
        .error()
        .expect("a directory without recursive must fail");
    assert_eq!(e.kind(), ErrorKind::Transfer, "{e}");
    assert!(e.to_string().contains(&path_str(&tree)), "{e}");
    assert!(!dest.exists());

    let mut p = local(&["a"]);
    p.push("a", ScpGet::new(path_str(&tree), path_str(&dest))).unwrap();
    assert_eq!(p.run().label("a").unwrap().error().unwrap().kind(), ErrorKind::Transfer);

    let mut p = local(&["a"]);
    p.push("a", ScpPut::new(path_str(&tree), path_str(&dest)).recursive(true))
        .unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
    assert_eq!(fs::read_to_string(dest.join("f1")).unwrap(), "one");
    assert_eq!(fs::read_to_string(dest.join("sub/f2")).unwrap(), "two");
    assert_eq!(mode(&dest.join("f1")), 0o600);
    assert_eq!(mode(&dest.join("sub/f2")), 0o755);
    assert_eq!(mode(&dest.join("sub")), 0o750);
    assert_eq!(
        mtime(&dest.join("sub/f2")),
        UNIX_EPOCH + Duration::from_secs(1_300_000_000)
    );
    assert_eq!(
        mtime(&dest.join("sub")),
        UNIX_EPOCH + Duration::from_secs(1_400_000_000)
    );

    let back = dir.path().join("back");
    let mut p = local(&["a"]);
    p.push("a", ScpGet::new(path_str(&dest), path_str(&back)).recursive(true))
        .unwrap();
    assert!(p.run().success());
    assert_eq!(fs::read_to_string(back.join("sub/f2")).unwrap(), "two");
}

#[test]
fn scp_several_sources_into_directory() {
    let dir = tempfile::tempdir().unwrap();
    let f1 = dir.path().join("f1");
    let f2 = dir.path().join("f2");
    make_file(&f1, "1", 0o644, 1_000_000_000);
    make_file(&f2, "2", 0o600, 1_000_000_000);
    let out = dir.path().join("out");
    fs::create_dir(&out).unwrap();
    let mut p = local(&["a"]);
    p.push("a", ScpPut::many([path_str(&f1), path_str(&f2)], path_str(&out)))
        .unwrap();
    p.push(
        "a",
        ScpGet::many([path_str(&f1), path_str(&f2)], format!("{}/", path_str(&out))),
    )
    .unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
    assert_eq!(fs::read_to_string(out.join("f1")).unwrap(), "1");
    assert_eq!(fs::read_to_string(out.join("f2")).unwrap(), "2");
    assert_eq!(mode(&out.join("f2")), 0o600);

    // Several sources into something that is not a directory: a transfer error.
    let mut p = local(&["a"]);
    let missing = dir.path().join("not-a-dir");
    p.push("a", ScpPut::many([path_str(&f1), path_str(&f2)], path_str(&missing)))
        .unwrap();
    let report = p.run();
    let e = report.label("a").unwrap().error().unwrap();
    assert_eq!(e.kind(), ErrorKind::Transfer, "{e}");
    assert!(e.to_string().contains("not-a-dir"), "{e}");
    assert!(!missing.exists());
}

#[test]
fn transfer_with_empty_path_is_rejected_at_push() {
    let mut p = local(&["a"]);
    assert_eq!(
        p.push("a", ScpPut::new("", "/tmp/x")).unwrap_err().kind(),
        ErrorKind::InvalidConfig
    );
    assert_eq!(
        p.push("a", ScpGet::new("/tmp/x", "")).unwrap_err().kind(),
        ErrorKind::InvalidConfig
    );
    let none: [&str; 0] = [];
    assert_eq!(
        p.push("a", RsyncPut::many(none, "/tmp/x")).unwrap_err().kind(),
        ErrorKind::InvalidConfig
    );
    assert_eq!(p.queued_tasks(), 0);
}

// ---- rsync --------------------------------------------------------------------

#[test]
fn rsync_put_copies_tree_with_extra_args() {
    if !testbed::prereq::program("rsync", "rsync") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("deep/er")).unwrap();
    make_file(&src.join("keep.txt"), "keep", 0o640, 1_000_000_000);
    make_file(&src.join("deep/er/x.txt"), "x", 0o755, 1_000_000_000);
    make_file(&src.join("skip.tmp"), "skip", 0o644, 1_000_000_000);
    let dst = dir.path().join("dst");
    let mut p = local(&["a"]);
    p.push(
        "a",
        RsyncPut::new(format!("{}/", path_str(&src)), path_str(&dst)).args(["--exclude", "*.tmp"]),
    )
    .unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
    assert!(task(&report, "a", 0).description().contains("rsync_put"));
    assert_eq!(fs::read_to_string(dst.join("keep.txt")).unwrap(), "keep");
    assert_eq!(fs::read_to_string(dst.join("deep/er/x.txt")).unwrap(), "x");
    assert!(!dst.join("skip.tmp").exists(), "the extra args were not passed");
    assert_eq!(mode(&dst.join("keep.txt")), 0o640);
    assert_eq!(mode(&dst.join("deep/er/x.txt")), 0o755);
    assert_eq!(
        mtime(&dst.join("keep.txt")),
        UNIX_EPOCH + Duration::from_secs(1_000_000_000)
    );

    // rsync_get the other way, with several sources.
    let back = dir.path().join("back");
    fs::create_dir(&back).unwrap();
    let mut p = local(&["a"]);
    p.push(
        "a",
        RsyncGet::many(
            [path_str(&dst.join("keep.txt")), path_str(&dst.join("deep"))],
            path_str(&back),
        ),
    )
    .unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
    assert_eq!(fs::read_to_string(back.join("keep.txt")).unwrap(), "keep");
    assert_eq!(fs::read_to_string(back.join("deep/er/x.txt")).unwrap(), "x");
}

#[test]
fn rsync_failure_is_transfer_error() {
    if !testbed::prereq::program("rsync", "rsync") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("{}/does-not-exist", path_str(dir.path()));
    let mut p = local(&["a", "b"]);
    p.push("a", RsyncGet::new(missing.clone(), path_str(&dir.path().join("x"))))
        .unwrap();
    p.push(
        "b",
        RsyncPut::new(path_str(dir.path()), path_str(&dir.path().join("y"))).args(["--no-such-option"]),
    )
    .unwrap();
    let report = p.run();
    assert!(!report.success());
    let e = report.label("a").unwrap().error().unwrap();
    assert_eq!(e.kind(), ErrorKind::Transfer, "{e}");
    assert!(e.to_string().contains("does-not-exist"), "the cause must be given: {e}");
    assert_eq!(e.label(), Some("a"));
    let e = report.label("b").unwrap().error().unwrap();
    assert_eq!(e.kind(), ErrorKind::Transfer, "{e}");
    assert_eq!(task(&report, "b", 0).status(), TaskStatus::Failed);
}

// ---- parsub -------------------------------------------------------------------

#[test]
fn parsub_runs_with_session_and_can_exec() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let mut p = local(&["a", "b"]);
    p.all(Parsub::new(move |label, session| {
        let connected = session.is_connected();
        let same = session.label() == label;
        let out = session.exec(&format!("echo hello {label}; echo e >&2; exit 2"))?;
        let fed = session.exec_with_stdin("tr a-z A-Z", b"secret")?;
        s.lock().unwrap().push((label.to_owned(), connected, same, out, fed));
        Ok(())
    }))
    .unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
    let mut seen = seen.lock().unwrap().clone();
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(seen.len(), 2);
    for (l, (label, connected, same, out, fed)) in ["a", "b"].iter().zip(seen) {
        assert_eq!(&label, l);
        assert!(connected && same);
        assert_eq!(out.exit_code, Some(2));
        assert!(!out.success());
        assert_eq!(out.stdout_str(), format!("hello {l}\n"));
        assert_eq!(out.stderr, b"e\n");
        assert!(fed.success());
        assert_eq!(fed.stdout_str(), "SECRET");
        let t = task(&report, l, 0);
        assert_eq!(t.status(), TaskStatus::Succeeded);
        assert_eq!(t.description(), "parsub");
    }

    // A parsub's Err is the task's Local error.
    let mut p = local(&["a"]);
    p.push(
        "a",
        Parsub::new(|_, s| Err(format!("failed with {}", s.exec("echo 7")?.stdout_str().trim()).into())),
    )
    .unwrap();
    let report = p.run();
    let e = report.label("a").unwrap().error().unwrap();
    assert_eq!(e.kind(), ErrorKind::Local, "{e}");
    assert!(e.to_string().contains("failed with 7"), "{e}");
}

#[test]
fn parsub_no_ssh_session_cannot_exec() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let mut p = local(&["a", "b"]);
    p.push(
        "a",
        Parsub::new(move |label, session| {
            let err = session.exec("echo should not run").unwrap_err();
            s.lock()
                .unwrap()
                .push((label.to_owned(), session.is_connected(), err.kind()));
            Ok(())
        })
        .no_ssh(),
    )
    .unwrap();
    // Propagating the refusal fails the task with a Local error.
    p.push(
        "b",
        Parsub::new(|_, session| Ok(session.exec("true").map(|_| ())?)).no_ssh(),
    )
    .unwrap();
    let report = p.run();
    assert_eq!(*seen.lock().unwrap(), vec![("a".to_owned(), false, ErrorKind::Local)]);
    let t = task(&report, "a", 0);
    assert_eq!(t.status(), TaskStatus::Succeeded);
    assert!(t.description().contains("no_ssh"), "{}", t.description());
    let e = report.label("b").unwrap().error().unwrap();
    assert_eq!(e.kind(), ErrorKind::Local, "{e}");
    assert!(e.to_string().contains("no_ssh"), "{e}");
}

#[test]
fn parsub_panic_becomes_local_error() {
    let mut p = local(&["a", "b"]);
    p.push("a", Parsub::new(|_, _| panic!("parsub went boom"))).unwrap();
    p.push("a", Command::new("echo never")).unwrap();
    p.push("b", Parsub::new(|_, _| std::panic::panic_any(42_u8)).no_ssh())
        .unwrap();
    p.push("b", Command::new("echo never")).unwrap();
    let report = p.run();
    let e = report.label("a").unwrap().error().unwrap();
    assert_eq!(e.kind(), ErrorKind::Local, "{e}");
    assert!(e.to_string().contains("parsub went boom"), "{e}");
    assert_eq!(task(&report, "a", 0).status(), TaskStatus::Failed);
    assert_eq!(task(&report, "a", 1).status(), TaskStatus::Cancelled);
    assert_eq!(report.label("b").unwrap().error().unwrap().kind(), ErrorKind::Local);
    assert_eq!(task(&report, "b", 1).status(), TaskStatus::Cancelled);
}

// ---- sub ----------------------------------------------------------------------

#[test]
fn sub_can_push_new_tasks_dynamically() {
    let mut p = local(&["a", "b", "c"]);
    p.push("b", Command::new("echo b-static")).unwrap();
    // After the join, b has finished its queue; c never had one.
    p.push("a", Join::new("b")).unwrap();
    let pushed = Arc::new(Mutex::new(Vec::new()));
    let pu = pushed.clone();
    p.push(
        "a",
        Sub::new(move |ctx| {
            let sel = ctx.push("a,b,c", Command::new("echo dyn-%LABEL%"))?;
            pu.lock()
                .unwrap()
                .push(sel.labels().map(str::to_owned).collect::<Vec<_>>());
            // A sub pushing a sub: the plan keeps growing.
            ctx.push(
                "c",
                Sub::new(|ctx| {
                    ctx.push("c", Command::new("echo grand-child"))?;
                    Ok(())
                }),
            )?;
            Ok(())
        }),
    )
    .unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
    assert_eq!(*pushed.lock().unwrap(), vec![vec!["a", "b", "c"]]);

    let a: Vec<_> = tasks(&report, "a").iter().map(|t| t.description().to_owned()).collect();
    assert_eq!(a, vec!["join b", "sub", "command `echo dyn-a`"]);
    assert_eq!(task(&report, "a", 2).stdout_str(), "dyn-a\n");

    let b = tasks(&report, "b");
    assert_eq!(b.len(), 2, "{b:?}");
    assert_eq!(b[0].stdout_str(), "b-static\n");
    assert_eq!(
        b[1].stdout_str(),
        "dyn-b\n",
        "a finished label must run what is pushed to it later"
    );
    assert_eq!(b[1].status(), TaskStatus::Succeeded);

    let c = tasks(&report, "c");
    let outs: Vec<_> = c.iter().map(|t| (t.description().to_owned(), t.stdout_str())).collect();
    assert_eq!(
        outs,
        vec![
            ("command `echo dyn-c`".to_owned(), "dyn-c\n".to_owned()),
            ("sub".to_owned(), String::new()),
            ("command `echo grand-child`".to_owned(), "grand-child\n".to_owned()),
        ]
    );
    assert_eq!(p.queued_tasks(), 0);
}

#[test]
fn sub_sees_earlier_results() {
    let mut p = local(&["a", "b"]);
    p.push("b", Command::new("echo b-out; exit 5").on_error(OnError::Done))
        .unwrap();
    p.push("a", Command::new("echo first")).unwrap();
    p.push("a", Join::new("b")).unwrap();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let s = seen.clone();
    p.push(
        "a",
        Sub::new(move |ctx| {
            let mut s = s.lock().unwrap();
            s.push(format!("label={}", ctx.label()));
            s.push(format!("attempt={}", ctx.attempt()));
            let last = ctx.last_result().unwrap();
            s.push(format!("last={}", last.description()));
            let mine = ctx.results("a").unwrap();
            s.push(format!("mine={}:{}", mine.len(), mine[0].stdout_str().trim()));
            let theirs = ctx.results("b").unwrap();
            s.push(format!(
                "b={}:{:?}:{:?}",
                theirs[0].stdout_str().trim(),
                theirs[0].exit_code(),
                theirs[0].status()
            ));
            s.push(format!("b-error={:?}", ctx.label_error("b").map(|e| e.kind())));
            s.push(format!("a-error={:?}", ctx.label_error("a").map(|e| e.kind())));
            s.push(format!("nosuch={:?}", ctx.results("nosuch").map(|r| r.len())));
            s.push(format!("labels={}", ctx.labels().collect::<Vec<_>>().join(",")));
            Ok(())
        }),
    )
    .unwrap();
    let report = p.run();
    assert!(report.label("a").unwrap().success(), "{report}");
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            "label=a",
            "attempt=1",
            "last=join b",
            "mine=2:first",
            "b=b-out:Some(5):Failed",
            "b-error=Some(Command)",
            "a-error=None",
            "nosuch=None",
            "labels=a,b",
        ]
    );
}

#[test]
fn sub_error_and_panic_become_local_error() {
    let mut p = local(&["a", "b", "c"]);
    p.push("a", Sub::new(|_| Err("bad thing happened".into()))).unwrap();
    p.push("a", Command::new("echo never")).unwrap();
    p.push("b", Sub::new(|_| panic!("sub exploded"))).unwrap();
    p.push("b", Command::new("echo never")).unwrap();
    p.push(
        "c",
        Sub::new(|_| Err(std::io::Error::other("io trouble").into())).on_error(OnError::Ignore),
    )
    .unwrap();
    p.push("c", Command::new("echo after")).unwrap();
    let report = p.run();

    let e = report.label("a").unwrap().error().unwrap();
    assert_eq!(e.kind(), ErrorKind::Local, "{e}");
    assert!(e.to_string().contains("bad thing happened"), "{e}");
    assert_eq!(e.label(), Some("a"));
    assert_eq!(task(&report, "a", 0).status(), TaskStatus::Failed);
    assert_eq!(task(&report, "a", 1).status(), TaskStatus::Cancelled);

    let e = report.label("b").unwrap().error().unwrap();
    assert_eq!(e.kind(), ErrorKind::Local, "{e}");
    assert!(e.to_string().contains("sub exploded"), "{e}");
    assert_eq!(task(&report, "b", 1).status(), TaskStatus::Cancelled);

    assert!(report.label("c").unwrap().success());
    let t = task(&report, "c", 0);
    assert_eq!(t.status(), TaskStatus::Ignored);
    assert_eq!(t.error().unwrap().kind(), ErrorKind::Local);
    assert!(t.error().unwrap().to_string().contains("io trouble"));
    assert_eq!(task(&report, "c", 1).stdout_str(), "after\n");
}

#[test]
fn on_done_called_with_report() {
    type Seen = Vec<(String, String, TaskStatus, Option<i32>, String)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let hook = |s: &Arc<Mutex<Seen>>| {
        let s = s.clone();
        move |label: &str, r: &TaskReport| {
            s.lock().unwrap().push((
                label.to_owned(),
                r.description().to_owned(),
                r.status(),
                r.exit_code(),
                r.stdout_str(),
            ))
        }
    };
    let mut p = local(&["a", "b"]);
    p.all(Command::new("echo hi %LABEL%").on_done(hook(&seen))).unwrap();
    p.push(
        "a",
        Command::new("exit 4").on_error(OnError::Ignore).on_done(hook(&seen)),
    )
    .unwrap();
    p.push("b", Command::new("exit 6").on_done(hook(&seen))).unwrap();
    p.push("a", Sub::new(|_| Ok(())).on_done(hook(&seen))).unwrap();
    p.push(
        "a",
        ScpPut::new("/dev/null/nope", "/tmp/x")
            .on_error(OnError::Ignore)
            .on_done(hook(&seen)),
    )
    .unwrap();
    // A panicking on_done does not crash the run.
    p.push("a", Command::new("true").on_done(|_, _| panic!("on_done panicked")))
        .unwrap();
    let report = p.run();
    assert!(report.label("a").unwrap().success(), "{report}");
    let mut seen = seen.lock().unwrap().clone();
    seen.sort_by(|x, y| x.0.cmp(&y.0));
    let a: Vec<_> = seen
        .iter()
        .filter(|s| s.0 == "a")
        .map(|s| (s.1.as_str(), s.2, s.3, s.4.as_str()))
        .collect();
    assert_eq!(
        a,
        vec![
            ("command `echo hi a`", TaskStatus::Succeeded, Some(0), "hi a\n"),
            ("command `exit 4`", TaskStatus::Ignored, Some(4), ""),
            ("sub", TaskStatus::Succeeded, None, ""),
            ("scp_put /dev/null/nope -> /tmp/x", TaskStatus::Ignored, None, ""),
        ]
    );
    let b: Vec<_> = seen
        .iter()
        .filter(|s| s.0 == "b")
        .map(|s| (s.1.as_str(), s.2, s.3))
        .collect();
    assert_eq!(
        b,
        vec![
            ("command `echo hi b`", TaskStatus::Succeeded, Some(0)),
            ("command `exit 6`", TaskStatus::Failed, Some(6)),
        ]
    );
}

#[test]
fn connect_action_runs_nothing() {
    let mut p = local(&["a", "b"]);
    p.push("a", Connect::new()).unwrap();
    p.push("b", Connect::new().timeout(Duration::from_secs(5))).unwrap();
    p.push("b", Command::new("echo after connect")).unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
    let t = task(&report, "a", 0);
    assert_eq!(t.description(), "connect");
    assert_eq!(t.status(), TaskStatus::Succeeded);
    assert_eq!(t.stdout(), None);
    assert_eq!(t.stderr(), None);
    assert!(t.error().is_none());
    assert_eq!(tasks(&report, "a").len(), 1);
    assert_eq!(task(&report, "b", 1).stdout_str(), "after connect\n");
}
