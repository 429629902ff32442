//! The embedded server's builder ([`EmbeddedServerBuilder`]) and what it turns into at start:
//! the host key, russh's configurations and the server's [`Shared`] state.
//!
//! Invariant: nothing here starts a thread or opens a socket; a builder that fails to
//! prepare (an unparsable key, no randomness) leaves nothing behind.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{PrivateKey, PublicKey};
use russh::server;
use russh::{MethodKind, MethodSet, Preferred};

use super::shared::{Counters, Shared};
use super::{EmbeddedServer, Fault};
use crate::{io_err, Error, Result};

/// Builder for [`EmbeddedServer`]; see [`EmbeddedServer::builder`].
#[derive(Debug, Clone)]
pub struct EmbeddedServerBuilder {
    /// The only login names accepted (`None`: any name with a matching credential).
    users: Option<Vec<String>>,
    /// `(user, password)` pairs; user `"*"` matches every user.
    passwords: Vec<(String, String)>,
    /// `(user, OpenSSH public key line)` pairs, parsed only at start.
    keys: Vec<(String, String)>,
    /// Faults for every connection until changed.
    faults: Vec<Fault>,
    /// Delay before a rejected authentication is answered.
    auth_rejection_time: Duration,
    /// Worker threads of the server's runtime; at least 1.
    worker_threads: usize,
    /// The shell commands run with.
    shell: PathBuf,
    /// Working directory of commands (`None`: the user's home).
    working_dir: Option<PathBuf>,
    /// The host key (`None`: a fresh ed25519 key at start).
    host_key: Option<PrivateKey>,
    /// russh's inactivity timeout (`None`: never).
    inactivity_timeout: Option<Duration>,
    /// Serve `scp -t/-f` in-process (`None`: exactly when no `scp` is on `PATH`).
    builtin_scp: Option<bool>,
    /// Offer only `curve25519-sha256` for key exchange.
    curve25519_only: bool,
    /// Variables set for commands over the base environment (a name given again replaces it).
    env: Vec<(String, String)>,
    /// The port to listen on (0: an ephemeral one).
    port: u16,
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
            env: Vec::new(),
            port: 0,
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

    /// Sets an environment variable for every command, over the base environment (e.g. a
    /// `PATH` that puts a fake program first). The client's env requests still come last.
    /// Whether the built-in scp is on by default is decided with this `PATH`.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Listens on this port of 127.0.0.1 instead of an ephemeral one (e.g. to replace a
    /// stopped server by another at the same address); the address may be reused at once.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Starts the server on 127.0.0.1 (an ephemeral port unless [`port`](Self::port)), on
    /// its own runtime thread.
    pub fn start(self) -> Result<EmbeddedServer> {
        EmbeddedServer::start_with(self)
    }
}

/// A builder turned into what a running server needs.
pub(super) struct Prepared {
    /// The host key (given, or fresh).
    pub(super) host_key: PrivateKey,
    /// The server's shared state, settings fixed.
    pub(super) shared: Arc<Shared>,
    /// Worker threads of the server's runtime (at least 1).
    pub(super) worker_threads: usize,
    /// The port to listen on (0: an ephemeral one).
    pub(super) port: u16,
}

impl EmbeddedServerBuilder {
    /// Generates or takes the host key, parses the authorized keys and builds russh's
    /// configurations and the commands' environment.
    pub(super) fn prepare(self) -> Result<Prepared> {
        let host_key = match self.host_key {
            Some(key) => key,
            None => generate_ed25519()?,
        };
        let mut keys = Vec::new();
        for (user, line) in &self.keys {
            keys.push((user.clone(), parse_public_key(line)?));
        }
        let mut preferred = Preferred {
            compression: Cow::Borrowed(&[russh::compression::NONE]),
            ..Preferred::DEFAULT.clone()
        };
        if self.curve25519_only {
            preferred.kex = Cow::Borrowed(&[
                russh::kex::CURVE25519,
                russh::kex::EXTENSION_SUPPORT_AS_SERVER,
                russh::kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
            ]);
        }
        let make_config = |preferred: Preferred| server::Config {
            auth_rejection_time: self.auth_rejection_time,
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
            inactivity_timeout: self.inactivity_timeout,
            max_auth_attempts: 20,
            preferred,
            ..Default::default()
        };
        let config = make_config(preferred.clone());
        let zero_window_config = server::Config {
            window_size: 0,
            ..make_config(preferred.clone())
        };
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
            ("SHELL".to_string(), self.shell.to_string_lossy().into_owned()),
        ];
        if let Ok(lang) = std::env::var("LANG") {
            base_env.push(("LANG".to_string(), lang));
        }
        for (name, value) in self.env {
            match base_env.iter_mut().find(|(n, _)| *n == name) {
                Some(slot) => slot.1 = value,
                None => base_env.push((name, value)),
            }
        }
        let builtin_scp = self
            .builtin_scp
            .unwrap_or_else(|| !program_on_path("scp", &base_env[0].1));
        let shared = Arc::new(Shared {
            users: self.users.map(|u| u.into_iter().collect()),
            passwords: RwLock::new(self.passwords),
            keys: RwLock::new(keys),
            faults: Mutex::new(self.faults),
            counters: Counters::default(),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
            groups: Mutex::new(HashSet::new()),
            commands: Mutex::new(Vec::new()),
            forwards: Mutex::new(Vec::new()),
            drop_forwards: tokio::sync::watch::channel(0).0,
            config: Arc::new(config),
            sha1_config: Arc::new(sha1_config),
            zero_window_config: Arc::new(zero_window_config),
            shell: self.shell,
            setpriv: ["/usr/bin/setpriv", "/bin/setpriv"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file()),
            working_dir: self.working_dir.unwrap_or_else(crate::home_dir),
            base_env,
            builtin_scp,
            home: crate::home_dir(),
            umask: crate::scp::current_umask(),
        });
        Ok(Prepared {
            host_key,
            shared,
            worker_threads: self.worker_threads,
            port: self.port,
        })
    }
}

/// Parses an OpenSSH public key line.
pub(super) fn parse_public_key(line: &str) -> Result<PublicKey> {
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

/// Whether an executable file `name` is in one of the `path` directories.
fn program_on_path(name: &str, path: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path)
        .any(|dir| std::fs::metadata(dir.join(name)).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}
