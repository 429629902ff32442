//! What `queue` and `broadcast` share: the hosts and options of the command
//! line made into a `Parallel`, the job as a task, the loop that shows the
//! run's events while a feeder thread takes jobs from the queue file, and
//! the job-by-job summary and exit status at the end.
//!
//! A job that fails is reported and the host goes on with the next one
//! (policy `Ignore`), as in Pegasus; what stops a host is the runner's
//! business (`queue`, `broadcast`). The summary counts jobs, not hosts: a
//! run succeeds when every job it took succeeded.
//!
//! Invariant: as in `track`, nothing here runs on the library's threads;
//! every job taken from the file is accounted for in the summary, run or
//! not.
//!
//! May use: `args`, `output`, `track`, `interrupt`, `exit`, `hosts`,
//! `queuefile`, and `prepare`/`check_resolvable`/`finish_action` of the
//! crate root.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::json;
use ssh_parallel::{Action, Canceller, Command, JobId, OnError, Parallel, Report, RunEvent, TaskReport, TaskStatus};

use crate::args::{Cli, OutputArgs};
use crate::output::{gather, paint, Colours, Mode};
use crate::queuefile::{QueueError, QueueFile};
use crate::track::Tracker;
use crate::{exit, interrupt, Usage};

/// How long the event loop waits before it looks whether the run ended.
const POLL: Duration = Duration::from_millis(20);

/// The hosts registered, and how to show the run.
pub struct Setup {
    /// One label per host, nothing pushed yet.
    pub pssh: Parallel,
    /// The labels, in node order.
    pub labels: Vec<String>,
    /// The output mode (flags before or after the subcommand's name).
    pub mode: Mode,
    /// Colours on our streams.
    pub colours: Colours,
    /// `-u`.
    pub timeout: Option<Duration>,
    /// `-S`.
    pub max_status: bool,
}

impl Setup {
    /// The command line's hosts and options; `sub` are the output flags
    /// given after the subcommand's name.
    pub fn new(cli: &Cli, sub: &OutputArgs) -> Result<Setup, Usage> {
        let prepared = crate::prepare(&cli.common, true)?;
        crate::check_resolvable(&prepared.names)?;
        let flags = OutputArgs {
            gather: cli.output.gather || sub.gather,
            by_host: cli.output.by_host || sub.by_host,
            json: cli.output.json || sub.json,
            no_prefix: cli.output.no_prefix || sub.no_prefix,
        };
        Ok(Setup {
            pssh: prepared.pssh,
            labels: prepared.targets.iter().map(|t| t.label.clone()).collect(),
            mode: Mode::from_args(&flags),
            colours: Colours::detect(),
            timeout: prepared.timeout,
            max_status: cli.common.max_status,
        })
    }

    /// What turns a job into a task, for the feeder thread.
    pub fn tasks(&self) -> Tasks {
        Tasks {
            mode: self.mode,
            timeout: self.timeout,
        }
    }
}

/// Turns a job into the task a host runs: output and timeout as the command
/// line says.
#[derive(Debug, Clone, Copy)]
pub struct Tasks {
    mode: Mode,
    timeout: Option<Duration>,
}

impl Tasks {
    /// The task that runs `job` under `policy`.
    pub fn task(self, job: &str, policy: OnError) -> Action {
        crate::finish_action(Command::new(job).on_error(policy).into(), self.mode, self.timeout)
    }
}

/// Runs `pssh`, showing its events on this thread: `started` gets the run's
/// canceller before the first event (Ctrl-C is wired to it already);
/// `hook` sees every event first. Returns the report and whether the run
/// was cancelled.
pub fn watch(setup: &mut Setup, started: impl FnOnce(&Canceller), mut hook: impl FnMut(&RunEvent)) -> (Report, bool) {
    // Only live and JSON modes show anything while the run goes; the
    // deferred modes print from the report.
    let mut tracker = matches!(setup.mode, Mode::Live { .. } | Mode::Json)
        .then(|| Tracker::new(setup.mode, setup.colours, setup.labels.clone(), setup.max_status));
    let handle = setup.pssh.start();
    let canceller = handle.canceller();
    interrupt::install(canceller.clone());
    started(&canceller);
    let events = handle.events().clone();
    let mut show = |ev: RunEvent| {
        hook(&ev);
        // The drains themselves are no jobs: no `result` record for them.
        let drain_done = matches!(&ev, RunEvent::Finished { report, .. } if report.job().is_none());
        if let (Some(t), false) = (tracker.as_mut(), drain_done) {
            t.on_event(ev);
        }
    };
    loop {
        match events.recv_timeout(POLL) {
            Ok(ev) => show(ev),
            Err(e) if e.is_disconnected() || handle.is_finished() => break,
            Err(_) => {}
        }
    }
    for ev in events.try_iter() {
        show(ev);
    }
    let report = handle.wait();
    (report, canceller.is_cancelled())
}

/// The jobs a runner pushed: for each job number, the job's ordinal in the
/// run (from 1) and its command.
#[derive(Debug, Default)]
pub struct Book {
    /// Job number -> (ordinal, command).
    jobs: HashMap<JobId, (usize, String)>,
    /// Ordinals handed out.
    count: usize,
}

impl Book {
    /// Records a new job (ordinal `count + 1`) pushed as `ids` (one id per
    /// host for a broadcast); returns its ordinal.
    pub fn add(&mut self, command: &str, ids: &[JobId]) -> usize {
        self.count += 1;
        for id in ids {
            self.jobs.insert(*id, (self.count, command.to_owned()));
        }
        self.count
    }
}

/// What the summary says beyond the report.
#[derive(Debug, Default)]
pub struct Ending {
    /// Jobs left in the queue file, not taken; `None` when an editor held
    /// the file's lock at the end.
    pub left: Option<usize>,
    /// Why the runner stopped early, if it did (printed as it is).
    pub stopped: Option<String>,
}

/// The feeder thread of a runner: why it stopped early, or its error.
pub type FeederThread = JoinHandle<Result<Option<String>, QueueError>>;

/// How long a feeder may take to see that the run is over.
const FEEDER_GRACE: Duration = Duration::from_secs(1);

/// Ends the feeder once the run is over: sets `stop` (a take that gets the
/// lock now takes nothing) and waits for the thread a little. A feeder still
/// waiting for the lock of an edit in progress is left to the process's
/// end rather than keeping the summary (and a Ctrl-C) waiting on the editor.
pub fn ending(feeder: Option<FeederThread>, stop: &AtomicBool, file: &QueueFile) -> Ending {
    stop.store(true, Ordering::SeqCst);
    let t = Instant::now();
    while feeder.as_ref().is_some_and(|f| !f.is_finished()) && t.elapsed() < FEEDER_GRACE {
        std::thread::sleep(POLL);
    }
    let stopped = match feeder {
        None => None,
        Some(f) if !f.is_finished() => None,
        Some(f) => match f.join() {
            Ok(Ok(stopped)) => stopped,
            Ok(Err(e)) => Some(format!("ssh-parallel: error: {e}")),
            Err(_) => Some("ssh-parallel: error: the queue file feeder stopped unexpectedly".to_owned()),
        },
    };
    Ending {
        left: file.remaining(false).ok().flatten(),
        stopped,
    }
}

/// How one job ended, for the summary.
enum Fate {
    Succeeded(Option<i32>),
    Failed(String, Option<i32>),
    NotRun(String),
}

fn fate(t: &TaskReport) -> Fate {
    match (t.status(), t.error()) {
        (TaskStatus::Succeeded, _) => Fate::Succeeded(t.exit_code()),
        (TaskStatus::Cancelled, _) if t.started().is_some() => {
            Fate::NotRun("interrupted before it finished".to_owned())
        }
        (TaskStatus::Cancelled | TaskStatus::Skipped, e) => {
            Fate::NotRun(e.map_or_else(|| "not run".to_owned(), |e| e.detail().to_owned()))
        }
        (_, Some(e)) => match e.exit_code() {
            Some(c) => Fate::Failed(format!("exited with status {c}"), Some(c)),
            None => Fate::Failed(format!("{}: {}", e.kind(), e.detail()), None),
        },
        (_, None) => Fate::Failed("failed".to_owned(), t.exit_code()),
    }
}

/// Prints what the deferred modes hold back, every job that failed or did
/// not run (stderr), the summary (stderr, and a JSON record with
/// `--json`); returns the exit status.
pub fn finish(
    setup: &Setup,
    report: &Report,
    book: &Book,
    ending: &Ending,
    interrupted: bool,
    started: Instant,
) -> i32 {
    let by_label: HashMap<&str, Vec<TaskReport>> = report
        .labels()
        .iter()
        .map(|l| {
            (
                l.label(),
                l.tasks().iter().filter(|t| t.job().is_some()).cloned().collect(),
            )
        })
        .collect();
    let hosts: Vec<gather::HostTasks<'_>> = setup
        .labels
        .iter()
        .map(|l| (l.as_str(), by_label.get(l.as_str()).map_or(&[][..], Vec::as_slice)))
        .collect();
    match setup.mode {
        Mode::Gather => gather::print_gathered(&hosts, setup.colours),
        Mode::ByHost { prefix } => gather::print_by_host(&hosts, prefix, setup.colours),
        Mode::Live { .. } | Mode::Json => {}
    }
    let _ = std::io::stdout().flush();

    // Every job once: those the report lists, then those taken from the
    // file that the run never saw (the run had stopped when they came).
    let mut seen = std::collections::HashSet::new();
    let mut rows: Vec<(usize, String, Option<&str>, Fate)> = Vec::new();
    for entry in report.jobs() {
        let Some((ordinal, command)) = book.jobs.get(&entry.id()) else {
            continue;
        };
        seen.insert(entry.id());
        rows.push((*ordinal, command.clone(), entry.label(), fate(entry.report())));
    }
    for (id, (ordinal, command)) in &book.jobs {
        if !seen.contains(id) {
            rows.push((
                *ordinal,
                command.clone(),
                None,
                Fate::NotRun("taken after the run had stopped".into()),
            ));
        }
    }
    rows.sort_by_key(|r| r.0);

    let (mut succeeded, mut failed, mut not_run, mut max_code) = (0, 0, 0, 0);
    let mut text = String::new();
    for (ordinal, command, label, fate) in &rows {
        let who = label.unwrap_or("-");
        match fate {
            Fate::Succeeded(code) => {
                succeeded += 1;
                max_code = max_code.max(code.unwrap_or(0));
            }
            Fate::Failed(message, code) => {
                failed += 1;
                max_code = max_code.max(code.unwrap_or(exit::NO_STATUS));
                let who = paint(who, "31", setup.colours.stderr);
                text.push_str(&format!("{who}: job {ordinal} {command:?}: {message}\n"));
            }
            Fate::NotRun(why) => {
                not_run += 1;
                max_code = max_code.max(exit::NO_STATUS);
                match label {
                    // Started, then cancelled (Ctrl-C).
                    Some(l) => text.push_str(&format!("{l}: job {ordinal} {command:?}: {why}\n")),
                    None => text.push_str(&format!("not run: job {ordinal} {command:?}: {why}\n")),
                }
            }
        }
    }
    if let Some(why) = &ending.stopped {
        text.push_str(&format!("{why}\n"));
    }
    let runs = rows.len();
    // A broadcast runs each job on every host: then runs are counted too.
    let head = if runs == book.count {
        format!("{runs} jobs")
    } else {
        format!("{} jobs, {runs} runs", book.count)
    };
    let left = match ending.left {
        Some(n) => format!("{n} left in the queue file"),
        None => "the queue file is being edited".to_owned(),
    };
    text.push_str(&format!(
        "ssh-parallel: {head}: {succeeded} succeeded, {failed} failed, {not_run} not run; {left}{}\n",
        if interrupted { " (interrupted)" } else { "" }
    ));
    let _ = std::io::stderr().lock().write_all(text.as_bytes());

    let code = if interrupted {
        exit::INTERRUPTED
    } else if setup.max_status {
        max_code
    } else if failed == 0 && not_run == 0 && ending.stopped.is_none() {
        exit::SUCCESS
    } else {
        exit::FAILURE
    };
    if setup.mode == Mode::Json {
        let record = json!({
            "type": "summary",
            "jobs": book.count,
            "runs": runs,
            "succeeded": succeeded,
            "failed": failed,
            "not_run": not_run,
            "left": ending.left,
            "interrupted": interrupted,
            "duration_ms": u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "exit_code": code,
        });
        let _ = writeln!(std::io::stdout().lock(), "{record}");
    }
    let _ = std::io::stdout().flush();
    code
}
