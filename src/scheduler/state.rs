//! Per-label run-time state: where a label stands ([`State`]), its
//! connection ([`Conn`]), how its queue is being dropped ([`Discard`]), and
//! the counters of its head task ([`Rt`]).
//!
//! Invariant: `Rt`'s per-task counters (`attempt`, `reconnects`, `reruns`,
//! `timed_out`, `started`) describe the head task and are reset
//! (`reset_task`) whenever the head changes.
//!
//! May use: `transport` (ids only).

use std::time::{Instant, SystemTime};

use crate::transport::{ConnId, Token};

/// Where a label stands. Exactly one state at a time; only `Ready` labels
/// are advanced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// In the ready queue, or about to be advanced.
    Ready,
    /// Waiting for a worker slot (it is in `slot_waiters`).
    WaitSlot,
    /// Holding a slot, waiting for the connections limit (in `conn_waiters`).
    WaitConn,
    /// Holding a slot, its connection is being opened.
    Connecting,
    /// A task is running on a transport (its `token` is current).
    Running,
    /// Waiting for a timer (retry or reconnection delay).
    Delayed,
    /// Waiting for a join to complete (its head is the waiting task).
    WaitJoin,
    /// Its head is a drain of an open, empty job queue: waiting for a push
    /// or a close, holding no slot.
    WaitJob,
    /// Its queue is empty; counted out of `active`.
    Finished,
    /// Not started yet: its wave comes later (`rollout`).
    Held,
}

/// A label's connection, as the scheduler knows it. At most one per label;
/// every state but `None` counts in the scheduler's `open`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Conn {
    None,
    /// `Request::Connect` sent; `Connected` or `ConnectFailed` will answer.
    Connecting(ConnId),
    /// Usable for the label's next remote task.
    Up(ConnId),
    /// `Request::Disconnect` sent; `Closed` will answer.
    Closing(ConnId),
}

/// How the rest of a stopped label's queue is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Discard {
    /// Skipped by goto or stop: joins released as success.
    Skip,
    /// Dropped under Done: joins released as success.
    Done,
    /// Dropped under Abort: joins fail.
    Abort,
    /// Dropped because the run was cancelled: joins fail, and every task is
    /// reported with a `Cancelled` error.
    Cancel,
    /// Never started because more than `max_failures` labels failed
    /// (`rollout`): as `Cancel`, the error naming the threshold.
    NotStarted,
}

/// One label's run-time state, indexed by `LabelId` in `Scheduler::rt`.
pub(super) struct Rt {
    pub(super) state: State,
    pub(super) conn: Conn,
    /// Holds one of the `workers` slots (counted in `slots_used`).
    pub(super) has_slot: bool,
    /// Is in the scheduler's `ready` queue (so it is queued at most once).
    pub(super) queued: bool,
    /// Its key in the scheduler's `idle` map, while its connection is up and
    /// unused (only kept under a `connections` limit).
    pub(super) idle_key: Option<u64>,
    /// Set once the label stops (goto END excepted): its queue is dropped.
    pub(super) stopped: Option<Discard>,
    /// Runs of the head task so far.
    pub(super) attempt: u32,
    /// Reconnections spent by the head task.
    pub(super) reconnects: u32,
    /// Runs of the head task repeated because its connection died.
    pub(super) reruns: u32,
    /// The token of the head task's current run; events with another are late.
    pub(super) token: Token,
    /// The current run's timeout fired and a `Cancel` was sent.
    pub(super) timed_out: bool,
    /// The whole run was cancelled while this task ran, and a `Cancel` was sent.
    pub(super) cancelled: bool,
    /// Wall clock and monotonic start of the head task's current run.
    pub(super) started: Option<(SystemTime, Instant)>,
    /// Bumped by every `delay`: only a `Timer::Wake` of the current
    /// generation wakes the label.
    pub(super) timer_gen: u64,
    /// Its idle connection is being closed to make room for another label
    /// (counted in the scheduler's `evictions`).
    pub(super) evicting: bool,
}

impl Rt {
    pub(super) fn new() -> Rt {
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
            cancelled: false,
            started: None,
            timer_gen: 0,
            evicting: false,
        }
    }

    /// Forgets the head task's counters: the next task starts afresh.
    pub(super) fn reset_task(&mut self) {
        self.attempt = 0;
        self.reconnects = 0;
        self.reruns = 0;
        self.timed_out = false;
        self.cancelled = false;
        self.started = None;
    }
}
