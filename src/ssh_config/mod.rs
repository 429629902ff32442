//! OpenSSH client configuration (`ssh_config(5)`), resolved for one
//! destination the way `ssh -G` resolves it.
//!
//! [`resolve`] reads the files of a [`ResolveEnv`] (by default
//! `~/.ssh/config` then `/etc/ssh/ssh_config`) for one [`Query`] and returns
//! an [`SshConfig`] in which every honoured directive is an `Option`: the
//! caller applies its own precedence (program settings > file > defaults).
//! Rules, as OpenSSH 9: the first obtained value wins (IdentityFile
//! accumulates); `Host` patterns with `*`, `?`, `!negation`; `Match` with
//! `host`, `originalhost`, `user`, `localuser`, `all`, `canonical`, `final`,
//! `exec` (run with `$SHELL -c`, tokens expanded); a `Match final` makes a
//! second pass over every file once HostName is known; `Include` with globs,
//! relative to `~/.ssh` (user files) or `/etc/ssh`, at most 16 deep; `~`,
//! `${VAR}` and `%` tokens expanded in the directives where OpenSSH expands
//! them. Known but unhonoured OpenSSH keywords are logged at debug level;
//! unknown keywords and malformed values are errors naming file:line.
//!
//! ```
//! use ssh_parallel::ssh_config::{resolve, ConfigFile, Proxy, Query, ResolveEnv};
//!
//! let dir = tempfile::tempdir()?;
//! let file = dir.path().join("config");
//! std::fs::write(&file, "Host web*\n  HostName %h.example.com\n  ProxyJump ops@bastion:2222\nHost *\n  User deploy\n")?;
//! // Like `ssh -F FILE`: only that file (`from_system` alone reads ~/.ssh/config then /etc/ssh/ssh_config).
//! let env = ResolveEnv::from_system()?.with_only_file(Some(ConfigFile::explicit(&file)));
//! let cfg = resolve(&env, &Query::new("web1"))?;
//! assert_eq!(cfg.hostname.as_deref(), Some("web1.example.com"));
//! assert_eq!(cfg.user.as_deref(), Some("deploy"));
//! assert_eq!(cfg.port, None); // not set: the caller's default applies
//! let Some(Proxy::Jump { jumps, .. }) = &cfg.proxy else { unreachable!() };
//! assert_eq!((jumps[0].host.as_str(), jumps[0].port), ("bastion", Some(2222)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Module tree: `lexer` (bytes to lines, pure), `pattern` (globs and pattern
//! lists), `tokens` (`~`, `${}`, `%`), `directives` (one line into
//! [`SshConfig`]), `jump` (ProxyJump syntax), `eval` (one pass: Host, Match,
//! Include), `env`, `types`. The module uses nothing else of the crate.

mod directives;
mod env;
mod eval;
mod jump;
mod lexer;
mod parsed;
mod pattern;
mod tokens;
mod types;

use std::path::{Path, PathBuf};

pub use env::{ConfigFile, ResolveEnv};
pub(crate) use jump::proxy_jump;
pub(crate) use tokens::expand as expand_tokens;
pub use types::{
    AddressFamily, Algorithms, AlgorithmsOp, ConfigPath, ForwardAgent, IdentityAgent, Jump, KnownHostsFiles, Origin,
    Proxy, RequestTty, SshConfig, StrictHostKeyChecking,
};

/// An error reading or interpreting configuration files.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("{}: {source}", file.display())]
    Io {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A malformed line, or a value that cannot be expanded.
    #[error("{}:{line}: {message}", file.display())]
    Invalid {
        /// The file.
        file: PathBuf,
        /// The 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// An `Include` nested more than 16 deep (or including itself).
    #[error("{}:{line}: too many nested includes (more than {})", file.display(), eval::MAX_INCLUDE_DEPTH)]
    IncludeDepth {
        /// The file holding the `Include`.
        file: PathBuf,
        /// Its line.
        line: usize,
    },
    /// A file writable by others than its owner, which OpenSSH refuses.
    #[error("{}: bad owner or permissions", file.display())]
    BadPermissions {
        /// The file.
        file: PathBuf,
    },
    /// The local environment lacks something (home, user, host name).
    #[error("{0}")]
    Environment(String),
}

impl ConfigError {
    pub(crate) fn invalid(file: &Path, line: usize, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            file: file.to_path_buf(),
            line,
            message: message.into(),
        }
    }

    fn at(origin: &Origin, message: String) -> Self {
        ConfigError::invalid(&origin.file, origin.line, message)
    }
}

/// What to resolve: the name typed, plus what the program already decided
/// (seen by `Match user`, `%r`, `%p`, and winning over the files).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Query {
    /// The host alias (`%n`, what `Host` patterns see).
    pub alias: String,
    /// The remote user set by the program, if any.
    pub user: Option<String>,
    /// The port set by the program, if any.
    pub port: Option<u16>,
}

impl Query {
    /// A query for `alias` with nothing preset.
    pub fn new(alias: impl Into<String>) -> Self {
        Query {
            alias: alias.into(),
            user: None,
            port: None,
        }
    }
}

impl SshConfig {
    /// Whether resolving the same query again may give another answer: a
    /// `Match exec` command ran, and its next run may decide otherwise.
    pub fn depends_on_commands(&self) -> bool {
        self.ran_exec
    }
}

/// Resolves the configuration for `query` from the files of `env`.
pub fn resolve(env: &ResolveEnv, query: &Query) -> Result<SshConfig, ConfigError> {
    let mut cfg = SshConfig {
        alias: query.alias.clone(),
        user: query.user.clone(),
        port: query.port,
        ..Default::default()
    };
    let want_final = run_pass(env, &mut cfg, query.alias.clone(), false)?;
    let host = match &cfg.hostname {
        Some(name) => {
            let origin = cfg.origins.get("hostname").cloned().unwrap_or_else(|| Origin {
                file: PathBuf::new(),
                line: 0,
            });
            tokens::expand(name, &[('h', &query.alias)], None).map_err(|m| ConfigError::at(&origin, m))?
        }
        None => query.alias.clone(),
    }
    .to_lowercase();
    if cfg.hostname.is_some() || want_final {
        cfg.hostname = Some(host.clone());
    }
    if want_final {
        run_pass(env, &mut cfg, host, true)?;
    }
    finalize(env, &mut cfg)?;
    Ok(cfg)
}

/// One pass over every file; true when a final pass was asked for.
fn run_pass(env: &ResolveEnv, cfg: &mut SshConfig, host: String, final_pass: bool) -> Result<bool, ConfigError> {
    let original = cfg.alias.clone();
    let mut pass = eval::Pass {
        env,
        host,
        original,
        final_pass,
        want_final: false,
        cfg,
    };
    for file in &env.files {
        pass.read_top(file)?;
    }
    Ok(pass.want_final)
}

/// Expands `~`, `${VAR}` and `%` tokens once every value is known.
fn finalize(env: &ResolveEnv, cfg: &mut SshConfig) -> Result<(), ConfigError> {
    let host = cfg.effective_hostname();
    let port = cfg.port.unwrap_or(22).to_string();
    let user = cfg.user.clone().unwrap_or_else(|| env.local_user.clone());
    let home = env.home.to_string_lossy().into_owned();
    let short = env.local_host.split('.').next().unwrap_or_default().to_string();
    let uid = env.uid.to_string();
    let key_alias = cfg.host_key_alias.clone().unwrap_or_else(|| cfg.alias.clone());
    let hash = tokens::connection_hash(&env.local_host, &host, &port, &user);
    let files_table = [
        ('C', hash.as_str()),
        ('d', home.as_str()),
        ('h', host.as_str()),
        ('i', uid.as_str()),
        ('k', key_alias.as_str()),
        ('L', short.as_str()),
        ('l', env.local_host.as_str()),
        ('n', cfg.alias.as_str()),
        ('p', port.as_str()),
        ('r', user.as_str()),
        ('u', env.local_user.as_str()),
    ];
    let expand_path = |p: &mut ConfigPath| -> Result<(), ConfigError> {
        if p.raw.eq_ignore_ascii_case("none") {
            return Ok(());
        }
        let tilde = tokens::tilde(&p.raw, &env.home).map_err(|m| ConfigError::at(&p.origin, m))?;
        let expanded =
            tokens::expand(&tilde, &files_table, Some(&env.vars)).map_err(|m| ConfigError::at(&p.origin, m))?;
        p.path = expanded.into();
        Ok(())
    };
    for p in &mut cfg.identity_files {
        expand_path(p)?;
    }
    if let Some(IdentityAgent::Path(p)) = &mut cfg.identity_agent {
        expand_path(p)?;
    }
    if let Some(ForwardAgent::Socket(p)) = &mut cfg.forward_agent {
        expand_path(p)?;
    }
    if let Some(KnownHostsFiles::Files(files)) = &mut cfg.user_known_hosts_files {
        for p in files {
            expand_path(p)?;
        }
    }
    let table = [
        ('h', host.as_str()),
        ('n', cfg.alias.as_str()),
        ('p', port.as_str()),
        ('r', user.as_str()),
    ];
    let origin_of = |key| {
        cfg.origins.get(key).cloned().unwrap_or_else(|| Origin {
            file: PathBuf::new(),
            line: 0,
        })
    };
    match &mut cfg.proxy {
        Some(Proxy::Command { raw, command }) => {
            *command = tokens::expand(raw, &table, None).map_err(|m| ConfigError::at(&origin_of("proxycommand"), m))?;
        }
        Some(Proxy::Jump { jumps, .. }) => {
            let origin = origin_of("proxyjump");
            for jump in jumps {
                jump.host = tokens::expand(&jump.host, &table, None).map_err(|m| ConfigError::at(&origin, m))?;
                if let Some(user) = &mut jump.user {
                    *user = tokens::expand(user, &table, None).map_err(|m| ConfigError::at(&origin, m))?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests;
