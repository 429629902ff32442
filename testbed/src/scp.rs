//! A built-in `scp -t` / `scp -f` (the legacy SCP protocol, remote side) for the embedded
//! server, so that SCP works on machines without an `scp` binary.
//!
//! It follows OpenSSH's `scp.c` (sink and source): `T`, `C`, `D` and `E` records, `\0`
//! acknowledgements, errors as `\x01scp: message\n`, modes (masked by the umask without
//! `-p`), times with `-p`, recursion with `-r`, `-d` for a target that must be a
//! directory, and exit status 0, or 1 after any error.
//!
//! Only command lines that need no real shell are served: words separated by blanks, with
//! single quotes, double quotes, backslashes and a leading `~` or `~/`. Anything else
//! (variables, globs, `;`, pipes, redirections, unknown options) is left to the shell.

use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, BufRead, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The longest record line accepted.
const MAX_LINE: usize = 64 * 1024;
/// The deepest directory nesting sent or received.
const MAX_DEPTH: usize = 256;
/// File data moved per write.
const CHUNK: usize = 32 * 1024;

/// A parsed `scp -t` or `scp -f` command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScpCommand {
    /// `-t` (receive into `paths[0]`) or `-f` (send `paths`).
    pub(crate) sink: bool,
    pub(crate) recursive: bool,
    pub(crate) preserve: bool,
    /// `-d`: the target must be a directory.
    pub(crate) target_dir: bool,
    /// As given (after quote removal and `~` expansion); relative to the working directory.
    pub(crate) paths: Vec<OsString>,
}

/// Parses `line` if it is an `scp -t ...` or `scp -f ...` command this module can serve.
pub(crate) fn parse_command(line: &[u8], home: &Path) -> Option<ScpCommand> {
    let words = split_words(line, home)?;
    let (program, args) = words.split_first()?;
    if Path::new(program).file_name() != Some(OsStr::new("scp")) {
        return None;
    }
    let mut cmd = ScpCommand {
        sink: false,
        recursive: false,
        preserve: false,
        target_dir: false,
        paths: Vec::new(),
    };
    let (mut to, mut from) = (false, false);
    let mut rest = args.iter();
    for arg in rest.by_ref() {
        let bytes = arg.as_bytes();
        if bytes == b"--" {
            break;
        }
        if bytes.len() < 2 || bytes[0] != b'-' {
            cmd.paths.push(arg.clone());
            break;
        }
        for flag in &bytes[1..] {
            match flag {
                b't' => to = true,
                b'f' => from = true,
                b'r' => cmd.recursive = true,
                b'p' => cmd.preserve = true,
                b'd' => cmd.target_dir = true,
                b'v' | b'q' => {}
                _ => return None,
            }
        }
    }
    cmd.paths.extend(rest.cloned());
    if to == from {
        return None;
    }
    cmd.sink = to;
    let ok = if to {
        cmd.paths.len() == 1
    } else {
        !cmd.paths.is_empty()
    };
    ok.then_some(cmd)
}

/// POSIX shell word splitting for the simple command lines scp clients send: quotes and
/// backslashes are removed, a leading unquoted `~` (alone or before `/`) becomes `home`.
/// Returns `None` for anything that needs a real shell.
fn split_words(line: &[u8], home: &Path) -> Option<Vec<OsString>> {
    let mut words = Vec::new();
    let mut word: Option<Vec<u8>> = None;
    let mut i = 0;
    while i < line.len() {
        let c = line[i];
        match c {
            b' ' | b'\t' => {
                if let Some(w) = word.take() {
                    words.push(OsString::from_vec(w));
                }
            }
            b'\'' => {
                let w = word.get_or_insert_with(Vec::new);
                let end = i + 1 + line[i + 1..].iter().position(|&b| b == b'\'')?;
                w.extend_from_slice(&line[i + 1..end]);
                i = end;
            }
            b'"' => {
                let w = word.get_or_insert_with(Vec::new);
                i += 1;
                loop {
                    match *line.get(i)? {
                        b'"' => break,
                        b'$' | b'`' => return None,
                        b'\\' => {
                            let next = *line.get(i + 1)?;
                            match next {
                                b'$' | b'`' | b'"' | b'\\' => {
                                    w.push(next);
                                    i += 1;
                                }
                                b'\n' => i += 1,
                                _ => w.push(b'\\'),
                            }
                        }
                        other => w.push(other),
                    }
                    i += 1;
                }
            }
            b'\\' => {
                let next = *line.get(i + 1)?;
                if next != b'\n' {
                    word.get_or_insert_with(Vec::new).push(next);
                }
                i += 1;
            }
            b'~' if word.is_none() => {
                match line.get(i + 1) {
                    None | Some(b'/' | b' ' | b'\t') => {}
                    // `~user` and the like: leave it to the shell.
                    Some(_) => return None,
                }
                word = Some(home.as_os_str().as_bytes().to_vec());
            }
            b'#' if word.is_none() => return None,
            b'|' | b'&' | b';' | b'<' | b'>' | b'(' | b')' | b'$' | b'`' | b'*' | b'?' | b'[' | b'\n' | b'\r' => {
                return None
            }
            other => word.get_or_insert_with(Vec::new).push(other),
        }
        i += 1;
    }
    if let Some(w) = word {
        words.push(OsString::from_vec(w));
    }
    Some(words)
}

/// The process umask, read without changing it (`/proc/self/status`); 022 if unknown.
pub(crate) fn current_umask() -> u32 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

/// `strerror`-style text: the io::Error without its " (os error N)" suffix.
fn strerror(e: &io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// Sets a path's modification and access times (seconds since the epoch).
fn set_times(path: &Path, (mtime, atime): (i64, i64)) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let spec = |s: i64| libc::timespec {
        tv_sec: s as libc::time_t,
        tv_nsec: 0,
    };
    let times = [spec(atime), spec(mtime)];
    // SAFETY: a valid C string and two timespecs, as utimensat expects.
    if unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A fatal end of the protocol: the exit status is 1.
struct Fatal;

/// One run of the built-in scp over a channel's stdin (`input`) and stdout (`output`).
pub(crate) struct Scp<R, W> {
    cmd: ScpCommand,
    cwd: PathBuf,
    umask: u32,
    input: R,
    output: W,
    errors: u32,
}

impl<R: BufRead, W: Write> Scp<R, W> {
    pub(crate) fn new(cmd: ScpCommand, cwd: &Path, umask: u32, input: R, output: W) -> Self {
        Scp {
            cmd,
            cwd: cwd.to_path_buf(),
            umask,
            input,
            output,
            errors: 0,
        }
    }

    /// Runs the transfer; returns the exit status (0, or 1 after any error).
    pub(crate) fn run(mut self) -> u32 {
        let result = if self.cmd.sink {
            let target = self.cwd.join(&self.cmd.paths[0]);
            self.sink_top(&target)
        } else {
            self.source_top()
        };
        match result {
            Ok(()) if self.errors == 0 => 0,
            _ => 1,
        }
    }

    fn send(&mut self, data: &[u8]) -> Result<(), Fatal> {
        self.output
            .write_all(data)
            .and_then(|()| self.output.flush())
            .map_err(|_| Fatal)
    }

    fn ack(&mut self) -> Result<(), Fatal> {
        self.send(b"\0")
    }

    /// Reports an error to the peer (`\x01scp: message`) and counts it.
    fn run_err(&mut self, msg: &str) -> Result<(), Fatal> {
        self.errors += 1;
        let mut line = Vec::with_capacity(msg.len() + 7);
        line.extend_from_slice(b"\x01scp: ");
        line.extend_from_slice(msg.replace('\n', " ").as_bytes());
        line.push(b'\n');
        self.send(&line)
    }

    fn protocol_error(&mut self, why: &str) -> Fatal {
        let _ = self.run_err(&format!("protocol error: {why}"));
        Fatal
    }

    /// Reads one line (without its `\n`); `None` at EOF before any byte.
    fn read_line(&mut self) -> Result<Option<Vec<u8>>, Fatal> {
        let mut line = Vec::new();
        let n = (&mut self.input)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|_| Fatal)?;
        if n == 0 {
            return Ok(None);
        }
        if line.last() != Some(&b'\n') {
            // Over-long, or the peer went away mid-line.
            return Err(Fatal);
        }
        line.pop();
        Ok(Some(line))
    }

    /// The peer's answer: `Ok(true)` for `\0`, `Ok(false)` for a warning (`\x01`);
    /// a fatal error (`\x02`, anything else, or EOF) ends the run.
    fn response(&mut self) -> Result<bool, Fatal> {
        let mut byte = [0u8; 1];
        self.input.read_exact(&mut byte).map_err(|_| Fatal)?;
        match byte[0] {
            0 => Ok(true),
            kind => {
                // The message itself is the peer's business (a remote scp prints nothing).
                let _ = self.read_line()?;
                self.errors += 1;
                if kind == 1 {
                    Ok(false)
                } else {
                    Err(Fatal)
                }
            }
        }
    }

    // ---- sink (`scp -t`): the peer sends, we write files ----

    fn sink_top(&mut self, target: &Path) -> Result<(), Fatal> {
        if self.cmd.target_dir && !target.is_dir() {
            self.run_err(&format!("{}: Not a directory", target.display()))?;
            return Err(Fatal);
        }
        self.sink(target, 0)
    }

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

    // ---- source (`scp -f`): we read files, the peer writes them ----

    fn source_top(&mut self) -> Result<(), Fatal> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Option<ScpCommand> {
        parse_command(line.as_bytes(), Path::new("/home/u"))
    }

    fn paths(c: &ScpCommand) -> Vec<String> {
        c.paths.iter().map(|p| p.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn parses_what_scp_clients_send() {
        let c = parse("scp -t -p -r -d -- '/tmp/a b/'").unwrap();
        assert!(c.sink && c.preserve && c.recursive && c.target_dir);
        assert_eq!(paths(&c), ["/tmp/a b/"]);
        let c = parse("scp -f -p -- ~/'x'\\''y' \"q\\\"z\" plain").unwrap();
        assert!(!c.sink && c.preserve && !c.recursive);
        assert_eq!(paths(&c), ["/home/u/x'y", "q\"z", "plain"]);
        // OpenSSH's `scp -O`: flags first, `-t` last, `--` only before a leading dash.
        let c = parse("scp -v -r -p -t /tmp/dst").unwrap();
        assert!(c.sink && c.recursive);
        assert_eq!(paths(&c), ["/tmp/dst"]);
        let c = parse("scp -pr -f -- -odd").unwrap();
        assert_eq!(paths(&c), ["-odd"]);
        assert_eq!(paths(&parse("scp -t ~").unwrap()), ["/home/u"]);
    }

    #[test]
    fn leaves_everything_else_to_the_shell() {
        for line in [
            "scp -t",
            "scp -t a b",
            "scp -f",
            "scp -t -f x",
            "scp -x -t x",
            "scp x",
            "echo -t x",
            "scp -f /tmp/*.txt",
            "scp -f $HOME/x",
            "scp -t x; rm -rf y",
            "scp -t x > log",
            "scp -f \"$x\"",
            "scp -t ~root/x",
            "scp -t 'unterminated",
            "cd /tmp && scp -t x",
        ] {
            assert_eq!(parse(line), None, "{line}");
        }
    }
}
