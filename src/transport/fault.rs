//! A scriptable fault-injection transport (feature `fault-injection`): hosts
//! whose connections fail, drop or stall on cue, and whose commands exit with
//! chosen codes after chosen delays, so that every reconnection and limit rule
//! can be tested deterministically. A [`FaultLog`] records what happened.
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

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;

use crate::plan::LabelId;
use crate::task::output::Captured;
use crate::task::Action;
use crate::transport::{ConnId, Event, Exit, Job, Outcome, Request, Token, TransportError};

/// What a command (or task) does on a fault host.
#[derive(Clone, Debug, Default)]
struct Rule {
    exit: Option<i32>,
    delay: Option<Duration>,
    /// Drop the connection mid-task this many times.
    drops: u32,
    stdout: Option<Vec<u8>>,
}

/// The script a fault host follows. Clones share their counters, so "the
/// first two connects fail" holds across runs.
#[derive(Clone)]
pub struct Fault(Arc<Script>);

#[derive(Clone)]
struct Script {
    fail_connects: u32,
    connect_delay: Duration,
    delay: Duration,
    rules: HashMap<String, Rule>,
    log: Option<FaultLog>,
    drop_idle: bool,
    state: Arc<FaultState>,
}

#[derive(Default)]
struct FaultState {
    connects: AtomicU32,
    drops: Mutex<HashMap<String, u32>>,
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
    /// Other tasks are matched by their description (`scp_put a -> b`, `connect`).
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

    fn push(&self, label: &str, ev: FaultEvent) {
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

enum Pending {
    Connect {
        label: LabelId,
        name: Arc<str>,
        conn: ConnId,
        fault: Fault,
    },
    Finish {
        label: LabelId,
        name: Arc<str>,
        token: Token,
        conn: Option<ConnId>,
        task: String,
        fault: Fault,
        result: Result<Exit, TransportError>,
        stdout: Option<Vec<u8>>,
        started: SystemTime,
    },
}

pub(crate) fn spawn(events: Sender<Event>) -> (Sender<Request>, JoinHandle<()>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let h = std::thread::Builder::new()
        .name("ssh-parallel-fault".into())
        .spawn(move || FaultLoop::new(events).run(rx))
        .expect("cannot start the fault transport thread");
    (tx, h)
}

struct FaultLoop {
    events: Sender<Event>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    pending: HashMap<u64, Pending>,
    by_token: HashMap<Token, u64>,
    /// Open connections, for the log.
    conns: HashMap<ConnId, (Arc<str>, Fault)>,
    seq: u64,
}

fn fault_of(host: &crate::host::Host) -> Fault {
    match &host.target {
        crate::host::Target::Fault(f) => f.clone(),
        _ => Fault::new(),
    }
}

impl FaultLoop {
    fn new(events: Sender<Event>) -> FaultLoop {
        FaultLoop {
            events,
            timers: BinaryHeap::new(),
            pending: HashMap::new(),
            by_token: HashMap::new(),
            conns: HashMap::new(),
            seq: 0,
        }
    }

    fn run(mut self, rx: Receiver<Request>) {
        loop {
            let next = self.timers.peek().map(|Reverse((t, _))| *t);
            let req = match next {
                Some(t) => match rx.recv_deadline(t) {
                    Ok(r) => Some(r),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return,
                },
                None => match rx.recv() {
                    Ok(r) => Some(r),
                    Err(_) => return,
                },
            };
            if let Some(r) = req {
                self.request(r);
            }
            let now = Instant::now();
            while let Some(Reverse((t, id))) = self.timers.peek().copied() {
                if t > now {
                    break;
                }
                self.timers.pop();
                if let Some(p) = self.pending.remove(&id) {
                    self.complete(p);
                }
            }
        }
    }

    fn schedule(&mut self, delay: Duration, p: Pending) {
        if delay.is_zero() {
            self.complete(p);
            return;
        }
        self.seq += 1;
        if let Pending::Finish { token, .. } = &p {
            self.by_token.insert(*token, self.seq);
        }
        self.pending.insert(self.seq, p);
        self.timers.push(Reverse((Instant::now() + delay, self.seq)));
    }

    fn request(&mut self, req: Request) {
        match req {
            Request::Connect {
                label,
                conn,
                name,
                host,
            } => {
                let fault = fault_of(&host);
                if let Some(log) = &fault.0.log {
                    log.push(&name, FaultEvent::Connect);
                }
                self.schedule(
                    fault.0.connect_delay,
                    Pending::Connect {
                        label,
                        name,
                        conn,
                        fault,
                    },
                );
            }
            Request::Disconnect { label, conn } => {
                if let Some((name, fault)) = self.conns.remove(&conn) {
                    if let Some(log) = &fault.0.log {
                        log.push(&name, FaultEvent::Disconnected);
                    }
                }
                let _ = self.events.send(Event::Closed { label, conn });
            }
            Request::Run(job) => self.run_job(job),
            Request::Cancel { token } => {
                let Some(id) = self.by_token.remove(&token) else { return };
                if let Some(Pending::Finish {
                    label,
                    name,
                    task,
                    fault,
                    started,
                    ..
                }) = self.pending.remove(&id)
                {
                    if let Some(log) = &fault.0.log {
                        log.push(&name, FaultEvent::Cancelled(task));
                    }
                    let outcome = Outcome::new(
                        Ok(Exit {
                            code: None,
                            signal: Some(9),
                        }),
                        started,
                    );
                    let _ = self.events.send(Event::Finished { label, token, outcome });
                }
            }
        }
    }

    fn run_job(&mut self, job: Job) {
        let fault = fault_of(&job.host);
        let script = &fault.0;
        let quiet = script.log.is_none() && script.rules.is_empty() && script.delay.is_zero() && !script.drop_idle;
        if quiet && !matches!(&*job.action, Action::Parsub(_)) {
            // The no-op transport: answer at once, without bookkeeping.
            let outcome = Outcome::new(Ok(Exit::OK), SystemTime::now());
            let _ = self.events.send(Event::Finished {
                label: job.label,
                token: job.token,
                outcome,
            });
            return;
        }
        let task = match &*job.action {
            Action::Command(c) => c.cmd.clone(),
            other => other.describe(),
        };
        if let Some(log) = &fault.0.log {
            log.push(&job.name, FaultEvent::Run(task.clone()));
        }
        let started = SystemTime::now();
        if let Action::Parsub(p) = &*job.action {
            // Closures really run, on their own thread, with a local session.
            let events = self.events.clone();
            let p = p.clone();
            std::thread::spawn(move || {
                let outcome = crate::transport::parsub::run_parsub(&job, &p, started);
                let code = if outcome.result.is_ok() { 0 } else { 1 };
                if let Some(log) = &fault.0.log {
                    log.push(&job.name, FaultEvent::Finished(task, code));
                }
                let _ = events.send(Event::Finished {
                    label: job.label,
                    token: job.token,
                    outcome,
                });
            });
            return;
        }
        let rule = fault.0.rules.get(&task).cloned().unwrap_or_default();
        let dropped = rule.drops > 0 && {
            let mut d = fault.0.state.drops.lock();
            let n = d.entry(task.clone()).or_insert(0);
            *n += 1;
            *n <= rule.drops
        };
        let result = if dropped {
            if let Some(c) = job.conn {
                self.conns.remove(&c);
            }
            Err(TransportError::ConnectionLost(format!("injected drop during {task}")))
        } else {
            Ok(Exit {
                code: Some(rule.exit.unwrap_or(0)),
                signal: None,
            })
        };
        let delay = rule.delay.unwrap_or(fault.0.delay);
        let p = Pending::Finish {
            label: job.label,
            name: job.name.clone(),
            token: job.token,
            conn: job.conn,
            task,
            fault,
            result,
            stdout: rule.stdout,
            started,
        };
        self.schedule(delay, p);
    }

    fn complete(&mut self, p: Pending) {
        match p {
            Pending::Connect {
                label,
                name,
                conn,
                fault,
            } => {
                let n = fault.0.state.connects.fetch_add(1, Ordering::AcqRel);
                let ev = if n < fault.0.fail_connects {
                    if let Some(log) = &fault.0.log {
                        log.push(&name, FaultEvent::ConnectFailed);
                    }
                    Event::ConnectFailed {
                        label,
                        conn,
                        error: TransportError::Connect(format!(
                            "injected connection failure {} of {}",
                            n + 1,
                            fault.0.fail_connects
                        )),
                    }
                } else {
                    if let Some(log) = &fault.0.log {
                        log.push(&name, FaultEvent::Connected);
                    }
                    self.conns.insert(conn, (name, fault));
                    Event::Connected { label, conn }
                };
                let _ = self.events.send(ev);
            }
            Pending::Finish {
                label,
                name,
                token,
                conn,
                task,
                fault,
                result,
                stdout,
                started,
            } => {
                let lost_idle = fault.0.drop_idle && result.is_ok();
                self.by_token.remove(&token);
                if let Some(log) = &fault.0.log {
                    match &result {
                        Ok(exit) => log.push(&name, FaultEvent::Finished(task, exit.code.unwrap_or(-1))),
                        Err(_) => log.push(&name, FaultEvent::Dropped(task)),
                    }
                }
                let mut outcome = Outcome::new(result, started);
                if let Some(out) = stdout {
                    outcome.stdout = Captured {
                        bytes: Some(out),
                        truncated: false,
                    };
                }
                let _ = self.events.send(Event::Finished { label, token, outcome });
                if let (true, Some(conn)) = (lost_idle, conn) {
                    if let Some((name, fault)) = self.conns.remove(&conn) {
                        if let Some(log) = &fault.0.log {
                            log.push(&name, FaultEvent::LostIdle);
                        }
                    }
                    let error = TransportError::ConnectionLost("injected drop while idle".into());
                    let _ = self.events.send(Event::Lost { label, conn, error });
                }
            }
        }
    }
}
