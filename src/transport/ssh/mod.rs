//! The SSH transport: one I/O thread running a mio [`Poll`] that drives many
//! non-blocking libssh2 sessions, each an explicit per-connection state machine.
//!
//! Life of a connection: `Resolving` (names only, on a short-lived helper
//! thread) -> `Connecting` (non-blocking TCP, every resolved address in turn)
//! -> `Handshake` -> host-key check -> `Auth` (keys, agent, password,
//! keyboard-interactive) -> `Idle`. A `Run` turns `Idle` into `Running` (channel
//! open, env, pty, exec, stdin, EOF, drain stdout and stderr, close, exit
//! status) and back; `ScpPut` / `ScpGet` run the same way with the remote
//! `scp -t` / `scp -f` on the channel, spoken to in the SCP protocol by [`Scp`]
//! (files and trees, modes and times, data in bounded chunks). A `Cancel`
//! answers the task at once and closes its channel (`Cancelling`); a channel
//! that cannot be closed within [`CLOSE_TIMEOUT`] makes the session `Broken`:
//! it is torn down and re-opened transparently by the next `Run`.
//! `Disconnect` goes through `Disconnecting` (bounded by [`CLOSE_TIMEOUT`])
//! to `Closed`.
//!
//! While a command runs and the label's queue has another channel task next,
//! the next channel is opened ahead (the connection's spare), so that a queue
//! costs one round trip per command instead of two.
//!
//! libssh2 rules followed here (see `ENGINEERING-NOTES.md`): we keep the
//! `TcpStream` and hand libssh2 only its file descriptor; after a `WouldBlock`
//! each operation in flight (the task's, the spare's open) is repeated before
//! anything new of its own starts, the spare first (libssh2 sends one packet
//! at a time); the socket is registered edge-triggered for both directions
//! and every state machine runs until it would block right after a read that
//! drained the socket, with a safety step for anything libssh2 might still
//! hold (frequent mid-exchange, backing off while a command only waits); all deadlines are ours (libssh2's timeout does not apply
//! in non-blocking mode); nothing blocks in `Drop` (sockets are shut down
//! before sessions and channels are freed).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Registry, Waker};
use parking_lot::Mutex;
use ssh2::{BlockDirections, CheckResult, ErrorCode, HashType, KnownHostFileKind, Session};

mod rsync;

use self::rsync::{Bridge, Pump, Stage as RsyncStage};
use crate::host::{Host, HostKeyCheck};
use crate::plan::LabelId;
use crate::session::{Lent, SessionKind};
use crate::task::output::{Output, Sink, StdinKind, Stream};
use crate::task::{Action, Command, RsyncGet, RsyncPut, ScpGet, ScpPut, Transfer};
use crate::transport::{signal_number, ConnId, Event, Exit, Job, Outcome, Request, Token, TransportError};

/// The poll token of the waker; connections use their key.
const WAKER: mio::Token = mio::Token(usize::MAX);
/// Set in the poll token of a connection's second socket (an rsync bridge);
/// the rest of the token is the connection's key.
const AUX: usize = 1 << (usize::BITS - 2);
/// Connecting and authenticating, when the host sets no `connect_timeout`.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Authentication deadline when the host sets none.
const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(20);
/// Refused channel opens tried again (after 10, 40, 160 and 640 ms).
const OPEN_RETRIES: u32 = 4;
const OPEN_RETRY_FIRST: Duration = Duration::from_millis(10);
/// How long closing a channel or disconnecting a session may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
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

// libssh2 error codes used here.
const LIBSSH2_ERROR_EAGAIN: i32 = -37;
const LIBSSH2_ERROR_KEX_FAILURE: i32 = -5;
const LIBSSH2_ERROR_KEY_EXCHANGE_FAILURE: i32 = -8;
const LIBSSH2_ERROR_SOCKET_SEND: i32 = -7;
const LIBSSH2_ERROR_SOCKET_TIMEOUT: i32 = -9;
const LIBSSH2_ERROR_SOCKET_DISCONNECT: i32 = -13;
const LIBSSH2_ERROR_CHANNEL_FAILURE: i32 = -21;
const LIBSSH2_ERROR_CHANNEL_REQUEST_DENIED: i32 = -22;
const LIBSSH2_ERROR_SOCKET_RECV: i32 = -43;

/// The scheduler's end of the SSH transport: per I/O thread, the request
/// channel and the waker of its poll.
pub(crate) struct Handle {
    threads: Vec<(Option<Sender<Request>>, Arc<Waker>)>,
}

impl Handle {
    /// Sends a request to the thread that owns its label (a cancel, which
    /// names only a token, to every thread) and wakes it; false if a thread
    /// has died.
    pub(crate) fn send(&self, req: Request) -> bool {
        let n = self.threads.len();
        let label = match &req {
            Request::Connect { label, .. } | Request::Disconnect { label, .. } => *label,
            Request::Run(job) => job.label,
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
        let (tx, waker) = &self.threads[label % n];
        let ok = tx.as_ref().is_some_and(|tx| tx.send(req).is_ok());
        let _ = waker.wake();
        ok
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
    let mut handle = Handle { threads: Vec::new() };
    let mut joins = Vec::new();
    for i in 0..threads.max(1) {
        // On failure, dropping `handle` stops the threads already started.
        let (tx, waker, join) = spawn_one(events.clone(), i)?;
        handle.threads.push((Some(tx), waker));
        joins.push(join);
    }
    Ok((handle, joins))
}

/// Starts one I/O thread.
fn spawn_one(events: Sender<Event>, index: usize) -> io::Result<(Sender<Request>, Arc<Waker>, JoinHandle<()>)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = crossbeam_channel::unbounded::<Request>();
    let (resolved_tx, resolved_rx) = crossbeam_channel::unbounded();
    let (returned_tx, returned_rx) = crossbeam_channel::unbounded();
    let (kick_tx, kick_rx) = crossbeam_channel::unbounded();
    let lp = Loop {
        poll,
        waker: waker.clone(),
        rx,
        events,
        conns: HashMap::new(),
        by_id: HashMap::new(),
        next_key: 0,
        resolved_tx,
        resolved_rx,
        detached: Arc::default(),
        returned_tx,
        returned_rx,
        kick_tx,
        kick_rx,
        closing_all: false,
        timers: BTreeSet::new(),
        touched: Vec::new(),
    };
    let handle = std::thread::Builder::new()
        .name(format!("ssh-parallel-io{index}"))
        .spawn(move || lp.run())?;
    Ok((tx, waker, handle))
}

/// A resolver thread's answer: connection key, attempt generation, addresses.
type Resolved = (usize, u64, Result<Vec<SocketAddr>, String>);

/// A parsub that borrowed its label's session has returned.
struct Returned {
    key: usize,
    token: Token,
    outcome: Outcome,
}

/// The I/O thread's state.
struct Loop {
    poll: Poll,
    waker: Arc<Waker>,
    rx: Receiver<Request>,
    events: Sender<Event>,
    /// Connections by key (the key is also their poll token).
    conns: HashMap<usize, Conn>,
    by_id: HashMap<ConnId, usize>,
    next_key: usize,
    resolved_tx: Sender<Resolved>,
    resolved_rx: Receiver<Resolved>,
    /// `Parsub::no_ssh` closures running on their own threads: token -> label.
    detached: Arc<Mutex<HashMap<Token, LabelId>>>,
    returned_tx: Sender<Returned>,
    returned_rx: Receiver<Returned>,
    /// Connections to step because something outside the loop happened (a
    /// local rsync exited).
    kick_tx: Sender<usize>,
    kick_rx: Receiver<usize>,
    /// The scheduler hung up: close everything and exit.
    closing_all: bool,
    /// Every connection's next wake-up (`Conn::timer`), soonest first.
    timers: BTreeSet<(Instant, usize)>,
    /// Connections touched in this turn of the loop, to settle at its end.
    touched: Vec<usize>,
}

/// The context connection steps need, from the loop's fields (a macro rather
/// than a method so that `conns` can be borrowed mutably beside it).
macro_rules! cx {
    ($lp:ident) => {
        Cx {
            events: &$lp.events,
            registry: $lp.poll.registry(),
            waker: &$lp.waker,
            resolved: &$lp.resolved_tx,
            returned: &$lp.returned_tx,
            kicks: &$lp.kick_tx,
        }
    };
}

/// What connection steps need from the loop.
struct Cx<'a> {
    events: &'a Sender<Event>,
    registry: &'a Registry,
    waker: &'a Arc<Waker>,
    resolved: &'a Sender<Resolved>,
    returned: &'a Sender<Returned>,
    kicks: &'a Sender<usize>,
}

impl Loop {
    /// The event loop: poll, take requests, step the sessions that had
    /// events, fire the timers that are due, then re-arm the timers of every
    /// connection touched. Nothing walks all connections on a wake-up, so a
    /// turn costs what happened in it, not how many sessions are open.
    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self
                .timers
                .first()
                .map(|(at, _)| at.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!(target: "ssh_parallel", "ssh transport: poll failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            let now = Instant::now();
            let mut ready: Vec<(usize, bool)> = Vec::with_capacity(events.iter().count());
            for ev in events.iter().filter(|ev| ev.token() != WAKER) {
                // A bridge socket's hang-up says nothing about the session.
                let aux = ev.token().0 & AUX != 0;
                let key = ev.token().0 & !AUX;
                if !aux && ev.is_readable() {
                    if let Some(c) = self.conns.get_mut(&key) {
                        c.heard_from(now);
                    }
                }
                ready.push((key, !aux && (ev.is_read_closed() || ev.is_error())));
            }
            ready.extend(self.kick_rx.try_iter().map(|k| (k, false)));
            self.take_requests();
            self.take_resolved();
            self.take_returned();
            {
                let cx = cx!(self);
                for (key, closed) in ready {
                    if let Some(c) = self.conns.get_mut(&key) {
                        self.touched.push(key);
                        if matches!(c.phase, Phase::Idle) && !matches!(c.spare, Spare::Opening) {
                            c.check_idle(&cx, closed);
                        } else {
                            c.step(&cx);
                        }
                    }
                }
                let now = Instant::now();
                while let Some(&(at, key)) = self.timers.first() {
                    if at > now {
                        break;
                    }
                    self.timers.pop_first();
                    if let Some(c) = self.conns.get_mut(&key) {
                        c.timer = None;
                        self.touched.push(key);
                        c.timer_due(&cx, now);
                    }
                }
            }
            self.settle();
            if self.closing_all && self.conns.is_empty() {
                return;
            }
        }
    }

    /// After a turn, for each connection touched in it: keepalive
    /// bookkeeping, removal if it is done, and its timer re-armed at its next
    /// deadline, keepalive or safety step.
    fn settle(&mut self) {
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort_unstable();
        touched.dedup();
        let now = Instant::now();
        let mut done = Vec::new();
        let cx = cx!(self);
        for &key in &touched {
            let Some(c) = self.conns.get_mut(&key) else { continue };
            c.keepalive(&cx, now);
            let wake = if matches!(c.phase, Phase::Done) {
                None
            } else {
                c.wake_at()
            };
            if wake != c.timer {
                if let Some(at) = c.timer.take() {
                    self.timers.remove(&(at, key));
                }
                if let Some(at) = wake {
                    self.timers.insert((at, key));
                    c.timer = Some(at);
                }
            }
            if matches!(c.phase, Phase::Done) {
                done.push(key);
            }
        }
        for key in done {
            self.reap(key);
        }
        touched.clear();
        self.touched = touched;
    }

    /// Handles every queued request; a hung-up scheduler closes everything.
    fn take_requests(&mut self) {
        loop {
            match self.rx.try_recv() {
                Ok(req) => self.request(req),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    if !self.closing_all {
                        self.closing_all = true;
                        let cx = cx!(self);
                        for (key, c) in self.conns.iter_mut() {
                            c.disconnect(&cx);
                            self.touched.push(*key);
                        }
                    }
                    return;
                }
            }
        }
    }

    /// Handles one request from the scheduler.
    fn request(&mut self, req: Request) {
        let cx = cx!(self);
        match req {
            Request::Connect {
                label,
                conn,
                name,
                host,
            } => {
                let key = self.next_key;
                self.next_key += 1;
                let mut c = Conn::new(key, label, conn, name, host);
                c.start_connect(&cx);
                c.step(&cx);
                self.by_id.insert(conn, key);
                self.conns.insert(key, c);
                self.touched.push(key);
            }
            Request::Run(job) => {
                let Some(id) = job.conn else {
                    self.run_detached(job);
                    return;
                };
                match self.by_id.get(&id).and_then(|k| self.conns.get_mut(k)) {
                    Some(c) => {
                        c.run(&cx, job);
                        c.step(&cx);
                        self.touched.push(c.key);
                    }
                    None => finish(
                        &self.events,
                        job.label,
                        job.token,
                        Outcome::new(
                            Err(TransportError::ConnectionLost("the connection is gone".into())),
                            SystemTime::now(),
                        ),
                    ),
                }
            }
            Request::Cancel { token } => {
                if let Some(label) = self.detached.lock().remove(&token) {
                    log::warn!(target: "ssh_parallel", "abandoning a parsub after its timeout; it keeps running");
                    finish(
                        &self.events,
                        label,
                        token,
                        Outcome::new(
                            Err(TransportError::local(
                                "abandoned after its timeout (it cannot be interrupted)",
                            )),
                            SystemTime::now(),
                        ),
                    );
                    return;
                }
                for c in self.conns.values_mut() {
                    if c.cancel(&cx, token) {
                        c.step(&cx);
                        self.touched.push(c.key);
                        break;
                    }
                }
            }
            Request::Disconnect { label, conn } => match self.by_id.get(&conn).and_then(|k| self.conns.get_mut(k)) {
                Some(c) => {
                    c.disconnect(&cx);
                    c.step(&cx);
                    self.touched.push(c.key);
                }
                None => {
                    let _ = self.events.send(Event::Closed { label, conn });
                }
            },
        }
    }

    /// A task that needs no connection (`Parsub::no_ssh`) runs on its own thread.
    fn run_detached(&mut self, job: Job) {
        let events = self.events.clone();
        let detached = self.detached.clone();
        detached.lock().insert(job.token, job.label);
        let spawned = std::thread::Builder::new()
            .name("ssh-parallel-parsub".into())
            .spawn(move || {
                let started = SystemTime::now();
                let outcome = match &*job.action {
                    Action::Parsub(p) => crate::transport::parsub::run_parsub(&job, p, started),
                    other => Outcome::new(
                        Err(TransportError::local(format!(
                            "{} needs an SSH connection but none was given (scheduler bug)",
                            other.describe()
                        ))),
                        started,
                    ),
                };
                if detached.lock().remove(&job.token).is_some() {
                    finish(&events, job.label, job.token, outcome);
                }
            });
        if let Err(e) = spawned {
            log::error!(target: "ssh_parallel", "cannot start a parsub thread: {e}");
        }
    }

    /// Hands resolved addresses to the connections that asked for them.
    fn take_resolved(&mut self) {
        while let Ok((key, gen, result)) = self.resolved_rx.try_recv() {
            let cx = cx!(self);
            if let Some(c) = self.conns.get_mut(&key) {
                self.touched.push(key);
                if c.gen == gen && matches!(c.phase, Phase::Resolving) {
                    match result {
                        Ok(addrs) if !addrs.is_empty() => {
                            c.phase = Phase::Connecting {
                                addrs,
                                next: 0,
                                errors: Vec::new(),
                            };
                            c.step(&cx);
                        }
                        Ok(_) => c.connect_failed(&cx, format!("{}: the name resolves to no address", c.target())),
                        Err(e) => c.connect_failed(&cx, format!("cannot resolve {}: {e}", c.host.hostname)),
                    }
                }
            }
        }
    }

    /// Takes back the sessions that parsubs have finished with.
    fn take_returned(&mut self) {
        while let Ok(r) = self.returned_rx.try_recv() {
            let cx = cx!(self);
            match self.conns.get_mut(&r.key) {
                Some(c) if matches!(c.phase, Phase::Lent { token, .. } if token == r.token) => {
                    c.returned(&cx, r.outcome);
                    c.step(&cx);
                    self.touched.push(r.key);
                }
                // Abandoned after its timeout: the task was answered then.
                _ => {}
            }
        }
    }

    /// Removes a connection that is done, answering the jobs it still held.
    fn reap(&mut self, key: usize) {
        let Some(mut c) = self.conns.remove(&key) else { return };
        c.teardown(self.poll.registry(), Phase::Done);
        if self.by_id.get(&c.id) == Some(&key) {
            self.by_id.remove(&c.id);
        }
        for job in c.pending.drain(..) {
            finish(
                &self.events,
                job.label,
                job.token,
                Outcome::new(
                    Err(TransportError::ConnectionLost("the connection was closed".into())),
                    SystemTime::now(),
                ),
            );
        }
    }
}

/// Sends `Finished` for a task.
fn finish(events: &Sender<Event>, label: LabelId, token: Token, outcome: Outcome) {
    let _ = events.send(Event::Finished { label, token, outcome });
}

/// Hands libssh2 the socket's descriptor while we keep the socket itself.
struct Fd(RawFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// Where a connection is in its life.
enum Phase {
    /// Waiting for the resolver thread.
    Resolving,
    /// TCP connect to `addrs[next - 1]` in progress (or about to try `addrs[next]`).
    Connecting {
        addrs: Vec<SocketAddr>,
        next: usize,
        errors: Vec<String>,
    },
    Handshake,
    Auth(Box<Auth>),
    Idle,
    Running(Box<Task>),
    /// A parsub has the session (in blocking mode) on its own thread. If it is
    /// abandoned, the socket goes into `slot` so that its descriptor stays
    /// valid (though shut down) until the parsub lets go of the session.
    Lent {
        token: Token,
        slot: Arc<Mutex<Option<TcpStream>>>,
    },
    /// A cancelled task's channel is being closed (`None`: its channel was
    /// still being opened, so finish opening it first).
    Cancelling(Option<ssh2::Channel>),
    /// The session was abandoned; the next `Run` reconnects.
    Broken,
    Disconnecting,
    /// To be removed.
    Done,
}

/// What a step of the state machine asks for next.
enum Flow {
    /// The phase changed: step again.
    Again,
    /// Wait for the socket (or a deadline).
    Wait,
    /// Authenticated.
    Up,
    /// The running command ended.
    TaskDone(Exit),
    /// The session is free for the next job.
    Free,
}

/// How a running task failed.
enum TaskFail {
    /// The session is unusable.
    Lost(String),
    /// This task failed but the session is fine (a local file, a refused pty).
    Task(TransportError),
}

/// A channel opened ahead of the next task. RFC 4254 makes a command cost
/// two round trips on a new channel (open, then exec, which must name the
/// server's channel number); opening the next one while the current exec is
/// in flight brings a queue of commands down to one round trip each.
enum Spare {
    None,
    /// Its `CHANNEL_OPEN` is in flight. libssh2 keeps one open in progress per
    /// session, so whoever calls `channel_session` next finishes this one.
    Opening,
    Ready(ssh2::Channel),
    /// The server refused a second channel (`MaxSessions`): no more spares on
    /// this connection.
    Off,
}

/// One connection of one label.
struct Conn {
    key: usize,
    label: LabelId,
    id: ConnId,
    name: Arc<str>,
    host: Arc<Host>,
    port: u16,
    user: String,
    phase: Phase,
    stream: Option<TcpStream>,
    sess: Option<Session>,
    deadline: Option<Instant>,
    /// Jobs that arrived while the connection was busy or reconnecting.
    pending: VecDeque<Job>,
    /// Connection attempt number (stale resolver answers are dropped).
    gen: u64,
    /// When the next keepalive is due (`None`: not being watched now).
    ka_next: Option<Instant>,
    /// Keepalives sent since the server was last heard from.
    ka_unanswered: u32,
    /// This connection's entry in the loop's timers.
    timer: Option<Instant>,
    /// When it was last stepped, and how long after that the safety step is due.
    stepped: Instant,
    safety_every: Duration,
    spare: Spare,
}

impl Conn {
    /// A connection not yet started.
    fn new(key: usize, label: LabelId, id: ConnId, name: Arc<str>, host: Arc<Host>) -> Conn {
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
            ka_next: None,
            ka_unanswered: 0,
            timer: None,
            stepped: Instant::now(),
            safety_every: SAFETY_TICK,
            spare: Spare::None,
        }
    }

    /// `user@host:port`, for messages.
    fn target(&self) -> String {
        format!("{}@{}:{}", self.user, self.host.hostname, self.port)
    }

    /// Whether the connection waits on its socket (and so gets the safety step).
    fn is_busy(&self) -> bool {
        match self.phase {
            Phase::Idle => matches!(self.spare, Spare::Opening),
            Phase::Broken | Phase::Done | Phase::Resolving | Phase::Lent { .. } => false,
            _ => true,
        }
    }

    /// When the loop must wake for this connection without an event: its
    /// deadline, its next keepalive, or the safety step of a busy session.
    fn wake_at(&self) -> Option<Instant> {
        let safety = self.is_busy().then(|| self.stepped + self.safety_interval());
        let retry = match &self.phase {
            Phase::Running(t) => t.open.retry_at,
            _ => None,
        };
        [self.deadline, self.ka_next, safety, retry].into_iter().flatten().min()
    }

    /// How long after its last step a busy session gets a safety step: the
    /// backing-off `safety_every` while a command only waits for output,
    /// [`EXCHANGE_TICK`] in the middle of an exchange.
    fn safety_interval(&self) -> Duration {
        match &self.phase {
            Phase::Running(t) if t.scp.is_none() && t.rsync.is_none() && t.stage == TaskStage::Drain => {
                self.safety_every
            }
            Phase::Running(_) | Phase::Cancelling(_) => EXCHANGE_TICK,
            _ => self.safety_every,
        }
    }

    /// Its timer fired: a deadline passed, a refused channel is due to be
    /// tried again, or a busy session had no event for `safety_every` (a due
    /// keepalive is sent when the turn settles).
    fn timer_due(&mut self, cx: &Cx<'_>, now: Instant) {
        if self.deadline.is_some_and(|d| d <= now) {
            self.deadline_passed(cx);
        }
        let retry = matches!(&self.phase, Phase::Running(t) if t.open.retry_at.is_some_and(|at| at <= now));
        if retry {
            self.step(cx);
        } else if self.is_busy() && self.stepped + self.safety_interval() <= now {
            let next = (self.safety_every * 2).min(SAFETY_TICK_MAX);
            self.step(cx);
            self.safety_every = next;
        }
    }

    /// Opens the next task's channel while this task's requests are in
    /// flight, when the queue says one comes next.
    fn prefetch(&mut self) {
        let Phase::Running(t) = &self.phase else { return };
        if matches!(self.spare, Spare::None) && t.prefetch && t.channel.is_some() {
            self.spare = Spare::Opening;
            // Its errors show again on the task's own next call.
            if self.step_spare().is_err() {
                self.spare = Spare::None;
            }
        }
    }

    /// Moves the spare's open on; an error means the session is lost.
    fn step_spare(&mut self) -> Result<(), String> {
        let Some(sess) = &self.sess else {
            self.spare = Spare::None;
            return Ok(());
        };
        match sess.channel_session() {
            Ok(ch) => self.spare = Spare::Ready(ch),
            Err(e) if would_block(&e) => {}
            Err(e) if is_socket_error(&e) => {
                self.spare = Spare::None;
                return Err(format!("opening a channel ahead: {e}"));
            }
            Err(e) => {
                log::debug!(target: "ssh_parallel", "[{}] no channels opened ahead: {e}", self.name);
                self.spare = Spare::Off;
            }
        }
        Ok(())
    }

    /// Starts (or restarts) connecting, with the connect deadline.
    fn start_connect(&mut self, cx: &Cx<'_>) {
        self.gen += 1;
        let timeout = self.host.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        self.deadline = Some(Instant::now() + timeout);
        if let Ok(ip) = self.host.hostname.parse::<IpAddr>() {
            self.phase = Phase::Connecting {
                addrs: vec![SocketAddr::new(ip, self.port)],
                next: 0,
                errors: Vec::new(),
            };
            return;
        }
        self.phase = Phase::Resolving;
        let (key, gen, port) = (self.key, self.gen, self.port);
        let name = self.host.hostname.clone();
        let tx = cx.resolved.clone();
        let waker = cx.waker.clone();
        // getaddrinfo blocks: never on the I/O thread.
        let spawned = std::thread::Builder::new()
            .name("ssh-parallel-resolve".into())
            .spawn(move || {
                let r = (name.as_str(), port)
                    .to_socket_addrs()
                    .map(|a| a.collect())
                    .map_err(|e| e.to_string());
                let _ = tx.send((key, gen, r));
                let _ = waker.wake();
            });
        if let Err(e) = spawned {
            self.connect_failed(cx, format!("cannot start a resolver thread: {e}"));
        }
    }

    /// Runs the state machine until it would block.
    fn step(&mut self, cx: &Cx<'_>) {
        self.stepped = Instant::now();
        self.safety_every = SAFETY_TICK;
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
        loop {
            let r = match self.phase {
                Phase::Resolving | Phase::Idle | Phase::Broken | Phase::Done | Phase::Lent { .. } => return,
                Phase::Connecting { .. } => self.step_tcp(cx),
                Phase::Handshake => self.step_handshake(),
                Phase::Auth(_) => self.step_auth(),
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
                Ok(Flow::Free) => self.become_idle(cx),
                Ok(Flow::TaskDone(exit)) => {
                    if let Phase::Running(t) = std::mem::replace(&mut self.phase, Phase::Idle) {
                        t.finish(cx.events, Ok(exit));
                    }
                    self.become_idle(cx);
                }
                Err(m) => {
                    self.connect_failed(cx, m);
                    return;
                }
            }
        }
    }

    /// Non-blocking TCP connect, trying each address in turn; then creates the session.
    fn step_tcp(&mut self, cx: &Cx<'_>) -> Result<Flow, String> {
        let target = self.target();
        let Phase::Connecting { addrs, next, errors } = &mut self.phase else {
            return Ok(Flow::Again);
        };
        if let Some(s) = &self.stream {
            let failed = match s.take_error() {
                Ok(Some(e)) | Err(e) => Some(e.to_string()),
                Ok(None) => match s.peer_addr() {
                    Ok(_) => None,
                    Err(e) if e.kind() == io::ErrorKind::NotConnected || e.kind() == io::ErrorKind::WouldBlock => {
                        return Ok(Flow::Wait)
                    }
                    Err(e) => Some(e.to_string()),
                },
            };
            match failed {
                None => {
                    let _ = s.set_nodelay(true);
                    let mut sess = Session::new().map_err(|e| format!("cannot create an SSH session: {e}"))?;
                    sess.set_blocking(false);
                    let ours = [self.host.connect_timeout, self.host.auth_timeout]
                        .into_iter()
                        .flatten()
                        .chain([DEFAULT_CONNECT_TIMEOUT, DEFAULT_AUTH_TIMEOUT])
                        .max()
                        .unwrap_or(DEFAULT_AUTH_TIMEOUT);
                    set_read_timeout(&sess, ours + Duration::from_secs(60));
                    sess.set_tcp_stream(Fd(s.as_raw_fd()));
                    self.sess = Some(sess);
                    self.phase = Phase::Handshake;
                    return Ok(Flow::Again);
                }
                Some(e) => {
                    errors.push(format!("{}: {e}", addrs[*next - 1]));
                    if let Some(mut s) = self.stream.take() {
                        let _ = cx.registry.deregister(&mut s);
                    }
                }
            }
        }
        let Some(addr) = addrs.get(*next).copied() else {
            return Err(format!("cannot connect to {target}: {}", errors.join("; ")));
        };
        *next += 1;
        match TcpStream::connect(addr) {
            Ok(mut s) => {
                if let Err(e) =
                    cx.registry
                        .register(&mut s, mio::Token(self.key), Interest::READABLE | Interest::WRITABLE)
                {
                    errors.push(format!("{addr}: cannot poll the socket: {e}"));
                } else {
                    self.stream = Some(s);
                }
            }
            Err(e) => errors.push(format!("{addr}: {e}")),
        }
        Ok(Flow::Again)
    }

    /// The SSH handshake, then the host-key check.
    fn step_handshake(&mut self) -> Result<Flow, String> {
        let target = self.target();
        let sess = self.sess.as_mut().expect("session in handshake");
        match sess.handshake() {
            Ok(()) => {}
            Err(e) if would_block(&e) => return Ok(Flow::Wait),
            Err(e) => return Err(handshake_error(&target, &e)),
        }
        check_host_key(sess, &self.host, self.port)?;
        // Keys the host names replace the default files (as `ssh -i` with
        // IdentitiesOnly would), and go before the agent's so that a server's
        // MaxAuthTries is not spent on agent keys first.
        let explicit = !self.host.key_files.is_empty() || !self.host.key_data.is_empty();
        // Asking for the methods first ("none") costs a round trip that a key
        // login does not need; a host with only a password asks first so as
        // not to spend the server's MaxAuthTries on default keys it refuses.
        let ask_first = self.host.password.is_some() && !explicit;
        self.phase = Phase::Auth(Box::new(Auth {
            stage: if ask_first { AuthStage::Methods } else { AuthStage::Data },
            methods: None,
            keys: self.host.key_files.clone(),
            next_key: 0,
            next_data: 0,
            agent: None,
            agent_ids: Vec::new(),
            next_agent: 0,
            default_keys: if explicit { Vec::new() } else { default_keys() },
            next_default: 0,
            tried: Vec::new(),
            keys_done: false,
        }));
        self.deadline = Some(Instant::now() + self.host.auth_timeout.unwrap_or(DEFAULT_AUTH_TIMEOUT));
        Ok(Flow::Again)
    }

    /// Authentication: key files, then password, then keyboard-interactive.
    fn step_auth(&mut self) -> Result<Flow, String> {
        let target = self.target();
        let Conn {
            sess,
            phase,
            host,
            user,
            ..
        } = self;
        let sess = sess.as_ref().expect("session in auth");
        let Phase::Auth(a) = phase else {
            return Ok(Flow::Again);
        };
        loop {
            if sess.authenticated() {
                return Ok(Flow::Up);
            }
            let result = match a.stage {
                AuthStage::Methods => match sess.auth_methods(user) {
                    Ok(m) => {
                        // Asked first, or after the keys (before passwords).
                        a.stage = if a.keys_done {
                            AuthStage::Password
                        } else {
                            AuthStage::Data
                        };
                        a.methods = Some(m.to_owned());
                        continue;
                    }
                    Err(e) => Err(e),
                },
                AuthStage::Data => {
                    let Some(pem) = host.key_data.get(a.next_data).filter(|_| a.allows("publickey")) else {
                        a.stage = AuthStage::Key;
                        continue;
                    };
                    sess.userauth_pubkey_memory(user, None, pem, host.passphrase.as_deref())
                }
                AuthStage::Key => {
                    let Some(key) = a.keys.get(a.next_key).filter(|_| a.allows("publickey")) else {
                        a.stage = AuthStage::Agent;
                        continue;
                    };
                    sess.userauth_pubkey_file(user, None, key, host.passphrase.as_deref())
                }
                AuthStage::Agent => {
                    if !host.agent || !a.allows("publickey") {
                        a.stage = AuthStage::DefaultKey;
                        continue;
                    }
                    if a.agent.is_none() {
                        match open_agent(sess, host) {
                            Ok(Some((agent, ids))) => {
                                a.agent = Some(agent);
                                a.agent_ids = ids;
                            }
                            Ok(None) => {
                                a.stage = AuthStage::DefaultKey;
                                continue;
                            }
                            Err(m) => {
                                a.tried.push(format!("agent ({m})"));
                                a.stage = AuthStage::DefaultKey;
                                continue;
                            }
                        }
                    }
                    match (a.agent.as_ref(), a.agent_ids.get(a.next_agent)) {
                        (Some(agent), Some(id)) => agent.userauth(user, id),
                        _ => {
                            a.stage = AuthStage::DefaultKey;
                            continue;
                        }
                    }
                }
                AuthStage::DefaultKey => {
                    let Some(key) = a.default_keys.get(a.next_default).filter(|_| a.allows("publickey")) else {
                        a.keys_done = true;
                        a.stage = if a.methods.is_none() {
                            AuthStage::Methods
                        } else {
                            AuthStage::Password
                        };
                        continue;
                    };
                    sess.userauth_pubkey_file(user, None, key, host.passphrase.as_deref())
                }
                AuthStage::Password => match &host.password {
                    Some(pw) if a.allows("password") => sess.userauth_password(user, pw),
                    _ => {
                        a.stage = AuthStage::Keyboard;
                        continue;
                    }
                },
                AuthStage::Keyboard => match &host.password {
                    Some(pw) if a.allows("keyboard-interactive") => {
                        sess.userauth_keyboard_interactive(user, &mut Answer(pw.clone()))
                    }
                    _ => {
                        a.stage = AuthStage::Failed;
                        continue;
                    }
                },
                AuthStage::Failed => {
                    let tried = if a.tried.is_empty() {
                        "no method (no key file found and no password given)".to_owned()
                    } else {
                        a.tried.join(", ")
                    };
                    return Err(format!(
                        "authentication failed for {target}: tried {tried}; the server accepts: {}",
                        match a.methods.as_deref() {
                            None | Some("") => "(none listed)",
                            Some(m) => m,
                        }
                    ));
                }
            };
            match result {
                Ok(()) => continue,
                Err(e) if would_block(&e) => return Ok(Flow::Wait),
                Err(e) if is_socket_error(&e) => {
                    return Err(format!("{target}: connection lost while authenticating: {e}"))
                }
                Err(e) => match a.stage {
                    AuthStage::Methods => {
                        if sess.authenticated() {
                            continue;
                        }
                        return Err(format!("{target}: cannot list authentication methods: {e}"));
                    }
                    AuthStage::Data => {
                        a.tried.push(format!(
                            "publickey in-memory key #{} ({})",
                            a.next_data + 1,
                            e.message()
                        ));
                        a.next_data += 1;
                    }
                    AuthStage::Key => {
                        a.tried
                            .push(format!("publickey {} ({})", a.keys[a.next_key].display(), e.message()));
                        a.next_key += 1;
                    }
                    AuthStage::Agent => {
                        let comment = a.agent_ids[a.next_agent].comment().to_owned();
                        a.tried.push(format!("agent key {comment:?} ({})", e.message()));
                        a.next_agent += 1;
                    }
                    AuthStage::DefaultKey => {
                        a.tried.push(format!(
                            "publickey {} ({})",
                            a.default_keys[a.next_default].display(),
                            e.message()
                        ));
                        a.next_default += 1;
                    }
                    AuthStage::Password => {
                        a.tried.push("password".to_owned());
                        a.stage = AuthStage::Keyboard;
                    }
                    AuthStage::Keyboard => {
                        a.tried.push("keyboard-interactive".to_owned());
                        a.stage = AuthStage::Failed;
                    }
                    AuthStage::Failed => {}
                },
            }
        }
    }

    /// Authentication succeeded.
    fn up(&mut self, cx: &Cx<'_>) {
        self.deadline = None;
        self.phase = Phase::Idle;
        if let Some(sess) = &self.sess {
            // libssh2 only throttles keepalives to this interval; when to send
            // them is decided by `keepalive`, so the shortest one will do.
            sess.set_keepalive(true, 1);
        }
        self.heard_from(Instant::now());
        log::debug!(target: "ssh_parallel", "[{}] ssh session up ({})", self.name, self.target());
        if self.pending.is_empty() {
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
    fn connect_failed(&mut self, cx: &Cx<'_>, msg: String) {
        log::debug!(target: "ssh_parallel", "[{}] {msg}", self.name);
        self.teardown(cx.registry, Phase::Done);
        if self.pending.is_empty() {
            let _ = cx.events.send(Event::ConnectFailed {
                label: self.label,
                conn: self.id,
                error: TransportError::Connect(msg),
            });
        } else {
            for job in self.pending.drain(..) {
                finish(
                    cx.events,
                    job.label,
                    job.token,
                    Outcome::new(Err(TransportError::Connect(msg.clone())), SystemTime::now()),
                );
            }
        }
    }

    /// The session died: a running task learns it as `ConnectionLost`, an idle
    /// connection is reported `Lost`.
    fn lose(&mut self, cx: &Cx<'_>, msg: String) {
        log::debug!(target: "ssh_parallel", "[{}] connection lost: {msg}", self.name);
        let old = std::mem::replace(&mut self.phase, Phase::Done);
        if let Some(s) = &self.stream {
            let _ = s.shutdown(Shutdown::Both);
        }
        let mut answered = false;
        if let Phase::Running(t) = old {
            answered = true;
            t.finish(cx.events, Err(TransportError::ConnectionLost(msg.clone())));
        }
        for job in self.pending.drain(..) {
            answered = true;
            finish(
                cx.events,
                job.label,
                job.token,
                Outcome::new(Err(TransportError::ConnectionLost(msg.clone())), SystemTime::now()),
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

    /// The server sent something: it is alive.
    fn heard_from(&mut self, now: Instant) {
        self.ka_unanswered = 0;
        if self.ka_next.is_some() {
            self.ka_next = Some(now + self.host.keepalive);
        }
    }

    /// Dead-peer detection by deadline (libssh2 never notices by itself):
    /// while the session is idle or a command only produces output, send a
    /// keepalive that asks for a reply after every interval without traffic,
    /// and give the connection up after `keepalive_count_max` unanswered ones.
    /// Other stages are left alone: they may have a half-sent packet, which
    /// a keepalive must not interleave with, and their own data shows life.
    fn keepalive(&mut self, cx: &Cx<'_>, now: Instant) {
        let interval = self.host.keepalive;
        let watched = !interval.is_zero()
            && match &self.phase {
                Phase::Idle => true,
                Phase::Running(t) => t.scp.is_none() && t.rsync.is_none() && t.stage == TaskStage::Drain,
                _ => false,
            };
        if !watched {
            self.ka_next = None;
            self.ka_unanswered = 0;
            return;
        }
        let due = *self.ka_next.get_or_insert(now + interval);
        if now < due {
            return;
        }
        if self.ka_unanswered >= self.host.keepalive_count_max {
            let msg = format!(
                "{}: no answer to {} keepalives sent {interval:?} apart; the peer is presumed dead",
                self.target(),
                self.ka_unanswered
            );
            self.ka_next = None;
            self.lose(cx, msg);
            return;
        }
        if let Some(sess) = &self.sess {
            match sess.keepalive_send() {
                Err(e) if is_socket_error(&e) => {
                    let msg = format!("{}: sending a keepalive: {e}", self.target());
                    self.ka_next = None;
                    self.lose(cx, msg);
                    return;
                }
                // Sent, or queued (a would-block send completes with the next call).
                _ => {}
            }
        }
        self.ka_unanswered += 1;
        self.ka_next = Some(now + interval);
    }

    /// An event on an idle session: only a closed or failed socket matters.
    fn check_idle(&mut self, cx: &Cx<'_>, closed: bool) {
        let Some(s) = &self.stream else { return };
        let gone = closed
            || match s.peek(&mut [0u8; 1]) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted),
            };
        if gone {
            self.lose(cx, format!("{} closed the connection", self.target()));
        }
    }

    /// Shuts the socket down (so libssh2 cannot block or wait on it), then
    /// frees channels, the session and the socket.
    fn teardown(&mut self, registry: &Registry, next: Phase) {
        if let Some(s) = &self.stream {
            let _ = s.shutdown(Shutdown::Both);
        }
        drop(std::mem::replace(&mut self.phase, next));
        self.spare = Spare::None;
        self.sess = None;
        if let Some(mut s) = self.stream.take() {
            let _ = registry.deregister(&mut s);
        }
    }

    /// A `Run` for this connection.
    fn run(&mut self, cx: &Cx<'_>, job: Job) {
        self.pending.push_back(job);
        match self.phase {
            Phase::Idle => self.become_idle(cx),
            Phase::Broken => self.start_connect(cx),
            _ => {}
        }
    }

    /// The session is free: start the next waiting job, if any.
    fn become_idle(&mut self, cx: &Cx<'_>) {
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

    fn start_job(&mut self, cx: &Cx<'_>, job: Job) {
        let started = SystemTime::now();
        let answer = |e: TransportError| finish(cx.events, job.label, job.token, Outcome::new(Err(e), started));
        match &*job.action {
            Action::Command(c) => match Task::new(&job, c, started) {
                Ok(t) => self.phase = Phase::Running(Box::new(t)),
                Err(e) => answer(e),
            },
            Action::Connect(_) => finish(cx.events, job.label, job.token, Outcome::new(Ok(Exit::OK), started)),
            Action::ScpGet(_) | Action::ScpPut(_) => match Task::new_scp(&job, started) {
                Ok(t) => self.phase = Phase::Running(Box::new(t)),
                Err(e) => answer(e),
            },
            Action::RsyncGet(_) | Action::RsyncPut(_) => match Task::new_rsync(&job, cx, self.key, started) {
                Ok(t) => self.phase = Phase::Running(Box::new(t)),
                Err(e) => answer(e),
            },
            Action::Parsub(_) => self.lend(cx, job, started),
            other => answer(TransportError::local(format!(
                "{} is not a remote task (scheduler bug)",
                other.describe()
            ))),
        }
    }

    /// Lends the session to a parsub on its own thread, in blocking mode; the
    /// loop leaves it alone until [`Conn::returned`].
    fn lend(&mut self, cx: &Cx<'_>, job: Job, started: SystemTime) {
        let (Some(sess), Some(stream)) = (&self.sess, &self.stream) else {
            finish(
                cx.events,
                job.label,
                job.token,
                Outcome::new(
                    Err(TransportError::ConnectionLost("no session to lend".into())),
                    started,
                ),
            );
            return;
        };
        // Nothing of the loop's stays on a lent session (dropping a channel
        // later would need the session the parsub holds).
        self.spare = Spare::None;
        sess.set_blocking(true);
        let lent = Lent {
            sess: sess.clone(),
            fd: stream.as_raw_fd(),
            target: self.target(),
        };
        let slot: Arc<Mutex<Option<TcpStream>>> = Arc::default();
        let (key, token, label) = (self.key, job.token, job.label);
        let (tx, waker, keep) = (cx.returned.clone(), cx.waker.clone(), slot.clone());
        let spawned = std::thread::Builder::new()
            .name("ssh-parallel-parsub".into())
            .spawn(move || {
                let outcome = match &*job.action {
                    Action::Parsub(p) => {
                        crate::transport::parsub::run_parsub_with(&job, p, SessionKind::Ssh(lent), started)
                    }
                    _ => Outcome::new(Err(TransportError::local("not a parsub (transport bug)")), started),
                };
                // The session is gone by now; only then may an abandoned socket close.
                drop(keep);
                let _ = tx.send(Returned { key, token, outcome });
                let _ = waker.wake();
            });
        match spawned {
            Ok(_) => self.phase = Phase::Lent { token, slot },
            Err(e) => {
                sess.set_blocking(false);
                finish(
                    cx.events,
                    label,
                    token,
                    Outcome::new(
                        Err(TransportError::local(format!("cannot start a parsub thread: {e}"))),
                        started,
                    ),
                );
            }
        }
    }

    /// A parsub gave the session back.
    fn returned(&mut self, cx: &Cx<'_>, outcome: Outcome) {
        if let Some(sess) = &self.sess {
            sess.set_blocking(false);
        }
        let _ = cx.events.send(Event::Finished {
            label: self.label,
            token: match self.phase {
                Phase::Lent { token, .. } => token,
                _ => return,
            },
            outcome,
        });
        self.become_idle(cx);
    }

    /// Gives up on a lent session: the socket is shut down so the parsub's
    /// blocking calls fail, the task is answered with `error`, and the
    /// connection is left `Broken`.
    fn abandon_lent(&mut self, cx: &Cx<'_>, error: TransportError) {
        let Phase::Lent { token, slot } = std::mem::replace(&mut self.phase, Phase::Broken) else {
            return;
        };
        finish(
            cx.events,
            self.label,
            token,
            Outcome::new(Err(error), SystemTime::now()),
        );
        if let Some(mut s) = self.stream.take() {
            let _ = s.shutdown(Shutdown::Both);
            let _ = cx.registry.deregister(&mut s);
            *slot.lock() = Some(s);
        }
        self.sess = None;
        self.deadline = None;
    }

    /// Runs a command's channel: open, env, pty, exec, stdin, EOF, drain, close.
    fn step_task(&mut self) -> Result<Flow, TaskFail> {
        let sess = self.sess.as_ref().expect("session while running");
        let Phase::Running(t) = &mut self.phase else {
            return Ok(Flow::Again);
        };
        let spare = &mut self.spare;
        let lost = |what: &str, e: &dyn std::fmt::Display| TaskFail::Lost(format!("{what}: {e}"));
        if t.rsync.is_some() {
            return step_rsync(sess, t, spare);
        }
        loop {
            if t.stage == TaskStage::Open {
                match open_for_task(sess, spare, &mut t.open)? {
                    Some(ch) => {
                        t.channel = Some(ch);
                        t.stage = TaskStage::Env;
                    }
                    None => return Ok(Flow::Wait),
                }
                continue;
            }
            if t.scp.is_some() {
                return step_scp(sess, t);
            }
            let Action::Command(c) = &*t.action else {
                return Err(TaskFail::Task(TransportError::local("not a command (transport bug)")));
            };
            let ch = t.channel.as_mut().expect("channel after open");
            match t.stage {
                TaskStage::Open | TaskStage::Scp => {}
                TaskStage::Env => {
                    let Some((k, v)) = c.env.get(t.env_next) else {
                        t.stage = TaskStage::Pty;
                        continue;
                    };
                    match ch.setenv(k, v) {
                        Ok(()) => t.env_next += 1,
                        Err(e) if would_block(&e) => return Ok(Flow::Wait),
                        Err(e) if code(&e) == LIBSSH2_ERROR_CHANNEL_REQUEST_DENIED => {
                            // Most servers refuse env (AcceptEnv): export it in the command instead.
                            t.env_fallback.push((k.clone(), v.clone()));
                            t.env_next += 1;
                        }
                        Err(e) => return Err(lost("setting the environment", &e)),
                    }
                }
                TaskStage::Pty => {
                    if !c.pty {
                        t.stage = TaskStage::Exec;
                        continue;
                    }
                    match ch.request_pty("xterm", None, None) {
                        Ok(()) => t.stage = TaskStage::Exec,
                        Err(e) if would_block(&e) => return Ok(Flow::Wait),
                        Err(e) if code(&e) == LIBSSH2_ERROR_CHANNEL_REQUEST_DENIED => {
                            return Err(TaskFail::Task(TransportError::local(format!(
                                "the server refused a pty: {e}"
                            ))))
                        }
                        Err(e) => return Err(lost("requesting a pty", &e)),
                    }
                }
                TaskStage::Exec => {
                    let cmd = if t.env_fallback.is_empty() {
                        c.cmd.clone()
                    } else {
                        let exports: Vec<String> = t
                            .env_fallback
                            .iter()
                            .map(|(k, v)| format!("{k}={}", shlex::try_quote(v).unwrap_or_default()))
                            .collect();
                        format!("export {}; {}", exports.join(" "), c.cmd)
                    };
                    if !exec(ch, &cmd, "the command", TransportError::local)? {
                        return Ok(Flow::Wait);
                    }
                    t.stage = TaskStage::Stdin;
                }
                TaskStage::Stdin => {
                    let Some(data) = t.stdin.as_ref().filter(|d| t.stdin_off < d.len()) else {
                        t.stage = TaskStage::Eof;
                        continue;
                    };
                    match ch.write(&data[t.stdin_off..]) {
                        Ok(n) => t.stdin_off += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            // A half-sent packet must be finished before anything
                            // else; an exhausted window lets us read meanwhile.
                            if matches!(sess.block_directions(), BlockDirections::Inbound) {
                                drain(t)?;
                            }
                            return Ok(Flow::Wait);
                        }
                        // The command closed its input: not an error.
                        Err(_) => t.stage = TaskStage::Eof,
                    }
                }
                TaskStage::Eof => match ch.send_eof() {
                    Ok(()) => t.stage = TaskStage::Drain,
                    Err(e) if would_block(&e) => return Ok(Flow::Wait),
                    Err(_) => t.stage = TaskStage::Drain,
                },
                TaskStage::Drain => {
                    if !drain(t)? {
                        return Ok(Flow::Wait);
                    }
                    t.stage = TaskStage::Close;
                }
                TaskStage::Close => return close_channel(ch),
            }
        }
    }

    /// Answers the running task with `result` and closes its channel.
    fn abort_task(&mut self, cx: &Cx<'_>, result: Result<Exit, TransportError>) {
        let Phase::Running(mut t) = std::mem::replace(&mut self.phase, Phase::Idle) else {
            return;
        };
        let channel = t.channel.take();
        let opening = t.opening();
        t.finish(cx.events, result);
        if channel.is_none() && !opening {
            self.become_idle(cx);
            return;
        }
        self.deadline = Some(Instant::now() + CLOSE_TIMEOUT);
        self.phase = Phase::Cancelling(channel);
    }

    /// A `Cancel`: true if `token` runs (or waits) here.
    fn cancel(&mut self, cx: &Cx<'_>, token: Token) -> bool {
        if let Some(i) = self.pending.iter().position(|j| j.token == token) {
            let job = self.pending.remove(i).expect("position is valid");
            finish(
                cx.events,
                job.label,
                job.token,
                Outcome::new(
                    Err(TransportError::local("cancelled before it started")),
                    SystemTime::now(),
                ),
            );
            return true;
        }
        match &self.phase {
            Phase::Running(t) if t.token == token => {
                self.abort_task(cx, Err(TransportError::local("cancelled after its timeout")));
                true
            }
            Phase::Lent { token: t, .. } if *t == token => {
                self.abandon_lent(
                    cx,
                    TransportError::local("abandoned after its timeout; its connection was shut down to interrupt it"),
                );
                if !self.pending.is_empty() {
                    self.start_connect(cx);
                }
                true
            }
            _ => false,
        }
    }

    /// Closes a cancelled task's channel. Once the close request is sent the
    /// session is free again: a server that waits for the remote process to
    /// end before confirming (OpenSSH without a pty) must not hold it up.
    fn step_cancel(&mut self) -> Result<Flow, String> {
        let sess = self.sess.as_ref().expect("session while cancelling");
        let Phase::Cancelling(slot) = &mut self.phase else {
            return Ok(Flow::Again);
        };
        let Some(ch) = slot else {
            return match sess.channel_session() {
                Ok(ch) => {
                    *slot = Some(ch);
                    Ok(Flow::Again)
                }
                Err(e) if would_block(&e) => Ok(Flow::Wait),
                Err(e) if is_socket_error(&e) => Err(format!("opening a channel: {e}")),
                Err(_) => Ok(Flow::Free),
            };
        };
        match ch.close() {
            Ok(()) => Ok(Flow::Free),
            Err(e) if would_block(&e) => {
                if matches!(sess.block_directions(), BlockDirections::Inbound) {
                    // Sent; only the server's confirmation is missing. The channel
                    // stays in libssh2's list until the session is freed.
                    Ok(Flow::Free)
                } else {
                    Ok(Flow::Wait)
                }
            }
            Err(e) => Err(format!("closing a cancelled channel: {e}")),
        }
    }

    /// Abandons the session; the next `Run` reconnects.
    fn broken(&mut self, cx: &Cx<'_>, why: String) {
        log::debug!(target: "ssh_parallel", "[{}] abandoning the session: {why}", self.name);
        self.teardown(cx.registry, Phase::Broken);
        self.deadline = None;
        if !self.pending.is_empty() {
            self.start_connect(cx);
        }
    }

    /// A `Disconnect` (or the transport is shutting down).
    fn disconnect(&mut self, cx: &Cx<'_>) {
        match &self.phase {
            Phase::Done | Phase::Disconnecting => {}
            Phase::Idle => {
                self.phase = Phase::Disconnecting;
                self.deadline = Some(Instant::now() + CLOSE_TIMEOUT);
            }
            Phase::Lent { .. } => {
                self.abandon_lent(cx, TransportError::ConnectionLost("the connection was closed".into()));
                self.closed(cx);
            }
            _ => {
                let old = std::mem::replace(&mut self.phase, Phase::Done);
                if let Phase::Running(t) = old {
                    t.finish(
                        cx.events,
                        Err(TransportError::ConnectionLost("the connection was closed".into())),
                    );
                }
                self.closed(cx);
            }
        }
    }

    /// Sends the disconnect message, then closes.
    fn step_disconnect(&mut self, cx: &Cx<'_>) -> Flow {
        if let Some(sess) = &self.sess {
            if let Err(e) = sess.disconnect(None, "closed by ssh-parallel", None) {
                if would_block(&e) {
                    return Flow::Wait;
                }
            }
        }
        self.closed(cx);
        Flow::Wait
    }

    /// Frees everything and tells the scheduler the connection is closed.
    fn closed(&mut self, cx: &Cx<'_>) {
        self.teardown(cx.registry, Phase::Done);
        self.deadline = None;
        let _ = cx.events.send(Event::Closed {
            label: self.label,
            conn: self.id,
        });
    }

    /// A connect, cancel or disconnect deadline passed.
    fn deadline_passed(&mut self, cx: &Cx<'_>) {
        self.deadline = None;
        let mut timeout = self.host.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let what = match self.phase {
            Phase::Resolving => "resolving the name",
            Phase::Connecting { .. } => "connecting",
            Phase::Handshake => "in the SSH handshake",
            Phase::Auth(_) => {
                timeout = self.host.auth_timeout.unwrap_or(DEFAULT_AUTH_TIMEOUT);
                "authenticating"
            }
            Phase::Cancelling(_) => {
                self.broken(cx, "closing a cancelled channel timed out".into());
                return;
            }
            Phase::Disconnecting => {
                self.closed(cx);
                return;
            }
            _ => return,
        };
        let msg = format!("{}: timed out after {timeout:?} {what}", self.target());
        self.connect_failed(cx, msg);
    }
}

/// Runs an rsync task: read the remote command from the bridge, run it on a
/// channel, pump both ways, close, then wait for the local rsync.
fn step_rsync(sess: &Session, t: &mut Task, spare: &mut Spare) -> Result<Flow, TaskFail> {
    let b = t.rsync.as_mut().expect("an rsync task");
    loop {
        match b.stage {
            RsyncStage::Command => match b.read_command() {
                Ok(true) => b.stage = RsyncStage::Open,
                Ok(false) if b.poll_local() => b.stage = RsyncStage::Local,
                Ok(false) => return Ok(Flow::Wait),
                // The local rsync ended early; its exit says why.
                Err(_) => b.stage = RsyncStage::Local,
            },
            RsyncStage::Open => match open_for_task(sess, spare, &mut t.open)? {
                Some(ch) => {
                    t.channel = Some(ch);
                    b.stage = RsyncStage::Exec;
                }
                None => return Ok(Flow::Wait),
            },
            RsyncStage::Exec => {
                let ch = t.channel.as_mut().expect("channel after open");
                let cmd = String::from_utf8_lossy(&b.command).into_owned();
                if !exec(ch, &cmd, "the remote rsync", TransportError::Transfer)? {
                    return Ok(Flow::Wait);
                }
                b.stage = RsyncStage::Pump;
            }
            RsyncStage::Pump => {
                let ch = t.channel.as_mut().expect("channel while pumping");
                match b.pump(sess, ch, &mut t.err) {
                    Ok(true) => b.stage = RsyncStage::Close,
                    Ok(false) => return Ok(Flow::Wait),
                    Err(Pump::Lost(m)) => return Err(TaskFail::Lost(m)),
                    Err(Pump::Local(m)) => return Err(TaskFail::Task(TransportError::local(m))),
                }
            }
            RsyncStage::Close => {
                let ch = t.channel.as_mut().expect("channel while closing");
                match close_channel(ch)? {
                    Flow::TaskDone(exit) => {
                        b.remote_exit = Some(exit);
                        t.channel = None;
                        b.stage = RsyncStage::Local;
                    }
                    _ => return Ok(Flow::Wait),
                }
            }
            RsyncStage::Local => {
                return Ok(if b.poll_local() {
                    Flow::TaskDone(Exit::OK)
                } else {
                    Flow::Wait
                })
            }
        }
    }
}

/// Runs an scp task's channel: exec the remote `scp`, speak the SCP protocol
/// with it, then EOF, drain, close and exit status.
fn step_scp(sess: &Session, t: &mut Task) -> Result<Flow, TaskFail> {
    let ch = t.channel.as_mut().expect("channel after open");
    let scp = t.scp.as_mut().expect("an scp task");
    loop {
        match t.stage {
            TaskStage::Open | TaskStage::Env | TaskStage::Pty | TaskStage::Stdin => t.stage = TaskStage::Exec,
            TaskStage::Exec => {
                if !exec(
                    ch,
                    &scp.command,
                    &format!("`{}`", scp.command),
                    TransportError::Transfer,
                )? {
                    return Ok(Flow::Wait);
                }
                t.stage = TaskStage::Scp;
            }
            TaskStage::Scp => {
                if !scp.pump(sess, ch)? {
                    return Ok(Flow::Wait);
                }
                t.stage = TaskStage::Eof;
            }
            TaskStage::Eof => match ch.send_eof() {
                Ok(()) => t.stage = TaskStage::Drain,
                Err(e) if would_block(&e) => return Ok(Flow::Wait),
                Err(_) => t.stage = TaskStage::Drain,
            },
            TaskStage::Drain => {
                if !scp.drain(ch)? {
                    return Ok(Flow::Wait);
                }
                t.stage = TaskStage::Close;
            }
            TaskStage::Close => return close_channel(ch),
        }
    }
}

/// File data moved per protocol step (bounded memory for any file size).
const SCP_CHUNK: usize = 64 * 1024;
/// The longest SCP record or error line accepted.
const SCP_MAX_LINE: usize = 64 * 1024;
/// How much of the remote scp's stderr is kept for error messages.
const SCP_STDERR_KEEP: usize = 4096;

/// What the SCP protocol engine did.
enum ScpStep {
    /// Something changed: flush and advance again.
    Progress,
    /// Needs more bytes from the remote scp.
    NeedInput,
    /// The transfer is complete.
    Done,
}

/// Seconds since the epoch: (mtime, atime).
type Times = (i64, i64);

/// A transfer over an exec channel running `scp -t` (put) or `scp -f` (get):
/// both directions speak the SCP protocol (`T`/`C`/`D`/`E` records, `\0`
/// acknowledgements, `\x01`/`\x02` error lines), which gives recursion, modes
/// and times. File data moves in [`SCP_CHUNK`] pieces.
struct Scp {
    /// The remote command line.
    command: String,
    /// Unconsumed bytes from the remote scp's stdout.
    inb: Vec<u8>,
    /// Bytes to send, from `out_off` on (sent before anything else happens).
    out: Vec<u8>,
    out_off: usize,
    /// The remote scp closed its stdout.
    eof: bool,
    /// It did so before the transfer was complete.
    ended_early: bool,
    /// The start of its stderr.
    stderr: Vec<u8>,
    /// How many bytes of stderr were read in all (to see progress past the kept start).
    stderr_read: u64,
    dir: ScpDir,
}

enum ScpDir {
    Put(PutState),
    Get(GetState),
}

/// The source side (this machine sends).
struct PutState {
    recursive: bool,
    /// What remains to send, last item first.
    stack: Vec<PutItem>,
    step: PutStep,
}

enum PutItem {
    /// A local path not yet looked at.
    Path(PathBuf),
    /// A record line, acknowledged by the sink; the path names it in errors.
    Line(Vec<u8>, PathBuf),
    /// A file's contents (announced by the preceding `C` line).
    Data(std::fs::File, u64, PathBuf),
}

enum PutStep {
    /// Waiting for the sink's answer about the path (`None`: its first `\0`).
    Ack(Option<PathBuf>),
    Next,
    Data {
        file: std::fs::File,
        left: u64,
        path: PathBuf,
    },
    Done,
}

/// The sink side (this machine receives).
struct GetState {
    target: PathBuf,
    target_is_dir: bool,
    /// From the last `T` record, for the next `C` or `D`.
    times: Option<Times>,
    /// Directories entered (`D`), with the mode and times to set at their `E`.
    dirs: Vec<(PathBuf, u32, Option<Times>)>,
    step: GetStep,
}

enum GetStep {
    Record,
    /// Receiving a file; `left` bytes to go, then the source's status byte.
    Data {
        file: std::fs::File,
        left: u64,
        path: PathBuf,
        mode: u32,
        times: Option<Times>,
    },
}

impl Scp {
    fn new(command: String, dir: ScpDir) -> Scp {
        Scp {
            command,
            inb: Vec::new(),
            out: Vec::new(),
            out_off: 0,
            eof: false,
            ended_early: false,
            stderr: Vec::new(),
            stderr_read: 0,
            dir,
        }
    }

    /// `ScpPut`: checks the local sources, then runs `scp -t` on the target.
    fn put(t: &Transfer) -> Result<Scp, TransportError> {
        let fail = |m: String| TransportError::Transfer(m);
        if t.sources.is_empty() {
            return Err(fail("scp_put: no source given".into()));
        }
        for src in &t.sources {
            let meta = std::fs::metadata(src).map_err(|e| fail(format!("{src}: {e}")))?;
            if meta.is_dir() && !t.recursive {
                return Err(fail(format!("{src}: is a directory (use .recursive(true))")));
            }
            if Path::new(src).file_name().is_none() {
                return Err(fail(format!("{src}: has no file name to copy into {}", t.target)));
            }
        }
        let mut cmd = "scp -t -p".to_owned();
        if t.recursive {
            cmd.push_str(" -r");
        }
        if t.sources.len() > 1 {
            // The sink insists that the target is a directory.
            cmd.push_str(" -d");
        }
        cmd.push_str(" -- ");
        cmd.push_str(&remote_quote(&t.target).map_err(fail)?);
        Ok(Scp::new(
            cmd,
            ScpDir::Put(PutState {
                recursive: t.recursive,
                stack: t
                    .sources
                    .iter()
                    .rev()
                    .map(|s| PutItem::Path(PathBuf::from(s)))
                    .collect(),
                step: PutStep::Ack(None),
            }),
        ))
    }

    /// `ScpGet`: checks the local target, then runs `scp -f` on the sources.
    fn get(t: &Transfer) -> Result<Scp, TransportError> {
        let fail = |m: String| TransportError::Transfer(m);
        if t.sources.is_empty() {
            return Err(fail("scp_get: no source given".into()));
        }
        let target = PathBuf::from(&t.target);
        let target_is_dir = target.is_dir();
        if t.sources.len() > 1 && !target_is_dir {
            return Err(fail(format!(
                "{}: copying several files needs an existing directory as target",
                t.target
            )));
        }
        let mut cmd = "scp -f -p".to_owned();
        if t.recursive {
            cmd.push_str(" -r");
        }
        cmd.push_str(" --");
        for src in &t.sources {
            cmd.push(' ');
            cmd.push_str(&remote_quote(src).map_err(fail)?);
        }
        let mut scp = Scp::new(
            cmd,
            ScpDir::Get(GetState {
                target,
                target_is_dir,
                times: None,
                dirs: Vec::new(),
                step: GetStep::Record,
            }),
        );
        // The sink starts by saying it is ready.
        scp.out.push(0);
        Ok(scp)
    }

    /// Moves the transfer on until it would block; true once the protocol is
    /// over (completely, or because the remote scp ended early).
    fn pump(&mut self, sess: &Session, ch: &mut ssh2::Channel) -> Result<bool, TaskFail> {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            while self.out_off < self.out.len() {
                match ch.write(&self.out[self.out_off..]) {
                    Ok(0) => return Ok(false),
                    Ok(n) => self.out_off += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // A half-sent packet must be finished first; an exhausted
                        // window lets us read (and so free the remote side) meanwhile.
                        if matches!(sess.block_directions(), BlockDirections::Inbound) {
                            self.read_stderr(ch, &mut buf)?;
                            self.read_stdout(ch, &mut buf)?;
                        }
                        return Ok(false);
                    }
                    Err(e) => {
                        if ssh2::Error::last_session_error(sess).is_some_and(|le| is_socket_error(&le)) {
                            return Err(TaskFail::Lost(format!("writing to the remote scp: {e}")));
                        }
                        // The remote scp went away: its exit status tells why.
                        self.ended_early = true;
                        return Ok(true);
                    }
                }
            }
            self.out.clear();
            self.out_off = 0;
            self.read_stderr(ch, &mut buf)?;
            match self
                .advance()
                .map_err(|m| TaskFail::Task(TransportError::Transfer(m)))?
            {
                ScpStep::Progress => continue,
                ScpStep::Done => return Ok(true),
                ScpStep::NeedInput if self.eof => {
                    self.ended_early = true;
                    return Ok(true);
                }
                ScpStep::NeedInput => {}
            }
            if !self.read_stdout(ch, &mut buf)? {
                return Ok(false);
            }
        }
    }

    /// One read of the remote stdout into `inb`; false if it would block.
    fn read_stdout(&mut self, ch: &mut ssh2::Channel, buf: &mut [u8]) -> Result<bool, TaskFail> {
        loop {
            return match ch.stream(0).read(buf) {
                Ok(0) => {
                    self.eof = true;
                    Ok(true)
                }
                Ok(n) => {
                    self.inb.extend_from_slice(&buf[..n]);
                    Ok(true)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(TaskFail::Lost(format!("reading from the remote scp: {e}"))),
            };
        }
    }

    /// Reads the remote stderr until it would block (it shares the window with stdout).
    fn read_stderr(&mut self, ch: &mut ssh2::Channel, buf: &mut [u8]) -> Result<bool, TaskFail> {
        loop {
            match ch.stream(1).read(buf) {
                Ok(0) => return Ok(true),
                Ok(n) => self.keep_stderr(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(TaskFail::Lost(format!("reading from the remote scp: {e}"))),
            }
        }
    }

    fn keep_stderr(&mut self, data: &[u8]) {
        self.stderr_read += data.len() as u64;
        let room = SCP_STDERR_KEEP.saturating_sub(self.stderr.len());
        self.stderr.extend_from_slice(&data[..data.len().min(room)]);
    }

    /// After the protocol: reads both streams to their end; true when both
    /// ended. As in the command's `drain`, the passes go on until one reads
    /// nothing, since reading either stream may pull the other's packets.
    fn drain(&mut self, ch: &mut ssh2::Channel) -> Result<bool, TaskFail> {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let seen = self.stderr_read;
            let err_done = self.read_stderr(ch, &mut buf)?;
            let mut progress = self.stderr_read != seen;
            while !self.eof {
                if !self.read_stdout(ch, &mut buf)? {
                    break;
                }
                self.inb.clear();
                progress = true;
            }
            if err_done && self.eof {
                return Ok(true);
            }
            if !progress {
                return Ok(false);
            }
        }
    }

    /// The error for a remote scp that failed or ended before the end of the transfer.
    fn exit_error(&self, exit: Exit) -> String {
        let how = match (exit.code, exit.signal) {
            (_, Some(sig)) => format!("was killed by signal {sig}"),
            (Some(0), None) => "ended before the transfer was complete".to_owned(),
            (Some(c), None) => format!("exited with status {c}"),
            (None, None) => "ended without an exit status".to_owned(),
        };
        let text = String::from_utf8_lossy(&self.stderr).trim().to_owned();
        if text.is_empty() {
            format!("the remote `{}` {how}", self.command)
        } else {
            format!("the remote `{}` {how}: {text}", self.command)
        }
    }

    /// Removes and returns the next line (without its `\n`), if complete.
    fn take_line(&mut self) -> Result<Option<Vec<u8>>, String> {
        match self.inb.iter().position(|&b| b == b'\n') {
            Some(i) => {
                let line = self.inb[..i].to_vec();
                self.inb.drain(..=i);
                Ok(Some(line))
            }
            None if self.inb.len() > SCP_MAX_LINE => Err("the remote scp sent an over-long line".into()),
            None => Ok(None),
        }
    }

    /// The answer to what was sent: `\0`, or an error line whose text is returned.
    fn response(&mut self) -> Result<Option<Result<(), String>>, String> {
        match self.inb.first() {
            None => Ok(None),
            Some(0) => {
                self.inb.drain(..1);
                Ok(Some(Ok(())))
            }
            Some(1 | 2) => Ok(self.take_line()?.map(|l| Err(error_text(&l[1..])))),
            Some(_) => Err(format!(
                "unexpected answer from the remote scp: {:?}",
                String::from_utf8_lossy(&self.inb[..self.inb.len().min(200)])
            )),
        }
    }

    /// One step of the protocol; errors are messages naming the path.
    fn advance(&mut self) -> Result<ScpStep, String> {
        // Temporarily take the direction state so that `self`'s buffers stay usable.
        let mut dir = std::mem::replace(&mut self.dir, ScpDir::Put(PutState::empty()));
        let r = match &mut dir {
            ScpDir::Put(p) => self.advance_put(p),
            ScpDir::Get(g) => self.advance_get(g),
        };
        self.dir = dir;
        r
    }

    fn advance_put(&mut self, p: &mut PutState) -> Result<ScpStep, String> {
        match &mut p.step {
            PutStep::Ack(path) => match self.response()? {
                None => Ok(ScpStep::NeedInput),
                Some(Ok(())) => {
                    p.step = PutStep::Next;
                    Ok(ScpStep::Progress)
                }
                Some(Err(msg)) => Err(match path {
                    Some(path) => format!("{}: remote scp: {msg}", path.display()),
                    None => format!("remote scp: {msg}"),
                }),
            },
            PutStep::Next => {
                match p.stack.pop() {
                    None => {
                        p.step = PutStep::Done;
                        return Ok(ScpStep::Done);
                    }
                    Some(PutItem::Line(line, path)) => {
                        self.out.extend_from_slice(&line);
                        p.step = PutStep::Ack(Some(path));
                    }
                    Some(PutItem::Data(file, left, path)) => p.step = PutStep::Data { file, left, path },
                    Some(PutItem::Path(path)) => {
                        let items = put_items(&path, p.recursive)?;
                        p.stack.extend(items.into_iter().rev());
                    }
                }
                Ok(ScpStep::Progress)
            }
            PutStep::Data { file, left, path } => {
                if *left == 0 {
                    // The source's "file sent" status.
                    self.out.push(0);
                    p.step = PutStep::Ack(Some(std::mem::take(path)));
                    return Ok(ScpStep::Progress);
                }
                let n = (*left).min(SCP_CHUNK as u64) as usize;
                self.out.resize(n, 0);
                let got = loop {
                    match file.read(&mut self.out[..n]) {
                        Ok(got) => break got,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(format!("{}: {e}", path.display())),
                    }
                };
                if got == 0 {
                    return Err(format!("{}: the file shrank while it was being sent", path.display()));
                }
                self.out.truncate(got);
                *left -= got as u64;
                Ok(ScpStep::Progress)
            }
            PutStep::Done => Ok(ScpStep::Done),
        }
    }

    fn advance_get(&mut self, g: &mut GetState) -> Result<ScpStep, String> {
        if let GetStep::Data {
            file,
            left,
            path,
            mode,
            times,
        } = &mut g.step
        {
            if *left > 0 {
                if self.inb.is_empty() {
                    return Ok(ScpStep::NeedInput);
                }
                let n = (*left).min(self.inb.len() as u64) as usize;
                file.write_all(&self.inb[..n])
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                self.inb.drain(..n);
                *left -= n as u64;
                return Ok(ScpStep::Progress);
            }
            return match self.response()? {
                None => Ok(ScpStep::NeedInput),
                Some(Err(msg)) => Err(format!("{}: remote scp: {msg}", path.display())),
                Some(Ok(())) => {
                    if let Some(t) = times {
                        file.set_times(file_times(*t))
                            .map_err(|e| format!("{}: cannot keep the modification time: {e}", path.display()))?;
                    }
                    file.set_permissions(std::fs::Permissions::from_mode(*mode))
                        .map_err(|e| format!("{}: cannot set its mode: {e}", path.display()))?;
                    g.step = GetStep::Record;
                    self.out.push(0);
                    Ok(ScpStep::Progress)
                }
            };
        }
        let Some(line) = self.take_line()? else {
            if self.eof && self.inb.is_empty() && g.dirs.is_empty() {
                return Ok(ScpStep::Done);
            }
            return Ok(ScpStep::NeedInput);
        };
        let text = || String::from_utf8_lossy(&line).into_owned();
        let bad = || format!("unexpected record from the remote scp: {:?}", text());
        match line.first() {
            Some(1 | 2) => {
                let msg = error_text(&line[1..]);
                let hint = if msg.contains("not a regular file") {
                    " (a directory needs .recursive(true))"
                } else {
                    ""
                };
                Err(format!("remote scp: {msg}{hint}"))
            }
            Some(b'T') => {
                let f: Vec<&[u8]> = line[1..].split(|&b| b == b' ').collect();
                let num = |i: usize| -> Option<i64> { std::str::from_utf8(f.get(i)?).ok()?.parse().ok() };
                g.times = Some((num(0).ok_or_else(bad)?, num(2).ok_or_else(bad)?));
                self.out.push(0);
                Ok(ScpStep::Progress)
            }
            Some(b'C' | b'D') => {
                let (mode, size, name) = parse_record(&line[1..]).ok_or_else(bad)?;
                let dest = g.dest(name)?;
                let times = g.times.take();
                if line[0] == b'D' {
                    if dest.exists() {
                        if !dest.is_dir() {
                            return Err(format!("{}: not a directory", dest.display()));
                        }
                    } else {
                        std::fs::create_dir(&dest).map_err(|e| format!("{}: {e}", dest.display()))?;
                    }
                    g.dirs.push((dest, mode, times));
                } else {
                    let file = std::fs::File::options()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .open(&dest)
                        .map_err(|e| format!("{}: {e}", dest.display()))?;
                    g.step = GetStep::Data {
                        file,
                        left: size,
                        path: dest,
                        mode,
                        times,
                    };
                }
                self.out.push(0);
                Ok(ScpStep::Progress)
            }
            Some(b'E') => {
                let (dir, mode, times) = g.dirs.pop().ok_or_else(bad)?;
                // Mode and times last: a read-only directory must still take its contents.
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| format!("{}: cannot set its mode: {e}", dir.display()))?;
                if let Some(t) = times {
                    std::fs::File::open(&dir)
                        .and_then(|f| f.set_times(file_times(t)))
                        .map_err(|e| format!("{}: cannot keep the modification time: {e}", dir.display()))?;
                }
                self.out.push(0);
                Ok(ScpStep::Progress)
            }
            _ => Err(bad()),
        }
    }
}

impl PutState {
    fn empty() -> PutState {
        PutState {
            recursive: false,
            stack: Vec::new(),
            step: PutStep::Done,
        }
    }
}

impl GetState {
    /// Where a received `C` or `D` record goes.
    fn dest(&self, name: &[u8]) -> Result<PathBuf, String> {
        if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
            return Err(format!(
                "the remote scp sent an unsafe file name {:?}",
                String::from_utf8_lossy(name)
            ));
        }
        let name = std::ffi::OsStr::from_bytes(name);
        Ok(match self.dirs.last() {
            Some((dir, ..)) => dir.join(name),
            None if self.target_is_dir => self.target.join(name),
            None => self.target.clone(),
        })
    }
}

/// The records that send one local path: `T` and `C` plus its data, or `T`,
/// `D`, its entries (sorted by name) and `E`.
fn put_items(path: &Path, recursive: bool) -> Result<Vec<PutItem>, String> {
    let shown = || path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", shown()))?;
    let name = path
        .file_name()
        .ok_or_else(|| format!("{}: has no file name", shown()))?
        .as_bytes();
    if name.contains(&b'\n') {
        return Err(format!("{}: a file name with a newline cannot be sent by scp", shown()));
    }
    let times = format!("T{} 0 {} 0\n", meta.mtime().max(0), meta.atime().max(0)).into_bytes();
    let mode = meta.mode() & 0o7777;
    let mut items = vec![PutItem::Line(times, path.to_path_buf())];
    let record = |kind: char, size: u64| {
        let mut l = format!("{kind}{mode:04o} {size} ").into_bytes();
        l.extend_from_slice(name);
        l.push(b'\n');
        l
    };
    if meta.is_dir() {
        if !recursive {
            return Err(format!("{}: is a directory (use .recursive(true))", shown()));
        }
        let mut entries = std::fs::read_dir(path)
            .and_then(|rd| rd.map(|e| e.map(|e| e.path())).collect::<io::Result<Vec<_>>>())
            .map_err(|e| format!("{}: {e}", shown()))?;
        entries.sort();
        items.push(PutItem::Line(record('D', 0), path.to_path_buf()));
        items.extend(entries.into_iter().map(PutItem::Path));
        items.push(PutItem::Line(b"E\n".to_vec(), path.to_path_buf()));
    } else if meta.is_file() {
        let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", shown()))?;
        let size = file.metadata().map_err(|e| format!("{}: {e}", shown()))?.len();
        items.push(PutItem::Line(record('C', size), path.to_path_buf()));
        items.push(PutItem::Data(file, size, path.to_path_buf()));
    } else {
        return Err(format!("{}: not a regular file", shown()));
    }
    Ok(items)
}

/// Parses `<mode> <size> <name>` (after the `C` or `D`).
fn parse_record(rest: &[u8]) -> Option<(u32, u64, &[u8])> {
    let mut parts = rest.splitn(3, |&b| b == b' ');
    let mode = u32::from_str_radix(std::str::from_utf8(parts.next()?).ok()?, 8).ok()?;
    let size = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    Some((mode & 0o7777, size, parts.next()?))
}

/// The text of a remote error line.
fn error_text(msg: &[u8]) -> String {
    String::from_utf8_lossy(msg).trim().to_owned()
}

/// `FileTimes` from (mtime, atime) in seconds since the epoch.
fn file_times((mtime, atime): Times) -> std::fs::FileTimes {
    let at = |s: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(s.max(0) as u64);
    std::fs::FileTimes::new()
        .set_modified(at(mtime))
        .set_accessed(at(atime))
}

/// Quotes a remote path for the remote shell, keeping a leading `~/` expandable.
fn remote_quote(path: &str) -> Result<String, String> {
    let quote = |s: &str| {
        shlex::try_quote(s)
            .map(|q| q.into_owned())
            .map_err(|_| format!("{path}: a path with a NUL byte cannot be sent"))
    };
    match path.strip_prefix("~/") {
        Some(rest) if !rest.is_empty() => Ok(format!("~/{}", quote(rest)?)),
        _ if path == "~" || path == "~/" => Ok(path.to_owned()),
        _ => quote(path),
    }
}

/// Starts `cmd` on the channel: `Ok(false)` if it would block (call again).
/// Opens a task's channel: the spare if it is ready; else continues the
/// spare's open if one is in flight (`adopted`), or starts one. `Ok(None)`:
/// it would block.
fn open_channel(sess: &Session, spare: &mut Spare, adopted: &mut bool) -> Result<Option<ssh2::Channel>, ssh2::Error> {
    match std::mem::replace(spare, Spare::None) {
        Spare::Ready(ch) => return Ok(Some(ch)),
        Spare::Opening => *adopted = true,
        Spare::Off => *spare = Spare::Off,
        Spare::None => {}
    }
    match sess.channel_session() {
        Ok(ch) => Ok(Some(ch)),
        Err(e) if would_block(&e) => Ok(None),
        Err(e) if *adopted && code(&e) == LIBSSH2_ERROR_CHANNEL_FAILURE => {
            // The spare was refused (it was a second channel while the last
            // task's was open): no more spares; this one opens anew.
            *spare = Spare::Off;
            *adopted = false;
            open_channel(sess, spare, adopted)
        }
        Err(e) => Err(e),
    }
}

/// Opens the task's channel (see [`open_channel`]). A refused open is tried
/// again a few times, shortly after: sshd frees a closed channel's session
/// slot only after the loop turn that read its close, so with `MaxSessions
/// 1` an open sent right behind the last close is refused. After that the
/// session is given up (a new connection has free slots).
fn open_for_task(sess: &Session, spare: &mut Spare, o: &mut OpenState) -> Result<Option<ssh2::Channel>, TaskFail> {
    if o.retry_at.is_some_and(|at| Instant::now() < at) {
        return Ok(None);
    }
    o.retry_at = None;
    match open_channel(sess, spare, &mut o.adopted) {
        Ok(ch) => Ok(ch),
        Err(e) if code(&e) == LIBSSH2_ERROR_CHANNEL_FAILURE && o.refusals < OPEN_RETRIES => {
            log::debug!(target: "ssh_parallel", "channel refused ({e}); trying again");
            o.retry_at = Some(Instant::now() + OPEN_RETRY_FIRST * 4u32.pow(o.refusals));
            o.refusals += 1;
            Ok(None)
        }
        Err(e) => Err(TaskFail::Lost(format!("opening a channel: {e}"))),
    }
}

/// A refusal is the task's own error (made by `refused`); anything else
/// means the session is lost.
fn exec(
    ch: &mut ssh2::Channel,
    cmd: &str,
    what: &str,
    refused: fn(String) -> TransportError,
) -> Result<bool, TaskFail> {
    match ch.exec(cmd) {
        Ok(()) => Ok(true),
        Err(e) if would_block(&e) => Ok(false),
        Err(e) if code(&e) == LIBSSH2_ERROR_CHANNEL_REQUEST_DENIED => Err(TaskFail::Task(refused(format!(
            "the server refused to run {what}: {e}"
        )))),
        Err(e) => Err(TaskFail::Lost(format!("starting {what}: {e}"))),
    }
}

/// Closes a finished task's channel and reads its exit status or signal.
fn close_channel(ch: &mut ssh2::Channel) -> Result<Flow, TaskFail> {
    match ch.close() {
        Ok(()) => {}
        Err(e) if would_block(&e) => return Ok(Flow::Wait),
        Err(e) => return Err(TaskFail::Lost(format!("closing the channel: {e}"))),
    }
    let signal = ch
        .exit_signal()
        .ok()
        .and_then(|s| s.exit_signal)
        .map(|name| signal_number(&name));
    let code = if signal.is_some() { None } else { ch.exit_status().ok() };
    Ok(Flow::TaskDone(Exit { code, signal }))
}

/// Reads stdout and stderr until both would block; true once both hit EOF.
///
/// Reading one stream makes libssh2 pull every packet the socket holds, the
/// other stream's too, so the passes go on until one finds nothing: only
/// then is nothing left in libssh2's buffers that no new edge would announce.
fn drain(t: &mut Task) -> Result<bool, TaskFail> {
    let ch = t.channel.as_mut().expect("channel while draining");
    let mut buf = [0u8; 32 * 1024];
    let mut eof = [false; 2];
    loop {
        let mut progress = false;
        for stream_id in [0, 1] {
            let (mut s, sink) = if stream_id == 0 {
                (ch.stream(0), &mut t.out)
            } else {
                (ch.stream(1), &mut t.err)
            };
            while !eof[stream_id] {
                match s.read(&mut buf) {
                    Ok(0) => {
                        // The EOF may have come with data for the other stream.
                        eof[stream_id] = true;
                        progress = true;
                    }
                    Ok(n) => {
                        progress = true;
                        sink.write(&buf[..n])
                            .map_err(|m| TaskFail::Task(TransportError::local(m)))?
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(TaskFail::Lost(format!("reading the command's output: {e}"))),
                }
            }
        }
        if eof == [true, true] {
            return Ok(true);
        }
        if !progress {
            return Ok(false);
        }
    }
}

/// Where a command is in its channel's life.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum TaskStage {
    Open,
    Env,
    Pty,
    Exec,
    Stdin,
    Eof,
    Drain,
    Close,
    /// An scp transfer speaks the SCP protocol with the remote `scp`.
    Scp,
}

/// A command running on a session.
struct Task {
    label: LabelId,
    token: Token,
    action: Arc<Action>,
    stage: TaskStage,
    channel: Option<ssh2::Channel>,
    env_next: usize,
    env_fallback: Vec<(String, String)>,
    stdin: Option<Arc<[u8]>>,
    stdin_off: usize,
    out: Sink,
    err: Sink,
    started: SystemTime,
    /// Set for `ScpPut` / `ScpGet`.
    scp: Option<Box<Scp>>,
    /// Set for `RsyncPut` / `RsyncGet`.
    rsync: Option<Box<Bridge>>,
    /// Open the next task's channel ahead (from [`Job::prefetch`]).
    prefetch: bool,
    open: OpenState,
}

/// How a task's channel open is going.
#[derive(Default)]
struct OpenState {
    /// It was started as a spare.
    adopted: bool,
    /// Opens the server refused, and when to try again.
    refusals: u32,
    retry_at: Option<Instant>,
}

impl Task {
    /// Opens the sinks and loads stdin; errors are the task's own (local).
    fn new(job: &Job, c: &Command, started: SystemTime) -> Result<Task, TransportError> {
        let out = Sink::open(job.name.clone(), Stream::Stdout, &c.stdout).map_err(TransportError::local)?;
        let err = Sink::open(job.name.clone(), Stream::Stderr, &c.stderr).map_err(TransportError::local)?;
        let stdin = match &c.stdin.0 {
            StdinKind::Null => None,
            StdinKind::Data(d) => Some(d.clone()),
            StdinKind::File(path) => Some(
                std::fs::read(path)
                    .map_err(|e| TransportError::local(format!("cannot read stdin file {path:?}: {e}")))?
                    .into(),
            ),
        };
        Ok(Task::with_sinks(job, started, out, err, stdin))
    }

    /// A task that has not started, writing into `out` and `err`.
    fn with_sinks(job: &Job, started: SystemTime, out: Sink, err: Sink, stdin: Option<Arc<[u8]>>) -> Task {
        Task {
            label: job.label,
            token: job.token,
            action: job.action.clone(),
            stage: TaskStage::Open,
            channel: None,
            env_next: 0,
            env_fallback: Vec::new(),
            stdin,
            stdin_off: 0,
            out,
            err,
            started,
            scp: None,
            rsync: None,
            prefetch: job.prefetch,
            open: OpenState::default(),
        }
    }

    /// Whether a `channel_session` call may be in flight (it must be finished
    /// before anything else is done on the session).
    fn opening(&self) -> bool {
        match &self.rsync {
            Some(b) => b.stage == RsyncStage::Open,
            None => self.stage == TaskStage::Open,
        }
    }

    /// A transfer with the local rsync over a bridge; its socket is polled
    /// under the connection's auxiliary token.
    fn new_rsync(job: &Job, cx: &Cx<'_>, key: usize, started: SystemTime) -> Result<Task, TransportError> {
        let (t, put) = match &*job.action {
            Action::RsyncPut(RsyncPut(t)) => (t, true),
            Action::RsyncGet(RsyncGet(t)) => (t, false),
            other => {
                return Err(TransportError::local(format!(
                    "{} is not an rsync transfer (transport bug)",
                    other.describe()
                )))
            }
        };
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
        // rsync's own output (say, --stats) and both sides' stderr go in the report.
        Task::transfer(job, started, &Output::capture(), None, Some(Box::new(bridge)))
    }

    /// A transfer task; `keep` says what becomes of its output.
    fn transfer(
        job: &Job,
        started: SystemTime,
        keep: &Output,
        scp: Option<Box<Scp>>,
        rsync: Option<Box<Bridge>>,
    ) -> Result<Task, TransportError> {
        let out = Sink::open(job.name.clone(), Stream::Stdout, keep).map_err(TransportError::local)?;
        let err = Sink::open(job.name.clone(), Stream::Stderr, keep).map_err(TransportError::local)?;
        let mut t = Task::with_sinks(job, started, out, err, None);
        t.scp = scp;
        t.rsync = rsync;
        Ok(t)
    }

    /// A transfer: checks the local side, then runs `scp -t` or `scp -f` remotely.
    fn new_scp(job: &Job, started: SystemTime) -> Result<Task, TransportError> {
        let scp = match &*job.action {
            Action::ScpPut(ScpPut(t)) => Scp::put(t)?,
            Action::ScpGet(ScpGet(t)) => Scp::get(t)?,
            other => {
                return Err(TransportError::local(format!(
                    "{} is not an scp transfer (transport bug)",
                    other.describe()
                )))
            }
        };
        Task::transfer(job, started, &Output::null(), Some(Box::new(scp)), None)
    }

    /// Answers the scheduler with `result` and what the sinks kept.
    fn finish(mut self, events: &Sender<Event>, result: Result<Exit, TransportError>) {
        if let Some(b) = self.rsync.as_mut() {
            let result = match result {
                Ok(_) => match &*self.action {
                    Action::RsyncPut(RsyncPut(t)) | Action::RsyncGet(RsyncGet(t)) => {
                        b.result(t).map(|()| Exit::OK).map_err(TransportError::Transfer)
                    }
                    _ => Err(TransportError::local("not an rsync transfer (transport bug)")),
                },
                Err(e) => Err(e),
            };
            if let Some(local) = &b.local {
                let _ = self.out.write(&local.stdout);
                let _ = self.err.write(&local.stderr);
            }
            let stdout = self.out.finish().unwrap_or_default();
            let stderr = self.err.finish().unwrap_or_default();
            finish(
                events,
                self.label,
                self.token,
                Outcome {
                    result,
                    stdout,
                    stderr,
                    started: self.started,
                },
            );
            return;
        }
        if let Some(scp) = &self.scp {
            let result = match result {
                Ok(exit) if exit.code == Some(0) && !scp.ended_early => Ok(Exit::OK),
                Ok(exit) => Err(TransportError::Transfer(scp.exit_error(exit))),
                Err(e) => Err(e),
            };
            finish(events, self.label, self.token, Outcome::new(result, self.started));
            return;
        }
        let stdout = self.out.finish();
        let stderr = self.err.finish();
        let outcome = match (result, stdout, stderr) {
            (Ok(exit), Ok(so), Ok(se)) => Outcome {
                result: Ok(exit),
                stdout: so,
                stderr: se,
                started: self.started,
            },
            (Err(e), so, se) => Outcome {
                result: Err(e),
                stdout: so.unwrap_or_default(),
                stderr: se.unwrap_or_default(),
                started: self.started,
            },
            (Ok(_), Err(m), _) | (Ok(_), _, Err(m)) => Outcome::new(Err(TransportError::local(m)), self.started),
        };
        finish(events, self.label, self.token, outcome);
    }
}

/// Authentication progress.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum AuthStage {
    Methods,
    /// In-memory keys.
    Data,
    /// Key files the host names.
    Key,
    /// Every identity of the ssh-agent.
    Agent,
    /// `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa` (when the host names no key).
    DefaultKey,
    Password,
    Keyboard,
    Failed,
}

/// Authentication state of one connection.
struct Auth {
    stage: AuthStage,
    /// What the server accepts (comma-separated); `None` until asked.
    methods: Option<String>,
    keys: Vec<PathBuf>,
    next_key: usize,
    next_data: usize,
    agent: Option<ssh2::Agent>,
    agent_ids: Vec<ssh2::PublicKey>,
    next_agent: usize,
    default_keys: Vec<PathBuf>,
    next_default: usize,
    /// What was tried and why it failed, for the error message.
    tried: Vec<String>,
    /// Every key was tried.
    keys_done: bool,
}

impl Auth {
    /// Whether the server lists `method` (anything goes before it was asked).
    fn allows(&self, method: &str) -> bool {
        self.methods
            .as_deref()
            .map_or(true, |ms| ms.split(',').any(|m| m == method))
    }
}

extern "C" {
    // In the libssh2 that libssh2-sys builds and links, but not bound by it.
    fn libssh2_session_set_read_timeout(session: *mut std::ffi::c_void, timeout_s: std::ffi::c_long);
    #[cfg(test)]
    fn libssh2_session_get_read_timeout(session: *mut std::ffi::c_void) -> std::ffi::c_long;
}

/// libssh2 gives up waiting for an awaited packet after its own read timeout
/// (60 s by default), even in non-blocking mode, and reports it as the step
/// failing (an auth failure while waiting for the USERAUTH answer, say). Our
/// deadlines must fire first, so this is set beyond them; the libssh2 limit
/// stays as a last resort for lent (blocking) sessions.
fn set_read_timeout(sess: &Session, timeout: Duration) {
    let secs = std::ffi::c_long::try_from(timeout.as_secs().max(1)).unwrap_or(std::ffi::c_long::MAX);
    let mut raw = sess.raw();
    // SAFETY: a valid session pointer, held under the session's lock for the call.
    unsafe { libssh2_session_set_read_timeout(&mut *raw as *mut _ as *mut std::ffi::c_void, secs) }
}

/// Connects to the ssh-agent and lists its identities. `Ok(None)` when no
/// agent is configured (`$SSH_AUTH_SOCK` unset and no socket given); the
/// agent socket is local, so its blocking calls are brief.
fn open_agent(sess: &Session, host: &Host) -> Result<Option<(ssh2::Agent, Vec<ssh2::PublicKey>)>, String> {
    if host.agent_socket.is_none() && std::env::var_os("SSH_AUTH_SOCK").map_or(true, |s| s.is_empty()) {
        return Ok(None);
    }
    let mut agent = sess.agent().map_err(|e| e.to_string())?;
    if let Some(path) = &host.agent_socket {
        agent.set_identity_path(path).map_err(|e| e.to_string())?;
    }
    let where_ = host
        .agent_socket
        .as_ref()
        .map_or_else(|| "$SSH_AUTH_SOCK".to_owned(), |p| p.display().to_string());
    agent
        .connect()
        .map_err(|e| format!("cannot connect to the agent at {where_}: {e}"))?;
    agent
        .list_identities()
        .map_err(|e| format!("cannot list the agent's identities: {e}"))?;
    let ids = agent.identities().map_err(|e| e.to_string())?;
    if ids.is_empty() {
        return Err(format!("the agent at {where_} has no identities"));
    }
    Ok(Some((agent, ids)))
}

/// Answers every keyboard-interactive prompt with the password.
struct Answer(String);

impl ssh2::KeyboardInteractivePrompt for Answer {
    fn prompt<'a>(&mut self, _user: &str, _instructions: &str, prompts: &[ssh2::Prompt<'a>]) -> Vec<String> {
        prompts.iter().map(|_| self.0.clone()).collect()
    }
}

/// The numeric libssh2 error code.
fn code(e: &ssh2::Error) -> i32 {
    match e.code() {
        ErrorCode::Session(c) => c,
        ErrorCode::SFTP(c) => c,
    }
}

/// libssh2's EAGAIN: repeat the same call when the socket is ready.
pub(crate) fn would_block(e: &ssh2::Error) -> bool {
    matches!(e.code(), ErrorCode::Session(LIBSSH2_ERROR_EAGAIN))
}

/// Errors that mean the connection itself is gone.
fn is_socket_error(e: &ssh2::Error) -> bool {
    matches!(
        code(e),
        LIBSSH2_ERROR_SOCKET_SEND
            | LIBSSH2_ERROR_SOCKET_RECV
            | LIBSSH2_ERROR_SOCKET_DISCONNECT
            | LIBSSH2_ERROR_SOCKET_TIMEOUT
    )
}

/// The handshake failure message; says so when SHA-1-only algorithms are the likely cause.
fn handshake_error(target: &str, e: &ssh2::Error) -> String {
    let c = code(e);
    if c == LIBSSH2_ERROR_KEX_FAILURE
        || c == LIBSSH2_ERROR_KEY_EXCHANGE_FAILURE
        || e.message().contains("exchange encryption keys")
    {
        format!(
            "{target}: SSH handshake failed: {e}. This client's libssh2 has SHA-1 and DSA compiled out: \
             a server offering only ssh-rsa (SHA-1) or ssh-dss host keys, *-sha1 key exchange or hmac-sha1 \
             cannot be reached; enable SHA-2 algorithms (rsa-sha2-256/512, ed25519, curve25519) on the server"
        )
    } else {
        format!("{target}: SSH handshake failed: {e}")
    }
}

/// `$HOME`, if set.
fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from)
}

/// OpenSSH's default identities that exist.
fn default_keys() -> Vec<PathBuf> {
    let Some(home) = home() else { return Vec::new() };
    ["id_ed25519", "id_ecdsa", "id_rsa"]
        .iter()
        .map(|k| home.join(".ssh").join(k))
        .filter(|p| p.is_file())
        .collect()
}

/// Checks the server's key against `~/.ssh/known_hosts` under the host's policy.
fn check_host_key(sess: &Session, host: &Host, port: u16) -> Result<(), String> {
    if host.host_key_check == HostKeyCheck::Off {
        return Ok(());
    }
    let name = if port == 22 {
        host.hostname.clone()
    } else {
        format!("[{}]:{port}", host.hostname)
    };
    let (key, _) = sess
        .host_key()
        .ok_or_else(|| format!("{name}: the server sent no host key"))?;
    let key_type = key_type_name(key);
    let fp = sess
        .host_key_hash(HashType::Sha256)
        .map(|h| format!("SHA256:{}", base64(h, false)))
        .unwrap_or_else(|| "(no fingerprint)".into());
    let path = home()
        .map(|h| h.join(".ssh").join("known_hosts"))
        .ok_or_else(|| format!("{name}: cannot check the host key: HOME is not set"))?;
    let mut kh = sess
        .known_hosts()
        .map_err(|e| format!("{name}: cannot check the host key: {e}"))?;
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    // Line by line: libssh2 stops reading a file at the first line it cannot parse.
    for line in text.lines().map(str::trim) {
        if !line.is_empty() && !line.starts_with('#') {
            let _ = kh.read_str(line, KnownHostFileKind::OpenSSH);
        }
    }
    match kh.check_port(&host.hostname, port, key) {
        CheckResult::Match => Ok(()),
        CheckResult::Mismatch => Err(format!(
            "host key verification failed for {name}: the server's {key_type} key {fp} does not match the one \
             recorded in {}; if the host was really reinstalled, remove the old entry",
            path.display()
        )),
        CheckResult::NotFound | CheckResult::Failure => match host.host_key_check {
            HostKeyCheck::AcceptNew => record_host_key(&path, &text, &name, &key_type, key)
                .map_err(|e| format!("{name}: cannot record its host key {fp} in {}: {e}", path.display())),
            _ => Err(format!(
                "host key verification failed for {name}: no key for it in {} (the server offers {key_type} {fp}); \
                 add it there or use HostKeyCheck::AcceptNew",
                path.display()
            )),
        },
    }
}

/// Appends `name type base64` to known_hosts (accept-new).
fn record_host_key(path: &Path, old: &str, name: &str, key_type: &str, key: &[u8]) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    let sep = if old.is_empty() || old.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    f.write_all(format!("{sep}{name} {key_type} {}\n", base64(key, true)).as_bytes())
}

/// The key type named at the start of an SSH public key blob.
fn key_type_name(blob: &[u8]) -> String {
    if blob.len() >= 4 {
        let n = u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]) as usize;
        if let Some(t) = blob.get(4..4 + n) {
            return String::from_utf8_lossy(t).into_owned();
        }
    }
    "unknown".to_owned()
}

/// Standard base64 (RFC 4648), with or without `=` padding.
fn base64(data: &[u8], pad: bool) -> String {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
    use base64::Engine as _;
    if pad {
        STANDARD.encode(data)
    } else {
        STANDARD_NO_PAD.encode(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libssh2_read_timeout_goes_beyond_our_deadlines() {
        let sess = Session::new().unwrap();
        set_read_timeout(&sess, Duration::from_secs(200));
        let mut raw = sess.raw();
        // SAFETY: as in set_read_timeout.
        let got = unsafe { libssh2_session_get_read_timeout(&mut *raw as *mut _ as *mut std::ffi::c_void) };
        assert_eq!(got, 200);
    }

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b"", true), "");
        assert_eq!(base64(b"f", true), "Zg==");
        assert_eq!(base64(b"fo", true), "Zm8=");
        assert_eq!(base64(b"foo", true), "Zm9v");
        assert_eq!(base64(b"foob", false), "Zm9vYg");
    }

    #[test]
    fn key_type_from_blob() {
        let mut blob = vec![0, 0, 0, 11];
        blob.extend_from_slice(b"ssh-ed25519");
        blob.extend_from_slice(&[0, 0, 0, 1, 7]);
        assert_eq!(key_type_name(&blob), "ssh-ed25519");
        assert_eq!(key_type_name(&[1]), "unknown");
    }
}
