//! [`Command`]: a shell command run on the label's host, with its streams,
//! environment, pty and accepted exit codes.
//!
//! Invariant: `ok_exit_codes` defaults to `[0]`; a command given as words is
//! quoted so that no word is reinterpreted by the shell.

use std::time::Duration;

use super::output::{Output, Stdin};
use super::TaskOptions;

/// A shell command run on the label's host.
///
/// ```
/// use ssh_parallel::{Command, Output, OnError};
/// let c = Command::new("uptime").stdout(Output::file("logs/%LABEL%.txt")).on_error(OnError::Ignore);
/// let c = Command::argv(["ls", "-l", "/path with spaces"]);
/// ```
#[derive(Clone, Debug)]
pub struct Command {
    pub(crate) cmd: String,
    pub(crate) stdout: Output,
    pub(crate) stderr: Output,
    pub(crate) stdin: Stdin,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) pty: bool,
    pub(crate) ok_exit_codes: Vec<i32>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) opts: TaskOptions,
}

impl Command {
    /// A command given as a shell string (`sh -c` on the host).
    pub fn new(cmd: impl Into<String>) -> Command {
        Command {
            cmd: cmd.into(),
            stdout: Output::capture(),
            stderr: Output::capture(),
            stdin: Stdin::null(),
            env: Vec::new(),
            pty: false,
            ok_exit_codes: vec![0],
            idle_timeout: None,
            opts: TaskOptions::default(),
        }
    }

    /// A command given as words, each shell-quoted, so no word is reinterpreted.
    pub fn argv<I, S>(args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let words: Vec<String> = args
            .into_iter()
            .map(|a| {
                let a = a.as_ref();
                // try_quote fails only on NUL bytes, which no shell can take anyway:
                // keep them visible so the remote shell reports the problem.
                shlex::try_quote(a)
                    .map(|q| q.into_owned())
                    .unwrap_or_else(|_| a.to_owned())
            })
            .collect();
        Command::new(words.join(" "))
    }

    /// Where stdout goes (default: captured).
    pub fn stdout(mut self, out: Output) -> Self {
        self.stdout = out;
        self
    }

    /// Where stderr goes (default: captured).
    pub fn stderr(mut self, out: Output) -> Self {
        self.stderr = out;
        self
    }

    /// Where stdin comes from (default: nothing).
    pub fn stdin(mut self, input: Stdin) -> Self {
        self.stdin = input;
        self
    }

    /// Sets an environment variable for the command.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Runs the command on a pseudo-terminal (SSH only; ignored locally).
    pub fn pty(mut self, on: bool) -> Self {
        self.pty = on;
        self
    }

    /// The exit codes that count as success (default `[0]`).
    pub fn ok_exit_codes(mut self, codes: impl IntoIterator<Item = i32>) -> Self {
        self.ok_exit_codes = codes.into_iter().collect();
        self
    }

    /// Stops the command, as its `timeout` would, when it prints nothing on
    /// either stream for `d` (default: the builder's
    /// [`idle_timeout`](crate::ParallelBuilder::idle_timeout), else none).
    /// It is reported as a `Timeout` whose error names the idle timeout,
    /// with the output it printed before.
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = Some(d);
        self
    }

    /// The command line.
    pub fn command_line(&self) -> &str {
        &self.cmd
    }
}
