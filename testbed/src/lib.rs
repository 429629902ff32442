//! Test bed for `ssh-parallel`: real SSH servers on 127.0.0.1 for tests, examples and benchmarks.
//!
//! Two tiers:
//!
//! * [`EmbeddedServer`]: an in-process SSH server (russh) on its own tokio runtime thread, on an
//!   ephemeral port. It authenticates with passwords, keyboard-interactive and public keys, runs
//!   exec requests through `sh -c` as the current OS user (so `scp -t/-f`, `rsync --server`
//!   and the sftp subsystem work), and can inject faults ([`Fault`]). Where no `scp` binary
//!   is installed it serves `scp -t/-f` itself
//!   ([`builtin_scp`](EmbeddedServerBuilder::builtin_scp)). One server handles
//!   thousands of concurrent connections.
//! * [`OpenSshServer`]: a real OpenSSH `sshd` process with a throwaway host key and config.
//!   It needs `/usr/sbin/sshd` and root; otherwise [`OpenSshServer::start`] returns
//!   [`Error::Unavailable`]; [`prereq`] turns that into a test failure, or a loud, counted
//!   skip when `TESTBED_ALLOW_SKIP=1`.
//!
//! [`ClientKey`] generates throwaway client key pairs with `ssh-keygen`.
//!
//! [`Proxy`] is a TCP proxy to put between a client and a server: it can freeze the
//! connections going through it (a dead peer that never answers) or cut them.
//!
//! ```no_run
//! let server = testbed::EmbeddedServer::builder().password("alice", "secret").start()?;
//! let known_hosts = tempfile::NamedTempFile::new()?;
//! server.write_known_hosts(known_hosts.path())?;
//! println!("ssh -p {} alice@127.0.0.1", server.port());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

mod embedded;
mod keys;
mod openssh;
pub mod prereq;
mod proxy;
mod scp;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

pub use embedded::{EmbeddedServer, EmbeddedServerBuilder, Fault, ServerStats};
pub use keys::{ClientKey, KeyType};
pub use openssh::{OpenSshServer, OpenSshServerBuilder};
pub use proxy::Proxy;

/// Errors of the test bed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A key could not be generated or parsed.
    #[error("key error: {0}")]
    Key(String),
    /// The requested server cannot run on this machine (no sshd binary, not root, ...).
    /// Tests may skip on this error.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A server failed to start.
    #[error("server failed to start: {0}")]
    Start(String),
}

/// Result type of the test bed.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// The loopback address all servers listen on.
pub const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// A `known_hosts` line for a server on 127.0.0.1: `[127.0.0.1]:PORT <key type> <base64>`.
///
/// `public_key` is an OpenSSH public key line (`ssh-ed25519 AAAA... [comment]`); the comment is
/// dropped. Port 22 uses the bare `127.0.0.1` host form, as OpenSSH does.
pub fn known_hosts_line(port: u16, public_key: &str) -> String {
    let mut fields = public_key.split_whitespace();
    let kind = fields.next().unwrap_or_default();
    let blob = fields.next().unwrap_or_default();
    if port == 22 {
        format!("127.0.0.1 {kind} {blob}")
    } else {
        format!("[127.0.0.1]:{port} {kind} {blob}")
    }
}

/// Appends `line` (plus a newline) to the file at `path`, creating it if needed.
pub fn append_line(path: &Path, line: &str) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_err(format!("opening {}", path.display())))?;
    writeln!(file, "{line}").map_err(io_err(format!("writing {}", path.display())))
}

/// Picks a currently free TCP port on 127.0.0.1 (binds port 0, then releases it).
///
/// Another process may take the port before it is used: callers retry on failure.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((LOCALHOST, 0)).map_err(io_err("binding 127.0.0.1:0"))?;
    Ok(listener.local_addr().map_err(io_err("local_addr"))?.port())
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port` and sends an SSH banner
/// line, for at most `timeout`. Returns the banner.
pub fn wait_for_ssh_banner(port: u16, timeout: Duration) -> Result<String> {
    wait_banner(port, timeout, || Ok(()))
}

/// Like [`wait_for_ssh_banner`], but fails as soon as `child` exits.
pub(crate) fn wait_for_ssh_banner_or_exit(port: u16, child: &mut std::process::Child, timeout: Duration) -> Result<()> {
    wait_banner(port, timeout, || match child.try_wait() {
        Ok(Some(status)) => Err(Error::Start(format!("exited with {status}"))),
        _ => Ok(()),
    })
    .map(drop)
}

fn wait_banner(port: u16, timeout: Duration, mut alive: impl FnMut() -> Result<()>) -> Result<String> {
    use std::io::Read;
    let deadline = Instant::now() + timeout;
    let addr = SocketAddr::from((LOCALHOST, port));
    let mut last_error = String::from("timed out");
    while Instant::now() < deadline {
        alive()?;
        match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Ok(mut stream) => {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut banner = Vec::new();
                let mut byte = [0u8; 1];
                while banner.len() < 255 {
                    match stream.read(&mut byte) {
                        Ok(1) if byte[0] == b'\n' => break,
                        Ok(1) => banner.push(byte[0]),
                        _ => break,
                    }
                }
                let banner = String::from_utf8_lossy(&banner).trim_end().to_string();
                if banner.starts_with("SSH-") {
                    return Ok(banner);
                }
                last_error = format!("no SSH banner (got {banner:?})");
            }
            Err(e) => last_error = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(Error::Start(format!("port {port} not ready: {last_error}")))
}

/// Raises this process's soft limit on open files to the hard limit (servers and clients with
/// thousands of connections need it). Returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            let wanted = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
                limit = wanted;
            }
        }
        #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every target
        let current = limit.rlim_cur as u64;
        current
    }
}

/// The current OS user's name (from `$USER`, `$LOGNAME`, or the uid's passwd entry).
pub fn current_user() -> String {
    for var in ["USER", "LOGNAME"] {
        if let Ok(user) = std::env::var(var) {
            if !user.is_empty() {
                return user;
            }
        }
    }
    // SAFETY: getpwuid returns a pointer to static storage or null; we copy the name at once.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if !pw.is_null() && !(*pw).pw_name.is_null() {
            return std::ffi::CStr::from_ptr((*pw).pw_name).to_string_lossy().into_owned();
        }
    }
    "root".to_string()
}

/// The current OS user's home directory (`$HOME`, or the passwd entry, or `/`).
pub fn home_dir() -> std::path::PathBuf {
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return home.into();
    }
    // SAFETY: as in `current_user`.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if !pw.is_null() && !(*pw).pw_dir.is_null() {
            return std::ffi::CStr::from_ptr((*pw).pw_dir)
                .to_string_lossy()
                .into_owned()
                .into();
        }
    }
    "/".into()
}
