//! The blocking session handle a [`Parsub`](crate::Parsub) closure receives.

use std::fmt;
use std::io::Write;
use std::process::Stdio;
use std::sync::Arc;

use crate::error::{Error, ErrorKind, Result};

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
}

pub(crate) enum SessionKind {
    /// Commands run on this machine.
    Local,
    /// `no_ssh`: nothing can be run.
    Detached,
}

/// A connected session for one label, lent to a `Parsub` closure for the
/// duration of its call. Commands run one at a time and block.
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
            SessionKind::Detached => Err(Error::new(
                ErrorKind::Local,
                format!("cannot run `{cmd}`: this parsub was declared no_ssh and has no session"),
            )
            .with_label(self.label.clone())),
            SessionKind::Local => local_exec(cmd, stdin).map_err(|e| e.with_label(self.label.clone())),
        }
    }
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
            .finish()
    }
}
