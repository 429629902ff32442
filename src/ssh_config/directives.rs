//! Applying one directive line to the configuration being built: value
//! syntax checked whether or not the line is active (as OpenSSH does), value
//! stored only when active and not yet obtained (first obtained value wins).

use std::time::Duration;

use super::lexer::Line;
use super::pattern::{match_list, ListMatch};
use super::types::{
    AddressFamily, Algorithms, AlgorithmsOp, ConfigPath, ForwardAgent, IdentityAgent, KnownHostsFiles, Origin, Proxy,
    RequestTty, SshConfig, StrictHostKeyChecking,
};

/// OpenSSH keywords we accept but do not act on (logged at debug level).
const IGNORED: &[&str] = &[
    "addkeystoagent",
    "batchmode",
    "bindaddress",
    "bindinterface",
    "canonicaldomains",
    "canonicalizefallbacklocal",
    "canonicalizehostname",
    "canonicalizemaxdots",
    "canonicalizepermittedcnames",
    "casignaturealgorithms",
    "certificatefile",
    "checkhostip",
    "clearallforwardings",
    "controlmaster",
    "controlpath",
    "controlpersist",
    "dynamicforward",
    "enableescapecommandline",
    "enablesshkeysign",
    "escapechar",
    "exitonforwardfailure",
    "fingerprinthash",
    "forkafterauthentication",
    "forwardx11",
    "forwardx11timeout",
    "forwardx11trusted",
    "gatewayports",
    "gssapiauthentication",
    "gssapidelegatecredentials",
    "gssapikeyexchange",
    "gssapiclientidentity",
    "gssapiserveridentity",
    "gssapirenewalforcesrekey",
    "gssapitrustdns",
    "gssapikexalgorithms",
    "hostbasedacceptedalgorithms",
    "hostbasedkeytypes",
    "hostbasedauthentication",
    "ipqos",
    "kbdinteractivedevices",
    "knownhostscommand",
    "localcommand",
    "localforward",
    "loglevel",
    "logverbose",
    "nohostauthenticationforlocalhost",
    "numberofpasswordprompts",
    "permitlocalcommand",
    "permitremoteopen",
    "pkcs11provider",
    "proxyusefdpass",
    "pubkeyacceptedalgorithms",
    "pubkeyacceptedkeytypes",
    "rekeylimit",
    "remotecommand",
    "remoteforward",
    "requiredrsasize",
    "revokedhostkeys",
    "securitykeyprovider",
    "sendenv",
    "sessiontype",
    "smartcarddevice",
    "stdinnull",
    "streamlocalbindmask",
    "streamlocalbindunlink",
    "syslogfacility",
    "tcpkeepalive",
    "keepalive",
    "tunnel",
    "tunneldevice",
    "updatehostkeys",
    "verifyhostkeydns",
    "visualhostkey",
    "xauthlocation",
    "skeyauthentication",
    "tisauthentication",
    "protocol",
    "cipher",
    "fallbacktorsh",
    "globalknownhostsfile2",
    "rhostsauthentication",
    "userknownhostsfile2",
    "useroaming",
    "usersh",
    "useprivilegedport",
    "rsaauthentication",
    "rhostsrsaauthentication",
    "compressionlevel",
    "afstokenpassing",
    "kerberosauthentication",
    "kerberostgtpassing",
    // Newer than OpenSSH 9.2: accepted so that a config written for a newer ssh still works.
    "channeltimeout",
    "obscurekeystroketiming",
    "tag",
    "refuseconnection",
    "warnweakcrypto",
];

/// Most entries OpenSSH keeps in a known-hosts file list.
const MAX_HOSTS_FILES: usize = 32;
/// Most identity files OpenSSH keeps.
const MAX_IDENTITY_FILES: usize = 100;

/// Stores `$value` into `$field` when the line is active and the field unset.
macro_rules! first {
    ($active:expr, $field:expr, $value:expr) => {{
        let value = $value;
        if $active && $field.is_none() {
            $field = Some(value);
        }
    }};
}

/// Applies `line` (a directive other than Host, Match and Include).
pub(crate) fn apply(cfg: &mut SshConfig, line: &Line, active: bool, origin: &Origin) -> Result<(), String> {
    let args = &line.args;
    match line.keyword.as_str() {
        "hostname" => {
            let value = single(line)?.to_string();
            if active && cfg.hostname.is_none() {
                cfg.hostname = Some(value);
                cfg.origins.insert("hostname".into(), origin.clone());
            }
        }
        "user" => first!(active, cfg.user, single(line)?.to_string()),
        "port" => first!(
            active,
            cfg.port,
            port(single(line)?).ok_or("badly formatted port number")?
        ),
        "identityfile" => {
            let raw = single(line)?;
            if active && !cfg.identity_files.iter().any(|p| p.raw == raw) {
                if cfg.identity_files.len() >= MAX_IDENTITY_FILES {
                    return Err(format!("too many identity files (max {MAX_IDENTITY_FILES})"));
                }
                cfg.identity_files.push(path(raw, origin));
            }
        }
        "identitiesonly" => first!(active, cfg.identities_only, flag(single(line)?)?),
        "identityagent" => first!(active, cfg.identity_agent, agent(single(line)?, origin)?),
        "forwardagent" => {
            let arg = single(line)?;
            let value = match flag(arg) {
                Ok(true) => ForwardAgent::Yes,
                Ok(false) => ForwardAgent::No,
                Err(_) => match agent(arg, origin)? {
                    IdentityAgent::Path(p) => ForwardAgent::Socket(p),
                    // "none" and "SSH_AUTH_SOCK" are plain names here.
                    _ => ForwardAgent::Socket(path(arg, origin)),
                },
            };
            first!(active, cfg.forward_agent, value);
        }
        "proxyjump" => {
            let value = super::jump::proxy_jump(single(line)?)?;
            if active && cfg.proxy.is_none() {
                cfg.proxy = Some(value);
                cfg.origins.insert("proxyjump".into(), origin.clone());
            }
        }
        "proxycommand" => {
            let raw = line.rest.clone();
            let value = if raw == "none" {
                Proxy::None
            } else {
                Proxy::Command {
                    command: raw.clone(),
                    raw,
                }
            };
            if active && cfg.proxy.is_none() {
                cfg.proxy = Some(value);
                cfg.origins.insert("proxycommand".into(), origin.clone());
            }
        }
        "connecttimeout" => {
            if let Some(value) = time_or_none(single(line)?)? {
                first!(active, cfg.connect_timeout, value);
            }
        }
        "connectionattempts" => first!(active, cfg.connection_attempts, int(single(line)?)?),
        "serveraliveinterval" => {
            if let Some(value) = time_or_none(single(line)?)? {
                first!(active, cfg.server_alive_interval, value);
            }
        }
        "serveralivecountmax" => first!(active, cfg.server_alive_count_max, int(single(line)?)?),
        "stricthostkeychecking" => {
            let value = match single(line)?.to_ascii_lowercase().as_str() {
                "yes" | "true" => StrictHostKeyChecking::Yes,
                "ask" => StrictHostKeyChecking::Ask,
                "accept-new" => StrictHostKeyChecking::AcceptNew,
                "no" | "false" | "off" => StrictHostKeyChecking::No,
                other => return Err(format!("unsupported option \"{other}\"")),
            };
            first!(active, cfg.strict_host_key_checking, value);
        }
        "userknownhostsfile" => first!(active, cfg.user_known_hosts_files, hosts_files(args, origin)?),
        "globalknownhostsfile" => first!(active, cfg.global_known_hosts_files, hosts_files(args, origin)?),
        "hostkeyalias" => first!(active, cfg.host_key_alias, single(line)?.to_string()),
        "pubkeyauthentication" => {
            let value = match single(line)?.to_ascii_lowercase().as_str() {
                "unbound" | "host-bound" => true,
                other => flag(other)?,
            };
            first!(active, cfg.pubkey_authentication, value);
        }
        "passwordauthentication" => first!(active, cfg.password_authentication, flag(single(line)?)?),
        "kbdinteractiveauthentication" | "challengeresponseauthentication" => {
            first!(active, cfg.kbd_interactive_authentication, flag(single(line)?)?)
        }
        "preferredauthentications" => {
            first!(active, cfg.preferred_authentications, names(single(line)?)?)
        }
        "ciphers" => first!(active, cfg.ciphers, algorithms(single(line)?)?),
        "kexalgorithms" => first!(active, cfg.kex_algorithms, algorithms(single(line)?)?),
        "macs" => first!(active, cfg.macs, algorithms(single(line)?)?),
        "hostkeyalgorithms" => first!(active, cfg.host_key_algorithms, algorithms(single(line)?)?),
        "compression" => first!(active, cfg.compression, flag(single(line)?)?),
        "hashknownhosts" => first!(active, cfg.hash_known_hosts, flag(single(line)?)?),
        "setenv" => {
            let was_empty = cfg.set_env.is_empty();
            for arg in args {
                let Some((name, value)) = arg.split_once('=') else {
                    return Err(format!("invalid SetEnv \"{arg}\" (no '=')"));
                };
                // Only the first SetEnv line obtained counts, as a whole.
                if active && was_empty && !cfg.set_env.iter().any(|(n, _)| n == name) {
                    cfg.set_env.push((name.to_string(), value.to_string()));
                }
            }
        }
        "requesttty" => {
            let value = match single(line)?.to_ascii_lowercase().as_str() {
                "yes" | "true" => RequestTty::Yes,
                "no" | "false" => RequestTty::No,
                "force" => RequestTty::Force,
                "auto" => RequestTty::Auto,
                other => return Err(format!("unsupported option \"{other}\"")),
            };
            first!(active, cfg.request_tty, value);
        }
        "addressfamily" => {
            let value = match single(line)?.to_ascii_lowercase().as_str() {
                "any" => AddressFamily::Any,
                "inet" => AddressFamily::Inet,
                "inet6" => AddressFamily::Inet6,
                other => return Err(format!("unsupported option \"{other}\"")),
            };
            first!(active, cfg.address_family, value);
        }
        "ignoreunknown" => first!(active, cfg.ignore_unknown, single(line)?.to_string()),
        keyword if IGNORED.contains(&keyword) => log::debug!("{origin}: ignoring unsupported keyword {keyword}"),
        keyword => {
            let ignored = cfg
                .ignore_unknown
                .as_deref()
                .is_some_and(|l| match_list(keyword, l, true) == ListMatch::Yes);
            if !ignored {
                return Err(format!("bad configuration option \"{keyword}\""));
            }
            log::debug!("{origin}: ignoring unknown keyword {keyword} (IgnoreUnknown)");
        }
    }
    // The first active line of a keyword is the one whose value was obtained.
    if active && !cfg.origins.contains_key(line.keyword.as_str()) {
        cfg.origins.insert(line.keyword.clone(), origin.clone());
    }
    Ok(())
}

/// The one non-empty argument a directive takes.
fn single(line: &Line) -> Result<&str, String> {
    match line.args.as_slice() {
        [arg] if !arg.is_empty() => Ok(arg),
        [] | [_] => Err(format!("missing argument for {}", line.keyword)),
        _ => Err(format!("keyword {} extra arguments at end of line", line.keyword)),
    }
}

/// A path, expanded later (when every token is known).
fn path(raw: &str, origin: &Origin) -> ConfigPath {
    ConfigPath {
        raw: raw.to_string(),
        path: raw.into(),
        origin: origin.clone(),
    }
}

fn flag(arg: &str) -> Result<bool, String> {
    match arg.to_ascii_lowercase().as_str() {
        "yes" | "true" => Ok(true),
        "no" | "false" => Ok(false),
        _ => Err(format!("unsupported option \"{arg}\"")),
    }
}

fn int(arg: &str) -> Result<u32, String> {
    arg.parse::<u32>()
        .ok()
        .filter(|&v| v <= i32::MAX as u32)
        .ok_or_else(|| format!("invalid integer \"{arg}\""))
}

/// A TCP port, 1 to 65535, or a tcp service name from `/etc/services`
/// (OpenSSH's `a2port` accepts `Port ssh`).
pub(crate) fn port(arg: &str) -> Option<u16> {
    if arg.bytes().all(|b| b.is_ascii_digit()) {
        return arg.parse::<u16>().ok().filter(|&p| p > 0);
    }
    let services = std::fs::read_to_string("/etc/services").ok()?;
    services
        .lines()
        .find_map(|line| service_port(line.split('#').next().unwrap_or_default(), arg))
}

/// The port of an `/etc/services` line (`name port/proto aliases...`) when
/// it is a tcp service named or aliased `name`.
fn service_port(line: &str, name: &str) -> Option<u16> {
    let mut words = line.split_whitespace();
    let first = words.next()?;
    let (port, proto) = words.next()?.split_once('/')?;
    let named = first == name || words.any(|alias| alias == name);
    (named && proto == "tcp")
        .then(|| port.parse::<u16>().ok().filter(|&p| p > 0))
        .flatten()
}

/// A time directive: `none` leaves it unset (a later line may still set
/// it, as with OpenSSH), anything else goes through `convtime`.
fn time_or_none(arg: &str) -> Result<Option<Duration>, String> {
    if arg.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    time(arg).map(Some)
}

/// OpenSSH's `convtime`: `90`, `1m30s`, `2h`, units s m h d w.
fn time(arg: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid time value \"{arg}\"");
    if arg.is_empty() {
        return Err(invalid());
    }
    let mut total: u64 = 0;
    let mut rest = arg;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let n: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit = match rest.chars().next() {
            None => 1,
            Some(c) => {
                rest = &rest[1..];
                match c.to_ascii_lowercase() {
                    's' => 1,
                    'm' => 60,
                    'h' => 3600,
                    'd' => 86400,
                    'w' => 604800,
                    _ => return Err(invalid()),
                }
            }
        };
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .filter(|&t| t <= i32::MAX as u64)
            .ok_or_else(invalid)?;
    }
    Ok(Duration::from_secs(total))
}

/// `IdentityAgent` (and `ForwardAgent` paths): `none`, `SSH_AUTH_SOCK`,
/// `$VAR` or a path.
fn agent(arg: &str, origin: &Origin) -> Result<IdentityAgent, String> {
    Ok(match arg {
        "none" => IdentityAgent::None,
        "SSH_AUTH_SOCK" => IdentityAgent::SshAuthSock,
        _ if arg.starts_with('$') && !arg.starts_with("${") => {
            let name = &arg[1..];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("invalid environment name \"{arg}\""));
            }
            IdentityAgent::Env(name.to_string())
        }
        _ => IdentityAgent::Path(path(arg, origin)),
    })
}

/// A comma-separated list of names.
fn names(arg: &str) -> Result<Vec<String>, String> {
    let list: Vec<String> = arg.split(',').map(str::to_string).collect();
    if list
        .iter()
        .any(|n| n.is_empty() || n.chars().any(|c| c.is_whitespace()))
    {
        return Err(format!("invalid list \"{arg}\""));
    }
    Ok(list)
}

fn algorithms(arg: &str) -> Result<Algorithms, String> {
    let (op, list) = match arg.chars().next() {
        Some('+') => (AlgorithmsOp::Append, &arg[1..]),
        Some('-') => (AlgorithmsOp::Remove, &arg[1..]),
        Some('^') => (AlgorithmsOp::Prepend, &arg[1..]),
        _ => (AlgorithmsOp::Replace, arg),
    };
    Ok(Algorithms {
        op,
        names: names(list)?,
    })
}

/// `UserKnownHostsFile` / `GlobalKnownHostsFile`: files, or `none` alone.
fn hosts_files(args: &[String], origin: &Origin) -> Result<KnownHostsFiles, String> {
    if args.is_empty() || args.iter().any(|a| a.is_empty()) {
        return Err("empty argument".into());
    }
    if args.iter().any(|a| a.eq_ignore_ascii_case("none")) {
        if args.len() > 1 {
            return Err("\"none\" argument must appear alone".into());
        }
        return Ok(KnownHostsFiles::None);
    }
    if args.len() > MAX_HOSTS_FILES {
        return Err(format!("too many known hosts files (max {MAX_HOSTS_FILES})"));
    }
    Ok(KnownHostsFiles::Files(args.iter().map(|a| path(a, origin)).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(time("90").unwrap(), Duration::from_secs(90));
        assert_eq!(time("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(time("1h1W").unwrap(), Duration::from_secs(3600 + 604800));
        assert_eq!(time_or_none("None").unwrap(), None);
        assert_eq!(port("ssh"), Some(22));
        assert_eq!(port("022"), Some(22));
        assert_eq!(port("0x16"), None);
        for bad in ["", "x", "1x", "-1", "99999999999w"] {
            assert!(time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn algorithm_lists() {
        let d = ["a", "b-1", "b-2", "c"];
        let apply = |s: &str| algorithms(s).unwrap().apply(&d);
        assert_eq!(apply("x,a"), ["x", "a"]);
        assert_eq!(apply("+x,a"), ["a", "b-1", "b-2", "c", "x"]);
        assert_eq!(apply("-b-*"), ["a", "c"]);
        assert_eq!(apply("^c"), ["c", "a", "b-1", "b-2"]);
        assert!(algorithms("a,,b").is_err());
    }
}
