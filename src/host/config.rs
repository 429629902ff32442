//! The user's OpenSSH configuration applied to a [`Host`]: where
//! `ParallelBuilder::ssh_config` settings lead, how the files are resolved
//! for one host (at `add_host`, on the caller's thread, because `Match exec`
//! runs a child process), and the precedence: what the `Host` API set, then
//! what the files say, then our defaults.
//!
//! Invariant: resolution happens once per label, before anything connects;
//! the transport only reads the resulting `Host` (its plain fields and
//! [`SshSettings`]) and never the files. Secrets never reach the log.
//!
//! May use: `ssh_config`, `error`, `host` (its parent).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::route::FromFiles;
use super::{Host, HostKeyCheck, Target};
use crate::error::{Error, ErrorKind, Result};
use crate::ssh_config::{
    self, AddressFamily, Algorithms, ConfigError, ConfigFile, ForwardAgent, IdentityAgent, KnownHostsFiles, Proxy,
    Query, RequestTty, ResolveEnv, SshConfig, StrictHostKeyChecking,
};

/// Which OpenSSH configuration a `Parallel` reads.
#[derive(Debug, Clone, Default)]
pub(crate) enum ConfigSource {
    /// `~/.ssh/config` then `/etc/ssh/ssh_config` (like `ssh`).
    #[default]
    System,
    /// Only this file (like `ssh -F FILE`).
    File(PathBuf),
    /// A prepared environment (home, files, variables).
    Env(Box<ResolveEnv>),
    /// No configuration at all (like `ssh -F none`).
    Off,
}

/// A `ConfigSource`, the environment built from it on first use, and the
/// resolutions made so far.
#[derive(Debug, Clone, Default)]
pub(crate) struct SshConfigs {
    source: ConfigSource,
    env: Option<ResolveEnv>,
    /// Thousands of hosts often share a few names (or all differ): reading
    /// and evaluating the files once per distinct query, not per label,
    /// keeps `add_host` cheap. Resolutions that ran `Match exec` are not
    /// kept, as the command may decide otherwise next time.
    cache: HashMap<Query, SshConfig>,
}

impl SshConfigs {
    /// Reads configuration from `source`.
    pub(crate) fn new(source: ConfigSource) -> SshConfigs {
        SshConfigs {
            source,
            env: None,
            cache: HashMap::new(),
        }
    }

    /// Resolves the configuration for an SSH `host` and applies it (other
    /// targets are left alone), then its route (jump hosts, proxy command),
    /// each jump host resolved the same way.
    pub(crate) fn apply(&mut self, label: &str, host: &mut Host) -> Result<()> {
        self.apply_at_depth(label, host, 0)
    }

    /// [`apply`](Self::apply) for a host `depth` jump hosts away from the label's.
    pub(super) fn apply_at_depth(&mut self, label: &str, host: &mut Host, depth: usize) -> Result<()> {
        if !matches!(host.target, Target::Ssh) {
            return Ok(());
        }
        let files = if matches!(self.source, ConfigSource::Off) {
            None
        } else {
            self.apply_files(label, host)?
        };
        self.resolve_route(label, host, files, depth)
    }

    /// Resolves and applies the files; returns what they say about the route.
    fn apply_files(&mut self, label: &str, host: &mut Host) -> Result<Option<FromFiles>> {
        if self.env.is_none() {
            let env = match &self.source {
                ConfigSource::Env(env) => (**env).clone(),
                ConfigSource::File(path) => ResolveEnv::from_system()
                    .map_err(config_error)?
                    .with_only_file(Some(ConfigFile::explicit(path))),
                _ => ResolveEnv::from_system().map_err(config_error)?,
            };
            self.env = Some(env);
        }
        let Some(env) = &self.env else { return Ok(None) };
        let query = Query {
            alias: host.alias.clone(),
            user: host.user.clone(),
            port: host.port,
        };
        let cfg = match self.cache.get(&query) {
            Some(cfg) => cfg.clone(),
            None => {
                let cfg = ssh_config::resolve(env, &query).map_err(config_error)?;
                if !cfg.depends_on_commands() {
                    self.cache.insert(query, cfg.clone());
                }
                cfg
            }
        };
        let files = cfg.proxy.clone().map(|proxy| FromFiles {
            origin: origin(
                &cfg,
                if matches!(proxy, Proxy::Command { .. }) {
                    "proxycommand"
                } else {
                    "proxyjump"
                },
            ),
            proxy,
        });
        apply(label, host, cfg, env)?;
        Ok(files)
    }
}

/// What the configuration decides beyond the `Host` API's own fields. The
/// default is what a host without configuration gets.
#[derive(Debug, Clone, Default)]
pub(crate) struct SshSettings {
    /// The local home (default keys, `~` in known_hosts paths); `None`: `$HOME`
    /// when connecting.
    pub(crate) home: Option<PathBuf>,
    /// No default `~/.ssh/id_*` keys (`PubkeyAuthentication no`, or the files
    /// name identities).
    pub(crate) no_default_keys: bool,
    /// TCP connection rounds over every address (`ConnectionAttempts`; 0 and 1: one).
    pub(crate) connection_attempts: u32,
    /// `None`: `~/.ssh/known_hosts` alone.
    pub(crate) known_hosts: Option<KnownHosts>,
    /// The name looked up in, and written to, known_hosts instead of the host's.
    pub(crate) host_key_alias: Option<String>,
    /// Names written to known_hosts are hashed.
    pub(crate) hash_known_hosts: bool,
    /// Authentication methods turned off (`publickey`, `password`,
    /// `keyboard-interactive`).
    pub(crate) methods_off: Vec<&'static str>,
    /// Keyboard-interactive before password (`PreferredAuthentications`).
    pub(crate) kbd_first: bool,
    /// Algorithm preferences for libssh2, with where they were set.
    pub(crate) algorithms: Vec<(AlgorithmKind, Algorithms, String)>,
    /// `Compression yes`.
    pub(crate) compression: bool,
    /// `SetEnv`, sent before each command's own variables.
    pub(crate) set_env: Vec<(String, String)>,
    /// `RequestTTY force`: every command gets a pty.
    pub(crate) force_tty: bool,
    /// `AddressFamily`.
    pub(crate) address_family: Option<AddressFamily>,
}

/// The known_hosts files to read; new keys go to the first user file.
#[derive(Debug, Clone, Default)]
pub(crate) struct KnownHosts {
    /// `UserKnownHostsFile` (empty: `none`).
    pub(crate) user: Vec<PathBuf>,
    /// `GlobalKnownHostsFile` (read, never written).
    pub(crate) global: Vec<PathBuf>,
}

/// Which libssh2 method list an algorithm directive sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AlgorithmKind {
    /// `Ciphers` (both directions).
    Ciphers,
    /// `KexAlgorithms`.
    Kex,
    /// `MACs` (both directions).
    Macs,
    /// `HostKeyAlgorithms`.
    HostKey,
}

impl AlgorithmKind {
    /// The OpenSSH keyword.
    pub(crate) fn keyword(self) -> &'static str {
        match self {
            AlgorithmKind::Ciphers => "Ciphers",
            AlgorithmKind::Kex => "KexAlgorithms",
            AlgorithmKind::Macs => "MACs",
            AlgorithmKind::HostKey => "HostKeyAlgorithms",
        }
    }
}

/// A configuration error as the crate reports it: file:line in the message.
fn config_error(e: ConfigError) -> Error {
    let kind = match &e {
        ConfigError::Io { .. } | ConfigError::Environment(_) => ErrorKind::Local,
        _ => ErrorKind::InvalidConfig,
    };
    Error::new(kind, format!("OpenSSH configuration: {e}"))
}

/// Where the files set `keyword` (lowercase), for logs and errors.
fn origin(cfg: &SshConfig, keyword: &str) -> String {
    cfg.origins
        .get(keyword)
        .map_or_else(|| "the OpenSSH configuration".to_owned(), |o| o.to_string())
}

/// Records, for the debug log, that `what` came from the files.
fn note(taken: &mut Vec<String>, cfg: &SshConfig, what: &str, keyword: &str) {
    taken.push(format!("{what} ({})", origin(cfg, keyword)));
}

/// `~/` at the start of a path, against the resolution's home.
fn tilde(raw: &str, home: &Path) -> PathBuf {
    match raw.strip_prefix("~/") {
        Some(rest) => home.join(rest),
        None => PathBuf::from(raw),
    }
}

/// Applies `cfg` under the precedence Host API > files > defaults.
fn apply(label: &str, host: &mut Host, cfg: SshConfig, env: &ResolveEnv) -> Result<()> {
    let mut taken: Vec<String> = Vec::new();
    if let Some(name) = &cfg.hostname {
        host.hostname = name.clone();
        note(&mut taken, &cfg, &format!("HostName {name}"), "hostname");
    }
    if host.user.is_none() {
        if let Some(user) = &cfg.user {
            host.user = Some(user.clone());
            note(&mut taken, &cfg, &format!("User {user}"), "user");
        }
    }
    if host.port.is_none() {
        if let Some(port) = cfg.port {
            host.port = Some(port);
            note(&mut taken, &cfg, &format!("Port {port}"), "port");
        }
    }
    let mut s = SshSettings {
        home: Some(env.home.clone()),
        ..SshSettings::default()
    };
    let pubkey = cfg.pubkey_authentication != Some(false)
        && cfg
            .preferred_authentications
            .as_ref()
            .is_none_or(|l| l.iter().any(|m| m == "publickey"));
    let explicit_keys = !host.key_files.is_empty() || !host.key_data.is_empty();
    if !pubkey {
        // The host's own keys stay: the API wins over the files.
        s.no_default_keys = true;
        if !host.set.agent {
            host.agent = false;
        }
        if !explicit_keys {
            s.methods_off.push("publickey");
        }
    } else if !explicit_keys && !cfg.identity_files.is_empty() {
        // As ssh: named identities replace the default ones; missing files are skipped.
        s.no_default_keys = true;
        for p in &cfg.identity_files {
            if p.path.is_file() {
                host.key_files.push(p.path.clone());
                taken.push(format!("IdentityFile {} ({})", p.path.display(), p.origin));
            } else {
                log::debug!(target: "ssh_parallel", "[{label}] {}: no identity file {}", p.origin, p.path.display());
            }
        }
    }
    if !host.set.agent {
        if cfg.identities_only == Some(true) {
            host.agent = false;
            taken.push(format!("IdentitiesOnly yes ({})", origin(&cfg, "identitiesonly")));
        }
        match &cfg.identity_agent {
            Some(IdentityAgent::None) => host.agent = false,
            Some(IdentityAgent::Env(name)) => match env.vars.get(name).filter(|v| !v.is_empty()) {
                Some(sock) => host.agent_socket = Some(PathBuf::from(sock)),
                None => host.agent = false,
            },
            Some(IdentityAgent::Path(p)) => {
                host.agent_socket = Some(p.path.clone());
                taken.push(format!("IdentityAgent {} ({})", p.path.display(), p.origin));
            }
            Some(IdentityAgent::SshAuthSock) | None => {}
        }
    }
    if host.forward_agent.is_none() {
        match &cfg.forward_agent {
            Some(ForwardAgent::Yes) => host.forward_agent = Some(true),
            Some(ForwardAgent::No) => host.forward_agent = Some(false),
            Some(ForwardAgent::Socket(p)) => {
                host.forward_agent = Some(true);
                host.forward_agent_socket = Some(p.path.clone());
            }
            None => {}
        }
        if host.forward_agent == Some(true) {
            note(&mut taken, &cfg, "ForwardAgent", "forwardagent");
        }
    }
    if host.connect_timeout.is_none() {
        if let Some(t) = cfg.connect_timeout.filter(|t| !t.is_zero()) {
            host.connect_timeout = Some(t);
            note(
                &mut taken,
                &cfg,
                &format!("ConnectTimeout {}", t.as_secs()),
                "connecttimeout",
            );
        }
    }
    s.connection_attempts = cfg.connection_attempts.unwrap_or(1);
    if !host.set.keepalive {
        if let Some(t) = cfg.server_alive_interval {
            host.keepalive = t;
            note(
                &mut taken,
                &cfg,
                &format!("ServerAliveInterval {}", t.as_secs()),
                "serveraliveinterval",
            );
        }
    }
    if !host.set.keepalive_count_max {
        if let Some(n) = cfg.server_alive_count_max {
            host.keepalive_count_max = n.max(1);
        }
    }
    if !host.set.host_key_check {
        if let Some(strict) = cfg.strict_host_key_checking {
            host.host_key_check = match strict {
                s if s.is_strict() => HostKeyCheck::Strict,
                StrictHostKeyChecking::AcceptNew => HostKeyCheck::AcceptNew,
                _ => HostKeyCheck::Off,
            };
            note(
                &mut taken,
                &cfg,
                &format!("StrictHostKeyChecking {strict:?}"),
                "stricthostkeychecking",
            );
        }
    }
    let user_files = match &cfg.user_known_hosts_files {
        None => vec![env.home.join(".ssh/known_hosts"), env.home.join(".ssh/known_hosts2")],
        Some(KnownHostsFiles::None) => Vec::new(),
        Some(KnownHostsFiles::Files(f)) => f.iter().map(|p| p.path.clone()).collect(),
    };
    let global = match &cfg.global_known_hosts_files {
        None => vec!["/etc/ssh/ssh_known_hosts".into(), "/etc/ssh/ssh_known_hosts2".into()],
        Some(KnownHostsFiles::None) => Vec::new(),
        Some(KnownHostsFiles::Files(f)) => f.iter().map(|p| tilde(&p.raw, &env.home)).collect(),
    };
    s.known_hosts = Some(KnownHosts {
        user: user_files,
        global,
    });
    s.host_key_alias = cfg.host_key_alias.clone();
    s.hash_known_hosts = cfg.hash_known_hosts == Some(true);
    let off = |on: Option<bool>, method: &str| {
        on == Some(false)
            || cfg
                .preferred_authentications
                .as_ref()
                .is_some_and(|l| !l.iter().any(|m| m == method))
    };
    if off(cfg.password_authentication, "password") {
        s.methods_off.push("password");
    }
    if off(cfg.kbd_interactive_authentication, "keyboard-interactive") {
        s.methods_off.push("keyboard-interactive");
    }
    if let Some(list) = &cfg.preferred_authentications {
        let pos = |m: &str| list.iter().position(|x| x == m);
        s.kbd_first = matches!((pos("keyboard-interactive"), pos("password")), (Some(k), Some(p)) if k < p);
    }
    for (kind, alg, keyword) in [
        (AlgorithmKind::Ciphers, &cfg.ciphers, "ciphers"),
        (AlgorithmKind::Kex, &cfg.kex_algorithms, "kexalgorithms"),
        (AlgorithmKind::Macs, &cfg.macs, "macs"),
        (AlgorithmKind::HostKey, &cfg.host_key_algorithms, "hostkeyalgorithms"),
    ] {
        if let Some(alg) = alg {
            s.algorithms.push((kind, alg.clone(), origin(&cfg, keyword)));
        }
    }
    s.compression = cfg.compression == Some(true);
    s.set_env = cfg.set_env.clone();
    s.force_tty = cfg.request_tty == Some(RequestTty::Force);
    s.address_family = cfg.address_family.filter(|f| *f != AddressFamily::Any);
    if !taken.is_empty() {
        log::debug!(target: "ssh_parallel", "[{label}] from the OpenSSH configuration: {}", taken.join(", "));
    }
    host.ssh = s;
    Ok(())
}

#[cfg(test)]
mod tests;
