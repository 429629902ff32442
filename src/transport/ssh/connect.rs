//! Connecting: resolving the name (on a helper thread: getaddrinfo blocks),
//! non-blocking TCP to each address in turn (of the configured
//! `AddressFamily`, `ConnectionAttempts` rounds), or instead a proxy
//! command's socketpair, or (behind a jump host) asking the loop for a
//! tunnel; creating the session (with
//! the configuration's algorithm preferences and compression) and the SSH
//! handshake, then the host-key check; and what a passed deadline means in
//! each phase.
//!
//! Invariant: `connect_timeout` bounds resolving, TCP and the handshake,
//! `auth_timeout` authentication; libssh2's own read timeout is set beyond
//! both, so ours always fire first. Behind a jump host, the connect deadline
//! starts when the tunnel is open (the jump session's own deadlines bound
//! the wait before).
//!
//! May use: `conn`, `event_loop` (`Cx`, `Resolved`), `hostkey`, `auth`,
//! `stream`, `proxy_command`, `jump` (`News`), `transport::libssh2`, `host`,
//! `ssh_config` (its value types).

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::Interest;
use ssh2::{MethodType, Session};

use super::auth::Auth;
use super::conn::{Conn, Flow, Phase};
use super::event_loop::Cx;
use super::hostkey::check_host_key;
use super::jump::News;
use super::proxy_command::ProxyCommand;
use super::stream::Stream;
use crate::host::{AlgorithmKind, SshSettings};
use crate::ssh_config::AddressFamily;
use crate::transport::libssh2::{self, set_read_timeout, would_block};

/// Connecting and authenticating, when the host sets no `connect_timeout`.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Authentication deadline when the host sets none.
pub(super) const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(20);

impl Conn {
    /// How long connecting may take (the host's, else the default).
    pub(super) fn connect_timeout(&self) -> Duration {
        self.host.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT)
    }

    /// Starts (or restarts) connecting, with the connect deadline.
    pub(super) fn start_connect(&mut self, cx: &Cx<'_>) {
        self.gen += 1;
        self.tunnel = None;
        if !self.host.jump_hosts().is_empty() {
            self.phase = Phase::Tunnel;
            self.deadline = None;
            let _ = cx.news.send(News::NeedTunnel(self.key));
            return;
        }
        self.deadline = Some(Instant::now() + self.connect_timeout());
        if let Some(command) = self.host.proxy_command_line() {
            let started = ProxyCommand::spawn(command).and_then(|c| {
                let mut s = Stream::Command(c);
                cx.registry
                    .register(&mut s, mio::Token(self.key), Interest::READABLE | Interest::WRITABLE)
                    .map_err(|e| format!("cannot poll the ProxyCommand's socket: {e}"))?;
                self.stream = Some(s);
                self.open_session()
            });
            if let Err(m) = started {
                let msg = format!("{}: {m}", self.target());
                self.connect_failed(cx, msg);
            }
            return;
        }
        let (family, attempts) = (self.host.ssh.address_family, self.host.ssh.connection_attempts);
        if let Ok(ip) = self.host.hostname.parse::<IpAddr>() {
            match connect_order(vec![SocketAddr::new(ip, self.port)], family, attempts) {
                Ok(addrs) => {
                    self.phase = Phase::Connecting {
                        addrs,
                        next: 0,
                        errors: Vec::new(),
                    }
                }
                Err(e) => self.connect_failed(cx, format!("{}: {e}", self.target())),
            }
            return;
        }
        self.phase = Phase::Resolving;
        let (key, gen, port) = (self.key, self.gen, self.port);
        let name = self.host.hostname.clone();
        let tx = cx.resolved.clone();
        let waker = cx.waker.clone();
        // getaddrinfo blocks: never on the I/O thread.
        let spawned = std::thread::Builder::new()
            .name("ssh-parallel-resolve".into())
            .spawn(move || {
                let r = (name.as_str(), port)
                    .to_socket_addrs()
                    .map_err(|e| e.to_string())
                    .and_then(|a| connect_order(a.collect(), family, attempts));
                let _ = tx.send((key, gen, r));
                let _ = waker.wake();
            });
        if let Err(e) = spawned {
            self.connect_failed(cx, format!("cannot start a resolver thread: {e}"));
        }
    }
    /// Non-blocking TCP connect, trying each address in turn; then creates the session.
    pub(super) fn step_tcp(&mut self, cx: &Cx<'_>) -> Result<Flow, String> {
        let target = self.target();
        let Phase::Connecting { addrs, next, errors } = &mut self.phase else {
            return Ok(Flow::Again);
        };
        if let Some(Stream::Tcp(s)) = &self.stream {
            let failed = match s.take_error() {
                Ok(Some(e)) | Err(e) => Some(e.to_string()),
                Ok(None) => match s.peer_addr() {
                    Ok(_) => None,
                    Err(e) if e.kind() == io::ErrorKind::NotConnected || e.kind() == io::ErrorKind::WouldBlock => {
                        return Ok(Flow::Wait)
                    }
                    Err(e) => Some(e.to_string()),
                },
            };
            match failed {
                None => {
                    let _ = s.set_nodelay(true);
                    self.open_session()?;
                    return Ok(Flow::Again);
                }
                Some(e) => {
                    errors.push(format!("{}: {e}", addrs[*next - 1]));
                    if let Some(mut s) = self.stream.take() {
                        let _ = cx.registry.deregister(&mut s);
                    }
                }
            }
        }
        let Some(addr) = addrs.get(*next).copied() else {
            return Err(format!("cannot connect to {target}: {}", errors.join("; ")));
        };
        *next += 1;
        match TcpStream::connect(addr) {
            Ok(s) => {
                let mut s = Stream::Tcp(s);
                if let Err(e) =
                    cx.registry
                        .register(&mut s, mio::Token(self.key), Interest::READABLE | Interest::WRITABLE)
                {
                    errors.push(format!("{addr}: cannot poll the socket: {e}"));
                } else {
                    self.stream = Some(s);
                }
            }
            Err(e) => errors.push(format!("{addr}: {e}")),
        }
        Ok(Flow::Again)
    }

    /// Creates the session on `stream` (algorithm preferences, compression,
    /// non-blocking, libssh2's read timeout beyond ours); the handshake is next.
    pub(super) fn open_session(&mut self) -> Result<(), String> {
        let target = self.target();
        let Some(stream) = &self.stream else {
            return Err(format!("{target}: no stream to start a session on (transport bug)"));
        };
        let mut sess = Session::new().map_err(|e| format!("cannot create an SSH session: {e}"))?;
        set_methods(&sess, &self.host.ssh).map_err(|e| format!("{target}: {e}"))?;
        sess.set_blocking(false);
        let ours = [self.host.connect_timeout, self.host.auth_timeout]
            .into_iter()
            .flatten()
            .chain([DEFAULT_CONNECT_TIMEOUT, DEFAULT_AUTH_TIMEOUT])
            .max()
            .unwrap_or(DEFAULT_AUTH_TIMEOUT);
        set_read_timeout(&sess, ours + Duration::from_secs(60));
        sess.set_tcp_stream(stream.fd());
        self.sess = Some(sess);
        self.phase = Phase::Handshake;
        Ok(())
    }

    /// The SSH handshake, then the host-key check.
    pub(super) fn step_handshake(&mut self) -> Result<Flow, String> {
        let target = self.target();
        let sess = self.sess.as_mut().expect("session in handshake");
        match sess.handshake() {
            Ok(()) => {}
            Err(e) if would_block(&e) => return Ok(Flow::Wait),
            Err(e) => return Err(handshake_error(&target, &e)),
        }
        check_host_key(sess, &self.host, self.port)?;
        self.phase = Phase::Auth(Box::new(Auth::new(&self.host)));
        self.deadline = Some(Instant::now() + self.host.auth_timeout.unwrap_or(DEFAULT_AUTH_TIMEOUT));
        Ok(Flow::Again)
    }

    /// A connect, cancel or disconnect deadline passed.
    pub(super) fn deadline_passed(&mut self, cx: &Cx<'_>) {
        self.deadline = None;
        let mut timeout = self.connect_timeout();
        let what = match self.phase {
            Phase::Resolving => "resolving the name",
            Phase::Connecting { .. } => "connecting",
            Phase::Handshake => "in the SSH handshake",
            Phase::Auth(_) => {
                timeout = self.host.auth_timeout.unwrap_or(DEFAULT_AUTH_TIMEOUT);
                "authenticating"
            }
            Phase::Cancelling(_) => {
                self.broken(cx, "closing a cancelled channel timed out".into());
                return;
            }
            Phase::Disconnecting => {
                self.closed(cx);
                return;
            }
            _ => return,
        };
        let msg = format!("{}: timed out after {timeout:?} {what}", self.target());
        self.connect_failed(cx, msg);
    }
}

/// The addresses to try, in order: those of the configured family
/// (`AddressFamily`), the whole list once per `ConnectionAttempts`.
fn connect_order(
    addrs: Vec<SocketAddr>,
    family: Option<AddressFamily>,
    attempts: u32,
) -> Result<Vec<SocketAddr>, String> {
    let addrs: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| match family {
            Some(AddressFamily::Inet) => a.is_ipv4(),
            Some(AddressFamily::Inet6) => a.is_ipv6(),
            _ => true,
        })
        .collect();
    if addrs.is_empty() {
        return Err(format!("no address of the configured AddressFamily ({family:?})"));
    }
    let rounds = attempts.clamp(1, 100) as usize;
    Ok(addrs.iter().copied().cycle().take(addrs.len() * rounds).collect())
}

/// libssh2's method preferences from the configuration's algorithm lists
/// (applied to libssh2's defaults, then reduced to what it supports), and
/// compression; before the handshake, as libssh2 requires.
fn set_methods(sess: &Session, s: &SshSettings) -> Result<(), String> {
    for (kind, alg, origin) in &s.algorithms {
        let types: &[MethodType] = match kind {
            AlgorithmKind::Ciphers => &[MethodType::CryptCs, MethodType::CryptSc],
            AlgorithmKind::Kex => &[MethodType::Kex],
            AlgorithmKind::Macs => &[MethodType::MacCs, MethodType::MacSc],
            AlgorithmKind::HostKey => &[MethodType::HostKey],
        };
        for &t in types {
            let supported = sess
                .supported_algs(t)
                .map_err(|e| format!("cannot list libssh2's {}: {e}", kind.keyword()))?;
            let wanted = alg.apply(&supported);
            let mut usable: Vec<&str> = wanted
                .iter()
                .map(String::as_str)
                .filter(|n| supported.contains(n) && !is_kex_extension(n))
                .collect();
            if usable.is_empty() {
                return Err(format!(
                    "{origin}: {} {}: libssh2 supports none of them (it has {})",
                    kind.keyword(),
                    wanted.join(","),
                    supported.join(",")
                ));
            }
            // The extension markers are not algorithms a user names: keep them
            // (strict kex is the Terrapin fix, ext-info enables rsa-sha2 user keys).
            usable.extend(supported.iter().copied().filter(|n| is_kex_extension(n)));
            sess.method_pref(t, &usable.join(","))
                .map_err(|e| format!("{origin}: {}: {e}", kind.keyword()))?;
        }
    }
    if s.compression {
        sess.set_compress(true);
    }
    Ok(())
}

/// libssh2's pseudo-algorithms in its kex list (`ext-info-c`, `kex-strict-c-v00@openssh.com`).
fn is_kex_extension(name: &str) -> bool {
    name.starts_with("ext-info-") || name.starts_with("kex-strict-")
}

/// The handshake failure message; says so when SHA-1-only algorithms are the likely cause.
fn handshake_error(target: &str, e: &ssh2::Error) -> String {
    let c = libssh2::code(e);
    if c == libssh2::LIBSSH2_ERROR_KEX_FAILURE
        || c == libssh2::LIBSSH2_ERROR_KEY_EXCHANGE_FAILURE
        || e.message().contains("exchange encryption keys")
    {
        format!(
            "{target}: SSH handshake failed: {e}. If the server offers only ssh-rsa (SHA-1) or ssh-dss host \
             keys, *-sha1 key exchange or hmac-sha1, that is why: this client's libssh2 has SHA-1 and DSA \
             compiled out; enable SHA-2 algorithms (rsa-sha2-256/512, ed25519, curve25519) on the server"
        )
    } else {
        format!("{target}: SSH handshake failed: {e}")
    }
}
