//! The sink side of the built-in scp (`scp -t`): the peer sends records and file data,
//! this side writes files and directories.
//!
//! Invariants: every byte a `C` record announces is read, even when writing fails, so the
//! protocol stays in step; a received name is one path component (no `/`, `.` or `..`);
//! directories nest at most [`MAX_DEPTH`] deep.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, BufRead, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::{set_times, strerror, Fatal, Scp, MAX_DEPTH};

impl<R: BufRead, W: Write> Scp<R, W> {
    /// Receives into `target` (a directory, or the file to write).
    pub(super) fn sink_top(&mut self, target: &Path) -> Result<(), Fatal> {
        if self.cmd.target_dir && !target.is_dir() {
            self.run_err(&format!("{}: Not a directory", target.display()))?;
            return Err(Fatal);
        }
        self.sink(target, 0)
    }

    /// Receives records into `target` until `E` (or EOF at the top).
    fn sink(&mut self, target: &Path, depth: usize) -> Result<(), Fatal> {
        if depth > MAX_DEPTH {
            return Err(self.protocol_error("directories nested too deep"));
        }
        // Ready (at the top), or the acknowledgement of the `D` record.
        self.ack()?;
        let target_is_dir = target.is_dir();
        let mut times: Option<(i64, i64)> = None;
        let mut first = true;
        loop {
            let Some(line) = self.read_line()? else {
                return Ok(());
            };
            let was_first = std::mem::replace(&mut first, false);
            match line.first() {
                None => return Err(self.protocol_error("unexpected <newline>")),
                Some(1) => {
                    self.errors += 1;
                    continue;
                }
                Some(2) => return Err(Fatal),
                Some(b'E') => {
                    self.ack()?;
                    return Ok(());
                }
                Some(b'T') => {
                    times = Some(self.parse_times(&line[1..])?);
                    self.ack()?;
                    continue;
                }
                Some(b'C' | b'D') => {}
                Some(_) if was_first && depth == 0 => {
                    // Like OpenSSH: e.g. a shell message sent before the remote scp ran.
                    let _ = self.run_err(&String::from_utf8_lossy(&line));
                    return Err(Fatal);
                }
                Some(_) => return Err(self.protocol_error("expected control record")),
            }
            let (mode, size, name) = self.parse_record(&line[1..])?;
            if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
                let _ = self.run_err(&format!(
                    "error: unexpected filename: {}",
                    String::from_utf8_lossy(name)
                ));
                return Err(Fatal);
            }
            let dest = if target_is_dir {
                target.join(OsStr::from_bytes(name))
            } else {
                target.to_path_buf()
            };
            let mode = if self.cmd.preserve { mode } else { mode & !self.umask };
            let times = times.take();
            if line[0] == b'D' {
                self.sink_dir(&dest, mode, times, depth)?;
            } else {
                self.sink_file(&dest, mode, size, times)?;
            }
        }
    }

    /// `<mtime> 0 <atime> 0` after `T`.
    fn parse_times(&mut self, rest: &[u8]) -> Result<(i64, i64), Fatal> {
        let fields: Vec<Option<i64>> = rest
            .split(|&b| b == b' ')
            .map(|f| std::str::from_utf8(f).ok().and_then(|s| s.parse().ok()))
            .collect();
        match fields.as_slice() {
            [Some(mtime), Some(_), Some(atime), Some(_)] => Ok((*mtime, *atime)),
            _ => Err(self.protocol_error("bad T record")),
        }
    }

    /// `<mode> <size> <name>` after `C` or `D`.
    fn parse_record<'l>(&mut self, rest: &'l [u8]) -> Result<(u32, u64, &'l [u8]), Fatal> {
        let mut parts = rest.splitn(3, |&b| b == b' ');
        let mode = parts
            .next()
            .filter(|m| !m.is_empty() && m.iter().all(|b| (b'0'..=b'7').contains(b)))
            .and_then(|m| u32::from_str_radix(std::str::from_utf8(m).ok()?, 8).ok())
            .filter(|m| *m <= 0o7777);
        let Some(mode) = mode else {
            return Err(self.protocol_error("bad mode"));
        };
        let size = parts
            .next()
            .filter(|s| !s.is_empty() && s.iter().all(u8::is_ascii_digit))
            .and_then(|s| std::str::from_utf8(s).ok()?.parse::<u64>().ok());
        let Some(size) = size else {
            return Err(self.protocol_error("bad size"));
        };
        let Some(name) = parts.next() else {
            return Err(self.protocol_error("size not delimited"));
        };
        Ok((mode, size, name))
    }

    /// A `D` record: creates (or reuses) the directory and receives into it.
    fn sink_dir(&mut self, dest: &Path, mode: u32, times: Option<(i64, i64)>, depth: usize) -> Result<(), Fatal> {
        if !self.cmd.recursive {
            return Err(self.protocol_error("received directory without -r"));
        }
        let mut set_mode = self.cmd.preserve;
        match fs::metadata(dest) {
            Ok(meta) if !meta.is_dir() => {
                return self.run_err(&format!("{}: Not a directory", dest.display()));
            }
            Ok(_) => {
                if self.cmd.preserve {
                    let _ = fs::set_permissions(dest, fs::Permissions::from_mode(mode));
                }
            }
            Err(_) => {
                // Created writable, so that a read-only directory can still take its files;
                // its real mode is set once its contents are in.
                set_mode = true;
                if let Err(e) = fs::DirBuilder::new().mode(mode | 0o700).create(dest) {
                    return self.run_err(&format!("{}: {}", dest.display(), strerror(&e)));
                }
            }
        }
        self.sink(dest, depth + 1)?;
        if let Some(t) = times {
            let _ = set_times(dest, t);
        }
        if set_mode {
            let _ = fs::set_permissions(dest, fs::Permissions::from_mode(mode));
        }
        Ok(())
    }

    /// A `C` record: writes the file's data, then its mode and times.
    fn sink_file(&mut self, dest: &Path, mode: u32, size: u64, times: Option<(i64, i64)>) -> Result<(), Fatal> {
        let existed = fs::metadata(dest).ok();
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .mode(mode | 0o200)
            .open(dest);
        let mut file = match file {
            Ok(f) => f,
            Err(e) => return self.run_err(&format!("{}: {}", dest.display(), strerror(&e))),
        };
        self.ack()?;
        // Take every byte announced even if writing fails: the protocol must stay in step.
        let mut write_error: Option<io::Error> = None;
        let mut left = size;
        while left > 0 {
            let buf = self.input.fill_buf().map_err(|_| Fatal)?;
            if buf.is_empty() {
                return Err(Fatal);
            }
            let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            if write_error.is_none() {
                if let Err(e) = file.write_all(&buf[..n]) {
                    write_error = Some(e);
                }
            }
            self.input.consume(n);
            left -= n as u64;
        }
        if write_error.is_none() && existed.as_ref().is_some_and(|m| m.is_file()) {
            if let Err(e) = file.set_len(size) {
                write_error = Some(e);
            }
        }
        if write_error.is_none() {
            let chmod = if self.cmd.preserve {
                Some(mode)
            } else if existed.is_none() && mode & 0o200 == 0 {
                Some(mode & !self.umask)
            } else {
                None
            };
            if let Some(m) = chmod {
                if let Err(e) = file.set_permissions(fs::Permissions::from_mode(m)) {
                    write_error = Some(e);
                }
            }
        }
        drop(file);
        // The source's status byte after the data.
        let _ = self.response()?;
        if let Some(e) = write_error {
            return self.run_err(&format!("{}: {}", dest.display(), strerror(&e)));
        }
        if let Some(t) = times {
            if let Err(e) = set_times(dest, t) {
                return self.run_err(&format!("{}: set times: {}", dest.display(), strerror(&e)));
            }
        }
        self.ack()
    }
}
