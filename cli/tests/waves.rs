//! `--waves`, `--max-failures` and `--slots` of the binary, against a
//! cluster of embedded SSH servers.

mod common;

use common::Cluster;
use serde_json::Value;

/// The start and end stamps (nanoseconds) each host printed, from `--json`
/// line records of the command `STAMP`.
const STAMP: &str = "echo start $(date +%s%N); sleep 0.3; echo end $(date +%s%N)";

fn stamps(records: &[Value], host: &str) -> (u128, u128) {
    let mut start = None;
    let mut end = None;
    for r in records.iter().filter(|r| r["type"] == "line" && r["host"] == host) {
        let line = r["line"].as_str().unwrap();
        let (what, ns) = line.split_once(' ').unwrap();
        let ns: u128 = ns.parse().unwrap();
        match what {
            "start" => start = Some(ns),
            "end" => end = Some(ns),
            _ => panic!("unexpected line {line:?}"),
        }
    }
    (start.expect("a start stamp"), end.expect("an end stamp"))
}

#[test]
fn waves_run_the_hosts_one_wave_after_the_other() {
    let c = Cluster::start(&["a", "b", "c", "d"]);
    let all = c.nodeset(&[0, 1, 2, 3]);
    let out = c.run(&["-w", &all, "--waves", "50%", "--json", "--", STAMP]);
    assert_eq!(out.code(), 0, "{out:?}");
    let records = out.json_records();
    let s: Vec<(u128, u128)> = (0..4).map(|i| stamps(&records, &c.host(i))).collect();
    // Waves of 2, in node order: c and d start after a and b have ended.
    let first_end = s[0].1.max(s[1].1);
    assert!(s[2].0 > first_end && s[3].0 > first_end, "{s:?}");
    // Within a wave the hosts overlap.
    assert!(s[1].0 < s[0].1 && s[3].0 < s[2].1, "{s:?}");
}

#[test]
fn max_failures_stops_the_hosts_not_started_and_says_why() {
    let c = Cluster::start(&["bad", "ok1", "ok2"]);
    let all = c.nodeset(&[0, 1, 2]);
    let out = c.run(&[
        "-w",
        &all,
        "--waves",
        "1",
        "--max-failures",
        "0",
        "--",
        "touch ran; test $(cat id.txt) != bad",
    ]);
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(c.dir(0).join("ran").exists());
    for i in [1, 2] {
        assert!(!c.dir(i).join("ran").exists(), "host {i} ran: {out:?}");
    }
    let stderr = out.stderr();
    assert!(
        stderr.contains(&format!("{}: exited with status 1", c.host(0))),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{}: not started: 1 of 3 labels failed, above max_failures 0",
            c.folded(&[1, 2])
        )),
        "{stderr}"
    );

    // Under the threshold every host runs.
    let out = c.run(&[
        "-w",
        &all,
        "--max-failures",
        "34%",
        "-f",
        "1",
        "--",
        "test $(cat id.txt) != bad",
    ]);
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(!out.stderr().contains("not started"), "{out:?}");
}

#[test]
fn slots_give_each_host_sub_nodes_with_their_number() {
    let c = Cluster::start(&["a"]);
    let h = c.host(0);
    let out = c.run(&["-w", &h, "--slots", "3", "--json", "--", "echo slot $SLOT"]);
    assert_eq!(out.code(), 0, "{out:?}");
    let mut lines = out.json_pairs("line", ["host", "line"]);
    lines.sort();
    let want: Vec<(String, String)> = (0..3).map(|i| (format!("{h}:{i}"), format!("slot {i}"))).collect();
    assert_eq!(lines, want);
    assert_eq!(c.servers[0].stats().connections, 3);
}

#[test]
fn bad_amounts_are_usage_errors() {
    let c = Cluster::start(&["a"]);
    let h = c.host(0);
    for (args, want) in [
        (vec!["--waves", "0"], "option waves must be at least 1"),
        (vec!["--waves", "abc"], "invalid amount \"abc\""),
        (
            vec!["--max-failures", "150%"],
            "option max_failures must be a percentage of at most 100%",
        ),
        (vec!["--slots", "0"], "at least one slot"),
    ] {
        let mut all = vec!["-w", h.as_str()];
        all.extend(args.iter().copied());
        all.extend(["--", "true"]);
        let out = c.run(&all);
        assert_eq!(out.code(), 2, "{args:?}: {out:?}");
        assert!(out.stderr().contains(want), "{args:?}: {}", out.stderr());
    }
}
