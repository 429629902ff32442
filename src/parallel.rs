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

use crate::amount::Amount;
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
    /// Agent forwarding for hosts that neither the API nor their OpenSSH
    /// configuration decided ([`ParallelBuilder::forward_agent`]).
    forward_agent: Option<bool>,
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
            forward_agent: None,
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
    /// [`ErrorKind::InvalidConfig`] error naming its file and line. Jump
    /// hosts (`ProxyJump`, [`Host::proxy_jump`]) are resolved here too, each
    /// hop through the same configuration.
    pub fn add_host(&mut self, label: impl Into<String>, mut host: Host) -> Result<()> {
        let label = label.into();
        self.ssh_configs.apply(&label, &mut host)?;
        host.forward_agent = host.forward_agent.or(self.forward_agent);
        self.plan.add_host(label, host)
    }

    /// Registers `n` sub-nodes of `host` (Pegasus' parametrised nodes):
    /// labels `label:0` .. `label:{n-1}`, each with its own connection, and
    /// the variables `%SLOT%` (`0` .. `n-1`) and `%PARENT%` (`label`) beside
    /// `%LABEL%` (`label:i`) and `%HOST%`. The selector `label:*` (or
    /// `label*`) names them, and so does `label` alone: it is the name of the
    /// group, not a label of its own (`add_host(label, ..)` is then a
    /// [`ErrorKind::DuplicateLabel`] error, as is a slot label already taken;
    /// nothing is registered then). Returns the labels added.
    ///
    /// ```
    /// use ssh_parallel::{Command, Host, Parallel};
    /// let mut pssh = Parallel::new();
    /// let slots = pssh.add_slots("gpu1", Host::local(), 4)?;
    /// assert_eq!(slots, vec!["gpu1:0", "gpu1:1", "gpu1:2", "gpu1:3"]);
    /// pssh.push("gpu1", Command::new("echo train --device %SLOT% on %PARENT%"))?;
    /// let report = pssh.run();
    /// assert_eq!(report.label("gpu1:2").unwrap().tasks()[0].stdout_str(), "train --device 2 on gpu1\n");
    /// # Ok::<(), ssh_parallel::Error>(())
    /// ```
    pub fn add_slots(&mut self, label: impl Into<String>, host: Host, n: usize) -> Result<Selection> {
        self.add_slots_with(label, host, (0..n).map(|_| std::iter::empty::<(String, String)>()))
    }

    /// [`add_slots`](Self::add_slots) with variables of each slot's own: one
    /// slot per item of `slots`, each an iterator of `(name, value)` pairs
    /// added to `%SLOT%` and `%PARENT%` (and overriding the host's).
    ///
    /// ```
    /// use ssh_parallel::{Command, Host, Parallel};
    /// let mut pssh = Parallel::new();
    /// pssh.add_slots_with("gpu1", Host::local(), [[("CARD", "a100")], [("CARD", "h100")]])?;
    /// pssh.push("gpu1:*", Command::new("echo %SLOT%=%CARD%"))?;
    /// let report = pssh.run();
    /// assert_eq!(report.label("gpu1:1").unwrap().tasks()[0].stdout_str(), "1=h100\n");
    /// # Ok::<(), ssh_parallel::Error>(())
    /// ```
    pub fn add_slots_with<I, V, K, S>(
        &mut self,
        label: impl Into<String>,
        mut host: Host,
        slots: I,
    ) -> Result<Selection>
    where
        I: IntoIterator<Item = V>,
        V: IntoIterator<Item = (K, S)>,
        K: Into<String>,
        S: Into<String>,
    {
        let label = label.into();
        let slots: Vec<BTreeMap<String, String>> = slots
            .into_iter()
            .map(|vars| vars.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
            .collect();
        // One resolution of the OpenSSH configuration for the host, shared by its slots.
        self.ssh_configs.apply(&label, &mut host)?;
        let ids = self.plan.add_slots(label, host, slots)?;
        Ok(self.plan.selection(&ids))
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
    /// [`ErrorKind::MissingTag`] naming the label and the task. Under
    /// [`ParallelBuilder::waves`], a join on a label of a later wave is an
    /// [`ErrorKind::InvalidConfig`] naming both labels.
    pub fn validate(&self) -> Result<()> {
        self.plan.validate()?;
        crate::scheduler::check_waves(&self.plan, &self.cfg)
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
        let problem = problem.or_else(|| crate::scheduler::check_waves(&self.plan, &self.cfg).err());
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

/// The plan seen from outside: drawn for Graphviz, or read from a plan file.
impl Parallel {
    /// The queued plan as a Graphviz DOT digraph (`dot -Tsvg` renders it):
    /// each label is a cluster (`cluster_<n>`, `n` its registration index)
    /// holding its queue as a chain of task nodes; each join is a diamond
    /// (`web* done`) with dashed edges from the points where the labels it waits for reach
    /// it, and edges to the tasks it releases; gotos, stops and or_gotos are
    /// dotted edges to the `here` they jump to (or to the queue's end).
    ///
    /// ```
    /// use ssh_parallel::{Command, Host, Join, Parallel};
    /// let mut pssh = Parallel::new();
    /// pssh.add_host("web1", Host::local())?;
    /// pssh.add_host("db1", Host::local())?;
    /// pssh.push("web1", Command::new("echo \"hi\""))?;
    /// pssh.push("db1", Join::new("web*"))?;
    /// let dot = pssh.to_dot();
    /// assert!(dot.starts_with("digraph plan {"));
    /// assert!(dot.contains("subgraph cluster_0"));
    /// assert!(dot.contains(r#"label="command `echo \"hi\"`""#));
    /// # Ok::<(), ssh_parallel::Error>(())
    /// ```
    pub fn to_dot(&self) -> String {
        self.plan.to_dot()
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
    waves: Option<Amount>,
    max_failures: Option<Amount>,
    forward_agent: Option<bool>,
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

    /// Forwards the local ssh-agent to every host that does not decide
    /// otherwise, by [`Host::forward_agent`] or by `ForwardAgent` in its
    /// OpenSSH configuration (default: off, as OpenSSH; parallel-ssh forwards
    /// by default). Only forward to hosts you trust: see [`Host::forward_agent`].
    pub fn forward_agent(mut self, on: bool) -> Self {
        self.forward_agent = Some(on);
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

    /// Checks the settings: `connections` below `workers`, `io_threads` of
    /// 0, `waves` of 0 or a percentage above 100 (for `waves` or
    /// `max_failures`) is an [`ErrorKind::InvalidConfig`] error naming the
    /// options.
    pub fn build(self) -> Result<Parallel> {
        let defaults = Config::default();
        let io_threads = self.io_threads.unwrap_or(defaults.io_threads);
        if io_threads == 0 {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                "option io_threads must be at least 1 (got 0)",
            ));
        }
        if let Some(w) = self.waves {
            w.check("waves", false)?;
        }
        if let Some(m) = self.max_failures {
            m.check("max_failures", true)?;
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
                waves: self.waves,
                max_failures: self.max_failures,
                transfer_protocol: self.transfer_protocol.unwrap_or(defaults.transfer_protocol),
            },
            plan: Plan::default(),
            errors: BTreeMap::new(),
            ssh_configs: SshConfigs::new(self.ssh_config),
            forward_agent: self.forward_agent,
        })
    }

    // Rolling runs (Ansible's `serial` and `max_fail_percentage`).

    /// Starts the labels in waves of `n` labels (a count, or
    /// [`Amount::percent`] of the labels the run has work for, rounded down
    /// but at least 1, as Ansible's `serial`): the labels whose queue is not
    /// empty when the run starts, in registration order, are cut into waves;
    /// a wave starts only once every label of the one before it has finished
    /// its queue (joins included). Labels with an empty queue take no part.
    /// Limits (`workers`, `connections`) apply within a wave.
    ///
    /// A label may join on labels of its own wave or of earlier ones. A join
    /// on a label of a later wave would wait forever (that wave starts only
    /// after this one has ended): [`Parallel::validate`] reports it as an
    /// [`ErrorKind::InvalidConfig`] error naming both labels, and in a run
    /// the join fails with [`ErrorKind::JoinFailed`] naming the later label,
    /// handled by the waiting label's policy. A label a sub pushes to after
    /// its wave has ended runs again at once, alongside the current wave.
    /// `0` (or `0%`) and percentages above 100 are errors at [`build`](Self::build).
    ///
    /// ```
    /// use ssh_parallel::{Amount, Command, Host, Parallel};
    /// let mut pssh = Parallel::builder().waves(Amount::percent(50)).build()?;
    /// for label in ["web1", "web2", "web3", "web4"] {
    ///     pssh.add_host(label, Host::local())?;
    /// }
    /// // web1 and web2 first; web3 and web4 once both are done.
    /// pssh.all(Command::new("echo deploying %LABEL%"))?;
    /// assert!(pssh.run().success());
    /// # Ok::<(), ssh_parallel::Error>(())
    /// ```
    pub fn waves(mut self, n: impl Into<Amount>) -> Self {
        self.waves = Some(n.into());
        self
    }

    /// Starts no more labels once more than `n` labels have failed (a count,
    /// or [`Amount::percent`] of the labels the run has work for; "more than
    /// 25% of 10" is 3 or more). A label has failed when it ends with an
    /// error recorded (a task failed under `Abort`, `AbortAll` or `Done`, a
    /// join failed); a label *started* once one of its tasks got a worker
    /// slot or a sub of its ran. Past the threshold, every label that has
    /// not started (a later wave, or waiting for its first worker slot under
    /// `workers`) is stopped: its tasks are reported
    /// [`Cancelled`](crate::TaskStatus::Cancelled) with an
    /// [`ErrorKind::Cancelled`] error naming the threshold
    /// (`not started: 3 of 10 labels failed, above max_failures 2`), and
    /// those of its joins fail; labels already started go on to their end.
    /// Unlike Ansible's `max_fail_percentage`, failures count over the
    /// whole run, not per wave. `0` stops at the first failure; a
    /// percentage above 100 is an error at [`build`](Self::build).
    ///
    /// ```
    /// use ssh_parallel::{Command, ErrorKind, Host, Parallel};
    /// let mut pssh = Parallel::builder().waves(1).max_failures(0).build()?;
    /// for label in ["a", "b", "c"] {
    ///     pssh.add_host(label, Host::local())?;
    /// }
    /// pssh.push("a", Command::new("exit 1"))?;
    /// pssh.push("b,c", Command::new("true"))?;
    /// let report = pssh.run();
    /// let e = report.label("c").unwrap().error().unwrap();
    /// assert_eq!(e.kind(), ErrorKind::Cancelled);
    /// assert!(e.to_string().contains("above max_failures 0"), "{e}");
    /// # Ok::<(), ssh_parallel::Error>(())
    /// ```
    pub fn max_failures(mut self, n: impl Into<Amount>) -> Self {
        self.max_failures = Some(n.into());
        self
    }
}
