//! The scheduler: the single owner of the plan while it runs. It walks every
//! label's queue, hands remote tasks to transports over channels, and applies
//! joins, gotos, error policies, reconnections and the workers/connections
//! limits.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use petgraph::graph::NodeIndex;

use crate::error::{BoxError, Error, ErrorKind, Result};
use crate::plan::{LabelId, Node, Plan, Selection, Step};
use crate::policy::{Decision, ErrorContext, OnError};
use crate::report::{LabelReport, Report, TaskOutput, TaskReport, TaskStatus};
use crate::task::{Action, Class};
use crate::transport::{ConnId, Event, Exit, Job, Outcome, Request, Token, TransportError, Transports};

/// How long the end of a run waits for connections to close.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// The scheduler-wide settings (see `ParallelBuilder`).
#[derive(Clone, Debug)]
pub(crate) struct Config {
    /// 0: unlimited.
    pub(crate) workers: usize,
    /// 0: unlimited.
    pub(crate) connections: usize,
    pub(crate) reconnections: u32,
    pub(crate) reconnect_delay: Duration,
    pub(crate) on_error: Option<OnError>,
    /// Event-loop threads of the SSH transport (at least 1).
    pub(crate) io_threads: usize,
    /// Open the next channel task's channel ahead (`ParallelBuilder::channels_ahead`).
    pub(crate) channels_ahead: bool,
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
        }
    }
}

/// What a [`Sub`](crate::Sub) closure can see and do.
pub struct SubContext<'a> {
    label: LabelId,
    plan: &'a mut Plan,
    reports: &'a [LabelReport],
    touched: &'a mut Vec<LabelId>,
    attempt: u32,
}

impl SubContext<'_> {
    /// The label this sub runs for.
    pub fn label(&self) -> &str {
        &self.plan.labels[self.label].name
    }

    /// Which run of this sub it is: 1, then 2... on retries.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The outcomes so far of `label`'s tasks in this run.
    pub fn results(&self, label: &str) -> Option<&[TaskReport]> {
        self.plan.id(label).map(|id| self.reports[id].tasks())
    }

    /// The outcome of this label's task just before this sub.
    pub fn last_result(&self) -> Option<&TaskReport> {
        self.reports[self.label].tasks().last()
    }

    /// The error that stopped `label` in this run, if any.
    pub fn label_error(&self, label: &str) -> Option<&Error> {
        self.plan.id(label).and_then(|id| self.reports[id].error())
    }

    /// Pushes a new task while the plan runs, exactly as `Parallel::push`.
    pub fn push(&mut self, selector: &str, action: impl Into<Action>) -> Result<Selection> {
        let (sel, touched) = self.plan.push(selector, action.into())?;
        self.touched.extend(touched);
        Ok(sel)
    }

    /// Every registered label.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.plan.labels.iter().map(|l| &*l.name)
    }
}

impl std::fmt::Debug for SubContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubContext")
            .field("label", &self.label())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In the ready queue, or about to be advanced.
    Ready,
    /// Waiting for a worker slot.
    WaitSlot,
    /// Holding a slot, waiting for the connections limit.
    WaitConn,
    /// Holding a slot, its connection is being opened.
    Connecting,
    /// A task is running on a transport.
    Running,
    /// Waiting for a timer (retry or reconnection delay).
    Delayed,
    /// Waiting for a join to complete.
    WaitJoin,
    /// Its queue is empty.
    Finished,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conn {
    None,
    Connecting(ConnId),
    Up(ConnId),
    Closing(ConnId),
}

/// How the rest of a stopped label's queue is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Discard {
    /// Skipped by goto or stop: joins released as success.
    Skip,
    /// Dropped under Done: joins released as success.
    Done,
    /// Dropped under Abort: joins fail.
    Abort,
}

struct Rt {
    state: State,
    conn: Conn,
    has_slot: bool,
    queued: bool,
    idle_key: Option<u64>,
    stopped: Option<Discard>,
    /// Runs of the head task so far.
    attempt: u32,
    /// Reconnections spent by the head task.
    reconnects: u32,
    reruns: u32,
    token: Token,
    timed_out: bool,
    /// Wall clock and monotonic start of the head task's current run.
    started: Option<(SystemTime, Instant)>,
    timer_gen: u64,
    /// Its idle connection is being closed to make room for another label.
    evicting: bool,
}

impl Rt {
    fn new() -> Rt {
        Rt {
            state: State::Ready,
            conn: Conn::None,
            has_slot: false,
            queued: false,
            idle_key: None,
            stopped: None,
            attempt: 0,
            reconnects: 0,
            reruns: 0,
            token: 0,
            timed_out: false,
            started: None,
            timer_gen: 0,
            evicting: false,
        }
    }

    fn reset_task(&mut self) {
        self.attempt = 0;
        self.reconnects = 0;
        self.reruns = 0;
        self.timed_out = false;
        self.started = None;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Wake { label: LabelId, gen: u64 },
    TaskTimeout { label: LabelId, token: Token },
}

/// How a finished remote task came out, before policies.
enum Verdict {
    Ok,
    /// Failed with a non-zero exit status: `or_goto` may jump over it.
    ExitStatus(Error),
    Failed(Error),
    /// The connection died under it: re-run while reconnections remain.
    Lost(Error),
}

pub(crate) struct Scheduler<'p> {
    plan: &'p mut Plan,
    cfg: &'p Config,
    rt: Vec<Rt>,
    reports: Vec<LabelReport>,
    ready: VecDeque<LabelId>,
    slot_waiters: VecDeque<LabelId>,
    conn_waiters: VecDeque<LabelId>,
    slots_used: usize,
    /// Connections connecting, up or closing.
    open: usize,
    /// Connections being closed to make room for a waiter.
    evictions: usize,
    /// Idle connections by the tick they became idle: the first is the LRU.
    idle: BTreeMap<u64, LabelId>,
    tick: u64,
    next_id: u64,
    timers: BinaryHeap<Reverse<(Instant, u64, Timer)>>,
    active: usize,
    /// Requests a transport still owes an answer to.
    outstanding: usize,
    abort_all: Option<Arc<str>>,
    touched: Vec<LabelId>,
    transports: Transports,
    events: Receiver<Event>,
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
            transports: Transports::new(tx, cfg.io_threads),
            events: rx,
        }
    }

    /// Runs every queue to its end and returns the report.
    pub(crate) fn run(mut self) -> Report {
        let start = Instant::now();
        for l in 0..self.rt.len() {
            self.active += 1;
            self.make_ready(l);
        }
        loop {
            self.settle();
            if self.active == 0 {
                break;
            }
            if self.outstanding == 0 && self.timers.is_empty() && self.ready.is_empty() {
                self.fail_stuck();
                continue;
            }
            self.wait_and_handle();
        }
        self.close_all();
        let Scheduler {
            reports, transports, ..
        } = self;
        transports.shutdown();
        Report {
            labels: reports,
            duration: start.elapsed(),
        }
    }

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
        let first = match deadline {
            Some(d) => match self.events.recv_deadline(d) {
                Ok(ev) => Some(ev),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => None,
            },
            // Every transport holds a sender for as long as the scheduler lives,
            // and `outstanding > 0` here, so an event will come.
            None => self.events.recv().ok(),
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
                    if rt.state == State::Running && rt.token == token && !rt.timed_out {
                        rt.timed_out = true;
                        log::info!(target: "ssh_parallel", "[{}] task timed out; cancelling it", self.plan.labels[label].name);
                        let host = self.plan.labels[label].host.clone();
                        self.transports.send(&host, Request::Cancel { token });
                    }
                }
            }
        }
    }

    fn add_timer(&mut self, at: Instant, timer: Timer) {
        self.next_id += 1;
        self.timers.push(Reverse((at, self.next_id, timer)));
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

    // ---- walking a queue -------------------------------------------------

    fn advance(&mut self, l: LabelId) {
        loop {
            let Some(node) = self.plan.labels[l].head else {
                self.finish_label(l);
                return;
            };
            if let Some(how) = self.rt[l].stopped {
                self.discard_from(l, node, how);
                continue;
            }
            if let Some(by) = self.abort_all.clone() {
                let msg = format!("aborted before this task because label {by} failed under AbortAll");
                let e = self.task_error(l, node, ErrorKind::Aborted, msg);
                log::info!(target: "ssh_parallel", "[{}] aborted (AbortAll from {by})", self.name(l));
                self.reports[l].error = Some(e);
                self.rt[l].stopped = Some(Discard::Abort);
                continue;
            }
            let (step_action, join) = match &self.plan.graph[node] {
                Node::Task {
                    step: Step::Marker(j), ..
                } => {
                    let j = *j;
                    self.plan.pop(l);
                    self.release_join(j, l, true);
                    continue;
                }
                Node::Task {
                    step: Step::Action { action, join, .. },
                    ..
                } => (action.clone(), *join),
                Node::Join(_) => unreachable!("join nodes are never in a queue"),
            };
            match &*step_action {
                Action::Here(_) => {
                    self.complete_simple(l, node);
                }
                Action::Goto(g) => {
                    let tag = g.tag.clone();
                    if !self.jump(l, node, &tag, TaskStatus::Succeeded, None) {
                        let e = self.task_error(
                            l,
                            node,
                            ErrorKind::GotoFailed,
                            format!("no `here {tag}` later in the queue"),
                        );
                        self.rt[l].attempt = 1;
                        if !self.fail(l, node, e) {
                            return;
                        }
                    }
                }
                Action::Stop(_) => {
                    self.jump(l, node, "END", TaskStatus::Succeeded, None);
                }
                Action::Join(_) => {
                    let Some(j) = join else {
                        self.complete_simple(l, node);
                        continue;
                    };
                    let Node::Join(js) = &self.plan.graph[j] else {
                        unreachable!()
                    };
                    if js.remaining > 0 {
                        self.rt[l].state = State::WaitJoin;
                        return;
                    }
                    if let Some(by) = js.failed_by.clone() {
                        let msg = format!("join {} failed: label {by} was aborted", js.selector);
                        let e = self.task_error(l, node, ErrorKind::JoinFailed, msg);
                        self.rt[l].attempt = 1;
                        if !self.fail(l, node, e) {
                            return;
                        }
                    } else {
                        self.complete_simple(l, node);
                    }
                }
                Action::Sub(_) => {
                    if !self.run_sub(l, node, &step_action) {
                        return;
                    }
                }
                _ => {
                    // Remote (or detached) work: needs a slot, maybe a connection.
                    self.start_remote(l, &step_action);
                    return;
                }
            }
        }
    }

    /// Records a local task that needs no work (here, a released join) and pops it.
    fn complete_simple(&mut self, l: LabelId, node: NodeIndex) {
        let mut r = self.new_report(node, TaskStatus::Succeeded);
        r.attempts = 1;
        r.started = Some(SystemTime::now());
        self.record(l, node, r);
        self.plan.pop(l);
        self.rt[l].reset_task();
    }

    fn new_report(&self, node: NodeIndex, status: TaskStatus) -> TaskReport {
        match &self.plan.graph[node] {
            Node::Task {
                seq,
                step: Step::Action { desc, .. },
                ..
            } => TaskReport::new(*seq, desc.clone(), status),
            _ => TaskReport::new(0, "marker".into(), status),
        }
    }

    /// Appends a task's final report and calls its `on_done`.
    fn record(&mut self, l: LabelId, node: NodeIndex, report: TaskReport) {
        if let Node::Task {
            step: Step::Action { action, .. },
            ..
        } = &self.plan.graph[node]
        {
            if let Some(f) = action.opts().and_then(|o| o.on_done.clone()) {
                let name = self.name(l);
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&name, &report))).is_err() {
                    log::error!(target: "ssh_parallel", "[{name}] on_done callback panicked");
                }
            }
        }
        self.reports[l].tasks.push(report);
    }

    fn task_error(&self, l: LabelId, node: NodeIndex, kind: ErrorKind, msg: impl Into<String>) -> Error {
        let mut e = Error::new(kind, msg).with_label(self.name(l));
        if let Node::Task {
            seq,
            step: Step::Action { desc, .. },
            ..
        } = &self.plan.graph[node]
        {
            e = e.with_task(format!("task #{seq} ({desc})"));
        }
        e
    }

    /// Jumps from `node` (the head) to the first later `here tag`; `END` without
    /// one empties the queue. The head itself is recorded with `status`.
    /// Returns false, leaving the queue untouched, when the tag is missing.
    fn jump(&mut self, l: LabelId, node: NodeIndex, tag: &str, status: TaskStatus, report: Option<TaskReport>) -> bool {
        let target = self.plan.find_here(node, tag);
        if target.is_none() && tag != "END" {
            return false;
        }
        let mut r = report.unwrap_or_else(|| {
            let mut r = self.new_report(node, status);
            r.attempts = 1;
            r.started = Some(SystemTime::now());
            r
        });
        r.status = status;
        self.record(l, node, r);
        self.plan.pop(l);
        self.rt[l].reset_task();
        while let Some(n) = self.plan.labels[l].head {
            if Some(n) == target {
                break;
            }
            self.discard_one(l, n, Discard::Skip);
        }
        true
    }

    /// Drops the head `node` and everything after it.
    fn discard_from(&mut self, l: LabelId, node: NodeIndex, how: Discard) {
        let mut cur = Some(node);
        while let Some(n) = cur {
            self.discard_one(l, n, how);
            cur = self.plan.labels[l].head;
        }
    }

    /// Drops the head task `n` without running it.
    fn discard_one(&mut self, l: LabelId, n: NodeIndex, how: Discard) {
        debug_assert_eq!(self.plan.labels[l].head, Some(n));
        match &self.plan.graph[n] {
            Node::Task {
                step: Step::Marker(j), ..
            } => {
                let j = *j;
                self.plan.pop(l);
                self.release_join(j, l, how != Discard::Abort);
            }
            _ => {
                let status = if how == Discard::Skip {
                    TaskStatus::Skipped
                } else {
                    TaskStatus::Cancelled
                };
                let r = self.new_report(n, status);
                self.record(l, n, r);
                self.plan.pop(l);
            }
        }
    }

    /// One marker of join `j` was reached (`ok`) or discarded by an abort.
    fn release_join(&mut self, j: NodeIndex, by: LabelId, ok: bool) {
        let name = self.name(by);
        let Node::Join(js) = &mut self.plan.graph[j] else {
            return;
        };
        js.remaining -= 1;
        if !ok && js.failed_by.is_none() {
            js.failed_by = Some(name);
        }
        if js.remaining > 0 {
            return;
        }
        for w in self.plan.waiters(j) {
            if let Node::Task { label, .. } = self.plan.graph[w] {
                if self.rt[label].state == State::WaitJoin && self.plan.labels[label].head == Some(w) {
                    self.make_ready(label);
                }
            }
        }
    }

    fn finish_label(&mut self, l: LabelId) {
        if self.rt[l].state == State::Finished {
            return;
        }
        self.release_slot(l);
        self.rt[l].state = State::Finished;
        self.active -= 1;
        // A label keeps its connection between tasks and closes it when done.
        self.close_conn(l);
    }

    /// Labels stuck with nothing in flight (a bug if it ever happens): fail
    /// them rather than hang.
    fn fail_stuck(&mut self) {
        for l in 0..self.rt.len() {
            if self.rt[l].state == State::Finished {
                continue;
            }
            let state = self.rt[l].state;
            log::error!(target: "ssh_parallel", "[{}] stuck in {state:?} with nothing in flight; aborting it", self.name(l));
            let e = Error::new(
                ErrorKind::Aborted,
                format!("internal scheduler error: label stuck in {state:?}"),
            )
            .with_label(self.name(l));
            self.reports[l].error.get_or_insert(e);
            self.rt[l].stopped = Some(Discard::Abort);
            self.release_slot(l);
            self.make_ready(l);
        }
    }

    // ---- sub -------------------------------------------------------------

    /// Runs a sub on this thread. Returns whether the label goes on advancing.
    fn run_sub(&mut self, l: LabelId, node: NodeIndex, action: &Arc<Action>) -> bool {
        let Action::Sub(sub) = &**action else { return true };
        self.rt[l].attempt += 1;
        let attempt = self.rt[l].attempt;
        let started = (SystemTime::now(), Instant::now());
        self.rt[l].started = Some(started);
        let mut touched = std::mem::take(&mut self.touched);
        let result = {
            let mut ctx = SubContext {
                label: l,
                plan: self.plan,
                reports: &self.reports,
                touched: &mut touched,
                attempt,
            };
            let f = sub.f.clone();
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (f.lock())(&mut ctx)))
        };
        for &t in &touched {
            if self.rt[t].state == State::Finished {
                self.active += 1;
                self.make_ready(t);
            }
        }
        touched.clear();
        self.touched = touched;
        let elapsed = started.1.elapsed();
        let timeout = sub.opts.timeout;
        let error = match result {
            Ok(Ok(())) if timeout.is_some_and(|t| elapsed > t) => Some(self.task_error(
                l,
                node,
                ErrorKind::Timeout,
                format!(
                    "took {elapsed:.2?}, over its timeout of {:.2?}",
                    timeout.unwrap_or_default()
                ),
            )),
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(self.sub_error(l, node, e)),
            Err(panic) => Some(self.task_error(
                l,
                node,
                ErrorKind::Local,
                format!("sub panicked: {}", crate::panic::message(&*panic)),
            )),
        };
        match error {
            None => {
                let mut r = self.new_report(node, TaskStatus::Succeeded);
                r.attempts = attempt;
                r.started = Some(started.0);
                r.duration = elapsed;
                self.record(l, node, r);
                self.plan.pop(l);
                self.rt[l].reset_task();
                true
            }
            Some(e) => self.fail(l, node, e),
        }
    }

    fn sub_error(&self, l: LabelId, node: NodeIndex, e: BoxError) -> Error {
        let msg = format!("sub failed: {e}");
        self.task_error(l, node, ErrorKind::Local, msg).with_boxed_source(e)
    }

    // ---- remote tasks ----------------------------------------------------

    fn start_remote(&mut self, l: LabelId, action: &Arc<Action>) {
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

    fn send_run(&mut self, l: LabelId, action: &Arc<Action>, conn: Option<ConnId>) {
        self.unmark_idle(l);
        self.next_id += 1;
        let token = self.next_id;
        let entry = &self.plan.labels[l];
        let prefetch =
            self.cfg.channels_ahead && conn.is_some() && entry.head.is_some_and(|h| self.plan.channel_task_follows(h));
        let rt = &mut self.rt[l];
        rt.token = token;
        rt.attempt += 1;
        rt.timed_out = false;
        rt.state = State::Running;
        let now = Instant::now();
        rt.started = Some((SystemTime::now(), now));
        let job = Job {
            label: l,
            name: entry.name.clone(),
            host: entry.host.clone(),
            action: action.clone(),
            token,
            conn,
            prefetch,
        };
        let host = entry.host.clone();
        if log::log_enabled!(target: "ssh_parallel", log::Level::Debug) {
            log::debug!(target: "ssh_parallel", "[{}] start {} (attempt {})", entry.name, action.describe(), rt.attempt);
        }
        if let Some(t) = action.opts().and_then(|o| o.timeout) {
            self.add_timer(now + t, Timer::TaskTimeout { label: l, token });
        }
        self.outstanding += 1;
        self.transports.send(&host, Request::Run(job));
    }

    fn pump_slots(&mut self) {
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

    fn release_slot(&mut self, l: LabelId) {
        if self.rt[l].has_slot {
            self.rt[l].has_slot = false;
            self.slots_used -= 1;
        }
    }

    fn can_open(&self) -> bool {
        self.cfg.connections == 0 || self.open < self.cfg.connections
    }

    fn pump_conns(&mut self) {
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

    fn open_conn(&mut self, l: LabelId) {
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

    fn close_conn(&mut self, l: LabelId) {
        self.unmark_idle(l);
        if let Conn::Up(c) = self.rt[l].conn {
            self.rt[l].conn = Conn::Closing(c);
            self.outstanding += 1;
            let host = self.plan.labels[l].host.clone();
            self.transports.send(&host, Request::Disconnect { label: l, conn: c });
        }
    }

    fn mark_idle(&mut self, l: LabelId) {
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

    fn unmark_idle(&mut self, l: LabelId) {
        if let Some(k) = self.rt[l].idle_key.take() {
            self.idle.remove(&k);
        }
    }

    /// A connection slot came free.
    fn conn_gone(&mut self, l: LabelId) {
        self.open -= 1;
        self.unmark_idle(l);
        if std::mem::take(&mut self.rt[l].evicting) {
            self.evictions -= 1;
        }
        self.rt[l].conn = Conn::None;
    }

    // ---- events ----------------------------------------------------------

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Connected { label, conn } => {
                self.outstanding -= 1;
                if self.rt[label].conn != Conn::Connecting(conn) {
                    return;
                }
                log::debug!(target: "ssh_parallel", "[{}] connected", self.name(label));
                self.rt[label].conn = Conn::Up(conn);
                if self.rt[label].state == State::Connecting {
                    self.make_ready(label);
                } else {
                    self.mark_idle(label);
                }
            }
            Event::ConnectFailed { label, conn, error } => {
                self.outstanding -= 1;
                if self.rt[label].conn != Conn::Connecting(conn) {
                    return;
                }
                self.conn_gone(label);
                let e = Error::new(ErrorKind::Connect, error.to_string()).with_source(error);
                self.connection_failed(label, e, false);
            }
            Event::Lost { label, conn, error } => {
                if self.rt[label].conn == Conn::Up(conn) {
                    log::info!(target: "ssh_parallel", "[{}] idle connection lost: {error}", self.name(label));
                    self.conn_gone(label);
                }
            }
            Event::Closed { label, conn } => {
                self.outstanding -= 1;
                if self.rt[label].conn == Conn::Closing(conn) {
                    self.conn_gone(label);
                }
            }
            Event::Finished { label, token, outcome } => {
                if self.rt[label].token != token || self.rt[label].state != State::Running {
                    // A task abandoned after its timeout, answering late.
                    return;
                }
                self.outstanding -= 1;
                self.task_finished(label, outcome);
            }
        }
    }

    /// The head task's connection attempt failed (`lost`: it died under a
    /// running task). Reconnect while the task has attempts left.
    fn connection_failed(&mut self, l: LabelId, e: Error, lost: bool) {
        let Some(node) = self.plan.labels[l].head else { return };
        let budget = self.reconnections(l, node);
        if self.rt[l].reconnects < budget {
            self.rt[l].reconnects += 1;
            if lost {
                self.rt[l].reruns += 1;
            }
            log::info!(
                target: "ssh_parallel",
                "[{}] {e}; reconnecting ({}/{budget})",
                self.name(l),
                self.rt[l].reconnects
            );
            if lost {
                // The task runs again from scratch: it is not a new attempt.
                self.rt[l].attempt -= 1;
            }
            self.delay(l, self.cfg.reconnect_delay, false);
            return;
        }
        self.release_slot(l);
        let e = self.annotate(l, node, e);
        let mut r = self.new_report(node, TaskStatus::Failed);
        if let Some((wall, mono)) = self.rt[l].started {
            r.started = Some(wall);
            r.duration = mono.elapsed();
        }
        if !lost {
            // The task never reached the host, but this was one more try.
            self.rt[l].attempt += 1;
        }
        if self.fail_with(l, node, e, Some(r)) {
            self.make_ready(l);
        }
    }

    /// Adds the label and task to a transport's error.
    fn annotate(&self, l: LabelId, node: NodeIndex, e: Error) -> Error {
        let t = self.task_error(l, node, e.kind(), e.detail().to_owned());
        t.with_exit(e.exit_code(), e.signal())
    }

    fn reconnections(&self, l: LabelId, node: NodeIndex) -> u32 {
        let task = match &self.plan.graph[node] {
            Node::Task {
                step: Step::Action { action, .. },
                ..
            } => action.opts().and_then(|o| o.reconnections),
            _ => None,
        };
        task.or(self.plan.labels[l].host.reconnections)
            .unwrap_or(self.cfg.reconnections)
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

    fn task_finished(&mut self, l: LabelId, outcome: Outcome) {
        let Some(node) = self.plan.labels[l].head else { return };
        let (wall, mono) = self.rt[l].started.unwrap_or((outcome.started, Instant::now()));
        let mut r = self.new_report(node, TaskStatus::Succeeded);
        r.started = Some(wall);
        r.duration = mono.elapsed();
        r.attempts = self.rt[l].attempt;
        r.reruns = self.rt[l].reruns;
        if outcome.stdout.bytes.is_some() || outcome.stderr.bytes.is_some() {
            r.output = Some(Box::new(TaskOutput {
                stdout: outcome.stdout.bytes,
                stderr: outcome.stderr.bytes,
                stdout_truncated: outcome.stdout.truncated,
                stderr_truncated: outcome.stderr.truncated,
            }));
        }
        let action = match &self.plan.graph[node] {
            Node::Task {
                step: Step::Action { action, .. },
                ..
            } => action.clone(),
            _ => return,
        };
        let verdict = self.judge(l, node, &action, outcome.result, &mut r);
        match verdict {
            Verdict::Lost(e) => {
                if matches!(self.rt[l].conn, Conn::Up(_)) {
                    self.conn_gone(l);
                }
                self.connection_failed(l, e, true);
                return;
            }
            Verdict::Ok => {
                self.release_slot(l);
                self.mark_idle(l);
                self.record(l, node, r);
                self.plan.pop(l);
                self.rt[l].reset_task();
            }
            Verdict::ExitStatus(e) => {
                self.release_slot(l);
                self.mark_idle(l);
                let or_goto = action.opts().and_then(|o| o.or_goto.clone());
                if let Some(tag) = or_goto {
                    r.error = Some(Box::new(e));
                    if self.jump(l, node, &tag, TaskStatus::Jumped, Some(r)) {
                        self.make_ready(l);
                        return;
                    }
                    let e = self.task_error(
                        l,
                        node,
                        ErrorKind::GotoFailed,
                        format!("or_goto: no `here {tag}` later in the queue"),
                    );
                    if self.fail(l, node, e) {
                        self.make_ready(l);
                    }
                    return;
                }
                if !self.fail_with(l, node, e, Some(r)) {
                    return;
                }
            }
            Verdict::Failed(e) => {
                self.release_slot(l);
                self.mark_idle(l);
                if !self.fail_with(l, node, e, Some(r)) {
                    return;
                }
            }
        }
        self.make_ready(l);
    }

    /// Classifies a transport's result for the task `action`.
    fn judge(
        &mut self,
        l: LabelId,
        node: NodeIndex,
        action: &Action,
        result: std::result::Result<Exit, TransportError>,
        r: &mut TaskReport,
    ) -> Verdict {
        if self.rt[l].timed_out {
            if let Ok(exit) = &result {
                r.exit_code = exit.code;
                r.signal = exit.signal;
            }
            let t = action.opts().and_then(|o| o.timeout).unwrap_or_default();
            return Verdict::Failed(self.task_error(l, node, ErrorKind::Timeout, format!("timed out after {t:.2?}")));
        }
        let transfer = matches!(
            action,
            Action::ScpGet(_) | Action::ScpPut(_) | Action::RsyncGet(_) | Action::RsyncPut(_)
        );
        match result {
            Ok(exit) => {
                r.exit_code = exit.code;
                r.signal = exit.signal;
                let Action::Command(c) = action else { return Verdict::Ok };
                match (exit.code, exit.signal) {
                    (Some(code), _) if c.ok_exit_codes.contains(&code) => Verdict::Ok,
                    (Some(code), _) => Verdict::ExitStatus(
                        self.task_error(l, node, ErrorKind::Command, format!("exited with status {code}"))
                            .with_exit(Some(code), None),
                    ),
                    (None, Some(sig)) => Verdict::Failed(
                        self.task_error(l, node, ErrorKind::Command, format!("killed by signal {sig}"))
                            .with_exit(None, Some(sig)),
                    ),
                    (None, None) => {
                        Verdict::Failed(self.task_error(l, node, ErrorKind::Command, "ended without an exit status"))
                    }
                }
            }
            Err(TransportError::ConnectionLost(m)) => {
                Verdict::Lost(Error::new(ErrorKind::Connect, format!("connection lost: {m}")))
            }
            Err(TransportError::Connect(m)) => Verdict::Lost(Error::new(ErrorKind::Connect, m)),
            Err(TransportError::Transfer(m)) => Verdict::Failed(self.task_error(l, node, ErrorKind::Transfer, m)),
            Err(TransportError::Local { message, source }) => {
                let kind = if transfer {
                    ErrorKind::Transfer
                } else {
                    ErrorKind::Local
                };
                let mut e = self.task_error(l, node, kind, message);
                if let Some(s) = source {
                    e = e.with_boxed_source(s);
                }
                Verdict::Failed(e)
            }
        }
    }

    // ---- error policies --------------------------------------------------

    /// Applies the error policy to the head task's failure. Returns whether
    /// the label can go on advancing now.
    fn fail(&mut self, l: LabelId, node: NodeIndex, e: Error) -> bool {
        self.fail_with(l, node, e, None)
    }

    fn fail_with(&mut self, l: LabelId, node: NodeIndex, e: Error, report: Option<TaskReport>) -> bool {
        let (policy, desc) = match &self.plan.graph[node] {
            Node::Task {
                step: Step::Action { action, desc, .. },
                ..
            } => (
                action
                    .opts()
                    .and_then(|o| o.on_error.clone())
                    .or_else(|| self.plan.labels[l].host.on_error.clone())
                    .or_else(|| self.cfg.on_error.clone())
                    .unwrap_or(OnError::Abort),
                desc.clone(),
            ),
            _ => (OnError::Abort, Arc::from("marker")),
        };
        let name = self.name(l);
        let attempt = self.rt[l].attempt.max(1);
        let decision = if e.kind() == ErrorKind::Aborted {
            Decision::Abort
        } else {
            let ctx = ErrorContext {
                label: &name,
                error: &e,
                task: &desc,
                attempt,
                // A failed join cannot succeed on a retry.
                retryable: e.kind() != ErrorKind::JoinFailed,
                plan: self.plan,
                reports: &self.reports,
            };
            match (policy.decide(&ctx), e.kind()) {
                (Decision::Retry(_), ErrorKind::GotoFailed) => Decision::Ignore,
                (Decision::Retry(_), ErrorKind::JoinFailed) => Decision::Abort,
                (d, _) => d,
            }
        };
        log::info!(target: "ssh_parallel", "{e} -> {decision:?}");
        let mut r = report.unwrap_or_else(|| {
            let mut r = self.new_report(node, TaskStatus::Failed);
            if let Some((wall, mono)) = self.rt[l].started {
                r.started = Some(wall);
                r.duration = mono.elapsed();
            }
            r
        });
        r.attempts = attempt;
        r.reruns = self.rt[l].reruns;
        match decision {
            Decision::Retry(d) => {
                self.rt[l].reconnects = 0;
                self.rt[l].timed_out = false;
                self.delay(l, d, true);
                false
            }
            Decision::Ignore => {
                r.status = TaskStatus::Ignored;
                r.error = Some(Box::new(e));
                self.record(l, node, r);
                self.plan.pop(l);
                self.rt[l].reset_task();
                true
            }
            Decision::Done | Decision::Abort | Decision::AbortAll => {
                r.status = TaskStatus::Failed;
                r.error = Some(Box::new(e.clone()));
                self.record(l, node, r);
                self.plan.pop(l);
                self.rt[l].reset_task();
                self.reports[l].error = Some(e);
                self.rt[l].stopped = Some(if decision == Decision::Done {
                    Discard::Done
                } else {
                    Discard::Abort
                });
                if decision == Decision::AbortAll && self.abort_all.is_none() {
                    self.abort_all = Some(name);
                    self.wake_all_for_abort();
                }
                true
            }
        }
    }

    /// Under AbortAll every label not in the middle of a task stops now.
    fn wake_all_for_abort(&mut self) {
        for l in 0..self.rt.len() {
            match self.rt[l].state {
                State::WaitSlot | State::WaitJoin | State::Delayed => self.make_ready(l),
                State::WaitConn => {
                    self.release_slot(l);
                    self.make_ready(l);
                }
                _ => {}
            }
        }
    }

    // ---- the end ---------------------------------------------------------

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
}
