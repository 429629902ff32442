//! Worker slots and connections: who may run a remote task now, who may
//! open a connection, and which idle connection is closed (least recently
//! used first) to make room under the `connections` limit.
//!
//! Invariants: `slots_used` is the number of labels with `has_slot`, never
//! above `workers` (0: unlimited); `open` counts connections connecting, up
//! or closing, never above `connections` (0: unlimited); `idle` holds exactly
//! the labels with an `idle_key`, and only when `connections` is set.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::state::{Conn, State};
use super::{Scheduler, Timer};
use crate::plan::LabelId;
use crate::task::{Action, Class};
use crate::transport::{ConnId, Job, Request};

impl Scheduler<'_> {
    pub(super) fn start_remote(&mut self, l: LabelId, action: &Arc<Action>) {
        if !self.rt[l].has_slot {
            // FIFO: a free slot goes to whoever has waited longest, not to a
            // label coming back for its next task.
            let free = self.cfg.workers == 0 || self.slots_used < self.cfg.workers;
            if free && self.slot_waiters.is_empty() {
                self.slots_used += 1;
                self.rt[l].has_slot = true;
            } else {
                self.rt[l].state = State::WaitSlot;
                self.slot_waiters.push_back(l);
                return;
            }
        }
        self.mark_started(l);
        if action.class() == Class::Detached {
            self.send_run(l, action, None);
            return;
        }
        match self.rt[l].conn {
            Conn::Up(c) => self.send_run(l, action, Some(c)),
            Conn::Connecting(_) => self.rt[l].state = State::Connecting,
            Conn::None | Conn::Closing(_) => {
                self.rt[l].state = State::WaitConn;
                self.conn_waiters.push_back(l);
            }
        }
    }

    pub(super) fn send_run(&mut self, l: LabelId, action: &Arc<Action>, conn: Option<ConnId>) {
        self.unmark_idle(l);
        self.next_id += 1;
        let token = self.next_id;
        let entry = &self.plan.labels[l];
        let prefetch = self.cfg.channels_ahead
            && conn.is_some()
            && entry
                .head
                .is_some_and(|h| self.plan.channel_task_follows(h) || self.job_follows(h));
        let rt = &mut self.rt[l];
        rt.token = token;
        rt.attempt += 1;
        rt.timed_out = false;
        rt.state = State::Running;
        let now = Instant::now();
        rt.started = Some((SystemTime::now(), now));
        let attempt = rt.attempt;
        let head = entry.head;
        let job_action = self.watched_action(l, head, action);
        let entry = &self.plan.labels[l];
        let job = Job {
            label: l,
            name: entry.name.clone(),
            host: entry.host.clone(),
            action: job_action,
            token,
            conn,
            prefetch,
            idle_timeout: match &**action {
                Action::Command(c) => c.idle_timeout.or(self.cfg.idle_timeout),
                _ => None,
            },
            protocol: action.transfer_protocol(self.cfg.transfer_protocol),
        };
        let host = entry.host.clone();
        if log::log_enabled!(target: "ssh_parallel", log::Level::Debug) {
            log::debug!(target: "ssh_parallel", "[{}] start {} (attempt {attempt})", entry.name, action.describe());
        }
        if self.watch.is_some() {
            let task = head.and_then(|n| self.plan.task(n));
            let ev = crate::run::RunEvent::Started {
                label: entry.name.clone(),
                seq: task.map_or(0, |t| t.seq),
                description: task.map_or_else(|| Arc::from(action.describe()), |t| t.desc.clone()),
                attempt,
                job: head.and_then(|n| self.job_at(n)),
            };
            self.emit(|| ev);
        }
        if let Some(t) = action.opts().and_then(|o| o.timeout) {
            self.add_timer(now + t, Timer::TaskTimeout { label: l, token });
        }
        self.outstanding += 1;
        self.transports.send(&host, Request::Run(job));
    }

    pub(super) fn pump_slots(&mut self) {
        while self.cfg.workers == 0 || self.slots_used < self.cfg.workers {
            let Some(l) = self.slot_waiters.pop_front() else { return };
            if self.rt[l].state != State::WaitSlot {
                continue;
            }
            self.slots_used += 1;
            self.rt[l].has_slot = true;
            self.make_ready(l);
        }
    }

    pub(super) fn release_slot(&mut self, l: LabelId) {
        if self.rt[l].has_slot {
            self.rt[l].has_slot = false;
            self.slots_used -= 1;
        }
    }

    pub(super) fn can_open(&self) -> bool {
        self.cfg.connections == 0 || self.open < self.cfg.connections
    }

    pub(super) fn pump_conns(&mut self) {
        while let Some(&l) = self.conn_waiters.front() {
            if self.rt[l].state != State::WaitConn {
                self.conn_waiters.pop_front();
                continue;
            }
            if matches!(self.rt[l].conn, Conn::Closing(_)) {
                // Its own old connection must finish closing first.
                return;
            }
            if self.can_open() {
                self.conn_waiters.pop_front();
                self.open_conn(l);
                continue;
            }
            let waiting = self
                .conn_waiters
                .iter()
                .filter(|&&w| self.rt[w].state == State::WaitConn)
                .count();
            if self.evictions >= waiting {
                return;
            }
            // Close the least recently used idle connection to make room.
            let Some((_, victim)) = self.idle.pop_first() else {
                return;
            };
            self.rt[victim].idle_key = None;
            log::debug!(target: "ssh_parallel", "[{}] closing idle connection to make room", self.name(victim));
            self.rt[victim].evicting = true;
            self.evictions += 1;
            self.close_conn(victim);
        }
    }

    pub(super) fn open_conn(&mut self, l: LabelId) {
        self.next_id += 1;
        let conn = self.next_id;
        self.open += 1;
        self.outstanding += 1;
        self.rt[l].conn = Conn::Connecting(conn);
        self.rt[l].state = State::Connecting;
        let entry = &self.plan.labels[l];
        let (name, host) = (entry.name.clone(), entry.host.clone());
        log::debug!(target: "ssh_parallel", "[{name}] connecting");
        self.transports.send(
            &host,
            Request::Connect {
                label: l,
                conn,
                name,
                host: host.clone(),
            },
        );
    }

    pub(super) fn close_conn(&mut self, l: LabelId) {
        self.unmark_idle(l);
        if let Conn::Up(c) = self.rt[l].conn {
            self.rt[l].conn = Conn::Closing(c);
            self.outstanding += 1;
            let host = self.plan.labels[l].host.clone();
            self.transports.send(&host, Request::Disconnect { label: l, conn: c });
        }
    }

    pub(super) fn mark_idle(&mut self, l: LabelId) {
        // Without a connections limit nothing is ever evicted: skip the bookkeeping.
        if self.cfg.connections == 0 {
            return;
        }
        if matches!(self.rt[l].conn, Conn::Up(_)) && self.rt[l].idle_key.is_none() {
            self.tick += 1;
            self.idle.insert(self.tick, l);
            self.rt[l].idle_key = Some(self.tick);
        }
    }

    pub(super) fn unmark_idle(&mut self, l: LabelId) {
        if let Some(k) = self.rt[l].idle_key.take() {
            self.idle.remove(&k);
        }
    }

    /// A connection slot came free.
    pub(super) fn conn_gone(&mut self, l: LabelId) {
        self.open -= 1;
        self.unmark_idle(l);
        if std::mem::take(&mut self.rt[l].evicting) {
            self.evictions -= 1;
        }
        self.rt[l].conn = Conn::None;
    }
}
