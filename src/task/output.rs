//! Where a command's output goes (capture, file, terminal, callback) and where
//! its input comes from; plus the sinks transports write into.
//!
//! Invariant: a capture never holds more than its limit; what is cut is
//! flagged as truncated, never silently dropped.

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;

/// Default capture limit per stream: 1 MiB.
pub const DEFAULT_CAPTURE_LIMIT: usize = 1 << 20;

/// A line callback: receives the label and one line (without its newline).
pub(crate) type LineFn = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// Where one output stream (stdout or stderr) of a command goes.
#[derive(Clone)]
pub struct Output(pub(crate) OutputKind);

#[derive(Clone)]
pub(crate) enum OutputKind {
    Capture(usize),
    File {
        path: String,
        append: bool,
    },
    Inherit,
    Null,
    Lines(LineFn),
    /// Goes where the inner kind says, and every line also goes to the tap:
    /// how a watched run (`Parallel::start`) sees output without changing
    /// what the task keeps. Made by the scheduler only, after expansion.
    Tapped(Box<OutputKind>, LineFn),
}

impl Output {
    /// This output, with every line also handed to `tap(label, line)`.
    pub(crate) fn tapped(&self, tap: LineFn) -> Output {
        Output(OutputKind::Tapped(Box::new(self.0.clone()), tap))
    }

    /// Keep the output in the report, up to [`DEFAULT_CAPTURE_LIMIT`] bytes; more
    /// is dropped and flagged as truncated (the default).
    pub fn capture() -> Output {
        Output(OutputKind::Capture(DEFAULT_CAPTURE_LIMIT))
    }

    /// Keep the output in the report, up to `limit` bytes.
    pub fn capture_limit(limit: usize) -> Output {
        Output(OutputKind::Capture(limit))
    }

    /// Write to a local file, truncating it first; `%LABEL%` and other
    /// variables are expanded, so every label can have its own. The path must
    /// be valid UTF-8 (checked at push).
    pub fn file(path: impl Into<PathBuf>) -> Output {
        Output(OutputKind::File {
            path: super::paths::local(path),
            append: false,
        })
    }

    /// Append to a local file (variables expanded as for [`Output::file`]).
    pub fn append(path: impl Into<PathBuf>) -> Output {
        Output(OutputKind::File {
            path: super::paths::local(path),
            append: true,
        })
    }

    /// Copy to this process's own stream, line by line, each line prefixed with
    /// `label: `.
    pub fn inherit() -> Output {
        Output(OutputKind::Inherit)
    }

    /// Throw the output away.
    pub fn null() -> Output {
        Output(OutputKind::Null)
    }

    /// Call `f(label, line)` for every line.
    pub fn lines(f: impl Fn(&str, &str) + Send + Sync + 'static) -> Output {
        Output(OutputKind::Lines(Arc::new(f)))
    }
}

impl Default for Output {
    fn default() -> Self {
        Output::capture()
    }
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            OutputKind::Capture(n) => write!(f, "Capture({n})"),
            OutputKind::File { path, append } => write!(f, "File({path:?}, append: {append})"),
            OutputKind::Inherit => f.write_str("Inherit"),
            OutputKind::Null => f.write_str("Null"),
            OutputKind::Lines(_) => f.write_str("Lines(..)"),
            OutputKind::Tapped(inner, _) => write!(f, "Tapped({:?})", Output((**inner).clone())),
        }
    }
}

/// Where a command's standard input comes from.
#[derive(Clone, Debug, Default)]
pub struct Stdin(pub(crate) StdinKind);

#[derive(Clone, Debug, Default)]
pub(crate) enum StdinKind {
    #[default]
    Null,
    Data(Arc<[u8]>),
    File(String),
}

impl Stdin {
    /// No input: the command reads end-of-file (the default).
    pub fn null() -> Stdin {
        Stdin(StdinKind::Null)
    }

    /// These bytes, then end-of-file.
    pub fn data(bytes: impl Into<Vec<u8>>) -> Stdin {
        Stdin(StdinKind::Data(bytes.into().into()))
    }

    /// The contents of a local file (variables expanded in the path, which
    /// must be valid UTF-8).
    pub fn file(path: impl Into<PathBuf>) -> Stdin {
        Stdin(StdinKind::File(super::paths::local(path)))
    }
}

/// Which stream a sink serves, for the terminal prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// The receiving end of one output stream while a task runs. Transports feed it
/// bytes as they arrive; `finish` hands back what the report keeps.
pub(crate) struct Sink {
    label: Arc<str>,
    stream: Stream,
    kind: SinkKind,
    line: Vec<u8>,
    /// A watched run's tap, with its own partial line.
    tap: Option<(LineFn, Vec<u8>)>,
}

enum SinkKind {
    Capture {
        buf: Vec<u8>,
        limit: usize,
        truncated: bool,
    },
    File(io::BufWriter<File>),
    Inherit,
    Null,
    Lines(LineFn),
}

/// What a sink hands back to the report.
#[derive(Debug, Default, Clone)]
pub(crate) struct Captured {
    pub(crate) bytes: Option<Vec<u8>>,
    pub(crate) truncated: bool,
}

impl Sink {
    /// Opens the sink; a file that cannot be created is an error naming its path.
    pub(crate) fn open(label: Arc<str>, stream: Stream, out: &Output) -> Result<Sink, String> {
        let (kind, tap) = match &out.0 {
            OutputKind::Tapped(inner, tap) => (&**inner, Some((tap.clone(), Vec::new()))),
            kind => (kind, None),
        };
        let kind = match kind {
            OutputKind::Capture(limit) => SinkKind::Capture {
                buf: Vec::new(),
                limit: *limit,
                truncated: false,
            },
            OutputKind::File { path, append } => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .write(true)
                    .append(*append)
                    .truncate(!*append)
                    .open(path)
                    .map_err(|e| format!("cannot open output file {:?}: {e}", PathBuf::from(path)))?;
                SinkKind::File(io::BufWriter::new(f))
            }
            OutputKind::Inherit => SinkKind::Inherit,
            OutputKind::Null => SinkKind::Null,
            OutputKind::Lines(f) => SinkKind::Lines(f.clone()),
            // `tapped` never nests: the inner kind is a user's.
            OutputKind::Tapped(..) => SinkKind::Null,
        };
        Ok(Sink {
            label,
            stream,
            kind,
            line: Vec::new(),
            tap,
        })
    }

    /// Takes the next chunk of bytes.
    pub(crate) fn write(&mut self, data: &[u8]) -> Result<(), String> {
        if let Some((tap, line)) = &mut self.tap {
            split_lines(line, data, |l| call_line_fn(tap, &self.label, l));
        }
        match &mut self.kind {
            SinkKind::Capture { buf, limit, truncated } => {
                let room = limit.saturating_sub(buf.len());
                if data.len() > room {
                    *truncated = true;
                }
                buf.extend_from_slice(&data[..data.len().min(room)]);
            }
            SinkKind::File(f) => f.write_all(data).map_err(|e| format!("writing output file: {e}"))?,
            SinkKind::Null => {}
            SinkKind::Inherit | SinkKind::Lines(_) => {
                let mut rest = data;
                while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
                    self.line.extend_from_slice(&rest[..pos]);
                    self.emit_line();
                    rest = &rest[pos + 1..];
                }
                self.line.extend_from_slice(rest);
            }
        }
        Ok(())
    }

    fn emit_line(&mut self) {
        let text = String::from_utf8_lossy(&self.line);
        match &self.kind {
            SinkKind::Inherit => {
                // One write per line under the stream's lock, so lines of
                // different labels never interleave.
                let line = format!("{}: {}\n", self.label, text);
                let _ = match self.stream {
                    Stream::Stdout => io::stdout().lock().write_all(line.as_bytes()),
                    Stream::Stderr => io::stderr().lock().write_all(line.as_bytes()),
                };
            }
            SinkKind::Lines(f) => call_line_fn(f, &self.label, &self.line),
            _ => {}
        }
        self.line.clear();
    }

    /// Flushes what is pending and returns what the report keeps.
    pub(crate) fn finish(mut self) -> Result<Captured, String> {
        if !self.line.is_empty() {
            self.emit_line();
        }
        if let Some((tap, line)) = &self.tap {
            if !line.is_empty() {
                call_line_fn(tap, &self.label, line);
            }
        }
        match self.kind {
            SinkKind::Capture { buf, truncated, .. } => Ok(Captured {
                bytes: Some(buf),
                truncated,
            }),
            SinkKind::File(mut f) => {
                f.flush().map_err(|e| format!("writing output file: {e}"))?;
                Ok(Captured::default())
            }
            _ => Ok(Captured::default()),
        }
    }
}

/// Hands every complete line of `data` (after what `line` holds from the
/// last chunk) to `emit`, and keeps the unfinished rest in `line`.
fn split_lines(line: &mut Vec<u8>, data: &[u8], mut emit: impl FnMut(&[u8])) {
    let mut rest = data;
    while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
        if line.is_empty() {
            emit(&rest[..pos]);
        } else {
            line.extend_from_slice(&rest[..pos]);
            emit(line);
            line.clear();
        }
        rest = &rest[pos + 1..];
    }
    line.extend_from_slice(rest);
}

/// Calls a line callback with one line as lossy text; a panic in it is
/// logged, never spread into the transport.
fn call_line_fn(f: &LineFn, label: &str, line: &[u8]) {
    let text = String::from_utf8_lossy(line);
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(label, &text))).is_err() {
        log::error!(target: "ssh_parallel", "[{label}] output line callback panicked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_is_bounded_and_flags_truncation() {
        let mut s = Sink::open("l".into(), Stream::Stdout, &Output::capture_limit(4)).unwrap();
        s.write(b"abc").unwrap();
        s.write(b"def").unwrap();
        let c = s.finish().unwrap();
        assert_eq!(c.bytes.as_deref(), Some(&b"abcd"[..]));
        assert!(c.truncated);
    }

    #[test]
    fn lines_are_split_across_chunks() {
        let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let out = Output::lines(move |l, line| s2.lock().push(format!("{l}:{line}")));
        let mut s = Sink::open("w".into(), Stream::Stdout, &out).unwrap();
        s.write(b"a\nb").unwrap();
        s.write(b"c\nd").unwrap();
        s.finish().unwrap();
        assert_eq!(*seen.lock(), vec!["w:a", "w:bc", "w:d"]);
    }

    #[test]
    fn a_tap_sees_every_line_and_changes_nothing_captured() {
        let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let tap: LineFn = Arc::new(move |l, line| s2.lock().push(format!("{l}:{line}")));
        let out = Output::capture_limit(5).tapped(tap);
        let mut s = Sink::open("w".into(), Stream::Stdout, &out).unwrap();
        s.write(b"ab\nc").unwrap();
        s.write(b"d\n\ne").unwrap();
        let c = s.finish().unwrap();
        assert_eq!(c.bytes.as_deref(), Some(&b"ab\ncd"[..]));
        assert!(c.truncated);
        assert_eq!(*seen.lock(), vec!["w:ab", "w:cd", "w:", "w:e"]);
    }
}
