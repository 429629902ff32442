//! The source side of the built-in scp (`scp -f`): this side reads files and directories
//! and sends records and file data; the peer writes them.
//!
//! Invariants: a `C` record's data is exactly the size it announces (a file that shrinks
//! is padded, one that grows is cut); names with a newline are never sent; directories
//! nest at most [`MAX_DEPTH`] deep.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, BufRead, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{strerror, Fatal, Scp, CHUNK, MAX_DEPTH};

impl<R: BufRead, W: Write> Scp<R, W> {
    /// Sends every path of the command line.
    pub(super) fn source_top(&mut self) -> Result<(), Fatal> {
        // The sink says it is ready.
        if !self.response()? {
            return Err(Fatal);
        }
        let paths = std::mem::take(&mut self.cmd.paths);
        for path in paths {
            let mut bytes = path.into_vec();
            while bytes.len() > 1 && bytes.last() == Some(&b'/') {
                bytes.pop();
            }
            let shown = String::from_utf8_lossy(&bytes).into_owned();
            if bytes.is_empty() {
                self.run_err(": No such file or directory")?;
                continue;
            }
            let full = self.cwd.join(OsStr::from_bytes(&bytes));
            self.source(&full, &shown, 0)?;
        }
        Ok(())
    }

    /// Sends one path; `shown` names it in error messages (as the client gave it).
    fn source(&mut self, path: &Path, shown: &str, depth: usize) -> Result<(), Fatal> {
        if shown.contains('\n') {
            return self.run_err(&format!(
                "{}: skipping, filename contains a newline",
                shown.escape_default()
            ));
        }
        let meta = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) => return self.run_err(&format!("{shown}: {}", strerror(&e))),
        };
        if meta.is_dir() && self.cmd.recursive {
            if depth >= MAX_DEPTH {
                return self.run_err(&format!("{shown}: directories nested too deep"));
            }
            return self.source_dir(path, shown, &meta, depth);
        }
        if !meta.is_file() {
            return self.run_err(&format!("{shown}: not a regular file"));
        }
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) => return self.run_err(&format!("{shown}: {}", strerror(&e))),
        };
        if self.cmd.preserve && !self.send_times(&meta)? {
            return Ok(());
        }
        let record = record_line('C', &meta, meta.len(), path);
        self.send(&record)?;
        if !self.response()? {
            return Ok(());
        }
        // Exactly the size announced: a file that shrinks is padded, one that grows is cut.
        let mut left = meta.len();
        let mut buf = vec![0u8; CHUNK];
        let mut read_error: Option<io::Error> = None;
        while left > 0 {
            let n = usize::try_from(left).unwrap_or(usize::MAX).min(CHUNK);
            let got = if read_error.is_some() {
                0
            } else {
                match file.read(&mut buf[..n]) {
                    Ok(got) => got,
                    Err(e) => {
                        read_error = Some(e);
                        0
                    }
                }
            };
            if got == 0 {
                if read_error.is_none() {
                    read_error = Some(io::Error::new(io::ErrorKind::UnexpectedEof, "file changed size"));
                }
                buf[..n].fill(0);
                self.send(&buf[..n])?;
                left -= n as u64;
            } else {
                self.send(&buf[..got])?;
                left -= got as u64;
            }
        }
        match read_error {
            None => self.ack()?,
            Some(e) => self.run_err(&format!("{shown}: {}", strerror(&e)))?,
        }
        self.response().map(drop)
    }

    /// Sends a directory: `D`, its entries in name order, `E`.
    fn source_dir(&mut self, path: &Path, shown: &str, meta: &fs::Metadata, depth: usize) -> Result<(), Fatal> {
        let entries =
            fs::read_dir(path).and_then(|rd| rd.map(|e| e.map(|e| e.file_name())).collect::<io::Result<Vec<_>>>());
        let mut entries = match entries {
            Ok(e) => e,
            Err(e) => return self.run_err(&format!("{shown}: {}", strerror(&e))),
        };
        entries.sort();
        if self.cmd.preserve && !self.send_times(meta)? {
            return Ok(());
        }
        let record = record_line('D', meta, 0, path);
        self.send(&record)?;
        if !self.response()? {
            return Ok(());
        }
        for name in entries {
            let child_shown = format!("{shown}/{}", name.to_string_lossy());
            self.source(&path.join(&name), &child_shown, depth + 1)?;
        }
        self.send(b"E\n")?;
        self.response().map(drop)
    }

    /// `T<mtime> 0 <atime> 0`; false if the sink refused it.
    fn send_times(&mut self, meta: &fs::Metadata) -> Result<bool, Fatal> {
        let line = format!("T{} 0 {} 0\n", meta.mtime().max(0), meta.atime().max(0));
        self.send(line.as_bytes())?;
        self.response()
    }
}

/// `C0644 <size> <name>\n` or `D0755 0 <name>\n`.
fn record_line(kind: char, meta: &fs::Metadata, size: u64, path: &Path) -> Vec<u8> {
    let name = path.file_name().map(OsStr::as_bytes).unwrap_or(b"");
    let mut line = format!("{kind}{:04o} {size} ", meta.mode() & 0o7777).into_bytes();
    line.extend_from_slice(name);
    line.push(b'\n');
    line
}
