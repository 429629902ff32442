//! The sending side of an SFTP transfer: local sources become remote files
//! and directories where the destination rule (see `task::transfer`) puts
//! them, with their modes and times.
//!
//! Invariant: exactly one SFTP operation is pending at a time (`op`), and a
//! step repeats it unchanged until libssh2 completes it; a directory's mode
//! and times are set after its contents (a read-only directory still takes
//! them); a file that shrinks while it is sent fails the transfer.
//!
//! May use: its parent `sftp`.

use std::io::Read;
use std::path::{Path, PathBuf};

use ssh2::{OpenFlags, OpenType, Session, Sftp};

use super::{
    answered, io_call, local_mode_and_times, mode_and_times, not_found, remote_join, remote_path, sftp_call, Fail,
    Held, WRITE_BUFFER,
};
use crate::task::{contents_only, into_dir, parent_and_name, source_name, Transfer};
use crate::transport::libssh2::{is_socket_error, would_block};

/// What remains to send, last item first.
enum Item {
    /// A local path and where its copy goes.
    Path(PathBuf, String),
    /// A local directory whose entries go into the remote directory.
    Contents(PathBuf, String),
    /// A copied directory is complete: its mode and times.
    DirDone(String, ssh2::FileStat),
}

/// The pending SFTP operation.
enum Op {
    /// `create_dirs`: each missing directory on the way (errors are left to
    /// the operations that need them).
    MakeParents(Vec<String>),
    /// What the target is: decides where each source lands.
    StatTarget,
    Next,
    /// Creating a directory of the copy (an existing directory is entered).
    MakeDir(String),
    /// Its creation failed: is it there already, as a directory?
    CheckDir(String, String),
    Open {
        local: PathBuf,
        file: std::fs::File,
        left: u64,
        remote: String,
        attrs: (u32, u64, u64),
    },
    Write(Box<Upload>),
    SetDir(String, ssh2::FileStat),
    /// An open that completed after the transfer was abandoned (see
    /// [`PutJob::settle`]): only its close is left.
    Opened(Held<ssh2::File>),
    Done,
}

/// A file being sent.
pub(super) struct Upload {
    local: PathBuf,
    remote: String,
    file: std::fs::File,
    /// Bytes of the file still to read.
    left: u64,
    handle: Held<ssh2::File>,
    /// Data offered to libssh2 from `start` on: libssh2 remembers what of it
    /// it has sent already, so the unacknowledged part is offered again,
    /// unchanged, with more behind it.
    buf: Vec<u8>,
    start: usize,
    attrs: (u32, u64, u64),
    /// The data is acknowledged and the mode and times are set: only the close is left.
    written: bool,
}

/// An `ScpPut` over SFTP.
pub(super) struct PutJob {
    sources: Vec<(PathBuf, bool)>,
    /// As the sftp subsystem takes it (see `remote_path`).
    target: String,
    into: bool,
    recursive: bool,
    stack: Vec<Item>,
    op: Op,
}

impl PutJob {
    /// Checks the local sources (a directory needs `recursive`).
    pub(super) fn new(t: &Transfer) -> Result<PutJob, String> {
        let mut sources = Vec::with_capacity(t.sources.len());
        for src in &t.sources {
            let meta = std::fs::metadata(src).map_err(|e| format!("{src}: {e}"))?;
            if meta.is_dir() && !t.recursive {
                return Err(format!("{src}: is a directory (use .recursive(true))"));
            }
            sources.push((PathBuf::from(src), meta.is_dir()));
        }
        let into = into_dir(t);
        let target = remote_path(&t.target);
        let mut parents = Vec::new();
        if t.create_dirs {
            let landing = if into {
                Some(target.trim_end_matches('/'))
            } else {
                parent_and_name(&target).map(|(parent, _)| parent)
            };
            if let Some(dir) = landing.filter(|d| !matches!(*d, "" | "." | "/")) {
                parents = ancestors(dir);
            }
        }
        Ok(PutJob {
            sources,
            target,
            into,
            recursive: t.recursive,
            stack: Vec::new(),
            op: if parents.is_empty() {
                Op::StatTarget
            } else {
                Op::MakeParents(parents)
            },
        })
    }

    /// Handles still open (to close after a failure or a cancel).
    pub(super) fn take_handles(&mut self) -> Vec<Held<ssh2::File>> {
        match std::mem::replace(&mut self.op, Op::Done) {
            Op::Write(up) => vec![up.handle],
            Op::Opened(h) => vec![h],
            _ => Vec::new(),
        }
    }

    /// The transfer is abandoned: repeats the pending call (the one that
    /// said would-block) until it says something else, its result dropped;
    /// true once none is pending. Data being written goes on until all of it
    /// is acknowledged: libssh2 may have sent a write request only in part,
    /// and any other request would land inside it. An open that succeeds
    /// leaves its handle to close, a close that completes leaves nothing.
    pub(super) fn settle(&mut self, sess: &Session, sftp: &Sftp) -> Result<bool, Fail> {
        let settled = match &mut self.op {
            Op::MakeParents(dirs) => match dirs.first() {
                Some(dir) => answered(sftp.mkdir(Path::new(dir), 0o755), dir)?,
                None => true,
            },
            Op::StatTarget => answered(sftp.stat(Path::new(&self.target)), &self.target)?,
            Op::MakeDir(remote) => answered(sftp.mkdir(Path::new(remote.as_str()), 0o700), remote)?,
            Op::CheckDir(remote, _) => answered(sftp.stat(Path::new(remote.as_str())), remote)?,
            Op::SetDir(remote, attrs) => answered(sftp.setstat(Path::new(remote.as_str()), attrs.clone()), remote)?,
            Op::Open { remote, attrs, .. } => {
                let flags = OpenFlags::WRITE | OpenFlags::TRUNCATE;
                match sftp.open_mode(Path::new(remote.as_str()), flags, attrs.0 as i32, OpenType::File) {
                    Ok(handle) => {
                        self.op = Op::Opened(Held::new(sess, handle));
                        true
                    }
                    r => answered(r, remote)?,
                }
            }
            Op::Write(up) if up.written => {
                let closed = super::close_handle(sess, &mut up.handle, &up.remote).map_err(Fail::Lost)?;
                if closed {
                    self.op = Op::Done;
                }
                closed
            }
            Op::Write(up) => up.settle(sess)?,
            Op::Next | Op::Opened(_) | Op::Done => true,
        };
        Ok(settled)
    }

    /// Moves the transfer on: true when done, false if it would block.
    pub(super) fn step(&mut self, sess: &Session, sftp: &Sftp) -> Result<bool, Fail> {
        loop {
            match &mut self.op {
                Op::MakeParents(dirs) => {
                    let Some(dir) = dirs.first() else {
                        self.op = Op::StatTarget;
                        continue;
                    };
                    match sftp.mkdir(Path::new(dir), 0o755) {
                        Err(e) if would_block(&e) => return Ok(false),
                        Err(e) if is_socket_error(&e) => return Err(Fail::Lost(format!("{dir}: {e}"))),
                        _ => {
                            dirs.remove(0);
                        }
                    }
                }
                Op::StatTarget => {
                    let kind = match sftp.stat(Path::new(&self.target)) {
                        Ok(st) => Some(st.is_dir()),
                        Err(e) if not_found(&e) => None,
                        r => match sftp_call(r, &self.target)? {
                            Some(st) => Some(st.is_dir()),
                            None => return Ok(false),
                        },
                    };
                    self.plan(kind)?;
                    self.op = Op::Next;
                }
                Op::Next => match self.stack.pop() {
                    None => {
                        self.op = Op::Done;
                        return Ok(true);
                    }
                    Some(Item::DirDone(remote, attrs)) => self.op = Op::SetDir(remote, attrs),
                    Some(Item::Contents(local, remote)) => {
                        for entry in sorted_entries(&local)?.into_iter().rev() {
                            let name = entry.file_name().map(|n| n.to_string_lossy().into_owned());
                            let name = name.ok_or_else(|| Fail::Own(format!("{}: no file name", entry.display())))?;
                            self.stack.push(Item::Path(entry, remote_join(&remote, &name)));
                        }
                    }
                    Some(Item::Path(local, remote)) => {
                        let meta = std::fs::metadata(&local).map_err(|e| own(&local, e))?;
                        let attrs = local_mode_and_times(&meta);
                        if meta.is_dir() {
                            if !self.recursive {
                                return Err(Fail::Own(format!(
                                    "{}: is a directory (use .recursive(true))",
                                    local.display()
                                )));
                            }
                            self.stack
                                .push(Item::DirDone(remote.clone(), mode_and_times(attrs.0, attrs.1, attrs.2)));
                            self.stack.push(Item::Contents(local, remote.clone()));
                            self.op = Op::MakeDir(remote);
                        } else if meta.is_file() {
                            let file = std::fs::File::open(&local).map_err(|e| own(&local, e))?;
                            let left = file.metadata().map_err(|e| own(&local, e))?.len();
                            self.op = Op::Open {
                                local,
                                file,
                                left,
                                remote,
                                attrs,
                            };
                        } else {
                            return Err(Fail::Own(format!("{}: not a regular file", local.display())));
                        }
                    }
                },
                Op::MakeDir(remote) => match sftp.mkdir(Path::new(remote.as_str()), 0o700) {
                    Ok(()) => self.op = Op::Next,
                    Err(e) if would_block(&e) => return Ok(false),
                    Err(e) if is_socket_error(&e) => return Err(Fail::Lost(format!("{remote}: {e}"))),
                    Err(e) => self.op = Op::CheckDir(std::mem::take(remote), e.message().to_owned()),
                },
                Op::CheckDir(remote, why) => {
                    let is_dir = match sftp.stat(Path::new(remote.as_str())) {
                        Ok(st) => Some(st.is_dir()),
                        Err(e) if not_found(&e) => None,
                        r => match sftp_call(r, remote)? {
                            Some(st) => Some(st.is_dir()),
                            None => return Ok(false),
                        },
                    };
                    match is_dir {
                        Some(true) => self.op = Op::Next,
                        Some(false) => return Err(Fail::Own(format!("{remote}: not a directory"))),
                        None => return Err(Fail::Own(format!("{remote}: cannot create the directory: {why}"))),
                    }
                }
                Op::Open { remote, attrs, .. } => {
                    let flags = OpenFlags::WRITE | OpenFlags::TRUNCATE;
                    let r = sftp.open_mode(Path::new(remote.as_str()), flags, attrs.0 as i32, OpenType::File);
                    let Some(handle) = sftp_call(r, remote)? else {
                        return Ok(false);
                    };
                    let Op::Open {
                        local,
                        file,
                        left,
                        remote,
                        attrs,
                    } = std::mem::replace(&mut self.op, Op::Done)
                    else {
                        unreachable!("matched above")
                    };
                    self.op = Op::Write(Box::new(Upload {
                        local,
                        remote,
                        file,
                        left,
                        handle: Held::new(sess, handle),
                        buf: Vec::with_capacity(WRITE_BUFFER),
                        start: 0,
                        attrs,
                        written: false,
                    }));
                }
                Op::Write(up) => {
                    if !up.step(sess)? {
                        return Ok(false);
                    }
                    self.op = Op::Next;
                }
                Op::SetDir(remote, attrs) => {
                    let r = sftp.setstat(Path::new(remote.as_str()), attrs.clone());
                    if sftp_call(r, remote)?.is_none() {
                        return Ok(false);
                    }
                    self.op = Op::Next;
                }
                Op::Opened(_) | Op::Done => return Ok(true),
            }
        }
    }

    /// Where each source lands, now that the target is known to be a
    /// directory (`Some(true)`), something else (`Some(false)`) or missing.
    fn plan(&mut self, target_kind: Option<bool>) -> Result<(), Fail> {
        let target = self.target.clone();
        if self.into {
            match target_kind {
                Some(true) => {}
                Some(false) => return Err(Fail::Own(format!("{target}: not a directory"))),
                None => {
                    return Err(Fail::Own(format!(
                        "{target}: no such directory (or use .create_dirs(true))"
                    )))
                }
            }
            for (src, is_dir) in self.sources.iter().rev() {
                let shown = src.to_string_lossy();
                if *is_dir && contents_only(&shown) {
                    self.stack.push(Item::Contents(src.clone(), target.clone()));
                    continue;
                }
                let name = source_name(&shown)
                    .ok_or_else(|| Fail::Own(format!("{shown}: has no file name to copy into {target}")))?;
                self.stack.push(Item::Path(src.clone(), remote_join(&target, name)));
            }
            return Ok(());
        }
        let (src, is_dir) = self.sources[0].clone();
        let shown = src.to_string_lossy().into_owned();
        let remote = match (is_dir, target_kind, source_name(&shown)) {
            (false, Some(true), Some(name)) => remote_join(&target, name),
            _ => target,
        };
        self.stack.push(Item::Path(src, remote));
        Ok(())
    }
}

impl Upload {
    /// Sends the file: true once its data is acknowledged, its mode and
    /// times set and its handle closed.
    fn step(&mut self, sess: &Session) -> Result<bool, Fail> {
        while !self.written {
            if self.start >= self.buf.len() / 2 && self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            self.fill()?;
            if self.start == self.buf.len() {
                let attrs = mode_and_times(self.attrs.0, self.attrs.1, self.attrs.2);
                let r = self.handle.setstat(attrs);
                if sftp_call(r, &self.remote)?.is_none() {
                    return Ok(false);
                }
                self.written = true;
                break;
            }
            let r = std::io::Write::write(&mut *self.handle, &self.buf[self.start..]);
            match io_call(sess, r, &self.remote)? {
                Some(n) => self.start += n,
                None => return Ok(false),
            }
        }
        super::close_handle(sess, &mut self.handle, &self.remote).map_err(Fail::Lost)
    }

    /// See [`PutJob::settle`]: the pending write or setstat, before the close.
    fn settle(&mut self, sess: &Session) -> Result<bool, Fail> {
        if self.start == self.buf.len() {
            // All of it was acknowledged: the setstat is what is pending.
            let attrs = mode_and_times(self.attrs.0, self.attrs.1, self.attrs.2);
            return answered(self.handle.setstat(attrs), &self.remote);
        }
        while self.start < self.buf.len() {
            let r = std::io::Write::write(&mut *self.handle, &self.buf[self.start..]);
            match io_call(sess, r, &self.remote)? {
                None | Some(0) => return Ok(false),
                Some(n) => self.start += n,
            }
        }
        Ok(true)
    }

    /// Tops the buffer up from the local file.
    fn fill(&mut self) -> Result<(), Fail> {
        while self.left > 0 && self.buf.len() < WRITE_BUFFER {
            let old = self.buf.len();
            let want = (WRITE_BUFFER - old).min(usize::try_from(self.left).unwrap_or(usize::MAX));
            self.buf.resize(old + want, 0);
            let got = loop {
                match self.file.read(&mut self.buf[old..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.buf.truncate(old);
                        return Err(own(&self.local, e));
                    }
                }
            };
            self.buf.truncate(old + got);
            if got == 0 {
                return Err(Fail::Own(format!(
                    "{}: the file shrank while it was being sent",
                    self.local.display()
                )));
            }
            self.left -= got as u64;
        }
        Ok(())
    }
}

/// A local failure, naming the path.
fn own(path: &Path, e: std::io::Error) -> Fail {
    Fail::Own(format!("{}: {e}", path.display()))
}

/// A directory's entries, sorted by name.
fn sorted_entries(path: &Path) -> Result<Vec<PathBuf>, Fail> {
    let mut entries = std::fs::read_dir(path)
        .and_then(|rd| rd.map(|e| e.map(|e| e.path())).collect::<std::io::Result<Vec<_>>>())
        .map_err(|e| own(path, e))?;
    entries.sort();
    Ok(entries)
}

/// `a/b/c` -> `a`, `a/b`, `a/b/c` (`/x/y` -> `/x`, `/x/y`).
fn ancestors(dir: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, c) in dir.char_indices() {
        if c == '/' && i > 0 {
            out.push(dir[..i].to_owned());
        }
    }
    out.push(dir.trim_end_matches('/').to_owned());
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn ancestors_come_outermost_first() {
        assert_eq!(super::ancestors("a/b/c"), ["a", "a/b", "a/b/c"]);
        assert_eq!(super::ancestors("/x/y"), ["/x", "/x/y"]);
        assert_eq!(super::ancestors("d"), ["d"]);
    }
}
