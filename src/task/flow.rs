//! The steps that shape a queue rather than do work: [`Join`], [`Here`],
//! [`Goto`], [`Stop`], and [`Connect`] (connects, runs nothing).
//!
//! Invariant: none of these needs a connection or a worker slot; the
//! scheduler performs them itself (`Class::Local`), except `Connect`.

use super::TaskOptions;

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
