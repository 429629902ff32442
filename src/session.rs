//! The blocking session handle a [`Parsub`](crate::Parsub) closure receives:
//! local processes, nothing (`no_ssh`), or the label's own libssh2 session
//! lent by the SSH event loop (exec with stdin, `scp_put`/`scp_get`, `sftp`,
//! the raw `ssh2::Session`).
//!
//! Invariant: a lent session is in blocking mode and belongs to the calling
//! thread until the closure returns; `exec` switches it to non-blocking only
//! for its own call (so stdin and output cannot deadlock on the shared
//! window) and always switches it back.
//!
//! May use: `error`, `transport::libssh2`; nothing of the event loop.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::RawFd;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use crate::error::{Error, ErrorKind, Result};
use crate::transport::libssh2::{exit_of, read_pass, send_eof, would_block, write_blocked_on_input, ReadError};

/// What [`Session::exec`] returns.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    /// The exit status (`None` when a signal ended the command).
    pub exit_code: Option<i32>,
    /// The signal that ended the command, if any.
    pub signal: Option<i32>,
    /// Everything written to stdout.
    pub stdout: Vec<u8>,
    /// Everything written to stderr.
    pub stderr: Vec<u8>,
}

impl ExecOutput {
    /// Whether the command exited with status 0.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }

    /// Stdout as text (lossy UTF-8).
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Stderr as text (lossy UTF-8).
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

pub(crate) enum SessionKind {
    /// Commands run on this machine.
    Local,
    /// `no_ssh`: nothing can be run.
    Detached,
    /// The label's SSH session, lent by the event loop for this call.
    Ssh(Lent),
}

/// An SSH session lent to a parsub: blocking mode, owned by the worker thread
/// until the closure returns.
pub(crate) struct Lent {
    pub(crate) sess: ssh2::Session,
    /// The socket libssh2 reads and writes (owned by the event loop).
    pub(crate) fd: RawFd,
    /// `user@host:port`, for messages.
    pub(crate) target: String,
}

/// A connected session for one label, lent to a `Parsub` closure for the
/// duration of its call. Commands run one at a time and block.
///
/// On an SSH host this is the label's own connection, taken off the event
/// loop while the closure runs and given back when it returns: nothing else
/// uses it meanwhile, and no second login happens. Objects obtained from it
/// ([`sftp`](Session::sftp), [`ssh2`](Session::ssh2)) must not outlive the call.
pub struct Session {
    label: Arc<str>,
    kind: SessionKind,
}

impl Session {
    pub(crate) fn new(label: Arc<str>, kind: SessionKind) -> Session {
        Session { label, kind }
    }

    /// The label this session belongs to.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Whether commands can be run (false for `no_ssh` parsubs).
    pub fn is_connected(&self) -> bool {
        !matches!(self.kind, SessionKind::Detached)
    }

    /// Runs `cmd` through the shell and waits for it, capturing its output.
    pub fn exec(&mut self, cmd: &str) -> Result<ExecOutput> {
        self.exec_with_stdin(cmd, &[])
    }

    /// Runs `cmd` with `stdin` as its input (a password for `sudo -S`, say).
    pub fn exec_with_stdin(&mut self, cmd: &str, stdin: &[u8]) -> Result<ExecOutput> {
        match self.kind {
            SessionKind::Detached => Err(self.detached(cmd).with_label(self.label.clone())),
            SessionKind::Local => local_exec(cmd, stdin).map_err(|e| e.with_label(self.label.clone())),
            SessionKind::Ssh(ref l) => ssh_exec(l, cmd, stdin).map_err(|e| e.with_label(self.label.clone())),
        }
    }

    /// Copies the local file `local` to `remote` over SCP, keeping its mode and
    /// times. On a local host this is a file copy.
    ///
    /// Both paths take anything path-like (`&str`, `String`, `PathBuf`...):
    /// `local` names a file on this machine, `remote` one on the label's host.
    pub fn scp_put(&mut self, local: impl AsRef<Path>, remote: impl AsRef<Path>) -> Result<()> {
        let (local, remote) = (local.as_ref(), remote.as_ref());
        self.copy("scp_put", local, remote, |l| ssh_scp_put(l, local, remote))
    }

    /// Copies the remote file `remote` to `local` over SCP, keeping its mode.
    /// On a local host this is a file copy. Paths as in [`scp_put`](Session::scp_put).
    pub fn scp_get(&mut self, remote: impl AsRef<Path>, local: impl AsRef<Path>) -> Result<()> {
        let (remote, local) = (remote.as_ref(), local.as_ref());
        self.copy("scp_get", remote, local, |l| ssh_scp_get(l, remote, local))
    }

    /// Copies `from` to `to`: over `ssh` on an SSH host, as a file copy on a
    /// local one.
    fn copy(&self, what: &str, from: &Path, to: &Path, ssh: impl FnOnce(&Lent) -> Result<()>) -> Result<()> {
        let r = match &self.kind {
            SessionKind::Detached => Err(self.detached(&format!("{what} {}", from.display()))),
            SessionKind::Local => std::fs::copy(from, to)
                .map(drop)
                .map_err(|e| transfer_err(format!("cannot copy {} to {}: {e}", from.display(), to.display()), e)),
            SessionKind::Ssh(l) => ssh(l),
        };
        r.map_err(|e| e.with_label(self.label.clone()))
    }

    /// Opens an SFTP subsystem on the label's connection (SSH hosts only). The
    /// handle blocks and must be dropped before the closure returns.
    pub fn sftp(&mut self) -> Result<ssh2::Sftp> {
        let r = match &self.kind {
            SessionKind::Ssh(l) => l.sess.sftp().map_err(|e| {
                Error::new(ErrorKind::Connect, format!("{}: cannot start SFTP: {e}", l.target)).with_source(e)
            }),
            SessionKind::Detached => Err(self.detached("sftp")),
            SessionKind::Local => Err(Error::new(
                ErrorKind::Local,
                "sftp needs an SSH host; this label runs on the local machine",
            )),
        };
        r.map_err(|e| e.with_label(self.label.clone()))
    }

    /// The underlying libssh2 session in blocking mode, for anything this
    /// handle does not wrap (`None` unless the label is an SSH host). It must
    /// not be kept, or switched to non-blocking mode, after the closure returns.
    pub fn ssh2(&self) -> Option<&ssh2::Session> {
        match &self.kind {
            SessionKind::Ssh(l) => Some(&l.sess),
            _ => None,
        }
    }

    fn detached(&self, what: &str) -> Error {
        Error::new(
            ErrorKind::Local,
            format!("cannot run `{what}`: this parsub was declared no_ssh and has no session"),
        )
    }
}

fn transfer_err(msg: String, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::new(ErrorKind::Transfer, msg).with_source(e)
}

/// Waits until the socket is ready in the direction libssh2 is blocked on.
fn wait_socket(l: &Lent) {
    let events = match l.sess.block_directions() {
        ssh2::BlockDirections::Inbound => libc::POLLIN,
        ssh2::BlockDirections::Outbound => libc::POLLOUT,
        _ => libc::POLLIN | libc::POLLOUT,
    };
    let mut pfd = libc::pollfd {
        fd: l.fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call. The timeout only
    // bounds a wake-up for anything libssh2 already buffered.
    unsafe {
        libc::poll(&mut pfd, 1, 100);
    }
}

/// Runs a command with stdin on the lent session. Non-blocking inside, so a
/// command that writes a lot before reading its input cannot deadlock us on
/// the shared flow-control window.
fn ssh_exec(l: &Lent, cmd: &str, stdin: &[u8]) -> Result<ExecOutput> {
    l.sess.set_blocking(false);
    let r = ssh_exec_nb(l, cmd, stdin);
    l.sess.set_blocking(true);
    r.map_err(|m| Error::new(ErrorKind::Connect, format!("{}: `{cmd}`: {m}", l.target)))
}

/// Repeats a libssh2 call until it stops saying "would block".
fn retry<T>(l: &Lent, mut f: impl FnMut() -> std::result::Result<T, ssh2::Error>) -> std::result::Result<T, String> {
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if would_block(&e) => wait_socket(l),
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn ssh_exec_nb(l: &Lent, cmd: &str, stdin: &[u8]) -> std::result::Result<ExecOutput, String> {
    let mut ch = retry(l, || l.sess.channel_session())?;
    retry(l, || ch.exec(cmd))?;
    let mut output = [Vec::new(), Vec::new()];
    let mut off = 0;
    let mut eof_sent = false;
    let mut eofs = [false, false];
    while eofs != [true, true] {
        let mut progress = false;
        if off < stdin.len() {
            match ch.write(&stdin[off..]) {
                Ok(n) => {
                    off += n;
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !write_blocked_on_input(&l.sess) {
                        wait_socket(l);
                        continue;
                    }
                }
                // The command closed its input: not an error.
                Err(_) => off = stdin.len(),
            }
        } else if !eof_sent {
            if !send_eof(&mut ch) {
                wait_socket(l);
                continue;
            }
            eof_sent = true;
            progress = true;
        }
        progress |= read_pass(&mut ch, &mut eofs, &mut output).map_err(|e| match e {
            ReadError::Channel { error, .. } => format!("reading the output: {error}"),
            ReadError::Sink(never) => match never {},
        })?;
        if !(progress || eofs == [true, true]) {
            wait_socket(l);
        }
    }
    retry(l, || ch.close())?;
    let exit = exit_of(&ch);
    let [stdout, stderr] = output;
    Ok(ExecOutput {
        exit_code: exit.code,
        signal: exit.signal,
        stdout,
        stderr,
    })
}

/// Sends one file with `scp -t` (libssh2's SCP), mode and times kept.
fn ssh_scp_put(l: &Lent, local: &Path, remote: &Path) -> Result<()> {
    let fail = |m: String| {
        Error::new(
            ErrorKind::Transfer,
            format!("{}: scp_put {}: {m}", l.target, local.display()),
        )
    };
    let mut file = std::fs::File::open(local).map_err(|e| fail(format!("cannot open it: {e}")))?;
    let meta = file.metadata().map_err(|e| fail(e.to_string()))?;
    if !meta.is_file() {
        return Err(fail("not a regular file".into()));
    }
    use std::os::unix::fs::PermissionsExt;
    let secs = |t: io::Result<std::time::SystemTime>| {
        t.ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs())
    };
    let times = Some((secs(meta.modified()), secs(meta.accessed())));
    let mode = (meta.permissions().mode() & 0o7777) as i32;
    let mut ch = l
        .sess
        .scp_send(remote, mode, meta.len(), times)
        .map_err(|e| fail(format!("to {}: {e}", remote.display())))?;
    io::copy(&mut file, &mut ch).map_err(|e| fail(format!("sending: {e}")))?;
    finish_channel(&mut ch).map_err(|e| fail(format!("to {}: {e}", remote.display())))
}

/// Fetches one file with `scp -f` (libssh2's SCP), mode kept.
fn ssh_scp_get(l: &Lent, remote: &Path, local: &Path) -> Result<()> {
    let fail = |m: String| {
        Error::new(
            ErrorKind::Transfer,
            format!("{}: scp_get {}: {m}", l.target, remote.display()),
        )
    };
    let (mut ch, stat) = l.sess.scp_recv(remote).map_err(|e| fail(e.to_string()))?;
    let mut file = std::fs::File::create(local).map_err(|e| fail(format!("cannot create {}: {e}", local.display())))?;
    let copied = io::copy(&mut (&mut ch).take(stat.size()), &mut file).map_err(|e| fail(format!("receiving: {e}")))?;
    if copied != stat.size() {
        return Err(fail(format!(
            "the transfer ended after {copied} of {} bytes",
            stat.size()
        )));
    }
    use std::os::unix::fs::PermissionsExt;
    let _ = file.set_permissions(std::fs::Permissions::from_mode((stat.mode() & 0o7777) as u32));
    finish_channel(&mut ch).map_err(fail)
}

fn finish_channel(ch: &mut ssh2::Channel) -> std::result::Result<(), String> {
    ch.send_eof().map_err(|e| e.to_string())?;
    ch.wait_eof().map_err(|e| e.to_string())?;
    ch.close().map_err(|e| e.to_string())?;
    ch.wait_close().map_err(|e| e.to_string())
}

fn local_exec(cmd: &str, stdin: &[u8]) -> Result<ExecOutput> {
    use std::os::unix::process::ExitStatusExt;
    let spawn_err = |e: std::io::Error| Error::new(ErrorKind::Local, format!("cannot run `{cmd}`: {e}")).with_source(e);
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    let mut input = child.stdin.take();
    let data = stdin.to_vec();
    // Feed stdin from a thread so a command that writes before reading cannot
    // deadlock against us.
    let feeder = std::thread::spawn(move || {
        if let Some(mut i) = input.take() {
            let _ = i.write_all(&data);
        }
    });
    let out = child.wait_with_output().map_err(spawn_err)?;
    let _ = feeder.join();
    Ok(ExecOutput {
        exit_code: out.status.code(),
        signal: out.status.signal(),
        stdout: out.stdout,
        stderr: out.stderr,
    })
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("label", &self.label)
            .field("connected", &self.is_connected())
            .field("ssh", &matches!(self.kind, SessionKind::Ssh(_)))
            .finish()
    }
}
