//! The scheduler: the single owner of the plan while it runs. It walks every
//! label's queue, hands remote tasks to transports over channels, and applies
//! joins, gotos, error policies, reconnections and the workers/connections
//! limits.
//!
//! Layout, in the order a task meets them: this file is the run loop and its
//! timers; `state` the per-label state; `queue` walking a queue (local steps,
//! reports, jumps, joins); `sub` running subs; `slots` worker slots and
//! connection limits; `events` what transports answer; `failure` the error
//! policies; `watch` the events and cancel of a started run; `rollout`
//! waves and `max_failures`; `drain` the job queues labels drain.
//!
//! Invariants: nothing but the scheduler touches the plan during a run; a
//! run ends when `active` is 0, and never waits with nothing `outstanding`,
//! no timer and no ready label (such labels are failed as stuck rather than
//! hang), unless a label waits on an open job queue: then it sleeps on its
//! event channel, which a push or a close wakes. A cancelled run starts
//! nothing more: every label stops at its next boundary and every running
//! task gets the `Cancel` a timeout sends.
//!
//! May use: `error`, `plan`, `policy`, `report`, `run`, `task` and `transport`
//! (the channel protocol only); never `parallel`.

mod drain;
mod events;
mod failure;
mod queue;
mod rollout;
mod slots;
mod state;
mod sub;
mod watch;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::plan::{LabelId, Plan};
use crate::policy::OnError;
use crate::report::{LabelReport, Report};
use crate::run::Watch;
use crate::transport::{Event, Request, Token, Transports};
use state::{Rt, State};

pub(crate) use rollout::check_waves;

/// How long the end of a run waits for connections to close.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// The scheduler-wide settings (see `ParallelBuilder`).
#[derive(Clone, Debug)]
pub(crate) struct Config {
    /// 0: unlimited.
    pub(crate) workers: usize,
    /// 0: unlimited; otherwise at least `workers` (`ParallelBuilder::build`).
    pub(crate) connections: usize,
    /// Extra connection attempts per task unless the task or host sets them.
    pub(crate) reconnections: u32,
    pub(crate) reconnect_delay: Duration,
    /// The policy when neither the task nor the host sets one (`None`: Abort).
    pub(crate) on_error: Option<OnError>,
    /// Event-loop threads of the SSH transport (at least 1).
    pub(crate) io_threads: usize,
    /// Open the next channel task's channel ahead (`ParallelBuilder::channels_ahead`).
    pub(crate) channels_ahead: bool,
    /// A command's idle timeout unless it sets one (`ParallelBuilder::idle_timeout`).
    pub(crate) idle_timeout: Option<Duration>,
    /// Start the labels in waves of this many (`ParallelBuilder::waves`).
    pub(crate) waves: Option<crate::amount::Amount>,
    /// Start no label once more than this many failed (`ParallelBuilder::max_failures`).
    pub(crate) max_failures: Option<crate::amount::Amount>,
    /// What scp copies run over unless they say (`ParallelBuilder::transfer_protocol`).
    pub(crate) transfer_protocol: crate::task::TransferProtocol,
}

impl Default for Config {
    /// The defaults `ParallelBuilder` documents: no limits, no reconnections,
    /// one I/O thread, channels opened ahead.
    fn default() -> Config {
        Config {
            workers: 0,
            connections: 0,
            reconnections: 0,
            reconnect_delay: Duration::ZERO,
            on_error: None,
            io_threads: 1,
            channels_ahead: true,
            idle_timeout: None,
            waves: None,
            max_failures: None,
            transfer_protocol: crate::task::TransferProtocol::Scp,
        }
    }
}

/// Something due at an instant. A timer is never removed early: when it
/// fires it checks that what it was for still holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// Make `label` ready again, if it is still `Delayed` with this `gen`.
    Wake { label: LabelId, gen: u64 },
    /// Cancel the run `token` of `label`, if it is still running.
    TaskTimeout { label: LabelId, token: Token },
}

/// One run of a plan. Labels are indexed by `LabelId` in `rt` and `reports`.
pub(crate) struct Scheduler<'p> {
    /// Owned for the run; only the scheduler (and the subs it calls) change it.
    plan: &'p mut Plan,
    /// The settings, fixed for the run.
    cfg: &'p Config,
    /// Per label, the run-time state.
    rt: Vec<Rt>,
    /// Per label, the report so far; one entry per finished task.
    reports: Vec<LabelReport>,
    /// Labels to advance, FIFO; a label is in it at most once (`Rt::queued`).
    ready: VecDeque<LabelId>,
    /// Labels waiting for a worker slot, FIFO (may hold stale entries: a
    /// label is served only while it is still `WaitSlot`).
    slot_waiters: VecDeque<LabelId>,
    /// Labels holding a slot and waiting to open a connection, FIFO (stale
    /// entries are skipped as above).
    conn_waiters: VecDeque<LabelId>,
    /// Labels with `has_slot`.
    slots_used: usize,
    /// Connections connecting, up or closing.
    open: usize,
    /// Connections being closed to make room for a waiter (labels with
    /// `Rt::evicting`).
    evictions: usize,
    /// Idle connections by the tick they became idle: the first is the LRU.
    idle: BTreeMap<u64, LabelId>,
    /// The clock of `idle`: strictly increasing.
    tick: u64,
    /// The last id handed out (tokens, connection ids, timer order): strictly
    /// increasing, so no two runs or connections share one.
    next_id: u64,
    /// Pending timers, earliest first (the id breaks ties in order of arming).
    timers: BinaryHeap<Reverse<(Instant, u64, Timer)>>,
    /// Labels not `Finished`; the run ends at 0.
    active: usize,
    /// Requests a transport still owes an answer to.
    outstanding: usize,
    /// The label whose failure set AbortAll off, once one did.
    abort_all: Option<Arc<str>>,
    /// Scratch for the labels a sub pushed to (kept to reuse its allocation).
    touched: Vec<LabelId>,
    /// Started on first use, one per kind of target; shut down at the end.
    transports: Transports,
    /// Every transport's answers.
    events: Receiver<Event>,
    /// A started run's event channel and cancel request (`None` for `run`).
    watch: Option<Watch>,
    /// The run was cancelled: no task starts any more.
    cancelled: bool,
    /// Waves and `max_failures`, when either is set (from `run` on).
    rollout: Option<rollout::Rollout>,
    /// The job queues drained in this run and the jobs taken from them.
    drains: drain::Drains,
}

impl<'p> Scheduler<'p> {
    pub(crate) fn new(plan: &'p mut Plan, cfg: &'p Config) -> Scheduler<'p> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let n = plan.labels.len();
        let reports = plan
            .labels
            .iter()
            .map(|l| LabelReport {
                label: l.name.clone(),
                tasks: Vec::new(),
                error: None,
            })
            .collect();
        Scheduler {
            plan,
            cfg,
            rt: (0..n).map(|_| Rt::new()).collect(),
            reports,
            ready: VecDeque::with_capacity(n),
            slot_waiters: VecDeque::new(),
            conn_waiters: VecDeque::new(),
            slots_used: 0,
            open: 0,
            evictions: 0,
            idle: BTreeMap::new(),
            tick: 0,
            next_id: 1,
            timers: BinaryHeap::new(),
            active: 0,
            outstanding: 0,
            abort_all: None,
            touched: Vec::new(),
            drains: drain::Drains::new(tx.clone()),
            transports: Transports::new(tx, cfg.io_threads),
            events: rx,
            watch: None,
            cancelled: false,
            rollout: None,
        }
    }

    /// Sends this run's events to `watch` and listens to its cancel.
    pub(crate) fn watched(mut self, watch: Watch) -> Scheduler<'p> {
        self.watch = Some(watch);
        self
    }

    /// Runs every queue to its end and returns the report.
    pub(crate) fn run(mut self) -> Report {
        let start = Instant::now();
        self.start_labels();
        loop {
            self.settle();
            if self.active == 0 {
                break;
            }
            if self.outstanding == 0
                && self.timers.is_empty()
                && self.ready.is_empty()
                && !self.drains.waiting(&self.rt)
            {
                self.fail_stuck();
                continue;
            }
            self.wait_and_handle();
        }
        self.close_all();
        let jobs_not_run = self.leave_queues();
        let Scheduler {
            reports, transports, ..
        } = self;
        transports.shutdown();
        Report {
            labels: reports,
            duration: start.elapsed(),
            jobs_not_run,
        }
    }
}

impl Scheduler<'_> {
    /// Advances ready labels until nothing more can move without an event.
    fn settle(&mut self) {
        loop {
            while let Some(l) = self.ready.pop_front() {
                self.rt[l].queued = false;
                if self.rt[l].state == State::Ready {
                    self.advance(l);
                }
            }
            self.pump_slots();
            self.pump_conns();
            if self.ready.is_empty() {
                return;
            }
        }
    }

    fn wait_and_handle(&mut self) {
        let deadline = self.timers.peek().map(|Reverse((t, _, _))| *t);
        let first = if let Some(cancel) = self.watch.as_ref().and_then(|w| w.cancel.clone()) {
            match self.wait_watched(&cancel, deadline) {
                Some(ev) => Some(ev),
                None if self.cancelled => return,
                None => None,
            }
        } else {
            self.wait_event(deadline)
        };
        if let Some(ev) = first {
            self.handle(ev);
            // Take what else has arrived in one go: fewer wake-ups under load.
            while let Ok(ev) = self.events.try_recv() {
                self.handle(ev);
            }
        }
        self.fire_timers();
    }

    /// The next transport event, or `None` at `deadline`.
    fn wait_event(&mut self, deadline: Option<Instant>) -> Option<Event> {
        match deadline {
            Some(d) => match self.events.recv_deadline(d) {
                Ok(ev) => Some(ev),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => None,
            },
            // Every transport holds a sender for as long as the scheduler lives,
            // and `outstanding > 0` here, so an event will come.
            None => self.events.recv().ok(),
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((t, _, _))) = self.timers.peek() {
            if *t > now {
                break;
            }
            let Some(Reverse((_, _, timer))) = self.timers.pop() else {
                break;
            };
            match timer {
                Timer::Wake { label, gen } => {
                    if self.rt[label].timer_gen == gen && self.rt[label].state == State::Delayed {
                        self.make_ready(label);
                    }
                }
                Timer::TaskTimeout { label, token } => {
                    let rt = &mut self.rt[label];
                    if rt.state == State::Running && rt.token == token && !rt.timed_out && !rt.cancelled {
                        rt.timed_out = true;
                        log::info!(target: "ssh_parallel", "[{}] task timed out; cancelling it", self.plan.labels[label].name);
                        self.send_cancel(label, token);
                    }
                }
            }
        }
    }

    fn add_timer(&mut self, at: Instant, timer: Timer) {
        self.next_id += 1;
        self.timers.push(Reverse((at, self.next_id, timer)));
    }

    /// Waits `d` before advancing `l` again (`Ready` at once for zero). Keeps
    /// the label's slot when `release` is false (it is mid-task).
    fn delay(&mut self, l: LabelId, d: Duration, release: bool) {
        if release {
            self.release_slot(l);
        }
        if d.is_zero() {
            self.make_ready(l);
            return;
        }
        let rt = &mut self.rt[l];
        rt.timer_gen += 1;
        rt.state = State::Delayed;
        let gen = rt.timer_gen;
        self.add_timer(Instant::now() + d, Timer::Wake { label: l, gen });
    }

    fn make_ready(&mut self, l: LabelId) {
        let rt = &mut self.rt[l];
        rt.state = State::Ready;
        if !rt.queued {
            rt.queued = true;
            self.ready.push_back(l);
        }
    }

    fn name(&self, l: LabelId) -> Arc<str> {
        self.plan.labels[l].name.clone()
    }

    fn close_all(&mut self) {
        for l in 0..self.rt.len() {
            self.close_conn(l);
        }
        let deadline = Instant::now() + CLOSE_GRACE;
        while self.outstanding > 0 {
            match self.events.recv_deadline(deadline) {
                Ok(ev) => self.handle(ev),
                Err(_) => {
                    log::warn!(target: "ssh_parallel", "{} transport requests unanswered at the end of the run", self.outstanding);
                    break;
                }
            }
        }
    }

    /// Sends `Cancel` for the run `token` of label `l` (a timeout or a
    /// cancelled run). One is enough: every transport finds a task from its
    /// `Run` on (requests keep their order, and the local transport
    /// registers a task before its pool runs it).
    fn send_cancel(&mut self, l: LabelId, token: Token) {
        let host = self.plan.labels[l].host.clone();
        self.transports.send(&host, Request::Cancel { token });
    }
}
