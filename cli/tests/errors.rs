//! Exit statuses, the failure summary, usage errors and the per-host
//! command timeout.

mod common;

use std::time::{Duration, Instant};

use common::{closed_port, Cluster};

#[test]
fn exit_codes_with_and_without_max_status_and_the_failure_summary() {
    let c = Cluster::start(&["3", "7", "0"]);
    let all = c.nodeset(&[0, 1, 2]);
    let ok = c.run(&["-w", &all, "--", "true"]);
    assert_eq!(
        (ok.code(), ok.stdout().as_str(), ok.stderr().as_str()),
        (0, "", ""),
        "{ok:?}"
    );
    let out = c.run(&["-w", &all, "--", "exit $(cat id.txt)"]);
    assert_eq!(out.code(), 1, "{out:?}");
    let summary = format!(
        "{}: exited with status 3\n{}: exited with status 7\n",
        c.host(0),
        c.host(1)
    );
    assert_eq!(out.stderr(), summary);
    let out = c.run(&["-S", "-w", &all, "--", "exit $(cat id.txt)"]);
    assert_eq!(out.code(), 7, "{out:?}");

    // Hosts failing the same way share one line, under a folded node set.
    let r1 = closed_port();
    let r2 = std::iter::repeat_with(closed_port).find(|p| *p != r1).unwrap();
    let hosts = format!("{},127.0.0.1:[{r1},{r2}]", c.host(2));
    let out = c.run(&["-S", "-w", &hosts, "--", "true"]);
    assert_eq!(out.code(), 255, "{out:?}");
    let (lo, hi) = (r1.min(r2), r1.max(r2));
    let set = if hi == lo + 1 {
        format!("127.0.0.1:[{lo}-{hi}]")
    } else {
        format!("127.0.0.1:[{lo},{hi}]")
    };
    assert_eq!(
        out.stderr(),
        format!("{set}: connect: Connection refused (os error 111)\n"),
        "{out:?}"
    );
}

#[test]
fn usage_errors_are_one_line_and_exit_2() {
    let c = Cluster::start(&["a"]);
    let h = c.host(0);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["-w", "web[1-", "--", "true"], "invalid node set"),
        (
            vec!["-w", &h, "-o", "Bogus=1", "--", "true"],
            "-o \"Bogus=1\": bad configuration option",
        ),
        (
            vec!["-w", &h, "-o", "Port=99999", "--", "true"],
            "-o \"Port=99999\": badly formatted port number",
        ),
        (
            vec!["-w", "no-such-host.invalid", "--", "true"],
            "unknown host no-such-host.invalid",
        ),
        (vec!["-w", &h, "-x", &h, "--", "true"], "empty"),
        (vec!["--", "true"], "no hosts"),
        (vec!["-w", "^/nonexistent/hosts", "--", "true"], "cannot read host file"),
        (
            vec!["copy", "--sftp", "-w", &h, "/nonexistent/file", "x"],
            "does not exist",
        ),
        (vec!["copy", "-w", &h, "/nonexistent/file", "x"], "does not exist"),
        (vec!["-w", &h, "-f", "0", "--", "true"], "fanout"),
        (vec!["-w", &h, "-u", "0", "--", "true"], "timeout"),
    ];
    for (args, needle) in cases {
        let out = c.run(&args);
        assert_eq!(out.code(), 2, "{args:?}: {out:?}");
        let err = out.stderr();
        assert_eq!(err.lines().count(), 1, "{args:?}: {out:?}");
        assert!(
            err.starts_with("ssh-parallel: error: ") && err.contains(needle),
            "{args:?}: {out:?}"
        );
        assert_eq!(out.stdout(), "", "{args:?}");
    }
    // clap's own errors exit 2 too.
    let out = c.run(&["--no-such-flag"]);
    assert_eq!(out.code(), 2, "{out:?}");
    assert!(!out.stderr().contains("panicked"), "{out:?}");
}

#[test]
fn command_timeout_and_fanout() {
    let c = Cluster::start(&["a", "b", "c"]);
    let all = c.nodeset(&[0, 1, 2]);
    let t = Instant::now();
    let out = c.run(&["-u", "0.5", "-w", &c.host(0), "--", "sleep 10"]);
    assert!(t.elapsed() < Duration::from_secs(5), "{out:?}");
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(
        out.stderr().starts_with(&format!("{}: timeout: ", c.host(0))),
        "{out:?}"
    );

    let t = Instant::now();
    let out = c.run(&["-f", "1", "-w", &all, "--", "sleep 0.4"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(
        t.elapsed() >= Duration::from_millis(1200),
        "one host at a time: {:?}",
        t.elapsed()
    );
}
