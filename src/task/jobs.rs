//! [`JobQueue`], a shared FIFO of jobs that any thread may push to while a
//! run goes on, and [`Drain`], the task that makes a label take jobs from it
//! until it is closed and empty.
//!
//! The queue only holds jobs and tells the schedulers draining it that
//! something changed: each running scheduler registers a waker (it sends an
//! event on that scheduler's own channel), so an idle drainer costs nothing
//! and a push or a close wakes it at once. How a job runs (slots, policies,
//! retries, reports) is the scheduler's business (`scheduler::drain`).
//!
//! Invariants: a job is in exactly one place at a time: waiting here, or
//! taken by one scheduler, which runs it to a final outcome, gives it back
//! (at the front, keeping its attempts) or reports it not run (`remove`
//! only takes back a job still waiting); jobs are taken in push order
//! (given-back ones first); a closed queue accepts no new
//! job and never reopens; every waker registered is called after every push,
//! give-back and close that follows its registration.
//!
//! May use: `error`, `report` (`JobId`) and the action types of `task`.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::Action;
use crate::error::{Error, ErrorKind, Result};
use crate::report::JobId;

/// Job numbers: process-wide, so that a report naming a job is unambiguous
/// whatever queue it came from.
static NEXT_JOB: AtomicU64 = AtomicU64::new(1);
/// Queue numbers, for descriptions and logs.
static NEXT_QUEUE: AtomicU64 = AtomicU64::new(1);

/// Called after the queue changed; returns false once its scheduler is gone
/// (the waker is then dropped).
pub(crate) type Waker = Box<dyn Fn() -> bool + Send>;

/// A job waiting in a queue (or taken by a scheduler).
pub(crate) struct QueuedJob {
    pub(crate) id: JobId,
    /// As pushed: `%VAR%`s are expanded by the label that takes it.
    pub(crate) action: Arc<Action>,
    /// Runs already spent on it: a job given back after a failure carries
    /// them to the label that takes it next, so a retry limit counts them all.
    pub(crate) attempts: u32,
}

/// What `take` found.
pub(crate) enum Take {
    /// The next job, now the caller's.
    Job(QueuedJob),
    /// Nothing now, but the queue is open: wait for a wake.
    Empty,
    /// Closed and empty: the drain is over.
    Done,
}

/// The queue's contents, behind its lock.
struct Inner {
    /// Jobs not taken, in the order they will be taken.
    pending: VecDeque<QueuedJob>,
    /// Set once by `close`; never cleared.
    closed: bool,
    /// One per running scheduler draining the queue, by registration id.
    wakers: Vec<(u64, Waker)>,
    /// The last registration id handed out.
    last_waker: u64,
}

struct Shared {
    /// This queue's number (`NEXT_QUEUE`).
    id: u64,
    inner: Mutex<Inner>,
}

/// A shared queue of jobs: commands, transfers, subs, parsubs and connects.
/// Every label given a [`Drain`] on it takes the next job as soon as it is
/// free (first come, first served), runs it with its own host, variables
/// (`%LABEL%`, `%HOST%`, ...) and policies, and goes on until the queue is
/// [closed](Self::close) and empty. Each job runs exactly once, on one label.
///
/// The handle is cheap to clone and `Send + Sync`: push from any thread,
/// before the run or while it goes on. While the queue is open and empty its
/// drainers wait without holding worker slots or using CPU (daemon mode);
/// a push or a close wakes them at once.
///
/// ```
/// use ssh_parallel::{Command, Drain, Host, JobQueue, Parallel};
/// let mut pssh = Parallel::new();
/// for label in ["gpu1", "gpu2"] {
///     pssh.add_host(label, Host::local())?;
/// }
/// let jobs = JobQueue::new();
/// for seed in 1..=4 {
///     jobs.push(Command::new(format!("echo train --seed {seed} on %LABEL%")))?;
/// }
/// jobs.close();
/// pssh.push("gpu*", Drain::new(&jobs))?;
/// let report = pssh.run();
/// assert!(report.success());
/// assert_eq!(report.jobs().len(), 4);
/// # Ok::<(), ssh_parallel::Error>(())
/// ```
#[derive(Clone)]
pub struct JobQueue {
    shared: Arc<Shared>,
}

impl Default for JobQueue {
    fn default() -> Self {
        JobQueue::new()
    }
}

impl JobQueue {
    /// A new, open, empty queue.
    pub fn new() -> JobQueue {
        JobQueue {
            shared: Arc::new(Shared {
                id: NEXT_QUEUE.fetch_add(1, Ordering::Relaxed),
                inner: Mutex::new(Inner {
                    pending: VecDeque::new(),
                    closed: false,
                    wakers: Vec::new(),
                    last_waker: 0,
                }),
            }),
        }
    }

    /// Appends a job and wakes the drainers. A job is a command, a transfer,
    /// a sub, a parsub or a connect; anything that shapes a queue (join,
    /// here, goto, stop, a drain) or an `or_goto` option is refused with an
    /// [`ErrorKind::InvalidConfig`] error naming it, as are the actions
    /// `push` would refuse. A closed queue refuses every job with
    /// [`ErrorKind::QueueClosed`].
    pub fn push(&self, action: impl Into<Action>) -> Result<JobId> {
        let action = action.into();
        check_job(&action)
            .map_err(|e| Error::new(e.kind(), format!("job queue #{}: {}", self.shared.id, e.detail())))?;
        let mut inner = self.shared.inner.lock();
        if inner.closed {
            return Err(Error::new(
                ErrorKind::QueueClosed,
                format!(
                    "job queue #{} is closed: {} was not queued",
                    self.shared.id,
                    action.describe()
                ),
            ));
        }
        let id = JobId(NEXT_JOB.fetch_add(1, Ordering::Relaxed));
        inner.pending.push_back(QueuedJob {
            id,
            action: Arc::new(action),
            attempts: 0,
        });
        wake(&mut inner);
        Ok(id)
    }

    /// Takes back a job no label has taken yet: it will not run, and no run
    /// reports it. Returns false when the job is not waiting here (a label
    /// took it already, or it is not from this queue).
    pub fn remove(&self, id: JobId) -> bool {
        let mut inner = self.shared.inner.lock();
        match inner.pending.iter().position(|j| j.id == id) {
            Some(i) => inner.pending.remove(i).is_some(),
            None => false,
        }
    }

    /// The jobs waiting to be taken, in the order they will be.
    pub fn pending(&self) -> Vec<JobId> {
        self.shared.inner.lock().pending.iter().map(|j| j.id).collect()
    }

    /// Closes the queue: no job may be pushed any more, and each drainer
    /// finishes its drain once the queue is empty. Closing twice does nothing.
    pub fn close(&self) {
        let mut inner = self.shared.inner.lock();
        if !inner.closed {
            inner.closed = true;
            wake(&mut inner);
        }
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.shared.inner.lock().closed
    }

    /// How many jobs wait to be taken.
    pub fn len(&self) -> usize {
        self.shared.inner.lock().pending.len()
    }

    /// Whether no job waits to be taken.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// This queue's number, as descriptions and errors show it (`#3`).
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// Takes the next job.
    pub(crate) fn take(&self) -> Take {
        let mut inner = self.shared.inner.lock();
        match inner.pending.pop_front() {
            Some(job) => Take::Job(job),
            None if inner.closed => Take::Done,
            None => Take::Empty,
        }
    }

    /// How many jobs wait and whether the queue is closed, in one look.
    pub(crate) fn peek(&self) -> (usize, bool) {
        let inner = self.shared.inner.lock();
        (inner.pending.len(), inner.closed)
    }

    /// Whether the next job to be taken is a command or a transfer.
    pub(crate) fn next_needs_channel(&self) -> bool {
        let inner = self.shared.inner.lock();
        inner.pending.front().is_some_and(|j| {
            matches!(
                &*j.action,
                Action::Command(_) | Action::ScpGet(_) | Action::ScpPut(_) | Action::RsyncGet(_) | Action::RsyncPut(_)
            )
        })
    }

    /// Puts a taken job back at the front (a retry, or a label that stopped
    /// before running it), even into a closed queue: it was queued before
    /// the close.
    pub(crate) fn give_back(&self, job: QueuedJob) {
        let mut inner = self.shared.inner.lock();
        inner.pending.push_front(job);
        wake(&mut inner);
    }

    /// Registers a running scheduler's waker; returns its id for `leave`.
    pub(crate) fn register(&self, waker: Waker) -> u64 {
        let mut inner = self.shared.inner.lock();
        inner.last_waker += 1;
        let id = inner.last_waker;
        inner.wakers.push((id, waker));
        id
    }

    /// A scheduler's run ends: its waker goes, and if no other scheduler is
    /// draining the queue, the jobs still waiting are handed over (to be
    /// reported not run); otherwise they stay for the others.
    pub(crate) fn leave(&self, waker: u64) -> Vec<QueuedJob> {
        let mut inner = self.shared.inner.lock();
        inner.wakers.retain(|(id, _)| *id != waker);
        if inner.wakers.is_empty() {
            inner.pending.drain(..).collect()
        } else {
            Vec::new()
        }
    }

    /// Whether both handles are the same queue.
    pub(crate) fn same(&self, other: &JobQueue) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

/// Calls every waker, forgetting those whose scheduler is gone. Called with
/// the lock held: a waker only sends on an unbounded channel, it never blocks.
fn wake(inner: &mut Inner) {
    inner.wakers.retain(|(_, w)| w());
}

/// What a queue refuses beyond `Action::check`.
fn check_job(action: &Action) -> Result<()> {
    action.check()?;
    match action {
        Action::Command(_)
        | Action::ScpGet(_)
        | Action::ScpPut(_)
        | Action::RsyncGet(_)
        | Action::RsyncPut(_)
        | Action::Sub(_)
        | Action::Parsub(_)
        | Action::Connect(_) => {}
        Action::Join(_) | Action::Here(_) | Action::Goto(_) | Action::Stop(_) | Action::Drain(_) => {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                format!(
                    "a job is a command, a transfer, a sub, a parsub or a connect, not {}",
                    action.describe()
                ),
            ))
        }
    }
    if action.opts().is_some_and(|o| o.or_goto.is_some()) {
        return Err(Error::new(
            ErrorKind::InvalidConfig,
            format!(
                "option or_goto does not apply to a job (it has no queue of its own to jump in): {}",
                action.describe()
            ),
        ));
    }
    Ok(())
}

impl fmt::Debug for JobQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.shared.inner.lock();
        f.debug_struct("JobQueue")
            .field("id", &self.shared.id)
            .field("pending", &inner.pending.len())
            .field("closed", &inner.closed)
            .field("drainers", &inner.wakers.len())
            .finish()
    }
}

/// Makes a label take jobs from a [`JobQueue`]: pushed like any task, it is
/// one step of the label's queue that lasts until the job queue is closed
/// and empty and the jobs the label took have finished; the tasks after it
/// (a [`Join`](crate::Join) on the label, say) wait until then.
///
/// A job that fails follows its policy (the job's own, else the label's
/// host's, else the global one): under a retry it goes back to the front of
/// the queue, with its attempts counted, and may run on another label;
/// `Ignore` goes on draining; `Done` and `Abort` stop this label's drain,
/// and a job that never started on it (its connection could not be opened,
/// a `%VAR%` its host lacks) goes back to the queue for the others;
/// `AbortAll` stops every label. A retry's delay is the label's pause before
/// it takes another job. The run's report lists every job once
/// ([`Report::jobs`](crate::Report::jobs)), with the label that ran it.
#[derive(Clone, Debug)]
pub struct Drain {
    pub(crate) queue: JobQueue,
}

impl Drain {
    /// A drain of `queue`.
    pub fn new(queue: &JobQueue) -> Drain {
        Drain { queue: queue.clone() }
    }
}
