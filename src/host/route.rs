//! How a host is reached when not directly: through jump hosts (OpenSSH's
//! `ProxyJump`, [`Host::proxy_jump`], [`Host::jump`]) or through a proxy
//! command (`ProxyCommand`, [`Host::proxy_command`]); resolving what the API
//! and the configuration ask for into hops that are themselves resolved
//! hosts, as OpenSSH does (`ssh -J a,b target` logs in to `a` as `ssh a`
//! would, to `b` through `a`, then to the target through `b`); and the key
//! under which the transport shares one session per distinct jump host.
//!
//! Invariant: after resolution a host's route is `None`, `Direct`, `Jumps`
//! (every hop an SSH host whose own route is the hops before it, or for the
//! first hop whatever its configuration says) or `Command` (tokens
//! expanded); never `JumpSpec`. Chains are at most [`MAX_DEPTH`] deep.
//!
//! May use: `host` (its parent, `config`), `ssh_config`, `error`.

use super::config::SshConfigs;
use super::{Host, Target};
use crate::error::{Error, ErrorKind, Result};
use crate::ssh_config::{self, Proxy};

/// How deep jump hosts may nest (a hop's own configuration may give it a
/// `ProxyJump` too); a loop in the configuration ends here with an error.
pub(crate) const MAX_DEPTH: usize = 8;

/// How a host is reached when not directly.
#[derive(Clone, Debug)]
pub(crate) enum Route {
    /// Directly, whatever the configuration says (`ProxyJump none`).
    Direct,
    /// A `ProxyJump` spec given to the API, parsed when the host is registered.
    JumpSpec(String),
    /// Through these jump hosts, the first reached first.
    Jumps(Vec<Host>),
    /// Through `sh -c` this command (tokens expanded once registered).
    Command(String),
}

/// What the configuration files said about the route, and where.
pub(super) struct FromFiles {
    pub(super) proxy: Proxy,
    /// `file:line` of the directive, for errors.
    pub(super) origin: String,
}

impl SshConfigs {
    /// Decides `host`'s route (the API's, else the files'), resolving every
    /// jump host through the configuration; `depth` is how many jump hosts
    /// `host` itself is behind the label's host.
    pub(super) fn resolve_route(
        &mut self,
        label: &str,
        host: &mut Host,
        files: Option<FromFiles>,
        depth: usize,
    ) -> Result<()> {
        let invalid = |kind, msg: String| Error::new(kind, format!("{label}: {msg}"));
        let mut origin = "the Host API".to_owned();
        let (route, from_api) = match host.route.take() {
            Some(r) => (r, true),
            None => match files {
                None => return Ok(()),
                Some(f) => (
                    {
                        origin = f.origin;
                        log::debug!(target: "ssh_parallel", "[{label}] {}: route of {:?} from {origin}", host.alias, f.proxy);
                        match f.proxy {
                            Proxy::None => Route::Direct,
                            Proxy::Command { command, .. } => Route::Command(command),
                            Proxy::Jump { jumps, .. } => Route::Jumps(jumps.into_iter().map(hop_host).collect()),
                        }
                    },
                    false,
                ),
            },
        };
        let route = match route {
            Route::JumpSpec(spec) => match ssh_config::proxy_jump(&spec) {
                Ok(Proxy::Jump { jumps, .. }) => Route::Jumps(jumps.into_iter().map(hop_host).collect()),
                Ok(_) => Route::Direct,
                Err(e) => return Err(invalid(ErrorKind::InvalidHost, format!("proxy_jump: {e}"))),
            },
            Route::Command(raw) if from_api => {
                let (port, user) = (host.port.unwrap_or(22).to_string(), host.effective_user());
                let table = [
                    ('h', host.hostname.as_str()),
                    ('n', host.alias.as_str()),
                    ('p', port.as_str()),
                    ('r', user.as_str()),
                ];
                match ssh_config::expand_tokens(&raw, &table, None) {
                    Ok(command) => Route::Command(command),
                    Err(e) => return Err(invalid(ErrorKind::InvalidHost, format!("proxy_command {raw:?}: {e}"))),
                }
            }
            r => r,
        };
        let route = match route {
            Route::Jumps(hops) => {
                if depth + hops.len() > MAX_DEPTH {
                    return Err(invalid(
                        ErrorKind::InvalidConfig,
                        format!(
                            "jump hosts of {:?} ({origin}) nest more than {MAX_DEPTH} deep (does a jump host's \
                             own ProxyJump lead back to itself?)",
                            host.alias
                        ),
                    ));
                }
                let mut done: Vec<Host> = Vec::with_capacity(hops.len());
                for mut hop in hops {
                    if !matches!(hop.target, Target::Ssh) {
                        return Err(invalid(
                            ErrorKind::InvalidHost,
                            format!("jump host {:?} of {:?} is not an SSH host", hop.alias, host.alias),
                        ));
                    }
                    if !done.is_empty() {
                        // As `ssh -J a,b`: b is reached through a whatever b's
                        // own configuration says.
                        hop.route = Some(Route::Jumps(done.clone()));
                    }
                    self.apply_at_depth(label, &mut hop, depth + done.len() + 1)?;
                    done.push(hop);
                }
                if done.is_empty() {
                    Route::Direct
                } else {
                    Route::Jumps(done)
                }
            }
            r => r,
        };
        host.route = Some(route);
        Ok(())
    }
}

/// A `ProxyJump` hop as a host: its user and port, if written, win over its
/// own configuration (as `ssh -l USER -p PORT HOST`).
fn hop_host(j: ssh_config::Jump) -> Host {
    let mut h = Host::new(j.host);
    h.user = j.user;
    h.port = j.port;
    h
}

impl Host {
    /// The jump hosts this host is reached through, the first reached
    /// first; once registered, each as the OpenSSH configuration resolved it.
    /// Empty for a direct connection (or a spec not yet parsed: before
    /// [`add_host`](crate::Parallel::add_host)).
    pub fn jump_hosts(&self) -> &[Host] {
        match &self.route {
            Some(Route::Jumps(h)) => h,
            _ => &[],
        }
    }

    /// The proxy command this host is reached through; once registered,
    /// with its `%` tokens expanded.
    pub fn proxy_command_line(&self) -> Option<&str> {
        match &self.route {
            Some(Route::Command(c)) => Some(c),
            _ => None,
        }
    }

    /// The key of the jump session this host's connections go through:
    /// every label behind the same jump host (host name, port, user, key
    /// files, agent socket, and the same hops before it) shares one.
    pub(crate) fn jump_key(&self) -> Option<String> {
        self.jump_hosts().last().map(Host::session_key)
    }

    /// What identifies a session to this host as a jump host.
    pub(crate) fn session_key(&self) -> String {
        format!(
            "{}@{}:{} keys={:?} agent={:?}/{:?} via [{}]",
            self.effective_user(),
            self.hostname,
            self.port.unwrap_or(22),
            self.key_files,
            self.agent,
            self.agent_socket,
            self.jump_key().unwrap_or_default()
        )
    }

    /// How messages name this host as a hop: its alias, with the port when
    /// the alias is the address itself and the port is not 22 (two jump
    /// hosts on one address must not read alike).
    pub(crate) fn hop_name(&self) -> String {
        match self.port {
            Some(port) if port != 22 && self.alias == self.hostname => {
                if self.alias.contains(':') {
                    format!("[{}]:{port}", self.alias)
                } else {
                    format!("{}:{port}", self.alias)
                }
            }
            _ => self.alias.clone(),
        }
    }

    /// How the host is reached, for messages: ` via a,b`, ` via ProxyCommand`, or nothing.
    pub(crate) fn via_text(&self) -> String {
        match &self.route {
            Some(Route::Jumps(h)) => {
                format!(" via {}", h.iter().map(Host::hop_name).collect::<Vec<_>>().join(","))
            }
            Some(Route::Command(_)) => " via ProxyCommand".to_owned(),
            _ => String::new(),
        }
    }
}
