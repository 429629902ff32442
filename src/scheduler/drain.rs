//! Draining job queues. A label whose head is a `Drain` takes the next job
//! of its `JobQueue` and splices it in front of the drain as a task of its
//! own, so worker slots, connections, timeouts, policies, events and reports
//! treat a job as any task; while the open queue is empty the label waits
//! (`State::WaitJob`: no slot, no timer, no polling) until the queue's waker
//! sends `Event::Jobs` on the scheduler's own event channel; once the queue
//! is closed and empty the drain completes and the label goes on.
//!
//! Invariants: a job taken is in exactly one label's queue, right before
//! that label's drain, until it is recorded (its report carries its
//! `JobId`) or given back to the front of its queue (a retry, or a label
//! stopped before running it); at the end of a run every queue met is left,
//! and the jobs no scheduler drains any more are reported not run, so every
//! job is reported exactly once.
//!
//! May use: what `scheduler` may use (`task::jobs` for the queue).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::Sender;
use petgraph::graph::NodeIndex;

use super::state::{Rt, State};
use super::Scheduler;
use crate::error::{Error, ErrorKind};
use crate::plan::LabelId;
use crate::report::{JobId, TaskReport, TaskStatus};
use crate::task::{Action, Drain, JobQueue, QueuedJob, Take};
use crate::transport::Event;

/// How many drainers an error about a job not run names before "and N more".
const NAMED_DRAINERS: usize = 3;

/// The scheduler's side of every job queue it drains.
pub(super) struct Drains {
    /// The scheduler's own event channel, for the wakers it registers.
    tx: Sender<Event>,
    /// Set by a waker when it sends `Event::Jobs`, cleared before the
    /// scheduler looks at the queues: at most one wake is in flight.
    wake: Arc<AtomicBool>,
    /// The queues met in this run (a drain reached or discarded), each with
    /// this run's waker on it; indexed by position.
    queues: Vec<Met>,
    /// The job nodes spliced into a label's queue and not yet recorded.
    taken: HashMap<NodeIndex, Taken>,
    /// Labels that went to `State::WaitJob`, in that order, with the queue
    /// they wait on (stale entries, of labels no longer waiting, are skipped).
    waiters: VecDeque<(LabelId, usize)>,
}

/// A queue this run drains.
struct Met {
    queue: JobQueue,
    /// This run's waker registration on it.
    waker: u64,
    /// The labels with a drain on it (a set: it is looked up for every job).
    drainers: BTreeSet<LabelId>,
}

/// A job spliced into a label's queue.
struct Taken {
    id: JobId,
    /// Its queue, as an index into `Drains::queues`.
    queue: usize,
    /// The action as pushed (unexpanded), to give back.
    action: Arc<Action>,
}

impl Drains {
    pub(super) fn new(tx: Sender<Event>) -> Drains {
        Drains {
            tx,
            wake: Arc::default(),
            queues: Vec::new(),
            taken: HashMap::new(),
            waiters: VecDeque::new(),
        }
    }

    /// The index of `queue` (registering this run's waker on first meeting),
    /// with `l` noted as one of its drainers.
    fn meet(&mut self, queue: &JobQueue, l: LabelId) -> usize {
        let q = match self.queues.iter().position(|m| m.queue.same(queue)) {
            Some(q) => q,
            None => {
                let (tx, flag) = (self.tx.clone(), self.wake.clone());
                let waker = queue.register(Box::new(move || {
                    // A wake already in flight covers this change too.
                    flag.swap(true, Ordering::AcqRel) || tx.send(Event::Jobs).is_ok()
                }));
                self.queues.push(Met {
                    queue: queue.clone(),
                    waker,
                    drainers: BTreeSet::new(),
                });
                self.queues.len() - 1
            }
        };
        self.queues[q].drainers.insert(l);
        q
    }

    /// Whether a label waits for a job (the run must then wait for a wake,
    /// not end or count as stuck).
    pub(super) fn waiting(&self, rt: &[Rt]) -> bool {
        self.waiters.iter().any(|&(l, _)| rt[l].state == State::WaitJob)
    }
}

impl Scheduler<'_> {
    /// The head of `l` is the drain `node`: take a job (spliced before the
    /// drain), wait for one, or complete the drain. Returns whether the label
    /// goes on advancing.
    pub(super) fn drain_step(&mut self, l: LabelId, node: NodeIndex, drain: &Drain) -> bool {
        // Registered before looking, so no push between the look and the
        // wait goes unnoticed.
        let q = self.drains.meet(&drain.queue, l);
        match drain.queue.take() {
            Take::Job(job) => self.take_job(l, q, job),
            Take::Empty => {
                self.rt[l].state = State::WaitJob;
                self.drains.waiters.push_back((l, q));
                false
            }
            Take::Done => {
                self.complete_simple(l, node);
                true
            }
        }
    }

    /// Splices `job` in front of `l`'s queue, expanded for the label.
    fn take_job(&mut self, l: LabelId, q: usize, job: QueuedJob) -> bool {
        let entry = &self.plan.labels[l];
        let (action, unknown) = match job.action.expand_for(&entry.name, &entry.host) {
            Ok(Some(a)) => (Arc::new(a), None),
            Ok(None) => (job.action.clone(), None),
            Err(e) => (job.action.clone(), Some(e)),
        };
        let desc: Arc<str> = action.describe().into();
        let n = self.plan.push_front(l, action, desc);
        self.drains.taken.insert(
            n,
            Taken {
                id: job.id,
                queue: q,
                action: job.action,
            },
        );
        self.rt[l].attempt = job.attempts;
        log::debug!(target: "ssh_parallel", "[{}] takes {}", self.name(l), job.id);
        match unknown {
            // A variable this label's host lacks: a failure of this run of
            // the job, under its policy (a retry may find a label that has it).
            Some(e) => {
                let e = self.task_error(l, n, e.kind(), e.detail().to_owned());
                self.rt[l].attempt += 1;
                self.fail(l, n, e)
            }
            None => true,
        }
    }

    /// `Event::Jobs`: a queue changed. Wakes the waiting drainers, longest
    /// waiting first, as many per queue as it has jobs (all once it is closed).
    pub(super) fn jobs_changed(&mut self) {
        self.drains.wake.store(false, Ordering::Release);
        let mut budget: Vec<usize> = self
            .drains
            .queues
            .iter()
            .map(|m| match m.queue.peek() {
                (_, true) => usize::MAX,
                (n, false) => n,
            })
            .collect();
        let mut keep = VecDeque::with_capacity(self.drains.waiters.len());
        while let Some((l, q)) = self.drains.waiters.pop_front() {
            if self.rt[l].state != State::WaitJob {
                continue;
            }
            if budget[q] > 0 {
                budget[q] -= 1;
                self.make_ready(l);
            } else {
                keep.push_back((l, q));
            }
        }
        self.drains.waiters = keep;
    }

    /// Under a retry: if the head `node` of `l` is a job, it leaves the
    /// label's queue and goes back to the front of its job queue with its
    /// attempts, for whichever drainer is free first.
    pub(super) fn give_job_back(&mut self, l: LabelId, node: NodeIndex) {
        let Some(t) = self.drains.taken.remove(&node) else {
            return;
        };
        log::debug!(target: "ssh_parallel", "[{}] gives {} back to its queue", self.name(l), t.id);
        let attempts = self.rt[l].attempt;
        self.plan.pop(l);
        self.rt[l].reset_task();
        self.drains.queues[t.queue].queue.give_back(QueuedJob {
            id: t.id,
            action: t.action,
            attempts,
        });
    }

    /// The label `l` stops on a failure of its head `node`: if that is a
    /// job that never started here (its connection could not be opened, a
    /// variable is missing on this host), it goes back to its queue, for
    /// the other drainers, instead of being reported failed here. Returns
    /// whether it did.
    pub(super) fn give_back_unstarted(&mut self, l: LabelId, node: NodeIndex) -> bool {
        if self.rt[l].started.is_some() || !self.drains.taken.contains_key(&node) {
            return false;
        }
        // The failed try does not count against the job: it never ran.
        self.rt[l].attempt = self.rt[l].attempt.saturating_sub(1);
        self.give_job_back(l, node);
        true
    }

    /// The head `n` of the stopped label `l` is dropped: a job not started
    /// goes back to its queue (returns true: nothing to report here); a
    /// drain registers its queue, so that the jobs it leaves are reported.
    pub(super) fn discard_job(&mut self, l: LabelId, n: NodeIndex) -> bool {
        if self.drains.taken.contains_key(&n) {
            self.give_job_back(l, n);
            return true;
        }
        if let Some(Action::Drain(d)) = self.plan.task(n).map(|t| &**t.action) {
            let queue = d.queue.clone();
            self.drains.meet(&queue, l);
        }
        false
    }

    /// Whether `node` is a job whose queue's next job needs a channel (a
    /// command or a transfer): the label will likely take it next, so its
    /// channel may be opened ahead, as for a queue of commands.
    pub(super) fn job_follows(&self, node: NodeIndex) -> bool {
        self.drains
            .taken
            .get(&node)
            .is_some_and(|t| self.drains.queues[t.queue].queue.next_needs_channel())
    }

    /// The job at `node`, if it is one.
    pub(super) fn job_at(&self, node: NodeIndex) -> Option<JobId> {
        self.drains.taken.get(&node).map(|t| t.id)
    }

    /// Marks the report of a job's final outcome with its number.
    pub(super) fn job_recorded(&mut self, node: NodeIndex, r: &mut TaskReport) {
        if let Some(t) = self.drains.taken.remove(&node) {
            r.job = Some(t.id);
        }
    }

    /// The run ends: leaves every queue met and reports the jobs left in the
    /// ones no other run drains.
    pub(super) fn leave_queues(&mut self) -> Vec<TaskReport> {
        let mut not_run = Vec::new();
        for q in 0..self.drains.queues.len() {
            let left = {
                let m = &self.drains.queues[q];
                m.queue.leave(m.waker)
            };
            if left.is_empty() {
                continue;
            }
            let why = self.why_not_run(q);
            for job in left {
                let desc: Arc<str> = job.action.describe().into();
                let e = Error::new(why.0, format!("not run: {}", why.1)).with_task(format!("{} ({desc})", job.id));
                log::warn!(target: "ssh_parallel", "{e}");
                let mut r = TaskReport::new(0, desc, TaskStatus::Cancelled);
                r.job = Some(job.id);
                r.attempts = job.attempts;
                r.error = Some(Box::new(e));
                not_run.push(r);
            }
        }
        not_run
    }

    /// Why the jobs left in queue `q` were never run: its error kind and text.
    fn why_not_run(&self, q: usize) -> (ErrorKind, String) {
        let m = &self.drains.queues[q];
        if self.cancelled {
            return (ErrorKind::Cancelled, "the run was cancelled".to_owned());
        }
        let mut who: Vec<String> = m
            .drainers
            .iter()
            .take(NAMED_DRAINERS)
            .map(|&l| match &self.reports[l].error {
                Some(e) => format!("{} ({}: {})", self.name(l), e.kind(), e.detail()),
                None => format!("{} (its drain was skipped)", self.name(l)),
            })
            .collect();
        if m.drainers.len() > NAMED_DRAINERS {
            who.push(format!("and {} more", m.drainers.len() - NAMED_DRAINERS));
        }
        (
            ErrorKind::Aborted,
            format!(
                "every label draining job queue #{} stopped before taking it: {}",
                m.queue.id(),
                who.join(", ")
            ),
        )
    }
}
