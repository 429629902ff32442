//! The source side of an SCP transfer (this machine sends): local sources
//! become `T`, `C` (with the file's data) and `D` ... `E` records, each
//! acknowledged by the remote `scp -t` before the next.
//!
//! Invariant: a directory is sent only with `recursive`, its entries sorted
//! by name; a file is sent in chunks of at most `SCP_CHUNK` bytes, and one
//! that shrinks while it is sent fails the transfer.
//!
//! May use: its parent `scp`.

use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{remote_quote, Scp, ScpDir, ScpStep, SCP_CHUNK};
use crate::task::{contents_only, into_dir, parent_and_name, source_name, Transfer};
use crate::transport::protocol::TransportError;

/// The source side (this machine sends).
pub(super) struct PutState {
    recursive: bool,
    /// What remains to send, last item first.
    stack: Vec<PutItem>,
    step: PutStep,
}

enum PutItem {
    /// A local path not yet looked at, and the name its record takes if not
    /// its own.
    Path(PathBuf, Option<Vec<u8>>),
    /// A local directory whose entries are sent, not itself.
    Contents(PathBuf),
    /// A record line, acknowledged by the sink; the path names it in errors.
    Line(Vec<u8>, PathBuf),
    /// A file's contents (announced by the preceding `C` line).
    Data(std::fs::File, u64, PathBuf),
}

enum PutStep {
    /// Waiting for the sink's answer about the path (`None`: its first `\0`).
    Ack(Option<PathBuf>),
    Next,
    Data {
        file: std::fs::File,
        left: u64,
        path: PathBuf,
    },
    Done,
}

impl Scp {
    /// `ScpPut`: checks the local sources, then runs `scp -t` where the
    /// destination rule (see `task::transfer`) puts the copy: into the target
    /// (`-d`), or into the target's parent under the target's own name, so
    /// that a directory becomes the target whether it exists or not.
    pub(super) fn put(t: &Transfer) -> Result<Scp, TransportError> {
        let fail = |m: String| TransportError::Transfer(m);
        if t.sources.is_empty() {
            return Err(fail("scp_put: no source given".into()));
        }
        let mut metas = Vec::with_capacity(t.sources.len());
        for src in &t.sources {
            let meta = std::fs::metadata(src).map_err(|e| fail(format!("{src}: {e}")))?;
            if meta.is_dir() && !t.recursive {
                return Err(fail(format!("{src}: is a directory (use .recursive(true))")));
            }
            metas.push(meta.is_dir());
        }
        let quote = |p: &str| remote_quote(p).map_err(fail);
        let mut stack = Vec::new();
        let mut cmd = String::new();
        let sink_dir = |cmd: &mut String, dir: &str| -> Result<(), TransportError> {
            if t.create_dirs && !matches!(dir, "." | "~" | "/") {
                cmd.push_str(&format!("mkdir -p -- {} && ", quote(dir)?));
            }
            Ok(())
        };
        let sink_target;
        let mut must_be_dir = false;
        if into_dir(t) {
            sink_dir(&mut cmd, &t.target)?;
            sink_target = t.target.clone();
            must_be_dir = true;
            for (src, &is_dir) in t.sources.iter().zip(&metas) {
                if is_dir && contents_only(src) {
                    stack.push(PutItem::Contents(PathBuf::from(src)));
                } else if source_name(src).is_none() {
                    return Err(fail(format!("{src}: has no file name to copy into {}", t.target)));
                } else {
                    stack.push(PutItem::Path(PathBuf::from(src), None));
                }
            }
        } else {
            let src = PathBuf::from(&t.sources[0]);
            match parent_and_name(&t.target) {
                Some((parent, name)) if metas[0] => {
                    // The copy of a directory *is* the target: sent under
                    // the target's name into its parent, so the sink makes
                    // or enters it.
                    sink_dir(&mut cmd, parent)?;
                    sink_target = parent.to_owned();
                    stack.push(PutItem::Path(src, Some(name.as_bytes().to_vec())));
                }
                None if metas[0] => {
                    // `~`, `/`, `.`: an existing directory, filled as is.
                    sink_target = t.target.clone();
                    must_be_dir = true;
                    stack.push(PutItem::Contents(src));
                }
                parent => {
                    if let Some((parent, _)) = parent {
                        sink_dir(&mut cmd, parent)?;
                    }
                    sink_target = t.target.clone();
                    stack.push(PutItem::Path(src, None));
                }
            }
        }
        cmd.push_str("scp -t -p");
        if t.recursive {
            cmd.push_str(" -r");
        }
        if must_be_dir {
            // The sink insists that the target is a directory.
            cmd.push_str(" -d");
        }
        cmd.push_str(" -- ");
        cmd.push_str(&quote(&sink_target)?);
        stack.reverse();
        Ok(Scp::new(
            cmd,
            ScpDir::Put(PutState {
                recursive: t.recursive,
                stack,
                step: PutStep::Ack(None),
            }),
        ))
    }

    pub(super) fn advance_put(&mut self, p: &mut PutState) -> Result<ScpStep, String> {
        match &mut p.step {
            PutStep::Ack(path) => match self.response()? {
                None => Ok(ScpStep::NeedInput),
                Some(Ok(())) => {
                    p.step = PutStep::Next;
                    Ok(ScpStep::Progress)
                }
                Some(Err(msg)) => Err(match path {
                    Some(path) => format!("{}: remote scp: {msg}", path.display()),
                    None => format!("remote scp: {msg}"),
                }),
            },
            PutStep::Next => {
                match p.stack.pop() {
                    None => {
                        p.step = PutStep::Done;
                        return Ok(ScpStep::Done);
                    }
                    Some(PutItem::Line(line, path)) => {
                        self.out.extend_from_slice(&line);
                        p.step = PutStep::Ack(Some(path));
                    }
                    Some(PutItem::Data(file, left, path)) => p.step = PutStep::Data { file, left, path },
                    Some(PutItem::Path(path, name)) => {
                        let items = put_items(&path, name, p.recursive)?;
                        p.stack.extend(items.into_iter().rev());
                    }
                    Some(PutItem::Contents(path)) => {
                        let entries = sorted_entries(&path)?;
                        p.stack
                            .extend(entries.into_iter().rev().map(|e| PutItem::Path(e, None)));
                    }
                }
                Ok(ScpStep::Progress)
            }
            PutStep::Data { file, left, path } => {
                if *left == 0 {
                    // The source's "file sent" status.
                    self.out.push(0);
                    p.step = PutStep::Ack(Some(std::mem::take(path)));
                    return Ok(ScpStep::Progress);
                }
                let n = (*left).min(SCP_CHUNK as u64) as usize;
                self.out.resize(n, 0);
                let got = loop {
                    match file.read(&mut self.out[..n]) {
                        Ok(got) => break got,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(format!("{}: {e}", path.display())),
                    }
                };
                if got == 0 {
                    return Err(format!("{}: the file shrank while it was being sent", path.display()));
                }
                self.out.truncate(got);
                *left -= got as u64;
                Ok(ScpStep::Progress)
            }
            PutStep::Done => Ok(ScpStep::Done),
        }
    }
}

impl PutState {
    pub(super) fn empty() -> PutState {
        PutState {
            recursive: false,
            stack: Vec::new(),
            step: PutStep::Done,
        }
    }
}

/// The records that send one local path: `T` and `C` plus its data, or `T`,
/// `D`, its entries (sorted by name) and `E`.
fn put_items(path: &Path, name: Option<Vec<u8>>, recursive: bool) -> Result<Vec<PutItem>, String> {
    let shown = || path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", shown()))?;
    let own = || {
        path.file_name()
            .map(|n| n.as_bytes().to_vec())
            .ok_or_else(|| format!("{}: has no file name", shown()))
    };
    let name = match name {
        Some(name) => name,
        None => own()?,
    };
    let name = name.as_slice();
    if name.contains(&b'\n') {
        return Err(format!("{}: a file name with a newline cannot be sent by scp", shown()));
    }
    let times = format!("T{} 0 {} 0\n", meta.mtime().max(0), meta.atime().max(0)).into_bytes();
    let mode = meta.mode() & 0o7777;
    let mut items = vec![PutItem::Line(times, path.to_path_buf())];
    let record = |kind: char, size: u64| {
        let mut l = format!("{kind}{mode:04o} {size} ").into_bytes();
        l.extend_from_slice(name);
        l.push(b'\n');
        l
    };
    if meta.is_dir() {
        if !recursive {
            return Err(format!("{}: is a directory (use .recursive(true))", shown()));
        }
        let entries = sorted_entries(path)?;
        items.push(PutItem::Line(record('D', 0), path.to_path_buf()));
        items.extend(entries.into_iter().map(|e| PutItem::Path(e, None)));
        items.push(PutItem::Line(b"E\n".to_vec(), path.to_path_buf()));
    } else if meta.is_file() {
        let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", shown()))?;
        let size = file.metadata().map_err(|e| format!("{}: {e}", shown()))?.len();
        items.push(PutItem::Line(record('C', size), path.to_path_buf()));
        items.push(PutItem::Data(file, size, path.to_path_buf()));
    } else {
        return Err(format!("{}: not a regular file", shown()));
    }
    Ok(items)
}

/// A directory's entries, sorted by name.
fn sorted_entries(path: &Path) -> Result<Vec<PathBuf>, String> {
    let mut entries = std::fs::read_dir(path)
        .and_then(|rd| rd.map(|e| e.map(|e| e.path())).collect::<io::Result<Vec<_>>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    entries.sort();
    Ok(entries)
}
