//! The fault-injection transport (feature `fault-injection`): one thread
//! with a timer heap that follows each host's [`Fault`] script, answering
//! requests with the events the script asks for. Parsub closures really run,
//! on threads of their own, with a local session.
//!
//! Invariant: every request gets exactly the answers the channel protocol
//! promises (`Connect` one of `Connected`/`ConnectFailed`, `Run` one
//! `Finished`, `Disconnect` one `Closed`), however the script delays them.
//!
//! May use: `fault` (the script), `host`, `plan` (`LabelId`), `task`, and
//! its parent `transport` (the protocol).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::fault::{Fault, FaultEvent};
use crate::plan::LabelId;
use crate::task::output::Captured;
use crate::task::Action;
use crate::transport::exit::Exit;
use crate::transport::protocol::{ConnId, Event, Job, Outcome, Request, Token, TransportError};

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
            match (rule.exit.unwrap_or(0), &*job.action) {
                // A transfer has no exit status of its own: a scripted code
                // makes it fail the way a real one does on a live connection.
                (code, Action::ScpGet(_) | Action::ScpPut(_) | Action::RsyncGet(_) | Action::RsyncPut(_))
                    if code != 0 =>
                {
                    Err(TransportError::Transfer(format!(
                        "injected transfer failure (code {code})"
                    )))
                }
                (code, _) => Ok(Exit {
                    code: Some(code),
                    signal: None,
                }),
            }
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
                        Err(TransportError::ConnectionLost(_)) => log.push(&name, FaultEvent::Dropped(task)),
                        // A failed transfer keeps its connection: logged with the scripted code.
                        Err(_) => {
                            let code = fault.0.rules.get(&task).and_then(|r| r.exit).unwrap_or(1);
                            log.push(&name, FaultEvent::Finished(task, code));
                        }
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
