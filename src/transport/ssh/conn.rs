//! One connection of one label: `Conn`, its `Phase`, the step dispatch that
//! runs a phase until libssh2 would block, and the connection's fate (up,
//! failed, lost, torn down, idle and handed its next job).
//!
//! Invariant: the loop only ever steps phases, and a step returns only once
//! the phase waits on its socket (right after a libssh2 call that read the
//! socket until it would block), a deadline, a helper thread or the next
//! request. Every job given to a connection is answered exactly once, by
//! `Finished`, whatever becomes of the connection.
//!
//! May use: its sibling seams (`connect`, `auth`, `channel`, `task`, `lend`,
//! `close`, `keepalive`, `jump`, `stream`), `event_loop` (`Cx`), `transport`
//! (protocol, `libssh2`), `task` (`Action`), `host`, `plan`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mio::Registry;
use parking_lot::Mutex;
use ssh2::Session;

use super::auth::Auth;
use super::event_loop::Cx;
use super::jump::JumpState;
use super::keepalive::Keepalive;
use super::stream::Stream;
use super::task::Task;
use super::{fail, finish};
use crate::host::Host;
use crate::plan::LabelId;
use crate::task::Action;
use crate::transport::exit::Exit;
use crate::transport::protocol::{ConnId, Event, Job, Outcome, Token, TransportError};

/// A command as the host's OpenSSH configuration shapes it: `SetEnv`
/// variables go before the command's own (which, sent later, win), and
/// `RequestTTY force` asks for a pty.
fn with_config_env(host: &Host, job: &mut Job) {
    let s = &host.ssh;
    if s.set_env.is_empty() && !s.force_tty {
        return;
    }
    if let Action::Command(c) = &*job.action {
        let mut c = c.clone();
        c.env.splice(0..0, s.set_env.iter().cloned());
        c.pty |= s.force_tty;
        job.action = Arc::new(Action::Command(c));
    }
}

/// A busy session that has had no event for this long is stepped anyway.
/// Every wait is meant to follow a read that drained the socket, so that the
/// next byte brings a new edge; this only bounds the cost of a wait that
/// libssh2 might end without one. Such input could only have been left by
/// a step, so the interval starts again at every step triggered by an event
/// and doubles after each safety step, up to [`SAFETY_TICK_MAX`].
const SAFETY_TICK: Duration = Duration::from_secs(2);
const SAFETY_TICK_MAX: Duration = Duration::from_secs(64);
/// The safety step of a session in the middle of an exchange (a channel
/// being opened, set up or closed, a transfer): frequent, as these phases are
/// short. Measured: after a cancelled SCP download from OpenSSH, the next
/// channel open could wait for input without an edge for over a minute.
const EXCHANGE_TICK: Duration = Duration::from_millis(100);

/// Where a connection is in its life.
pub(super) enum Phase {
    /// Waiting for the resolver thread (its answer carries `Conn::gen`).
    Resolving,
    /// Behind a jump host: waiting for the loop to attach a tunnel of the
    /// jump session (asked for with `News::NeedTunnel`); no deadline (the
    /// jump session's own bound the wait).
    Tunnel,
    /// TCP connect to `addrs[next - 1]` in progress (or about to try
    /// `addrs[next]`); `errors` has one entry per address that failed.
    Connecting {
        addrs: Vec<SocketAddr>,
        next: usize,
        errors: Vec<String>,
    },
    /// `sess` exists; the SSH handshake (then the host-key check) runs.
    Handshake,
    /// Authenticating; `deadline` is the auth deadline.
    Auth(Box<Auth>),
    /// Authenticated, no task: `pending` is empty (a job arriving here
    /// starts at once), and no deadline is set.
    Idle,
    /// A task has the session (and, once open, its channel).
    Running(Box<Task>),
    /// A parsub has the session (in blocking mode) on its own thread. If it is
    /// abandoned, the socket goes into `slot` so that its descriptor stays
    /// valid (though shut down) until the parsub lets go of the session.
    /// The loop makes no libssh2 call on the session meanwhile.
    Lent {
        token: Token,
        slot: Arc<Mutex<Option<Stream>>>,
    },
    /// A cancelled task's command is being stopped and its channel closed
    /// (see [`Cancel`](super::kill::Cancel)); `deadline` bounds it.
    Cancelling(Box<super::kill::Cancel>),
    /// The session was abandoned (no socket, no session); the next `Run`
    /// reconnects.
    Broken,
    /// Sending the disconnect message; `deadline` bounds it.
    Disconnecting,
    /// To be removed at the end of the turn; nothing is left to answer.
    Done,
}

/// What a step of the state machine asks for next.
pub(super) enum Flow {
    /// The phase changed: step again.
    Again,
    /// Wait for the socket (or a deadline).
    Wait,
    /// Authenticated.
    Up,
    /// The running task's channel ended with this exit.
    TaskDone(Exit),
    /// The session is free for the next job.
    Free,
}

/// How a running task failed.
pub(super) enum TaskFail {
    /// The session is unusable.
    Lost(String),
    /// This task failed but the session is fine (a local file, a refused pty).
    Task(TransportError),
}

/// A channel opened ahead of the next task. RFC 4254 makes a command cost
/// two round trips on a new channel (open, then exec, which must name the
/// server's channel number); opening the next one while the current exec is
/// in flight brings a queue of commands down to one round trip each.
pub(super) enum Spare {
    None,
    /// Its `CHANNEL_OPEN` is in flight. libssh2 keeps one open in progress per
    /// session, so whoever calls `channel_session` next finishes this one.
    Opening,
    /// Open, with its raw handle taken while it was the newest channel.
    Ready(ssh2::Channel, Option<crate::transport::libssh2::RawChannel>),
    /// The server refused a second channel (`MaxSessions`): no more spares on
    /// this connection.
    Off,
}

/// When a busy connection gets stepped without an event (the safety step).
pub(super) struct Safety {
    /// When it was last stepped.
    pub(super) stepped: Instant,
    /// How long after `stepped` the next safety step is due while a command
    /// only waits: [`SAFETY_TICK`] after a step, doubled after each safety
    /// step up to [`SAFETY_TICK_MAX`].
    pub(super) every: Duration,
}

/// One connection of one label.
pub(super) struct Conn {
    /// Its key in the loop, and its poll token.
    pub(super) key: usize,
    pub(super) label: LabelId,
    /// The scheduler's name for this connection.
    pub(super) id: ConnId,
    /// The label's name, for logs.
    pub(super) name: Arc<str>,
    pub(super) host: Arc<Host>,
    pub(super) port: u16,
    pub(super) user: String,
    pub(super) phase: Phase,
    /// The byte stream (TCP, a tunnel's socketpair, a proxy command's),
    /// registered under `key`; `None` before it exists and after teardown.
    /// It is shut down before `sess` is freed, so that libssh2 cannot block
    /// on it in `Drop`.
    pub(super) stream: Option<Stream>,
    /// The libssh2 session on `stream`'s descriptor, from the handshake on;
    /// non-blocking except while `Lent`.
    pub(super) sess: Option<Session>,
    /// The deadline of the phase (connect, auth, cancel, disconnect), if it
    /// has one.
    pub(super) deadline: Option<Instant>,
    /// Jobs that arrived while the connection was busy or reconnecting,
    /// answered in order; emptied whenever the connection ends.
    pub(super) pending: VecDeque<Job>,
    /// Connection attempt number (stale resolver answers are dropped).
    pub(super) gen: u64,
    /// Dead-peer detection.
    pub(super) keepalive: Keepalive,
    /// This connection's entry in the loop's timer set (the loop keeps
    /// both in step).
    pub(super) timer: Option<Instant>,
    pub(super) safety: Safety,
    /// The channel opened ahead for the next task. Never anything but
    /// `None` or `Off` while `Lent` (a lent session holds nothing of ours).
    pub(super) spare: Spare,
    /// A `Disconnect` came while a cancelled command was still being stopped
    /// (`Cancelling`): the close waits for the signals and the killer, or the
    /// command would go on running on the host.
    pub(super) close_when_free: bool,
    /// `Some` for a jump session (it serves tunnels, no label: it never
    /// sends the scheduler an event); `None` for a label's connection.
    pub(super) jump: Option<Box<JumpState>>,
    /// The jump session's key and the tunnel's id carrying `stream`, while
    /// the connection is behind a jump host and has a tunnel.
    pub(super) tunnel: Option<(usize, usize)>,
    /// Finished SFTP transfers' channels whose close is sent and only the
    /// server's confirmation is missing (at most `MAX_UNCONFIRMED`): freed
    /// by the steps of the session's next tasks, whose reads bring it (see
    /// `close_sftp`); empty while nothing is, and after teardown.
    pub(super) unconfirmed: Vec<super::sftp::SftpClose>,
}

impl Conn {
    /// A connection not yet started.
    pub(super) fn new(key: usize, label: LabelId, id: ConnId, name: Arc<str>, host: Arc<Host>) -> Conn {
        Conn {
            key,
            label,
            id,
            name,
            port: host.port.unwrap_or(22),
            user: host.effective_user(),
            host,
            phase: Phase::Idle,
            stream: None,
            sess: None,
            deadline: None,
            pending: VecDeque::new(),
            gen: 0,
            keepalive: Keepalive::default(),
            timer: None,
            safety: Safety {
                stepped: Instant::now(),
                every: SAFETY_TICK,
            },
            spare: Spare::None,
            close_when_free: false,
            jump: None,
            tunnel: None,
            unconfirmed: Vec::new(),
        }
    }

    /// `user@host:port`, and how it is reached (` via bastion`), for messages.
    pub(super) fn target(&self) -> String {
        format!(
            "{}@{}:{}{}",
            self.user,
            self.host.hostname,
            self.port,
            self.host.via_text()
        )
    }

    /// Whether the connection waits on its socket (and so gets the safety step).
    pub(super) fn is_busy(&self) -> bool {
        match self.phase {
            Phase::Idle => matches!(self.spare, Spare::Opening) || self.jump.as_ref().is_some_and(|j| j.busy()),
            Phase::Broken | Phase::Done | Phase::Resolving | Phase::Tunnel | Phase::Lent { .. } => false,
            _ => true,
        }
    }

    /// When the loop must wake for this connection without an event: its
    /// deadline, its next keepalive, or the safety step of a busy session.
    pub(super) fn wake_at(&self) -> Option<Instant> {
        let safety = self.is_busy().then(|| self.safety.stepped + self.safety_interval());
        let retry = match &self.phase {
            Phase::Running(t) => t.wake_at(),
            Phase::Idle => self.jump.as_ref().and_then(|j| j.wake_at()),
            _ => None,
        };
        [self.deadline, self.keepalive.next, safety, retry]
            .into_iter()
            .flatten()
            .min()
    }

    /// How long after its last step a busy session gets a safety step: the
    /// backing-off `safety.every` while a command only waits for output,
    /// [`EXCHANGE_TICK`] in the middle of an exchange.
    pub(super) fn safety_interval(&self) -> Duration {
        match &self.phase {
            Phase::Running(t) if t.only_draining() => self.safety.every,
            Phase::Running(_) | Phase::Cancelling(_) => EXCHANGE_TICK,
            Phase::Idle if self.jump.is_some() => EXCHANGE_TICK,
            _ => self.safety.every,
        }
    }

    /// Its timer fired: a deadline passed, a refused channel is due to be
    /// tried again, or a busy session had no event for `safety.every` (a due
    /// keepalive is sent when the turn settles).
    pub(super) fn timer_due(&mut self, cx: &Cx<'_>, now: Instant) {
        if self.deadline.is_some_and(|d| d <= now) {
            self.deadline_passed(cx);
        }
        if self.jump.is_some() && matches!(self.phase, Phase::Idle) {
            // An open's deadline, the end of a linger, or a safety step.
            self.step(cx);
            return;
        }
        let retry = matches!(&self.phase, Phase::Running(t) if t.wake_at().is_some_and(|at| at <= now));
        if retry {
            self.step(cx);
        } else if self.is_busy() && self.safety.stepped + self.safety_interval() <= now {
            let next = (self.safety.every * 2).min(SAFETY_TICK_MAX);
            self.step(cx);
            self.safety.every = next;
        }
    }

    /// Runs the state machine until it would block.
    pub(super) fn step(&mut self, cx: &Cx<'_>) {
        self.safety.stepped = Instant::now();
        self.safety.every = SAFETY_TICK;
        // The spare first: its packet may be half sent, and libssh2 sends
        // nothing else until it is finished.
        if matches!(self.spare, Spare::Opening) {
            if let Err(m) = self.step_spare() {
                match self.phase {
                    Phase::Idle | Phase::Running(_) => {
                        self.lose(cx, m);
                        return;
                    }
                    Phase::Cancelling(_) => self.broken(cx, m),
                    _ => {}
                }
            }
            if matches!(self.phase, Phase::Idle) && !matches!(self.spare, Spare::Opening) {
                // A parsub may have been waiting for the spare's open to end.
                self.become_idle(cx);
            }
        }
        self.step_unconfirmed();
        loop {
            let r = match self.phase {
                Phase::Idle if self.jump.is_some() => {
                    self.step_jump(cx);
                    if matches!(self.phase, Phase::Disconnecting) {
                        continue;
                    }
                    return;
                }
                Phase::Resolving | Phase::Tunnel | Phase::Idle | Phase::Broken | Phase::Done | Phase::Lent { .. } => {
                    return
                }
                Phase::Connecting { .. } => self.step_tcp(cx),
                Phase::Handshake => self.step_handshake(),
                Phase::Auth(_) => self.step_auth(cx.keys),
                Phase::Running(_) => match self.step_task() {
                    Ok(f) => Ok(f),
                    Err(TaskFail::Lost(m)) => {
                        self.lose(cx, m);
                        return;
                    }
                    Err(TaskFail::Task(e)) => {
                        self.abort_task(cx, Err(e));
                        Ok(Flow::Again)
                    }
                },
                Phase::Cancelling(_) => match self.step_cancel() {
                    Ok(f) => Ok(f),
                    Err(m) => {
                        self.broken(cx, m);
                        Ok(Flow::Again)
                    }
                },
                Phase::Disconnecting => Ok(self.step_disconnect(cx)),
            };
            match r {
                Ok(Flow::Again) => continue,
                Ok(Flow::Wait) => {
                    self.prefetch();
                    return;
                }
                Ok(Flow::Up) => self.up(cx),
                Ok(Flow::Free) if self.close_when_free => {
                    self.phase = Phase::Idle;
                    self.disconnect(cx);
                }
                Ok(Flow::Free) => self.become_idle(cx),
                Ok(Flow::TaskDone(exit)) => self.task_done(cx, exit),
                Err(m) => {
                    self.connect_failed(cx, m);
                    return;
                }
            }
        }
    }

    /// Authentication succeeded.
    pub(super) fn up(&mut self, cx: &Cx<'_>) {
        self.deadline = None;
        self.phase = Phase::Idle;
        if let Some(sess) = &self.sess {
            // libssh2 only throttles keepalives to this interval; when to send
            // them is decided by `keepalive`, so the shortest one will do.
            sess.set_keepalive(true, 1);
        }
        self.heard_from(Instant::now());
        log::debug!(target: "ssh_parallel", "[{}] ssh session up ({})", self.name, self.target());
        if self.jump.is_some() {
            self.step_jump(cx);
        } else if self.pending.is_empty() {
            let _ = cx.events.send(Event::Connected {
                label: self.label,
                conn: self.id,
            });
        } else {
            self.become_idle(cx);
        }
    }

    /// Connecting failed: the scheduler learns it as `ConnectFailed`, or, when
    /// this was a transparent reconnection, through the waiting tasks.
    pub(super) fn connect_failed(&mut self, cx: &Cx<'_>, msg: String) {
        log::debug!(target: "ssh_parallel", "[{}] {msg}", self.name);
        let msg = match self.stream.as_ref().and_then(Stream::command_stderr) {
            Some(err) => format!("{msg} (ProxyCommand stderr: {err})"),
            None => msg,
        };
        self.jump_down(cx, &msg);
        self.teardown(cx.registry, Phase::Done);
        if self.jump.is_some() {
            return;
        }
        if self.pending.is_empty() {
            let _ = cx.events.send(Event::ConnectFailed {
                label: self.label,
                conn: self.id,
                error: TransportError::Connect(msg),
            });
        } else {
            for job in self.pending.drain(..) {
                fail(cx.events, job.label, job.token, TransportError::Connect(msg.clone()));
            }
        }
    }

    /// The session died: a running task learns it as `ConnectionLost`, an idle
    /// connection is reported `Lost`.
    pub(super) fn lose(&mut self, cx: &Cx<'_>, msg: String) {
        log::debug!(target: "ssh_parallel", "[{}] connection lost: {msg}", self.name);
        let old = std::mem::replace(&mut self.phase, Phase::Done);
        if let Some(s) = &self.stream {
            s.shutdown();
        }
        self.jump_down(cx, &msg);
        let mut answered = self.jump.is_some();
        if let Phase::Running(t) = old {
            answered = true;
            t.finish(cx.events, Err(TransportError::ConnectionLost(msg.clone())));
        }
        for job in self.pending.drain(..) {
            answered = true;
            fail(
                cx.events,
                job.label,
                job.token,
                TransportError::ConnectionLost(msg.clone()),
            );
        }
        self.teardown(cx.registry, Phase::Done);
        if !answered {
            let _ = cx.events.send(Event::Lost {
                label: self.label,
                conn: self.id,
                error: TransportError::ConnectionLost(msg),
            });
        }
    }
    /// Shuts the socket down (so libssh2 cannot block or wait on it), then
    /// frees channels, the session and the socket.
    pub(super) fn teardown(&mut self, registry: &Registry, next: Phase) {
        if let Some(s) = &self.stream {
            s.shutdown();
        }
        drop(std::mem::replace(&mut self.phase, next));
        self.spare = Spare::None;
        if let Some(j) = &mut self.jump {
            j.clear(registry);
        }
        self.tunnel = None;
        self.unconfirmed.clear();
        self.sess = None;
        if let Some(mut s) = self.stream.take() {
            let _ = registry.deregister(&mut s);
        }
    }

    /// A `Run` for this connection.
    pub(super) fn run(&mut self, cx: &Cx<'_>, job: Job) {
        self.pending.push_back(job);
        match self.phase {
            Phase::Idle => self.become_idle(cx),
            Phase::Broken => self.start_connect(cx),
            _ => {}
        }
    }

    /// The session is free: start the next waiting job, if any.
    pub(super) fn become_idle(&mut self, cx: &Cx<'_>) {
        self.phase = Phase::Idle;
        self.deadline = None;
        while matches!(self.phase, Phase::Idle) {
            if matches!(self.spare, Spare::Opening)
                && self
                    .pending
                    .front()
                    .is_some_and(|j| matches!(*j.action, Action::Parsub(_)))
            {
                // The parsub's own opens (a channel, sftp, a tunnel) would
                // finish the spare's instead of starting theirs.
                return;
            }
            let Some(job) = self.pending.pop_front() else { return };
            self.start_job(cx, job);
        }
    }

    /// Starts `job` on the idle session: a task on a channel, a loan to a
    /// parsub, or (a `Connect`) an answer at once.
    pub(super) fn start_job(&mut self, cx: &Cx<'_>, mut job: Job) {
        let started = SystemTime::now();
        with_config_env(&self.host, &mut job);
        match &*job.action {
            Action::Connect(_) => finish(cx.events, job.label, job.token, Outcome::new(Ok(Exit::OK), started)),
            Action::Parsub(_) => self.lend(cx, job, started),
            _ => match Task::new(&job, cx, self.key, started) {
                Ok(mut t) => {
                    t.forward_agent(&self.host, cx, self.key, &self.name);
                    self.phase = Phase::Running(Box::new(t));
                }
                Err(e) => finish(cx.events, job.label, job.token, Outcome::new(Err(e), started)),
            },
        }
    }
}
