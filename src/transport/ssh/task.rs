//! The task a connection runs on a channel: what every kind shares (its
//! token, its channel, whether to open the next one ahead) and an enum of
//! the kinds, each with its own state: a command ([`exec`](super::exec)), an
//! SCP transfer ([`scp`](super::scp)), an SFTP transfer
//! ([`sftp`](super::sftp)), an rsync bridge
//! ([`rsync_step`](super::rsync_step)).
//!
//! Invariant: a task is answered exactly once, by [`Task::finish`], which
//! consumes it; whoever takes a task out of `Phase::Running` must finish it.
//!
//! May use: `agent_forward`, `conn`, `channel`, `kill`, `exec`, `scp`, `sftp`, `rsync_step`, `event_loop`
//! (`Cx`), `transport` (protocol), `task` (actions).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crossbeam_channel::Sender;

use super::agent_forward::{agent_socket_for, AgentForward};
use super::channel::TaskChannel;
use super::conn::{Conn, Flow, Phase, TaskFail};
use super::event_loop::Cx;
use super::exec::CommandRun;
use super::finish;
use super::kill::Cancel;
use super::rsync_step::RsyncRun;
use super::scp::ScpRun;
use super::sftp::{SftpClose, SftpRun};
use super::CLOSE_TIMEOUT;
use crate::host::Host;
use crate::plan::LabelId;
use crate::task::{Action, RsyncGet, RsyncPut, ScpGet, ScpPut, TransferProtocol};
use crate::transport::exit::Exit;
use crate::transport::protocol::{Event, Job, Token, TransportError};

/// A task running on a session.
pub(super) struct Task {
    /// Who the answer goes to: the job's label and token.
    label: LabelId,
    token: Token,
    /// When the job was taken up (the report's start time).
    started: SystemTime,
    /// Open the next task's channel ahead (from [`Job::prefetch`]).
    pub(super) prefetch: bool,
    /// Its channel; every kind opens one (an rsync only once the local rsync
    /// has said what to run).
    pub(super) ch: TaskChannel,
    kind: TaskKind,
}

/// What kind of task, with the state only that kind has.
enum TaskKind {
    /// `Command`: env, pty, exec, stdin, output.
    Command(Box<CommandRun>),
    /// `ScpPut` / `ScpGet`: the SCP protocol with the remote `scp`.
    Scp(Box<ScpRun>),
    /// `ScpPut` / `ScpGet` over SFTP: the host's sftp subsystem.
    Sftp(Box<SftpRun>),
    /// `RsyncPut` / `RsyncGet`: the local rsync bridged to the remote one.
    Rsync(Box<RsyncRun>),
}

impl Task {
    /// Prepares `job`'s local side (sinks, stdin, sources or target, the
    /// local rsync); its errors are the task's own.
    pub(super) fn new(job: &Job, cx: &Cx<'_>, key: usize, started: SystemTime) -> Result<Task, TransportError> {
        let kind = match &*job.action {
            Action::Command(c) => TaskKind::Command(Box::new(CommandRun::new(job, c)?)),
            Action::ScpPut(ScpPut(t)) if job.protocol == TransferProtocol::Sftp => {
                TaskKind::Sftp(Box::new(SftpRun::put(t)?))
            }
            Action::ScpGet(ScpGet(t)) if job.protocol == TransferProtocol::Sftp => {
                TaskKind::Sftp(Box::new(SftpRun::get(t)?))
            }
            Action::ScpPut(ScpPut(t)) => TaskKind::Scp(Box::new(ScpRun::put(t)?)),
            Action::ScpGet(ScpGet(t)) => TaskKind::Scp(Box::new(ScpRun::get(t)?)),
            Action::RsyncPut(RsyncPut(t)) => TaskKind::Rsync(Box::new(RsyncRun::start(job, t, true, cx, key)?)),
            Action::RsyncGet(RsyncGet(t)) => TaskKind::Rsync(Box::new(RsyncRun::start(job, t, false, cx, key)?)),
            other => {
                return Err(TransportError::local(format!(
                    "{} is not a remote task (scheduler bug)",
                    other.describe()
                )))
            }
        };
        Ok(Task {
            label: job.label,
            token: job.token,
            started,
            prefetch: job.prefetch,
            ch: TaskChannel::default(),
            kind,
        })
    }

    /// Forwards the agent to a command's session when `host` asks for it
    /// (see [`agent_socket_for`]); the other kinds never forward it.
    pub(super) fn forward_agent(&mut self, host: &Host, cx: &Cx<'_>, key: usize, name: &Arc<str>) {
        let TaskKind::Command(c) = &mut self.kind else { return };
        if host.forward_agent != Some(true) {
            return;
        }
        let Some(socket) = agent_socket_for(host) else {
            log::warn!(target: "ssh_parallel", "[{name}] agent forwarding is on but there is no agent (SSH_AUTH_SOCK is not set)");
            return;
        };
        match AgentForward::new(socket, name.clone(), cx.registry, key) {
            Ok(agent) => c.agent = Some(agent),
            Err(e) => log::warn!(target: "ssh_parallel", "[{name}] agent forwarding off: cannot poll for it: {e}"),
        }
    }

    /// Whether this runs as `token`.
    pub(super) fn is(&self, token: Token) -> bool {
        self.token == token
    }

    /// Whether a `channel_session` call may be in flight (it must be finished
    /// before anything else is done on the session).
    pub(super) fn opening(&self) -> bool {
        match &self.kind {
            TaskKind::Command(c) => c.opening(),
            TaskKind::Scp(s) => s.opening(),
            TaskKind::Sftp(s) => s.opening(),
            TaskKind::Rsync(r) => r.opening(),
        }
    }

    /// A command that only waits for its output: nothing half sent, so
    /// keepalives may go out, and its safety step backs off.
    pub(super) fn only_draining(&self) -> bool {
        matches!(&self.kind, TaskKind::Command(c) if c.only_draining())
    }

    /// When the task must be stepped even without an event: a refused
    /// channel's retry, or the command's idle deadline.
    pub(super) fn wake_at(&self) -> Option<Instant> {
        let idle = match &self.kind {
            TaskKind::Command(c) => c.idle_deadline(),
            _ => None,
        };
        self.ch.open.retry_at.into_iter().chain(idle).min()
    }

    /// Whether a command runs on the channel, so a cancel must signal it.
    fn command_started(&self) -> bool {
        matches!(&self.kind, TaskKind::Command(c) if c.started())
    }

    /// What an SFTP transfer leaves on the session if it is answered now
    /// (see [`SftpClose`]); `None` for the other kinds.
    fn take_sftp_close(&mut self) -> Option<SftpClose> {
        match &mut self.kind {
            TaskKind::Sftp(s) => s.take_close(),
            _ => None,
        }
    }

    /// Answers the scheduler with `result` and what the task kept.
    pub(super) fn finish(self, events: &Sender<Event>, result: Result<Exit, TransportError>) {
        let outcome = match self.kind {
            TaskKind::Command(c) => c.outcome(result, self.started),
            TaskKind::Scp(s) => s.outcome(result, self.started),
            TaskKind::Sftp(s) => s.outcome(result, self.started),
            TaskKind::Rsync(r) => r.outcome(result, self.started),
        };
        finish(events, self.label, self.token, outcome);
    }
}

impl Conn {
    /// Moves the running task on until it would block.
    pub(super) fn step_task(&mut self) -> Result<Flow, TaskFail> {
        let sess = self.sess.as_ref().expect("session while running");
        let Phase::Running(t) = &mut self.phase else {
            return Ok(Flow::Again);
        };
        let spare = &mut self.spare;
        let Task { ch, kind, .. } = &mut **t;
        match kind {
            TaskKind::Command(c) => c.step(sess, spare, ch),
            TaskKind::Scp(s) => s.step(sess, spare, ch),
            TaskKind::Sftp(s) => s.step(sess, spare, ch),
            TaskKind::Rsync(r) => r.step(sess, spare, ch),
        }
    }

    /// The running task's channel ended with `exit`: answers it; what an
    /// SFTP transfer left on the session goes to `close_sftp`.
    pub(super) fn task_done(&mut self, cx: &Cx<'_>, exit: Exit) {
        if let Phase::Running(mut t) = std::mem::replace(&mut self.phase, Phase::Idle) {
            let rest = t.take_sftp_close();
            t.finish(cx.events, Ok(exit));
            if let Some(rest) = rest {
                self.close_sftp(cx, rest);
                return;
            }
        }
        self.become_idle(cx);
    }

    /// Answers the running task with `result` and closes its channel (for
    /// an SFTP transfer, what it left on the session).
    pub(super) fn abort_task(&mut self, cx: &Cx<'_>, result: Result<Exit, TransportError>) {
        let Phase::Running(mut t) = std::mem::replace(&mut self.phase, Phase::Idle) else {
            return;
        };
        if let Some(rest) = t.take_sftp_close() {
            t.finish(cx.events, result);
            self.close_sftp(cx, rest);
            return;
        }
        let channel = t.ch.channel.take();
        let raw = t.ch.raw.take();
        let opening = t.opening();
        let command = t.command_started();
        t.finish(cx.events, result);
        if channel.is_none() && !opening {
            self.become_idle(cx);
            return;
        }
        let sess = self.sess.as_ref().expect("session while running");
        let cancel = Cancel::new(sess, channel, raw, command);
        self.deadline = Some(Instant::now() + CLOSE_TIMEOUT + cancel.extra_time());
        self.phase = Phase::Cancelling(Box::new(cancel));
    }
}
