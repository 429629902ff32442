//! The embedded SSH server (russh) with fault injection: [`EmbeddedServer`], the handle
//! that starts, inspects, reconfigures and stops one server.
//!
//! Modules, from the outside in: [`builder`] (settings, turned into [`Shared`] state at
//! start), [`connection`] (the accept loop and russh's per-connection handler: auth and
//! channel requests), [`exec`] (a command on a channel, as a process), [`scp_channel`]
//! (the built-in scp on a channel), [`forward`] (`direct-tcpip` channels relayed to a
//! target on 127.0.0.0/8), [`socket`] (a connection's socket, cut on demand),
//! [`hostile`] (connections that never become SSH sessions), [`faults`] and [`shared`].
//!
//! Invariant: every task and process the server starts lives on its own runtime thread
//! and dies with [`EmbeddedServer::stop`] (or drop): connections are cut, process groups
//! killed, and the runtime is shut down with a bounded wait.

mod builder;
mod connection;
mod exec;
mod faults;
mod forward;
mod hostile;
mod scp_channel;
mod shared;
mod socket;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::{HashAlg, PrivateKey};
use tokio::net::TcpSocket;
use tokio::sync::watch;

pub(crate) use builder::generate_ed25519;
pub use builder::EmbeddedServerBuilder;
use builder::{parse_public_key, Prepared};
use connection::accept_loop;
use exec::kill_group;
pub use faults::Fault;
pub use shared::ServerStats;
use shared::{lock, Shared};

use crate::{io_err, Result};

/// An in-process SSH server on 127.0.0.1 (russh on its own tokio runtime thread).
///
/// * Host key: a fresh ed25519 key (unless [`EmbeddedServerBuilder::host_key`]).
/// * Auth: password, keyboard-interactive (one "Password: " prompt) and public key, as
///   configured on the builder; `none` is always rejected.
/// * Exec requests run `sh -c COMMAND` as the current OS user in their home directory,
///   with a clean environment (`PATH`, `HOME`, `USER`, `LOGNAME`, `SHELL`, `LANG`) plus the
///   client's env requests. stdin, stdout and stderr are streamed with flow control; the
///   exit status (or exit signal) is sent, then EOF and close. Shell requests run the shell,
///   the `sftp` subsystem runs OpenSSH's `sftp-server` if installed. `scp -t/-f` requests
///   are served in-process when [`EmbeddedServerBuilder::builtin_scp`] is on (the default
///   where no `scp` binary is installed). PTY requests are
///   accepted (no terminal is allocated; `TERM` is set). Signals from the client are
///   delivered to the command's process group, and when the client closes the channel or the
///   connection the group gets SIGHUP, then SIGKILL after 1 s.
///
/// * `direct-tcpip` channels (local forwarding, as a jump host serves them) are relayed to
///   their target when it is on 127.0.0.0/8 (or `localhost`); any other target is refused
///   as administratively prohibited, an unreachable one as connect-failed. Closing either
///   side closes the other. See [`Fault::RefuseForwarding`], [`Fault::DropForwardAfterBytes`]
///   and [`drop_forwards`](Self::drop_forwards).
///
/// [`stop`](Self::stop) (or drop) closes every connection and kills running commands; it
/// waits at most about 2 s.
pub struct EmbeddedServer {
    /// The listening port on 127.0.0.1.
    port: u16,
    /// The host key, whose public half clients must trust.
    host_key: PrivateKey,
    /// State shared with the accept loop, the connections and their commands.
    shared: Arc<Shared>,
    /// Set to true to stop the accept loop (and the `NoBanner` connections' wait).
    shutdown: watch::Sender<bool>,
    /// The runtime thread; `None` once stopped.
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for EmbeddedServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedServer")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl EmbeddedServer {
    /// A builder: add users, credentials and faults, then [`start`](EmbeddedServerBuilder::start).
    pub fn builder() -> EmbeddedServerBuilder {
        EmbeddedServerBuilder::default()
    }

    fn start_with(b: EmbeddedServerBuilder) -> Result<EmbeddedServer> {
        crate::raise_fd_limit();
        let Prepared {
            host_key,
            shared,
            worker_threads,
            port,
        } = b.prepare()?;

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(worker_threads)
            .thread_name("testbed-sshd")
            .enable_all()
            .build()
            .map_err(io_err("building the tokio runtime"))?;
        let listener = runtime
            .block_on(async {
                let socket = TcpSocket::new_v4()?;
                // As tokio's own `TcpListener::bind` does: a server started on the port of one
                // just stopped must not fail on its connections in TIME_WAIT, and Linux lets
                // those go only if the old listener had the flag too.
                socket.set_reuseaddr(true)?;
                socket.bind((crate::LOCALHOST, port).into())?;
                socket.listen(4096)
            })
            .map_err(io_err("listening on 127.0.0.1"))?;
        let port = listener.local_addr().map_err(io_err("local_addr"))?.port();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let loop_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("testbed-sshd-{port}"))
            .spawn(move || {
                runtime.block_on(accept_loop(listener, loop_shared, shutdown_rx));
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(io_err("spawning the server thread"))?;
        Ok(EmbeddedServer {
            port,
            host_key,
            shared,
            shutdown,
            thread: Some(thread),
        })
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> std::net::SocketAddr {
        (crate::LOCALHOST, self.port).into()
    }

    /// The host public key in OpenSSH format: `ssh-ed25519 AAAA...`.
    pub fn host_key_openssh(&self) -> String {
        self.host_key
            .public_key()
            .to_openssh()
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// The host key's SHA-256 fingerprint, `SHA256:...` (as `ssh-keygen -l` prints it).
    pub fn host_key_fingerprint(&self) -> String {
        self.host_key.public_key().fingerprint(HashAlg::Sha256).to_string()
    }

    /// The host private key (e.g. to start another server with the same identity).
    pub fn host_key(&self) -> &PrivateKey {
        &self.host_key
    }

    /// `[127.0.0.1]:PORT ssh-ed25519 AAAA...`, for a `known_hosts` file.
    pub fn known_hosts_line(&self) -> String {
        crate::known_hosts_line(self.port, &self.host_key_openssh())
    }

    /// Appends [`known_hosts_line`](Self::known_hosts_line) to the file at `path`.
    pub fn write_known_hosts(&self, path: &Path) -> Result<()> {
        crate::append_line(path, &self.known_hosts_line())
    }

    /// Replaces the injected faults (applies to connections accepted from now on).
    pub fn set_faults(&self, faults: Vec<Fault>) {
        *lock(&self.shared.faults) = faults;
    }

    /// Removes every injected fault (for connections accepted from now on).
    pub fn clear_faults(&self) {
        self.set_faults(Vec::new());
    }

    /// Accepts `password` for `user` from now on.
    pub fn add_password(&self, user: &str, password: &str) {
        self.shared
            .passwords
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push((user.into(), password.into()));
    }

    /// Authorizes a public key line for `user` (`"*"`: all users) from now on.
    pub fn add_authorized_key(&self, user: &str, key: &str) -> Result<()> {
        let key = parse_public_key(key)?;
        self.shared
            .keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push((user.into(), key));
        Ok(())
    }

    /// Cuts every open connection at once (like a host going away); the server keeps
    /// accepting new ones.
    pub fn drop_connections(&self) {
        for ctl in lock(&self.shared.conns).values() {
            ctl.cut();
        }
    }

    /// Whether `scp -t/-f` requests are served in-process
    /// ([`EmbeddedServerBuilder::builtin_scp`]).
    pub fn builtin_scp(&self) -> bool {
        self.shared.builtin_scp
    }

    /// Counters since the server started.
    pub fn stats(&self) -> ServerStats {
        self.shared.counters.snapshot()
    }

    /// Commands received so far, in order (exec command lines; `<shell>` and
    /// `<subsystem NAME>` for the others).
    pub fn commands(&self) -> Vec<String> {
        lock(&self.shared.commands).clone()
    }

    /// Every `direct-tcpip` target requested so far (`HOST:PORT` as the client sent it,
    /// refused ones included), in order.
    pub fn forwards(&self) -> Vec<String> {
        lock(&self.shared.forwards).clone()
    }

    /// Cuts every forwarded connection (`direct-tcpip` channel) relaying now: each channel
    /// is closed without EOF and its target's socket closed. The SSH connections stay up
    /// and new forwards are accepted.
    pub fn drop_forwards(&self) {
        self.shared.drop_forwards.send_modify(|generation| *generation += 1);
    }

    /// Stops the server: stops accepting, cuts every connection, kills running commands'
    /// process groups, and joins the server thread (bounded: about 2 s at most).
    pub fn stop(&mut self) {
        let Some(thread) = self.thread.take() else { return };
        let _ = self.shutdown.send(true);
        self.drop_connections();
        self.drop_forwards();
        for group in self.shared.lock_groups().drain() {
            kill_group(group, libc::SIGKILL);
        }
        // The thread ends after `shutdown_timeout(1 s)`; do not wait forever regardless.
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while !thread.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if thread.is_finished() {
            let _ = thread.join();
        }
    }
}

impl Drop for EmbeddedServer {
    fn drop(&mut self) {
        self.stop();
    }
}
