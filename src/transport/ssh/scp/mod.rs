//! SCP transfers over an exec channel running the remote `scp -t` (put) or
//! `scp -f` (get): this side speaks the SCP protocol (`T`/`C`/`D`/`E`
//! records, `\0` acknowledgements, `\x01`/`\x02` error lines), which gives
//! recursion, modes and times; [`put`] is the source side, [`get`] the sink.
//!
//! Invariant: memory stays bounded whatever the file sizes: file data moves
//! in [`SCP_CHUNK`] pieces, at most one read of the remote stdout is taken
//! per protocol step, and only the start of the remote stderr is kept.
//!
//! May use: `channel`, `conn` (`Flow`, `TaskFail`, `Spare`),
//! `transport::libssh2`, `task` (`Transfer`).

use std::convert::Infallible;
use std::io::{self, Write};
use std::time::SystemTime;

use ssh2::Session;

use self::get::GetState;
use self::put::PutState;
use super::channel::{close_channel, exec, TaskChannel};
use super::conn::{Flow, Spare, TaskFail};
use crate::task::Transfer;
use crate::transport::exit::Exit;
use crate::transport::libssh2::{self, is_socket_error, send_eof, write_blocked_on_input, OutputSink, ReadError};
use crate::transport::protocol::{Outcome, TransportError};

mod get;
mod put;

/// File data moved per protocol step (bounded memory for any file size).
const SCP_CHUNK: usize = 64 * 1024;
/// The longest SCP record or error line accepted.
const SCP_MAX_LINE: usize = 64 * 1024;
/// How much of the remote scp's stderr is kept for error messages.
const SCP_STDERR_KEEP: usize = 4096;

/// Where an SCP transfer is in its channel's life.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stage {
    Open,
    Exec,
    /// Speaking the SCP protocol with the remote `scp`.
    Protocol,
    Eof,
    Drain,
    Close,
}

/// An SCP transfer running on a channel.
pub(super) struct ScpRun {
    stage: Stage,
    scp: Scp,
}

impl ScpRun {
    /// `ScpPut`: checks the local sources; the remote `scp -t` comes later.
    pub(super) fn put(t: &Transfer) -> Result<ScpRun, TransportError> {
        Ok(ScpRun::new(Scp::put(t)?))
    }

    /// `ScpGet`: checks the local target; the remote `scp -f` comes later.
    pub(super) fn get(t: &Transfer) -> Result<ScpRun, TransportError> {
        Ok(ScpRun::new(Scp::get(t)?))
    }

    fn new(scp: Scp) -> ScpRun {
        ScpRun {
            stage: Stage::Open,
            scp,
        }
    }

    /// Whether its channel open may be in flight.
    pub(super) fn opening(&self) -> bool {
        self.stage == Stage::Open
    }

    /// Runs the channel: open, exec the remote `scp`, speak the SCP protocol
    /// with it, then EOF, drain, close and exit status.
    pub(super) fn step(&mut self, sess: &Session, spare: &mut Spare, tc: &mut TaskChannel) -> Result<Flow, TaskFail> {
        let scp = &mut self.scp;
        loop {
            if self.stage == Stage::Open {
                if !tc.open(sess, spare)? {
                    return Ok(Flow::Wait);
                }
                self.stage = Stage::Exec;
            }
            let ch = tc.get();
            match self.stage {
                Stage::Open => {}
                Stage::Exec => {
                    if !exec(
                        ch,
                        &scp.command,
                        &format!("`{}`", scp.command),
                        TransportError::Transfer,
                    )? {
                        return Ok(Flow::Wait);
                    }
                    self.stage = Stage::Protocol;
                }
                Stage::Protocol => {
                    if !scp.pump(sess, ch)? {
                        return Ok(Flow::Wait);
                    }
                    self.stage = Stage::Eof;
                }
                Stage::Eof => {
                    if !send_eof(ch) {
                        return Ok(Flow::Wait);
                    }
                    self.stage = Stage::Drain;
                }
                Stage::Drain => {
                    if !scp.drain(ch)? {
                        return Ok(Flow::Wait);
                    }
                    self.stage = Stage::Close;
                }
                Stage::Close => return close_channel(ch),
            }
        }
    }

    /// What the scheduler learns: success only if the remote scp exited 0
    /// after the whole transfer (no output is kept).
    pub(super) fn outcome(self, result: Result<Exit, TransportError>, started: SystemTime) -> Outcome {
        let result = match result {
            Ok(exit) if exit.code == Some(0) && !self.scp.ended_early => Ok(Exit::OK),
            Ok(exit) => Err(TransportError::Transfer(self.scp.exit_error(exit))),
            Err(e) => Err(e),
        };
        Outcome::new(result, started)
    }
}

/// What the SCP protocol engine did.
enum ScpStep {
    /// Something changed: flush and advance again.
    Progress,
    /// Needs more bytes from the remote scp.
    NeedInput,
    /// The transfer is complete.
    Done,
}

/// Seconds since the epoch: (mtime, atime).
type Times = (i64, i64);

/// The protocol engine of one transfer.
struct Scp {
    /// The remote command line.
    command: String,
    /// Bytes to send, from `out_off` on (sent before anything else happens).
    out: Vec<u8>,
    out_off: usize,
    /// The remote stdout and stderr have ended.
    eof: [bool; 2],
    /// The remote stdout ended before the transfer was complete (or the
    /// remote scp stopped reading): its exit status tells why.
    ended_early: bool,
    /// What was read from the remote scp.
    remote: Remote,
    dir: ScpDir,
}

enum ScpDir {
    Put(PutState),
    Get(GetState),
}

/// What was read from the remote scp.
struct Remote {
    /// Unconsumed bytes from its stdout.
    inb: Vec<u8>,
    /// Reads of stdout still allowed in this pass (so that `inb` stays
    /// bounded); `None` once the protocol is over: stdout is then dropped.
    stdout_reads: Option<u32>,
    /// The start of its stderr (at most [`SCP_STDERR_KEEP`] bytes).
    stderr: Vec<u8>,
}

impl OutputSink for Remote {
    type Error = Infallible;

    fn room(&self, stream: usize) -> bool {
        stream == 1 || self.stdout_reads != Some(0)
    }

    fn put(&mut self, stream: usize, data: &[u8]) -> Result<(), Infallible> {
        if stream == 1 {
            let room = SCP_STDERR_KEEP.saturating_sub(self.stderr.len());
            self.stderr.extend_from_slice(&data[..data.len().min(room)]);
        } else if let Some(n) = &mut self.stdout_reads {
            self.inb.extend_from_slice(data);
            *n -= 1;
        }
        Ok(())
    }
}

impl Scp {
    fn new(command: String, dir: ScpDir) -> Scp {
        Scp {
            command,
            out: Vec::new(),
            out_off: 0,
            eof: [false; 2],
            ended_early: false,
            remote: Remote {
                inb: Vec::new(),
                stdout_reads: Some(0),
                stderr: Vec::new(),
            },
            dir,
        }
    }

    /// Moves the transfer on until it would block; true once the protocol is
    /// over (completely, or because the remote scp ended early).
    fn pump(&mut self, sess: &Session, ch: &mut ssh2::Channel) -> Result<bool, TaskFail> {
        loop {
            while self.out_off < self.out.len() {
                match ch.write(&self.out[self.out_off..]) {
                    Ok(0) => return Ok(false),
                    Ok(n) => self.out_off += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if write_blocked_on_input(sess) {
                            // Reading frees the remote side, which may then
                            // take more of what we send.
                            self.read(ch, Some(1))?;
                        }
                        return Ok(false);
                    }
                    Err(e) => {
                        if ssh2::Error::last_session_error(sess).is_some_and(|le| is_socket_error(&le)) {
                            return Err(TaskFail::Lost(format!("writing to the remote scp: {e}")));
                        }
                        // The remote scp went away: its exit status tells why.
                        self.ended_early = true;
                        return Ok(true);
                    }
                }
            }
            self.out.clear();
            self.out_off = 0;
            // Its stderr shares the window with stdout: keep it flowing.
            self.read(ch, Some(0))?;
            match self
                .advance()
                .map_err(|m| TaskFail::Task(TransportError::Transfer(m)))?
            {
                ScpStep::Progress => continue,
                ScpStep::Done => return Ok(true),
                ScpStep::NeedInput if self.eof[0] => {
                    self.ended_early = true;
                    return Ok(true);
                }
                ScpStep::NeedInput => {}
            }
            if !self.read(ch, Some(1))? {
                return Ok(false);
            }
        }
    }

    /// One pass over the remote output, with at most `stdout_reads` reads of
    /// stdout (`None`: all of it, dropped); true if it read anything.
    fn read(&mut self, ch: &mut ssh2::Channel, stdout_reads: Option<u32>) -> Result<bool, TaskFail> {
        self.remote.stdout_reads = stdout_reads;
        libssh2::read_pass(ch, &mut self.eof, &mut self.remote).map_err(read_error)
    }

    /// After the protocol: reads both streams to their end (see
    /// [`libssh2::drain`]); true when both ended.
    fn drain(&mut self, ch: &mut ssh2::Channel) -> Result<bool, TaskFail> {
        self.remote.stdout_reads = None;
        self.remote.inb.clear();
        libssh2::drain(ch, &mut self.eof, &mut self.remote).map_err(read_error)
    }

    /// The error for a remote scp that failed or ended before the end of the transfer.
    fn exit_error(&self, exit: Exit) -> String {
        let how = match (exit.code, exit.signal) {
            (_, Some(sig)) => format!("was killed by signal {sig}"),
            (Some(0), None) => "ended before the transfer was complete".to_owned(),
            (Some(c), None) => format!("exited with status {c}"),
            (None, None) => "ended without an exit status".to_owned(),
        };
        let text = String::from_utf8_lossy(&self.remote.stderr).trim().to_owned();
        if text.is_empty() {
            format!("the remote `{}` {how}", self.command)
        } else {
            format!("the remote `{}` {how}: {text}", self.command)
        }
    }

    /// Removes and returns the next line (without its `\n`), if complete.
    fn take_line(&mut self) -> Result<Option<Vec<u8>>, String> {
        match self.remote.inb.iter().position(|&b| b == b'\n') {
            Some(i) => {
                let line = self.remote.inb[..i].to_vec();
                self.remote.inb.drain(..=i);
                Ok(Some(line))
            }
            None if self.remote.inb.len() > SCP_MAX_LINE => Err("the remote scp sent an over-long line".into()),
            None => Ok(None),
        }
    }

    /// The answer to what was sent: `\0`, or an error line whose text is returned.
    fn response(&mut self) -> Result<Option<Result<(), String>>, String> {
        match self.remote.inb.first() {
            None => Ok(None),
            Some(0) => {
                self.remote.inb.drain(..1);
                Ok(Some(Ok(())))
            }
            Some(1 | 2) => Ok(self.take_line()?.map(|l| Err(error_text(&l[1..])))),
            Some(_) => Err(format!(
                "unexpected answer from the remote scp: {:?}",
                String::from_utf8_lossy(&self.remote.inb[..self.remote.inb.len().min(200)])
            )),
        }
    }

    /// One step of the protocol; errors are messages naming the path.
    fn advance(&mut self) -> Result<ScpStep, String> {
        // Temporarily take the direction state so that `self`'s buffers stay usable.
        let mut dir = std::mem::replace(&mut self.dir, ScpDir::Put(PutState::empty()));
        let r = match &mut dir {
            ScpDir::Put(p) => self.advance_put(p),
            ScpDir::Get(g) => self.advance_get(g),
        };
        self.dir = dir;
        r
    }
}

/// A failed read of the remote scp's output: the session is lost.
fn read_error(e: ReadError<Infallible>) -> TaskFail {
    match e {
        ReadError::Channel { error: e, .. } => TaskFail::Lost(format!("reading from the remote scp: {e}")),
        ReadError::Sink(never) => match never {},
    }
}

/// The text of a remote error line.
fn error_text(msg: &[u8]) -> String {
    String::from_utf8_lossy(msg).trim().to_owned()
}

/// Quotes a remote path for the remote shell, keeping a leading `~/` expandable.
fn remote_quote(path: &str) -> Result<String, String> {
    let quote = |s: &str| {
        shlex::try_quote(s)
            .map(|q| q.into_owned())
            .map_err(|_| format!("{path}: a path with a NUL byte cannot be sent"))
    };
    match path.strip_prefix("~/") {
        Some(rest) if !rest.is_empty() => Ok(format!("~/{}", quote(rest)?)),
        _ if path == "~" || path == "~/" => Ok(path.to_owned()),
        _ => quote(path),
    }
}
