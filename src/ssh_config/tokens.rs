//! `~`, `${VAR}` and `%x` expansion with OpenSSH's rules (`misc.c`:
//! `tilde_expand`, `dollar_expand`, `percent_expand`): an unknown `%x`, a
//! lone trailing `%`, an unset variable or an unknown `~user` is an error,
//! never a silent literal.

use std::collections::BTreeMap;
use std::path::Path;

use super::env::home_of;

/// The `%x` tokens available in one context, with their values.
pub(crate) type TokenTable<'a> = [(char, &'a str)];

/// Expands `%x` tokens, and `${VAR}` when `vars` is given, in one pass (a
/// variable's value is not itself expanded, as in OpenSSH).
pub(crate) fn expand(
    s: &str,
    tokens: &TokenTable<'_>,
    vars: Option<&BTreeMap<String, String>>,
) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '$' if vars.is_some() && s[i + 1..].starts_with('{') => {
                let body = &s[i + 2..];
                let end = body
                    .find('}')
                    .ok_or_else(|| format!("missing closing '}}' in \"{s}\""))?;
                let name = &body[..end];
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!("invalid environment variable name \"{name}\""));
                }
                let value = vars
                    .and_then(|v| v.get(name))
                    .ok_or_else(|| format!("env var ${{{name}}} has no value"))?;
                out.push_str(value);
                // Skip "{name}".
                for _ in 0..name.chars().count() + 2 {
                    chars.next();
                }
            }
            '%' => match chars.next() {
                Some((_, '%')) => out.push('%'),
                Some((_, key)) => match tokens.iter().find(|(k, _)| *k == key) {
                    Some((_, value)) => out.push_str(value),
                    None => return Err(format!("unknown token %{key} in \"{s}\"")),
                },
                None => return Err(format!("invalid format: '%' at the end of \"{s}\"")),
            },
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Expands a leading `~` or `~user` like OpenSSH's `tilde_expand_filename`.
pub(crate) fn tilde(s: &str, home: &Path) -> Result<String, String> {
    let Some(rest) = s.strip_prefix('~') else {
        return Ok(s.to_string());
    };
    let (user, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash + 1..]),
        None => (rest, ""),
    };
    let home = if user.is_empty() {
        home.to_path_buf()
    } else {
        home_of(user).ok_or_else(|| format!("no such user \"{user}\" in \"{s}\""))?
    };
    let home = home
        .to_str()
        .ok_or_else(|| format!("home directory of \"{s}\" is not UTF-8"))?
        .to_string();
    let sep = if home.ends_with('/') { "" } else { "/" };
    Ok(format!("{home}{sep}{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_tokens() {
        let t = [('h', "host"), ('p', "22")];
        assert_eq!(expand("%h:%p %%h", &t, None).unwrap(), "host:22 %h");
        assert!(expand("%x", &t, None).unwrap_err().contains("%x"));
        assert!(expand("a%", &t, None).is_err());
        assert_eq!(expand("${X}", &t, None).unwrap(), "${X}");
    }

    #[test]
    fn dollar_vars() {
        let vars: BTreeMap<_, _> = [("X".to_string(), "%h".to_string())].into();
        assert_eq!(expand("a${X}b$Y", &[('h', "no")], Some(&vars)).unwrap(), "a%hb$Y");
        assert!(expand("${NOPE}", &[], Some(&vars)).is_err());
        assert!(expand("${X", &[], Some(&vars)).is_err());
    }

    #[test]
    fn tildes() {
        let home = Path::new("/home/me");
        assert_eq!(tilde("~/.ssh/id", home).unwrap(), "/home/me/.ssh/id");
        assert_eq!(tilde("~", home).unwrap(), "/home/me/");
        assert_eq!(tilde("/a/~", home).unwrap(), "/a/~");
        assert_eq!(tilde("~root/x", home).unwrap(), "/root/x");
        assert!(tilde("~no-such-user-xyz/x", home).is_err());
    }
}
