//! Splitting a configuration file into keyword lines, byte for byte like
//! OpenSSH's `readconf.c` (`strdelim` for the keyword, `argv_split` for the
//! arguments), so that quoting and comments mean what they mean to `ssh`.
//!
//! A pure function of (bytes, path): no file system, no environment, so it
//! can be fuzzed on its own.

use std::path::Path;

use super::ConfigError;

/// One non-empty, non-comment line of a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    /// 1-based line number, for error messages.
    pub number: usize,
    /// The keyword, lowercased (keywords are case-insensitive).
    pub keyword: String,
    /// The arguments after quote removal; a trailing `# comment` is dropped.
    pub args: Vec<String>,
    /// The text after the keyword and its separator, untouched: ProxyCommand
    /// takes its command line verbatim, quotes and all.
    pub rest: String,
}

/// The bytes OpenSSH strips from line ends and skips between words.
const WHITESPACE: &[char] = &[' ', '\t', '\r', '\n'];

/// Splits `bytes` (the content of `path`) into lines.
pub(crate) fn parse(bytes: &[u8], path: &Path) -> Result<Vec<Line>, ConfigError> {
    let mut lines = Vec::new();
    for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let number = index + 1;
        let invalid = |message: String| ConfigError::invalid(path, number, message);
        if raw.contains(&0) {
            return Err(invalid("NUL byte in line".into()));
        }
        let Ok(text) = std::str::from_utf8(raw) else {
            // Comments are free text: a Latin-1 name in one must not break
            // a file OpenSSH reads; anything else must be UTF-8.
            if raw.trim_ascii_start().starts_with(b"#") {
                continue;
            }
            return Err(invalid("line is not valid UTF-8".into()));
        };
        if let Some(line) = parse_line(text, number).map_err(invalid)? {
            lines.push(line);
        }
    }
    Ok(lines)
}

/// Parses one line; `Ok(None)` for blank and comment lines.
fn parse_line(text: &str, number: usize) -> Result<Option<Line>, String> {
    // A form feed may end a line too.
    let text = text.trim_end_matches(|c| WHITESPACE.contains(&c) || c == '\x0c');
    let text = text.trim_start_matches(WHITESPACE);
    if text.is_empty() || text.starts_with('#') {
        return Ok(None);
    }
    let end = text
        .find(|c| WHITESPACE.contains(&c) || c == '=' || c == '"')
        .unwrap_or(text.len());
    let keyword = &text[..end];
    if keyword.is_empty() {
        return Err("missing keyword".into());
    }
    let mut rest = &text[end..];
    if rest.starts_with('"') {
        return Err(format!("quote in keyword \"{keyword}\""));
    }
    // Like strdelim: one '=' may separate keyword and value, with any
    // whitespace around it.
    let mut seen_equals = false;
    if let Some(r) = rest.strip_prefix('=') {
        seen_equals = true;
        rest = r;
    }
    rest = rest.trim_start_matches(WHITESPACE);
    if !seen_equals {
        if let Some(r) = rest.strip_prefix('=') {
            rest = r.trim_start_matches(WHITESPACE);
        }
    }
    if rest.is_empty() {
        return Err(format!("no argument after keyword \"{keyword}\""));
    }
    let args = split_args(rest).ok_or_else(|| "invalid quotes".to_string())?;
    Ok(Some(Line {
        number,
        keyword: keyword.to_ascii_lowercase(),
        args,
        rest: rest.to_string(),
    }))
}

/// OpenSSH's `argv_split` with comment termination; `None` on an unclosed quote.
pub(crate) fn split_args(s: &str) -> Option<Vec<String>> {
    let chars: Vec<char> = s.chars().collect();
    let mut args = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == ' ' || chars[i] == '\t' {
            i += 1;
            continue;
        }
        if chars[i] == '#' {
            break;
        }
        let mut quote: Option<char> = None;
        let mut arg = String::new();
        while i < chars.len() {
            let c = chars[i];
            let next = chars.get(i + 1).copied();
            if c == '\\' {
                match next {
                    Some(n) if n == '\'' || n == '"' || n == '\\' || (quote.is_none() && n == ' ') => {
                        arg.push(n);
                        i += 1;
                    }
                    _ => arg.push(c),
                }
            } else if quote.is_none() && (c == ' ' || c == '\t') {
                break;
            } else if quote.is_none() && (c == '"' || c == '\'') {
                quote = Some(c);
            } else if quote == Some(c) {
                quote = None;
            } else {
                arg.push(c);
            }
            i += 1;
        }
        if quote.is_some() {
            return None;
        }
        args.push(arg);
    }
    Some(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Line {
        parse(text.as_bytes(), Path::new("t")).unwrap().remove(0)
    }

    #[test]
    fn keyword_forms() {
        for text in ["Port 22", "  port=22", "PORT = 22", "Port\t=\t22 # c", "Port  22\r"] {
            let line = one(text);
            assert_eq!(
                (line.keyword.as_str(), line.args.clone()),
                ("port", vec!["22".to_string()]),
                "{text}"
            );
        }
    }

    #[test]
    fn quotes_and_escapes() {
        let line = one(r#"SetEnv "A=b c" 'D=e#f' G=h\ i x"y z"w #x"#);
        assert_eq!(line.args, ["A=b c", "D=e#f", "G=h i", "xy zw"]);
        assert_eq!(one("ProxyCommand nc \"%h\" %p # c").rest, "nc \"%h\" %p # c");
    }

    /// Random lines from an alphabet of the characters that matter never
    /// panic, and every line kept has a keyword and an argument.
    #[test]
    fn random_input_never_panics() {
        let alphabet = b" \t\r\n=\"'\\#%$~{}!*?,Hh0aZ\xc3\xa9\x00\xff";
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..5000 {
            let len = (state % 40) as usize;
            let mut bytes = Vec::with_capacity(len);
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                bytes.push(alphabet[(state % alphabet.len() as u64) as usize]);
            }
            if let Ok(lines) = parse(&bytes, Path::new("/fuzz")) {
                assert!(
                    lines.iter().all(|l| !l.keyword.is_empty() && !l.rest.is_empty()),
                    "{bytes:?}"
                );
            }
        }
    }

    #[test]
    fn malformed_lines_name_the_line() {
        for text in ["\nPort", "Port \"22", "=22", "a\0b", "Port 2=2\n\"x\" y"] {
            let err = parse(text.as_bytes(), Path::new("/f")).unwrap_err().to_string();
            assert!(err.starts_with("/f:"), "{err}");
        }
        assert!(parse(b"Port \xff", Path::new("/f")).is_err());
        assert_eq!(parse(b"  # caf\xe9\nPort 1", Path::new("/f")).unwrap()[0].number, 2);
        assert!(parse(b"# only\n\n   \n", Path::new("/f")).unwrap().is_empty());
    }
}
