//! Transports carry tasks to hosts. The scheduler talks to them only through
//! crossbeam channels: it sends [`Request`]s and receives [`Event`]s, so a
//! transport may be a thread pool (local), an event loop (SSH) or a script
//! (fault injection) without the scheduler knowing which.
//!
//! Invariant: every `Run` is answered by exactly one `Finished`, every
//! `Connect` by `Connected` or `ConnectFailed`, every `Disconnect` by
//! `Closed`, whatever happens to the connection meanwhile.
//!
//! May use: `host`, `plan` (`LabelId`), `task` (actions, output), `session`,
//! `process`, `panic`, `error`; the scheduler uses this module, never the
//! other way round.

#[cfg(feature = "fault-injection")]
pub mod fault;
pub(crate) mod libssh2;
pub(crate) mod local;
pub(crate) mod parsub;
pub(crate) mod ssh;

use std::sync::Arc;
use std::time::SystemTime;

use crossbeam_channel::Sender;

use crate::host::{Host, Target};
use crate::plan::LabelId;
use crate::task::output::Captured;
use crate::task::Action;

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
}

/// How a process ended.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Exit {
    pub(crate) code: Option<i32>,
    pub(crate) signal: Option<i32>,
}

impl Exit {
    pub(crate) const OK: Exit = Exit {
        code: Some(0),
        signal: None,
    };
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

/// A signal name from an SSH exit-signal message (without `SIG`) as a number.
pub(crate) fn signal_number(name: &str) -> i32 {
    match name.trim_start_matches("SIG") {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "ABRT" => libc::SIGABRT,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "SEGV" => libc::SIGSEGV,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        _ => -1,
    }
}

/// Which transport serves a host.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Local,
    Ssh,
    #[cfg(feature = "fault-injection")]
    Fault,
}

fn kind_of(host: &Host) -> Kind {
    match host.target {
        Target::Local => Kind::Local,
        Target::Ssh => Kind::Ssh,
        #[cfg(feature = "fault-injection")]
        Target::Fault(_) => Kind::Fault,
    }
}

/// The transports of one run, started the first time a host needs them.
pub(crate) struct Transports {
    events: Sender<Event>,
    io_threads: usize,
    local: Option<Sender<Request>>,
    ssh: Option<ssh::Handle>,
    #[cfg(feature = "fault-injection")]
    fault: Option<Sender<Request>>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl Transports {
    pub(crate) fn new(events: Sender<Event>, io_threads: usize) -> Transports {
        Transports {
            events,
            io_threads,
            local: None,
            ssh: None,
            #[cfg(feature = "fault-injection")]
            fault: None,
            handles: Vec::new(),
        }
    }

    /// Sends `req` to the transport serving `host`.
    pub(crate) fn send(&mut self, host: &Host, req: Request) {
        let tx = match kind_of(host) {
            Kind::Local => {
                let events = &self.events;
                let handles = &mut self.handles;
                self.local.get_or_insert_with(|| {
                    let (tx, h) = local::spawn(events.clone());
                    handles.push(h);
                    tx
                })
            }
            #[cfg(feature = "fault-injection")]
            Kind::Fault => {
                let events = &self.events;
                let handles = &mut self.handles;
                self.fault.get_or_insert_with(|| {
                    let (tx, h) = crate::transport::fault::spawn(events.clone());
                    handles.push(h);
                    tx
                })
            }
            Kind::Ssh => {
                if self.ssh.is_none() {
                    match ssh::spawn(self.events.clone(), self.io_threads) {
                        Ok((tx, h)) => {
                            self.handles.extend(h);
                            self.ssh = Some(tx);
                        }
                        Err(e) => {
                            log::error!(target: "ssh_parallel", "cannot start the SSH transport: {e}");
                        }
                    }
                }
                match &self.ssh {
                    Some(tx) => {
                        if !tx.send(req) {
                            log::error!(target: "ssh_parallel", "the SSH transport thread has died");
                        }
                    }
                    None => no_ssh_transport(&self.events, req),
                }
                return;
            }
        };
        if tx.send(req).is_err() {
            log::error!(target: "ssh_parallel", "a transport thread has died");
        }
    }

    /// Stops every transport thread and waits for it.
    pub(crate) fn shutdown(self) {
        drop(self.local);
        drop(self.ssh);
        #[cfg(feature = "fault-injection")]
        drop(self.fault);
        for h in self.handles {
            let _ = h.join();
        }
    }
}

/// The SSH transport could not be started: every request fails as it would
/// against an unreachable host, so policies still apply.
fn no_ssh_transport(events: &Sender<Event>, req: Request) {
    let msg = "the SSH transport could not be started (see the log)".to_owned();
    let ev = match req {
        Request::Connect { label, conn, .. } => Event::ConnectFailed {
            label,
            conn,
            error: TransportError::Connect(msg),
        },
        Request::Disconnect { label, conn } => Event::Closed { label, conn },
        Request::Run(job) => Event::Finished {
            label: job.label,
            token: job.token,
            outcome: Outcome::new(Err(TransportError::Connect(msg)), SystemTime::now()),
        },
        Request::Cancel { .. } => return,
    };
    let _ = events.send(ev);
}
