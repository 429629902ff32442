//! `broadcast -w HOSTS QUEUEFILE [-e]`: Pegasus' broadcast mode. Each job of
//! the queue file runs on every host, and the next job is taken only when
//! every host has finished this one, so hosts stay in step (the point when
//! "terraforming" machines: a failure is met with every host at the same
//! job).
//!
//! Each host drains a `JobQueue` of its own; a feeder thread takes one job
//! from the file (under its lock, moved to `QUEUEFILE.consumed` like in
//! `queue`), pushes it on every host's queue, and waits for the main thread
//! to see that job's `Finished` on every host before it takes the next, so
//! the file can be edited up to the moment the next job starts, and
//! connections stay open from job to job. A failure is reported and the
//! hosts go on with the next job; with `-e/--error-aborts` the runner stops
//! once the failed job has finished on every host, leaving the rest of the
//! file untouched (reported as not run).
//!
//! Invariant: no host starts job k+1 before every host still draining has
//! finished job k.
//!
//! May use: `jobrun`, `queuefile`, `args`, `hosts` (folding).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Instant;

use ssh_parallel::{Canceller, Drain, JobId, JobQueue, OnError, RunEvent, TaskStatus};

use crate::args::{BroadcastArgs, Cli};
use crate::jobrun::{self, Book, Setup, Tasks};
use crate::queuefile::{QueueError, QueueFile};
use crate::Usage;

/// Runs `broadcast`; returns the exit status.
pub fn run(cli: &Cli, args: &BroadcastArgs) -> Result<i32, Usage> {
    let file = Arc::new(QueueFile::open(&args.file)?);
    let queued = file.remaining(true)?.unwrap_or(0);
    log::info!("{}: {queued} jobs queued", file.shown());
    let mut setup = Setup::new(cli, &args.output)?;
    let queues: Vec<(String, JobQueue)> = setup.labels.iter().map(|l| (l.clone(), JobQueue::new())).collect();
    for (label, q) in &queues {
        setup.pssh.push(label, Drain::new(q))?;
    }
    let started = Instant::now();
    let (tx, rx) = mpsc::channel();
    let book = Arc::new(Mutex::new(Book::default()));
    let tasks = setup.tasks();
    let mut feeder = None;
    let stop = Arc::new(AtomicBool::new(false));
    let (report, interrupted) = jobrun::watch(
        &mut setup,
        |canceller| {
            let f = Feeder {
                file: Arc::clone(&file),
                queues: queues.clone(),
                book: Arc::clone(&book),
                tasks,
                canceller: canceller.clone(),
                stop: Arc::clone(&stop),
                error_aborts: args.error_aborts,
            };
            feeder = Some(thread::spawn(move || f.run(&rx)));
        },
        |ev| match ev {
            RunEvent::Finished { label, report } => {
                if let Some(id) = report.job() {
                    let failed = report.status() != TaskStatus::Succeeded;
                    let _ = tx.send(Note::JobDone {
                        id,
                        label: label.to_string(),
                        failed,
                    });
                }
            }
            RunEvent::LabelDone { label, .. } => {
                let _ = tx.send(Note::HostGone(label.to_string()));
            }
            _ => {}
        },
    );
    drop(tx);
    let ending = jobrun::ending(feeder, &stop, &file);
    for (_, q) in &queues {
        q.close();
    }
    let book = book.lock().unwrap_or_else(PoisonError::into_inner);
    Ok(jobrun::finish(&setup, &report, &book, &ending, interrupted, started))
}

/// What the main thread tells the feeder.
enum Note {
    /// A job reached its final outcome on `label`.
    JobDone { id: JobId, label: String, failed: bool },
    /// A host stopped draining.
    HostGone(String),
}

/// Takes one job at a time from the file and gives it to every host.
struct Feeder {
    file: Arc<QueueFile>,
    /// Each host's own queue, in node order.
    queues: Vec<(String, JobQueue)>,
    book: Arc<Mutex<Book>>,
    tasks: Tasks,
    canceller: Canceller,
    /// Set once the run is over.
    stop: Arc<AtomicBool>,
    error_aborts: bool,
}

impl Feeder {
    /// Feeds until the file is empty, a job failed under `-e`, or the run
    /// stops; then closes every queue. Returns why it stopped early.
    fn run(self, notes: &Receiver<Note>) -> Result<Option<String>, QueueError> {
        let result = self.feed(notes);
        for (_, q) in &self.queues {
            q.close();
        }
        result
    }

    /// Whether the run still wants jobs: not cancelled, not over.
    fn wanted(&self) -> bool {
        !self.canceller.is_cancelled() && !self.stop.load(Ordering::SeqCst)
    }

    fn feed(&self, notes: &Receiver<Note>) -> Result<Option<String>, QueueError> {
        let mut gone: HashSet<String> = HashSet::new();
        loop {
            if !self.wanted() {
                return Ok(None);
            }
            let Some(job) = self.file.take(&|| self.wanted())? else {
                return Ok(None);
            };
            let mut waiting: HashSet<JobId> = HashSet::new();
            let mut waiting_on: Vec<(String, JobId)> = Vec::new();
            for (label, q) in self.queues.iter().filter(|(l, _)| !gone.contains(l)) {
                match q.push(self.tasks.task(&job, OnError::Ignore)) {
                    Ok(id) => {
                        waiting.insert(id);
                        waiting_on.push((label.clone(), id));
                    }
                    // Its drain ended (the run is stopping): nothing to wait for.
                    Err(e) => log::info!("{label}: job {job:?} not queued: {e}"),
                }
            }
            let ordinal = {
                let ids: Vec<JobId> = waiting_on.iter().map(|(_, id)| *id).collect();
                self.book.lock().unwrap_or_else(PoisonError::into_inner).add(&job, &ids)
            };
            let mut failed_on: Vec<String> = Vec::new();
            while !waiting.is_empty() {
                let Ok(note) = notes.recv() else {
                    // The run is over.
                    return Ok(None);
                };
                match note {
                    Note::JobDone { id, label, failed } => {
                        if waiting.remove(&id) && failed {
                            failed_on.push(label);
                        }
                    }
                    Note::HostGone(label) => {
                        if let Some((_, id)) = waiting_on.iter().find(|(l, _)| *l == label) {
                            waiting.remove(id);
                        }
                        gone.insert(label);
                    }
                }
            }
            if self.error_aborts && !failed_on.is_empty() {
                let hosts = crate::hosts::fold(failed_on.iter().map(String::as_str));
                return Ok(Some(format!(
                    "ssh-parallel: stopped (-e): job {ordinal} {job:?} failed on {hosts}; the jobs after it were not started"
                )));
            }
            if gone.len() == self.queues.len() {
                return Ok(Some("ssh-parallel: every host stopped taking jobs".to_owned()));
            }
        }
    }
}
