//! A connection's side of jump hosts: a jump session taking tunnels,
//! stepping them and going down (every tunnel told why), and a target
//! connection started over its tunnel and told its tunnel's news. The
//! tunnels themselves are [`super::jump`]'s.
//!
//! Invariant: a target connection acts only on news of its current tunnel
//! (an old tunnel's late news is ignored).
//!
//! May use: `conn`, `jump`, `stream`, `event_loop` (`Cx`).

use std::time::Instant;

use mio::net::UnixStream;
use mio::Interest;

use super::conn::{Conn, Phase};
use super::event_loop::Cx;
use super::jump::{News, TunnelRefused, LINGER};
use super::stream::Stream;

impl Conn {
    /// Adds a tunnel to this jump session for connection `conn`, whose
    /// target session is on the other end of `ours`; `dest` is where the
    /// jump host connects to.
    pub(super) fn attach_tunnel(
        &mut self,
        cx: &Cx<'_>,
        id: usize,
        conn: usize,
        ours: UnixStream,
        dest: (String, u16),
    ) -> Result<(), String> {
        let Some(j) = self.jump.as_mut() else {
            return Err("not a jump session (transport bug)".into());
        };
        j.add_tunnel(cx.registry, id, conn, ours, dest).map_err(|r| match r {
            TunnelRefused::Down(why) => format!("{}: {why}", self.hop()),
            TunnelRefused::Poll(m) => m,
        })
    }

    /// How errors name this jump session: `jump host NAME`.
    fn hop(&self) -> String {
        format!("jump host {}", self.name)
    }

    /// Steps an authenticated jump session: opens queued channels and pumps
    /// every tunnel; after [`LINGER`] without tunnels, disconnects.
    pub(super) fn step_jump(&mut self, cx: &Cx<'_>) {
        let (hop, timeout) = (self.hop(), self.connect_timeout());
        let (Some(sess), Some(j)) = (&self.sess, self.jump.as_mut()) else {
            return;
        };
        if let Some(since) = j.unused_since() {
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
        let hop = self.hop();
        let Some(j) = self.jump.as_mut() else { return };
        for (conn, id, held) in j.go_down(why, cx.registry) {
            let _ = cx.news.send(News::TunnelGone {
                conn,
                id,
                why: format!("{hop}: {why}"),
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
                self.deadline = Some(Instant::now() + self.connect_timeout());
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
