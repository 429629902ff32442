//! The command lines the built-in scp serves: `scp -t ...` / `scp -f ...` parsed into a
//! [`ScpCommand`], with the POSIX shell word splitting simple scp command lines need.
//!
//! Invariant: a line is accepted only if a shell would read it exactly as parsed here;
//! anything that needs a real shell (variables, globs, `;`, pipes, redirections, `~user`,
//! unknown options) gives `None` and is left to the shell.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

/// A parsed `scp -t` or `scp -f` command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScpCommand {
    /// `-t` (receive into `paths[0]`) or `-f` (send `paths`); `paths` is never empty, and
    /// holds exactly one path with `-t`.
    pub(crate) sink: bool,
    /// `-r`: directories are sent or received whole.
    pub(crate) recursive: bool,
    /// `-p`: modes and times are kept (and no umask applies).
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
