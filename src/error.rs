//! The public error type: one `Error` with a field-less [`ErrorKind`], like
//! `std::io::Error`, carrying the label, the task and a readable message.
//!
//! Invariant: an `ErrorKind` never changes once made; what is added later
//! (label, task, exit status, source) only adds context.
//!
//! May use: nothing else in the crate (a leaf).

use std::fmt;
use std::sync::Arc;

/// What went wrong, without the details. Match on it to decide what to do;
/// read the [`Error`]'s message to tell a person.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Could not connect or authenticate, or the connection was lost.
    Connect,
    /// A command exited with a status outside its accepted exit codes, or was
    /// killed by a signal.
    Command,
    /// An scp or rsync transfer failed.
    Transfer,
    /// Something failed on this machine: a `Sub` or `Parsub` returned an error or
    /// panicked, or a local file could not be opened.
    Local,
    /// A task ran longer than its timeout.
    Timeout,
    /// A join failed because one of its targets was aborted.
    JoinFailed,
    /// The label was stopped because another label failed under `AbortAll`;
    /// or a job was never run because every label draining its queue stopped.
    Aborted,
    /// A goto (or or_goto) named a tag with no later `here` on the label.
    GotoFailed,
    /// A label is empty or contains a reserved character.
    InvalidLabel,
    /// A label was added twice.
    DuplicateLabel,
    /// A label that was never added was named.
    UnknownLabel,
    /// A selector is empty or malformed.
    InvalidSelector,
    /// A `%NAME%` variable is not defined for the label.
    UnknownVariable,
    /// A tag is missing (found by `validate`) or malformed.
    MissingTag,
    /// A configuration value is invalid (the message names the option).
    InvalidConfig,
    /// A host specification could not be parsed.
    InvalidHost,
    /// The run was cancelled (`RunHandle::cancel`) before the task ended, or
    /// the task's label was never started because more labels had failed
    /// than `ParallelBuilder::max_failures` allows (the message names it).
    Cancelled,
    /// A job was pushed to a [`JobQueue`](crate::JobQueue) already closed.
    QueueClosed,
}

impl ErrorKind {
    /// A short lowercase name, used in messages and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Command => "command",
            ErrorKind::Transfer => "transfer",
            ErrorKind::Local => "local",
            ErrorKind::Timeout => "timeout",
            ErrorKind::JoinFailed => "join failed",
            ErrorKind::Aborted => "aborted",
            ErrorKind::GotoFailed => "goto failed",
            ErrorKind::InvalidLabel => "invalid label",
            ErrorKind::DuplicateLabel => "duplicate label",
            ErrorKind::UnknownLabel => "unknown label",
            ErrorKind::InvalidSelector => "invalid selector",
            ErrorKind::UnknownVariable => "unknown variable",
            ErrorKind::MissingTag => "missing tag",
            ErrorKind::InvalidConfig => "invalid configuration",
            ErrorKind::InvalidHost => "invalid host",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::QueueClosed => "queue closed",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error from building a plan or from running one of its tasks.
///
/// Its message names the label and the task where there is one:
/// `web1: task #3 (command `false`): exited with status 1`.
#[derive(Clone)]
pub struct Error {
    kind: ErrorKind,
    label: Option<Arc<str>>,
    task: Option<Arc<str>>,
    detail: String,
    exit_code: Option<i32>,
    signal: Option<i32>,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    /// A new error of `kind` with a message saying what happened.
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Error {
            kind,
            label: None,
            task: None,
            detail: detail.into(),
            exit_code: None,
            signal: None,
            source: None,
        }
    }

    pub(crate) fn with_label(mut self, label: impl Into<Arc<str>>) -> Self {
        self.label = Some(label.into());
        self
    }

    pub(crate) fn with_task(mut self, task: impl Into<Arc<str>>) -> Self {
        self.task = Some(task.into());
        self
    }

    pub(crate) fn with_exit(mut self, code: Option<i32>, signal: Option<i32>) -> Self {
        self.exit_code = code;
        self.signal = signal;
        self
    }

    pub(crate) fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    pub(crate) fn with_boxed_source(mut self, source: Box<dyn std::error::Error + Send + Sync>) -> Self {
        self.source = Some(Arc::from(source));
        self
    }

    /// What kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The label the error happened on, if any.
    pub fn label(&self) -> Option<&str> {
        self.label.as_deref()
    }

    /// A description of the task that failed, if any.
    pub fn task(&self) -> Option<&str> {
        self.task.as_deref()
    }

    /// The remote (or local) exit status of a failed command.
    pub fn exit_code(&self) -> Option<i32> {
        self.exit_code
    }

    /// The signal that killed a failed command.
    pub fn signal(&self) -> Option<i32> {
        self.signal
    }

    /// The message without the label and task prefix.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(label) = &self.label {
            write!(f, "{label}: ")?;
        }
        if let Some(task) = &self.task {
            write!(f, "{task}: ")?;
        }
        f.write_str(&self.detail)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind);
        if let Some(l) = &self.label {
            d.field("label", l);
        }
        if let Some(t) = &self.task {
            d.field("task", t);
        }
        d.field("detail", &self.detail);
        if let Some(c) = self.exit_code {
            d.field("exit_code", &c);
        }
        if let Some(s) = self.signal {
            d.field("signal", &s);
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The error type closures (`Sub`, `Parsub`) return, so that `?` works on any error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
