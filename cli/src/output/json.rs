//! `--json`: JSON Lines on stdout, one object a line, each with a `type`:
//!
//! * `line`: `{"type":"line","host":H,"stream":"stdout"|"stderr","line":TEXT}`,
//!   as the line arrives (invalid UTF-8 replaced by U+FFFD);
//! * `result`: one per task as it finishes (one per host for a command):
//!   `{"type":"result","host":H,"task":DESCRIPTION,"status":"succeeded"|"failed"|
//!   "ignored"|"jumped"|"skipped"|"cancelled","exit_code":N|null,"signal":N|null,
//!   "error":{"kind":K,"message":M}|null,"started":UNIX_SECONDS|null,
//!   "duration_ms":N,"attempts":N}`;
//! * `summary`, last: `{"type":"summary","hosts":N,"succeeded":N,"failed":N,
//!   "unfinished":N,"interrupted":BOOL,"duration_ms":N,"exit_code":N}`.
//!
//! `line` records are written as the run's `RunEvent::Line`s arrive,
//! `result` records as its `RunEvent::Finished`s do: every task of the run
//! gets exactly one, those cancelled by Ctrl-C (`"cancelled"`) and those
//! never reached included.
//!
//! The `result` record is this program's contract, built field by field
//! from the `TaskReport`, rather than the library's serde shape of it: that
//! shape names error kinds by variant (`"Connect"` where ours says
//! `"connect"`), gives durations in float seconds where ours gives
//! `duration_ms`, and carries the captured output, which here is already in
//! the `line` records (and not captured at all with `--json`). Keeping the
//! record apart also keeps the CLI's output stable when the library's shape
//! grows.

use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Value};
use ssh_parallel::TaskReport;

use super::Stream;

fn write(record: &Value) {
    let mut text = record.to_string();
    text.push('\n');
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

/// A `line` record.
pub fn line(host: &str, stream: Stream, line: &str) {
    write(&json!({"type": "line", "host": host, "stream": stream.name(), "line": line}));
}

/// A `result` record.
pub fn result(host: &str, t: &TaskReport) {
    let error = t
        .error()
        .map(|e| json!({"kind": e.kind().as_str(), "message": e.detail()}));
    let started = t
        .started()
        .and_then(|s| s.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64());
    write(&json!({
        "type": "result",
        "host": host,
        "task": t.description(),
        "status": t.status().as_str(),
        "exit_code": t.exit_code(),
        "signal": t.signal(),
        "error": error,
        "started": started,
        "duration_ms": millis(t.duration()),
        "attempts": t.attempts(),
    }));
}

/// The counts of a `summary` record.
#[derive(Debug, Clone, Copy)]
pub struct Counts {
    /// Hosts selected.
    pub hosts: usize,
    /// Hosts whose every task succeeded.
    pub succeeded: usize,
    /// Hosts with a failed task.
    pub failed: usize,
    /// Hosts that had not finished (interrupted runs).
    pub unfinished: usize,
}

/// The `summary` record.
pub fn summary(c: Counts, interrupted: bool, elapsed: Duration, exit_code: i32) {
    write(&json!({
        "type": "summary",
        "hosts": c.hosts,
        "succeeded": c.succeeded,
        "failed": c.failed,
        "unfinished": c.unfinished,
        "interrupted": interrupted,
        "duration_ms": millis(elapsed),
        "exit_code": exit_code,
    }));
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
