//! Fault injection (feature `fault-injection`): the script a fault host
//! follows and the log of what happened. The transport that follows the
//! script is `transport::fault`; hosts name a script (`Host::fault`) without
//! knowing that transport.
//!
//! Hosts
//! whose connections fail, drop or stall on cue, and whose commands exit with
//! chosen codes after chosen delays, so that every reconnection and limit rule
//! can be tested deterministically. A [`FaultLog`] records what happened.
//!
//! Invariant: clones of a [`Fault`] share their counters, so a script's
//! "the first n times" holds across tasks and runs.
//!
//! May use: nothing else in the crate (a leaf).
//!
//! ```
//! use ssh_parallel::fault::{Fault, FaultLog};
//! use ssh_parallel::{Command, Host, Parallel};
//! let log = FaultLog::new();
//! let mut pssh = Parallel::builder().reconnections(2).build()?;
//! pssh.add_host("a", Host::fault(Fault::new().fail_connects(2).exit_code("false", 1).log(&log)))?;
//! pssh.push("a", Command::new("true"))?;
//! assert!(pssh.run().success());
//! assert_eq!(log.connect_attempts("a"), 3);
//! # Ok::<(), ssh_parallel::Error>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// What a command (or task) does on a fault host.
#[derive(Clone, Debug, Default)]
pub(crate) struct Rule {
    pub(crate) exit: Option<i32>,
    pub(crate) delay: Option<Duration>,
    /// Drop the connection mid-task this many times.
    pub(crate) drops: u32,
    pub(crate) stdout: Option<Vec<u8>>,
}

/// The script a fault host follows. Clones share their counters, so "the
/// first two connects fail" holds across runs.
#[derive(Clone)]
pub struct Fault(pub(crate) Arc<Script>);

#[derive(Clone)]
pub(crate) struct Script {
    /// Connection attempts that fail, counted over `state.connects`.
    pub(crate) fail_connects: u32,
    pub(crate) connect_delay: Duration,
    /// A task's duration when no rule sets one.
    pub(crate) delay: Duration,
    /// By command line (or task description).
    pub(crate) rules: HashMap<String, Rule>,
    pub(crate) log: Option<FaultLog>,
    pub(crate) drop_idle: bool,
    /// Shared by every clone (see the module invariant).
    pub(crate) state: Arc<FaultState>,
}

#[derive(Default)]
pub(crate) struct FaultState {
    /// Connection attempts so far.
    pub(crate) connects: AtomicU32,
    /// Runs so far of each task that has a `drop_on` rule.
    pub(crate) drops: Mutex<HashMap<String, u32>>,
}

impl Default for Fault {
    fn default() -> Self {
        Fault::new()
    }
}

impl Fault {
    /// A host where everything succeeds at once.
    pub fn new() -> Fault {
        Fault(Arc::new(Script {
            fail_connects: 0,
            connect_delay: Duration::ZERO,
            delay: Duration::ZERO,
            rules: HashMap::new(),
            log: None,
            drop_idle: false,
            state: Arc::default(),
        }))
    }

    fn script(&mut self) -> &mut Script {
        Arc::make_mut(&mut self.0)
    }

    /// The connection dies right after every task, while idle: the next
    /// task has to connect again.
    pub fn drop_when_idle(mut self) -> Self {
        self.script().drop_idle = true;
        self
    }

    /// The first `n` connection attempts fail.
    pub fn fail_connects(mut self, n: u32) -> Self {
        self.script().fail_connects = n;
        self
    }

    /// Every connection attempt takes `d`.
    pub fn connect_delay(mut self, d: Duration) -> Self {
        self.script().connect_delay = d;
        self
    }

    /// Every task takes `d` unless a rule says otherwise.
    pub fn delay(mut self, d: Duration) -> Self {
        self.script().delay = d;
        self
    }

    fn rule(&mut self, task: &str) -> &mut Rule {
        self.script().rules.entry(task.to_owned()).or_default()
    }

    /// Command `cmd` (matched exactly, after variable expansion) exits with `code`.
    /// Other tasks are matched by their description (`scp_put a -> b`, `connect`);
    /// a transfer given a non-zero code fails as a transfer (error kind
    /// `Transfer`, which `or_goto` jumps over) on a connection that stays up.
    pub fn exit_code(mut self, cmd: &str, code: i32) -> Self {
        self.rule(cmd).exit = Some(code);
        self
    }

    /// Command `cmd` takes `d`.
    pub fn delay_on(mut self, cmd: &str, d: Duration) -> Self {
        self.rule(cmd).delay = Some(d);
        self
    }

    /// The connection dies while `cmd` runs, the first `times` times it runs.
    pub fn drop_on(mut self, cmd: &str, times: u32) -> Self {
        self.rule(cmd).drops = times;
        self
    }

    /// Command `cmd` prints `out` on stdout.
    pub fn stdout(mut self, cmd: &str, out: impl Into<Vec<u8>>) -> Self {
        self.rule(cmd).stdout = Some(out.into());
        self
    }

    /// Records this host's events in `log`.
    pub fn log(mut self, log: &FaultLog) -> Self {
        self.script().log = Some(log.clone());
        self
    }
}

impl fmt::Debug for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fault")
            .field("fail_connects", &self.0.fail_connects)
            .field("connect_delay", &self.0.connect_delay)
            .field("delay", &self.0.delay)
            .field("rules", &self.0.rules)
            .finish_non_exhaustive()
    }
}

/// Something that happened on a fault host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultEvent {
    /// A connection attempt started.
    Connect,
    /// A connection attempt failed on cue.
    ConnectFailed,
    /// A connection was established.
    Connected,
    /// A task started (its command line or description).
    Run(String),
    /// A task finished with this exit code.
    Finished(String, i32),
    /// The connection was dropped during this task.
    Dropped(String),
    /// The connection died while idle (`drop_when_idle`).
    LostIdle,
    /// A task was cancelled (timeout).
    Cancelled(String),
    /// A connection was closed by the scheduler.
    Disconnected,
}

/// A shared record of what fault hosts did, with concurrency high-water marks.
#[derive(Clone, Default)]
pub struct FaultLog {
    inner: Arc<Mutex<LogInner>>,
}

#[derive(Default)]
struct LogInner {
    events: Vec<(String, FaultEvent, Instant)>,
    running: usize,
    max_running: usize,
    open: usize,
    max_open: usize,
}

impl FaultLog {
    /// An empty log.
    pub fn new() -> FaultLog {
        FaultLog::default()
    }

    pub(crate) fn push(&self, label: &str, ev: FaultEvent) {
        let mut g = self.inner.lock();
        match &ev {
            FaultEvent::Run(_) => {
                g.running += 1;
                g.max_running = g.max_running.max(g.running);
            }
            FaultEvent::Finished(..) | FaultEvent::Dropped(_) | FaultEvent::Cancelled(_) => {
                g.running = g.running.saturating_sub(1)
            }
            _ => {}
        }
        match &ev {
            FaultEvent::Connected => {
                g.open += 1;
                g.max_open = g.max_open.max(g.open);
            }
            FaultEvent::Disconnected | FaultEvent::Dropped(_) | FaultEvent::LostIdle => {
                g.open = g.open.saturating_sub(1)
            }
            _ => {}
        }
        g.events.push((label.to_owned(), ev, Instant::now()));
    }

    /// Every event as (label, event), in order.
    pub fn events(&self) -> Vec<(String, FaultEvent)> {
        self.inner
            .lock()
            .events
            .iter()
            .map(|(l, e, _)| (l.clone(), e.clone()))
            .collect()
    }

    /// Every event with the instant it happened.
    pub fn timed_events(&self) -> Vec<(String, FaultEvent, Instant)> {
        self.inner.lock().events.clone()
    }

    /// The tasks `label` started, in order (retries and re-runs repeat).
    pub fn ran(&self, label: &str) -> Vec<String> {
        self.inner
            .lock()
            .events
            .iter()
            .filter_map(|(l, e, _)| match e {
                FaultEvent::Run(t) if l == label => Some(t.clone()),
                _ => None,
            })
            .collect()
    }

    /// How many connection attempts `label` made.
    pub fn connect_attempts(&self, label: &str) -> usize {
        self.count(label, &FaultEvent::Connect)
    }

    /// How many times `label`'s connection was closed by the scheduler.
    pub fn disconnects(&self, label: &str) -> usize {
        self.count(label, &FaultEvent::Disconnected)
    }

    fn count(&self, label: &str, ev: &FaultEvent) -> usize {
        self.inner
            .lock()
            .events
            .iter()
            .filter(|(l, e, _)| l == label && e == ev)
            .count()
    }

    /// The most tasks that ran at once.
    pub fn max_running(&self) -> usize {
        self.inner.lock().max_running
    }

    /// The most connections open at once.
    pub fn max_open(&self) -> usize {
        self.inner.lock().max_open
    }

    /// Tasks started and not yet finished, and connections open, right now.
    pub fn current(&self) -> (usize, usize) {
        let g = self.inner.lock();
        (g.running, g.open)
    }
}

impl fmt::Debug for FaultLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = self.inner.lock();
        f.debug_struct("FaultLog")
            .field("events", &g.events.len())
            .field("max_running", &g.max_running)
            .field("max_open", &g.max_open)
            .finish()
    }
}
