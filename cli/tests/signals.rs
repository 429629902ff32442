//! Ctrl-C: the first cancels the run and prints what ran, the second
//! exits at once.

mod common;

use std::time::{Duration, Instant};

use common::{processes_with, signal, unique_marker, wait_at_most, Cluster};

#[test]
fn first_ctrl_c_prints_the_summary_and_exits_130() {
    let c = Cluster::start(&["fast", "slow"]);
    let cmd = "grep -q slow id.txt && sleep 30; cat id.txt";
    let child = c.spawn(&["-w", &c.nodeset(&[0, 1]), "--", cmd]);
    // Wait for the fast host's line, then interrupt.
    std::thread::sleep(Duration::from_millis(1500));
    signal(child.id(), libc::SIGINT);
    let t = Instant::now();
    let out = wait_at_most(child, Duration::from_secs(20));
    assert!(t.elapsed() < Duration::from_secs(10), "{out:?}");
    assert_eq!(out.code(), 130, "{out:?}");
    let slow = if std::fs::read_to_string(c.dir(0).join("id.txt")).unwrap() == "slow\n" {
        0
    } else {
        1
    };
    assert_eq!(out.stdout(), format!("{}: fast\n", c.host(1 - slow)), "{out:?}");
    assert_eq!(
        out.stderr(),
        format!("{}: interrupted before it finished\n", c.host(slow)),
        "{out:?}"
    );
}

#[test]
fn sigint_mid_run_leaves_no_remote_process_behind() {
    let c = Cluster::start(&["a", "b"]);
    let marker = unique_marker("sigint");
    let cmd = format!("sleep 60; echo {marker}");
    let child = c.spawn(&["-b", "-w", &c.nodeset(&[0, 1]), "--", &cmd]);
    let pid = child.id();
    let t = Instant::now();
    while processes_with(&marker, pid).len() < 2 {
        assert!(t.elapsed() < Duration::from_secs(20), "the commands never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(pid, libc::SIGINT);
    let t = Instant::now();
    let out = wait_at_most(child, Duration::from_secs(20));
    assert_eq!(out.code(), 130, "{out:?}");
    assert_eq!(
        out.stderr(),
        format!("{}: interrupted before it finished\n", c.folded(&[0, 1])),
        "{out:?}"
    );
    assert!(!out.stdout().contains(&marker), "{out:?}");
    while !processes_with(&marker, pid).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "still running 5 s after the SIGINT: {:?}",
            processes_with(&marker, pid)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_second_sigint_exits_at_once() {
    let c = Cluster::start(&["a"]);
    // A listener that never speaks SSH: the host stays connecting, and the
    // cancelled run waits for its connection to answer.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_host = format!("127.0.0.1:{}", silent.local_addr().unwrap().port());
    let hosts = format!("{},{silent_host}", c.host(0));
    let child = c.spawn(&["-t", "60", "-w", &hosts, "--", "cat id.txt"]);
    std::thread::sleep(Duration::from_millis(1500));
    signal(child.id(), libc::SIGINT);
    std::thread::sleep(Duration::from_millis(300));
    signal(child.id(), libc::SIGINT);
    let t = Instant::now();
    let out = wait_at_most(child, Duration::from_secs(20));
    assert!(t.elapsed() < Duration::from_secs(5), "{out:?}");
    assert_eq!(out.code(), 130, "{out:?}");
    assert!(out.stdout().contains(&format!("{}: a\n", c.host(0))), "{out:?}");
}

#[test]
fn an_interrupted_json_run_reports_cancelled_tasks_and_the_summary() {
    let c = Cluster::start(&["fast", "slow"]);
    let cmd = "grep -q slow id.txt && sleep 30; cat id.txt";
    let child = c.spawn(&["--json", "-w", &c.nodeset(&[0, 1]), "--", cmd]);
    std::thread::sleep(Duration::from_millis(1500));
    signal(child.id(), libc::SIGINT);
    let out = wait_at_most(child, Duration::from_secs(20));
    assert_eq!(out.code(), 130, "{out:?}");
    let records = out.json_records();
    let mut statuses: Vec<&str> = records
        .iter()
        .filter(|r| r["type"] == "result")
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, ["cancelled", "succeeded"], "{out:?}");
    let last = records.last().unwrap();
    assert_eq!(last["type"], "summary", "{out:?}");
    assert_eq!(
        (
            &last["interrupted"],
            &last["unfinished"],
            &last["succeeded"],
            &last["exit_code"]
        ),
        (&true.into(), &1.into(), &1.into(), &130.into()),
        "{out:?}"
    );
}
