//! The output modes: live lines, `-b`, `-L`, `--json`, the progress display
//! and colours.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use common::{closed_port, in_pty, wait_at_most, Cluster};

#[test]
fn live_lines_are_prefixed_stderr_goes_to_stderr_and_exclusions_apply() {
    let c = Cluster::start(&["a", "b", "c"]);
    let out = c.run(&[
        "-w",
        &c.nodeset(&[0, 1, 2]),
        "-x",
        &c.host(1),
        "--",
        "cat id.txt; echo warn >&2",
    ]);
    assert_eq!(out.code(), 0, "{out:?}");
    let want = vec![format!("{}: a", c.host(0)), format!("{}: c", c.host(2))];
    assert_eq!(out.sorted_stdout(), want, "{out:?}");
    let stderr = out.stderr();
    let mut err: Vec<&str> = stderr.lines().collect();
    err.sort();
    assert_eq!(
        err,
        [format!("{}: warn", c.host(0)), format!("{}: warn", c.host(2))],
        "{out:?}"
    );
    assert!(!out.stdout().contains('\x1b'), "no colour into a pipe: {out:?}");

    let out = c.run(&["-N", "-w", &c.nodeset(&[0, 1]), "--", "cat", "id.txt"]);
    assert_eq!(out.sorted_stdout(), ["a", "b"], "{out:?}");
}

#[test]
fn gather_groups_identical_output_under_folded_node_sets() {
    let c = Cluster::start(&["same", "same", "other"]);
    let out = c.run(&[
        "-b",
        "-w",
        &c.nodeset(&[0, 1, 2]),
        "--",
        "cat id.txt; test $(cat id.txt) = same",
    ]);
    assert_eq!(out.code(), 1, "{out:?}");
    let rule = "-".repeat(15);
    let want = format!(
        "{rule}\n{} (2)\n{rule}\nsame\n{rule}\n{} (1) exit 1\n{rule}\nother\n",
        c.folded(&[0, 1]),
        c.folded(&[2])
    );
    assert_eq!(out.stdout(), want, "{out:?}");
    assert_eq!(
        out.stderr(),
        format!("{}: exited with status 1\n", c.host(2)),
        "{out:?}"
    );
}

#[test]
fn by_host_lists_hosts_in_node_order_after_completion() {
    let c = Cluster::start(&["x", "y", "z"]);
    // The first host is the slowest: live order would put it last.
    let slow = format!("{}/id.txt", c.dir(0).display());
    let cmd = format!("grep -q x {slow} && sleep 0.5; cat id.txt; echo done");
    let out = c.run(&["-L", "-w", &c.nodeset(&[0, 1, 2]), "--", &cmd]);
    assert_eq!(out.code(), 0, "{out:?}");
    let want: String = (0..3)
        .map(|i| format!("{h}: {}\n{h}: done\n", ["x", "y", "z"][i], h = c.host(i)))
        .collect();
    assert_eq!(out.stdout(), want, "{out:?}");
    let out = c.run(&["-L", "-N", "-w", &c.nodeset(&[0, 1, 2]), "--", "cat id.txt"]);
    assert_eq!(out.stdout(), "x\ny\nz\n", "{out:?}");
}

#[test]
fn json_lines_carry_lines_results_and_a_summary() {
    let c = Cluster::start(&["a", "b"]);
    let refused = closed_port();
    let hosts = format!("{},127.0.0.1:{refused}", c.nodeset(&[0, 1]));
    let out = c.run(&["--json", "-vvv", "-w", &hosts, "--", "cat id.txt; echo e >&2; exit 2"]);
    assert_eq!(out.code(), 1, "{out:?}");
    let records = out.json_records();
    let of = |t: &'static str| records.iter().filter(move |r| r["type"] == t);
    let mut lines: Vec<(String, String, String)> = of("line")
        .map(|r| {
            (
                r["host"].as_str().unwrap().into(),
                r["stream"].as_str().unwrap().into(),
                r["line"].as_str().unwrap().into(),
            )
        })
        .collect();
    lines.sort();
    let want = |i: usize, s: &str, l: &str| (c.host(i), s.to_owned(), l.to_owned());
    assert_eq!(
        lines,
        [
            want(0, "stderr", "e"),
            want(0, "stdout", "a"),
            want(1, "stderr", "e"),
            want(1, "stdout", "b")
        ]
    );
    let results: Vec<&Value> = of("result").collect();
    assert_eq!(results.len(), 3, "{out:?}");
    for r in &results {
        assert_eq!(r["status"], "failed");
        assert!(r["duration_ms"].is_u64() && r["attempts"].is_u64(), "{r}");
        if r["host"] == format!("127.0.0.1:{refused}") {
            assert_eq!(r["exit_code"], Value::Null);
            assert_eq!(r["error"]["kind"], "connect", "{r}");
        } else {
            assert_eq!(r["exit_code"], 2);
            assert_eq!(r["error"]["kind"], "command", "{r}");
            assert!(r["started"].is_f64(), "{r}");
        }
    }
    let last = records.last().unwrap();
    assert_eq!(last["type"], "summary");
    assert_eq!(
        (
            last["hosts"].as_u64(),
            last["failed"].as_u64(),
            last["succeeded"].as_u64()
        ),
        (Some(3), Some(3), Some(0))
    );
    assert_eq!(last["exit_code"], 1);
    assert_eq!(last["interrupted"], false);
    assert!(
        out.stderr()
            .contains(&format!("{}: exited with status 2", c.folded(&[0, 1]))),
        "{out:?}"
    );
}

#[test]
fn no_progress_display_when_stderr_is_piped() {
    let c = Cluster::start(&["a"]);
    for mode in ["-b", "--json", "-L"] {
        let out = c.run(&[mode, "-w", &c.host(0), "--", "sleep 0.3; true"]);
        assert_eq!(out.code(), 0, "{out:?}");
        assert_eq!(out.stderr(), "", "{mode}: {out:?}");
    }
}

#[test]
fn on_a_terminal_progress_is_drawn_and_colour_honours_no_color() {
    let c = Cluster::start(&["a", "b"]);
    let all = c.nodeset(&[0, 1]);
    let Some(screen) = in_pty(&c, &["-b", "-w", &all, "--", "sleep 1; cat id.txt"], false) else {
        eprintln!("skipped: no `script` to make a pseudo-terminal");
        return;
    };
    assert!(
        screen.contains("2/2 done, 0 failed") || screen.contains("/2 done, "),
        "{screen:?}"
    );
    assert!(screen.contains("\x1b[34m"), "gathered headers are coloured: {screen:?}");
    let screen = in_pty(&c, &["-b", "-w", &all, "--", "sleep 1; cat id.txt"], true).unwrap();
    assert!(screen.contains("/2 done, "), "{screen:?}");
    assert!(!screen.contains("\x1b[34m"), "NO_COLOR: {screen:?}");
    let screen = in_pty(&c, &["-w", &all, "--", "cat id.txt"], false).unwrap();
    assert!(
        screen.contains(&format!("\x1b[36m{}: \x1b[0ma", c.host(0))),
        "{screen:?}"
    );
    assert!(
        !screen.contains(" done, "),
        "no progress display with live output: {screen:?}"
    );
}

#[test]
fn a_stdout_nobody_reads_does_not_delay_the_other_hosts() {
    let c = Cluster::start(&["loud", "quiet", "quiet"]);
    // Far more than a pipe holds: the binary blocks on its stdout at once.
    let lines = 100_000;
    let cmd = format!("if grep -q loud id.txt; then seq 1 {lines}; else sleep 0.3; cat id.txt; fi");
    let child = c.spawn(&["--json", "-w", &c.nodeset(&[0, 1, 2]), "--", &cmd]);
    std::thread::sleep(Duration::from_secs(2));
    let reading_from = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    let out = wait_at_most(child, Duration::from_secs(60));
    assert_eq!(out.code(), 0, "{}", out.stderr());
    let records = out.json_records();
    let loud = records
        .iter()
        .filter(|r| r["type"] == "line" && r["host"] == c.host(0))
        .count();
    assert_eq!(loud, lines, "every line drains once stdout is read");
    for i in [1, 2] {
        let r = records
            .iter()
            .find(|r| r["type"] == "result" && r["host"] == c.host(i))
            .unwrap_or_else(|| panic!("no result for host {i}"));
        let ended = r["started"].as_f64().unwrap() + r["duration_ms"].as_f64().unwrap() / 1000.0;
        assert!(
            ended < reading_from,
            "host {i} ended {:.2} s after stdout was first read: {r}",
            ended - reading_from
        );
    }
    assert_eq!(records.last().unwrap()["type"], "summary");
}
