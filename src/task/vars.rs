//! `%NAME%` variable expansion in commands, paths and output file names.
//!
//! Invariant: `%%` is a literal `%`; an unknown name is an error, never left
//! as it was or replaced by nothing.
//!
//! May use: `error` only.

use std::borrow::Cow;
use std::sync::OnceLock;

use regex::{Captures, Regex};

use crate::error::{Error, ErrorKind, Result};

fn pattern() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    // An empty name is `%%`, the escape for a literal `%`.
    RE.get_or_init(|| Regex::new(r"%([A-Za-z0-9_]*)%").expect("static regex"))
}

/// Replaces every `%NAME%` in `text` through `lookup`; `%%` is a literal `%`.
/// A name `lookup` does not know is an [`ErrorKind::UnknownVariable`] naming it.
pub(crate) fn expand<'a>(text: &'a str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Cow<'a, str>> {
    if !text.contains('%') {
        return Ok(Cow::Borrowed(text));
    }
    let mut unknown = None;
    let out = pattern().replace_all(text, |c: &Captures| {
        let name = &c[1];
        if name.is_empty() {
            return "%".to_owned();
        }
        match lookup(name) {
            Some(v) => v,
            None => {
                unknown.get_or_insert_with(|| name.to_owned());
                String::new()
            }
        }
    });
    match unknown {
        Some(name) => Err(Error::new(
            ErrorKind::UnknownVariable,
            format!("unknown variable %{name}% in {text:?} (write %% for a literal %)"),
        )),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(n: &str) -> Option<String> {
        match n {
            "LABEL" => Some("web1".into()),
            "HOST" => Some("h".into()),
            _ => None,
        }
    }

    #[test]
    fn expands_known_and_escapes() {
        assert_eq!(expand("a %LABEL% %HOST%%% 100%%", &vars).unwrap(), "a web1 h% 100%");
        assert_eq!(expand("date +%Y-%m", &vars).unwrap(), "date +%Y-%m");
        assert!(matches!(expand("plain", &vars).unwrap(), Cow::Borrowed(_)));
    }

    #[test]
    fn unknown_is_an_error_naming_it() {
        let e = expand("echo %LABLE%", &vars).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnknownVariable);
        assert!(e.to_string().contains("%LABLE%"), "{e}");
    }
}
