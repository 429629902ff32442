//! Host descriptions: where a label's tasks run and how to reach it.
//!
//! Invariant: a `Host` is plain data, shared read-only (`Arc<Host>`) by the
//! plan and every job once registered.
//!
//! `config` applies the user's OpenSSH configuration to a host; `route`
//! says how it is reached when not directly (jump hosts, a proxy command).
//!
//! May use: `error`, `policy` (`OnError`), `fault` (a fault host's script),
//! `ssh_config` (through `config`).

mod config;
mod route;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::policy::OnError;

pub(crate) use config::{AlgorithmKind, ConfigSource, SshConfigs, SshSettings};
pub(crate) use route::Route;

/// Keepalive interval when none is set (see [`Host::keepalive`]).
pub(crate) const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(15);
/// Unanswered keepalives before a connection is declared lost.
pub(crate) const DEFAULT_KEEPALIVE_COUNT_MAX: u32 = 3;

/// How the SSH server's host key is checked against `~/.ssh/known_hosts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostKeyCheck {
    /// Unknown or mismatched keys are refused (the default).
    #[default]
    Strict,
    /// Unknown keys are recorded and accepted; mismatches are refused.
    AcceptNew,
    /// No check at all (explicit opt-in).
    Off,
}

/// Which transport carries a host's tasks.
#[derive(Clone)]
pub(crate) enum Target {
    /// Processes on this machine.
    Local,
    /// An SSH server.
    Ssh,
    /// The scriptable fault-injection transport.
    #[cfg(feature = "fault-injection")]
    Fault(crate::fault::Fault),
}

/// A host a label runs on: this machine, or an SSH server with its login details.
///
/// ```
/// use ssh_parallel::{Host, HostKeyCheck};
/// let h = Host::parse("deploy@web1.example.com:2222")?
///     .key_file("/home/me/.ssh/id_ed25519")
///     .host_key_check(HostKeyCheck::AcceptNew)
///     .var("ROLE", "frontend");
/// # Ok::<(), ssh_parallel::Error>(())
/// ```
#[derive(Clone)]
pub struct Host {
    pub(crate) target: Target,
    /// The name given (what OpenSSH `Host` patterns see).
    pub(crate) alias: String,
    /// Where to connect: the alias, or the configuration's `HostName`.
    pub(crate) hostname: String,
    pub(crate) user: Option<String>,
    pub(crate) port: Option<u16>,
    pub(crate) password: Option<String>,
    pub(crate) key_files: Vec<PathBuf>,
    pub(crate) key_data: Vec<String>,
    pub(crate) passphrase: Option<String>,
    pub(crate) agent: bool,
    pub(crate) agent_socket: Option<PathBuf>,
    /// Agent forwarding: `None` until the API or the configuration decides
    /// (then off); the API's choice wins.
    pub(crate) forward_agent: Option<bool>,
    /// The agent socket to forward (`ForwardAgent /path`) instead of the
    /// agent in use.
    pub(crate) forward_agent_socket: Option<PathBuf>,
    pub(crate) host_key_check: HostKeyCheck,
    pub(crate) connect_timeout: Option<Duration>,
    pub(crate) auth_timeout: Option<Duration>,
    pub(crate) keepalive: Duration,
    pub(crate) keepalive_count_max: u32,
    pub(crate) on_error: Option<OnError>,
    pub(crate) reconnections: Option<u32>,
    pub(crate) vars: BTreeMap<String, String>,
    pub(crate) expand_vars: bool,
    /// Which defaultable settings the API set (they win over the configuration).
    pub(crate) set: Explicit,
    /// What the OpenSSH configuration decided beyond the fields above.
    pub(crate) ssh: SshSettings,
    /// How the host is reached when not directly. Before `add_host`: what
    /// the API asked for (`None`: the configuration decides); after it,
    /// resolved: `None` or [`Route::Direct`] directly, [`Route::Jumps`] with
    /// every hop itself resolved, [`Route::Command`] with its tokens expanded.
    pub(crate) route: Option<Route>,
}

/// Settings with a non-`Option` default that the API set explicitly.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Explicit {
    pub(crate) agent: bool,
    pub(crate) host_key_check: bool,
    pub(crate) keepalive: bool,
    pub(crate) keepalive_count_max: bool,
}

impl Host {
    fn with_target(target: Target, hostname: String) -> Host {
        Host {
            target,
            alias: hostname.clone(),
            hostname,
            user: None,
            port: None,
            password: None,
            key_files: Vec::new(),
            key_data: Vec::new(),
            passphrase: None,
            agent: true,
            agent_socket: None,
            forward_agent: None,
            forward_agent_socket: None,
            host_key_check: HostKeyCheck::Strict,
            connect_timeout: None,
            auth_timeout: None,
            keepalive: DEFAULT_KEEPALIVE,
            keepalive_count_max: DEFAULT_KEEPALIVE_COUNT_MAX,
            on_error: None,
            reconnections: None,
            vars: BTreeMap::new(),
            expand_vars: true,
            set: Explicit::default(),
            ssh: SshSettings::default(),
            route: None,
        }
    }

    /// This machine: commands run under `sh -c`, scp is a file copy and rsync the
    /// local rsync binary. No SSH is involved.
    pub fn local() -> Host {
        Host::with_target(Target::Local, "localhost".to_owned())
    }

    /// An SSH server by host name, address or OpenSSH alias. When the host is
    /// registered ([`Parallel::add_host`](crate::Parallel::add_host)), the
    /// user's OpenSSH configuration is resolved for this name (as `ssh NAME`
    /// would) and fills in what the `Host` API leaves unset; see the README's
    /// "Using your OpenSSH configuration".
    pub fn new(hostname: impl Into<String>) -> Host {
        Host::with_target(Target::Ssh, hostname.into())
    }

    /// Parses `[user@]host[:port]`; IPv6 addresses go in brackets: `[::1]:2222`.
    /// The user and port given here win over the OpenSSH configuration, as
    /// with `ssh -l USER -p PORT`.
    pub fn parse(spec: &str) -> Result<Host> {
        let bad = |why: &str| {
            Err(Error::new(
                ErrorKind::InvalidHost,
                format!("invalid host {spec:?}: {why}"),
            ))
        };
        let (user, rest) = match spec.rsplit_once('@') {
            Some(("", _)) => return bad("the user before '@' is empty"),
            Some((u, r)) => (Some(u.to_owned()), r),
            None => (None, spec),
        };
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            let Some((h, after)) = inner.split_once(']') else {
                return bad("missing ']' after the IPv6 address");
            };
            match after {
                "" => (h, None),
                p if p.starts_with(':') => (h, Some(&p[1..])),
                _ => return bad("unexpected text after ']'"),
            }
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (h, Some(p)),
                // More than one ':' without brackets: a bare IPv6 address.
                Some(_) => (rest, None),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return bad("the host name is empty");
        }
        if host.chars().any(char::is_whitespace) {
            return bad("the host name contains whitespace");
        }
        if let Some(c) = spec.chars().find(|c| c.is_control()) {
            return bad(&format!("control character {c:?}"));
        }
        let mut h = Host::new(host);
        h.user = user;
        if let Some(p) = port {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => h.port = Some(n),
                _ => return bad(&format!("port {p:?} is not a number from 1 to 65535")),
            }
        }
        Ok(h)
    }

    #[cfg(feature = "fault-injection")]
    /// A host served by the fault-injection transport, following `script`.
    pub fn fault(script: crate::fault::Fault) -> Host {
        Host::with_target(Target::Fault(script), "fault".to_owned())
    }

    /// The login user (default: the configuration's `User`, else the user
    /// running this program).
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// The SSH port (default: the configuration's `Port`, else 22).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// A password for password and keyboard-interactive authentication.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// A private key file to try; may be given several times. Keys given
    /// here (or with [`key_data`](Self::key_data)) are tried before the
    /// agent's, and replace the default `~/.ssh/id_*` files.
    pub fn key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.key_files.push(path.into());
        self
    }

    /// A private key held in memory (PEM or OpenSSH format, the text of a key
    /// file); may be given several times. Tried before key files.
    pub fn key_data(mut self, private_key: impl Into<String>) -> Self {
        self.key_data.push(private_key.into());
        self
    }

    /// Whether to try the identities of the ssh-agent at `$SSH_AUTH_SOCK`
    /// (default on; every identity is tried, not only the first).
    pub fn agent(mut self, on: bool) -> Self {
        self.agent = on;
        self.set.agent = true;
        self
    }

    /// Forwards the local ssh-agent to the host, as OpenSSH's `ForwardAgent yes`
    /// (default: off, or what the OpenSSH configuration says; this call wins
    /// over it): commands can then use the agent's keys on the host (say, to
    /// log in to a second host, or to fetch from a git server) while the
    /// private keys never leave this machine. The agent forwarded is the one
    /// this host authenticates with ([`agent_socket`](Self::agent_socket) or
    /// `IdentityAgent`), else `$SSH_AUTH_SOCK`; with neither, nothing is
    /// forwarded.
    ///
    /// Only forward to hosts you trust: whoever is root there (or can read
    /// the forwarded socket) can use your keys for as long as a command runs.
    pub fn forward_agent(mut self, on: bool) -> Self {
        self.forward_agent = Some(on);
        self
    }

    /// Uses the ssh-agent listening on this socket instead of `$SSH_AUTH_SOCK`.
    pub fn agent_socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.agent = true;
        self.set.agent = true;
        self.agent_socket = Some(path.into());
        self
    }

    /// The passphrase for the key files and in-memory keys.
    pub fn passphrase(mut self, passphrase: impl Into<String>) -> Self {
        self.passphrase = Some(passphrase.into());
        self
    }

    /// How the server's host key is checked (default [`HostKeyCheck::Strict`]).
    pub fn host_key_check(mut self, check: HostKeyCheck) -> Self {
        self.host_key_check = check;
        self.set.host_key_check = true;
        self
    }

    /// How long resolving the name, the TCP connect and the SSH handshake
    /// (with the host-key check) may take together (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// How long authentication may take once the handshake is done (default 20 s).
    pub fn auth_timeout(mut self, timeout: Duration) -> Self {
        self.auth_timeout = Some(timeout);
        self
    }

    /// Dead-peer detection, like OpenSSH's `ServerAliveInterval`: while a
    /// connection is idle or a command is only producing output, a keepalive
    /// asking for a reply is sent after every `interval` without traffic
    /// (whole seconds, at least 1); after [`keepalive_count_max`](Host::keepalive_count_max)
    /// (Self::keepalive_count_max) unanswered ones the connection is
    /// declared lost (a running task fails with a Connect error and may be
    /// re-run). `Duration::ZERO` turns it off. Default 15 s.
    pub fn keepalive(mut self, interval: Duration) -> Self {
        self.keepalive = interval;
        self.set.keepalive = true;
        self
    }

    /// Unanswered keepalives before the connection is declared lost (default 3).
    pub fn keepalive_count_max(mut self, n: u32) -> Self {
        self.keepalive_count_max = n.max(1);
        self.set.keepalive_count_max = true;
        self
    }

    /// Reaches the host through jump hosts, like OpenSSH's `ProxyJump` (and
    /// `ssh -J`): `"[user@]bastion[:port]"`, a chain `"a,b"` (`a` is reached
    /// first, `b` through `a`, the host through `b`), or `"none"` to connect
    /// directly whatever the configuration says. Each hop is itself resolved
    /// through the OpenSSH configuration (its `HostName`, `User`,
    /// `IdentityFile`, known hosts...) when the host is registered; a spec
    /// that does not parse fails there ([`ErrorKind::InvalidHost`]). Wins
    /// over the configuration's `ProxyJump` and `ProxyCommand`; replaces any
    /// earlier [`jump`](Self::jump), `proxy_jump` or
    /// [`proxy_command`](Self::proxy_command). See the README's "Jump hosts
    /// and ProxyCommand".
    pub fn proxy_jump(mut self, spec: impl Into<String>) -> Self {
        self.route = Some(Route::JumpSpec(spec.into()));
        self
    }

    /// Adds a jump host described in full (keys, known hosts, timeouts...),
    /// after those added before: `Host::new("web").jump(a).jump(b)` is
    /// `ProxyJump a,b`. The hop's own settings win over the configuration,
    /// which fills in the rest. Replaces a [`proxy_jump`](Self::proxy_jump)
    /// spec or a [`proxy_command`](Self::proxy_command).
    pub fn jump(mut self, hop: Host) -> Self {
        match &mut self.route {
            Some(Route::Jumps(hops)) => hops.push(hop),
            _ => self.route = Some(Route::Jumps(vec![hop])),
        }
        self
    }

    /// Reaches the host through a command's stdin and stdout, like OpenSSH's
    /// `ProxyCommand` (`"ssh -W %h:%p bastion"`): run by `sh -c` in its own
    /// process group, with `%h` (host name), `%p` (port), `%r` (user), `%n`
    /// (the name given) and `%%` expanded; its stderr goes to the debug log
    /// and into the error when connecting fails, and its process group is
    /// killed when the connection closes. Wins over the configuration;
    /// replaces any jump hosts.
    pub fn proxy_command(mut self, command: impl Into<String>) -> Self {
        self.route = Some(Route::Command(command.into()));
        self
    }

    /// The error policy of this host's tasks that set none of their own.
    pub fn on_error(mut self, policy: impl Into<OnError>) -> Self {
        self.on_error = Some(policy.into());
        self
    }

    /// Extra connection attempts per task on this host (overrides the global value).
    pub fn reconnections(mut self, n: u32) -> Self {
        self.reconnections = Some(n);
        self
    }

    /// Defines `%NAME%` for this host's commands and paths.
    pub fn var(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.vars.insert(name.into(), value.into());
        self
    }

    /// Turns `%NAME%` expansion on (default) or off for this host.
    pub fn expand_vars(mut self, on: bool) -> Self {
        self.expand_vars = on;
        self
    }

    /// The host name or address connected to: the name given, or, once the
    /// host is registered, the `HostName` the OpenSSH configuration gives it.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// The name the host was created with (what OpenSSH `Host` patterns match).
    pub fn alias(&self) -> &str {
        &self.alias
    }

    /// The login user, when one was given.
    pub fn user_name(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The port, when one was given.
    pub fn port_number(&self) -> Option<u16> {
        self.port
    }

    pub(crate) fn effective_user(&self) -> String {
        self.user
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .or_else(|| std::env::var("LOGNAME").ok())
            .unwrap_or_else(|| "root".to_owned())
    }

    /// The value of variable `name` for this host, `label` being its label.
    pub(crate) fn lookup_var(&self, label: &str, name: &str) -> Option<String> {
        match name {
            "LABEL" => Some(label.to_owned()),
            "HOST" => Some(self.hostname.clone()),
            "USER" => Some(self.effective_user()),
            "PORT" => Some(self.port.unwrap_or(22).to_string()),
            _ => self.vars.get(name).cloned(),
        }
    }

    pub(crate) fn transport_name(&self) -> &'static str {
        match self.target {
            Target::Local => "local",
            Target::Ssh => "ssh",
            #[cfg(feature = "fault-injection")]
            Target::Fault(_) => "fault",
        }
    }
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print secrets.
        f.debug_struct("Host")
            .field("transport", &self.transport_name())
            .field("alias", &self.alias)
            .field("hostname", &self.hostname)
            .field("user", &self.user)
            .field("port", &self.port)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("key_files", &self.key_files)
            .field("key_data", &format_args!("<{} redacted>", self.key_data.len()))
            .field("agent", &self.agent)
            .field("agent_socket", &self.agent_socket)
            .field("forward_agent", &self.forward_agent)
            .field("host_key_check", &self.host_key_check)
            .field("reconnections", &self.reconnections)
            .field("vars", &self.vars)
            .field("expand_vars", &self.expand_vars)
            .field("route", &self.route)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_forms() {
        let h = Host::parse("root@web1:2222").unwrap();
        assert_eq!(
            (h.user_name(), h.hostname(), h.port_number()),
            (Some("root"), "web1", Some(2222))
        );
        let h = Host::parse("web1").unwrap();
        assert_eq!((h.user_name(), h.port_number()), (None, None));
        let h = Host::parse("[::1]:22").unwrap();
        assert_eq!((h.hostname(), h.port_number()), ("::1", Some(22)));
        let h = Host::parse("fe80::1").unwrap();
        assert_eq!(h.hostname(), "fe80::1");
    }

    #[test]
    fn parse_errors_name_the_spec() {
        for bad in ["", "@h", "h:0", "h:x", "h:70000", "[::1", "a b"] {
            let e = Host::parse(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidHost, "{bad:?}");
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn debug_hides_password() {
        let h = Host::new("x")
            .password("hunter2")
            .key_data("-----BEGIN SECRET KEY-----");
        let shown = format!("{h:?}");
        assert!(!shown.contains("hunter2"));
        assert!(!shown.contains("SECRET"));
    }
}
