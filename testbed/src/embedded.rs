//! The embedded SSH server (russh) with fault injection.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{HashAlg, PrivateKey, PublicKey};
use russh::server::{self, Auth, Msg, Session};
use russh::{Channel, ChannelId, ChannelMsg, MethodKind, MethodSet, Preferred, Sig};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::{io_err, Error, Result};

/// A fault the embedded server injects into every connection accepted while it is set.
///
/// Several faults can be combined (e.g. a handshake delay and rejected authentication).
/// Change them at run time with [`EmbeddedServer::set_faults`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Accept the TCP connection and close it at once, before the banner: the client's
    /// handshake fails.
    RefuseHandshake,
    /// Wait this long after accepting the TCP connection before starting the SSH protocol.
    DelayHandshake(Duration),
    /// Reject every authentication attempt (every method, every user).
    RejectAuth,
    /// Close the connection (shutdown of the socket) once this many bytes, counted from
    /// the server's banner on, have been sent to the client.
    DropAfterBytes(u64),
    /// Close the connection this long after a command (exec, shell or subsystem) started.
    /// The command's processes are killed.
    DropDuringCommand(Duration),
    /// Accept the TCP connection and never send anything (no banner) until the server stops.
    NoBanner,
    /// Offer only SHA-1 key exchange (`diffie-hellman-group14-sha1`, `-group1-sha1`) and
    /// `hmac-sha1`: clients without SHA-1 (libssh2 as vendored by `ssh2`) cannot connect.
    Sha1Only,
}

#[derive(Debug, Clone, Default)]
struct FaultSet {
    refuse: bool,
    delay: Option<Duration>,
    reject_auth: bool,
    drop_after_bytes: Option<u64>,
    drop_during_command: Option<Duration>,
    no_banner: bool,
    sha1_only: bool,
}

impl FaultSet {
    fn from_faults(faults: &[Fault]) -> FaultSet {
        let mut set = FaultSet::default();
        for fault in faults {
            match fault {
                Fault::RefuseHandshake => set.refuse = true,
                Fault::DelayHandshake(d) => set.delay = Some(*d),
                Fault::RejectAuth => set.reject_auth = true,
                Fault::DropAfterBytes(n) => set.drop_after_bytes = Some(*n),
                Fault::DropDuringCommand(d) => set.drop_during_command = Some(*d),
                Fault::NoBanner => set.no_banner = true,
                Fault::Sha1Only => set.sha1_only = true,
            }
        }
        set
    }
}

/// Counters of an [`EmbeddedServer`] since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// TCP connections accepted.
    pub connections: u64,
    /// Connections currently open.
    pub active_connections: u64,
    /// Successful authentications.
    pub authenticated: u64,
    /// Rejected authentication attempts (including the initial `none` probes).
    pub auth_failures: u64,
    /// Commands started (exec, shell and subsystem requests).
    pub commands: u64,
    /// `none` authentication requests (the clients' method probes; also in `auth_failures`).
    pub none_probes: u64,
    /// Session channels opened.
    pub channels_opened: u64,
    /// Session channels opened while a command of the same connection was
    /// still running (a client opening its next channel ahead).
    pub channels_opened_ahead: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    active: AtomicU64,
    authenticated: AtomicU64,
    auth_failures: AtomicU64,
    commands: AtomicU64,
    none_probes: AtomicU64,
    channels_opened: AtomicU64,
    channels_opened_ahead: AtomicU64,
}

/// Builder for [`EmbeddedServer`]; see [`EmbeddedServer::builder`].
#[derive(Debug, Clone)]
pub struct EmbeddedServerBuilder {
    users: Option<Vec<String>>,
    passwords: Vec<(String, String)>,
    keys: Vec<(String, String)>,
    faults: Vec<Fault>,
    auth_rejection_time: Duration,
    worker_threads: usize,
    shell: PathBuf,
    working_dir: Option<PathBuf>,
    host_key: Option<PrivateKey>,
    inactivity_timeout: Option<Duration>,
    builtin_scp: Option<bool>,
    curve25519_only: bool,
}

impl Default for EmbeddedServerBuilder {
    fn default() -> Self {
        EmbeddedServerBuilder {
            users: None,
            passwords: Vec::new(),
            keys: Vec::new(),
            faults: Vec::new(),
            auth_rejection_time: Duration::from_millis(10),
            worker_threads: 2,
            shell: "/bin/sh".into(),
            working_dir: None,
            host_key: None,
            inactivity_timeout: Some(Duration::from_secs(600)),
            curve25519_only: false,
            builtin_scp: None,
        }
    }
}

impl EmbeddedServerBuilder {
    /// Restricts logins to these user names (default: any user name that has a matching
    /// credential). The names are only SSH login names: commands always run as the current
    /// OS user.
    pub fn users<I, S>(mut self, users: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.users
            .get_or_insert_with(Vec::new)
            .extend(users.into_iter().map(Into::into));
        self
    }

    /// Accepts `password` for `user` (password and keyboard-interactive methods). The user
    /// `"*"` means every user.
    pub fn password(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.passwords.push((user.into(), password.into()));
        self
    }

    /// Authorizes a public key for `user` (`"*"`: every user). `key` is an OpenSSH public key
    /// line such as `ssh-ed25519 AAAA... comment`; it is parsed by [`start`](Self::start).
    pub fn authorized_key(mut self, user: impl Into<String>, key: impl Into<String>) -> Self {
        self.keys.push((user.into(), key.into()));
        self
    }

    /// Injects a fault into every connection (see [`Fault`]).
    pub fn fault(mut self, fault: Fault) -> Self {
        self.faults.push(fault);
        self
    }

    /// Delay before a rejected authentication is answered (default 10 ms; russh's default
    /// of 1 s makes clients that probe several methods slow).
    pub fn auth_rejection_time(mut self, delay: Duration) -> Self {
        self.auth_rejection_time = delay;
        self
    }

    /// Worker threads of the server's tokio runtime (default 2).
    pub fn worker_threads(mut self, threads: usize) -> Self {
        self.worker_threads = threads.max(1);
        self
    }

    /// The shell commands run with (`SHELL -c COMMAND`; default `/bin/sh`).
    pub fn shell(mut self, shell: impl Into<PathBuf>) -> Self {
        self.shell = shell.into();
        self
    }

    /// Working directory of commands (default: the current user's home directory).
    pub fn working_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.working_dir = Some(dir.into());
        self
    }

    /// Uses this host key instead of a fresh ed25519 key (e.g. to run two servers with the
    /// same identity).
    pub fn host_key(mut self, key: PrivateKey) -> Self {
        self.host_key = Some(key);
        self
    }

    /// Offers only `curve25519-sha256` for key exchange, as an OpenSSH configured with
    /// `KexAlgorithms curve25519-sha256` would (default: russh's list, which starts with the
    /// post-quantum hybrid `mlkem768x25519-sha256`, about twice the CPU per login).
    pub fn curve25519_only(mut self, on: bool) -> Self {
        self.curve25519_only = on;
        self
    }

    /// Closes connections idle for this long (default 600 s; `None`: never).
    pub fn inactivity_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.inactivity_timeout = timeout;
        self
    }

    /// Serves `scp -t ...` / `scp -f ...` exec requests in-process (the SCP protocol's remote
    /// side, as OpenSSH's `scp` speaks it) instead of running the `scp` program, so SCP works
    /// where no `scp` binary is installed. Default: on exactly when no `scp` is on `PATH`.
    ///
    /// Only plain command lines are served this way (quotes, backslashes and a leading `~`
    /// are understood); a command line that needs a real shell (variables, globs, `;`,
    /// redirections...) still goes to the shell.
    pub fn builtin_scp(mut self, on: bool) -> Self {
        self.builtin_scp = Some(on);
        self
    }

    /// Starts the server on 127.0.0.1 with an ephemeral port, on its own runtime thread.
    pub fn start(self) -> Result<EmbeddedServer> {
        EmbeddedServer::start_with(self)
    }
}

fn parse_public_key(line: &str) -> Result<PublicKey> {
    PublicKey::from_openssh(line.trim()).map_err(|e| Error::Key(format!("cannot parse public key {line:?}: {e}")))
}

/// Generates a fresh ed25519 host key.
pub(crate) fn generate_ed25519() -> Result<PrivateKey> {
    use std::io::Read;
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .map_err(io_err("reading /dev/urandom"))?;
    Ok(PrivateKey::from(Ed25519Keypair::from_seed(&seed)))
}

/// Control over one accepted TCP connection: lets a fault (or [`EmbeddedServer`]) cut it.
struct ConnCtl {
    fd: RawFd,
    /// False once the socket is closed (so the fd number is never shut down after reuse).
    open: Mutex<bool>,
    /// Commands of this connection started and not yet ended.
    running: AtomicU64,
}

/// Counts a command as running on its connection until dropped.
struct RunningGuard(Arc<ConnCtl>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ConnCtl {
    /// Shuts the socket down in both directions: the client sees EOF at once.
    fn cut(&self) {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if *open {
            // SAFETY: the fd belongs to a TcpStream that is still open (checked under the lock
            // that its Drop takes before closing it).
            unsafe {
                libc::shutdown(self.fd, libc::SHUT_RDWR);
            }
        }
    }
}

/// The TCP stream of a connection, counting bytes sent for [`Fault::DropAfterBytes`].
struct FaultStream {
    inner: TcpStream,
    ctl: Arc<ConnCtl>,
    budget: Option<u64>,
}

impl Drop for FaultStream {
    fn drop(&mut self) {
        *self.ctl.open.lock().unwrap_or_else(|e| e.into_inner()) = false;
    }
}

impl AsyncRead for FaultStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for FaultStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let limit = match this.budget {
            None => buf.len(),
            Some(0) => {
                this.ctl.cut();
                return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
            }
            Some(n) => buf.len().min(usize::try_from(n).unwrap_or(usize::MAX)),
        };
        let result = Pin::new(&mut this.inner).poll_write(cx, &buf[..limit]);
        if let (Poll::Ready(Ok(written)), Some(budget)) = (&result, this.budget.as_mut()) {
            *budget -= *written as u64;
            if *budget == 0 {
                this.ctl.cut();
            }
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

struct Shared {
    users: Option<HashSet<String>>,
    passwords: RwLock<Vec<(String, String)>>,
    keys: RwLock<Vec<(String, PublicKey)>>,
    faults: Mutex<Vec<Fault>>,
    counters: Counters,
    conns: Mutex<HashMap<u64, Arc<ConnCtl>>>,
    next_conn: AtomicU64,
    /// Process groups of running commands (killed when the server stops).
    groups: Mutex<HashSet<i32>>,
    commands: Mutex<Vec<String>>,
    config: Arc<server::Config>,
    sha1_config: Arc<server::Config>,
    shell: PathBuf,
    working_dir: PathBuf,
    base_env: Vec<(String, String)>,
    /// Serve `scp -t/-f` in-process ([`EmbeddedServerBuilder::builtin_scp`]).
    builtin_scp: bool,
    /// `HOME` of commands, for `~` in built-in scp paths.
    home: PathBuf,
    umask: u32,
}

impl Shared {
    fn user_allowed(&self, user: &str) -> bool {
        self.users.as_ref().is_none_or(|users| users.contains(user))
    }

    fn password_ok(&self, user: &str, password: &str) -> bool {
        self.user_allowed(user)
            && self
                .passwords
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .any(|(u, p)| (u == user || u == "*") && p == password)
    }

    fn key_ok(&self, user: &str, key: &PublicKey) -> bool {
        self.user_allowed(user)
            && self
                .keys
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .any(|(u, k)| (u == user || u == "*") && k.key_data() == key.key_data())
    }

    fn lock_groups(&self) -> std::sync::MutexGuard<'_, HashSet<i32>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }
}

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
/// [`stop`](Self::stop) (or drop) closes every connection and kills running commands; it
/// waits at most about 2 s.
pub struct EmbeddedServer {
    port: u16,
    host_key: PrivateKey,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
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
        let host_key = match b.host_key {
            Some(key) => key,
            None => generate_ed25519()?,
        };
        let mut keys = Vec::new();
        for (user, line) in &b.keys {
            keys.push((user.clone(), parse_public_key(line)?));
        }
        let mut preferred = Preferred {
            compression: Cow::Borrowed(&[russh::compression::NONE]),
            ..Preferred::DEFAULT.clone()
        };
        if b.curve25519_only {
            preferred.kex = Cow::Borrowed(&[
                russh::kex::CURVE25519,
                russh::kex::EXTENSION_SUPPORT_AS_SERVER,
                russh::kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
            ]);
        }
        let make_config = |preferred: Preferred| server::Config {
            auth_rejection_time: b.auth_rejection_time,
            auth_rejection_time_initial: Some(Duration::ZERO),
            methods: MethodSet::from(
                &[
                    MethodKind::PublicKey,
                    MethodKind::Password,
                    MethodKind::KeyboardInteractive,
                ][..],
            ),
            keys: vec![host_key.clone()],
            nodelay: true,
            inactivity_timeout: b.inactivity_timeout,
            max_auth_attempts: 20,
            preferred,
            ..Default::default()
        };
        let config = make_config(preferred.clone());
        let sha1_config = make_config(Preferred {
            kex: Cow::Borrowed(&[russh::kex::DH_G14_SHA1, russh::kex::DH_G1_SHA1]),
            mac: Cow::Borrowed(&[russh::mac::HMAC_SHA1]),
            ..preferred
        });
        let mut base_env = vec![
            (
                "PATH".to_string(),
                std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
            ),
            ("HOME".to_string(), crate::home_dir().to_string_lossy().into_owned()),
            ("USER".to_string(), crate::current_user()),
            ("LOGNAME".to_string(), crate::current_user()),
            ("SHELL".to_string(), b.shell.to_string_lossy().into_owned()),
        ];
        if let Ok(lang) = std::env::var("LANG") {
            base_env.push(("LANG".to_string(), lang));
        }
        let builtin_scp = b.builtin_scp.unwrap_or_else(|| !program_on_path("scp", &base_env[0].1));
        let shared = Arc::new(Shared {
            users: b.users.map(|u| u.into_iter().collect()),
            passwords: RwLock::new(b.passwords),
            keys: RwLock::new(keys),
            faults: Mutex::new(b.faults),
            counters: Counters::default(),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
            groups: Mutex::new(HashSet::new()),
            commands: Mutex::new(Vec::new()),
            config: Arc::new(config),
            sha1_config: Arc::new(sha1_config),
            shell: b.shell,
            working_dir: b.working_dir.unwrap_or_else(crate::home_dir),
            base_env,
            builtin_scp,
            home: crate::home_dir(),
            umask: crate::scp::current_umask(),
        });

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(b.worker_threads)
            .thread_name("testbed-sshd")
            .enable_all()
            .build()
            .map_err(io_err("building the tokio runtime"))?;
        let listener = runtime
            .block_on(async {
                let socket = TcpSocket::new_v4()?;
                socket.bind((crate::LOCALHOST, 0).into())?;
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
        *self.shared.faults.lock().unwrap_or_else(|e| e.into_inner()) = faults;
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
        for ctl in self.shared.conns.lock().unwrap_or_else(|e| e.into_inner()).values() {
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
        let c = &self.shared.counters;
        ServerStats {
            connections: c.connections.load(Ordering::Relaxed),
            active_connections: c.active.load(Ordering::Relaxed),
            authenticated: c.authenticated.load(Ordering::Relaxed),
            auth_failures: c.auth_failures.load(Ordering::Relaxed),
            commands: c.commands.load(Ordering::Relaxed),
            none_probes: c.none_probes.load(Ordering::Relaxed),
            channels_opened: c.channels_opened.load(Ordering::Relaxed),
            channels_opened_ahead: c.channels_opened_ahead.load(Ordering::Relaxed),
        }
    }

    /// Commands received so far, in order (exec command lines; `<shell>` and
    /// `<subsystem NAME>` for the others).
    pub fn commands(&self) -> Vec<String> {
        self.shared.commands.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stops the server: stops accepting, cuts every connection, kills running commands'
    /// process groups, and joins the server thread (bounded: about 2 s at most).
    pub fn stop(&mut self) {
        let Some(thread) = self.thread.take() else { return };
        let _ = self.shutdown.send(true);
        self.drop_connections();
        for group in self.shared.lock_groups().drain() {
            // SAFETY: signalling a process group we created and have not reaped.
            unsafe {
                libc::kill(-group, libc::SIGKILL);
            }
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

async fn accept_loop(listener: tokio::net::TcpListener, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    tokio::spawn(handle_connection(shared.clone(), stream, shutdown.clone()));
                }
                Err(e) => {
                    log::warn!("testbed: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
}

struct ActiveGuard<'a>(&'a Shared, u64);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.counters.active.fetch_sub(1, Ordering::Relaxed);
        self.0.conns.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.1);
    }
}

async fn handle_connection(shared: Arc<Shared>, stream: TcpStream, mut shutdown: watch::Receiver<bool>) {
    shared.counters.connections.fetch_add(1, Ordering::Relaxed);
    let faults = FaultSet::from_faults(&shared.faults.lock().unwrap_or_else(|e| e.into_inner()));
    if faults.refuse {
        drop(stream);
        return;
    }
    if faults.no_banner {
        let _ = shutdown.wait_for(|stop| *stop).await;
        drop(stream);
        return;
    }
    if let Some(delay) = faults.delay {
        tokio::time::sleep(delay).await;
    }
    let _ = stream.set_nodelay(true);
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let ctl = Arc::new(ConnCtl {
        fd: stream.as_raw_fd(),
        open: Mutex::new(true),
        running: AtomicU64::new(0),
    });
    shared.counters.active.fetch_add(1, Ordering::Relaxed);
    shared
        .conns
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, ctl.clone());
    let _guard = ActiveGuard(&shared, id);
    let stream = FaultStream {
        inner: stream,
        ctl: ctl.clone(),
        budget: faults.drop_after_bytes,
    };
    let config = if faults.sha1_only {
        shared.sha1_config.clone()
    } else {
        shared.config.clone()
    };
    let handler = Connection {
        shared: shared.clone(),
        ctl,
        faults,
        channels: HashMap::new(),
    };
    match server::run_stream(config, stream, handler).await {
        Ok(session) => {
            if let Err(e) = session.await {
                log::debug!("testbed: session ended: {e}");
            }
        }
        Err(e) => log::debug!("testbed: handshake failed: {e}"),
    }
}

/// A session channel opened but not yet running a command.
struct PendingChannel {
    channel: Channel<Msg>,
    env: Vec<(String, String)>,
    term: Option<String>,
}

struct Connection {
    shared: Arc<Shared>,
    ctl: Arc<ConnCtl>,
    faults: FaultSet,
    channels: HashMap<ChannelId, PendingChannel>,
}

enum Launch {
    Exec(Vec<u8>),
    Shell,
    Program(PathBuf),
}

impl Connection {
    fn verdict(&self, ok: bool) -> Auth {
        if ok && !self.faults.reject_auth {
            self.shared.counters.authenticated.fetch_add(1, Ordering::Relaxed);
            Auth::Accept
        } else {
            self.shared.counters.auth_failures.fetch_add(1, Ordering::Relaxed);
            Auth::reject()
        }
    }

    fn launch(
        &mut self,
        id: ChannelId,
        launch: Launch,
        label: String,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        let Some(pending) = self.channels.remove(&id) else {
            session.channel_failure(id)?;
            return Ok(());
        };
        session.channel_success(id)?;
        self.shared.counters.commands.fetch_add(1, Ordering::Relaxed);
        self.ctl.running.fetch_add(1, Ordering::Relaxed);
        self.shared
            .commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(label);
        tokio::spawn(run_command(
            self.shared.clone(),
            self.ctl.clone(),
            self.faults.drop_during_command,
            session.handle(),
            pending,
            launch,
        ));
        Ok(())
    }
}

impl server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        self.shared.counters.auth_failures.fetch_add(1, Ordering::Relaxed);
        self.shared.counters.none_probes.fetch_add(1, Ordering::Relaxed);
        Ok(Auth::reject())
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        Ok(self.verdict(self.shared.password_ok(user, password)))
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.shared.key_ok(user, offer.public_key) && !self.faults.reject_auth {
            Ok(Auth::Accept)
        } else {
            self.shared.counters.auth_failures.fetch_add(1, Ordering::Relaxed);
            Ok(Auth::reject())
        }
    }

    async fn auth_publickey(&mut self, user: &str, key: server::VerifiedPublicKey<'_>) -> Result<Auth, Self::Error> {
        Ok(self.verdict(self.shared.key_ok(user, key.public_key)))
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<server::Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        match response {
            None => Ok(Auth::Partial {
                name: Cow::Borrowed(""),
                instructions: Cow::Borrowed(""),
                prompts: Cow::Owned(vec![(Cow::Borrowed("Password: "), false)]),
            }),
            Some(mut answers) => {
                let answer = answers
                    .next()
                    .map(|a| String::from_utf8_lossy(&a).into_owned())
                    .unwrap_or_default();
                Ok(self.verdict(self.shared.password_ok(user, &answer)))
            }
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let c = &self.shared.counters;
        c.channels_opened.fetch_add(1, Ordering::Relaxed);
        if self.ctl.running.load(Ordering::Relaxed) > 0 {
            c.channels_opened_ahead.fetch_add(1, Ordering::Relaxed);
        }
        self.channels.insert(
            channel.id(),
            PendingChannel {
                channel,
                env: Vec::new(),
                term: None,
            },
        );
        reply.accept().await;
        Ok(())
    }

    async fn channel_close(&mut self, channel: ChannelId, _session: &mut Session) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match self.channels.get_mut(&channel) {
            Some(pending) => {
                pending.env.push((name.to_string(), value.to_string()));
                session.channel_success(channel)?;
            }
            None => session.channel_failure(channel)?,
        }
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match self.channels.get_mut(&channel) {
            Some(pending) => {
                pending.term = Some(term.to_string());
                session.channel_success(channel)?;
            }
            None => session.channel_failure(channel)?,
        }
        Ok(())
    }

    async fn window_change_request(
        &mut self,
        _channel: ChannelId,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let label = String::from_utf8_lossy(data).into_owned();
        self.launch(channel, Launch::Exec(data.to_vec()), label, session)
    }

    async fn shell_request(&mut self, channel: ChannelId, session: &mut Session) -> Result<(), Self::Error> {
        self.launch(channel, Launch::Shell, "<shell>".into(), session)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let program = match name {
            "sftp" => [
                "/usr/lib/openssh/sftp-server",
                "/usr/libexec/openssh/sftp-server",
                "/usr/libexec/sftp-server",
            ]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists()),
            _ => None,
        };
        match program {
            Some(program) => self.launch(
                channel,
                Launch::Program(program),
                format!("<subsystem {name}>"),
                session,
            ),
            None => {
                session.channel_failure(channel)?;
                Ok(())
            }
        }
    }
}

fn signal_number(sig: &Sig) -> Option<i32> {
    Some(match sig {
        Sig::ABRT => libc::SIGABRT,
        Sig::ALRM => libc::SIGALRM,
        Sig::FPE => libc::SIGFPE,
        Sig::HUP => libc::SIGHUP,
        Sig::ILL => libc::SIGILL,
        Sig::INT => libc::SIGINT,
        Sig::KILL => libc::SIGKILL,
        Sig::PIPE => libc::SIGPIPE,
        Sig::QUIT => libc::SIGQUIT,
        Sig::SEGV => libc::SIGSEGV,
        Sig::TERM => libc::SIGTERM,
        Sig::USR1 => libc::SIGUSR1,
        Sig::Custom(name) => match name.as_str() {
            "USR2" => libc::SIGUSR2,
            "CONT" => libc::SIGCONT,
            "STOP" => libc::SIGSTOP,
            "TSTP" => libc::SIGTSTP,
            "WINCH" => libc::SIGWINCH,
            _ => return None,
        },
    })
}

fn signal_from_number(signo: i32) -> Sig {
    match signo {
        libc::SIGABRT => Sig::ABRT,
        libc::SIGALRM => Sig::ALRM,
        libc::SIGFPE => Sig::FPE,
        libc::SIGHUP => Sig::HUP,
        libc::SIGILL => Sig::ILL,
        libc::SIGINT => Sig::INT,
        libc::SIGKILL => Sig::KILL,
        libc::SIGPIPE => Sig::PIPE,
        libc::SIGQUIT => Sig::QUIT,
        libc::SIGSEGV => Sig::SEGV,
        libc::SIGTERM => Sig::TERM,
        libc::SIGUSR1 => Sig::USR1,
        libc::SIGUSR2 => Sig::Custom("USR2".into()),
        other => Sig::Custom(format!("SIG{other}")),
    }
}

/// Sleeps for `delay`, or forever without one (for [`Fault::DropDuringCommand`]).
async fn sleep_or_never(delay: Option<Duration>) {
    match delay {
        Some(delay) => tokio::time::sleep(delay).await,
        None => std::future::pending().await,
    }
}

/// How long a command has after the SIGHUP of a closed channel before SIGKILL.
const HANGUP_GRACE: Duration = Duration::from_secs(1);

fn kill_group(group: i32, signo: i32) {
    if group > 0 {
        // SAFETY: signalling a process group this server created.
        unsafe {
            libc::kill(-group, signo);
        }
    }
}

/// Runs one command for a channel: a real process with piped stdio, streamed both ways.
async fn run_command(
    shared: Arc<Shared>,
    ctl: Arc<ConnCtl>,
    drop_after: Option<Duration>,
    handle: server::Handle,
    pending: PendingChannel,
    launch: Launch,
) {
    let running = RunningGuard(ctl.clone());
    if let Launch::Exec(line) = &launch {
        if shared.builtin_scp {
            if let Some(cmd) = crate::scp::parse_command(line, &shared.home) {
                let _running = running;
                return run_builtin_scp(shared, ctl, drop_after, pending, cmd).await;
            }
        }
    }
    let PendingChannel { channel, env, term } = pending;
    let id = channel.id();
    let (mut rx, tx) = channel.split();
    let mut command = match &launch {
        Launch::Exec(line) => {
            let mut c = tokio::process::Command::new(&shared.shell);
            c.arg("-c").arg(OsStr::from_bytes(line));
            c
        }
        Launch::Shell => tokio::process::Command::new(&shared.shell),
        Launch::Program(path) => tokio::process::Command::new(path),
    };
    command
        .env_clear()
        .envs(shared.base_env.iter().map(|(k, v)| (k, v)))
        .envs(term.map(|t| ("TERM".to_string(), t)))
        .envs(env)
        .current_dir(&shared.working_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: prctl is async-signal-safe. The command dies with the server's runtime thread
    // even if the test process exits without stopping the server.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            let message = format!("testbed: cannot run command: {e}\n");
            let _ = tx.extended_data_bytes(1, message.into_bytes()).await;
            let _ = tx.exit_status(127).await;
            let _ = tx.eof().await;
            let _ = tx.close().await;
            return;
        }
    };
    let group = child.id().map(|pid| pid as i32).unwrap_or(0);
    shared.lock_groups().insert(group);

    // stdin: fed by a task so that a command that does not read its input cannot block the
    // channel's other traffic; dropping the sender closes the pipe (EOF).
    let mut stdin_tx = child.stdin.take().map(|mut stdin| {
        let (sender, mut receiver) = mpsc::channel::<bytes::Bytes>(16);
        tokio::spawn(async move {
            while let Some(data) = receiver.recv().await {
                if stdin.write_all(&data).await.is_err() {
                    break;
                }
            }
        });
        sender
    });
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let mut out_writer = tx.make_writer();
    let mut err_writer = tx.make_writer_ext(Some(1));
    let mut io = tokio::spawn(async move {
        let out = async {
            if let Some(stdout) = stdout {
                let mut reader = tokio::io::BufReader::with_capacity(32 * 1024, stdout);
                let _ = tokio::io::copy_buf(&mut reader, &mut out_writer).await;
            }
        };
        let err = async {
            if let Some(stderr) = stderr {
                let mut reader = tokio::io::BufReader::with_capacity(32 * 1024, stderr);
                let _ = tokio::io::copy_buf(&mut reader, &mut err_writer).await;
            }
        };
        tokio::join!(out, err);
        child.wait().await
    });

    let drop_timer = sleep_or_never(drop_after);
    tokio::pin!(drop_timer);
    let mut dropped = false;
    let mut client_gone = false;
    let grace = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(grace);
    let status = loop {
        tokio::select! {
            status = &mut io => break status.ok().and_then(|s| s.ok()),
            _ = &mut drop_timer, if !dropped => {
                dropped = true;
                ctl.cut();
            }
            _ = &mut grace, if client_gone => {
                kill_group(group, libc::SIGKILL);
                grace.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(3600));
            }
            msg = rx.wait(), if !client_gone => match msg {
                Some(ChannelMsg::Data { data }) => {
                    if let Some(sender) = &stdin_tx {
                        if sender.send(data).await.is_err() {
                            stdin_tx = None;
                        }
                    }
                }
                Some(ChannelMsg::Eof) => stdin_tx = None,
                Some(ChannelMsg::Signal { signal }) => {
                    if let Some(signo) = signal_number(&signal) {
                        kill_group(group, signo);
                    }
                }
                Some(ChannelMsg::Close) | None => {
                    client_gone = true;
                    stdin_tx = None;
                    kill_group(group, libc::SIGHUP);
                    grace.as_mut().reset(tokio::time::Instant::now() + HANGUP_GRACE);
                }
                Some(_) => {}
            },
        }
    };
    shared.lock_groups().remove(&group);
    if client_gone {
        return;
    }
    // Ended before the client can hear of it: an open that follows the exit
    // status is never counted as opened ahead.
    drop(running);
    match status {
        Some(status) => {
            if let Some(code) = status.code() {
                let _ = tx.exit_status(code as u32).await;
            } else if let Some(signo) = status.signal() {
                let _ = handle
                    .exit_signal_request(
                        id,
                        signal_from_number(signo),
                        status.core_dumped(),
                        String::new(),
                        String::new(),
                    )
                    .await;
            }
        }
        None => {
            let _ = tx.exit_status(255).await;
        }
    }
    let _ = tx.eof().await;
    let _ = tx.close().await;
}

/// Whether an executable file `name` is in one of the `path` directories.
fn program_on_path(name: &str, path: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path)
        .any(|dir| std::fs::metadata(dir.join(name)).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// Runs the built-in scp for a channel: the protocol engine on a blocking thread, fed from
/// the channel's data and writing to it, with the same channel handling as a command.
async fn run_builtin_scp(
    shared: Arc<Shared>,
    ctl: Arc<ConnCtl>,
    drop_after: Option<Duration>,
    pending: PendingChannel,
    cmd: crate::scp::ScpCommand,
) {
    let (mut rx, tx) = pending.channel.split();
    let (stdin_tx, stdin_rx) = mpsc::channel::<bytes::Bytes>(16);
    // Dropped (or set) when the client goes away: a write blocked on the window gives up.
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let output = ChannelOutput {
        writer: Box::pin(tx.make_writer()),
        runtime: tokio::runtime::Handle::current(),
        cancel: cancel_rx,
    };
    let cwd = shared.working_dir.clone();
    let umask = shared.umask;
    let mut job = tokio::task::spawn_blocking(move || {
        let input = std::io::BufReader::with_capacity(
            64 * 1024,
            ChannelInput {
                rx: stdin_rx,
                chunk: bytes::Bytes::new(),
            },
        );
        crate::scp::Scp::new(cmd, &cwd, umask, input, output).run()
    });
    let mut stdin_tx = Some(stdin_tx);
    let drop_timer = sleep_or_never(drop_after);
    tokio::pin!(drop_timer);
    let mut dropped = false;
    let status = loop {
        tokio::select! {
            status = &mut job => break status.unwrap_or(1),
            _ = &mut drop_timer, if !dropped => {
                dropped = true;
                ctl.cut();
            }
            msg = rx.wait() => match msg {
                Some(ChannelMsg::Data { data }) => {
                    if let Some(sender) = &stdin_tx {
                        if sender.send(data).await.is_err() {
                            stdin_tx = None;
                        }
                    }
                }
                Some(ChannelMsg::Eof) => stdin_tx = None,
                Some(ChannelMsg::Close) | None => {
                    // The client is gone: unblock the engine and leave it to end alone.
                    drop(stdin_tx);
                    let _ = cancel_tx.send(true);
                    return;
                }
                Some(_) => {}
            },
        }
    };
    let _ = tx.exit_status(status).await;
    let _ = tx.eof().await;
    let _ = tx.close().await;
}

/// The channel's incoming data as a blocking reader (EOF when the client sends EOF).
struct ChannelInput {
    rx: mpsc::Receiver<bytes::Bytes>,
    chunk: bytes::Bytes,
}

impl std::io::Read for ChannelInput {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use bytes::Buf;
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(data) => self.chunk = data,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk.advance(n);
        Ok(n)
    }
}

/// The channel's stdout as a blocking writer (for a `spawn_blocking` thread).
struct ChannelOutput {
    writer: Pin<Box<dyn AsyncWrite + Send>>,
    runtime: tokio::runtime::Handle,
    cancel: watch::Receiver<bool>,
}

impl ChannelOutput {
    /// Runs one write-side operation to completion, or fails once the client is gone.
    fn block_on<T>(
        runtime: &tokio::runtime::Handle,
        cancel: &watch::Receiver<bool>,
        op: impl std::future::Future<Output = std::io::Result<T>>,
    ) -> std::io::Result<T> {
        let mut cancel = cancel.clone();
        runtime.block_on(async move {
            tokio::select! {
                r = op => r,
                _ = cancel.wait_for(|gone| *gone) => Err(std::io::ErrorKind::BrokenPipe.into()),
            }
        })
    }
}

impl std::io::Write for ChannelOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Self::block_on(&self.runtime, &self.cancel, self.writer.write(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Self::block_on(&self.runtime, &self.cancel, self.writer.flush())
    }
}
