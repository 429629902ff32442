//! The channel protocol between the scheduler and the transports: the
//! [`Request`]s it sends, the [`Event`]s it receives, and what a finished task
//! reports.
//!
//! Invariant: every `Run` is answered by exactly one `Finished`, every
//! `Connect` by `Connected` or `ConnectFailed`, every `Disconnect` by
//! `Closed`, whatever happens to the connection meanwhile.
//!
//! May use: `host`, `plan` (`LabelId`), `task` (actions, captured output),
//! `transport::exit`.

use std::sync::Arc;
use std::time::SystemTime;

use crate::host::Host;
use crate::plan::LabelId;
use crate::task::output::Captured;
use crate::task::Action;
use crate::transport::exit::Exit;

/// Identifies one connection of one label; a new one for every attempt, so
/// late events about an old connection are recognised and dropped.
pub(crate) type ConnId = u64;
/// Identifies one run of one task.
pub(crate) type Token = u64;

/// A task to run.
// Some fields are read only by the network transports (fault injection now).
#[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
pub(crate) struct Job {
    pub(crate) label: LabelId,
    pub(crate) name: Arc<str>,
    pub(crate) host: Arc<Host>,
    pub(crate) action: Arc<Action>,
    pub(crate) token: Token,
    /// `None` for tasks that need no connection (`Parsub::no_ssh`).
    pub(crate) conn: Option<ConnId>,
    /// Another task that needs a channel (a command or a transfer) comes
    /// next in the label's queue: the transport may open it ahead of time.
    pub(crate) prefetch: bool,
    /// A command that prints nothing on either stream for this long is
    /// stopped and fails with [`TransportError::Timeout`] (the command's
    /// own, else the builder's default).
    pub(crate) idle_timeout: Option<std::time::Duration>,
    /// What an `ScpPut`/`ScpGet` runs over (the task's, else the builder's).
    pub(crate) protocol: crate::task::TransferProtocol,
}

/// From the scheduler to a transport.
#[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
pub(crate) enum Request {
    Connect {
        label: LabelId,
        conn: ConnId,
        name: Arc<str>,
        host: Arc<Host>,
    },
    Run(Job),
    /// Stop a running task (its timeout passed); the transport still answers
    /// with `Finished`.
    Cancel {
        token: Token,
    },
    Disconnect {
        label: LabelId,
        conn: ConnId,
    },
}

/// From a transport to the scheduler.
#[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
pub(crate) enum Event {
    Connected {
        label: LabelId,
        conn: ConnId,
    },
    ConnectFailed {
        label: LabelId,
        conn: ConnId,
        error: TransportError,
    },
    /// An idle connection died (the SSH transport detects it by deadline).
    Lost {
        label: LabelId,
        conn: ConnId,
        error: TransportError,
    },
    Closed {
        label: LabelId,
        conn: ConnId,
    },
    Finished {
        label: LabelId,
        token: Token,
        outcome: Outcome,
    },
    /// Not from a transport: a job queue the scheduler drains changed (a
    /// push, a give-back or a close), so waiting drainers may go on.
    Jobs,
}

/// What a transport reports about a finished task.
pub(crate) struct Outcome {
    pub(crate) result: Result<Exit, TransportError>,
    pub(crate) stdout: Captured,
    pub(crate) stderr: Captured,
    pub(crate) started: SystemTime,
}

impl Outcome {
    pub(crate) fn new(result: Result<Exit, TransportError>, started: SystemTime) -> Outcome {
        Outcome {
            result,
            stdout: Captured::default(),
            stderr: Captured::default(),
            started,
        }
    }
}

/// Why a transport could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
pub(crate) enum TransportError {
    /// Could not connect or authenticate.
    #[error("{0}")]
    Connect(String),
    /// The connection died; the task may be re-run after reconnecting.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// A copy failed; the message names the path.
    #[error("{0}")]
    Transfer(String),
    /// The transport gave up waiting (a command's idle timeout); the task
    /// fails as a timeout.
    #[error("{0}")]
    Timeout(String),
    /// Something failed on this machine.
    #[error("{message}")]
    Local {
        message: String,
        #[source]
        source: Option<crate::error::BoxError>,
    },
}

impl TransportError {
    pub(crate) fn local(message: impl Into<String>) -> TransportError {
        TransportError::Local {
            message: message.into(),
            source: None,
        }
    }
}
