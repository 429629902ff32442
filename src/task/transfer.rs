//! The file transfers: [`ScpGet`], [`ScpPut`], [`RsyncGet`], [`RsyncPut`],
//! four names over one [`Transfer`] body. A transfer has at least one source
//! and a target, none empty, and its local side valid UTF-8 (`Action::check`).
//! Local paths are taken as `impl Into<PathBuf>`, remote ones as
//! `impl Into<String>` (see `paths`).

use std::path::PathBuf;

use super::{paths, TaskOptions};

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

/// A remote path as text.
fn remote(path: impl Into<String>) -> String {
    path.into()
}

macro_rules! transfer_action {
    ($(#[$doc:meta])* $name:ident, $from:literal: $src:ty => $src_text:path, $to:literal: $dst:ty => $dst_text:path) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub struct $name(pub(crate) Transfer);

        impl $name {
            #[doc = concat!("Copies ", $from, " path `source` to ", $to, " path `target`.")]
            pub fn new(source: impl Into<$src>, target: impl Into<$dst>) -> Self {
                $name(Transfer::new($src_text(source), $dst_text(target)))
            }
            #[doc = concat!("Copies several ", $from, " paths into the ", $to, " directory `target`.")]
            pub fn many<I, S>(sources: I, target: impl Into<$dst>) -> Self
            where
                I: IntoIterator<Item = S>,
                S: Into<$src>,
            {
                let mut t = Transfer::new(String::new(), $dst_text(target));
                t.sources = sources.into_iter().map($src_text).collect();
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
    ScpGet, "remote": String => remote, "local": PathBuf => paths::local
);
transfer_action!(
    /// Copies files from this machine to the host with scp (modes and times kept).
    ScpPut, "local": PathBuf => paths::local, "remote": String => remote
);
transfer_action!(
    /// Copies files from the host to this machine with rsync, over the label's own connection.
    RsyncGet, "remote": String => remote, "local": PathBuf => paths::local
);
transfer_action!(
    /// Copies files from this machine to the host with rsync, over the label's own connection.
    RsyncPut, "local": PathBuf => paths::local, "remote": String => remote
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
