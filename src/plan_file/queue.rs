//! The job queues of a plan file: each `[queue.NAME]` made into a
//! [`JobQueue`] holding its jobs (the `jobs` lines, then each
//! `[[queue.NAME.job]]` table), closed at once since a plan file's queue is
//! a fixed bag, and what the checks need to know of each job.
//!
//! Invariant: every job written is either in its queue, in file order, or
//! the cause of a problem at its place in the file (the library's refusal
//! of a job included); the queues are reachable only through what `build`
//! returns.
//!
//! May use: `build` (`Problems`, `prepare`), `check` (`Queue`, `Job`,
//! the variable texts), `error` (its siblings), `task` (`JobQueue`, actions).

use std::collections::BTreeMap;
use std::ops::Range;

use toml::Spanned;

use super::build::{prepare, Problems};
use super::check::{self, Job, Queue};
use super::error::ProblemKind;
use super::PlanFile;
use crate::task::{Action, Command, JobQueue};

/// The keys that choose a job's action.
const JOB_KEYS: &str = "run, put or get";

/// The job queues of the file, by name, each filled with its jobs and
/// closed (a plan file's queue is a fixed bag), and what the checks need to
/// know of them. A job the library refuses is a problem at its place.
pub(super) fn queues<'a>(
    file: &'a PlanFile,
    problems: &mut Problems<'_>,
) -> (BTreeMap<&'a str, JobQueue>, Vec<Queue<'a>>) {
    let mut handles = BTreeMap::new();
    let mut checked = Vec::new();
    for (name, q) in &file.raw.queue.0 {
        let jobs = JobQueue::new();
        let mut prepared = Vec::new();
        let add = |action: Action, span: Range<usize>, or_goto: Option<Range<usize>>, problems: &mut Problems<'_>| {
            if let Err(e) = jobs.push(action) {
                // The library names its queue by a process-wide number, which
                // means nothing in the file: the queue's name does.
                let detail = e.detail();
                let detail = detail
                    .split_once(": ")
                    .filter(|(prefix, _)| prefix.starts_with("job queue #"))
                    .map_or(detail, |(_, rest)| rest);
                problems.add(
                    Some(or_goto.unwrap_or(span)),
                    ProblemKind::Library(e.kind()),
                    format!("a job of queue {:?}: {detail}", name.get_ref()),
                );
            }
        };
        for line in &q.get_ref().jobs {
            add(Command::new(line.get_ref().clone()).into(), line.span(), None, problems);
            prepared.push(Job {
                span: line.span(),
                texts: vec![line.get_ref().as_str()],
                fields: vec![line.span()],
            });
        }
        for job in &q.get_ref().job {
            let r = job.get_ref();
            if let Some(on) = &r.on {
                problems.add(
                    Some(on.span()),
                    ProblemKind::Schema,
                    format!(
                        "a job has no `on`: it runs on whichever label draining queue {:?} is free first",
                        name.get_ref()
                    ),
                );
            }
            if let Some((_, _, action)) = prepare(r, job.span(), JOB_KEYS, "a job", problems) {
                add(action, job.span(), r.or_goto.as_ref().map(Spanned::span), problems);
            }
            prepared.push(Job {
                span: job.span(),
                texts: check::expanded_texts(r),
                fields: check::field_spans(r),
            });
        }
        jobs.close();
        handles.insert(name.get_ref().as_str(), jobs);
        checked.push(Queue { name, jobs: prepared });
    }
    (handles, checked)
}
