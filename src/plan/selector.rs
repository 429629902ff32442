//! Labels and the selector mini-language (`web*, db1`): which labels may be
//! registered, and how a selector is parsed and resolved.
//!
//! Invariant: a label that `validate_label` accepts can always be named by an
//! exact selector part (it holds none of the language's characters).
//!
//! May use: `error` only.

use regex::Regex;

use crate::error::{Error, ErrorKind, Result};

/// Characters a label may not contain: they are the selector language's own,
/// or reserved for its future (negation, grouping, ranges).
const RESERVED: &[char] = &[',', '*', '!', '(', ')', '<', '>', '/', '{', '}'];

/// Checks that `label` can be registered and selected.
pub(crate) fn validate_label(label: &str) -> Result<()> {
    let bad = |why: String| {
        Err(Error::new(
            ErrorKind::InvalidLabel,
            format!("invalid label {label:?}: {why}"),
        ))
    };
    if label.is_empty() {
        return bad("a label must not be empty".into());
    }
    if let Some(c) = label.chars().find(|c| RESERVED.contains(c)) {
        return bad(format!(
            "{c:?} is reserved (labels may not contain any of , * ! ( ) < > / {{ }})"
        ));
    }
    if let Some(c) = label.chars().find(|c| c.is_control()) {
        return bad(format!(
            "control character {c:?} (labels name files and prefix output lines)"
        ));
    }
    if label.trim() != label {
        return bad("leading or trailing whitespace could never be selected".into());
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Part {
    Exact(String),
    All,
    Pattern(Regex),
}

/// A parsed selector: comma-separated parts, each a whole-label match where `*`
/// matches any run of characters. Case-sensitive.
#[derive(Debug, Clone)]
pub struct Selector {
    text: String,
    parts: Vec<Part>,
}

impl Selector {
    /// Parses `text`; an empty selector, an empty part or a reserved character
    /// is an [`ErrorKind::InvalidSelector`] naming the culprit.
    pub fn parse(text: &str) -> Result<Selector> {
        let bad = |why: String| {
            Err(Error::new(
                ErrorKind::InvalidSelector,
                format!("invalid selector {text:?}: {why}"),
            ))
        };
        if text.trim().is_empty() {
            return bad("a selector must not be empty".into());
        }
        let mut parts = Vec::new();
        for raw in text.split(',') {
            let part = raw.trim();
            if part.is_empty() {
                return bad("it has an empty part (check the commas)".into());
            }
            if let Some(c) = part.chars().find(|&c| c != '*' && RESERVED.contains(&c)) {
                return bad(format!("{c:?} is reserved in part {part:?}"));
            }
            if part.chars().all(|c| c == '*') {
                parts.push(Part::All);
            } else if part.contains('*') {
                let pattern = part.split('*').map(regex::escape).collect::<Vec<_>>().join(".*");
                let re = Regex::new(&format!("^(?s:{pattern})$"))
                    .map_err(|e| Error::new(ErrorKind::InvalidSelector, format!("invalid selector {text:?}: {e}")))?;
                parts.push(Part::Pattern(re));
            } else {
                parts.push(Part::Exact(part.to_owned()));
            }
        }
        Ok(Selector {
            text: text.to_owned(),
            parts,
        })
    }

    /// The selector as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parts naming one label exactly (no `*`), as written.
    pub(crate) fn exact_parts(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Exact(s) => Some(s.as_str()),
            _ => None,
        })
    }

    /// Whether `label` is selected.
    pub fn matches(&self, label: &str) -> bool {
        self.parts.iter().any(|p| match p {
            Part::Exact(s) => s == label,
            Part::All => true,
            Part::Pattern(re) => re.is_match(label),
        })
    }

    /// The indices of the selected labels among `labels` (in registration order),
    /// using `lookup` for exact parts so that a list of names costs no scan.
    pub(crate) fn resolve<'a>(
        &self,
        labels: impl ExactSizeIterator<Item = &'a str>,
        lookup: impl Fn(&str) -> Option<usize>,
    ) -> Vec<usize> {
        if self.parts.iter().any(|p| matches!(p, Part::All)) {
            return (0..labels.len()).collect();
        }
        if self.parts.iter().all(|p| matches!(p, Part::Exact(_))) {
            let mut ids: Vec<usize> = self
                .parts
                .iter()
                .filter_map(|p| match p {
                    Part::Exact(s) => lookup(s),
                    _ => None,
                })
                .collect();
            ids.sort_unstable();
            ids.dedup();
            return ids;
        }
        labels
            .enumerate()
            .filter(|(_, l)| self.matches(l))
            .map(|(i, _)| i)
            .collect()
    }
}

/// What `push` and `select` take to name labels: a selector as text (`&str`,
/// `String`), parsed on the spot, or a [`Selector`] parsed beforehand.
pub trait IntoSelector {
    /// The parsed selector; text that does not parse is an
    /// [`ErrorKind::InvalidSelector`] error.
    fn into_selector(self) -> Result<Selector>;
}

impl IntoSelector for Selector {
    fn into_selector(self) -> Result<Selector> {
        Ok(self)
    }
}

impl IntoSelector for &Selector {
    fn into_selector(self) -> Result<Selector> {
        Ok(self.clone())
    }
}

impl IntoSelector for &str {
    fn into_selector(self) -> Result<Selector> {
        Selector::parse(self)
    }
}

impl IntoSelector for String {
    fn into_selector(self) -> Result<Selector> {
        Selector::parse(&self)
    }
}

impl IntoSelector for &String {
    fn into_selector(self) -> Result<Selector> {
        Selector::parse(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_matches_runs_including_empty() {
        let s = Selector::parse("web*").unwrap();
        assert!(s.matches("web"));
        assert!(s.matches("web12"));
        assert!(!s.matches("aweb"));
        assert!(!s.matches("Web1"));
        let s = Selector::parse("*doz*").unwrap();
        assert!(s.matches("doz") && s.matches("a-doz-b"));
    }

    #[test]
    fn other_characters_are_literal() {
        let s = Selector::parse("a.b*").unwrap();
        assert!(s.matches("a.bc"));
        assert!(!s.matches("axbc"));
        let s = Selector::parse("x?y").unwrap();
        assert!(s.matches("x?y") && !s.matches("xay"));
    }

    #[test]
    fn parts_are_trimmed_and_unioned() {
        let s = Selector::parse(" a , b* ").unwrap();
        assert!(s.matches("a") && s.matches("bb") && !s.matches(" a"));
    }

    #[test]
    fn push_and_select_take_text_or_a_parsed_selector() {
        let mut p = crate::Parallel::new();
        for l in ["web1", "web2", "db1"] {
            p.add_host(l, crate::Host::local()).unwrap();
        }
        let sel = Selector::parse("web*").unwrap();
        assert_eq!(p.select(&sel).unwrap(), vec!["web1", "web2"]);
        assert_eq!(p.select(String::from("db*")).unwrap(), vec!["db1"]);
        let pushed = p.push(sel, crate::Here::new("x")).unwrap();
        assert_eq!(pushed, p.select("web*").unwrap());
        assert_eq!(p.queued_tasks(), 2);
    }

    #[test]
    fn malformed_selectors_are_rejected() {
        for bad in ["", "  ", "a,,b", "a,", "!a", "a(b)", "a/b"] {
            let e = Selector::parse(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidSelector, "{bad:?}");
        }
    }

    #[test]
    fn labels_with_reserved_characters_are_rejected() {
        for bad in ["", "a,b", "a*", "!x", "(x", "x)", "<", ">", "a/b", "{", "}", " a"] {
            assert_eq!(
                validate_label(bad).unwrap_err().kind(),
                ErrorKind::InvalidLabel,
                "{bad:?}"
            );
        }
        validate_label("web-1.example.com:22@x").unwrap();
    }
}
