//! OpenSSH's `match.c`: `*`/`?` globs and comma-separated pattern lists in
//! which a matching `!negated` entry makes the whole list fail.

/// Whether `s` matches the glob `pattern` (`*` any run, `?` one character).
pub(crate) fn match_pattern(s: &str, pattern: &str) -> bool {
    let s: Vec<char> = s.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    // Iterative backtracking on the last star keeps this linear in practice
    // and free of recursion depth issues on hostile patterns.
    let (mut si, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            si += 1;
            pi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Result of matching a pattern list, like `match_pattern_list`'s -1/0/1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListMatch {
    /// A negated entry matched: the list fails whatever else matches.
    Negated,
    /// Nothing matched.
    No,
    /// A positive entry matched and no negated one did.
    Yes,
}

/// Matches `s` against a comma-separated list; with `lowercase`, the list is
/// compared in lower case (as `match_hostname` does; `s` must be lower case).
pub(crate) fn match_list(s: &str, list: &str, lowercase: bool) -> ListMatch {
    let mut positive = false;
    for entry in list.split(',') {
        let (negated, entry) = match entry.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, entry),
        };
        let entry = if lowercase {
            entry.to_lowercase()
        } else {
            entry.to_string()
        };
        if match_pattern(s, &entry) {
            if negated {
                return ListMatch::Negated;
            }
            positive = true;
        }
    }
    if positive {
        ListMatch::Yes
    } else {
        ListMatch::No
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(match_pattern("web1.example.com", "web?.*.com"));
        assert!(match_pattern("", "*"));
        assert!(match_pattern("abc", "a**c"));
        assert!(!match_pattern("abc", "a?"));
        assert!(!match_pattern("Web1", "web*"));
        assert!(match_pattern("aaaaaaaaaaaaaaaaaaaaaaaaaaaaab", "*a*a*a*a*a*a*b"));
        assert!(!match_pattern("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "*a*a*a*a*a*a*b"));
    }

    #[test]
    fn lists_with_negation() {
        assert_eq!(match_list("db1", "web*,db*", false), ListMatch::Yes);
        assert_eq!(match_list("db1", "*,!db1", false), ListMatch::Negated);
        assert_eq!(match_list("db2", "!db1", false), ListMatch::No);
        assert_eq!(match_list("web", "WEB", true), ListMatch::Yes);
    }
}
