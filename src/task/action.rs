//! [`Action`]: every action type converted into one enum, and what the plan
//! and the scheduler ask of an action: its options, its [`Class`], a
//! description, and the checks that need no label.
//!
//! Invariant: `Action::check` runs at push, before any label is known, and
//! the scheduler relies on what it guarantees (non-empty tags, `or_goto`
//! only on remote tasks, non-empty transfer paths, UTF-8 local paths).

use super::output::{Output, OutputKind, StdinKind};
use super::{paths, TaskOptions, Transfer, TransferProtocol};
use super::{Command, Connect, Drain, Goto, Here, Join, Parsub, RsyncGet, RsyncPut, ScpGet, ScpPut, Stop, Sub};
use crate::error::{Error, ErrorKind, Result};

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
    /// See [`Drain`].
    Drain(Drain),
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
into_action!(Command, ScpGet, ScpPut, RsyncGet, RsyncPut, Sub, Parsub, Join, Here, Goto, Stop, Connect, Drain);

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
            Action::Here(_) | Action::Stop(_) | Action::Drain(_) => return None,
        })
    }

    /// What an scp copy runs over: its own protocol, else `default` (the
    /// builder's); anything else says [`TransferProtocol::Scp`], unused.
    pub(crate) fn transfer_protocol(&self, default: TransferProtocol) -> TransferProtocol {
        match self {
            Action::ScpGet(ScpGet(t)) | Action::ScpPut(ScpPut(t)) => t.protocol.unwrap_or(default),
            _ => TransferProtocol::Scp,
        }
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
            Action::Sub(_)
            | Action::Join(_)
            | Action::Here(_)
            | Action::Goto(_)
            | Action::Stop(_)
            | Action::Drain(_) => Class::Local,
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
            Action::Drain(d) => format!("drain job queue #{}", d.queue.id()),
        }
    }

    /// The paths on this machine that the action names (before expansion).
    fn local_paths(&self) -> Vec<&str> {
        match self {
            Action::ScpGet(ScpGet(t)) | Action::RsyncGet(RsyncGet(t)) => vec![&t.target],
            Action::ScpPut(ScpPut(t)) | Action::RsyncPut(RsyncPut(t)) => t.sources.iter().map(String::as_str).collect(),
            Action::Command(c) => {
                fn file(o: &Output) -> Option<&str> {
                    match &o.0 {
                        OutputKind::File { path, .. } => Some(path),
                        _ => None,
                    }
                }
                let stdin = match &c.stdin.0 {
                    StdinKind::File(path) => Some(path.as_str()),
                    _ => None,
                };
                [file(&c.stdout), file(&c.stderr), stdin]
                    .into_iter()
                    .flatten()
                    .collect()
            }
            _ => Vec::new(),
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
        for path in self.local_paths() {
            paths::check_local(path)
                .map_err(|e| Error::new(e.kind(), format!("{}: {}", self.describe(), e.detail())))?;
        }
        Ok(())
    }
}
