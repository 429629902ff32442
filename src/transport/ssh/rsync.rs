//! rsync over a label's existing SSH session: no second login.
//!
//! The local `rsync` is started with `--rsh` set to a tiny shell bridge that
//! inherits one end of a socketpair as fd 3. The bridge first writes the
//! remote command line rsync asked for (NUL-terminated), then pumps bytes
//! between rsync and the socket with two `cat`s. The event loop reads that
//! command line, runs it on an exec channel of the label's session, and pumps
//! the socket to the channel and back ([`Bridge::pump`]), never blocking.
//!
//! Why a shell bridge: rsync only talks to a remote shell *program*; `sh` and
//! `cat` exist wherever rsync does, so nothing extra has to be installed or
//! shipped, and no TCP port is opened (the socketpair is private to us).
//!
//! Invariant: nothing blocks: the socket is non-blocking, the local rsync is
//! awaited on a thread of its own, and after a channel write would block on
//! sending only that write is repeated. A dropped bridge kills the local
//! rsync's process group.
//!
//! May use: `transport::libssh2`, `task` (`Transfer`, sinks), `process`.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Stdio;

use crossbeam_channel::{Receiver, TryRecvError};
use mio::net::UnixStream;

use crate::task::output::Sink;
use crate::task::Transfer;
use crate::transport::libssh2::{read_pass, send_eof, write_blocked_on_input, OutputSink, ReadError};

/// What the remote end of `--rsh` is called in the paths given to rsync.
const BRIDGE_HOST: &str = "ssh-parallel";

/// The remote shell rsync runs. `$1` is the host name; the rest is the
/// remote command. The stdin copy is duplicated to fd 4 first because an
/// asynchronous list gets /dev/null as stdin. The foreground `cat` (the
/// process rsync waits for) is the socket-to-rsync direction: it ends when
/// the loop shuts the socket down after the remote command has finished.
const BRIDGE_SCRIPT: &str =
    "sh -c 'shift; printf \"%s\\000\" \"$*\" >&3 || exit 255; exec 4<&0; cat <&4 >&3 & exec cat <&3 4<&-' ssh-parallel";

/// Longest remote command line accepted from the bridge.
const MAX_COMMAND: usize = 256 * 1024;
const CHUNK: usize = 32 * 1024;
/// How much of the remote rsync's stderr is kept for error messages.
const REMOTE_ERR_KEEP: usize = 64 * 1024;

/// How the local rsync ended, with what it printed.
pub(super) struct LocalExit {
    pub(super) result: Result<std::process::ExitStatus, String>,
    pub(super) stdout: Vec<u8>,
    pub(super) stderr: Vec<u8>,
}

/// Where a bridged transfer is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Stage {
    /// Reading the remote command line from the bridge.
    Command,
    /// Opening the exec channel.
    Open,
    /// Starting the remote command.
    Exec,
    /// Copying bytes both ways.
    Pump,
    /// Closing the channel, reading the exit status.
    Close,
    /// The remote side is done; waiting for the local rsync to exit.
    Local,
}

/// One rsync transfer bridged over a session.
pub(super) struct Bridge {
    pub(super) stage: Stage,
    /// Our end of the socketpair (the bridge has fd 3), non-blocking and
    /// registered under the connection's auxiliary token.
    pub(super) sock: UnixStream,
    /// The remote command line, complete (NUL stripped) from `Open` on.
    pub(super) command: Vec<u8>,
    /// From the local rsync, not yet written to the channel (`up[up_off..]`);
    /// nothing more is read from the socket until it is all written.
    up: Vec<u8>,
    up_off: usize,
    /// The local rsync closed its side.
    up_eof: bool,
    /// EOF was sent on the channel (after `up_eof` and `up` written).
    eof_sent: bool,
    /// From the channel, not yet written to the local rsync
    /// (`down[down_off..]`); nothing more is read from the channel's stdout
    /// until it is all written.
    down: Vec<u8>,
    down_off: usize,
    /// The remote stdout and stderr have ended.
    remote_eofs: [bool; 2],
    /// Our socket's write side was shut down (after the remote stdout ended
    /// and `down` was delivered): the bridge's foreground `cat` ends.
    sock_shut: bool,
    /// The last channel write would block on sending: only that write may be
    /// repeated until it goes through (a libssh2 rule).
    write_pending: bool,
    /// The remote command's exit, once its channel is closed.
    pub(super) remote_exit: Option<crate::transport::exit::Exit>,
    /// The start of the remote rsync's stderr, for error messages (reads are
    /// kept while it is under [`REMOTE_ERR_KEEP`] bytes; all of it goes to
    /// the report's sink).
    pub(super) remote_err: Vec<u8>,
    /// How the local rsync ended, once it has.
    pub(super) local: Option<LocalExit>,
    /// The thread waiting for the local rsync answers here, once.
    waiter: Receiver<LocalExit>,
    /// The local rsync's pid, which leads its own process group.
    pid: i32,
}

impl Bridge {
    /// Starts the local rsync for `t` (`put`: sources local, target remote).
    /// `notify` is called from the waiting thread when rsync exits.
    pub(super) fn start(t: &Transfer, put: bool, notify: impl FnOnce() + Send + 'static) -> Result<Bridge, String> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
        ours.set_nonblocking(true).map_err(|e| format!("socketpair: {e}"))?;
        let remote = |p: &str| format!("{BRIDGE_HOST}:{p}");
        let mut cmd = std::process::Command::new("rsync");
        // `cat` cannot cope with a non-blocking stdout, which rsync gives remote
        // shells other than rsh unless told otherwise.
        cmd.arg("-a")
            .arg("--blocking-io")
            .args(&t.args)
            .arg("--rsh")
            .arg(BRIDGE_SCRIPT);
        if put {
            cmd.args(t.sources.iter().map(|s| local_arg(s))).arg(remote(&t.target));
        } else {
            cmd.args(t.sources.iter().map(|s| remote(s))).arg(local_arg(&t.target));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let fd = theirs.as_raw_fd();
        // SAFETY: between fork and exec only async-signal-safe calls (dup2,
        // fcntl) on descriptors we own; fd 3 must be inheritable even when the
        // socket already is fd 3 (dup2 is then a no-op and keeps CLOEXEC).
        unsafe {
            cmd.pre_exec(move || {
                if fd != 3 && libc::dup2(fd, 3) < 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot run the local rsync (is it installed?): {e}"))?;
        drop(theirs);
        let pid = child.id() as i32;
        let (tx, waiter) = crossbeam_channel::bounded(1);
        let spawned = std::thread::Builder::new()
            .name("ssh-parallel-rsync".into())
            .spawn(move || {
                let exit = match child.wait_with_output() {
                    Ok(o) => LocalExit {
                        result: Ok(o.status),
                        stdout: o.stdout,
                        stderr: o.stderr,
                    },
                    Err(e) => LocalExit {
                        result: Err(format!("waiting for the local rsync: {e}")),
                        stdout: Vec::new(),
                        stderr: Vec::new(),
                    },
                };
                let _ = tx.send(exit);
                notify();
            });
        if let Err(e) = spawned {
            crate::process::kill_group(pid);
            return Err(format!("cannot start a thread to wait for rsync: {e}"));
        }
        Ok(Bridge {
            stage: Stage::Command,
            sock: UnixStream::from_std(ours),
            command: Vec::new(),
            up: Vec::new(),
            up_off: 0,
            up_eof: false,
            eof_sent: false,
            down: Vec::new(),
            down_off: 0,
            remote_eofs: [false, false],
            sock_shut: false,
            write_pending: false,
            remote_exit: None,
            remote_err: Vec::new(),
            local: None,
            waiter,
            pid,
        })
    }

    /// Takes the local rsync's exit if it has come; true once it has.
    pub(super) fn poll_local(&mut self) -> bool {
        if self.local.is_none() {
            match self.waiter.try_recv() {
                Ok(exit) => self.local = Some(exit),
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => {
                    self.local = Some(LocalExit {
                        result: Err("the thread waiting for rsync died".into()),
                        stdout: Vec::new(),
                        stderr: Vec::new(),
                    })
                }
            }
        }
        self.local.is_some()
    }

    /// Reads the remote command line; `Ok(true)` once it is complete.
    pub(super) fn read_command(&mut self) -> Result<bool, String> {
        let mut buf = [0u8; 4096];
        loop {
            match self.sock.read(&mut buf) {
                Ok(0) => return Err("the local rsync ended before asking for a remote command".into()),
                Ok(n) => {
                    self.command.extend_from_slice(&buf[..n]);
                    if let Some(end) = self.command.iter().position(|&b| b == 0) {
                        // Anything after the NUL is already rsync protocol data.
                        self.up = self.command.split_off(end + 1);
                        self.command.pop();
                        return Ok(true);
                    }
                    if self.command.len() > MAX_COMMAND {
                        return Err("the remote command line from rsync is too long".into());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("reading from the rsync bridge: {e}")),
            }
        }
    }

    /// Moves bytes both ways until nothing more can move now. `Ok(true)` once
    /// the remote command's output has ended and been delivered.
    pub(super) fn pump(&mut self, sess: &ssh2::Session, ch: &mut ssh2::Channel, out: &mut Sink) -> Result<bool, Pump> {
        loop {
            let mut progress = false;
            // rsync -> channel.
            if self.up_off == self.up.len() && !self.up_eof && !self.write_pending {
                self.up.resize(CHUNK, 0);
                self.up_off = 0;
                match self.sock.read(&mut self.up) {
                    Ok(0) => {
                        self.up.clear();
                        self.up_eof = true;
                        progress = true;
                    }
                    Ok(n) => {
                        self.up.truncate(n);
                        progress = true;
                    }
                    Err(e) => {
                        self.up.clear();
                        match e.kind() {
                            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => {}
                            // The local side is gone; it reports why itself.
                            _ => self.up_eof = true,
                        }
                    }
                }
            }
            if self.up_off < self.up.len() {
                match ch.write(&self.up[self.up_off..]) {
                    Ok(n) => {
                        self.up_off += n;
                        self.write_pending = false;
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.write_pending = !write_blocked_on_input(sess);
                        if self.write_pending {
                            return Ok(false);
                        }
                    }
                    Err(e) => return Err(Pump::Lost(format!("writing to the remote rsync: {e}"))),
                }
            } else if self.up_eof && !self.eof_sent {
                if !send_eof(ch) {
                    return Ok(false);
                }
                self.eof_sent = true;
                progress = true;
            }
            // channel -> rsync, and the remote stderr.
            let mut down = Down {
                buf: &mut self.down,
                off: &mut self.down_off,
                remote_err: &mut self.remote_err,
                out,
            };
            progress |= read_pass(ch, &mut self.remote_eofs, &mut down).map_err(|e| match e {
                ReadError::Channel { stream: 0, error } => {
                    Pump::Lost(format!("reading from the remote rsync: {error}"))
                }
                ReadError::Channel { error, .. } => Pump::Lost(format!("reading the remote rsync's stderr: {error}")),
                ReadError::Sink(m) => Pump::Local(m),
            })?;
            if self.down_off < self.down.len() {
                match self.sock.write(&self.down[self.down_off..]) {
                    Ok(n) => {
                        self.down_off += n;
                        progress = true;
                    }
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                    // The local rsync went away: drop what it would have read.
                    Err(_) => self.down_off = self.down.len(),
                }
            } else if self.remote_eofs[0] && !self.sock_shut {
                let _ = self.sock.shutdown(std::net::Shutdown::Write);
                self.sock_shut = true;
                progress = true;
            }
            if self.sock_shut && self.remote_eofs[1] {
                return Ok(true);
            }
            if !progress {
                return Ok(false);
            }
        }
    }

    /// The transfer's result, once both ends are done.
    pub(super) fn result(&self, t: &Transfer) -> Result<(), String> {
        let local = self.local.as_ref().map(|l| &l.result);
        let what = format!("rsync {} -> {}", t.sources.join(" "), t.target);
        let stderr = |extra: &[u8]| {
            let mut s = String::from_utf8_lossy(extra).trim().to_owned();
            let remote = String::from_utf8_lossy(&self.remote_err).trim().to_owned();
            if !remote.is_empty() && !s.contains(&remote) {
                if !s.is_empty() {
                    s.push_str("; ");
                }
                s.push_str("remote: ");
                s.push_str(&remote);
            }
            s
        };
        let local_err = self.local.as_ref().map_or(&[][..], |l| &l.stderr[..]);
        match local {
            Some(Ok(st)) if st.success() => match self.remote_exit {
                Some(e) if e.code == Some(0) => Ok(()),
                Some(e) => Err(format!(
                    "{what}: the remote rsync exited with {}: {}",
                    e.code.map_or_else(
                        || format!("signal {}", e.signal.unwrap_or(-1)),
                        |c| format!("status {c}")
                    ),
                    stderr(local_err)
                )),
                None => Err(format!("{what}: the remote rsync's exit status is unknown")),
            },
            Some(Ok(st)) => Err(match st.signal() {
                Some(sig) => format!("{what}: the local rsync was killed by signal {sig}"),
                None => format!(
                    "{what}: rsync exited with status {}: {}",
                    st.code().unwrap_or(-1),
                    stderr(local_err)
                ),
            }),
            Some(Err(e)) => Err(format!("{what}: {e}")),
            None => Err(format!("{what}: the local rsync has not finished")),
        }
    }
}

impl Drop for Bridge {
    /// A transfer dropped before the local rsync ended (cancelled, or the
    /// connection died) must not leave it running.
    fn drop(&mut self) {
        if !self.poll_local() {
            crate::process::kill_group(self.pid);
        }
    }
}

/// Where the remote rsync's output goes: stdout into the buffer for the
/// local rsync (read only once that is empty), stderr to the task's sink and
/// the start of it kept for messages.
struct Down<'a> {
    buf: &'a mut Vec<u8>,
    off: &'a mut usize,
    remote_err: &'a mut Vec<u8>,
    out: &'a mut Sink,
}

impl OutputSink for Down<'_> {
    type Error = String;

    fn room(&self, stream: usize) -> bool {
        stream == 1 || *self.off == self.buf.len()
    }

    fn put(&mut self, stream: usize, data: &[u8]) -> Result<(), String> {
        if stream == 0 {
            self.buf.clear();
            self.buf.extend_from_slice(data);
            *self.off = 0;
            return Ok(());
        }
        self.out.write(data)?;
        if self.remote_err.len() < REMOTE_ERR_KEEP {
            self.remote_err.extend_from_slice(data);
        }
        Ok(())
    }
}

/// How pumping failed.
pub(super) enum Pump {
    /// The session is unusable.
    Lost(String),
    /// A local sink failed.
    Local(String),
}

/// A local path for rsync: one with a ':' before any '/' would be taken for
/// `host:path`, so it is made explicitly relative.
fn local_arg(p: &str) -> String {
    match (p.find(':'), p.find('/')) {
        (Some(c), slash) if slash.is_none_or(|s| c < s) => format!("./{p}"),
        _ => p.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::local_arg;

    #[test]
    fn local_paths_with_a_colon_are_not_taken_for_hosts() {
        assert_eq!(local_arg("a:b"), "./a:b");
        assert_eq!(local_arg("dir/a:b"), "dir/a:b");
        assert_eq!(local_arg("/abs/a:b"), "/abs/a:b");
        assert_eq!(local_arg("plain"), "plain");
    }
}
