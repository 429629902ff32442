//! `ssh-parallel plan FILE`: a plan file run over SSH with the live output
//! and exit statuses of the command line, `--json` parsed back, `--check`
//! passing and failing with line numbers (and connecting nowhere), `--dot`
//! rendered by Graphviz, and the host options refused.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{Cluster, Out, BIN, USER};

/// The binary with a private HOME and no agent: everything else comes from
/// the plan file.
fn plan_cmd(c: &Cluster, args: &[&str]) -> Out {
    Out(Command::new(BIN)
        .env("HOME", c.home.path())
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("RUST_LOG")
        .arg("plan")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ssh-parallel"))
}

/// A plan over the cluster's two servers, labelled n1 and n2, then `steps`.
fn write_plan(c: &Cluster, steps: &str) -> PathBuf {
    let text = format!(
        "[defaults]\nssh_config = \"none\"\nuser = \"{USER}\"\nkey = \"{}\"\nhost_key_check = \"off\"\n\
         connect_timeout = \"5s\"\n\n[hosts]\nn1 = \"{}\"\nn2 = \"{}\"\n{steps}",
        c.key.private_path().display(),
        c.host(0),
        c.host(1),
    );
    let path = c.home.path().join("plan.toml");
    std::fs::write(&path, text).unwrap();
    path
}

const STEPS: &str = r#"
[[step]]
run = "cat id.txt"

[[step]]
on = "n2"
join = "n1"

[[step]]
on = "n2"
run = "echo %LABEL% after n1; exit 3"
"#;

/// The file and the line of a `FILE:LINE:COLUMN: message` line.
fn file_and_line(problem: &str) -> (&str, &str) {
    let at = problem.split(": ").next().unwrap_or_default();
    let mut parts = at.rsplitn(3, ':');
    let _column = parts.next();
    let line = parts.next().unwrap_or_default();
    (parts.next().unwrap_or_default(), line)
}

/// Steps with three problems: at lines 12, 15 and 18 of the plan.
const BAD_STEPS: &str = r#"[[step]]
on = "n3"
run = "true"
[[step]]
run = "echo %NOPE%"
[[step]]
on = "n1"
or_goto = "fix"
run = "false"
"#;

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_plan_runs_over_ssh_with_the_live_output_and_exit_status() {
    let c = Cluster::start(&["a", "b"]);
    let plan = write_plan(&c, STEPS);
    let out = plan_cmd(&c, &[path_str(&plan)]);
    assert_eq!(out.code(), 1, "{out:?}");
    assert_eq!(out.sorted_stdout(), ["n1: a", "n2: b", "n2: n2 after n1"], "{out:?}");
    assert_eq!(out.stderr(), "n2: exited with status 3\n");
    let out = plan_cmd(&c, &["-S", path_str(&plan)]);
    assert_eq!(out.code(), 3, "{out:?}");
}

#[test]
fn json_records_parse_back() {
    let c = Cluster::start(&["a", "b"]);
    let plan = write_plan(&c, STEPS);
    let out = plan_cmd(&c, &[path_str(&plan), "--json"]);
    assert_eq!(out.code(), 1, "{out:?}");
    let records = out.json_records();
    let lines = out.json_pairs("line", ["host", "line"]);
    assert!(lines.contains(&("n1".into(), "a".into())), "{lines:?}");
    assert!(lines.contains(&("n2".into(), "n2 after n1".into())), "{lines:?}");
    let results: Vec<(&str, &str, &str)> = records
        .iter()
        .filter(|r| r["type"] == "result")
        .map(|r| {
            (
                r["host"].as_str().unwrap(),
                r["task"].as_str().unwrap(),
                r["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(results.len(), 4, "{results:?}");
    assert!(results.contains(&("n1", "command `cat id.txt`", "succeeded")));
    assert!(results.contains(&("n2", "join n1", "succeeded")));
    assert!(results.contains(&("n2", "command `echo n2 after n1; exit 3`", "failed")));
    let summary = records.last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(
        (summary["hosts"].as_u64(), summary["failed"].as_u64()),
        (Some(2), Some(1))
    );
}

#[test]
fn check_passes_or_names_every_problem_by_line_and_connects_nowhere() {
    let c = Cluster::start(&["a", "b"]);
    let good = write_plan(&c, STEPS);
    let out = plan_cmd(&c, &[path_str(&good), "--check"]);
    assert_eq!((out.code(), out.stdout().as_str()), (0, ""), "{out:?}");
    assert!(out.stderr().contains("ok: 2 labels, 4 tasks"), "{out:?}");

    // Lines 1-10 are the header write_plan adds: the steps start at line 11.
    let bad = write_plan(&c, &format!("{BAD_STEPS}[[step]]\ntimeot = \"1s\"\n"));
    let out = plan_cmd(&c, &[path_str(&bad), "--check"]);
    assert_eq!((out.code(), out.stdout().as_str()), (2, ""), "{out:?}");
    // A schema error stops the reading: the first problem alone.
    assert_eq!(out.stderr().lines().count(), 1, "{out:?}");
    assert!(out.stderr().starts_with(&format!("{}:21:", bad.display())), "{out:?}");

    let bad = write_plan(&c, BAD_STEPS);
    let out = plan_cmd(&c, &[path_str(&bad), "--check"]);
    assert_eq!(out.code(), 2, "{out:?}");
    let stderr = out.stderr();
    let at: Vec<(&str, &str)> = stderr.lines().map(file_and_line).collect();
    let file = bad.display().to_string();
    assert_eq!(
        at,
        [(file.as_str(), "12"), (file.as_str(), "15"), (file.as_str(), "18")],
        "{stderr}"
    );
    assert!(stderr.contains("unknown label \"n3\""), "{stderr}");
    assert!(stderr.contains("%NOPE% on n1, n2"), "{stderr}");
    assert!(stderr.contains("or_goto \"fix\""), "{stderr}");
    // Neither --check nor a refused plan connected anywhere.
    for s in &c.servers {
        assert_eq!(s.stats().connections, 0);
    }
    // A plan that is refused is not run either.
    let out = plan_cmd(&c, &[path_str(&bad)]);
    assert_eq!((out.code(), out.stdout().as_str()), (2, ""), "{out:?}");
    for s in &c.servers {
        assert_eq!(s.stats().connections, 0);
    }
}

/// A queue drained by both labels: steps from line 11.
const QUEUE_STEPS: &str = r#"[[step]]
drain = "work"
[queue.work]
jobs = ["echo job 1 on %LABEL%", "echo job 2 on %LABEL%", "echo job 3 on %LABEL%", "echo job 4 on %LABEL%"]
[[queue.work.job]]
run = "echo job 5 on %LABEL% from $WHO"
env = { WHO = "a table" }
"#;

/// Four problems with job queues: at lines 14, 18, 19 and 20.
const BAD_QUEUE_STEPS: &str = r#"[[step]]
drain = "work"
[[step]]
drain = "wrok"
[queue.work]
jobs = ["true"]
[[queue.work.job]]
run = "echo %NOPE%"
or_goto = "fix"
[queue.spare]
jobs = ["true"]
"#;

#[test]
fn a_plan_with_a_job_queue_runs_each_job_once_and_checks_it() {
    let c = Cluster::start(&["a", "b"]);
    let plan = write_plan(&c, QUEUE_STEPS);
    let out = plan_cmd(&c, &[path_str(&plan)]);
    assert_eq!(out.code(), 0, "{out:?}");
    let mut jobs = Vec::new();
    for line in out.sorted_stdout() {
        let (label, text) = line.split_once(": ").unwrap();
        let rest = text.strip_prefix("job ").unwrap_or_else(|| panic!("{line:?}"));
        let (n, on) = rest.split_once(" on ").unwrap();
        assert!(on == label || on == format!("{label} from a table"), "{line:?}");
        jobs.push(n.parse::<u32>().unwrap());
    }
    jobs.sort_unstable();
    assert_eq!(jobs, [1, 2, 3, 4, 5], "each job once: {out:?}");

    let before: Vec<u64> = c.servers.iter().map(|s| s.stats().connections).collect();
    let bad = write_plan(&c, BAD_QUEUE_STEPS);
    let out = plan_cmd(&c, &[path_str(&bad), "--check"]);
    assert_eq!((out.code(), out.stdout().as_str()), (2, ""), "{out:?}");
    let stderr = out.stderr();
    let file = bad.display().to_string();
    let at: Vec<(&str, &str)> = stderr.lines().map(file_and_line).collect();
    let expected: Vec<(&str, &str)> = ["14", "18", "19", "20"].iter().map(|l| (file.as_str(), *l)).collect();
    assert_eq!(at, expected, "{stderr}");
    assert!(stderr.contains("unknown queue \"wrok\""), "{stderr}");
    assert!(stderr.contains("%NOPE% on n1, n2"), "{stderr}");
    assert!(stderr.contains("or_goto does not apply to a job"), "{stderr}");
    assert!(stderr.contains("queue \"spare\" is drained by no step"), "{stderr}");
    let after: Vec<u64> = c.servers.iter().map(|s| s.stats().connections).collect();
    assert_eq!(before, after, "--check connects nowhere");
}

#[test]
fn dot_prints_a_graph_that_graphviz_renders() {
    if !testbed::prereq::program("dot", "graphviz") {
        return;
    }
    let c = Cluster::start(&["a", "b"]);
    let plan = write_plan(&c, STEPS);
    let out = plan_cmd(&c, &[path_str(&plan), "--dot"]);
    assert_eq!(out.code(), 0, "{out:?}");
    let graph = out.stdout();
    assert!(graph.starts_with("digraph plan {"), "{graph}");
    let mut dot = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dot");
    dot.stdin.take().unwrap().write_all(graph.as_bytes()).unwrap();
    let svg = dot.wait_with_output().unwrap();
    assert!(svg.status.success() && svg.stderr.is_empty(), "{svg:?}");
    let svg = String::from_utf8(svg.stdout).unwrap();
    for text in [
        "<title>cluster_0</title>",
        ">n1</text>",
        ">n2</text>",
        ">n1 done</text>",
    ] {
        assert!(svg.contains(text), "{text} not in the SVG");
    }
    for s in &c.servers {
        assert_eq!(s.stats().connections, 0, "--dot connects nowhere");
    }
}

#[test]
fn host_options_and_a_missing_file_are_usage_errors() {
    let c = Cluster::start(&["a", "b"]);
    let plan = write_plan(&c, STEPS);
    let out = plan_cmd(&c, &["-w", "web1", "-l", "root", path_str(&plan)]);
    assert_eq!(out.code(), 2, "{out:?}");
    assert_eq!(
        out.stderr(),
        "ssh-parallel: error: plan: -w -l do not apply: hosts, logins and timeouts come from the plan file\n"
    );
    let out = plan_cmd(&c, &["/nonexistent/plan.toml"]);
    assert_eq!(out.code(), 2, "{out:?}");
    assert!(out.stderr().contains("/nonexistent/plan.toml"), "{out:?}");
}
