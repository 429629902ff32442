//! `queue -w HOSTS QUEUEFILE [--daemon]`: Pegasus' queue mode. Each host
//! takes the next job from the top of the queue file as soon as it is free;
//! `queue --edit QUEUEFILE` is the lock mode (`edit`).
//!
//! Built on the library's shared `JobQueue`: every host drains one queue,
//! and a feeder thread moves jobs from the file into it **one at a time, only
//! while a host is free to start it** (jobs handed over but not finished <
//! hosts still draining, and <= `-f`). So a job stays in the file, where it
//! can still be edited or deleted, until the moment a host takes it; jobs
//! appended while the run goes on are taken like the others. The feeder
//! learns that a host became free from the main thread, which sees every
//! job's `Finished` event. Taking a job may wait on the queue's lock (an
//! editor open on it): that is why the feeder is a thread of its own and
//! the main thread keeps showing output meanwhile.
//!
//! When the file holds no job, the feeder looks at it again every
//! [`FILE_POLL`] (a `stat`, and a read under the lock only when it changed):
//! no busy polling, no inotify dependency, and it sees edits made by any
//! means, renames included. Without `--daemon` the run ends once the file
//! is empty and every host is idle; with it, it waits until Ctrl-C.
//!
//! A host that cannot be reached (an error that is not the job's own: a
//! connection error) leaves the pool after failing the job it took; the
//! others go on.
//!
//! Invariant: a job leaves the file only when a host is idle to start it,
//! and goes straight onto the `JobQueue`, which so never holds more jobs
//! than there are idle hosts; every job taken is in the summary.
//!
//! May use: `jobrun`, `queuefile`, `edit`, `args`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use ssh_parallel::{Canceller, Drain, ErrorKind, JobQueue, OnError, RunEvent};

use crate::args::{Cli, QueueArgs};
use crate::jobrun::{self, Book, Setup, Tasks};
use crate::queuefile::{QueueError, QueueFile};
use crate::Usage;

/// How often an empty queue file is looked at again.
pub const FILE_POLL: Duration = Duration::from_millis(250);

/// Runs `queue` (or `queue --edit`); returns the exit status.
pub fn run(cli: &Cli, args: &QueueArgs) -> Result<i32, Usage> {
    if args.edit {
        return crate::edit::run(&args.file, args.editor.as_deref()).map_err(Usage);
    }
    let file = Arc::new(QueueFile::open(&args.file)?);
    // A file that is wrong from the start is a usage error, before any
    // connection.
    let queued = file.remaining(true)?.unwrap_or(0);
    log::info!("{}: {queued} jobs queued", file.shown());
    let mut setup = Setup::new(cli, &args.output)?;
    let jobs = JobQueue::new();
    for label in &setup.labels {
        setup.pssh.push(label, Drain::new(&jobs))?;
    }
    let started = Instant::now();
    let (tx, rx) = mpsc::channel();
    let book = Arc::new(Mutex::new(Book::default()));
    let mut feeder = None;
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = setup.tasks();
    let draining = setup.labels.len();
    let (report, interrupted) = jobrun::watch(
        &mut setup,
        |canceller| {
            let f = Feeder {
                file: Arc::clone(&file),
                jobs: jobs.clone(),
                book: Arc::clone(&book),
                tasks,
                canceller: canceller.clone(),
                stop: Arc::clone(&stop),
                daemon: args.daemon,
                draining,
                fanout: cli.common.fanout,
                running: 0,
            };
            feeder = Some(thread::spawn(move || f.run(&rx)));
        },
        |ev| match ev {
            RunEvent::Finished { report, .. } if report.job().is_some() => {
                let _ = tx.send(Note::JobDone);
            }
            RunEvent::LabelDone { .. } => {
                let _ = tx.send(Note::HostGone);
            }
            _ => {}
        },
    );
    drop(tx);
    let ending = jobrun::ending(feeder, &stop, &file);
    jobs.close();
    let book = book.lock().unwrap_or_else(PoisonError::into_inner);
    Ok(jobrun::finish(&setup, &report, &book, &ending, interrupted, started))
}

/// The policy of a job: its own failure is reported and the host goes on;
/// a host that cannot be reached stops draining (`Done`), leaving the jobs
/// to the others instead of failing each of them in turn.
fn policy() -> OnError {
    OnError::callback(|ctx| {
        if ctx.error().kind() == ErrorKind::Connect {
            OnError::Done
        } else {
            OnError::Ignore
        }
    })
}

/// What the main thread tells the feeder.
enum Note {
    /// A job reached its final outcome: its host is free.
    JobDone,
    /// A host stopped draining.
    HostGone,
}

/// Moves jobs from the file to the `JobQueue` as hosts free up.
struct Feeder {
    file: Arc<QueueFile>,
    jobs: JobQueue,
    book: Arc<Mutex<Book>>,
    tasks: Tasks,
    canceller: Canceller,
    /// Set once the run is over.
    stop: Arc<AtomicBool>,
    daemon: bool,
    /// Hosts still draining.
    draining: usize,
    /// `-f`: at most this many jobs run at once.
    fanout: usize,
    /// Jobs handed over and not finished.
    running: usize,
}

impl Feeder {
    /// Feeds until the file is done with or the run stops, then closes the
    /// `JobQueue`, which ends the drains. Returns why it stopped early, if
    /// it did; an error reading the file stops the feeding.
    fn run(mut self, notes: &Receiver<Note>) -> Result<Option<String>, QueueError> {
        let result = self.feed(notes);
        self.jobs.close();
        result
    }

    fn feed(&mut self, notes: &Receiver<Note>) -> Result<Option<String>, QueueError> {
        // The file's stamp when it was last found without a job to take.
        let mut empty_at = None;
        loop {
            if !self.wanted() {
                return Ok(None);
            }
            if self.draining == 0 {
                return Ok(Some("ssh-parallel: every host stopped taking jobs".to_owned()));
            }
            let free = self.running < self.draining.min(self.fanout);
            if free && empty_at != Some(self.file.stamp()) {
                let stamp = self.file.stamp();
                match self.file.take(&|| self.wanted()) {
                    Ok(Some(job)) => {
                        self.push(&job);
                        continue;
                    }
                    Ok(None) => empty_at = Some(stamp),
                    // A bad edit: said once, then waited on like an empty
                    // file until it changes.
                    Err(QueueError::Invalid(e)) => {
                        eprintln!("ssh-parallel: {e}\nssh-parallel: no job is taken until this is fixed");
                        empty_at = Some(stamp);
                    }
                    Err(e) => return Err(e),
                }
            }
            if self.running == 0 && !self.daemon && empty_at.is_some() {
                return Ok(None);
            }
            // Every host busy: only a note can change anything. A host free
            // and nothing to take: a note, or a look at the file again.
            let note = if free {
                notes.recv_timeout(FILE_POLL)
            } else {
                notes.recv().map_err(|_| RecvTimeoutError::Disconnected)
            };
            match note {
                Ok(Note::JobDone) => self.running = self.running.saturating_sub(1),
                Ok(Note::HostGone) => self.draining = self.draining.saturating_sub(1),
                Err(RecvTimeoutError::Timeout) => {}
                // The run is over.
                Err(RecvTimeoutError::Disconnected) => return Ok(None),
            }
        }
    }

    /// Whether the run still wants jobs: not cancelled, not over.
    fn wanted(&self) -> bool {
        !self.canceller.is_cancelled() && !self.stop.load(Ordering::SeqCst)
    }

    fn push(&mut self, job: &str) {
        match self.jobs.push(self.tasks.task(job, policy())) {
            Ok(id) => {
                self.running += 1;
                self.book.lock().unwrap_or_else(PoisonError::into_inner).add(job, &[id]);
            }
            Err(e) => eprintln!("ssh-parallel: job {job:?} not run: {e}"),
        }
    }
}
