//! The SSH transport: a fixed number of I/O threads, each a [`mio::Poll`]
//! driving many non-blocking libssh2 sessions, each an explicit
//! per-connection state machine.
//!
//! Life of a connection: `Resolving` (names only, on a short-lived helper
//! thread) -> `Connecting` (non-blocking TCP, every resolved address in turn)
//! -> `Handshake` -> host-key check -> `Auth` (keys, agent, password,
//! keyboard-interactive) -> `Idle`. A `Run` turns `Idle` into `Running` (a
//! command, an SCP transfer or an rsync bridge on one channel) and back, or
//! into `Lent` (a parsub has the session). A `Cancel` answers the task at once
//! and closes its channel (`Cancelling`; for an SFTP transfer, its handles,
//! the subsystem and the subsystem's channel, closed on both sides before
//! the next task; a finished transfer's channel is freed once the server
//! confirms its close, beside the next task); a channel that cannot be closed
//! within [`CLOSE_TIMEOUT`] makes the session `Broken`: it is torn down and
//! re-opened transparently by the next `Run`. `Disconnect` goes through
//! `Disconnecting` (bounded by [`CLOSE_TIMEOUT`]) to `Done`.
//!
//! While a task runs and the label's queue has another channel task next,
//! the next channel is opened ahead (the connection's spare), so that a queue
//! costs one round trip per command instead of two.
//!
//! libssh2 rules followed here (the glue is [`crate::transport::libssh2`]):
//! we keep the `TcpStream` and hand libssh2 only its file descriptor; after a
//! would-block each operation in flight (the task's, the spare's open) is
//! repeated before anything new of its own starts, the spare first (libssh2 sends one packet at a time); the socket is
//! registered edge-triggered for both directions and every state machine runs
//! until it would block right after a read that drained the socket, with a
//! safety step for anything libssh2 might still hold (frequent mid-exchange,
//! backing off while a command only waits); all deadlines are ours (libssh2's
//! timeout does not apply in non-blocking mode); nothing blocks in `Drop`
//! (sockets are shut down before sessions and channels are freed).
//!
//! The tree, each module a seam of the connection's life:
//! - [`event_loop`]: the I/O thread (poll, requests, timer set, settling);
//! - [`conn`]: `Conn`, its `Phase`, its timers (deadline, safety step), the
//!   step dispatch and its fate (up, lost, torn down); [`keepalive`]:
//!   dead-peer detection;
//! - [`connect`] (resolve, TCP, handshake), [`hostkey`] (known_hosts),
//!   [`auth`]; [`stream`] (TCP, tunnel, proxy command), [`jump`] (jump
//!   sessions and their tunnels), [`proxy_command`];
//! - [`channel`]: opening a task's channel (and the spare), exec, close;
//!   [`agent_forward`]: a command's forwarded agent, relayed;
//! - [`task`]: the running task, an enum of [`exec`] (commands), [`scp`]
//!   (put and get), [`sftp`] (put, get, and closing what a transfer leaves
//!   on the session) and [`rsync_step`] (over the [`rsync`] bridge);
//! - [`lend`]: a session lent to a parsub; [`close`]: cancel and disconnect;
//!   [`kill`]: stopping a cancelled command on the host.
//!
//! How a session's byte stream is made is [`stream`]'s: TCP, a tunnel
//! through a jump host ([`jump`]: one shared jump session per distinct jump
//! host, a `direct-tcpip` channel per connection pumped through a
//! socketpair), or a [`proxy_command`].
//!
//! Invariant: every connection lives on one I/O thread (`label % threads`,
//! or for a label behind a jump host the thread its jump host hashes to, so
//! that they share one jump session), and only that thread touches its
//! session, except while it is `Lent`.
//!
//! May use: `transport` (the protocol, `libssh2`, `parsub`), `task` (actions,
//! sinks), `host`, `plan` (`LabelId`), `session` (`Lent`), `process`.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crossbeam_channel::Sender;
use mio::Waker;
use parking_lot::Mutex;

mod agent_forward;
mod auth;
mod channel;
mod close;
mod conn;
mod connect;
mod event_loop;
mod exec;
mod hostkey;
mod jump;
mod jump_conn;
mod jump_pool;
mod keepalive;
mod key_file;
mod kill;
mod lend;
mod proxy_command;
mod rsync;
mod rsync_step;
mod scp;
mod sftp;
mod stream;
mod task;

use crate::plan::LabelId;
use crate::transport::protocol::{Event, Outcome, Request, Token, TransportError};

/// How long closing a channel or disconnecting a session may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The scheduler's end of the SSH transport: per I/O thread, the request
/// channel and the waker of its poll.
pub(crate) struct Handle {
    threads: Vec<(Option<Sender<Request>>, Arc<Waker>)>,
    /// Labels behind a jump host, and the thread they were given (the one
    /// of their jump host, so that they share its session); other labels
    /// go to `label % threads`.
    placed: Mutex<HashMap<LabelId, usize>>,
}

impl Handle {
    /// Sends a request to the thread that owns its label (a cancel, which
    /// names only a token, to every thread) and wakes it; false if a thread
    /// has died.
    pub(crate) fn send(&self, req: Request) -> bool {
        let n = self.threads.len();
        let thread = match &req {
            Request::Connect { label, host, .. } => self.place(*label, host),
            Request::Run(job) => self.place(job.label, &job.host),
            Request::Disconnect { label, .. } => self.placed.lock().get(label).copied().unwrap_or(*label % n),
            Request::Cancel { token } => {
                let mut ok = true;
                for (tx, waker) in &self.threads {
                    ok &= tx
                        .as_ref()
                        .is_some_and(|tx| tx.send(Request::Cancel { token: *token }).is_ok());
                    let _ = waker.wake();
                }
                return ok;
            }
        };
        let (tx, waker) = &self.threads[thread % n];
        let ok = tx.as_ref().is_some_and(|tx| tx.send(req).is_ok());
        let _ = waker.wake();
        ok
    }
}

impl Handle {
    /// The thread serving `label`: its jump host's (all labels behind one
    /// jump host share its session, so they must live on one thread), or
    /// `label % threads`.
    fn place(&self, label: LabelId, host: &crate::host::Host) -> usize {
        let n = self.threads.len();
        let Some(key) = host.jump_key() else { return label % n };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        let thread = (h.finish() % n as u64) as usize;
        self.placed.lock().insert(label, thread);
        thread
    }
}

impl Drop for Handle {
    /// Disconnects the request channels and wakes the threads, which then
    /// close every session (bounded by [`CLOSE_TIMEOUT`]) and exit.
    fn drop(&mut self) {
        for (tx, waker) in &mut self.threads {
            *tx = None;
            let _ = waker.wake();
        }
    }
}

/// Starts `threads` I/O threads (at least one); returns their handle and threads.
pub(crate) fn spawn(events: Sender<Event>, threads: usize) -> io::Result<(Handle, Vec<JoinHandle<()>>)> {
    let mut handle = Handle {
        threads: Vec::new(),
        placed: Mutex::default(),
    };
    let mut joins = Vec::new();
    for i in 0..threads.max(1) {
        // On failure, dropping `handle` stops the threads already started.
        let (tx, waker, join) = event_loop::spawn_one(events.clone(), i)?;
        handle.threads.push((Some(tx), waker));
        joins.push(join);
    }
    Ok((handle, joins))
}

/// Answers a task that did not run to its end with `error`.
fn fail(events: &Sender<Event>, label: LabelId, token: Token, error: TransportError) {
    finish(events, label, token, Outcome::new(Err(error), SystemTime::now()));
}

/// Sends `Finished` for a task.
fn finish(events: &Sender<Event>, label: LabelId, token: Token, outcome: Outcome) {
    let _ = events.send(Event::Finished { label, token, outcome });
}
