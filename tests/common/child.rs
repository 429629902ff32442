//! A parent test that re-runs its own test binary as a child process: one
//! `#[ignore]`d test of the same file, alone, with `RUST_LOG=trace`, so that
//! the parent can search *everything* that process wrote (stdout and
//! stderr), not only what a test logger chose to record.
//!
//! The child test installs the real `env_logger` and prints [`DONE`] as its
//! last line once its own assertions held; it learns what it needs from the
//! environment the parent gives it.
//!
//! Include with `#[path = "common/child.rs"] mod child;`.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::process::Command;

/// What a child test prints last, once all its own assertions held.
pub const DONE: &str = "CHILD-DONE";

/// Runs the ignored test `name` of this test binary alone, at `trace` level,
/// with `envs` added to its environment; fails unless it succeeded and
/// printed [`DONE`]. Returns its stdout, a newline, and its stderr.
pub fn run_at_trace<K, V>(name: &str, envs: impl IntoIterator<Item = (K, V)>) -> String
where
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--ignored", "--nocapture", "--test-threads=1"])
        .envs(envs)
        .env("RUST_LOG", "trace")
        .env_remove("RUST_LOG_STYLE")
        .output()
        .expect("re-run this test binary as the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let all = format!("{stdout}\n{stderr}");
    assert!(
        out.status.success() && stdout.contains(DONE),
        "the child failed ({}):\n{all}",
        out.status
    );
    all
}
