//! The file transfers: [`ScpGet`], [`ScpPut`], [`RsyncGet`], [`RsyncPut`],
//! four names over one [`Transfer`] body, the [`TransferProtocol`] a copy
//! runs over, and the destination rule every copy follows (local, SCP, SFTP).
//! A transfer has at least one source and a target, none empty, and its
//! local side valid UTF-8 (`Action::check`). Local paths are taken as
//! `impl Into<PathBuf>`, remote ones as `impl Into<String>` (see `paths`).
//!
//! Invariant: where a copy lands depends only on the call and on what the
//! target is before the copy (missing, a directory, something else), in a way
//! that makes the same call twice give the same tree ([`into_dir`],
//! [`contents_only`], [`source_name`], [`parent_and_name`] are the one place
//! that says how).

use std::path::PathBuf;

use super::{paths, TaskOptions};

/// What an [`ScpPut`] or [`ScpGet`] runs over on an SSH host (a local host
/// copies files itself either way).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransferProtocol {
    /// The SCP protocol, spoken with the host's `scp` program (`scp -t` /
    /// `scp -f`): the fastest, but it needs `scp` on the host.
    #[default]
    Scp,
    /// The host's `sftp` subsystem (libssh2's SFTP, several requests in
    /// flight): for hosts without an `scp` binary, or that allow only SFTP.
    Sftp,
}

/// Shared body of the scp and rsync actions.
#[derive(Clone, Debug)]
pub(crate) struct Transfer {
    /// At least one, none empty (`Action::check`).
    pub(crate) sources: Vec<String>,
    /// Not empty; a trailing `/` makes it a directory to copy into.
    pub(crate) target: String,
    /// Directories are copied with their contents (else they are refused).
    pub(crate) recursive: bool,
    /// rsync's extra arguments (empty for scp).
    pub(crate) args: Vec<String>,
    /// Missing parent directories of where the copy lands are created.
    pub(crate) create_dirs: bool,
    /// `None`: the builder's default ([`ParallelBuilder::transfer_protocol`](crate::ParallelBuilder::transfer_protocol)).
    pub(crate) protocol: Option<TransferProtocol>,
    pub(crate) opts: TaskOptions,
}

impl Transfer {
    fn new(source: String, target: String) -> Transfer {
        Transfer {
            sources: vec![source],
            target,
            recursive: false,
            args: Vec::new(),
            create_dirs: false,
            protocol: None,
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
    /// Copies files from the host to this machine with scp (or SFTP: see
    /// [`protocol`](Self::protocol)); modes and times are kept.
    ///
    /// Where the copy lands is the same rule as [`ScpPut`]'s, with the sides swapped.
    ScpGet, "remote": String => remote, "local": PathBuf => paths::local
);
transfer_action!(
    /// Copies files from this machine to the host with scp (or SFTP: see
    /// [`protocol`](Self::protocol)); modes and times are kept.
    ///
    /// # Where the copy lands
    ///
    /// The same call twice gives the same tree (unlike `cp -r` and `scp -r`,
    /// whose second copy of a directory nests inside the first):
    ///
    /// * **Into a directory**, when the target ends in `/` or there are several
    ///   sources: each source lands as `target/<its name>`. A directory source
    ///   whose path ends in `/` copies its *contents* into `target` (rsync's
    ///   rule). The target must be a directory (with
    ///   [`create_dirs`](Self::create_dirs), it and its parents are created).
    /// * **To a name**, otherwise (one source, a target without a trailing `/`):
    ///   a directory source *becomes* `target`: its contents are copied into
    ///   `target`, created if missing and merged into if it exists, whether
    ///   or not the source ends in `/`, and `target` takes the source's mode and
    ///   times (parallel-ssh's `copy_file(recurse=True)`). A file source is
    ///   written to `target`, or to `target/<its name>` if `target` is an
    ///   existing directory.
    ///
    /// So `ScpPut::new("conf", "/etc/app")` makes `/etc/app` a copy of `conf`,
    /// and `ScpPut::new("conf", "/etc/app/")` gives `/etc/app/conf`.
    /// A missing parent directory is an error naming it, unless
    /// [`create_dirs`](Self::create_dirs).
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

macro_rules! copy_options {
    ($($name:ident),*) => {$(
        impl $name {
            /// Creates the missing directories on the way to where the copy
            /// lands (like parallel-ssh's `copy_file` and `mkdir -p`); without
            /// it a missing parent directory fails the copy.
            pub fn create_dirs(mut self, on: bool) -> Self {
                self.0.create_dirs = on;
                self
            }
            /// Runs the copy over `protocol` on an SSH host (default: the
            /// builder's [`transfer_protocol`](crate::ParallelBuilder::transfer_protocol),
            /// itself SCP by default). The destination rule, modes, times and
            /// errors are the same with either.
            pub fn protocol(mut self, protocol: TransferProtocol) -> Self {
                self.0.protocol = Some(protocol);
                self
            }
            /// Short for `.protocol(TransferProtocol::Sftp)`.
            pub fn sftp(self) -> Self {
                self.protocol(TransferProtocol::Sftp)
            }
        }
    )*};
}
copy_options!(ScpGet, ScpPut);

/// Whether the target is a directory to copy into (a trailing `/`, or
/// several sources) rather than the name the copy takes.
pub(crate) fn into_dir(t: &Transfer) -> bool {
    t.sources.len() > 1 || t.target.ends_with('/')
}

/// Whether a directory source stands for its contents (a trailing `/`).
pub(crate) fn contents_only(source: &str) -> bool {
    source.len() > 1 && source.ends_with('/')
}

/// The name a source's copy takes in a directory: its last component, trailing
/// `/` removed; `None` for one that names no entry (`/`, `.`, `..`, `~`).
pub(crate) fn source_name(source: &str) -> Option<&str> {
    let trimmed = source.trim_end_matches('/');
    let last = trimmed.rsplit('/').next().unwrap_or(trimmed);
    if matches!(last, "" | "." | "..") || (last == "~" && !trimmed.contains('/')) {
        return None;
    }
    Some(last)
}

/// A target split into the directory holding it and its own name (`.` for a
/// bare relative name); `None` when it has no name of its own (`/`, `~`, `.`,
/// `..`, a trailing `/`).
pub(crate) fn parent_and_name(target: &str) -> Option<(&str, &str)> {
    if target.ends_with('/') {
        return None;
    }
    let name = source_name(target)?;
    let parent = match target.rsplit_once('/') {
        Some(("", _)) => "/",
        Some((parent, _)) => parent,
        None => ".",
    };
    Some((parent, name))
}

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

#[cfg(test)]
mod tests {
    use super::{contents_only, parent_and_name, source_name};

    #[test]
    fn names_and_parents_follow_the_destination_rule() {
        assert_eq!(source_name("/srv/data/"), Some("data"));
        assert_eq!(source_name("a.txt"), Some("a.txt"));
        assert_eq!(source_name("dir/~"), Some("~"));
        for none in ["/", ".", "dir/..", "~", "~/", ""] {
            assert_eq!(source_name(none), None, "{none:?}");
        }
        assert_eq!(parent_and_name("/srv/app"), Some(("/srv", "app")));
        assert_eq!(parent_and_name("/app"), Some(("/", "app")));
        assert_eq!(parent_and_name("app"), Some((".", "app")));
        assert_eq!(parent_and_name("~/app"), Some(("~", "app")));
        assert_eq!(parent_and_name("/srv/app/"), None);
        assert_eq!(parent_and_name("~"), None);
        assert!(contents_only("dir/") && !contents_only("dir") && !contents_only("/"));
    }
}
