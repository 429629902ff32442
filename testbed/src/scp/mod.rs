//! A built-in `scp -t` / `scp -f` (the legacy SCP protocol, remote side) for the embedded
//! server, so that SCP works on machines without an `scp` binary.
//!
//! It follows OpenSSH's `scp.c` (sink and source): `T`, `C`, `D` and `E` records, `\0`
//! acknowledgements, errors as `\x01scp: message\n`, modes (masked by the umask without
//! `-p`), times with `-p`, recursion with `-r`, `-d` for a target that must be a
//! directory, and exit status 0, or 1 after any error.
//!
//! Only command lines that need no real shell are served: words separated by blanks, with
//! single quotes, double quotes, backslashes and a leading `~` or `~/`. Anything else
//! (variables, globs, `;`, pipes, redirections, unknown options) is left to the shell.
//!
//! Modules: [`command`] (which command lines are served), [`sink`] (`-t`), [`source`]
//! (`-f`); this module holds the engine ([`Scp`]) and the protocol's common steps.
//!
//! Invariant: the engine speaks only through its `input` and `output`; a [`Fatal`] error
//! ends the run at once (exit status 1), any other error is reported to the peer, counted,
//! and the run goes on.

mod command;
mod sink;
mod source;

use std::ffi::CString;
use std::fs;
use std::io::{self, BufRead, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub(crate) use command::{parse_command, ScpCommand};

/// The longest record line accepted.
const MAX_LINE: usize = 64 * 1024;
/// The deepest directory nesting sent or received.
const MAX_DEPTH: usize = 256;
/// File data moved per write.
const CHUNK: usize = 32 * 1024;

/// The process umask, read without changing it (`/proc/self/status`); 022 if unknown.
pub(crate) fn current_umask() -> u32 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

/// `strerror`-style text: the io::Error without its " (os error N)" suffix.
pub(super) fn strerror(e: &io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// Sets a path's modification and access times (seconds since the epoch).
pub(super) fn set_times(path: &Path, (mtime, atime): (i64, i64)) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let spec = |s: i64| libc::timespec {
        tv_sec: s as libc::time_t,
        tv_nsec: 0,
    };
    let times = [spec(atime), spec(mtime)];
    // SAFETY: a valid C string and two timespecs, as utimensat expects.
    if unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A fatal end of the protocol: the exit status is 1.
struct Fatal;

/// One run of the built-in scp over a channel's stdin (`input`) and stdout (`output`).
pub(crate) struct Scp<R, W> {
    /// The parsed command line (a source run takes its paths as it goes).
    cmd: ScpCommand,
    /// The directory relative paths start from.
    cwd: PathBuf,
    /// Masked off received modes without `-p`.
    umask: u32,
    /// The channel's data from the peer.
    input: R,
    /// The channel's data to the peer (flushed after every message).
    output: W,
    /// Errors reported or received so far; any makes the exit status 1.
    errors: u32,
}

impl<R: BufRead, W: Write> Scp<R, W> {
    pub(crate) fn new(cmd: ScpCommand, cwd: &Path, umask: u32, input: R, output: W) -> Self {
        Scp {
            cmd,
            cwd: cwd.to_path_buf(),
            umask,
            input,
            output,
            errors: 0,
        }
    }

    /// Runs the transfer; returns the exit status (0, or 1 after any error).
    pub(crate) fn run(mut self) -> u32 {
        let result = if self.cmd.sink {
            let target = self.cwd.join(&self.cmd.paths[0]);
            self.sink_top(&target)
        } else {
            self.source_top()
        };
        match result {
            Ok(()) if self.errors == 0 => 0,
            _ => 1,
        }
    }

    /// Sends `data` and flushes it.
    fn send(&mut self, data: &[u8]) -> Result<(), Fatal> {
        self.output
            .write_all(data)
            .and_then(|()| self.output.flush())
            .map_err(|_| Fatal)
    }

    /// Sends an acknowledgement (`\0`).
    fn ack(&mut self) -> Result<(), Fatal> {
        self.send(b"\0")
    }

    /// Reports an error to the peer (`\x01scp: message`) and counts it.
    fn run_err(&mut self, msg: &str) -> Result<(), Fatal> {
        self.errors += 1;
        let mut line = Vec::with_capacity(msg.len() + 7);
        line.extend_from_slice(b"\x01scp: ");
        line.extend_from_slice(msg.replace('\n', " ").as_bytes());
        line.push(b'\n');
        self.send(&line)
    }

    /// Reports a protocol error; the caller ends the run with the [`Fatal`] returned.
    fn protocol_error(&mut self, why: &str) -> Fatal {
        let _ = self.run_err(&format!("protocol error: {why}"));
        Fatal
    }

    /// Reads one line (without its `\n`); `None` at EOF before any byte.
    fn read_line(&mut self) -> Result<Option<Vec<u8>>, Fatal> {
        let mut line = Vec::new();
        let n = (&mut self.input)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|_| Fatal)?;
        if n == 0 {
            return Ok(None);
        }
        if line.last() != Some(&b'\n') {
            // Over-long, or the peer went away mid-line.
            return Err(Fatal);
        }
        line.pop();
        Ok(Some(line))
    }

    /// The peer's answer: `Ok(true)` for `\0`, `Ok(false)` for a warning (`\x01`);
    /// a fatal error (`\x02`, anything else, or EOF) ends the run.
    fn response(&mut self) -> Result<bool, Fatal> {
        let mut byte = [0u8; 1];
        self.input.read_exact(&mut byte).map_err(|_| Fatal)?;
        match byte[0] {
            0 => Ok(true),
            kind => {
                // The message itself is the peer's business (a remote scp prints nothing).
                let _ = self.read_line()?;
                self.errors += 1;
                if kind == 1 {
                    Ok(false)
                } else {
                    Err(Fatal)
                }
            }
        }
    }
}
