//! `ProxyJump` values: `none`, or comma-separated hops written
//! `[user@]host[:port]` or `ssh://[user[;params]@]host[:port][/]`, accepted
//! and refused exactly as OpenSSH 9.2's `parse_jump` does.

use super::directives;
use super::types::{Jump, Proxy};

/// `ProxyJump`: `none`, or comma-separated `[user@]host[:port]` / `ssh://` hops.
pub(crate) fn proxy_jump(arg: &str) -> Result<Proxy, String> {
    if arg.eq_ignore_ascii_case("none") {
        return Ok(Proxy::None);
    }
    let jumps = arg.split(',').map(jump).collect::<Option<Vec<_>>>();
    let jumps = jumps.ok_or_else(|| format!("invalid ProxyJump \"{arg}\""))?;
    Ok(Proxy::Jump {
        spec: arg.to_string(),
        jumps,
    })
}

/// One hop: `ssh://[user[;params]@]host[:port][/]` or `[user@]host[:port]`.
fn jump(s: &str) -> Option<Jump> {
    if let Some(uri) = s.strip_prefix("ssh://") {
        // OpenSSH 9.2's parse_uri refuses an empty port before the path,
        // and bracketed addresses.
        if uri.ends_with(":/") {
            return None;
        }
        let uri = uri.strip_suffix('/').unwrap_or(uri);
        if uri.contains(['/', '[']) {
            return None;
        }
        let (user, hostport) = match uri.split_once('@') {
            Some((user, rest)) => {
                let user = user.split(';').next().unwrap_or_default();
                (Some(url_decode(user).filter(|u| !u.is_empty())?), rest)
            }
            None => (None, uri),
        };
        let (host, port) = host_port(hostport)?;
        return Some(Jump { user, host, port });
    }
    let (user, hostport) = match s.rsplit_once('@') {
        Some(("", _)) => return None,
        Some((user, rest)) => (Some(user.to_string()), rest),
        None => (None, s),
    };
    let (host, port) = host_port(hostport)?;
    Some(Jump { user, host, port })
}

/// `%XX` decoding of a URI's user part.
fn url_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`; an empty port is no port.
fn host_port(s: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match s.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        Some("") | None => None,
        Some(p) => Some(directives::port(p)?),
    };
    Some((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps() {
        let Proxy::Jump { jumps: j, .. } = proxy_jump("u@a:2,[::1]:22,ssh://me;x@h:44/,x@y@z,ssh://u%41@h:").unwrap()
        else {
            panic!()
        };
        assert_eq!(
            j[0],
            Jump {
                user: Some("u".into()),
                host: "a".into(),
                port: Some(2)
            }
        );
        assert_eq!(
            j[1],
            Jump {
                user: None,
                host: "::1".into(),
                port: Some(22)
            }
        );
        assert_eq!(
            j[2],
            Jump {
                user: Some("me".into()),
                host: "h".into(),
                port: Some(44)
            }
        );
        assert_eq!(j[3].user.as_deref(), Some("x@y"));
        assert_eq!(
            j[4],
            Jump {
                user: Some("uA".into()),
                host: "h".into(),
                port: None
            }
        );
        assert_eq!(proxy_jump("NONE").unwrap(), Proxy::None);
        for bad in [
            "a:0",
            "@a",
            "a,,b",
            "a:x",
            "ssh://a/p",
            "[::1",
            "ssh://[::1]",
            "ssh://",
            "ssh://%zz@h",
        ] {
            assert!(proxy_jump(bad).is_err(), "{bad}");
        }
    }
}
