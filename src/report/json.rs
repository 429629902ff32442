//! `serde::Serialize` for the report, hand-written so that the shape is a
//! stable, documented contract rather than the fields of the day:
//!
//! - `Report`: `{"success", "duration", "labels": [LabelReport]}`, and
//!   `"jobs_not_run": [TaskReport]` when a run gave up on jobs of a job queue
//! - `LabelReport`: `{"label", "success", "error", "tasks": [TaskReport]}`
//! - `TaskReport`: `{"seq", "task", "status", "attempts", "reruns",
//!   "exit_code", "signal", "started", "duration", "stdout",
//!   "stdout_truncated", "stderr", "stderr_truncated", "error"}`, and
//!   `"job"` (the `JobId` number) on a task that ran a job of a job queue
//! - `Error`: `{"kind", "message", "label", "task", "exit_code", "signal"}`
//!   (`kind` is the `ErrorKind` variant name, `message` the `Display` text)
//! - `TaskStatus`: its lowercase name (`"succeeded"`, `"jumped"`, ...)
//!
//! Durations are seconds as floating point; `started` is seconds since the
//! Unix epoch; captured output is lossy UTF-8 text (`null` when the stream
//! was not captured); absent values are `null`, never left out (except the
//! two job fields above, which only runs with job queues have).
//!
//! Invariant: serializing never fails on our side and never loses a task.
//!
//! May use: `error` and the report types.

use std::time::{Duration, SystemTime};

use serde::ser::{SerializeStruct, Serializer};
use serde::Serialize;

use super::{LabelReport, Report, TaskReport, TaskStatus};
use crate::error::Error;

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn epoch_secs(t: Option<SystemTime>) -> Option<f64> {
    t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok()).map(secs)
}

fn text(bytes: Option<&[u8]>) -> Option<String> {
    bytes.map(|b| String::from_utf8_lossy(b).into_owned())
}

impl TaskStatus {
    /// The lowercase name the JSON report uses.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::Ignored => "ignored",
            TaskStatus::Jumped => "jumped",
            TaskStatus::Skipped => "skipped",
            TaskStatus::Cancelled => "cancelled",
        }
    }
}

impl Serialize for TaskStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl Serialize for Error {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Error", 6)?;
        st.serialize_field("kind", &format!("{:?}", self.kind()))?;
        st.serialize_field("message", &self.to_string())?;
        st.serialize_field("label", &self.label())?;
        st.serialize_field("task", &self.task())?;
        st.serialize_field("exit_code", &self.exit_code())?;
        st.serialize_field("signal", &self.signal())?;
        st.end()
    }
}

impl Serialize for TaskReport {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("TaskReport", 14)?;
        st.serialize_field("seq", &self.seq)?;
        st.serialize_field("task", &*self.description)?;
        st.serialize_field("status", &self.status)?;
        st.serialize_field("attempts", &self.attempts)?;
        st.serialize_field("reruns", &self.reruns)?;
        st.serialize_field("exit_code", &self.exit_code)?;
        st.serialize_field("signal", &self.signal)?;
        st.serialize_field("started", &epoch_secs(self.started))?;
        st.serialize_field("duration", &secs(self.duration))?;
        st.serialize_field("stdout", &text(self.stdout()))?;
        st.serialize_field("stdout_truncated", &self.stdout_truncated())?;
        st.serialize_field("stderr", &text(self.stderr()))?;
        st.serialize_field("stderr_truncated", &self.stderr_truncated())?;
        st.serialize_field("error", &self.error())?;
        if let Some(j) = self.job {
            st.serialize_field("job", &j.get())?;
        }
        st.end()
    }
}

impl Serialize for LabelReport {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("LabelReport", 4)?;
        st.serialize_field("label", &*self.label)?;
        st.serialize_field("success", &self.success())?;
        st.serialize_field("error", &self.error)?;
        st.serialize_field("tasks", &self.tasks)?;
        st.end()
    }
}

impl Serialize for Report {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Report", 3)?;
        st.serialize_field("success", &self.success())?;
        st.serialize_field("duration", &secs(self.duration))?;
        st.serialize_field("labels", &self.labels)?;
        if !self.jobs_not_run.is_empty() {
            st.serialize_field("jobs_not_run", &self.jobs_not_run)?;
        }
        st.end()
    }
}
