//! Runs every example and checks the lines that show it did its job.
//!
//! Each example is built with `cargo build --example NAME` (cargo releases its build lock
//! while tests run, so this nested cargo does not deadlock; after the first build it only
//! checks freshness), then its binary is run directly with a timeout, so that the time
//! measured is the example's own.
//!
//! The quickstart also runs with `scp` hidden from `PATH`, as on a machine that has only
//! the Rust toolchain: the embedded servers then serve SCP themselves.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Builds the example and returns its executable.
fn build_example(name: &str) -> PathBuf {
    let mut cargo = Command::new(env!("CARGO"));
    // Cargo sets these for the test process only. Some build scripts watch them (ring's
    // watches CARGO_MANIFEST_DIR), so passing them on would make this build and the user's
    // own `cargo` invocations rebuild each other's dependencies every time.
    for (var, _) in std::env::vars_os() {
        let var = var.to_string_lossy();
        if var.starts_with("CARGO_PKG_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
                "OUT_DIR",
            ]
            .contains(&var.as_ref())
        {
            cargo.env_remove(var.as_ref());
        }
    }
    let out = cargo
        .args(["build", "--quiet", "-p", "ssh-parallel", "--example", name])
        .arg("--message-format=json-render-diagnostics")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo build");
    assert!(out.status.success(), "cargo build --example {name} failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| {
            l.contains("\"reason\":\"compiler-artifact\"")
                && l.contains(&format!("\"name\":\"{name}\""))
                && l.contains("\"kind\":[\"example\"]")
        })
        .unwrap_or_else(|| panic!("no artifact line for example {name} in cargo's output"));
    let key = "\"executable\":\"";
    let start = line.find(key).expect("an executable path") + key.len();
    let end = start + line[start..].find('"').expect("end of the path");
    PathBuf::from(&line[start..end])
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

/// Runs `exe` with an optional PATH, killing it (by pid) after `timeout`.
fn run(exe: &Path, path: Option<&Path>, timeout: Duration) -> Run {
    let mut cmd = Command::new(exe);
    cmd.env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    let start = Instant::now();
    let mut child = cmd.spawn().expect("spawn the example");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{} still running after {timeout:?}", exe.display());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = start.elapsed();
    Run {
        ok: status.success(),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        elapsed,
    }
}

fn run_example(name: &str) -> Run {
    let r = run(&build_example(name), None, Duration::from_secs(60));
    println!(
        "--- {name} ({:?}) stdout:\n{}\n--- stderr:\n{}",
        r.elapsed, r.stdout, r.stderr
    );
    r
}

fn assert_lines(r: &Run, expected: &[&str]) {
    for e in expected {
        assert!(
            r.stdout.lines().any(|l| l.contains(e)),
            "no line with {e:?} in:\n{}",
            r.stdout
        );
    }
}

/// A directory of symlinks to every program on this PATH except `scp`.
fn path_without_scp(dir: &Path) -> PathBuf {
    let farm = dir.join("bin");
    std::fs::create_dir(&farm).unwrap();
    let path = std::env::var_os("PATH").unwrap_or_default();
    for d in std::env::split_paths(&path) {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let name = e.file_name();
            if name == "scp" || farm.join(&name).exists() {
                continue;
            }
            let _ = std::os::unix::fs::symlink(e.path(), farm.join(&name));
        }
    }
    farm
}

const QUICKSTART_LINES: &[&str] = &[
    "db1 sees 3 web servers ready",
    "web1   ok      8/8 tasks succeeded",
    "web2   ok      6/8 tasks succeeded, 1 jumped, 1 skipped",
    "web4   FAILED (command)",
    "db1    ok      7/7 tasks succeeded",
    "5 labels, 1 failed",
    "web1 status: web1 up, version = 1.4.2 | warmed | ready",
    "web2 status: web2 up, version = 1.4.2 | ready",
    "web4 status: (not collected)",
    "db1 status: db1 migrated to 1.4.2",
    "error on web4 (planned)",
    "quickstart: done, web4 failed as planned",
];

#[test]
fn quickstart() {
    let r = run_example("quickstart");
    assert!(r.ok, "quickstart failed");
    assert_lines(&r, QUICKSTART_LINES);
    assert!(!r.stdout.contains("UNEXPECTED"));
    assert!(r.elapsed < Duration::from_secs(10), "took {:?}", r.elapsed);
}

#[test]
fn quickstart_without_an_scp_binary() {
    let exe = build_example("quickstart");
    let dir = tempfile::tempdir().unwrap();
    let path = path_without_scp(dir.path());
    assert!(!path.join("scp").exists());
    let r = run(&exe, Some(&path), Duration::from_secs(60));
    assert!(r.ok, "quickstart failed without scp:\n{}\n{}", r.stdout, r.stderr);
    assert_lines(&r, QUICKSTART_LINES);
}

#[test]
fn fanout() {
    let r = run_example("fanout");
    assert!(r.ok, "fanout failed");
    // Every label's lines came through, each with its label prefix.
    for i in 1..=12 {
        let label = format!("web{i:02}");
        for step in 1..=3 {
            let line = format!("{label}: step {step} on {label}");
            assert!(r.stdout.lines().any(|l| l == line), "missing {line:?}");
        }
        assert!(
            r.stdout
                .lines()
                .any(|l| l.starts_with(&format!("{label}: ")) && l.contains("up")),
            "no uptime line for {label}"
        );
    }
    assert_lines(&r, &["web12  ok      1/1 tasks succeeded", "12 labels, 0 failed"]);
}

#[test]
fn pipeline_joins() {
    let r = run_example("pipeline_joins");
    assert!(r.ok, "pipeline_joins failed");
    assert_lines(
        &r,
        &[
            "stage order verified: build < test < deploy < notify",
            "notify       ok      3/3 tasks succeeded",
            "8 labels, 0 failed",
        ],
    );
    let stages: Vec<&str> = r
        .stdout
        .lines()
        .skip_while(|l| *l != "pipeline log:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter(|l| {
            ["build ", "test ", "deploy ", "notify "]
                .iter()
                .any(|s| l.starts_with(s))
        })
        .collect();
    // The log as printed: two builds, two tests, three deploys, one notify, in that order.
    let kinds: Vec<&str> = stages.iter().filter_map(|l| l.split(' ').next()).collect();
    let mut expected = vec!["build"; 2];
    expected.extend(["test"; 2]);
    expected.extend(["deploy"; 3]);
    expected.push("notify");
    assert_eq!(kinds, expected, "{stages:?}");
}

#[test]
fn error_callback() {
    let r = run_example("error_callback");
    assert!(r.ok, "error_callback failed");
    assert_lines(
        &r,
        &[
            "policy: flaky attempt 1 failed (exited with status 75) -> Retry",
            "policy: flaky attempt 2 failed (exited with status 75) -> Retry",
            "policy: optional attempt 1 failed (exited with status 3) -> Ignore",
            "policy: critical attempt 1 failed (exited with status 1) -> AbortAll",
            "flaky: synced on try 3 after 3 attempts",
            "optional: 1 ignored failure, then: optional carried on",
            "web1      FAILED (aborted)",
            "web2      FAILED (aborted)",
            "every label ended as the policy decided",
        ],
    );
}

#[test]
fn parsub_sudo() {
    let r = run_example("parsub_sudo");
    assert!(r.ok, "parsub_sudo failed");
    assert_lines(
        &r,
        &[
            "app1: sudo ok, running as uid",
            "app2: sudo ok, running as uid",
            "app1: logged in as",
            "app3   FAILED (local)",
            "sudo refused: sudo: 1 incorrect password attempt",
            "app3 was refused as planned",
        ],
    );
}

#[test]
fn job_queue() {
    let r = run_example("job_queue");
    assert!(r.ok, "job_queue failed");
    assert_lines(
        &r,
        &[
            "seed 1 trained on gpu",
            "seed 12 trained on gpu",
            "seed 18 (late) trained on gpu",
            "big model on gpu",
            "job_queue: done, 19 jobs ran once each",
        ],
    );
    // Every job is listed once, with the label that ran it; the big model moved off gpu1.
    let listed: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("job #"))
        .collect();
    assert_eq!(listed.len(), 19, "{listed:?}");
    assert!(!r.stdout.contains("big model on gpu1"));
    assert!(
        listed.iter().any(|l| l.contains("(attempts 2): command `test gpu")),
        "gpu1 takes the big model first, fails, and another label runs it: {listed:?}"
    );
}

#[test]
fn bastion() {
    let r = run_example("bastion");
    assert!(r.ok, "bastion failed");
    for i in 1..=8 {
        let line = format!("app{i:02}: app{i:02} reached through the bastion as ");
        assert!(r.stdout.lines().any(|l| l.starts_with(&line)), "missing {line:?}");
    }
    assert_lines(
        &r,
        &[
            "app01 goes through bastion (127.0.0.1:",
            "bastion: 1 login(s) for 8 labels, 8 tunnels",
        ],
    );
}
