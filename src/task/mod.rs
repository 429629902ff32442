//! The task API: what a user pushes. The action types and the [`Action`]
//! enum they convert into, the options every task takes, where output goes
//! ([`output`]), `%VAR%` expansion ([`vars`], [`expand`]), and the closures
//! `Sub` and `Parsub` with what they see ([`SubContext`], a `Session`), and
//! the shared [`JobQueue`] with the [`Drain`] task that takes from it (`jobs`).
//!
//! Invariant: an action is plain data once built; nothing here runs it.
//! `check` and `expand_for` are pure, so `plan::Plan::push` can prepare every
//! label's copy before it appends anything.
//!
//! May use: `error`, `host` (variables), `policy` (`OnError`), `report`
//! (`TaskReport` for `on_done`), `session` (the `Parsub` closure's argument)
//! and `plan`, only from `SubContext`, which pushes actions: the one intended
//! cycle (an action holds a Sub closure that pushes actions).

mod action;
mod closure;
mod command;
mod expand;
mod flow;
mod jobs;
mod options;
pub(crate) mod output;
mod paths;
mod transfer;
pub(crate) mod vars;

pub use action::Action;
pub(crate) use action::Class;
pub use closure::{Parsub, Sub, SubContext};
pub use command::Command;
pub use flow::{Connect, Goto, Here, Join, Stop};
pub use jobs::{Drain, JobQueue};
pub(crate) use jobs::{QueuedJob, Take};
pub use options::DoneFn;
pub(crate) use options::TaskOptions;
pub(crate) use transfer::Transfer;
pub(crate) use transfer::{contents_only, into_dir, parent_and_name, source_name};
pub use transfer::{RsyncGet, RsyncPut, ScpGet, ScpPut, TransferProtocol};
