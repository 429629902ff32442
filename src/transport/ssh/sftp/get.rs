//! The receiving side of an SFTP transfer: remote sources become local
//! files and directories where the destination rule (see `task::transfer`)
//! puts them, with their modes and times.
//!
//! The server is not trusted to name only what was asked for: this side
//! chooses every local path itself, and a directory entry whose name is not
//! one plain path component (empty, `.`, `..`, or with a `/`) fails the
//! transfer before anything is created for it.
//!
//! Invariant: exactly one SFTP operation is pending at a time (`op`), and a
//! step repeats it unchanged until libssh2 completes it; a directory's mode
//! and times are set after its contents, and never on an existing directory
//! that only takes a source's contents.
//!
//! May use: its parent `sftp`, `transport::local` (the local target's preparation).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use ssh2::{FileStat, Session, Sftp};

use super::{
    answered, io_call, not_found, remote_join, remote_path, set_local_attrs, sftp_call, Fail, Held, READ_BUFFER,
};
use crate::task::{contents_only, into_dir, source_name, Transfer};
use crate::transport::libssh2::{is_socket_error, would_block};
use crate::transport::local::prepare_local_target;

/// libssh2's "no more entries" from a directory read.
const LIBSSH2_ERROR_FILE: i32 = -16;

/// What remains to receive, last item first.
enum Item {
    /// The n-th source: looked up, then placed by the destination rule.
    Source(usize),
    /// A remote path (its attributes, if known without following a link)
    /// and where its copy goes; `keep`: a directory is the copy itself and
    /// takes the remote mode and times.
    Path {
        remote: String,
        local: PathBuf,
        stat: Option<FileStat>,
        keep: bool,
    },
    /// A copied directory is complete: its mode and times.
    DirDone(PathBuf, FileStat),
}

/// The pending SFTP operation.
enum Op {
    Next,
    /// Looking a path up (following links): for a source, or for a
    /// directory entry that is a link.
    Stat {
        remote: String,
        source: Option<usize>,
        local: PathBuf,
    },
    OpenDir {
        remote: String,
        local: PathBuf,
    },
    ReadDir(Box<Listing>),
    OpenFile {
        remote: String,
        local: PathBuf,
        file: std::fs::File,
        stat: FileStat,
    },
    Read(Box<Download>),
    /// An open that completed after the transfer was abandoned (see
    /// [`GetJob::settle`]): only its close is left.
    Opened(Held<ssh2::File>),
    Done,
}

/// A remote directory being read.
struct Listing {
    remote: String,
    local: PathBuf,
    handle: Held<ssh2::File>,
    entries: Vec<(String, FileStat)>,
    /// All entries read: only the close is left.
    listed: bool,
}

/// A remote file being received.
struct Download {
    remote: String,
    local: PathBuf,
    handle: Held<ssh2::File>,
    file: std::fs::File,
    buf: Vec<u8>,
    stat: FileStat,
    /// The end of the data was read: only the close is left.
    ended: bool,
}

/// An `ScpGet` over SFTP.
pub(super) struct GetJob {
    /// As given (names and messages).
    sources: Vec<String>,
    target: PathBuf,
    into: bool,
    recursive: bool,
    stack: Vec<Item>,
    op: Op,
}

impl GetJob {
    /// Checks (and with `create_dirs` makes) the local target.
    pub(super) fn new(t: &Transfer) -> Result<GetJob, String> {
        prepare_local_target(t)?;
        Ok(GetJob {
            sources: t.sources.clone(),
            target: PathBuf::from(&t.target),
            into: into_dir(t),
            recursive: t.recursive,
            stack: (0..t.sources.len()).rev().map(Item::Source).collect(),
            op: Op::Next,
        })
    }

    /// Handles still open (to close after a failure or a cancel).
    pub(super) fn take_handles(&mut self) -> Vec<Held<ssh2::File>> {
        match std::mem::replace(&mut self.op, Op::Done) {
            Op::Read(d) => vec![d.handle],
            Op::ReadDir(l) => vec![l.handle],
            Op::Opened(h) => vec![h],
            _ => Vec::new(),
        }
    }

    /// The transfer is abandoned: repeats the pending call (the one that
    /// said would-block) until it says something else, its result (data,
    /// entries) dropped; true once none is pending. An open that succeeds
    /// leaves its handle to close, a close that completes leaves nothing.
    pub(super) fn settle(&mut self, sess: &Session, sftp: &Sftp) -> Result<bool, Fail> {
        let opened = match &mut self.op {
            Op::Stat { remote, .. } => return answered(sftp.stat(Path::new(remote.as_str())), remote),
            Op::OpenDir { remote, .. } => (sftp.opendir(Path::new(remote.as_str())), &*remote),
            Op::OpenFile { remote, .. } => (sftp.open(Path::new(remote.as_str())), &*remote),
            Op::ReadDir(l) if !l.listed => return answered(l.handle.readdir(), &l.remote),
            Op::Read(d) if !d.ended => {
                let r = d.handle.read(&mut d.buf);
                return Ok(io_call(sess, r, &d.remote)?.is_some());
            }
            Op::ReadDir(l) => {
                let closed = super::close_handle(sess, &mut l.handle, &l.remote).map_err(Fail::Lost)?;
                return Ok(closed && self.closed());
            }
            Op::Read(d) => {
                let closed = super::close_handle(sess, &mut d.handle, &d.remote).map_err(Fail::Lost)?;
                return Ok(closed && self.closed());
            }
            Op::Next | Op::Opened(_) | Op::Done => return Ok(true),
        };
        match opened {
            (Ok(handle), _) => {
                self.op = Op::Opened(Held::new(sess, handle));
                Ok(true)
            }
            (r, remote) => answered(r, remote),
        }
    }

    /// The pending handle was closed: nothing is left to close. True.
    fn closed(&mut self) -> bool {
        self.op = Op::Done;
        true
    }

    /// Moves the transfer on: true when done, false if it would block.
    pub(super) fn step(&mut self, sess: &Session, sftp: &Sftp) -> Result<bool, Fail> {
        loop {
            match &mut self.op {
                Op::Next => match self.stack.pop() {
                    None => {
                        self.op = Op::Done;
                        return Ok(true);
                    }
                    Some(Item::Source(i)) => {
                        self.op = Op::Stat {
                            remote: remote_path(&self.sources[i]),
                            source: Some(i),
                            local: PathBuf::new(),
                        }
                    }
                    Some(Item::DirDone(local, stat)) => set_local_attrs(&local, &stat).map_err(Fail::Own)?,
                    Some(Item::Path {
                        remote,
                        local,
                        stat: None,
                        ..
                    }) => {
                        self.op = Op::Stat {
                            remote,
                            source: None,
                            local,
                        }
                    }
                    Some(Item::Path {
                        remote,
                        local,
                        stat: Some(stat),
                        keep,
                    }) => self.start(remote, local, stat, keep)?,
                },
                Op::Stat { remote, source, local } => {
                    let r = sftp.stat(Path::new(remote.as_str()));
                    let stat = match r {
                        Err(e) if not_found(&e) => {
                            return Err(Fail::Own(format!("{remote}: no such file or directory")));
                        }
                        r => match sftp_call(r, remote)? {
                            Some(stat) => stat,
                            None => return Ok(false),
                        },
                    };
                    let (remote, local) = (std::mem::take(remote), std::mem::take(local));
                    match *source {
                        Some(i) => self.place(i, remote, stat)?,
                        None => self.start(remote, local, stat, true)?,
                    }
                }
                Op::OpenDir { remote, local } => {
                    let r = sftp.opendir(Path::new(remote.as_str()));
                    let Some(handle) = sftp_call(r, remote)? else {
                        return Ok(false);
                    };
                    self.op = Op::ReadDir(Box::new(Listing {
                        remote: std::mem::take(remote),
                        local: std::mem::take(local),
                        handle: Held::new(sess, handle),
                        entries: Vec::new(),
                        listed: false,
                    }));
                }
                Op::ReadDir(l) => {
                    if !l.step(sess)? {
                        return Ok(false);
                    }
                    let mut entries = std::mem::take(&mut l.entries);
                    entries.sort_by(|a, b| a.0.cmp(&b.0));
                    for (name, stat) in entries.into_iter().rev() {
                        // A link is followed (as scp -r does): looked up when its turn comes.
                        let stat = (!stat.file_type().is_symlink()).then_some(stat);
                        self.stack.push(Item::Path {
                            remote: remote_join(&l.remote, &name),
                            local: l.local.join(&name),
                            stat,
                            keep: true,
                        });
                    }
                    self.op = Op::Next;
                }
                Op::OpenFile { remote, .. } => {
                    let r = sftp.open(Path::new(remote.as_str()));
                    let Some(handle) = sftp_call(r, remote)? else {
                        return Ok(false);
                    };
                    let Op::OpenFile {
                        remote,
                        local,
                        file,
                        stat,
                    } = std::mem::replace(&mut self.op, Op::Done)
                    else {
                        unreachable!("matched above")
                    };
                    self.op = Op::Read(Box::new(Download {
                        remote,
                        local,
                        handle: Held::new(sess, handle),
                        file,
                        buf: vec![0; READ_BUFFER],
                        stat,
                        ended: false,
                    }));
                }
                Op::Read(d) => {
                    if !d.step(sess)? {
                        return Ok(false);
                    }
                    set_local_attrs(&d.local, &d.stat).map_err(Fail::Own)?;
                    self.op = Op::Next;
                }
                Op::Opened(_) | Op::Done => return Ok(true),
            }
        }
    }

    /// Where source `i` (found to be `stat`) lands, by the destination rule.
    fn place(&mut self, i: usize, remote: String, stat: FileStat) -> Result<(), Fail> {
        let src = &self.sources[i];
        let is_dir = stat.is_dir();
        if is_dir && !self.recursive {
            return Err(Fail::Own(format!("{src}: is a directory (use .recursive(true))")));
        }
        let named = || {
            source_name(src).map(|name| self.target.join(name)).ok_or_else(|| {
                Fail::Own(format!(
                    "{src}: has no file name to copy into {}",
                    self.target.display()
                ))
            })
        };
        let (local, keep) = if self.into {
            if is_dir && contents_only(src) {
                (self.target.clone(), false)
            } else {
                (named()?, true)
            }
        } else if !is_dir && self.target.is_dir() {
            (named()?, true)
        } else {
            (self.target.clone(), true)
        };
        self.start(remote, local, stat, keep)
    }

    /// Starts receiving `remote` (found to be `stat`) into `local`.
    fn start(&mut self, remote: String, local: PathBuf, stat: FileStat, keep: bool) -> Result<(), Fail> {
        let shown = || local.display().to_string();
        if stat.is_dir() {
            if !self.recursive {
                return Err(Fail::Own(format!("{remote}: is a directory (use .recursive(true))")));
            }
            if local.exists() {
                if !local.is_dir() {
                    return Err(Fail::Own(format!("{}: not a directory", shown())));
                }
            } else {
                std::fs::create_dir(&local).map_err(|e| Fail::Own(format!("{}: {e}", shown())))?;
            }
            if keep {
                self.stack.push(Item::DirDone(local.clone(), stat));
            }
            self.op = Op::OpenDir { remote, local };
        } else if stat.is_file() {
            let file = std::fs::File::options()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&local)
                .map_err(|e| Fail::Own(format!("{}: {e}", shown())))?;
            self.op = Op::OpenFile {
                remote,
                local,
                file,
                stat,
            };
        } else {
            return Err(Fail::Own(format!("{remote}: not a regular file")));
        }
        Ok(())
    }
}

impl Listing {
    /// Reads the directory: true once every entry is read and the handle closed.
    fn step(&mut self, sess: &Session) -> Result<bool, Fail> {
        while !self.listed {
            match self.handle.readdir() {
                Ok((name, stat)) => {
                    let name = name.to_string_lossy().into_owned();
                    if name == "." || name == ".." {
                        continue;
                    }
                    if name.is_empty() || name.contains('/') {
                        return Err(Fail::Own(format!(
                            "{}: the server listed an unsafe file name {name:?}",
                            self.remote
                        )));
                    }
                    self.entries.push((name, stat));
                }
                Err(e) if e.code() == ssh2::ErrorCode::Session(LIBSSH2_ERROR_FILE) => self.listed = true,
                Err(e) if would_block(&e) => return Ok(false),
                Err(e) if is_socket_error(&e) => return Err(Fail::Lost(format!("{}: {e}", self.remote))),
                Err(e) => return Err(Fail::Own(format!("{}: {}", self.remote, e.message()))),
            }
        }
        super::close_handle(sess, &mut self.handle, &self.remote).map_err(Fail::Lost)
    }
}

impl Download {
    /// Receives the file: true once all of it is written here and the remote handle closed.
    fn step(&mut self, sess: &Session) -> Result<bool, Fail> {
        while !self.ended {
            let r = self.handle.read(&mut self.buf);
            match io_call(sess, r, &self.remote)? {
                None => return Ok(false),
                Some(0) => self.ended = true,
                Some(n) => self
                    .file
                    .write_all(&self.buf[..n])
                    .map_err(|e| Fail::Own(format!("{}: {e}", self.local.display())))?,
            }
        }
        super::close_handle(sess, &mut self.handle, &self.remote).map_err(Fail::Lost)
    }
}
