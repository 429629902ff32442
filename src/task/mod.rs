//! Actions (what a task does) and the options every task takes.

pub(crate) mod output;
pub(crate) mod vars;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::error::{BoxError, Error, ErrorKind, Result};
use crate::host::Host;
use crate::policy::OnError;
use crate::report::TaskReport;
use crate::scheduler::SubContext;
use crate::session::Session;
use crate::task::output::{Output, OutputKind, Stdin, StdinKind};

/// Called when a task has finished, with its label and its report entry.
pub type DoneFn = Arc<dyn Fn(&str, &TaskReport) + Send + Sync>;
pub(crate) type SubFn = Arc<Mutex<Box<dyn FnMut(&mut SubContext<'_>) -> Result<(), BoxError> + Send>>>;
pub(crate) type ParsubFn = Arc<dyn Fn(&str, &mut Session) -> Result<(), BoxError> + Send + Sync>;

/// Options every task takes.
#[derive(Clone, Default)]
pub(crate) struct TaskOptions {
    pub(crate) on_error: Option<OnError>,
    pub(crate) or_goto: Option<String>,
    pub(crate) reconnections: Option<u32>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) on_done: Option<DoneFn>,
}

impl fmt::Debug for TaskOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskOptions")
            .field("on_error", &self.on_error)
            .field("or_goto", &self.or_goto)
            .field("reconnections", &self.reconnections)
            .field("timeout", &self.timeout)
            .field("on_done", &self.on_done.as_ref().map(|_| ".."))
            .finish()
    }
}

/// Adds the per-task option methods to an action type.
macro_rules! task_options {
    ($($t:ty => $($field:tt).+);* $(;)?) => {$(
        impl $t {
            /// The error policy for this task (overrides the host's and the scheduler's).
            pub fn on_error(mut self, policy: impl Into<OnError>) -> Self {
                self.$($field).+.on_error = Some(policy.into());
                self
            }
            /// When the task fails with a non-zero exit status, jump to `here(tag)`
            /// instead of raising an error.
            pub fn or_goto(mut self, tag: impl Into<String>) -> Self {
                self.$($field).+.or_goto = Some(tag.into());
                self
            }
            /// Extra connection attempts for this task (overrides the host's and the global value).
            pub fn reconnections(mut self, n: u32) -> Self {
                self.$($field).+.reconnections = Some(n);
                self
            }
            /// Fail the task with `ErrorKind::Timeout` when it runs longer than this.
            pub fn timeout(mut self, timeout: Duration) -> Self {
                self.$($field).+.timeout = Some(timeout);
                self
            }
            /// Call `f(label, report)` when the task has finished, however it ended.
            pub fn on_done(mut self, f: impl Fn(&str, &TaskReport) + Send + Sync + 'static) -> Self {
                self.$($field).+.on_done = Some(Arc::new(f));
                self
            }
        }
    )*};
}

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

    /// The command line.
    pub fn command_line(&self) -> &str {
        &self.cmd
    }
}

/// Shared body of the scp and rsync actions.
#[derive(Clone, Debug)]
pub(crate) struct Transfer {
    pub(crate) sources: Vec<String>,
    pub(crate) target: String,
    pub(crate) recursive: bool,
    pub(crate) args: Vec<String>,
    pub(crate) opts: TaskOptions,
}

impl Transfer {
    fn new(source: String, target: String) -> Transfer {
        Transfer {
            sources: vec![source],
            target,
            recursive: false,
            args: Vec::new(),
            opts: TaskOptions::default(),
        }
    }
}

macro_rules! transfer_action {
    ($(#[$doc:meta])* $name:ident, $from:literal, $to:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub struct $name(pub(crate) Transfer);

        impl $name {
            #[doc = concat!("Copies ", $from, " path `source` to ", $to, " path `target`.")]
            pub fn new(source: impl Into<String>, target: impl Into<String>) -> Self {
                $name(Transfer::new(source.into(), target.into()))
            }
            #[doc = concat!("Copies several ", $from, " paths into the ", $to, " directory `target`.")]
            pub fn many<I, S>(sources: I, target: impl Into<String>) -> Self
            where
                I: IntoIterator<Item = S>,
                S: Into<String>,
            {
                let mut t = Transfer::new(String::new(), target.into());
                t.sources = sources.into_iter().map(Into::into).collect();
                $name(t)
            }
            /// Copies directories with their contents.
            pub fn recursive(mut self, on: bool) -> Self {
                self.0.recursive = on;
                self
            }
        }
    };
}

transfer_action!(
    /// Copies files from the host to this machine with scp.
    ScpGet, "remote", "local"
);
transfer_action!(
    /// Copies files from this machine to the host with scp (modes and times kept).
    ScpPut, "local", "remote"
);
transfer_action!(
    /// Copies files from the host to this machine with rsync, over the label's own connection.
    RsyncGet, "remote", "local"
);
transfer_action!(
    /// Copies files from this machine to the host with rsync, over the label's own connection.
    RsyncPut, "local", "remote"
);

impl RsyncGet {
    /// Passes extra arguments to rsync (after `-a`).
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.0.args.extend(args.into_iter().map(Into::into));
        self
    }
}

impl RsyncPut {
    /// Passes extra arguments to rsync (after `-a`).
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.0.args.extend(args.into_iter().map(Into::into));
        self
    }
}

/// A closure run on the scheduler thread: it sees earlier results and can push
/// new tasks, so a running plan can grow.
#[derive(Clone)]
pub struct Sub {
    pub(crate) f: SubFn,
    pub(crate) opts: TaskOptions,
}

impl Sub {
    /// Wraps `f`; an `Err` or a panic becomes the task's `Local` error.
    pub fn new(f: impl FnMut(&mut SubContext<'_>) -> Result<(), BoxError> + Send + 'static) -> Sub {
        Sub {
            f: Arc::new(Mutex::new(Box::new(f))),
            opts: TaskOptions::default(),
        }
    }
}

impl fmt::Debug for Sub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sub").field("opts", &self.opts).finish_non_exhaustive()
    }
}

/// A closure run on a worker thread with a session for its label.
#[derive(Clone)]
pub struct Parsub {
    pub(crate) f: ParsubFn,
    pub(crate) no_ssh: bool,
    pub(crate) opts: TaskOptions,
}

impl Parsub {
    /// Wraps `f(label, session)`; an `Err` or a panic becomes the task's `Local` error.
    pub fn new(f: impl Fn(&str, &mut Session) -> Result<(), BoxError> + Send + Sync + 'static) -> Parsub {
        Parsub {
            f: Arc::new(f),
            no_ssh: false,
            opts: TaskOptions::default(),
        }
    }

    /// Runs without a connection: the session handle cannot execute anything,
    /// and the task takes no connection slot.
    pub fn no_ssh(mut self) -> Self {
        self.no_ssh = true;
        self
    }
}

impl fmt::Debug for Parsub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Parsub")
            .field("no_ssh", &self.no_ssh)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

/// Waits until every label the selector names has finished all the tasks that
/// were in its queue when the join was pushed.
#[derive(Clone, Debug)]
pub struct Join {
    pub(crate) selector: String,
    pub(crate) opts: TaskOptions,
}

impl Join {
    /// A join on the labels `selector` names.
    pub fn new(selector: impl Into<String>) -> Join {
        Join {
            selector: selector.into(),
            opts: TaskOptions::default(),
        }
    }
}

/// A target for [`Goto`] and `or_goto`.
#[derive(Clone, Debug)]
pub struct Here {
    pub(crate) tag: String,
}

impl Here {
    /// A `here` with this tag.
    pub fn new(tag: impl Into<String>) -> Here {
        Here { tag: tag.into() }
    }
}

/// Skips forward to the next `here` with the same tag (`END`: to the end).
#[derive(Clone, Debug)]
pub struct Goto {
    pub(crate) tag: String,
    pub(crate) opts: TaskOptions,
}

impl Goto {
    /// A jump to `tag`.
    pub fn new(tag: impl Into<String>) -> Goto {
        Goto {
            tag: tag.into(),
            opts: TaskOptions::default(),
        }
    }
}

/// Drops the rest of the label's queue: `Goto::new("END")`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stop;

/// Makes sure the label is connected; runs nothing.
#[derive(Clone, Debug, Default)]
pub struct Connect {
    pub(crate) opts: TaskOptions,
}

impl Connect {
    /// A connect task.
    pub fn new() -> Connect {
        Connect::default()
    }
}

task_options!(
    Command => opts;
    ScpGet => 0.opts;
    ScpPut => 0.opts;
    RsyncGet => 0.opts;
    RsyncPut => 0.opts;
    Sub => opts;
    Parsub => opts;
    Join => opts;
    Goto => opts;
    Connect => opts;
);

/// Every action a task can perform. Each action type converts into it, so
/// `push` takes any of them.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Action {
    /// See [`Command`].
    Command(Command),
    /// See [`ScpGet`].
    ScpGet(ScpGet),
    /// See [`ScpPut`].
    ScpPut(ScpPut),
    /// See [`RsyncGet`].
    RsyncGet(RsyncGet),
    /// See [`RsyncPut`].
    RsyncPut(RsyncPut),
    /// See [`Sub`].
    Sub(Sub),
    /// See [`Parsub`].
    Parsub(Parsub),
    /// See [`Join`].
    Join(Join),
    /// See [`Here`].
    Here(Here),
    /// See [`Goto`].
    Goto(Goto),
    /// See [`Stop`].
    Stop(Stop),
    /// See [`Connect`].
    Connect(Connect),
}

macro_rules! into_action {
    ($($t:ident),*) => {$(
        impl From<$t> for Action {
            fn from(a: $t) -> Action {
                Action::$t(a)
            }
        }
    )*};
}
into_action!(Command, ScpGet, ScpPut, RsyncGet, RsyncPut, Sub, Parsub, Join, Here, Goto, Stop, Connect);

/// How the scheduler treats a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// Needs a worker slot and a connection.
    Remote,
    /// Needs a worker slot (runs on a transport thread) but no connection.
    Detached,
    /// Runs on the scheduler itself.
    Local,
}

impl Action {
    pub(crate) fn opts(&self) -> Option<&TaskOptions> {
        Some(match self {
            Action::Command(c) => &c.opts,
            Action::ScpGet(ScpGet(t)) | Action::ScpPut(ScpPut(t)) => &t.opts,
            Action::RsyncGet(RsyncGet(t)) | Action::RsyncPut(RsyncPut(t)) => &t.opts,
            Action::Sub(s) => &s.opts,
            Action::Parsub(p) => &p.opts,
            Action::Join(j) => &j.opts,
            Action::Goto(g) => &g.opts,
            Action::Connect(c) => &c.opts,
            Action::Here(_) | Action::Stop(_) => return None,
        })
    }

    pub(crate) fn class(&self) -> Class {
        match self {
            Action::Command(_)
            | Action::ScpGet(_)
            | Action::ScpPut(_)
            | Action::RsyncGet(_)
            | Action::RsyncPut(_)
            | Action::Connect(_) => Class::Remote,
            Action::Parsub(p) if p.no_ssh => Class::Detached,
            Action::Parsub(_) => Class::Remote,
            Action::Sub(_) | Action::Join(_) | Action::Here(_) | Action::Goto(_) | Action::Stop(_) => Class::Local,
        }
    }

    /// A one-line description for reports, logs and error messages.
    pub fn describe(&self) -> String {
        fn paths(t: &Transfer) -> String {
            format!("{} -> {}", t.sources.join(" "), t.target)
        }
        match self {
            Action::Command(c) => format!("command `{}`", c.cmd),
            Action::ScpGet(ScpGet(t)) => format!("scp_get {}", paths(t)),
            Action::ScpPut(ScpPut(t)) => format!("scp_put {}", paths(t)),
            Action::RsyncGet(RsyncGet(t)) => format!("rsync_get {}", paths(t)),
            Action::RsyncPut(RsyncPut(t)) => format!("rsync_put {}", paths(t)),
            Action::Sub(_) => "sub".to_owned(),
            Action::Parsub(p) if p.no_ssh => "parsub (no_ssh)".to_owned(),
            Action::Parsub(_) => "parsub".to_owned(),
            Action::Join(j) => format!("join {}", j.selector),
            Action::Here(h) => format!("here {}", h.tag),
            Action::Goto(g) => format!("goto {}", g.tag),
            Action::Stop(_) => "stop".to_owned(),
            Action::Connect(_) => "connect".to_owned(),
        }
    }

    /// Validates what can be checked before any label is known.
    pub(crate) fn check(&self) -> Result<()> {
        let tag_ok = |tag: &str, what: &str| {
            if tag.trim().is_empty() {
                Err(Error::new(
                    ErrorKind::MissingTag,
                    format!("{what} needs a non-empty tag"),
                ))
            } else {
                Ok(())
            }
        };
        match self {
            Action::Here(h) => tag_ok(&h.tag, "here")?,
            Action::Goto(g) => tag_ok(&g.tag, "goto")?,
            _ => {}
        }
        if let Some(tag) = self.opts().and_then(|o| o.or_goto.as_deref()) {
            tag_ok(tag, "or_goto")?;
            if self.class() == Class::Local {
                return Err(Error::new(
                    ErrorKind::InvalidConfig,
                    format!(
                        "option or_goto applies to remote tasks only, not to {}",
                        self.describe()
                    ),
                ));
            }
        }
        let transfer = match self {
            Action::ScpGet(ScpGet(t)) | Action::ScpPut(ScpPut(t)) => Some(t),
            Action::RsyncGet(RsyncGet(t)) | Action::RsyncPut(RsyncPut(t)) => Some(t),
            _ => None,
        };
        if let Some(t) = transfer {
            if t.sources.is_empty() || t.sources.iter().any(|s| s.is_empty()) || t.target.is_empty() {
                return Err(Error::new(
                    ErrorKind::InvalidConfig,
                    format!("{}: transfer paths must not be empty", self.describe()),
                ));
            }
        }
        Ok(())
    }

    /// This action with `%VAR%`s expanded for `label` on `host`, or `None` when
    /// nothing needed expanding (the caller then shares one copy between labels).
    pub(crate) fn expand_for(&self, label: &str, host: &Host) -> Result<Option<Action>> {
        if !host.expand_vars {
            return Ok(None);
        }
        let lookup = |name: &str| host.lookup_var(label, name);
        let mut changed = false;
        let mut ex = |s: &str| -> Result<String> {
            let out = vars::expand(s, &lookup).map_err(|e| e.with_label(label))?;
            if let std::borrow::Cow::Owned(o) = out {
                changed = true;
                Ok(o)
            } else {
                Ok(s.to_owned())
            }
        };
        let expanded = match self {
            Action::Command(c) => {
                if !needs_expansion(c) {
                    return Ok(None);
                }
                let mut c = c.clone();
                c.cmd = ex(&c.cmd)?;
                for out in [&mut c.stdout, &mut c.stderr] {
                    if let OutputKind::File { path, .. } = &mut out.0 {
                        *path = ex(path)?;
                    }
                }
                if let StdinKind::File(path) = &mut c.stdin.0 {
                    *path = ex(path)?;
                }
                for (_, v) in &mut c.env {
                    *v = ex(v)?;
                }
                Action::Command(c)
            }
            Action::ScpGet(ScpGet(t)) => Action::ScpGet(ScpGet(expand_transfer(t, &mut ex)?)),
            Action::ScpPut(ScpPut(t)) => Action::ScpPut(ScpPut(expand_transfer(t, &mut ex)?)),
            Action::RsyncGet(RsyncGet(t)) => Action::RsyncGet(RsyncGet(expand_transfer(t, &mut ex)?)),
            Action::RsyncPut(RsyncPut(t)) => Action::RsyncPut(RsyncPut(expand_transfer(t, &mut ex)?)),
            _ => return Ok(None),
        };
        Ok(changed.then_some(expanded))
    }
}

fn needs_expansion(c: &Command) -> bool {
    let file_has = |o: &Output| matches!(&o.0, OutputKind::File { path, .. } if path.contains('%'));
    c.cmd.contains('%')
        || file_has(&c.stdout)
        || file_has(&c.stderr)
        || matches!(&c.stdin.0, StdinKind::File(p) if p.contains('%'))
        || c.env.iter().any(|(_, v)| v.contains('%'))
}

fn expand_transfer(t: &Transfer, ex: &mut dyn FnMut(&str) -> Result<String>) -> Result<Transfer> {
    let mut t = t.clone();
    for s in &mut t.sources {
        *s = ex(s)?;
    }
    t.target = ex(&t.target)?;
    Ok(t)
}
