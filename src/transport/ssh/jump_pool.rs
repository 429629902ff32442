//! The jump sessions one I/O thread has open to each jump host, and which
//! of them carries a tunnel. One session serves every tunnel while channel
//! opens are quick. libssh2 opens one channel at a time per session, so
//! behind a distant jump host each open costs a round trip and 200 tunnels
//! wait 200 round trips; when opens are that slow and the wait ahead of the
//! queue is long, more sessions are opened (together, up to
//! [`MAX_SESSIONS`]) and the waiting tunnels are shared out among the
//! sessions that are up, which then open theirs side by side. On a fast
//! link that never happens, so a thousand labels still cost one login.
//!
//! A jump host that fails or drops one of its sessions gets no more
//! sessions for spreading in this run: only the ones that tunnels need.
//!
//! Invariant: `tunnels` maps a tunnel's id to the session whose
//! `JumpState` holds it; a tunnel moves only while it waits (its channel not
//! asked for yet), and its socket keeps its poll token (`id | TUN`).
//!
//! May use: `conn`, `jump`, `event_loop` (`Cx`), `host`, `plan`, `transport::protocol`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use super::conn::{Conn, Phase};
use super::event_loop::Cx;
use super::jump::JumpState;
use crate::host::Host;
use crate::plan::LabelId;
use crate::transport::protocol::ConnId;

/// The most sessions to one jump host per I/O thread.
pub(super) const MAX_SESSIONS: usize = 8;
/// Opens the loop waits this long for are a network's round trips (a
/// loopback jump host answers in well under a millisecond; this thread's
/// own work while an open is in flight does not count, see `JumpState`).
const SLOW_OPEN: Duration = Duration::from_millis(20);
/// A wait for the opens ahead longer than this is worth another login.
const SPREAD_AFTER: Duration = Duration::from_millis(500);

/// Jump sessions by jump host, and tunnels by session.
#[derive(Default)]
pub(super) struct JumpPools {
    /// By [`Host::session_key`]: the sessions to that jump host, oldest
    /// first; each is in the loop's `conns` until reaped (which removes it
    /// here).
    sessions: HashMap<String, Vec<usize>>,
    /// Tunnel id to the key of the jump session holding it (its socket's
    /// events go there).
    pub(super) tunnels: HashMap<usize, usize>,
    /// Jump hosts that lost or refused a session: no more sessions are
    /// opened to them to spread a queue (a jump host allowing one login per
    /// user would otherwise be asked again and again).
    spread_off: HashSet<String>,
}

impl JumpPools {
    /// The session to give a new tunnel to `jkey`: of those not closing, a
    /// working one with the fewest tunnels waiting, else one that failed
    /// (it refuses the tunnel with its cause); `None`: a new one is needed.
    pub(super) fn pick(&self, jkey: &str, conns: &HashMap<usize, Conn>) -> Option<usize> {
        let (mut best, mut failed) = (None::<(usize, usize)>, None);
        for &k in self.sessions.get(jkey).into_iter().flatten() {
            let Some((c, j)) = jump_of(conns, k) else {
                continue;
            };
            if matches!(c.phase, Phase::Done | Phase::Disconnecting) {
                continue;
            }
            if j.is_down() {
                failed.get_or_insert(k);
            } else if best.is_none_or(|(_, w)| j.waiting() < w) {
                best = Some((k, j.waiting()));
            }
        }
        best.map(|(k, _)| k).or(failed)
    }

    /// Gives connection `key` (waiting in `Phase::Tunnel`) a tunnel through
    /// its last jump host: on the session [`JumpPools::pick`] names, else a
    /// new one. Returns the connections touched.
    pub(super) fn attach(
        &mut self,
        cx: &Cx<'_>,
        conns: &mut HashMap<usize, Conn>,
        key: usize,
        next_key: &mut usize,
    ) -> Vec<usize> {
        let mut touched = Vec::new();
        let Some(c) = conns.get_mut(&key) else { return touched };
        if !matches!(c.phase, Phase::Tunnel) {
            return touched;
        }
        touched.push(key);
        let Some(hop) = c.host.jump_hosts().last().cloned() else {
            let msg = format!("{}: no jump host to go through (transport bug)", c.target());
            c.connect_failed(cx, msg);
            return touched;
        };
        let dest = (c.host.hostname.clone(), c.port);
        let (ours, theirs) = match mio::net::UnixStream::pair() {
            Ok(p) => p,
            Err(e) => {
                let msg = format!("{}: cannot make a socketpair for the tunnel: {e}", c.target());
                c.connect_failed(cx, msg);
                return touched;
            }
        };
        let jkey = hop.session_key();
        let jk = match self.pick(&jkey, conns) {
            Some(k) => k,
            None => {
                let jk = *next_key;
                *next_key += 1;
                self.open(cx, conns, jk, Arc::new(hop));
                touched.push(jk);
                jk
            }
        };
        let id = *next_key;
        *next_key += 1;
        let attached = match conns.get_mut(&jk) {
            Some(j) => j.attach_tunnel(cx, id, key, ours, dest),
            None => Err("the jump session is gone".into()),
        };
        let Some(c) = conns.get_mut(&key) else { return touched };
        if let Err(m) = attached {
            let msg = format!("{}: {m}", c.target());
            c.connect_failed(cx, msg);
            return touched;
        }
        self.tunnels.insert(id, jk);
        c.start_over_tunnel(cx, jk, id, theirs);
        c.step(cx);
        if let Some(j) = conns.get_mut(&jk) {
            if matches!(j.phase, Phase::Idle) {
                j.step(cx);
            }
        }
        touched
    }

    /// Opens a session to `hop`, under loop key `jk`, in `hop`'s pool.
    fn open(&mut self, cx: &Cx<'_>, conns: &mut HashMap<usize, Conn>, jk: usize, hop: Arc<Host>) {
        let jkey = hop.session_key();
        let name: Arc<str> = Arc::from(hop.hop_name().as_str());
        let mut j = Conn::new(jk, LabelId::MAX, ConnId::MAX, name, hop);
        j.jump = Some(Box::new(JumpState::new(jkey.clone())));
        log::debug!(target: "ssh_parallel", "[{}] opening a jump session ({})", j.name, j.target());
        j.start_connect(cx);
        j.step(cx);
        self.sessions.entry(jkey).or_default().push(jk);
        conns.insert(jk, j);
    }

    /// Forgets session `key` (reaped; `failed`: it failed or was lost) and
    /// the tunnels it held.
    pub(super) fn forget(&mut self, jkey: &str, key: usize, failed: bool) {
        if failed {
            self.spread_off.insert(jkey.to_owned());
        }
        if let Some(v) = self.sessions.get_mut(jkey) {
            v.retain(|&k| k != key);
            if v.is_empty() {
                self.sessions.remove(jkey);
            }
        }
        self.tunnels.retain(|_, jk| *jk != key);
    }

    /// After a turn: for every jump host with a slow queue, more sessions;
    /// for every session up with nothing waiting, half of the longest queue.
    /// Returns the sessions touched, and the new ones are in `conns`.
    pub(super) fn spread(&mut self, cx: &Cx<'_>, conns: &mut HashMap<usize, Conn>, next_key: &mut usize) -> Vec<usize> {
        let mut touched = Vec::new();
        let keys: Vec<String> = self.sessions.keys().cloned().collect();
        for jkey in keys {
            let list = self.sessions.get(&jkey).cloned().unwrap_or_default();
            let up: Vec<usize> = list
                .iter()
                .copied()
                .filter(|k| jump_of(conns, *k).is_some_and(|(c, j)| matches!(c.phase, Phase::Idle) && !j.is_down()))
                .collect();
            self.share_out(cx, conns, &up, &mut touched);
            // More sessions only when all are up, so that each new one is
            // asked for by what was measured with those before it.
            if up.len() != list.len() || list.len() >= MAX_SESSIONS || self.spread_off.contains(&jkey) {
                continue;
            }
            let (mut waiting, mut slowest) = (0usize, Duration::ZERO);
            for k in &up {
                if let Some((_, j)) = jump_of(conns, *k) {
                    waiting += j.waiting();
                    slowest = slowest.max(j.open_cost().unwrap_or_default());
                }
            }
            if slowest < SLOW_OPEN {
                continue;
            }
            // Enough sessions that the waiting tunnels are open within about SPREAD_AFTER.
            let drain = slowest.as_micros().saturating_mul(waiting as u128);
            let wanted = drain.div_ceil(SPREAD_AFTER.as_micros());
            let more = usize::try_from(wanted)
                .unwrap_or(usize::MAX)
                .saturating_sub(list.len())
                .min(MAX_SESSIONS - list.len());
            let Some(hop) = up.first().and_then(|k| conns.get(k)).map(|c| c.host.clone()) else {
                continue;
            };
            if more > 0 {
                log::debug!(
                    target: "ssh_parallel",
                    "[{}] {waiting} tunnels waiting, {slowest:?} per open: {more} more jump sessions",
                    hop.hop_name()
                );
            }
            for _ in 0..more {
                let jk = *next_key;
                *next_key += 1;
                self.open(cx, conns, jk, hop.clone());
                touched.push(jk);
            }
        }
        touched
    }

    /// Gives each session of `up` with nothing waiting half of the longest
    /// waiting queue among them.
    fn share_out(&mut self, cx: &Cx<'_>, conns: &mut HashMap<usize, Conn>, up: &[usize], touched: &mut Vec<usize>) {
        if up.len() < 2 {
            return;
        }
        let waiting = |conns: &HashMap<usize, Conn>, k: usize| {
            conns.get(&k).and_then(|c| c.jump.as_ref()).map_or(0, |j| j.waiting())
        };
        for &idle in up {
            if waiting(conns, idle) > 0 {
                continue;
            }
            let Some(donor) = up.iter().copied().max_by_key(|&k| waiting(conns, k)) else {
                continue;
            };
            let n = waiting(conns, donor) / 2;
            if n == 0 || conns.get(&idle).is_none_or(|c| c.jump.is_none()) {
                continue;
            }
            let Some(moved) = conns
                .get_mut(&donor)
                .and_then(|c| c.jump.as_mut())
                .map(|j| j.take_waiting(n))
            else {
                continue;
            };
            let ids = match conns.get_mut(&idle).and_then(|c| c.jump.as_mut()) {
                Some(j) => j.add_waiting(moved),
                None => {
                    // Checked above, so never; but a tunnel is never dropped unanswered.
                    if let Some(j) = conns.get_mut(&donor).and_then(|c| c.jump.as_mut()) {
                        j.add_waiting(moved);
                    }
                    continue;
                }
            };
            for id in ids {
                self.tunnels.insert(id, idle);
            }
            if let Some(c) = conns.get_mut(&idle) {
                c.step(cx);
            }
            touched.extend([donor, idle]);
        }
    }
}

/// Connection `k` and its jump state, if it is a jump session.
fn jump_of(conns: &HashMap<usize, Conn>, k: usize) -> Option<(&Conn, &JumpState)> {
    conns.get(&k).and_then(|c| Some((c, c.jump.as_deref()?)))
}
