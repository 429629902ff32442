//! The resolved configuration handed to the transport: every honoured
//! directive as an `Option` (or an empty list) so that "not set" stays
//! distinct from a default, and the caller can apply its own precedence
//! (program settings > config file > our defaults).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Where a value was obtained: the file and 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The configuration file.
    pub file: PathBuf,
    /// The line in it.
    pub line: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// A path directive: its text as written, and the path after `~`, `${VAR}`
/// and `%` token expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigPath {
    /// As written in the file (what `ssh -G` prints for IdentityFile).
    pub raw: String,
    /// Expanded.
    pub path: PathBuf,
    /// Where it was written.
    pub origin: Origin,
}

/// `IdentityAgent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityAgent {
    /// `none`: do not use an agent.
    None,
    /// `SSH_AUTH_SOCK`: the socket named by that variable (the default).
    SshAuthSock,
    /// `$NAME`: the socket named by another environment variable.
    Env(String),
    /// A socket path.
    Path(ConfigPath),
}

/// One hop of `ProxyJump`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jump {
    /// `user@`, if given.
    pub user: Option<String>,
    /// The jump host (a name or address; IPv6 without brackets).
    pub host: String,
    /// `:port`, if given.
    pub port: Option<u16>,
}

/// `ProxyJump` and `ProxyCommand` share one slot: whichever comes first wins,
/// and `none` in either disables both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proxy {
    /// `ProxyJump none` or `ProxyCommand none`: connect directly.
    None,
    /// `ProxyJump` hops.
    Jump {
        /// As written (what `ssh -G` prints for all hops but the last).
        spec: String,
        /// Hops in connection order: the first is reached directly, each
        /// next one through the previous, the target through the last. The
        /// `%h %n %p %r %%` tokens in users and hosts are expanded (OpenSSH
        /// expands them through the `ssh -J` command it builds).
        jumps: Vec<Jump>,
    },
    /// `ProxyCommand`, run through the shell.
    Command {
        /// As written.
        raw: String,
        /// With `%h %n %p %r %%` expanded.
        command: String,
    },
}

/// `UserKnownHostsFile` / `GlobalKnownHostsFile`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KnownHostsFiles {
    /// `none`: no file.
    None,
    /// These files, in order (expanded for UserKnownHostsFile, as written for
    /// GlobalKnownHostsFile, as OpenSSH does).
    Files(Vec<ConfigPath>),
}

/// `StrictHostKeyChecking`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrictHostKeyChecking {
    /// `yes`/`true`: unknown or changed keys are refused.
    Yes,
    /// `ask`: like `Yes` for a non-interactive client.
    Ask,
    /// `accept-new`: unknown keys are added, changed ones refused.
    AcceptNew,
    /// `no`/`off`/`false`: unknown keys are added, changed ones accepted.
    No,
}

impl StrictHostKeyChecking {
    /// Whether an unknown host key is refused (`yes` and `ask`: nobody is
    /// there to answer the question).
    pub fn is_strict(self) -> bool {
        matches!(self, StrictHostKeyChecking::Yes | StrictHostKeyChecking::Ask)
    }
}

/// `RequestTTY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestTty {
    /// `no`.
    No,
    /// `yes`: when stdin is a terminal.
    Yes,
    /// `force`: always.
    Force,
    /// `auto`: for interactive sessions.
    Auto,
}

/// `ForwardAgent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardAgent {
    /// `no`.
    No,
    /// `yes`: forward the agent in use.
    Yes,
    /// A path (or `$VAR`): forward that agent socket.
    Socket(ConfigPath),
}

/// `AddressFamily`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressFamily {
    /// `any`.
    Any,
    /// `inet`: IPv4 only.
    Inet,
    /// `inet6`: IPv6 only.
    Inet6,
}

/// How an algorithm list changes the defaults (`Ciphers`, `KexAlgorithms`,
/// `MACs`, `HostKeyAlgorithms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlgorithmsOp {
    /// A plain list replaces the defaults.
    Replace,
    /// `+list`: appended to the defaults.
    Append,
    /// `-list`: these (wildcards allowed) removed from the defaults.
    Remove,
    /// `^list`: put at the head of the defaults.
    Prepend,
}

/// An algorithm preference directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Algorithms {
    /// How `names` combine with the defaults.
    pub op: AlgorithmsOp,
    /// The names (or, for `Remove`, patterns) given.
    pub names: Vec<String>,
}

impl Algorithms {
    /// The effective preference list given the implementation's `defaults`
    /// (OpenSSH's `kex_assemble_names`, without filtering by support: the
    /// transport intersects with what it supports).
    pub fn apply(&self, defaults: &[&str]) -> Vec<String> {
        let defaults = defaults.iter().map(|s| s.to_string());
        let mut out: Vec<String> = match self.op {
            AlgorithmsOp::Replace => self.names.clone(),
            AlgorithmsOp::Append => defaults.chain(self.names.iter().cloned()).collect(),
            AlgorithmsOp::Prepend => self.names.iter().cloned().chain(defaults).collect(),
            AlgorithmsOp::Remove => {
                let patterns = self.names.join(",");
                defaults
                    .filter(|d| super::pattern::match_list(d, &patterns, false) == super::pattern::ListMatch::No)
                    .collect()
            }
        };
        let mut seen = std::collections::BTreeSet::new();
        out.retain(|name| seen.insert(name.clone()));
        out
    }
}

/// The configuration resolved for one destination. Every field is what the
/// files say; `None` (or empty) means the files did not set it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SshConfig {
    /// The name asked for (`%n`).
    pub alias: String,
    /// `HostName`, `%h`-expanded and lowercased, as OpenSSH connects to it.
    pub hostname: Option<String>,
    /// `User` (or the user given to the query).
    pub user: Option<String>,
    /// `Port` (or the port given to the query).
    pub port: Option<u16>,
    /// `IdentityFile`s, in order, duplicates dropped.
    pub identity_files: Vec<ConfigPath>,
    /// `IdentitiesOnly`.
    pub identities_only: Option<bool>,
    /// `IdentityAgent`.
    pub identity_agent: Option<IdentityAgent>,
    /// `ProxyJump` / `ProxyCommand`.
    pub proxy: Option<Proxy>,
    /// `ConnectTimeout` (zero: no timeout).
    pub connect_timeout: Option<Duration>,
    /// `ConnectionAttempts`.
    pub connection_attempts: Option<u32>,
    /// `ServerAliveInterval` (zero: off).
    pub server_alive_interval: Option<Duration>,
    /// `ServerAliveCountMax`.
    pub server_alive_count_max: Option<u32>,
    /// `StrictHostKeyChecking`.
    pub strict_host_key_checking: Option<StrictHostKeyChecking>,
    /// `UserKnownHostsFile`.
    pub user_known_hosts_files: Option<KnownHostsFiles>,
    /// `GlobalKnownHostsFile`.
    pub global_known_hosts_files: Option<KnownHostsFiles>,
    /// `HashKnownHosts`: names added to known_hosts are hashed.
    pub hash_known_hosts: Option<bool>,
    /// `HostKeyAlias`: the name looked up in known_hosts.
    pub host_key_alias: Option<String>,
    /// `PubkeyAuthentication` (`unbound`/`host-bound` count as yes).
    pub pubkey_authentication: Option<bool>,
    /// `PasswordAuthentication`.
    pub password_authentication: Option<bool>,
    /// `KbdInteractiveAuthentication` (alias `ChallengeResponseAuthentication`).
    pub kbd_interactive_authentication: Option<bool>,
    /// `PreferredAuthentications`, in order.
    pub preferred_authentications: Option<Vec<String>>,
    /// `Ciphers`.
    pub ciphers: Option<Algorithms>,
    /// `KexAlgorithms`.
    pub kex_algorithms: Option<Algorithms>,
    /// `MACs`.
    pub macs: Option<Algorithms>,
    /// `HostKeyAlgorithms`.
    pub host_key_algorithms: Option<Algorithms>,
    /// `Compression`.
    pub compression: Option<bool>,
    /// `SetEnv` (name, value) pairs, in order.
    pub set_env: Vec<(String, String)>,
    /// `RequestTTY`.
    pub request_tty: Option<RequestTty>,
    /// `ForwardAgent`.
    pub forward_agent: Option<ForwardAgent>,
    /// `AddressFamily`.
    pub address_family: Option<AddressFamily>,
    /// Where each directive's obtained value came from (for expansion
    /// errors and logs), by lowercase keyword.
    pub(crate) origins: BTreeMap<String, Origin>,
    /// A `Match exec` command ran: the result may differ from one
    /// resolution of the same query to the next.
    pub(crate) ran_exec: bool,
    /// `IgnoreUnknown`: keywords that are not errors when unknown.
    pub(crate) ignore_unknown: Option<String>,
}

impl SshConfig {
    /// The host to connect to: `HostName`, else the alias (lowercased, as
    /// OpenSSH does).
    pub fn effective_hostname(&self) -> String {
        self.hostname.clone().unwrap_or_else(|| self.alias.to_lowercase())
    }
}
