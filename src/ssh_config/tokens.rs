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

/// `%C`: the hex SHA-1 of `%l%h%p%r`, as OpenSSH's `ssh_connection_hash`.
pub(crate) fn connection_hash(local_host: &str, host: &str, port: &str, user: &str) -> String {
    sha1(format!("{local_host}{host}{port}{user}").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// SHA-1 (FIPS 180-4): only for `%C`, a file-name hash, not for security.
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut message = data.to_vec();
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&((data.len() as u64).wrapping_mul(8)).to_be_bytes());
    for block in message.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, &wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(wi);
            (e, d, c, b, a) = (d, c, b.rotate_left(30), a, t);
        }
        for (hv, v) in h.iter_mut().zip([a, b, c, d, e]) {
            *hv = hv.wrapping_add(v);
        }
    }
    let mut out = [0u8; 20];
    for (chunk, v) in out.chunks_exact_mut(4).zip(h) {
        chunk.copy_from_slice(&v.to_be_bytes());
    }
    out
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
    fn connection_hash_is_openssh_percent_c() {
        // `ssh -G` printed this for %C with host x, port 22, user root on "vm".
        assert_eq!(
            connection_hash("vm", "x", "22", "root"),
            "4f8e0550bf3371189ae207c2d5184ce91404fa01"
        );
        let empty: String = sha1(b"").iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(empty, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        let long: String = sha1(&[b'a'; 1000]).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(long, "291e9a6c66994949b57ba5e650361e98fc36b1ba");
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
