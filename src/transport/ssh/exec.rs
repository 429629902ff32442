//! A command on a channel: env (exported in the command line when the
//! server refuses it), pty, agent forwarding (its channels relayed by
//! [`agent_forward`](super::agent_forward) at every step), exec, stdin, EOF, output until both streams end,
//! close and exit status; and its idle timeout (no output on either stream
//! for that long fails it as a `Timeout`, and the cancel stops it).
//!
//! Invariant: after a write would block, nothing but that same write is
//! sent until it goes through; only when libssh2 waits for input (the
//! window is shut) is the output read meanwhile. The idle clock starts at
//! the exec and is checked only before a step reads (so output that is
//! already there counts).
//!
//! May use: `agent_forward`, `channel`, `conn` (`Flow`, `TaskFail`, `Spare`),
//! `transport::libssh2`, `task` (the command, sinks).

use std::io::{self, Write};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ssh2::Session;

use super::agent_forward::AgentForward;
use super::channel::{close_channel, exec, TaskChannel};
use super::conn::{Flow, Spare, TaskFail};
use crate::task::output::{Sink, StdinKind, Stream};
use crate::task::{Action, Command};
use crate::transport::exit::Exit;
use crate::transport::libssh2::LIBSSH2_ERROR_CHANNEL_REQUEST_DENIED;
use crate::transport::libssh2::{self, code, send_eof, would_block, write_blocked_on_input, OutputSink, ReadError};
use crate::transport::protocol::{Job, Outcome, TransportError};

/// Where a command is in its channel's life.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stage {
    Open,
    Env,
    Pty,
    /// Asking for agent forwarding (only with an [`AgentForward`]).
    Agent,
    Exec,
    Stdin,
    Eof,
    /// Only reading output (keepalives may go out).
    Drain,
    Close,
}

/// A command running on a channel.
pub(super) struct CommandRun {
    /// The job's action, always an `Action::Command`.
    action: Arc<Action>,
    stage: Stage,
    /// The next `env` entry to send.
    env_next: usize,
    /// The entries the server refused, exported in the command line instead.
    env_fallback: Vec<(String, String)>,
    stdin: Option<Arc<[u8]>>,
    /// How much of `stdin` has been sent.
    stdin_off: usize,
    /// Where stdout and stderr go.
    sinks: Sinks,
    /// The idle timeout ([`Job::idle_timeout`]).
    idle: Option<Duration>,
    /// Agent forwarding, when the host asks for it: requested before the
    /// exec, its channels relayed at every step.
    pub(super) agent: Option<AgentForward>,
}

/// A command's stdout and stderr sinks.
struct Sinks {
    out: Sink,
    err: Sink,
    /// When output last came (or the command started).
    heard: Instant,
}

impl OutputSink for Sinks {
    type Error = String;

    fn put(&mut self, stream: usize, data: &[u8]) -> Result<(), String> {
        self.heard = Instant::now();
        if stream == 0 {
            self.out.write(data)
        } else {
            self.err.write(data)
        }
    }
}

impl CommandRun {
    /// Opens the sinks and loads stdin; errors are the task's own (local).
    pub(super) fn new(job: &Job, c: &Command) -> Result<CommandRun, TransportError> {
        let out = Sink::open(job.name.clone(), Stream::Stdout, &c.stdout).map_err(TransportError::local)?;
        let err = Sink::open(job.name.clone(), Stream::Stderr, &c.stderr).map_err(TransportError::local)?;
        let stdin = match &c.stdin.0 {
            StdinKind::Null => None,
            StdinKind::Data(d) => Some(d.clone()),
            StdinKind::File(path) => Some(
                std::fs::read(path)
                    .map_err(|e| TransportError::local(format!("cannot read stdin file {path:?}: {e}")))?
                    .into(),
            ),
        };
        Ok(CommandRun {
            action: job.action.clone(),
            stage: Stage::Open,
            env_next: 0,
            env_fallback: Vec::new(),
            stdin,
            stdin_off: 0,
            sinks: Sinks {
                out,
                err,
                heard: Instant::now(),
            },
            idle: job.idle_timeout,
            agent: None,
        })
    }

    /// Whether the command was started (its exec sent).
    pub(super) fn started(&self) -> bool {
        matches!(self.stage, Stage::Stdin | Stage::Eof | Stage::Drain | Stage::Close)
    }

    /// When its idle timeout passes, if it has one and runs.
    pub(super) fn idle_deadline(&self) -> Option<Instant> {
        let d = self.idle.filter(|_| self.started() && self.stage != Stage::Close)?;
        Some(self.sinks.heard + d)
    }

    /// Fails the command if it has said nothing for its idle timeout; the
    /// output pending in libssh2 is read first, since it was heard in time.
    fn check_idle(&mut self, ch: &mut ssh2::Channel) -> Result<(), TaskFail> {
        let Some(at) = self.idle_deadline() else { return Ok(()) };
        if Instant::now() < at {
            return Ok(());
        }
        if self.stage == Stage::Drain {
            drain(ch, &mut self.sinks)?;
        }
        match self.idle_deadline() {
            Some(at) if Instant::now() >= at => Err(TaskFail::Task(TransportError::Timeout(format!(
                "no output for {:.2?} (idle timeout)",
                self.idle.unwrap_or_default()
            )))),
            _ => Ok(()),
        }
    }

    /// Whether its channel open may be in flight.
    pub(super) fn opening(&self) -> bool {
        self.stage == Stage::Open
    }

    /// Whether it only reads output.
    pub(super) fn only_draining(&self) -> bool {
        self.stage == Stage::Drain
    }

    /// Runs the channel (see [`step_channel`](Self::step_channel)), with the
    /// forwarded agent's channels relayed before (to finish what they had in
    /// flight) and after (what the channel's reads brought in).
    pub(super) fn step(&mut self, sess: &Session, spare: &mut Spare, tc: &mut TaskChannel) -> Result<Flow, TaskFail> {
        let Some(agent) = self.agent.as_mut() else {
            return self.step_channel(sess, spare, tc);
        };
        agent.pump(sess);
        let flow = self.step_channel(sess, spare, tc)?;
        if let Some(agent) = self.agent.as_mut() {
            agent.pump(sess);
        }
        Ok(flow)
    }

    /// Runs the channel: open, env, pty, agent, exec, stdin, EOF, drain, close.
    fn step_channel(&mut self, sess: &Session, spare: &mut Spare, tc: &mut TaskChannel) -> Result<Flow, TaskFail> {
        let lost = |what: &str, e: &dyn std::fmt::Display| TaskFail::Lost(format!("{what}: {e}"));
        // A clone (one count) so that `self` stays free to change below.
        let action = self.action.clone();
        let Action::Command(c) = &*action else {
            return Err(TaskFail::Task(TransportError::local("not a command (transport bug)")));
        };
        loop {
            if self.stage == Stage::Open {
                if !tc.open(sess, spare)? {
                    return Ok(Flow::Wait);
                }
                self.stage = Stage::Env;
                continue;
            }
            let ch = tc.get();
            if self.stage != Stage::Close {
                self.check_idle(ch)?;
            }
            match self.stage {
                Stage::Open => {}
                Stage::Env => {
                    let Some((k, v)) = c.env.get(self.env_next) else {
                        self.stage = Stage::Pty;
                        continue;
                    };
                    match ch.setenv(k, v) {
                        Ok(()) => self.env_next += 1,
                        Err(e) if would_block(&e) => return Ok(Flow::Wait),
                        Err(e) if code(&e) == LIBSSH2_ERROR_CHANNEL_REQUEST_DENIED => {
                            // Most servers refuse env (AcceptEnv): export it in the command instead.
                            self.env_fallback.push((k.clone(), v.clone()));
                            self.env_next += 1;
                        }
                        Err(e) => return Err(lost("setting the environment", &e)),
                    }
                }
                Stage::Pty => {
                    if !c.pty {
                        self.stage = Stage::Agent;
                        continue;
                    }
                    match ch.request_pty("xterm", None, None) {
                        Ok(()) => self.stage = Stage::Agent,
                        Err(e) if would_block(&e) => return Ok(Flow::Wait),
                        Err(e) if code(&e) == LIBSSH2_ERROR_CHANNEL_REQUEST_DENIED => {
                            return Err(TaskFail::Task(TransportError::local(format!(
                                "the server refused a pty: {e}"
                            ))))
                        }
                        Err(e) => return Err(lost("requesting a pty", &e)),
                    }
                }
                Stage::Agent => {
                    if self.agent.is_none() {
                        self.stage = Stage::Exec;
                        continue;
                    }
                    match ch.request_auth_agent_forwarding() {
                        Ok(()) => self.stage = Stage::Exec,
                        Err(e) if would_block(&e) => return Ok(Flow::Wait),
                        Err(e) if code(&e) == LIBSSH2_ERROR_CHANNEL_REQUEST_DENIED => {
                            // sshd grants forwarding once per connection and refuses it
                            // afterwards, while every later command still gets the socket
                            // of the first grant: the relay stays armed for those. A server
                            // that never forwards opens no agent channel, so that costs
                            // nothing; the command runs either way, as with OpenSSH.
                            log::debug!(target: "ssh_parallel", "agent forwarding refused for this command ({e}); an earlier grant on the connection still applies");
                            self.stage = Stage::Exec;
                        }
                        Err(e) => return Err(lost("requesting agent forwarding", &e)),
                    }
                }
                Stage::Exec => {
                    let cmd = if self.env_fallback.is_empty() {
                        c.cmd.clone()
                    } else {
                        let exports: Vec<String> = self
                            .env_fallback
                            .iter()
                            .map(|(k, v)| format!("{k}={}", shlex::try_quote(v).unwrap_or_default()))
                            .collect();
                        format!("export {}; {}", exports.join(" "), c.cmd)
                    };
                    if !exec(ch, &cmd, "the command", TransportError::local)? {
                        return Ok(Flow::Wait);
                    }
                    self.sinks.heard = Instant::now();
                    self.stage = Stage::Stdin;
                }
                Stage::Stdin => {
                    let Some(data) = self.stdin.as_ref().filter(|d| self.stdin_off < d.len()) else {
                        self.stage = Stage::Eof;
                        continue;
                    };
                    match ch.write(&data[self.stdin_off..]) {
                        Ok(n) => self.stdin_off += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            if write_blocked_on_input(sess) {
                                drain(ch, &mut self.sinks)?;
                            }
                            return Ok(Flow::Wait);
                        }
                        // The command closed its input: not an error.
                        Err(_) => self.stage = Stage::Eof,
                    }
                }
                Stage::Eof => {
                    if !send_eof(ch) {
                        return Ok(Flow::Wait);
                    }
                    self.stage = Stage::Drain;
                }
                Stage::Drain => {
                    if !drain(ch, &mut self.sinks)? {
                        return Ok(Flow::Wait);
                    }
                    self.stage = Stage::Close;
                }
                Stage::Close => return close_channel(ch),
            }
        }
    }

    /// What the scheduler learns: `result` and the captured output.
    pub(super) fn outcome(self, result: Result<Exit, TransportError>, started: SystemTime) -> Outcome {
        let stdout = self.sinks.out.finish();
        let stderr = self.sinks.err.finish();
        match (result, stdout, stderr) {
            (Ok(exit), Ok(so), Ok(se)) => Outcome {
                result: Ok(exit),
                stdout: so,
                stderr: se,
                started,
            },
            (Err(e), so, se) => Outcome {
                result: Err(e),
                stdout: so.unwrap_or_default(),
                stderr: se.unwrap_or_default(),
                started,
            },
            (Ok(_), Err(m), _) | (Ok(_), _, Err(m)) => Outcome::new(Err(TransportError::local(m)), started),
        }
    }
}

/// Reads the command's output (see [`libssh2::drain`]); true once both
/// streams ended.
fn drain(ch: &mut ssh2::Channel, sinks: &mut Sinks) -> Result<bool, TaskFail> {
    libssh2::drain(ch, &mut [false; 2], sinks).map_err(|e| match e {
        ReadError::Sink(m) => TaskFail::Task(TransportError::local(m)),
        ReadError::Channel { error: e, .. } => TaskFail::Lost(format!("reading the command's output: {e}")),
    })
}
