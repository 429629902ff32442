//! `-o Key=Value` ssh_config directives, and the `Host` each target gets from
//! them and the other login options.
//!
//! Only the directives the `Host` builder can express are accepted; any other
//! is a usage error naming it rather than being silently ignored.

use std::path::PathBuf;
use std::time::Duration;

use ssh_parallel::{Host, HostKeyCheck};

use crate::args::Common;
use crate::hosts::Target;

/// `IdentityAgent`: none, the default `$SSH_AUTH_SOCK`, or a socket.
#[derive(Debug, Clone)]
enum Agent {
    Off,
    Default,
    Socket(PathBuf),
}

/// The directives given with `-o`, after parsing.
#[derive(Debug, Default, Clone)]
pub struct SshOptions {
    user: Option<String>,
    port: Option<u16>,
    identity_files: Vec<PathBuf>,
    identities_only: bool,
    agent: Option<Agent>,
    connect_timeout: Option<Duration>,
    host_key_check: Option<HostKeyCheck>,
    keepalive: Option<Duration>,
    keepalive_count_max: Option<u32>,
}

const KNOWN: &str = "User, Port, IdentityFile, IdentitiesOnly, IdentityAgent, ConnectTimeout, \
StrictHostKeyChecking, ServerAliveInterval, ServerAliveCountMax, BatchMode, PasswordAuthentication";

impl SshOptions {
    /// Parses `Key=Value` or `Key Value` directives; keys are case-insensitive.
    /// As in ssh, the first value given for a key wins (IdentityFile adds up).
    pub fn parse(directives: &[String]) -> Result<SshOptions, String> {
        let mut o = SshOptions::default();
        for d in directives {
            let (key, value) = split_directive(d)?;
            let bad = |what: &str| format!("-o {d:?}: {key} {what}");
            match key.to_ascii_lowercase().as_str() {
                "user" => {
                    o.user.get_or_insert_with(|| value.to_owned());
                }
                "port" => {
                    let p = value.parse::<u16>().ok().filter(|p| *p > 0);
                    let p = p.ok_or_else(|| bad("must be a port number from 1 to 65535"))?;
                    o.port.get_or_insert(p);
                }
                "identityfile" => o.identity_files.push(PathBuf::from(value)),
                "identitiesonly" => o.identities_only = yes_no(value).ok_or_else(|| bad("must be yes or no"))?,
                "identityagent" => {
                    let agent = match value {
                        "none" => Agent::Off,
                        "SSH_AUTH_SOCK" => Agent::Default,
                        path => Agent::Socket(PathBuf::from(path)),
                    };
                    o.agent.get_or_insert(agent);
                }
                "connecttimeout" => {
                    let t = seconds(value).ok_or_else(|| bad("must be a number of seconds"))?;
                    o.connect_timeout.get_or_insert(t);
                }
                "stricthostkeychecking" => {
                    let check = match value.to_ascii_lowercase().as_str() {
                        "yes" | "ask" => HostKeyCheck::Strict,
                        "accept-new" => HostKeyCheck::AcceptNew,
                        "no" | "off" => HostKeyCheck::Off,
                        _ => return Err(bad("must be yes, accept-new or no")),
                    };
                    o.host_key_check.get_or_insert(check);
                }
                "serveraliveinterval" => {
                    let t = value
                        .parse::<u64>()
                        .map_err(|_| bad("must be a whole number of seconds"))?;
                    o.keepalive.get_or_insert(Duration::from_secs(t));
                }
                "serveralivecountmax" => {
                    let n = value.parse::<u32>().ok().filter(|n| *n > 0);
                    let n = n.ok_or_else(|| bad("must be a number above 0"))?;
                    o.keepalive_count_max.get_or_insert(n);
                }
                // Never prompting is all this program does; the values only
                // need to be well-formed.
                "batchmode" | "passwordauthentication" => {
                    yes_no(value).ok_or_else(|| bad("must be yes or no"))?;
                }
                _ => {
                    return Err(format!(
                        "-o {d:?}: unsupported ssh_config directive {key:?} (supported: {KNOWN})"
                    ))
                }
            }
        }
        Ok(o)
    }

    /// The `Host` for `target`: the `user@` of the node set first, then `-l`,
    /// then `-o User`; `-i` keys before `-o IdentityFile` ones.
    pub fn host_for(&self, target: &Target, common: &Common) -> Result<Host, String> {
        let mut h = Host::parse(&target.label).map_err(|e| e.to_string())?;
        // User commands and paths are passed through as typed: `date +%s%N`
        // must not be read as a `%VAR%` reference.
        h = h.expand_vars(false);
        if let Some(u) = target.user.as_ref().or(common.user.as_ref()).or(self.user.as_ref()) {
            h = h.user(u.clone());
        }
        if h.port_number().is_none() {
            if let Some(p) = self.port {
                h = h.port(p);
            }
        }
        for key in common.identity.iter().chain(&self.identity_files) {
            h = h.key_file(expand_tilde(key));
        }
        match &self.agent {
            Some(Agent::Off) => h = h.agent(false),
            Some(Agent::Default) => h = h.agent(true),
            Some(Agent::Socket(path)) => h = h.agent_socket(expand_tilde(path)),
            None if self.identities_only => h = h.agent(false),
            None => {}
        }
        let connect = common.connect_timeout.map(secs).transpose()?.or(self.connect_timeout);
        if let Some(t) = connect {
            h = h.connect_timeout(t);
        }
        if let Some(c) = self.host_key_check {
            h = h.host_key_check(c);
        }
        if let Some(k) = self.keepalive {
            h = h.keepalive(k);
        }
        if let Some(n) = self.keepalive_count_max {
            h = h.keepalive_count_max(n);
        }
        Ok(h)
    }
}

fn split_directive(d: &str) -> Result<(&str, &str), String> {
    let d_trim = d.trim();
    let (k, v) = match d_trim.split_once('=') {
        Some((k, v)) => (k.trim(), v.trim()),
        None => match d_trim.split_once(char::is_whitespace) {
            Some((k, v)) => (k.trim(), v.trim()),
            None => return Err(format!("-o {d:?}: expected Key=Value")),
        },
    };
    if k.is_empty() || v.is_empty() {
        return Err(format!("-o {d:?}: expected Key=Value"));
    }
    Ok((k, v))
}

fn yes_no(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

fn seconds(v: &str) -> Option<Duration> {
    v.parse::<f64>().ok().and_then(|s| secs(s).ok())
}

/// A timeout option's seconds as a `Duration`; zero, negative or absurd
/// values are refused.
pub fn secs(s: f64) -> Result<Duration, String> {
    if s.is_finite() && s > 0.0 && s < 1e9 {
        Ok(Duration::from_secs_f64(s))
    } else {
        Err(format!("timeout {s} must be a number of seconds above 0"))
    }
}

fn expand_tilde(p: &std::path::Path) -> PathBuf {
    match (p.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => p.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives() {
        let o = SshOptions::parse(&["port=2222".into(), "StrictHostKeyChecking no".into(), "Port=1".into()]).unwrap();
        assert_eq!(o.port, Some(2222));
        assert_eq!(o.host_key_check, Some(HostKeyCheck::Off));
        let e = SshOptions::parse(&["ProxyJump=bastion".into()]).unwrap_err();
        assert!(e.contains("unsupported ssh_config directive \"ProxyJump\""), "{e}");
        assert!(SshOptions::parse(&["Port=x".into()]).is_err());
        assert!(SshOptions::parse(&["Port".into()]).is_err());
    }
}
