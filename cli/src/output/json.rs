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

use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Value};
use ssh_parallel::{TaskReport, TaskStatus};

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

/// The JSON name of a task status.
pub fn status_name(s: TaskStatus) -> String {
    let name = match s {
        TaskStatus::Succeeded => "succeeded",
        TaskStatus::Failed => "failed",
        TaskStatus::Ignored => "ignored",
        TaskStatus::Jumped => "jumped",
        TaskStatus::Skipped => "skipped",
        TaskStatus::Cancelled => "cancelled",
        // A status added to the library later still gets a readable name.
        other => return format!("{other:?}").to_lowercase(),
    };
    name.to_owned()
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
        "status": status_name(t.status()),
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
