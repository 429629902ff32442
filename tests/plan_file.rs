//! Plan files (`PlanFile`): plans read from TOML and run on the local
//! transport and over SSH to the embedded server; every class of problem
//! reported with its exact line, several at once; the example plans build;
//! and no input, text or bytes, panics the loader.

use std::path::Path;

use proptest::prelude::*;
use ssh_parallel::TaskStatus::*;
use ssh_parallel::{Parallel, PlanFile, PlanFileError, ProblemKind, Report, TaskStatus};
use testbed::{ClientKey, EmbeddedServer};

fn statuses(report: &Report, label: &str) -> Vec<TaskStatus> {
    report
        .label(label)
        .unwrap()
        .tasks()
        .iter()
        .map(|t| t.status())
        .collect()
}

fn stdout(report: &Report, label: &str, i: usize) -> String {
    report.label(label).unwrap().tasks()[i].stdout_str()
}

fn build(text: &str) -> Result<Parallel, PlanFileError> {
    PlanFile::parse("plan.toml", text)?.build()
}

/// The problems of `text` as (line, kind), in the order reported.
fn problems(text: &str) -> Vec<(usize, ProblemKind)> {
    let e = build(text).expect_err("the plan has problems");
    let shown = e.to_string();
    let problems = e.problems();
    assert!(!problems.is_empty(), "{e:?}");
    assert_eq!(shown.lines().count(), problems.len(), "one line a problem: {shown}");
    for (p, line) in problems.iter().zip(shown.lines()) {
        let at = format!("plan.toml:{}:{}: ", p.line().unwrap(), p.column().unwrap());
        assert!(line.starts_with(&at), "{line:?} does not start with {at:?}");
    }
    problems.iter().map(|p| (p.line().unwrap(), p.kind())).collect()
}

/// The single problem of `text`: its line, kind and message.
fn problem(text: &str) -> (usize, ProblemKind, String) {
    let e = build(text).expect_err("the plan has a problem");
    let p = match e.problems() {
        [p] => p.clone(),
        more => panic!("expected one problem, got {more:#?}"),
    };
    (p.line().expect("a line"), p.kind(), p.message().to_owned())
}

const HOSTS: &str = "[hosts]\nweb1 = { local = true }\nweb2 = { local = true }\ndb1 = { local = true }\n";

#[test]
fn the_local_example_runs_as_written() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/plans/local.toml");
    let mut pssh = Parallel::from_plan_file(&path).unwrap();
    assert_eq!(pssh.labels().collect::<Vec<_>>(), ["web1", "web2", "db1"]);
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert_eq!(stdout(&report, "web1", 0), "web1 serves as front\n");
    assert_eq!(stdout(&report, "web2", 0), "web2 serves as front\n");
    assert_eq!(
        statuses(&report, "db1"),
        [Succeeded, Succeeded, Succeeded, Skipped, Skipped, Succeeded, Succeeded]
    );
    assert_eq!(stdout(&report, "db1", 6), "db1 migrated after the web tier\n");
}

#[test]
fn the_jobs_example_runs_as_written() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/plans/jobs.toml");
    let mut pssh = Parallel::from_plan_file(&path).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    let jobs = report.jobs();
    assert_eq!(jobs.len(), 5);
    for (seed, job) in (1..=4).zip(&jobs) {
        let label = job.label().unwrap();
        let device = format!("cuda:{}", &label[3..].parse::<u32>().unwrap() - 1);
        assert_eq!(
            job.report().stdout_str(),
            format!("train --seed {seed} on {label} using {device}\n")
        );
    }
    let last = &jobs[4];
    assert_eq!(
        last.report().stdout_str(),
        format!("evaluate on {} with fast\n", last.label().unwrap())
    );
    assert_eq!(stdout(&report, "report", 1), "all training jobs done\n");
}

#[test]
fn every_key_of_the_deploy_example_is_understood() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/plans/deploy.toml");
    let pssh = PlanFile::load(&path).unwrap().build().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        pssh.labels().collect::<Vec<_>>(),
        ["web1", "web2", "web3", "db1", "build"]
    );
    let web2 = pssh.host("web2").unwrap();
    assert_eq!((web2.user_name(), web2.port_number()), (Some("admin"), Some(2222)));
    assert_eq!(pssh.host("db1").unwrap().user_name(), Some("postgres"));
    // build 1; web 3 x 12 (join, put, check, goto, here, restart, stop, here,
    // switch, get... see the file); db1 2.
    assert!(pssh.queued_tasks() > 30, "{}", pssh.queued_tasks());
}

#[test]
fn commands_transfers_options_and_jumps_run_locally() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    std::fs::write(dir.path().join("src.txt"), "payload\n").unwrap();
    let plan = format!(
        r#"
[defaults]
on_error = "abort"
vars = {{ DIR = "{d}" }}

[hosts]
a = {{ local = true, vars = {{ NAME = "alpha" }} }}
b = {{ local = true, vars = {{ NAME = "beta" }} }}

[[step]]
put = "%DIR%/src.txt"
to = "%DIR%/copy-%LABEL%.txt"

[[step]]
run = ["printf", "%s|%s", "%NAME%", "$GREETING"]
env = {{ GREETING = "hi %LABEL%" }}

[[step]]
run = "cat; echo; printf '%s' \"$GREETING\""
stdin = "from stdin"
env = {{ GREETING = "hello" }}

[[step]]
on = "a"
run = "exit 3"
ok_exit_codes = [0, 3]

[[step]]
on = "b"
run = "exit 1"
or_goto = "fixed"

[[step]]
on = "b"
run = "echo never"

[[step]]
on = "b"
here = "fixed"

[[step]]
run = "false"
on_error = "ignore"

[[step]]
on = "a"
join = "b"

[[step]]
on = "a"
run = "cat %DIR%/copy-b.txt"
timeout = "10s"
"#
    );
    let mut pssh = build(&plan).unwrap_or_else(|e| panic!("{e}"));
    let report = pssh.run();
    assert!(report.success(), "{report}");
    for l in ["a", "b"] {
        let copy = dir.path().join(format!("copy-{l}.txt"));
        assert_eq!(std::fs::read_to_string(copy).unwrap(), "payload\n");
    }
    // argv words are quoted: `$GREETING` stays a literal word.
    assert_eq!(stdout(&report, "a", 1), "alpha|$GREETING");
    assert_eq!(stdout(&report, "b", 2), "from stdin\nhello");
    assert_eq!(
        statuses(&report, "a"),
        [Succeeded, Succeeded, Succeeded, Succeeded, Ignored, Succeeded, Succeeded]
    );
    assert_eq!(stdout(&report, "a", 6), "payload\n");
    assert_eq!(
        statuses(&report, "b"),
        [Succeeded, Succeeded, Succeeded, Jumped, Skipped, Succeeded, Ignored]
    );
}

#[test]
fn a_plan_runs_over_ssh_on_the_embedded_server() {
    let key = ClientKey::ed25519_in_process().expect("client key");
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let servers: Vec<EmbeddedServer> = dirs
        .iter()
        .map(|d| {
            EmbeddedServer::builder()
                .authorized_key("alice", key.public_line())
                .working_dir(d.path())
                .start()
                .expect("start the embedded server")
        })
        .collect();
    let local = tempfile::tempdir().unwrap();
    std::fs::write(local.path().join("app.conf"), "threads = 4\n").unwrap();
    let plan = format!(
        r#"
[defaults]
ssh_config = "none"
user = "alice"
key = "{key}"
host_key_check = "off"
connect_timeout = "5s"
vars = {{ LOCAL = "{local}" }}

[hosts]
n1 = "127.0.0.1:{p0}"
n2 = {{ host = "127.0.0.1", port = {p1}, vars = {{ ROLE = "second" }} }}

[[step]]
put = "%LOCAL%/app.conf"
to = "app-%LABEL%.conf"

[[step]]
run = "echo %LABEL% on port %PORT%; cat app-%LABEL%.conf"

[[step]]
on = "n2"
join = "n1"

[[step]]
on = "n2"
run = "echo %ROLE%"

[[step]]
on = "n1"
get = "app-n1.conf"
to = "%LOCAL%/back-%LABEL%.conf"
"#,
        key = key.private_path().display(),
        local = local.path().display(),
        p0 = servers[0].port(),
        p1 = servers[1].port(),
    );
    let mut pssh = build(&plan).unwrap_or_else(|e| panic!("{e}"));
    let report = pssh.run();
    assert!(report.success(), "{report}");
    for (i, l) in ["n1", "n2"].iter().enumerate() {
        let conf = dirs[i].path().join(format!("app-{l}.conf"));
        assert_eq!(std::fs::read_to_string(conf).unwrap(), "threads = 4\n");
        assert_eq!(
            stdout(&report, l, 1),
            format!("{l} on port {}\nthreads = 4\n", servers[i].port())
        );
    }
    assert_eq!(stdout(&report, "n2", 3), "second\n");
    let back = local.path().join("back-n1.conf");
    assert_eq!(std::fs::read_to_string(back).unwrap(), "threads = 4\n");
}

#[test]
fn syntax_and_schema_errors_name_their_line() {
    let (line, kind, _) = problem(&format!("{HOSTS}[[step]]\nrun = \"echo\n"));
    assert_eq!((line, kind), (6, ProblemKind::Syntax));

    let (line, kind, msg) = problem(&format!("{HOSTS}[[step]]\nrun = \"true\"\ntimeot = \"5s\"\n"));
    assert_eq!((line, kind), (7, ProblemKind::Schema), "{msg}");
    assert!(msg.contains("timeot"), "{msg}");

    let (line, kind, msg) = problem(&format!("{HOSTS}[[step]]\nrun = \"true\"\ntimeout = \"5 parsecs\"\n"));
    assert_eq!((line, kind), (7, ProblemKind::Schema), "{msg}");
    assert!(msg.contains("parsecs"), "{msg}");

    let (line, kind, msg) = problem(&format!("{HOSTS}[[step]]\nrun = \"true\"\non_error = \"sometimes\"\n"));
    assert_eq!((line, kind), (7, ProblemKind::Schema), "{msg}");
    assert!(msg.contains("\"sometimes\""), "{msg}");

    let (line, kind, msg) = problem(&format!("{HOSTS}[[step]]\nrun = \"true\"\nput = \"x\"\nto = \"y\"\n"));
    assert_eq!((line, kind), (7, ProblemKind::Schema), "{msg}");
    assert!(msg.contains("`run` and `put`"), "{msg}");

    let (line, kind, msg) = problem(&format!("{HOSTS}[[step]]\nput = \"x\"\nto = \"y\"\npty = true\n"));
    assert_eq!((line, kind), (8, ProblemKind::Schema), "{msg}");
    assert!(msg.contains("`pty`") && msg.contains("`put`"), "{msg}");

    let (line, kind, msg) = problem(&format!("{HOSTS}\n[[step]]\non = \"web1\"\n"));
    assert_eq!((line, kind), (6, ProblemKind::Schema), "{msg}");
    assert!(msg.contains("needs one of"), "{msg}");

    let (line, kind, msg) = problem("[defaults]\nworkers = \"four\"\n[hosts]\na = { local = true }\n");
    assert_eq!((line, kind), (2, ProblemKind::Schema), "{msg}");
}

#[test]
fn host_and_settings_errors_name_their_line() {
    let (line, kind, msg) = problem("[hosts]\nok = { local = true }\nbad = \"web1:0\"\n");
    assert_eq!((line, kind), (3, ProblemKind::Host), "{msg}");
    assert!(msg.contains("\"bad\"") && msg.contains("web1:0"), "{msg}");

    let (line, kind, msg) = problem("[hosts]\n\"a,b\" = { local = true }\n");
    assert_eq!((line, kind), (2, ProblemKind::Host), "{msg}");
    assert!(msg.contains("\"a,b\""), "{msg}");

    let (line, kind, msg) = problem("\n\n[defaults]\nworkers = 4\nconnections = 2\n[hosts]\na = { local = true }\n");
    assert_eq!(
        kind,
        ProblemKind::Library(ssh_parallel::ErrorKind::InvalidConfig),
        "{msg}"
    );
    assert!(msg.contains("connections (2)"), "{msg}");
    assert!(
        (3..=5).contains(&line),
        "the [defaults] table is at lines 3-5, not {line}"
    );

    let (line, kind, _) = problem("[defaults]\nworkers = 2\n");
    assert_eq!((line, kind), (1, ProblemKind::Schema));
}

#[test]
fn selector_tag_and_variable_errors_name_their_line() {
    let (line, kind, msg) = problem(&format!("{HOSTS}[[step]]\non = \"web1,,db1\"\nrun = \"true\"\n"));
    assert_eq!((line, kind), (6, ProblemKind::InvalidSelector), "{msg}");

    let (line, kind, msg) = problem(&format!("{HOSTS}[[step]]\non = \"web1, web9\"\nrun = \"true\"\n"));
    assert_eq!((line, kind), (6, ProblemKind::UnknownLabel), "{msg}");
    assert!(msg.contains("\"web9\""), "{msg}");

    let (line, kind, msg) = problem(&format!("{HOSTS}[[step]]\non = \"db1\"\njoin = \"cache*\"\n"));
    assert_eq!((line, kind), (7, ProblemKind::NoMatch), "{msg}");
    assert!(msg.contains("\"cache*\""), "{msg}");

    let (line, kind, msg) = problem(&format!(
        "{HOSTS}[[step]]\non = \"web*\"\ngoto = \"later\"\n[[step]]\non = \"web1\"\nhere = \"later\"\n"
    ));
    assert_eq!((line, kind), (7, ProblemKind::MissingTag), "{msg}");
    assert!(
        msg.contains("\"later\"") && msg.contains("web2") && !msg.contains("web1"),
        "{msg}"
    );

    let (line, kind, msg) = problem(&format!(
        "{HOSTS}[[step]]\non = \"db1\"\nhere = \"fix\"\n[[step]]\non = \"db1\"\nrun = \"check\"\n\nor_goto = \"fix\"\n"
    ));
    assert_eq!(
        (line, kind),
        (12, ProblemKind::MissingTag),
        "a here before the jump does not count: {msg}"
    );

    let (line, kind, msg) = problem(&format!(
        "{HOSTS}[[step]]\non = \"web*\"\nrun = \"\"\"\necho start\necho %LABEL% %NOPE%\n\"\"\"\n"
    ));
    assert_eq!((line, kind), (9, ProblemKind::UnknownVariable), "{msg}");
    assert!(msg.contains("%NOPE%") && msg.contains("web1, web2"), "{msg}");

    // A host's own variable is known on that host only.
    let text = "[hosts]\na = { local = true, vars = { X = \"1\" } }\nb = { local = true }\n[[step]]\nput = \"f\"\nto = \"/tmp/%X%\"\n";
    let (line, kind, msg) = problem(text);
    assert_eq!((line, kind), (6, ProblemKind::UnknownVariable), "{msg}");
    assert!(msg.contains("on b "), "{msg}");
}

#[test]
fn a_queue_drained_by_three_labels_runs_each_job_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let mut jobs: Vec<String> = (1..=12)
        .map(|n| format!("\"echo {n} >> {d}/taken-{n}; echo {n} on %LABEL%\""))
        .collect();
    jobs.push("\"printf 'last on %%s' %LABEL%\"".into());
    let plan = format!(
        r#"
[defaults]
workers = 3

[hosts]
gpu1 = {{ local = true }}
gpu2 = {{ local = true }}
gpu3 = {{ local = true }}
db1 = {{ local = true }}

[[step]]
on = "gpu*"
drain = "train"

[[step]]
on = "db1"
join = "gpu*"

[[step]]
on = "db1"
run = "cat {d}/taken-* | wc -l"

[queue.train]
jobs = [{}]

[[queue.train.job]]
run = "echo seed=$SEED on %LABEL%; exit 3"
env = {{ SEED = "%LABEL%-42" }}
ok_exit_codes = [3]
timeout = "30s"
on_error = "abort"
"#,
        jobs.join(", ")
    );
    let mut pssh = build(&plan).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report:#?}");
    let entries = report.jobs();
    assert_eq!(entries.len(), 14, "{entries:#?}");
    let mut numbers = Vec::new();
    for e in &entries {
        let label = e.label().expect("every job ran");
        assert!(label.starts_with("gpu"), "{label}");
        assert_eq!(e.report().status(), Succeeded);
        let out = e.report().stdout_str();
        if let Some(rest) = out.strip_prefix("seed=") {
            assert_eq!(
                rest,
                format!("{label}-42 on {label}\n"),
                "the job's env expands per label"
            );
        } else if let Some(rest) = out.strip_prefix("last on ") {
            assert_eq!(rest, label, "`%%` is a literal % in a job");
        } else {
            let (n, on) = out.trim_end().split_once(" on ").unwrap();
            assert_eq!(on, label, "{out}");
            numbers.push(n.parse::<u32>().unwrap());
        }
    }
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=12).collect::<Vec<_>>(), "each job once");
    for n in 1..=12 {
        let taken = std::fs::read_to_string(dir.path().join(format!("taken-{n}"))).unwrap();
        assert_eq!(taken, format!("{n}\n"), "job {n} ran exactly once");
    }
    // The join waited for every job the drainers took.
    assert_eq!(stdout(&report, "db1", 1).trim(), "12");
    // Jobs run in push order, table jobs after the `jobs` list.
    let ids: Vec<u64> = entries.iter().map(|e| e.id().get()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    assert!(entries[13].report().stdout_str().starts_with("seed="));
}

#[test]
fn an_empty_queue_is_allowed_and_its_drainers_finish_at_once() {
    let mut pssh = build(&format!(
        "{HOSTS}[[step]]\non = \"web*\"\ndrain = \"idle\"\n\n[[step]]\nrun = \"echo after\"\n\n[queue.idle]\n"
    ))
    .unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report:#?}");
    assert!(report.jobs().is_empty());
    assert_eq!(stdout(&report, "db1", 0), "after\n");
    assert_eq!(stdout(&report, "web2", 1), "after\n");
}

#[test]
fn queue_errors_name_their_line() {
    let drain = "[[step]]\non = \"web*\"\ndrain = \"q\"\n\n";

    let (line, kind, msg) = problem(&format!("{HOSTS}[[step]]\ndrain = \"jobs\"\n"));
    assert_eq!((line, kind), (6, ProblemKind::UnknownQueue), "{msg}");
    assert!(msg.contains("\"jobs\"") && msg.contains("defined: none"), "{msg}");

    // A misspelt drain: the name it misses is listed, and the queue it meant
    // is undrained; both are reported, in file order.
    let text = format!("{HOSTS}[[step]]\ndrain = \"trian\"\n\n[queue.train]\njobs = [\"true\"]\n");
    assert_eq!(
        problems(&text),
        [(6, ProblemKind::UnknownQueue), (8, ProblemKind::UndrainedQueue)]
    );
    let e = build(&text).unwrap_err().to_string();
    assert!(e.contains("(defined: train)"), "{e}");
    assert!(e.contains("queue \"train\" is drained by no step: its 1 job(s)"), "{e}");

    let (line, kind, msg) = problem(&format!(
        "{HOSTS}{drain}[queue.q]\njobs = [\"true\"]\n\n[[queue.q.job]]\nrun = \"true\"\nor_goto = \"fix\"\n"
    ));
    assert_eq!(
        (line, kind),
        (14, ProblemKind::Library(ssh_parallel::ErrorKind::InvalidConfig)),
        "{msg}"
    );
    assert!(msg.contains("queue \"q\"") && msg.contains("or_goto"), "{msg}");
    assert!(
        !msg.contains('#'),
        "the library's queue number means nothing in the file: {msg}"
    );

    let (line, kind, msg) = problem(&format!(
        "{HOSTS}{drain}[queue.q]\n[[queue.q.job]]\non = \"web1\"\nrun = \"true\"\n"
    ));
    assert_eq!((line, kind), (11, ProblemKind::Schema), "{msg}");
    assert!(msg.contains("`on`"), "{msg}");

    let (line, kind, msg) = problem(&format!("{HOSTS}{drain}[queue.q]\n[[queue.q.job]]\njoin = \"web1\"\n"));
    assert_eq!((line, kind), (11, ProblemKind::Schema), "{msg}");
    assert!(msg.contains("`join` is not a job's action"), "{msg}");

    let (line, kind, msg) = problem(&format!(
        "{HOSTS}{drain}[queue.q]\njobs = [\"true\"]\nfile = \"jobs.txt\"\n"
    ));
    assert_eq!((line, kind), (11, ProblemKind::Schema), "{msg}");
    assert!(msg.contains("file"), "{msg}");

    let (line, kind, msg) = problem(&format!("{HOSTS}[[step]]\ndrain = \"q\"\ntimeout = 5\n\n[queue.q]\n"));
    assert_eq!((line, kind), (7, ProblemKind::Schema), "{msg}");
    assert!(msg.contains("`timeout`") && msg.contains("`drain`"), "{msg}");

    // A job runs on any label draining its queue: its variables must be
    // defined on each of them, and only on them (db1 lacks ROLE too).
    let hosts = "[hosts]\nweb1 = { local = true, vars = { ROLE = \"front\" } }\nweb2 = { local = true }\ndb1 = { local = true }\n";
    let (line, kind, msg) = problem(&format!(
        "{hosts}{drain}[queue.q]\njobs = [\n  \"echo %LABEL%\",\n  \"echo %ROLE%\",\n]\n"
    ));
    assert_eq!((line, kind), (12, ProblemKind::UnknownVariable), "{msg}");
    assert!(msg.contains("%ROLE% on web2 "), "{msg}");
    let (line, kind, msg) = problem(&format!(
        "{hosts}{drain}[queue.q]\n[[queue.q.job]]\nput = \"a\"\nto = \"/tmp/%ROLE%\"\n"
    ));
    assert_eq!((line, kind), (12, ProblemKind::UnknownVariable), "{msg}");
    assert!(msg.contains("on web2 "), "{msg}");
    build(&format!(
        "{hosts}[[step]]\non = \"web1\"\ndrain = \"q\"\n\n[queue.q]\njobs = [\"echo %ROLE%\"]\n"
    ))
    .unwrap();
}

#[test]
fn several_problems_are_reported_at_once_in_file_order() {
    let text = format!(
        "{HOSTS}\
[[step]]
on = \"web9\"
run = \"true\"
[[step]]
on = \"db*\"
run = \"echo %MISSING%\"
[[step]]
on = \"x*\"
goto = \"nowhere\"
[[step]]
on = \"web1\"
goto = \"nowhere\"
"
    );
    assert_eq!(
        problems(&text),
        [
            (6, ProblemKind::UnknownLabel),
            (10, ProblemKind::UnknownVariable),
            (12, ProblemKind::NoMatch),
            (16, ProblemKind::MissingTag),
        ]
    );
}

#[test]
fn a_missing_file_is_a_read_error_naming_it() {
    let e = PlanFile::load("/nonexistent/plan.toml").unwrap_err();
    assert!(matches!(e, PlanFileError::Read { .. }), "{e:?}");
    assert!(e.to_string().contains("/nonexistent/plan.toml"), "{e}");
    let e = PlanFile::parse_bytes("bin.toml", b"[hosts]\na = \"\xff\"\n").unwrap_err();
    assert_eq!(e.problems()[0].kind(), ProblemKind::Syntax);
    assert_eq!(e.problems()[0].line(), Some(2));
}

/// Lines a plan file may hold: real keys with good and bad values, so the
/// generated files reach the schema and the checks, not only the parser.
fn plan_line() -> impl Strategy<Value = String> {
    let fixed = prop::sample::select(vec![
        "[defaults]",
        "ssh_config = \"none\"",
        "workers = 2",
        "connections = 1",
        "on_error = { retry = 2, delay = \"1s\", then = \"ignore\" }",
        "[hosts]",
        "a = { local = true }",
        "b = { local = true, vars = { V = \"1\" } }",
        "c = \"user@h:22\"",
        "d = \"h:0\"",
        "[[step]]",
        "on = \"a\"",
        "on = \"*\"",
        "on = \"z*\"",
        "run = \"echo %LABEL% %V%\"",
        "run = []",
        "put = [\"x\", \"y\"]",
        "to = \"/tmp/%LABEL%\"",
        "with = \"rsync\"",
        "args = [\"-v\"]",
        "goto = \"t\"",
        "here = \"t\"",
        "or_goto = \"t\"",
        "join = \"a,b\"",
        "stop = true",
        "timeout = \"1m\"",
        "timeout = -3",
        "drain = 1",
        "drain = \"q\"",
        "drain = \"r\"",
        "[queue.q]",
        "[queue.r]",
        "jobs = [\"echo %V%\", \"true\"]",
        "[[queue.q.job]]",
        "[[queue.r.job]]",
    ])
    .prop_map(str::to_owned);
    prop_oneof![4 => fixed, 1 => "[a-z_=\\[\\]\"{}, 0-9%.*-]{0,30}"]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any text either builds or is refused with problems whose lines exist.
    #[test]
    fn generated_plans_build_or_name_lines_that_exist(lines in prop::collection::vec(plan_line(), 0..24)) {
        let text = lines.join("\n");
        let count = text.split('\n').count();
        match PlanFile::parse("p.toml", &text).and_then(|p| p.build()) {
            Ok(_) => {}
            Err(e) => {
                prop_assert!(!e.problems().is_empty(), "{e:?}");
                for p in e.problems() {
                    if let Some(l) = p.line() {
                        prop_assert!(l >= 1 && l <= count + 1, "line {l} of {count}: {p}\n{text}");
                    }
                }
            }
        }
    }

    /// Arbitrary bytes never panic the loader.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(p) = PlanFile::parse_bytes("p.toml", &bytes) {
            let _ = p.build();
        }
    }

    /// Arbitrary text never panics the loader.
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
        if let Ok(p) = PlanFile::parse("p.toml", &text) {
            let _ = p.build();
        }
    }
}

/// The README's "Plan files" example from Rust, as written there.
#[test]
fn the_readme_example_from_rust() -> Result<(), PlanFileError> {
    let plan = PlanFile::parse(
        "inline.toml",
        r#"
    [hosts]
    a = { local = true }

    [[step]]
    run = "echo hello from %LABEL%"
"#,
    )?;
    let mut pssh = plan.build()?;
    assert_eq!(pssh.run().label("a").unwrap().tasks()[0].stdout_str(), "hello from a\n");

    let err = PlanFile::parse(
        "bad.toml",
        "[hosts]\na = { local = true }\n[[step]]\non = \"b\"\nrun = \"true\"\n",
    )?
    .build()
    .unwrap_err();
    let p = &err.problems()[0];
    assert_eq!((p.line(), p.kind()), (Some(4), ProblemKind::UnknownLabel));
    assert_eq!(
        err.to_string(),
        "bad.toml:4:6: unknown label \"b\": no entry of [hosts] defines it"
    );
    Ok(())
}
