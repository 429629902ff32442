//! The options every task takes (`on_error`, `or_goto`, `reconnections`,
//! `timeout`, `on_done`), stored in one [`TaskOptions`] per action and
//! given to every action type by one macro, so the methods read the same
//! everywhere.
//!
//! Invariant: an option left `None` is inherited (task, else host, else
//! global), never defaulted here.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::{Command, Connect, Goto, Join, Parsub, RsyncGet, RsyncPut, ScpGet, ScpPut, Sub};
use crate::policy::OnError;
use crate::report::TaskReport;

/// Called when a task has finished, with its label and its report entry.
pub type DoneFn = Arc<dyn Fn(&str, &TaskReport) + Send + Sync>;

/// Options every task takes. `None` means "not set here": the scheduler then
/// asks the host, then the global settings.
#[derive(Clone, Default)]
pub(crate) struct TaskOptions {
    pub(crate) on_error: Option<OnError>,
    /// Only on remote tasks (`Action::check` refuses it elsewhere).
    pub(crate) or_goto: Option<String>,
    pub(crate) reconnections: Option<u32>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) on_done: Option<DoneFn>,
}

impl fmt::Debug for TaskOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskOptions")
            .field("on_error", &self.on_error)
            .field("or_goto", &self.or_goto)
            .field("reconnections", &self.reconnections)
            .field("timeout", &self.timeout)
            .field("on_done", &self.on_done.as_ref().map(|_| ".."))
            .finish()
    }
}

/// Adds the per-task option methods to an action type.
macro_rules! task_options {
    ($($t:ty => $($field:tt).+);* $(;)?) => {$(
        impl $t {
            /// The error policy for this task (overrides the host's and the scheduler's).
            pub fn on_error(mut self, policy: impl Into<OnError>) -> Self {
                self.$($field).+.on_error = Some(policy.into());
                self
            }
            /// When the task fails for a reason of its own (a command's non-zero
            /// exit status; a transfer that fails: missing source, refused
            /// destination, the remote scp or rsync failing), jump to `here(tag)`
            /// instead of raising an error; the task is reported `Jumped` with its
            /// error attached. Signals, timeouts and connection errors are not
            /// jumped over: they go to error handling.
            pub fn or_goto(mut self, tag: impl Into<String>) -> Self {
                self.$($field).+.or_goto = Some(tag.into());
                self
            }
            /// Extra connection attempts for this task (overrides the host's and the global value).
            pub fn reconnections(mut self, n: u32) -> Self {
                self.$($field).+.reconnections = Some(n);
                self
            }
            /// Fail the task with `ErrorKind::Timeout` when it runs longer than this.
            pub fn timeout(mut self, timeout: Duration) -> Self {
                self.$($field).+.timeout = Some(timeout);
                self
            }
            /// Call `f(label, report)` when the task has finished, however it ended.
            pub fn on_done(mut self, f: impl Fn(&str, &TaskReport) + Send + Sync + 'static) -> Self {
                self.$($field).+.on_done = Some(Arc::new(f));
                self
            }
        }
    )*};
}

task_options!(
    Command => opts;
    ScpGet => 0.opts;
    ScpPut => 0.opts;
    RsyncGet => 0.opts;
    RsyncPut => 0.opts;
    Sub => opts;
    Parsub => opts;
    Join => opts;
    Goto => opts;
    Connect => opts;
);
