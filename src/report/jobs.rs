//! Jobs in the report: [`JobId`], the number a [`JobQueue`](crate::JobQueue)
//! gives each job, and [`JobEntry`], one job's outcome as
//! [`Report::jobs`] lists it: the label that ran it and its
//! `TaskReport`, or no label for a job no drainer took.
//!
//! Invariant: every job a run took or gave up on appears exactly once in
//! `Report::jobs`: in the tasks of the one label that ran it to its final
//! outcome, or in the report's jobs not run.
//!
//! May use: `error` and the report types.

use std::fmt;

use super::{Report, TaskReport};

/// A job's number, given by [`JobQueue::push`](crate::JobQueue::push):
/// unique in the process and increasing in push order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(pub(crate) u64);

impl JobId {
    /// The number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job #{}", self.0)
    }
}

/// One job's outcome in a run (see [`Report::jobs`]).
#[derive(Debug, Clone, Copy)]
pub struct JobEntry<'r> {
    id: JobId,
    label: Option<&'r str>,
    report: &'r TaskReport,
}

impl<'r> JobEntry<'r> {
    /// The job.
    pub fn id(&self) -> JobId {
        self.id
    }

    /// The label that ran it to its final outcome (after any retries on
    /// other labels); `None` when no label took it.
    pub fn label(&self) -> Option<&'r str> {
        self.label
    }

    /// Its outcome: the label's task report, or for a job not run a
    /// `Cancelled` report whose error says why (kind `Aborted`: every label
    /// draining its queue stopped; `Cancelled`: the run was cancelled).
    pub fn report(&self) -> &'r TaskReport {
        self.report
    }

    /// Whether a label took it to a final outcome.
    pub fn ran(&self) -> bool {
        self.label.is_some()
    }
}

impl Report {
    /// Every job this run took from a [`JobQueue`](crate::JobQueue) or gave
    /// up on, once each, by job number: the ones labels ran (also in those
    /// labels' [`tasks`](crate::LabelReport::tasks), with
    /// [`TaskReport::job`] set) and the ones left in a queue that no label
    /// drained any more (also in [`jobs_not_run`](Self::jobs_not_run)).
    pub fn jobs(&self) -> Vec<JobEntry<'_>> {
        let mut v: Vec<JobEntry<'_>> = self
            .labels
            .iter()
            .flat_map(|l| {
                l.tasks.iter().filter_map(move |t| {
                    t.job.map(|id| JobEntry {
                        id,
                        label: Some(&*l.label),
                        report: t,
                    })
                })
            })
            .chain(self.jobs_not_run.iter().filter_map(|t| {
                t.job.map(|id| JobEntry {
                    id,
                    label: None,
                    report: t,
                })
            }))
            .collect();
        v.sort_by_key(JobEntry::id);
        v
    }

    /// The jobs left in a queue when every label draining it had stopped
    /// (or the run was cancelled): taken out of the queue and reported here,
    /// `Cancelled`, with an error naming why, so that no job is lost silently.
    pub fn jobs_not_run(&self) -> &[TaskReport] {
        &self.jobs_not_run
    }
}
