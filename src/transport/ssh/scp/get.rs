//! The sink side of an SCP transfer (this machine receives): records from
//! the remote `scp -f` become files and directories under the target, with
//! their modes and times.
//!
//! The remote scp is not trusted to send only what was asked for (the class
//! of CVE-2019-6111, where a hostile server overwrites files the user never
//! requested). The rule, as OpenSSH's fix has it and a little stricter:
//!
//! * every received name is one path component: not empty, `.` or `..`,
//!   and without `/`;
//! * the top-level records (`C` or `D` outside any `D`) answer the sources
//!   one by one, in order, since the sources are quoted and the remote shell
//!   expands nothing: a top-level record beyond the last source is refused,
//!   and its name must be the source's last component (trailing `/`
//!   removed) unless that cannot be known here (`~`, `.` or `..`);
//! * a `D` record is refused unless the get is recursive; inside a `D`,
//!   any number of `C`, `D` and `E` records may come (all land under it);
//! * an `E` must close an open `D`; `T` records only set the next times.
//!
//! Invariant: a record is checked against the rule before anything is
//! created for it, so a refused transfer writes nothing outside the target
//! and nothing beyond what was asked; a directory's mode and times are set
//! at its `E`, after its contents.
//!
//! May use: its parent `scp`.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::{error_text, remote_quote, Scp, ScpDir, ScpStep, Times};
use crate::task::{contents_only, into_dir, source_name, Transfer};
use crate::transport::local::prepare_local_target;
use crate::transport::protocol::TransportError;

/// The sink side (this machine receives).
pub(super) struct GetState {
    target: PathBuf,
    /// The target is a directory to copy into (`task::into_dir`), checked to
    /// exist; else it is the copy's name.
    into: bool,
    /// Per source: a directory source stands for its contents (`into` only).
    contents: Vec<bool>,
    /// From the last `T` record, for the next `C` or `D`.
    times: Option<Times>,
    /// Directories entered (`D`), with the mode and times to set at their
    /// `E` (`None`: an existing directory that only takes contents).
    dirs: Vec<(PathBuf, Option<DirAttrs>)>,
    /// Whether `D` records are expected at all.
    recursive: bool,
    /// The name each source's top-level record must have, in order (`None`:
    /// not known here, any safe name).
    expected: Vec<Option<Vec<u8>>>,
    /// Top-level records received so far.
    answered: usize,
    step: GetStep,
}

/// A received directory's mode and times, set at its `E`.
type DirAttrs = (u32, Option<Times>);

enum GetStep {
    Record,
    /// Receiving a file; `left` bytes to go, then the source's status byte.
    Data {
        file: std::fs::File,
        left: u64,
        path: PathBuf,
        mode: u32,
        times: Option<Times>,
    },
}

impl Scp {
    /// `ScpGet`: checks the local target, then runs `scp -f` on the sources.
    pub(super) fn get(t: &Transfer) -> Result<Scp, TransportError> {
        let fail = |m: String| TransportError::Transfer(m);
        if t.sources.is_empty() {
            return Err(fail("scp_get: no source given".into()));
        }
        let target = PathBuf::from(&t.target);
        let into = into_dir(t);
        prepare_local_target(t).map_err(fail)?;
        let mut cmd = "scp -f -p".to_owned();
        if t.recursive {
            cmd.push_str(" -r");
        }
        cmd.push_str(" --");
        for src in &t.sources {
            cmd.push(' ');
            cmd.push_str(&remote_quote(src).map_err(fail)?);
        }
        let mut scp = Scp::new(
            cmd,
            ScpDir::Get(GetState {
                target,
                into,
                contents: t.sources.iter().map(|s| into && contents_only(s)).collect(),
                times: None,
                dirs: Vec::new(),
                recursive: t.recursive,
                expected: t.sources.iter().map(|s| expected_name(s)).collect(),
                answered: 0,
                step: GetStep::Record,
            }),
        );
        // The sink starts by saying it is ready.
        scp.out.push(0);
        Ok(scp)
    }

    pub(super) fn advance_get(&mut self, g: &mut GetState) -> Result<ScpStep, String> {
        if let GetStep::Data {
            file,
            left,
            path,
            mode,
            times,
        } = &mut g.step
        {
            if *left > 0 {
                if self.remote.inb.is_empty() {
                    return Ok(ScpStep::NeedInput);
                }
                let n = (*left).min(self.remote.inb.len() as u64) as usize;
                file.write_all(&self.remote.inb[..n])
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                self.remote.inb.drain(..n);
                *left -= n as u64;
                return Ok(ScpStep::Progress);
            }
            return match self.response()? {
                None => Ok(ScpStep::NeedInput),
                Some(Err(msg)) => Err(format!("{}: remote scp: {msg}", path.display())),
                Some(Ok(())) => {
                    if let Some(t) = times {
                        file.set_times(file_times(*t))
                            .map_err(|e| format!("{}: cannot keep the modification time: {e}", path.display()))?;
                    }
                    file.set_permissions(std::fs::Permissions::from_mode(*mode))
                        .map_err(|e| format!("{}: cannot set its mode: {e}", path.display()))?;
                    g.step = GetStep::Record;
                    self.out.push(0);
                    Ok(ScpStep::Progress)
                }
            };
        }
        let Some(line) = self.take_line()? else {
            if self.eof[0] && self.remote.inb.is_empty() && g.dirs.is_empty() {
                return Ok(ScpStep::Done);
            }
            return Ok(ScpStep::NeedInput);
        };
        let text = || String::from_utf8_lossy(&line).into_owned();
        let bad = || format!("unexpected record from the remote scp: {:?}", text());
        match line.first() {
            Some(1 | 2) => {
                let msg = error_text(&line[1..]);
                let hint = if msg.contains("not a regular file") {
                    " (a directory needs .recursive(true))"
                } else {
                    ""
                };
                Err(format!("remote scp: {msg}{hint}"))
            }
            Some(b'T') => {
                let f: Vec<&[u8]> = line[1..].split(|&b| b == b' ').collect();
                let num = |i: usize| -> Option<i64> { std::str::from_utf8(f.get(i)?).ok()?.parse().ok() };
                g.times = Some((num(0).ok_or_else(bad)?, num(2).ok_or_else(bad)?));
                self.out.push(0);
                Ok(ScpStep::Progress)
            }
            Some(b'C' | b'D') => {
                let (mode, size, name) = parse_record(&line[1..]).ok_or_else(bad)?;
                let is_dir = line[0] == b'D';
                check_name(name)?;
                let source = g.check_asked(is_dir, name)?;
                let (dest, keep) = g.dest(name, source, is_dir);
                let times = g.times.take();
                if is_dir {
                    if dest.exists() {
                        if !dest.is_dir() {
                            return Err(format!("{}: not a directory", dest.display()));
                        }
                    } else {
                        std::fs::create_dir(&dest).map_err(|e| format!("{}: {e}", dest.display()))?;
                    }
                    g.dirs.push((dest, keep.then_some((mode, times))));
                } else {
                    let file = std::fs::File::options()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .open(&dest)
                        .map_err(|e| format!("{}: {e}", dest.display()))?;
                    g.step = GetStep::Data {
                        file,
                        left: size,
                        path: dest,
                        mode,
                        times,
                    };
                }
                self.out.push(0);
                Ok(ScpStep::Progress)
            }
            Some(b'E') => {
                let (dir, kept) = g.dirs.pop().ok_or_else(bad)?;
                let Some((mode, times)) = kept else {
                    self.out.push(0);
                    return Ok(ScpStep::Progress);
                };
                // Mode and times last: a read-only directory must still take its contents.
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| format!("{}: cannot set its mode: {e}", dir.display()))?;
                if let Some(t) = times {
                    std::fs::File::open(&dir)
                        .and_then(|f| f.set_times(file_times(t)))
                        .map_err(|e| format!("{}: cannot keep the modification time: {e}", dir.display()))?;
                }
                self.out.push(0);
                Ok(ScpStep::Progress)
            }
            _ => Err(bad()),
        }
    }
}

impl GetState {
    /// Checks a `C` or `D` record against what was asked for (see the module
    /// doc), and counts a top-level one: `Some(i)` if it answers source `i`.
    fn check_asked(&mut self, is_dir: bool, name: &[u8]) -> Result<Option<usize>, String> {
        let shown = String::from_utf8_lossy(name);
        if is_dir && !self.recursive {
            return Err(format!(
                "the remote scp sent a directory {shown:?} for a get that is not recursive"
            ));
        }
        if !self.dirs.is_empty() {
            return Ok(None);
        }
        match self.expected.get(self.answered) {
            None => Err(format!(
                "the remote scp sent {shown:?} beyond the {} file(s) asked for",
                self.expected.len()
            )),
            Some(Some(want)) if want.as_slice() != name => Err(format!(
                "the remote scp sent {shown:?} where {:?} was asked for",
                String::from_utf8_lossy(want)
            )),
            Some(_) => {
                self.answered += 1;
                Ok(Some(self.answered - 1))
            }
        }
    }

    /// Where a received `C` or `D` record (its name checked) goes, by the
    /// destination rule (see `task::transfer`), and whether it is the copy
    /// itself (a directory then takes the source's mode and times) rather
    /// than an existing directory that takes a source's contents.
    fn dest(&self, name: &[u8], source: Option<usize>, is_dir: bool) -> (PathBuf, bool) {
        let name = std::ffi::OsStr::from_bytes(name);
        match (self.dirs.last(), source) {
            (Some((dir, _)), _) => (dir.join(name), true),
            (None, Some(i)) if self.into && is_dir && self.contents.get(i) == Some(&true) => {
                (self.target.clone(), false)
            }
            (None, _) if self.into => (self.target.join(name), true),
            (None, _) if !is_dir && self.target.is_dir() => (self.target.join(name), true),
            (None, _) => (self.target.clone(), true),
        }
    }
}

/// Refuses a received name that is not one plain path component.
fn check_name(name: &[u8]) -> Result<(), String> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(format!(
            "the remote scp sent an unsafe file name {:?}",
            String::from_utf8_lossy(name)
        ));
    }
    Ok(())
}

/// The name the remote scp gives a source's top-level record, as OpenSSH's
/// scp computes it (trailing `/` removed, then the last component); `None`
/// where this side cannot know it (the remote home, `/`, `.` or `..`).
fn expected_name(source: &str) -> Option<Vec<u8>> {
    // Only a bare `~` (or `~/`) is left unquoted for the remote shell to expand.
    source_name(source).map(|n| n.as_bytes().to_vec())
}

/// Parses `<mode> <size> <name>` (after the `C` or `D`).
fn parse_record(rest: &[u8]) -> Option<(u32, u64, &[u8])> {
    let mut parts = rest.splitn(3, |&b| b == b' ');
    let mode = u32::from_str_radix(std::str::from_utf8(parts.next()?).ok()?, 8).ok()?;
    let size = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    Some((mode & 0o7777, size, parts.next()?))
}

/// `FileTimes` from (mtime, atime) in seconds since the epoch.
fn file_times((mtime, atime): Times) -> std::fs::FileTimes {
    let at = |s: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(s.max(0) as u64);
    std::fs::FileTimes::new()
        .set_modified(at(mtime))
        .set_accessed(at(atime))
}

#[cfg(test)]
mod tests {
    use super::expected_name;

    #[test]
    fn expected_names_follow_openssh_and_give_up_where_unknowable() {
        let name = |s: &str| expected_name(s).map(|n| String::from_utf8(n).unwrap());
        assert_eq!(name("a.txt").as_deref(), Some("a.txt"));
        assert_eq!(name("/srv/data/").as_deref(), Some("data"));
        assert_eq!(name("~/notes//").as_deref(), Some("notes"));
        assert_eq!(name("~foo").as_deref(), Some("~foo"));
        assert_eq!(name("dir/~").as_deref(), Some("~"));
        for unknowable in ["~", "~/", "/", ".", "dir/..", ""] {
            assert_eq!(name(unknowable), None, "{unknowable:?}");
        }
    }
}
