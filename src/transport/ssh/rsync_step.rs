//! An rsync task: the local rsync, started through the [`rsync`](super::rsync)
//! bridge, says what to run remotely; that runs on a channel of the label's
//! session, bytes are pumped both ways, the channel is closed, and then the
//! local rsync's exit settles the result.
//!
//! Invariant: the local rsync never outlives the task (dropping the bridge
//! kills its process group), and its exit is awaited without blocking: a
//! thread waits for it and kicks the connection.
//!
//! May use: `rsync` (the bridge), `channel`, `conn` (`Flow`, `TaskFail`,
//! `Spare`), `event_loop` (`Cx`, `AUX`), `task` (sinks, `Transfer`).

use std::sync::Arc;
use std::time::SystemTime;

use mio::Interest;
use ssh2::Session;

use super::channel::{close_channel, exec, TaskChannel};
use super::conn::{Flow, Spare, TaskFail};
use super::event_loop::{Cx, AUX};
use super::rsync::{Bridge, Pump, Stage};
use crate::task::output::{Output, Sink, Stream};
use crate::task::{Action, RsyncGet, RsyncPut, Transfer};
use crate::transport::exit::Exit;
use crate::transport::protocol::{Job, Outcome, TransportError};

/// An rsync transfer bridged over the session.
pub(super) struct RsyncRun {
    /// The job's action, always an rsync transfer (for the result's messages).
    action: Arc<Action>,
    bridge: Bridge,
    /// rsync's own output (say, `--stats`); both sides' stderr go to `err`.
    out: Sink,
    err: Sink,
}

impl RsyncRun {
    /// Starts the local rsync for `t` (`put`: sources local, target remote);
    /// its bridge socket is polled under the connection's auxiliary token,
    /// and its exit kicks the connection `key`.
    pub(super) fn start(
        job: &Job,
        t: &Transfer,
        put: bool,
        cx: &Cx<'_>,
        key: usize,
    ) -> Result<RsyncRun, TransportError> {
        let (kicks, waker) = (cx.kicks.clone(), cx.waker.clone());
        let mut bridge = Bridge::start(t, put, move || {
            let _ = kicks.send(key);
            let _ = waker.wake();
        })
        .map_err(TransportError::Transfer)?;
        cx.registry
            .register(
                &mut bridge.sock,
                mio::Token(key | AUX),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| TransportError::local(format!("cannot poll the rsync bridge: {e}")))?;
        let keep = Output::capture();
        let out = Sink::open(job.name.clone(), Stream::Stdout, &keep).map_err(TransportError::local)?;
        let err = Sink::open(job.name.clone(), Stream::Stderr, &keep).map_err(TransportError::local)?;
        Ok(RsyncRun {
            action: job.action.clone(),
            bridge,
            out,
            err,
        })
    }

    /// Whether its channel open may be in flight.
    pub(super) fn opening(&self) -> bool {
        self.bridge.stage == Stage::Open
    }

    /// Reads the remote command from the bridge, runs it on a channel, pumps
    /// both ways, closes, then waits for the local rsync.
    pub(super) fn step(&mut self, sess: &Session, spare: &mut Spare, tc: &mut TaskChannel) -> Result<Flow, TaskFail> {
        let b = &mut self.bridge;
        loop {
            match b.stage {
                Stage::Command => match b.read_command() {
                    Ok(true) => b.stage = Stage::Open,
                    Ok(false) if b.poll_local() => b.stage = Stage::Local,
                    Ok(false) => return Ok(Flow::Wait),
                    // The local rsync ended early; its exit says why.
                    Err(_) => b.stage = Stage::Local,
                },
                Stage::Open => {
                    if !tc.open(sess, spare)? {
                        return Ok(Flow::Wait);
                    }
                    b.stage = Stage::Exec;
                }
                Stage::Exec => {
                    let cmd = String::from_utf8_lossy(&b.command).into_owned();
                    if !exec(tc.get(), &cmd, "the remote rsync", TransportError::Transfer)? {
                        return Ok(Flow::Wait);
                    }
                    b.stage = Stage::Pump;
                }
                Stage::Pump => match b.pump(sess, tc.get(), &mut self.err) {
                    Ok(true) => b.stage = Stage::Close,
                    Ok(false) => return Ok(Flow::Wait),
                    Err(Pump::Lost(m)) => return Err(TaskFail::Lost(m)),
                    Err(Pump::Local(m)) => return Err(TaskFail::Task(TransportError::local(m))),
                },
                Stage::Close => match close_channel(tc.get())? {
                    Flow::TaskDone(exit) => {
                        b.remote_exit = Some(exit);
                        tc.channel = None;
                        b.stage = Stage::Local;
                    }
                    _ => return Ok(Flow::Wait),
                },
                Stage::Local => {
                    return Ok(if b.poll_local() {
                        Flow::TaskDone(Exit::OK)
                    } else {
                        Flow::Wait
                    })
                }
            }
        }
    }

    /// What the scheduler learns: both sides' verdict, with what rsync
    /// printed and the remote stderr.
    pub(super) fn outcome(mut self, result: Result<Exit, TransportError>, started: SystemTime) -> Outcome {
        let result = match result {
            Ok(_) => match &*self.action {
                Action::RsyncPut(RsyncPut(t)) | Action::RsyncGet(RsyncGet(t)) => self
                    .bridge
                    .result(t)
                    .map(|()| Exit::OK)
                    .map_err(TransportError::Transfer),
                _ => Err(TransportError::local("not an rsync transfer (transport bug)")),
            },
            Err(e) => Err(e),
        };
        if let Some(local) = &self.bridge.local {
            let _ = self.out.write(&local.stdout);
            let _ = self.err.write(&local.stderr);
        }
        let stdout = self.out.finish().unwrap_or_default();
        let stderr = self.err.finish().unwrap_or_default();
        Outcome {
            result,
            stdout,
            stderr,
            started,
        }
    }
}
