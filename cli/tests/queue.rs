//! `ssh-parallel queue`: Pegasus' queue, lock and daemon modes against the
//! embedded cluster. Jobs leave traces in a shared directory (every server
//! runs its commands on this machine): one file per job, one line per run.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{signal, wait_at_most, Cluster, Out};

/// A directory for the queue file and the jobs' traces.
struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    fn new() -> Work {
        let w = Work {
            dir: tempfile::tempdir().unwrap(),
        };
        fs::create_dir(w.runs()).unwrap();
        w
    }

    fn queue(&self) -> PathBuf {
        self.dir.path().join("jobs.txt")
    }

    fn queue_str(&self) -> String {
        self.queue().display().to_string()
    }

    fn consumed(&self) -> String {
        fs::read_to_string(self.dir.path().join("jobs.txt.consumed")).unwrap_or_default()
    }

    fn runs(&self) -> PathBuf {
        self.dir.path().join("runs")
    }

    /// A job that appends the id of the host running it to `runs/NAME`.
    fn job(&self, name: &str) -> String {
        format!("cat id.txt >> {}/{name}", self.runs().display())
    }

    /// The lines of `runs/NAME`: one per run of that job.
    fn runs_of(&self, name: &str) -> Vec<String> {
        fs::read_to_string(self.runs().join(name))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// An editor script (for `queue --edit`) that runs `body` with the file
    /// to edit as `$1`.
    fn editor(&self, name: &str, body: &str) -> String {
        let path = self.dir.path().join(name);
        fs::write(&path, format!("#!/bin/sh\nset -e\n{body}\n")).unwrap();
        let mut perm = fs::metadata(&path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        fs::set_permissions(&path, perm).unwrap();
        path.display().to_string()
    }
}

/// Runs `queue --edit` on the queue with `EDITOR` set to `editor`.
fn edit(c: &Cluster, w: &Work, editor: &str) -> Out {
    Out(c
        .cmd()
        .env("EDITOR", editor)
        .args(["queue", "--edit", &w.queue_str()])
        .output()
        .unwrap())
}

/// Waits (at most 20 s) until `cond` holds.
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn jobs_in(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_job_runs_exactly_once_over_three_hosts_and_is_consumed_in_canonical_form() {
    let c = Cluster::start(&["a", "b", "c"]);
    let w = Work::new();
    let jobs: Vec<String> = (0..100).map(|i| w.job(&format!("job-{i}"))).collect();
    fs::write(w.queue(), format!("# a hundred jobs\n{}\n", jobs.join("\n"))).unwrap();
    let child = c.spawn(&["queue", "-w", &c.nodeset(&[0, 1, 2]), &w.queue_str()]);
    let out = wait_at_most(child, Duration::from_secs(120));
    assert_eq!(out.code(), 0, "{out:?}");
    let mut hosts_used = std::collections::BTreeSet::new();
    for i in 0..100 {
        let runs = w.runs_of(&format!("job-{i}"));
        assert_eq!(runs.len(), 1, "job-{i} ran {} times: {out:?}", runs.len());
        hosts_used.insert(runs[0].clone());
    }
    assert!(hosts_used.len() >= 2, "one host took every job: {hosts_used:?}");
    assert_eq!(w.consumed(), format!("{}\n", jobs.join("\n")));
    assert_eq!(fs::read_to_string(w.queue()).unwrap(), "# a hundred jobs\n");
    assert!(
        out.stderr()
            .contains("100 jobs: 100 succeeded, 0 failed, 0 not run; 0 left"),
        "{out:?}"
    );
}

#[test]
fn parametrised_jobs_expand_to_the_cartesian_product() {
    let c = Cluster::start(&["a", "b"]);
    let w = Work::new();
    let runs = w.runs().display().to_string();
    let line = format!(
        "{{ command = \"echo %A%-%B% on %LABEL% >> {runs}/%A%-%B%\", A = [1, 2], B = [\"x\", \"y\", \"z\"] }}\n"
    );
    fs::write(w.queue(), &line).unwrap();
    let out = c.run(&["queue", "-w", &c.nodeset(&[0, 1]), &w.queue_str()]);
    assert_eq!(out.code(), 0, "{out:?}");
    let mut expected_consumed = String::new();
    for a in ["1", "2"] {
        for b in ["x", "y", "z"] {
            let runs_of = w.runs_of(&format!("{a}-{b}"));
            assert_eq!(runs_of.len(), 1, "{a}-{b}: {runs_of:?} {out:?}");
            // %LABEL% was left for the host to fill in.
            assert!(runs_of[0].starts_with(&format!("{a}-{b} on 127.0.0.1:")), "{runs_of:?}");
            expected_consumed.push_str(&format!("echo {a}-{b} on %LABEL% >> {runs}/{a}-{b}\n"));
        }
    }
    assert_eq!(w.consumed(), expected_consumed);
}

#[test]
fn a_job_appended_mid_run_is_taken_and_a_deleted_one_never_runs() {
    let c = Cluster::start(&["a"]);
    let w = Work::new();
    let gate = w.dir.path().join("gate");
    // The first job holds the only host until the test opens the gate.
    let first = format!("while [ ! -e {} ]; do sleep 0.05; done", gate.display());
    fs::write(w.queue(), format!("{first}\n{}\n{}\n", w.job("deleted"), w.job("kept"))).unwrap();
    let child = c.spawn(&["queue", "-w", &c.host(0), &w.queue_str()]);
    wait_until("the first job to start", || w.consumed().lines().count() == 1);
    let delete = w.editor("delete.sh", "sed -i '/deleted/d' \"$1\"");
    assert_eq!(edit(&c, &w, &delete).code(), 0);
    let append = w.editor("append.sh", &format!("echo '{}' >> \"$1\"", w.job("appended")));
    assert_eq!(edit(&c, &w, &append).code(), 0);
    fs::write(&gate, "").unwrap();
    let out = wait_at_most(child, Duration::from_secs(30));
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(w.runs_of("deleted"), Vec::<String>::new(), "{out:?}");
    assert_eq!(w.runs_of("kept"), ["a"]);
    assert_eq!(w.runs_of("appended"), ["a"]);
    assert_eq!(
        w.consumed(),
        format!("{first}\n{}\n{}\n", w.job("kept"), w.job("appended"))
    );
}

#[test]
fn daemon_mode_waits_for_jobs_until_ctrl_c() {
    let c = Cluster::start(&["a", "b"]);
    let w = Work::new();
    fs::write(w.queue(), format!("{}\n", w.job("first"))).unwrap();
    // JSON Lines into a file: the test reads the runner's own result records
    // while it runs, so Ctrl-C comes only once the runner, not just the host,
    // is done with the later job.
    let results = w.dir.path().join("results.jsonl");
    let child = c
        .cmd()
        .args(["queue", "--daemon", "--json", "-w", &c.nodeset(&[0, 1]), &w.queue_str()])
        .stdout(fs::File::create(&results).unwrap())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start ssh-parallel");
    let finished = |name: &str| {
        fs::read_to_string(&results).unwrap_or_default().lines().any(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .is_ok_and(|r| r["type"] == "result" && r["task"].as_str().is_some_and(|t| t.contains(name)))
        })
    };
    wait_until("the first job", || w.runs_of("first").len() == 1 && finished("/first"));
    // Well after the queue went empty, the runner still waits...
    std::thread::sleep(Duration::from_millis(1000));
    let append = w.editor("append.sh", &format!("echo '{}' >> \"$1\"", w.job("later")));
    assert_eq!(edit(&c, &w, &append).code(), 0);
    // ... and takes what comes.
    wait_until("the job appended later", || {
        w.runs_of("later").len() == 1 && finished("/later")
    });
    signal(child.id(), libc::SIGINT);
    let out = wait_at_most(child, Duration::from_secs(20));
    assert_eq!(out.code(), 130, "{out:?}");
    let records = fs::read_to_string(&results).unwrap();
    let summary: serde_json::Value = records
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_default();
    assert_eq!(
        (&summary["jobs"], &summary["succeeded"], &summary["interrupted"]),
        (&2.into(), &2.into(), &true.into()),
        "{records}"
    );
    assert!(
        out.stderr()
            .contains("2 jobs: 2 succeeded, 0 failed, 0 not run; 0 left in the queue file (interrupted)"),
        "{out:?}"
    );
    assert_eq!(jobs_in(&w.queue()), Vec::<String>::new());
}

#[test]
fn the_runner_waits_while_queue_edit_holds_the_lock() {
    let c = Cluster::start(&["a"]);
    let w = Work::new();
    fs::write(w.queue(), "").unwrap();
    let stamps = w.dir.path().display().to_string();
    let child = c.spawn(&["queue", "--daemon", "-w", &c.host(0), &w.queue_str()]);
    // The editor adds a job, then keeps the file (and the lock) for a while
    // before it notes the time it exits: a runner that did not wait for the
    // lock would start the job within its 250 ms look at the file.
    let job = format!("date +%%s%%N > {stamps}/job-started");
    let editor = w.editor(
        "slow.sh",
        &format!("echo '{job}' >> \"$1\"\nsleep 1.5\ndate +%s%N > {stamps}/editor-done"),
    );
    // The runner is up and has read the empty file by now.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(edit(&c, &w, &editor).code(), 0);
    let started = w.dir.path().join("job-started");
    wait_until("the job", || {
        fs::read_to_string(&started).is_ok_and(|s| s.ends_with('\n'))
    });
    signal(child.id(), libc::SIGINT);
    let out = wait_at_most(child, Duration::from_secs(20));
    assert_eq!(out.code(), 130, "{out:?}");
    let read = |name: &str| -> u128 {
        fs::read_to_string(w.dir.path().join(name))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    assert!(
        read("job-started") > read("editor-done"),
        "the job started before the editor let go of the lock: {out:?}"
    );
}

#[test]
fn failed_jobs_are_reported_and_the_host_goes_on() {
    let c = Cluster::start(&["a"]);
    let w = Work::new();
    fs::write(w.queue(), format!("exit 3\n{}\n", w.job("after"))).unwrap();
    let out = c.run(&["queue", "-w", &c.host(0), &w.queue_str()]);
    assert_eq!(out.code(), 1, "{out:?}");
    assert_eq!(w.runs_of("after"), ["a"]);
    assert!(
        out.stderr()
            .contains(&format!("{}: job 1 \"exit 3\": exited with status 3", c.host(0))),
        "{out:?}"
    );
    let out = {
        fs::write(w.queue(), "exit 3\nexit 5\n").unwrap();
        c.run(&["queue", "-S", "-w", &c.host(0), &w.queue_str()])
    };
    assert_eq!(out.code(), 5, "{out:?}");
}

#[test]
fn a_bad_queue_file_is_a_usage_error_naming_its_line() {
    let c = Cluster::start(&["a"]);
    let w = Work::new();
    fs::write(w.queue(), "echo ok\n{ command = 'echo %SEEED%', SEED = [1] }\n").unwrap();
    let out = c.run(&["queue", "-w", &c.host(0), &w.queue_str()]);
    assert_eq!(out.code(), 2, "{out:?}");
    assert!(
        out.stderr()
            .contains(&format!("{}:2: unknown variable %SEEED%", w.queue_str())),
        "{out:?}"
    );
    // Nothing was taken.
    assert_eq!(w.consumed(), "");
}

#[test]
fn json_mode_has_a_result_per_job_and_a_job_summary() {
    let c = Cluster::start(&["a", "b"]);
    let w = Work::new();
    fs::write(w.queue(), "echo one\necho two\nexit 4\n").unwrap();
    let out = c.run(&["queue", "--json", "-w", &c.nodeset(&[0, 1]), &w.queue_str()]);
    assert_eq!(out.code(), 1, "{out:?}");
    let records = out.json_records();
    let mut results: Vec<(String, String)> = records
        .iter()
        .filter(|r| r["type"] == "result")
        .map(|r| {
            (
                r["task"].as_str().unwrap().to_owned(),
                r["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    results.sort();
    assert_eq!(results.len(), 3, "{out:?}");
    assert!(
        results[0].0.contains("echo one") && results[0].1 == "succeeded",
        "{results:?}"
    );
    assert!(
        results[2].0.contains("exit 4") && results[2].1 == "ignored",
        "{results:?}"
    );
    let last = records.last().unwrap();
    assert_eq!(last["type"], "summary");
    assert_eq!(
        (&last["jobs"], &last["succeeded"], &last["failed"], &last["exit_code"]),
        (&3.into(), &2.into(), &1.into(), &1.into()),
        "{out:?}"
    );
}

#[test]
fn ctrl_c_does_not_wait_for_an_editor_holding_the_lock() {
    let c = Cluster::start(&["a"]);
    let w = Work::new();
    fs::write(w.queue(), "").unwrap();
    let child = c.spawn(&["queue", "--daemon", "-w", &c.host(0), &w.queue_str()]);
    let marker = w.dir.path().join("editing");
    // The editor adds a job, so the runner goes for the lock, and keeps the
    // lock for seconds.
    let editor = w.editor(
        "slow.sh",
        &format!(
            "echo '{}' >> \"$1\"\ntouch {}\nsleep 6",
            w.job("never"),
            marker.display()
        ),
    );
    std::thread::sleep(Duration::from_millis(500));
    let mut editing = c
        .cmd()
        .env("EDITOR", &editor)
        .args(["queue", "--edit", &w.queue_str()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the editor", || marker.exists());
    // The runner's look at the changed file is now stuck on the lock.
    std::thread::sleep(Duration::from_millis(600));
    signal(child.id(), libc::SIGINT);
    let out = wait_at_most(child, Duration::from_secs(20));
    // The runner ended while the editor still held the lock.
    assert!(
        editing.try_wait().unwrap().is_none(),
        "the runner waited for the editor: {out:?}"
    );
    assert_eq!(out.code(), 130, "{out:?}");
    assert!(
        out.stderr()
            .contains("0 jobs: 0 succeeded, 0 failed, 0 not run; the queue file is being edited (interrupted)"),
        "{out:?}"
    );
    assert_eq!(wait_at_most(editing, Duration::from_secs(20)).code(), 0);
    // The job the runner was about to take stays in the file.
    assert_eq!(jobs_in(&w.queue()), [w.job("never")]);
    assert_eq!(w.consumed(), "");
    assert_eq!(w.runs_of("never"), Vec::<String>::new());
}

#[test]
fn an_unreachable_host_stops_taking_jobs_and_the_others_do_them() {
    let c = Cluster::start(&["a"]);
    let w = Work::new();
    let jobs: Vec<String> = (0..6).map(|i| w.job(&format!("job-{i}"))).collect();
    fs::write(w.queue(), jobs.join("\n")).unwrap();
    let dead = format!("127.0.0.1:{}", common::closed_port());
    let hosts = format!("{},{dead}", c.host(0));
    let out = c.run(&["queue", "-t", "5", "-w", &hosts, &w.queue_str()]);
    let ran: Vec<usize> = (0..6).filter(|i| w.runs_of(&format!("job-{i}")) == ["a"]).collect();
    // The dead host fails at most the one job it took before it gave up.
    assert!(ran.len() >= 5, "{ran:?} {out:?}");
    if ran.len() == 5 {
        assert_eq!(out.code(), 1, "{out:?}");
        assert!(out.stderr().contains(&format!("{dead}: job ")), "{out:?}");
    } else {
        assert_eq!(out.code(), 0, "{out:?}");
    }
    assert_eq!(jobs_in(&w.queue()), Vec::<String>::new());
}

#[test]
fn queue_edit_creates_the_file_checks_it_and_reports_the_editor_status() {
    let c = Cluster::start(&[]);
    let w = Work::new();
    // A queue that does not exist yet is created for the editor.
    let append = w.editor("append.sh", "echo 'echo fine' >> \"$1\"");
    let out = edit(&c, &w, &append);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(fs::read_to_string(w.queue()).unwrap(), "echo fine\n");
    // A bad line is named at once.
    let bad = w.editor("bad.sh", "echo 'echo %X%' >> \"$1\"");
    let out = edit(&c, &w, &bad);
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(
        out.stderr()
            .contains(&format!("{}:2: unknown variable %X%", w.queue_str())),
        "{out:?}"
    );
    // An editor that fails is reported.
    let failing = w.editor("failing.sh", "exit 3");
    let out = edit(&c, &w, &failing);
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(out.stderr().contains("failed"), "{out:?}");
    // --editor wins over $EDITOR.
    let out = Out(c
        .cmd()
        .env("EDITOR", &failing)
        .args(["queue", "--edit", "--editor", &append, &w.queue_str()])
        .output()
        .unwrap());
    assert_eq!(out.code(), 1, "the bad line is still there: {out:?}");
    assert!(out.stderr().contains(":2: unknown variable %X%"), "{out:?}");
    assert!(fs::read_to_string(w.queue()).unwrap().ends_with("echo fine\n"));
}

#[test]
fn ctrl_c_reports_the_running_job_unfinished_and_leaves_the_rest_queued() {
    let c = Cluster::start(&["a"]);
    let w = Work::new();
    let marker = w.dir.path().join("running");
    let long = format!("touch {}; sleep 30", marker.display());
    fs::write(w.queue(), format!("{long}\n{}\n", w.job("next"))).unwrap();
    let child = c.spawn(&["queue", "-w", &c.host(0), &w.queue_str()]);
    wait_until("the long job", || marker.exists());
    signal(child.id(), libc::SIGINT);
    let out = wait_at_most(child, Duration::from_secs(20));
    assert_eq!(out.code(), 130, "{out:?}");
    assert!(
        out.stderr().contains(&format!(
            "{}: job 1 {long:?}: interrupted before it finished",
            c.host(0)
        )),
        "{out:?}"
    );
    assert!(
        out.stderr()
            .contains("1 jobs: 0 succeeded, 0 failed, 1 not run; 1 left"),
        "{out:?}"
    );
    assert_eq!(jobs_in(&w.queue()), [w.job("next")]);
}

#[test]
fn live_output_is_prefixed_with_the_host_as_on_the_command_line() {
    let c = Cluster::start(&["a"]);
    let w = Work::new();
    fs::write(w.queue(), "echo one\n{ command = 'echo %N% >&2', N = ['two'] }\n").unwrap();
    let out = c.run(&["queue", "-w", &c.host(0), &w.queue_str()]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(out.stdout(), format!("{}: one\n", c.host(0)), "{out:?}");
    assert!(out.stderr().starts_with(&format!("{}: two\n", c.host(0))), "{out:?}");
    // -N given after the subcommand's name.
    fs::write(w.queue(), "echo three\n").unwrap();
    let out = c.run(&["queue", "-N", "-w", &c.host(0), &w.queue_str()]);
    assert_eq!(out.stdout(), "three\n", "{out:?}");
}
