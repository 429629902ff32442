//! The I/O thread: one mio `Poll`, its waker, the request channel and the
//! connections of the labels assigned to it. A turn polls until the first
//! timer, notes which sessions were heard from, takes requests, resolver
//! answers, returned parsub sessions and kicks, steps the connections with
//! events and then those whose timer is due, and settles the ones touched.
//!
//! Invariant: a turn costs what happened in it. Nothing walks every
//! connection except shutting down; a connection is stepped only for an
//! event, a request, a kick or its timer, and every connection stepped in a
//! turn is settled at its end (so its timer entry is never stale).
//!
//! Jump sessions are connections too, pooled by jump host (`jump_pool`):
//! the loop attaches tunnels when a connection behind one asks ([`News`]),
//! routes tunnel sockets' events, and after each turn lets the pools spread
//! slow queues (a walk over the jump hosts only, a handful).
//!
//! May use: `conn` (the connections it owns), `jump` (`News`, tunnels),
//! `jump_pool`, `key_file`, the
//! parent `ssh` module, `transport` (protocol, `parsub`), `task` (`Action`),
//! `plan` (`LabelId`), `host`.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use mio::{Events, Poll, Registry, Waker};
use parking_lot::Mutex;

use super::conn::{Conn, Phase, Spare};
use super::jump::{News, TUN};
use super::jump_pool::JumpPools;
use super::key_file::KeyFiles;
use super::{fail, finish};
use crate::plan::LabelId;
use crate::task::Action;
use crate::transport::protocol::{ConnId, Event, Job, Outcome, Request, Token, TransportError};

/// The poll token of the waker; connections use their key.
const WAKER: mio::Token = mio::Token(usize::MAX);
/// Set in the poll token of a connection's second socket (an rsync bridge);
/// the rest of the token is the connection's key.
pub(super) const AUX: usize = 1 << (usize::BITS - 2);

/// Starts one I/O thread.
pub(super) fn spawn_one(
    events: Sender<Event>,
    index: usize,
) -> io::Result<(Sender<Request>, Arc<Waker>, JoinHandle<()>)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = crossbeam_channel::unbounded::<Request>();
    let (resolved_tx, resolved_rx) = crossbeam_channel::unbounded();
    let (returned_tx, returned_rx) = crossbeam_channel::unbounded();
    let (kick_tx, kick_rx) = crossbeam_channel::unbounded();
    let (news_tx, news_rx) = crossbeam_channel::unbounded();
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
        news_tx,
        news_rx,
        keys: KeyFiles::default(),
        idle: Duration::ZERO,
        pools: JumpPools::default(),
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
pub(super) type Resolved = (usize, u64, Result<Vec<SocketAddr>, String>);

/// A parsub that borrowed its label's session has returned.
pub(super) struct Returned {
    /// The connection that lent it.
    pub(super) key: usize,
    /// The parsub's token: an answer for an abandoned loan (another token
    /// now, or another phase) is dropped.
    pub(super) token: Token,
    pub(super) outcome: Outcome,
}

/// The I/O thread's state.
struct Loop {
    /// Every socket of every connection here is registered in it,
    /// edge-triggered, under the connection's key (its bridge socket under
    /// `key | AUX`).
    poll: Poll,
    /// Wakes `poll` for anything that arrives on a channel below.
    waker: Arc<Waker>,
    /// Requests from the scheduler; disconnected means shut down.
    rx: Receiver<Request>,
    /// To the scheduler. Every `Run` gets exactly one `Finished` on it.
    events: Sender<Event>,
    /// Connections by key (the key is also their poll token). A connection
    /// whose phase is `Done` is removed at the end of the turn (`reap`).
    conns: HashMap<usize, Conn>,
    /// The scheduler's connection ids to keys; an id whose connection is
    /// gone is absent, and its requests are answered as lost or closed.
    by_id: HashMap<ConnId, usize>,
    /// The next key; keys are never reused, so a late answer (resolver,
    /// parsub) about a removed connection finds nothing.
    next_key: usize,
    /// Resolver threads answer here (and wake the poll).
    resolved_tx: Sender<Resolved>,
    resolved_rx: Receiver<Resolved>,
    /// `Parsub::no_ssh` closures running on their own threads: token -> label.
    /// Whoever removes a token (the thread when done, a cancel) answers it.
    detached: Arc<Mutex<HashMap<Token, LabelId>>>,
    /// Parsubs give their borrowed session back here (and wake the poll).
    returned_tx: Sender<Returned>,
    returned_rx: Receiver<Returned>,
    /// Connections to step because something outside the loop happened (a
    /// local rsync exited).
    kick_tx: Sender<usize>,
    kick_rx: Receiver<usize>,
    /// What connections and jump sessions tell the loop (tunnels asked for,
    /// opened, gone); handled within the turn that sent it.
    news_tx: Sender<News>,
    news_rx: Receiver<News>,
    /// Identity files read once for all this loop's logins.
    keys: KeyFiles,
    /// Time spent waiting in `poll`, in all (see [`Cx::idle`]).
    idle: Duration,
    /// Jump sessions by jump host, and which carries each tunnel.
    pools: JumpPools,
    /// The scheduler hung up: close everything and exit.
    closing_all: bool,
    /// Every connection's next wake-up, soonest first: `(at, key)` is here
    /// exactly when that connection's `timer` is `Some(at)`.
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
            news: &$lp.news_tx,
            keys: &$lp.keys,
            idle: $lp.idle,
        }
    };
}

/// What connection steps need from the loop.
pub(super) struct Cx<'a> {
    /// To the scheduler.
    pub(super) events: &'a Sender<Event>,
    /// To register and deregister sockets.
    pub(super) registry: &'a Registry,
    /// Given to helper threads so their answers wake the loop.
    pub(super) waker: &'a Arc<Waker>,
    pub(super) resolved: &'a Sender<Resolved>,
    pub(super) returned: &'a Sender<Returned>,
    /// A connection's key sent here gets it stepped in the next turn.
    pub(super) kicks: &'a Sender<usize>,
    /// To the loop, within this turn.
    pub(super) news: &'a Sender<News>,
    /// The identity files this loop has read.
    pub(super) keys: &'a KeyFiles,
    /// How long the loop has sat waiting in `poll`, in all, up to this turn.
    pub(super) idle: Duration,
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
            let polled = Instant::now();
            let result = self.poll.poll(&mut events, timeout);
            self.idle += polled.elapsed();
            if let Err(e) = result {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!(target: "ssh_parallel", "ssh transport: poll failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            let now = Instant::now();
            let mut ready: Vec<(usize, bool)> = Vec::with_capacity(events.iter().count());
            for ev in events.iter().filter(|ev| ev.token() != WAKER) {
                if ev.token().0 & TUN != 0 {
                    // A tunnel's socket: its jump session pumps it.
                    let id = ev.token().0 & !TUN;
                    let jump = self.pools.tunnels.get(&id).copied();
                    let known = jump
                        .and_then(|k| self.conns.get_mut(&k))
                        .and_then(|c| c.jump.as_mut())
                        .is_some_and(|j| j.tunnel_event(id, ev.is_readable() || ev.is_read_closed(), ev.is_writable()));
                    match jump.filter(|_| known) {
                        Some(k) => ready.push((k, false)),
                        None => {
                            self.pools.tunnels.remove(&id);
                        }
                    }
                    continue;
                }
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
                        if matches!(c.phase, Phase::Idle) && !matches!(c.spare, Spare::Opening) && c.jump.is_none() {
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
            self.take_news();
            {
                let cx = cx!(self);
                let spread = self.pools.spread(&cx, &mut self.conns, &mut self.next_key);
                self.touched.extend(spread);
            }
            self.settle();
            while !self.news_rx.is_empty() {
                // Reaping a connection, or the pools' new sessions, can tell more.
                self.take_news();
                self.settle();
            }
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
            c.send_keepalive(&cx, now);
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
                            // Sends the disconnect now rather than at its deadline
                            // (jump sessions get no `Disconnect` of their own).
                            c.step(&cx);
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
                    None => fail(
                        &self.events,
                        job.label,
                        job.token,
                        TransportError::ConnectionLost("the connection is gone".into()),
                    ),
                }
            }
            Request::Cancel { token } => {
                if let Some(label) = self.detached.lock().remove(&token) {
                    log::warn!(target: "ssh_parallel", "abandoning a parsub after its timeout; it keeps running");
                    fail(
                        &self.events,
                        label,
                        token,
                        TransportError::local("abandoned after its timeout (it cannot be interrupted)"),
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

    /// Handles what connections told the loop in this turn (which may tell more).
    fn take_news(&mut self) {
        while let Ok(news) = self.news_rx.try_recv() {
            match news {
                News::NeedTunnel(key) => self.attach(key),
                News::TunnelOpen { conn, id } => {
                    let cx = cx!(self);
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.tunnel_news(&cx, id, None);
                        self.touched.push(conn);
                    }
                }
                News::TunnelGone { conn, id, why, held } => {
                    let cx = cx!(self);
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.tunnel_news(&cx, id, Some(why));
                        self.touched.push(conn);
                    }
                    // Only now may the target's session see its tunnel close.
                    drop(held);
                }
                News::TunnelClosed(id) => {
                    self.pools.tunnels.remove(&id);
                }
            }
        }
    }

    /// Gives connection `key` (waiting in `Phase::Tunnel`) a tunnel.
    fn attach(&mut self, key: usize) {
        let cx = cx!(self);
        let touched = self.pools.attach(&cx, &mut self.conns, key, &mut self.next_key);
        self.touched.extend(touched);
    }

    /// Removes a connection that is done, answering the jobs it still held.
    fn reap(&mut self, key: usize) {
        let Some(mut c) = self.conns.remove(&key) else { return };
        if let Some(j) = &c.jump {
            self.pools.forget(&j.key, key, j.is_down());
        }
        c.teardown(self.poll.registry(), Phase::Done);
        if self.by_id.get(&c.id) == Some(&key) {
            self.by_id.remove(&c.id);
        }
        for job in c.pending.drain(..) {
            fail(
                &self.events,
                job.label,
                job.token,
                TransportError::ConnectionLost("the connection was closed".into()),
            );
        }
    }
}
