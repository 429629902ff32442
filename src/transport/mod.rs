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

pub(crate) mod exit;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub(crate) mod libssh2;
pub(crate) mod local;
pub(crate) mod parsub;
pub(crate) mod protocol;
pub(crate) mod ssh;

use crossbeam_channel::Sender;

use std::time::SystemTime;

use crate::host::{Host, Target};

pub(crate) use exit::Exit;
pub(crate) use protocol::{ConnId, Event, Job, Outcome, Request, Token, TransportError};

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
