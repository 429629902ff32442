//! `Parallel`, the public entry point, and its builder: what users call to
//! build a plan and run it.
//!
//! Invariant: between runs the plan's queues hold exactly what was pushed
//! since the last run; a run empties them. A started run (`handle`) takes
//! the plan to its scheduler thread and puts it back before its handle is
//! gone, so a `Parallel` is never seen without its plan.
//!
//! May use: `error`, `host`, `plan`, `policy`, `report`, `run`, `scheduler`,
//! `task` (it is the top of the crate: nothing uses it but `lib`).

mod handle;

pub use handle::RunHandle;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::host::{ConfigSource, Host, SshConfigs};
use crate::plan::{IntoSelector, Plan, Selection};
use crate::policy::OnError;
use crate::report::Report;
use crate::scheduler::{Config, Scheduler};
use crate::task::Action;

/// Runs tasks on many hosts in parallel: register hosts under labels, push
/// actions onto the labels' queues with selectors, then [`run`](Self::run).
///
/// ```
/// use ssh_parallel::{Command, Host, Join, Parallel};
/// let mut pssh = Parallel::new();
/// for label in ["web1", "web2", "db1"] {
///     pssh.add_host(label, Host::local())?;
/// }
/// pssh.push("web*", Command::new("echo serving from %LABEL%"))?;
/// pssh.push("db1", Join::new("web*"))?;
/// pssh.push("db1", Command::new("echo the web tier is done"))?;
/// let report = pssh.run();
/// assert!(report.success());
/// # Ok::<(), ssh_parallel::Error>(())
/// ```
pub struct Parallel {
    cfg: Config,
    plan: Plan,
    errors: BTreeMap<String, Error>,
    ssh_configs: SshConfigs,
}

impl Default for Parallel {
    fn default() -> Self {
        Parallel::new()
    }
}

impl Parallel {
    /// A scheduler with no limits: every label may connect and run at once.
    pub fn new() -> Parallel {
        Parallel {
            cfg: Config::default(),
            plan: Plan::default(),
            errors: BTreeMap::new(),
            ssh_configs: SshConfigs::default(),
        }
    }

    /// A builder for limits, reconnections and the global error policy.
    pub fn builder() -> ParallelBuilder {
        ParallelBuilder::default()
    }

    /// Registers `host` under `label`. A label is non-empty, has none of
    /// `, * ! ( ) < > / { }`, and is registered once. An SSH host gets the
    /// user's OpenSSH configuration resolved for it here (see
    /// [`ParallelBuilder::ssh_config`]): a malformed file is an
    /// [`ErrorKind::InvalidConfig`] error naming its file and line, and so is
    /// a `ProxyJump` or `ProxyCommand` for the host (not supported yet).
    pub fn add_host(&mut self, label: impl Into<String>, mut host: Host) -> Result<()> {
        let label = label.into();
        self.ssh_configs.apply(&label, &mut host)?;
        self.plan.add_host(label, host)
    }

    /// Appends `action` to the queue of every label `selector` names and
    /// returns those labels (empty when none matched: not an error).
    pub fn push(&mut self, selector: impl IntoSelector, action: impl Into<Action>) -> Result<Selection> {
        self.plan.push(selector.into_selector()?, action.into()).map(|(s, _)| s)
    }

    /// `push("*", action)`.
    pub fn all(&mut self, action: impl Into<Action>) -> Result<Selection> {
        self.push("*", action)
    }

    /// The labels `selector` names now, in registration order, as `push`
    /// would select them.
    pub fn select(&self, selector: impl IntoSelector) -> Result<Selection> {
        let ids = self.plan.select(&selector.into_selector()?);
        Ok(self.plan.selection(&ids))
    }

    /// Every registered label, in registration order.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.plan.labels.iter().map(|l| &*l.name)
    }

    /// The host registered under `label`.
    pub fn host(&self, label: &str) -> Option<&Host> {
        self.plan.id(label).map(|i| &*self.plan.labels[i].host)
    }

    /// How many tasks are queued (join markers not counted).
    pub fn queued_tasks(&self) -> usize {
        self.plan.task_count()
    }

    /// Checks the plan without connecting anywhere: a goto or or_goto with no
    /// later `here` of its tag (other than `END`) is an
    /// [`ErrorKind::MissingTag`] naming the label and the task.
    pub fn validate(&self) -> Result<()> {
        self.plan.validate()
    }

    /// Runs every queue to its end and returns the report. Errors of an
    /// earlier run are cleared first; the queues are empty afterwards, so more
    /// pushes and another run may follow.
    ///
    /// The same as [`start`](Self::start) then [`RunHandle::wait`], without
    /// the thread and the events: the scheduler runs on the calling thread.
    pub fn run(&mut self) -> Report {
        self.before_run();
        let report = Scheduler::new(&mut self.plan, &self.cfg).run();
        self.after_run(&report);
        report
    }

    /// Starts the run on a thread of its own and returns at once, with a
    /// handle to watch its events, cancel it and wait for its report. The
    /// `Parallel` stays borrowed until the handle is waited for or dropped;
    /// then the queues are empty and [`get_error`](Self::get_error) answers
    /// for this run, as after [`run`](Self::run).
    ///
    /// ```
    /// use ssh_parallel::{Command, Host, Parallel, RunEvent};
    /// let mut pssh = Parallel::new();
    /// pssh.add_host("a", Host::local())?;
    /// pssh.push("a", Command::new("echo hello"))?;
    /// let run = pssh.start();
    /// let events = run.events().clone();
    /// let report = run.wait();
    /// assert!(report.success());
    /// let lines: Vec<String> = events
    ///     .try_iter()
    ///     .filter_map(|e| match e {
    ///         RunEvent::Line { line, .. } => Some(line),
    ///         _ => None,
    ///     })
    ///     .collect();
    /// assert_eq!(lines, ["hello"]);
    /// # Ok::<(), ssh_parallel::Error>(())
    /// ```
    pub fn start(&mut self) -> RunHandle<'_> {
        self.before_run();
        let plan = std::mem::take(&mut self.plan);
        RunHandle::spawn(self, plan)
    }

    fn before_run(&mut self) {
        self.errors.clear();
        let problem = if self.plan.has_jumps {
            self.plan.validate().err()
        } else {
            None
        };
        if let Some(e) = problem {
            // Not fatal: the policies decide at run time (a retried goto
            // failure is ignored, for one), but say it early.
            log::warn!(target: "ssh_parallel", "{e}");
        }
    }

    fn after_run(&mut self, report: &Report) {
        self.plan.clear_tasks();
        for l in report.labels() {
            if let Some(e) = l.error() {
                self.errors.insert(l.label().to_owned(), e.clone());
            }
        }
    }

    /// The error recorded for `label` in the last run (`Ok(None)` if it
    /// succeeded); an unknown label is an [`ErrorKind::UnknownLabel`] error.
    pub fn get_error(&self, label: &str) -> Result<Option<&Error>> {
        if self.plan.id(label).is_none() {
            return Err(Error::new(ErrorKind::UnknownLabel, format!("unknown label {label:?}")));
        }
        Ok(self.errors.get(label))
    }

    /// The errors of the last run as (label, error), sorted by label.
    pub fn get_errors(&self) -> Vec<(&str, &Error)> {
        self.errors.iter().map(|(l, e)| (l.as_str(), e)).collect()
    }
}

impl fmt::Debug for Parallel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Parallel")
            .field("config", &self.cfg)
            .field("labels", &self.plan.labels.len())
            .field("queued_tasks", &self.plan.task_count())
            .finish()
    }
}

/// Builds a [`Parallel`] with limits and policies.
///
/// ```
/// use ssh_parallel::{OnError, Parallel};
/// use std::time::Duration;
/// let pssh = Parallel::builder()
///     .workers(10)
///     .connections(20)
///     .reconnections(2)
///     .reconnect_delay(Duration::from_millis(500))
///     .on_error(OnError::Done)
///     .build()?;
/// # Ok::<(), ssh_parallel::Error>(())
/// ```
#[derive(Debug, Default, Clone)]
pub struct ParallelBuilder {
    workers: Option<usize>,
    connections: Option<usize>,
    reconnections: u32,
    reconnect_delay: Duration,
    on_error: Option<OnError>,
    io_threads: Option<usize>,
    channels_ahead: Option<bool>,
    ssh_config: ConfigSource,
    idle_timeout: Option<Duration>,
    transfer_protocol: Option<crate::TransferProtocol>,
}

impl ParallelBuilder {
    /// The most labels connecting or running a remote task at once (0: no limit).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// The most connections open at once (0: no limit); at least `workers`.
    /// Given alone, it sets `workers` too.
    pub fn connections(mut self, n: usize) -> Self {
        self.connections = Some(n);
        self
    }

    /// Extra connection attempts per task (default 0).
    pub fn reconnections(mut self, n: u32) -> Self {
        self.reconnections = n;
        self
    }

    /// The pause before each reconnection attempt (default none).
    pub fn reconnect_delay(mut self, d: Duration) -> Self {
        self.reconnect_delay = d;
        self
    }

    /// The policy for tasks and hosts that set none (default [`OnError::Abort`]).
    pub fn on_error(mut self, policy: impl Into<OnError>) -> Self {
        self.on_error = Some(policy.into());
        self
    }

    /// Event-loop threads driving the SSH sessions (default 1). Each runs a
    /// mio poll over its share of the labels (a label's connections always
    /// live on one thread); the count never grows with the number of hosts.
    /// One thread drives thousands of sessions; more help only when the
    /// client's own CPU (encryption, key exchange) is the bottleneck.
    pub fn io_threads(mut self, n: usize) -> Self {
        self.io_threads = Some(n);
        self
    }

    /// Opens the next command's (or transfer's) SSH channel while the current
    /// one runs, when the label's queue says one comes next: a queue then
    /// costs one network round trip per command instead of two (RFC 4254
    /// needs an open and an exec on a new channel). A server that refuses a
    /// second channel (`MaxSessions 1`) is detected and served one at a time.
    /// Default: on; off saves the server an unused channel when a queue is
    /// cut short.
    pub fn channels_ahead(mut self, on: bool) -> Self {
        self.channels_ahead = Some(on);
        self
    }

    /// Reads only this OpenSSH client configuration file (like `ssh -F FILE`;
    /// it must exist) instead of `~/.ssh/config` and `/etc/ssh/ssh_config`.
    pub fn ssh_config(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.ssh_config = ConfigSource::File(path.into());
        self
    }

    /// Resolves OpenSSH configuration in `env` (its files, home for `~`,
    /// variables): for tests and programs that must not depend on the real
    /// home directory.
    pub fn ssh_config_env(mut self, env: crate::ssh_config::ResolveEnv) -> Self {
        self.ssh_config = ConfigSource::Env(Box::new(env));
        self
    }

    /// Reads no OpenSSH configuration at all (like `ssh -F none`): hosts are
    /// exactly what the `Host` API says.
    pub fn no_ssh_config(mut self) -> Self {
        self.ssh_config = ConfigSource::Off;
        self
    }

    /// The idle timeout of commands that set none (see
    /// [`Command::idle_timeout`](crate::Command::idle_timeout); default none).
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = Some(d);
        self
    }

    /// What [`ScpPut`](crate::ScpPut) and [`ScpGet`](crate::ScpGet) run over
    /// on SSH hosts when they do not say (default [`TransferProtocol::Scp`](crate::TransferProtocol::Scp));
    /// [`TransferProtocol::Sftp`](crate::TransferProtocol::Sftp) for fleets
    /// without an `scp` binary or that allow only the sftp subsystem.
    pub fn transfer_protocol(mut self, protocol: crate::TransferProtocol) -> Self {
        self.transfer_protocol = Some(protocol);
        self
    }

    /// Checks the settings: `connections` below `workers`, or `io_threads`
    /// of 0, is an [`ErrorKind::InvalidConfig`] error naming the options.
    pub fn build(self) -> Result<Parallel> {
        let defaults = Config::default();
        let io_threads = self.io_threads.unwrap_or(defaults.io_threads);
        if io_threads == 0 {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                "option io_threads must be at least 1 (got 0)",
            ));
        }
        let connections = self.connections.unwrap_or(0);
        let workers = match (self.workers, self.connections) {
            (Some(w), _) => w,
            (None, Some(c)) => c,
            (None, None) => 0,
        };
        if connections != 0 && (workers == 0 || connections < workers) {
            let w = if workers == 0 {
                "unlimited".to_owned()
            } else {
                workers.to_string()
            };
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                format!("option connections ({connections}) must be at least option workers ({w})"),
            ));
        }
        Ok(Parallel {
            cfg: Config {
                workers,
                connections,
                reconnections: self.reconnections,
                reconnect_delay: self.reconnect_delay,
                on_error: self.on_error,
                io_threads,
                channels_ahead: self.channels_ahead.unwrap_or(defaults.channels_ahead),
                idle_timeout: self.idle_timeout,
                transfer_protocol: self.transfer_protocol.unwrap_or(defaults.transfer_protocol),
            },
            plan: Plan::default(),
            errors: BTreeMap::new(),
            ssh_configs: SshConfigs::new(self.ssh_config),
        })
    }
}
