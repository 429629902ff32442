//! Jump hosts (`ProxyJump`), natively: a *jump session* is a `Conn` to the
//! jump host that serves no label; each connection behind it gets a
//! *tunnel*: a `direct-tcpip` channel of the jump session to the target's
//! host and port, pumped by the loop to and from one end of a socketpair
//! whose other end is the target session's [`Stream::Tunnel`]. No thread
//! per tunnel, no local listener. A chain `a,b` is a jump session to `a`, a
//! jump session to `b` over a tunnel of `a`, and the target over a tunnel of
//! `b`.
//!
//! One jump session per distinct jump host ([`Host::session_key`]: host
//! name, port, user, key files, agent, and the hops before it) is shared by
//! every connection behind it on this I/O thread, and labels behind the same
//! jump host are all given to the same I/O thread (see [`super::Handle`]),
//! so a thousand labels behind one bastion cost one login there. A jump
//! session has the same connect and auth deadlines, keepalives and host-key
//! check (under the hop's own name, `HostKeyAlias` and known_hosts files)
//! as any session. When it fails or is lost, every connection through it
//! fails or is lost with a message naming the hop (`... via bastion: jump
//! host bastion: ...`), each label's reconnection rules apply, and the first
//! reconnection opens one new jump session that the others join. A jump
//! session left without tunnels stays up for [`LINGER`] (a label closing
//! and reopening its connection does not log in again), then disconnects.
//!
//! Jump sessions do **not** count against `ParallelBuilder::connections`:
//! that limit is on the labels' connections (each tunnel counts as its
//! label's connection); a jump session is shared infrastructure that exists
//! only while some of them need it.
//!
//! libssh2 rules kept here: one channel open at a time per session (opens
//! are queued, one in flight, with the jump host's connect timeout; a jump
//! host that does not answer one in time is presumed dead); after a send
//! left a packet half written, only that same call is repeated until it goes
//! through ([`Stuck`]), and no keepalive is sent meanwhile; every step reads
//! the socket until it would block before anything waits (one unconditional
//! channel read per step, then the channels libssh2 holds data or EOF for).
//!
//! Invariant: a tunnel lives exactly as long as both its ends: it closes its
//! channel when the target's end of the socketpair is closed, and shuts its
//! own end's write side when the channel reaches EOF; a tunnel's socket is
//! registered under `id | TUN` with an id of its own, so a reconnecting
//! label never meets its old tunnel.
//!
//! May use: `conn`, `stream`, `event_loop` (`Cx`), `transport::libssh2`, `host`.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use mio::net::UnixStream;
use mio::{Interest, Registry};
use ssh2::{Channel, Session};

use super::conn::{Conn, Phase};
use super::event_loop::Cx;
use super::stream::Stream;
use crate::transport::libssh2::{is_socket_error, send_eof, would_block, write_blocked_on_input};

/// Set in the poll token of a tunnel's socket; the rest is the tunnel's id.
pub(super) const TUN: usize = 1 << (usize::BITS - 3);
/// How long a jump session without tunnels stays up.
pub(super) const LINGER: Duration = Duration::from_secs(5);
const CHUNK: usize = 32 * 1024;

/// What a jump session (or a connection asking for one) tells the loop.
pub(super) enum News {
    /// Connection `key`, in `Phase::Tunnel`, needs a tunnel through its last jump host.
    NeedTunnel(usize),
    /// Tunnel `id` of connection `conn` is open.
    TunnelOpen { conn: usize, id: usize },
    /// Tunnel `id` of connection `conn` failed, or its jump session is gone.
    /// `held` is the tunnel's end of the socketpair, kept open until the
    /// connection has learnt `why`: closed earlier, the target's session
    /// could read the EOF first and fail with a message that hides the cause
    /// ("Failed getting banner" for a jump host that went down).
    TunnelGone {
        conn: usize,
        id: usize,
        why: String,
        held: Option<UnixStream>,
    },
    /// Tunnel `id` is closed and removed.
    TunnelClosed(usize),
}

/// A half-sent packet: only the call that sent it may be made until it is out.
#[derive(Clone, Copy)]
enum Stuck {
    /// The queued tunnel's channel open.
    Open,
    /// A tunnel's write, EOF or close.
    Tunnel(usize),
}

/// What a jump session holds beyond an ordinary connection.
pub(super) struct JumpState {
    /// The key it is shared under ([`Host::session_key`](crate::host::Host)).
    pub(super) key: String,
    /// Tunnels by id.
    tunnels: BTreeMap<usize, Tunnel>,
    /// Tunnels whose channel is still to be opened, in order; the first is
    /// being opened once the session is up.
    queue: VecDeque<usize>,
    /// When the open in flight (the queue's first) gives up, if one is in flight.
    open_deadline: Option<Instant>,
    /// The call to repeat before any other send, if one is half sent.
    stuck: Option<Stuck>,
    /// Since when no tunnel is left (for [`LINGER`]).
    idle_since: Option<Instant>,
    /// Why the session failed or was lost, once it has: a connection that
    /// asks it for a tunnel afterwards (it can fail while being opened, before
    /// the first tunnel is attached) fails with this.
    down: Option<String>,
}

/// One target connection carried by the jump session.
struct Tunnel {
    /// The connection it carries (for news).
    conn: usize,
    /// Our end of the socketpair, registered under `id | TUN`.
    ours: UnixStream,
    /// Where the jump host is asked to connect.
    dest: (String, u16),
    /// The `direct-tcpip` channel, once open.
    ch: Option<Channel>,
    /// The socket said readable / writable since it last would block.
    readable: bool,
    writable: bool,
    /// From the target's session, not yet written to the channel (`up[up_off..]`).
    up: Vec<u8>,
    up_off: usize,
    /// The target's end is closed: the tunnel is to be closed.
    up_eof: bool,
    /// From the channel, not yet written to our end.
    down: Vec<u8>,
    down_off: usize,
    /// The channel reached EOF.
    down_eof: bool,
    /// Our end's write side is shut down (after `down_eof` and `down` delivered).
    shut: bool,
    /// EOF was sent on the channel (the close follows).
    eof_sent: bool,
}

impl JumpState {
    /// A jump session's state, shared under `key`.
    pub(super) fn new(key: String) -> JumpState {
        JumpState {
            key,
            tunnels: BTreeMap::new(),
            queue: VecDeque::new(),
            open_deadline: None,
            stuck: None,
            idle_since: Some(Instant::now()),
            down: None,
        }
    }

    /// Whether something is in flight or buffered (the connection gets frequent safety steps).
    pub(super) fn busy(&self) -> bool {
        self.open_deadline.is_some()
            || self.stuck.is_some()
            || self
                .tunnels
                .values()
                .any(|t| t.up_off < t.up.len() || t.down_off < t.down.len())
    }

    /// Whether a keepalive may be sent now (nothing half sent).
    pub(super) fn can_send(&self) -> bool {
        self.stuck.is_none()
    }

    /// When the session must be stepped without an event: the open's
    /// deadline, or the end of its linger.
    pub(super) fn wake_at(&self) -> Option<Instant> {
        [self.open_deadline, self.idle_since.map(|t| t + LINGER)]
            .into_iter()
            .flatten()
            .min()
    }

    /// Drops every tunnel (the session is being torn down), deregistering
    /// their sockets; returns the connections they carried, with the tunnel
    /// ids and their still open sockets (see [`News::TunnelGone`]).
    pub(super) fn clear(&mut self, registry: &Registry) -> Vec<(usize, usize, UnixStream)> {
        self.queue.clear();
        self.open_deadline = None;
        self.stuck = None;
        std::mem::take(&mut self.tunnels)
            .into_iter()
            .map(|(id, mut t)| {
                let _ = registry.deregister(&mut t.ours);
                (t.conn, id, t.ours)
            })
            .collect()
    }

    /// An event on tunnel `id`'s socket.
    pub(super) fn tunnel_event(&mut self, id: usize, readable: bool, writable: bool) -> bool {
        match self.tunnels.get_mut(&id) {
            Some(t) => {
                t.readable |= readable;
                t.writable |= writable;
                true
            }
            None => false,
        }
    }

    /// Opens the queue's first channel, if any: `Ok(true)` on progress.
    fn step_open(&mut self, sess: &Session, cx: &Cx<'_>, hop: &str, timeout: Duration) -> Result<bool, String> {
        let Some(&id) = self.queue.front() else {
            return Ok(false);
        };
        let Some(t) = self.tunnels.get_mut(&id) else {
            self.queue.pop_front();
            return Ok(true);
        };
        let deadline = *self.open_deadline.get_or_insert_with(|| Instant::now() + timeout);
        match sess.channel_direct_tcpip(&t.dest.0, t.dest.1, None) {
            Ok(ch) => {
                t.ch = Some(ch);
                self.queue.pop_front();
                self.open_deadline = None;
                self.stuck = None;
                let _ = cx.news.send(News::TunnelOpen { conn: t.conn, id });
                Ok(true)
            }
            Err(e) if would_block(&e) => {
                self.stuck = (!write_blocked_on_input(sess)).then_some(Stuck::Open);
                if Instant::now() >= deadline {
                    return Err(format!(
                        "{hop}: no answer within {timeout:?} to opening a tunnel to {}:{}",
                        t.dest.0, t.dest.1
                    ));
                }
                Ok(false)
            }
            Err(e) if is_socket_error(&e) => Err(format!("{hop}: opening a tunnel: {e}")),
            Err(e) => {
                // Refused (`PermitOpen`, `AllowTcpForwarding no`, nothing listening):
                // only this tunnel fails.
                let why = format!("{hop} refused to forward to {}:{}: {e}", t.dest.0, t.dest.1);
                let conn = t.conn;
                self.queue.pop_front();
                self.open_deadline = None;
                self.stuck = None;
                let held = self.take(cx, id);
                let _ = cx.news.send(News::TunnelGone { conn, id, why, held });
                Ok(true)
            }
        }
    }

    /// Takes tunnel `id` out, its socket deregistered but not closed (for a
    /// [`News::TunnelGone`] to carry).
    fn take(&mut self, cx: &Cx<'_>, id: usize) -> Option<UnixStream> {
        let ours = self.tunnels.remove(&id).map(|mut t| {
            let _ = cx.registry.deregister(&mut t.ours);
            let _ = cx.news.send(News::TunnelClosed(id));
            t.ours
        });
        if self.tunnels.is_empty() {
            self.idle_since = Some(Instant::now());
        }
        ours
    }

    /// Removes tunnel `id` (its channel is closed or abandoned).
    fn remove(&mut self, cx: &Cx<'_>, id: usize) {
        if let Some(ours) = self.take(cx, id) {
            let _ = ours.shutdown(Shutdown::Both);
        }
    }

    /// Moves bytes for every tunnel until nothing moves; `Err` when the
    /// session itself is gone.
    fn pump_all(&mut self, sess: &Session, cx: &Cx<'_>, hop: &str, timeout: Duration) -> Result<(), String> {
        if let Some(stuck) = self.stuck {
            match stuck {
                Stuck::Open => {
                    self.step_open(sess, cx, hop, timeout)?;
                }
                Stuck::Tunnel(id) => {
                    self.pump_one(sess, cx, id, true)?;
                }
            }
            if self.stuck.is_some() {
                return Ok(());
            }
        }
        let mut drained = false;
        loop {
            let mut progress = self.step_open(sess, cx, hop, timeout)?;
            if self.stuck.is_some() {
                return Ok(());
            }
            let ids: Vec<usize> = self.tunnels.keys().copied().collect();
            for id in ids {
                // One read per step drains the socket; after it, only channels
                // libssh2 holds data or an EOF for are read.
                let force = !drained && self.tunnels.get(&id).is_some_and(|t| t.ch.is_some());
                drained |= force;
                progress |= self.pump_one(sess, cx, id, force)?;
                if self.stuck.is_some() {
                    return Ok(());
                }
            }
            if !progress {
                return Ok(());
            }
        }
    }

    /// Moves bytes both ways for tunnel `id` until nothing moves (`force`:
    /// read the channel even if libssh2 seems to hold nothing for it, which
    /// drains the session's socket); `Ok(true)` on progress.
    fn pump_one(&mut self, sess: &Session, cx: &Cx<'_>, id: usize, mut force: bool) -> Result<bool, String> {
        let Some(t) = self.tunnels.get_mut(&id) else {
            if matches!(self.stuck, Some(Stuck::Tunnel(s)) if s == id) {
                self.stuck = None;
            }
            return Ok(false);
        };
        let Some(ch) = t.ch.as_mut() else { return Ok(false) };
        let mut any = false;
        loop {
            let mut progress = false;
            // The target's session -> the channel.
            if t.up_off == t.up.len() && !t.up_eof && t.readable {
                t.up.resize(CHUNK, 0);
                t.up_off = 0;
                match t.ours.read(&mut t.up) {
                    Ok(0) => {
                        t.up.clear();
                        t.up_eof = true;
                        progress = true;
                    }
                    Ok(n) => {
                        t.up.truncate(n);
                        progress = true;
                    }
                    Err(e) => {
                        t.up.clear();
                        match e.kind() {
                            io::ErrorKind::WouldBlock => t.readable = false,
                            io::ErrorKind::Interrupted => {}
                            _ => t.up_eof = true,
                        }
                    }
                }
            }
            if t.up_off < t.up.len() {
                match ch.write(&t.up[t.up_off..]) {
                    Ok(n) => {
                        t.up_off += n;
                        self.stuck = None;
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if !write_blocked_on_input(sess) {
                            self.stuck = Some(Stuck::Tunnel(id));
                            return Ok(any || progress);
                        }
                    }
                    Err(e) => return Err(format!("writing to a tunnel to {}:{}: {e}", t.dest.0, t.dest.1)),
                }
            }
            // The channel -> the target's session.
            if t.down_off == t.down.len() && !t.down_eof && (force || ch.read_window().available > 0 || ch.eof()) {
                force = false;
                t.down.resize(CHUNK, 0);
                t.down_off = 0;
                match ch.read(&mut t.down) {
                    Ok(0) => {
                        t.down.clear();
                        t.down_eof = true;
                        progress = true;
                    }
                    Ok(n) => {
                        t.down.truncate(n);
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => t.down.clear(),
                    // libssh2's channel reads fail only when the session does.
                    Err(e) => return Err(format!("reading a tunnel to {}:{}: {e}", t.dest.0, t.dest.1)),
                }
            }
            if t.down_off < t.down.len() && t.writable {
                match t.ours.write(&t.down[t.down_off..]) {
                    Ok(n) => {
                        t.down_off += n;
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => t.writable = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // The target's session is gone: drop what it would have read.
                    Err(_) => {
                        t.down_off = t.down.len();
                        t.up_eof = true;
                    }
                }
            } else if t.down_off == t.down.len() && t.down_eof && !t.shut {
                let _ = t.ours.shutdown(Shutdown::Write);
                t.shut = true;
                progress = true;
            }
            if t.up_eof && t.up_off == t.up.len() {
                // The target's session is gone: end the channel. Sent once
                // libssh2 only waits for the answer; the channel is then freed
                // (libssh2 drops the late answer).
                if !t.eof_sent {
                    if !send_eof(ch) {
                        if !write_blocked_on_input(sess) {
                            self.stuck = Some(Stuck::Tunnel(id));
                            return Ok(true);
                        }
                    } else {
                        t.eof_sent = true;
                    }
                }
                if t.eof_sent {
                    match ch.close() {
                        Err(e) if would_block(&e) && !write_blocked_on_input(sess) => {
                            self.stuck = Some(Stuck::Tunnel(id));
                            return Ok(true);
                        }
                        Err(e) if is_socket_error(&e) => return Err(format!("closing a tunnel: {e}")),
                        _ => {}
                    }
                    self.stuck = None;
                    self.remove(cx, id);
                    return Ok(true);
                }
            }
            any |= progress;
            if !progress {
                return Ok(any);
            }
        }
    }
}

impl Conn {
    /// Adds a tunnel to this jump session for connection `conn`, whose
    /// target session is on the other end of `ours`; `dest` is where the
    /// jump host connects to.
    pub(super) fn attach_tunnel(
        &mut self,
        cx: &Cx<'_>,
        id: usize,
        conn: usize,
        mut ours: UnixStream,
        dest: (String, u16),
    ) -> Result<(), String> {
        let Some(j) = self.jump.as_mut() else {
            return Err("not a jump session (transport bug)".into());
        };
        if let Some(why) = &j.down {
            return Err(format!("jump host {}: {why}", self.name));
        }
        cx.registry
            .register(&mut ours, mio::Token(id | TUN), Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| format!("cannot poll a tunnel's socket: {e}"))?;
        j.tunnels.insert(
            id,
            Tunnel {
                conn,
                ours,
                dest,
                ch: None,
                readable: true,
                writable: true,
                up: Vec::new(),
                up_off: 0,
                up_eof: false,
                down: Vec::new(),
                down_off: 0,
                down_eof: false,
                shut: false,
                eof_sent: false,
            },
        );
        j.queue.push_back(id);
        j.idle_since = None;
        Ok(())
    }

    /// Steps an authenticated jump session: opens queued channels and pumps
    /// every tunnel; after [`LINGER`] without tunnels, disconnects.
    pub(super) fn step_jump(&mut self, cx: &Cx<'_>) {
        let hop = format!("jump host {}", self.name);
        let timeout = self
            .host
            .connect_timeout
            .unwrap_or(super::connect::DEFAULT_CONNECT_TIMEOUT);
        let (Some(sess), Some(j)) = (&self.sess, self.jump.as_mut()) else {
            return;
        };
        if j.tunnels.is_empty() && j.queue.is_empty() {
            let since = *j.idle_since.get_or_insert_with(Instant::now);
            if since + LINGER <= Instant::now() {
                log::debug!(target: "ssh_parallel", "[{}] jump session unused for {LINGER:?}: closing it", self.name);
                self.disconnect(cx);
                return;
            }
            // Nothing reads the socket: only its closing matters.
            if self.stream.as_ref().is_some_and(Stream::peer_gone) {
                let msg = format!("{} closed the connection", self.target());
                self.lose(cx, msg);
            }
            return;
        }
        if let Err(m) = j.pump_all(sess, cx, &hop, timeout) {
            self.lose(cx, m);
        }
    }

    /// This jump session failed or was lost: every connection through it
    /// learns why.
    pub(super) fn jump_down(&mut self, cx: &Cx<'_>, why: &str) {
        let Some(j) = self.jump.as_mut() else { return };
        j.down.get_or_insert_with(|| why.to_owned());
        for (conn, id, held) in j.clear(cx.registry) {
            let _ = cx.news.send(News::TunnelGone {
                conn,
                id,
                why: format!("jump host {}: {why}", self.name),
                held: Some(held),
            });
        }
    }

    /// News for this connection's tunnel `id`: it is open (the connect
    /// deadline starts), or it is gone (the connection fails or is lost).
    pub(super) fn tunnel_news(&mut self, cx: &Cx<'_>, id: usize, gone: Option<String>) {
        if self.tunnel.map(|(_, t)| t) != Some(id) {
            return;
        }
        let Some(why) = gone else {
            if matches!(self.phase, Phase::Handshake | Phase::Auth(_)) && self.deadline.is_none() {
                let timeout = self
                    .host
                    .connect_timeout
                    .unwrap_or(super::connect::DEFAULT_CONNECT_TIMEOUT);
                self.deadline = Some(Instant::now() + timeout);
            }
            return;
        };
        self.tunnel = None;
        let msg = format!("{}: {why}", self.target());
        match self.phase {
            Phase::Tunnel | Phase::Handshake | Phase::Auth(_) => self.connect_failed(cx, msg),
            Phase::Idle | Phase::Running(_) => self.lose(cx, msg),
            Phase::Cancelling(_) => self.broken(cx, msg),
            _ => {}
        }
    }

    /// Starts the target's session on `stream`, one end of a fresh tunnel;
    /// its bytes wait in the socketpair until the tunnel's channel is open.
    pub(super) fn start_over_tunnel(&mut self, cx: &Cx<'_>, jump: usize, id: usize, stream: UnixStream) {
        let mut s = Stream::Tunnel(stream);
        if let Err(e) = cx
            .registry
            .register(&mut s, mio::Token(self.key), Interest::READABLE | Interest::WRITABLE)
        {
            let msg = format!("{}: cannot poll a tunnel's socket: {e}", self.target());
            self.connect_failed(cx, msg);
            return;
        }
        self.stream = Some(s);
        self.tunnel = Some((jump, id));
        if let Err(m) = self.open_session() {
            self.connect_failed(cx, m);
        }
    }
}
