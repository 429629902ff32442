//! What every task of one embedded server shares: the credentials, the fault list, the
//! counters, the open connections, the running commands' process groups and the fixed
//! settings commands run with ([`Shared`]); the counters' public snapshot ([`ServerStats`]).
//!
//! Invariant: the settings are fixed at start; what may change while the server runs
//! (credentials, faults, connections, groups, the command log) sits behind a lock that is
//! never held across an `.await`, and a poisoned lock is taken over, never a panic.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use russh::keys::PublicKey;
use russh::server;
use tokio::sync::watch;

use super::socket::ConnCtl;
use super::Fault;

/// Counters of an [`EmbeddedServer`](super::EmbeddedServer) since it started.
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
    /// `direct-tcpip` channels accepted (their target connected).
    pub forwards_opened: u64,
    /// `direct-tcpip` channels refused (a fault, a target off 127.0.0.0/8, or a target
    /// that could not be connected to).
    pub forwards_refused: u64,
    /// `direct-tcpip` channels currently relaying.
    pub active_forwards: u64,
}

/// The live counters behind [`ServerStats`] (each field: the one of the same meaning there).
#[derive(Default)]
pub(super) struct Counters {
    /// [`ServerStats::connections`].
    pub(super) connections: AtomicU64,
    /// [`ServerStats::active_connections`].
    pub(super) active: AtomicU64,
    /// [`ServerStats::authenticated`].
    pub(super) authenticated: AtomicU64,
    /// [`ServerStats::auth_failures`].
    pub(super) auth_failures: AtomicU64,
    /// [`ServerStats::commands`].
    pub(super) commands: AtomicU64,
    /// [`ServerStats::none_probes`].
    pub(super) none_probes: AtomicU64,
    /// [`ServerStats::channels_opened`].
    pub(super) channels_opened: AtomicU64,
    /// [`ServerStats::channels_opened_ahead`].
    pub(super) channels_opened_ahead: AtomicU64,
    /// [`ServerStats::forwards_opened`].
    pub(super) forwards_opened: AtomicU64,
    /// [`ServerStats::forwards_refused`].
    pub(super) forwards_refused: AtomicU64,
    /// [`ServerStats::active_forwards`].
    pub(super) active_forwards: AtomicU64,
}

impl Counters {
    /// The counters now (each read on its own: not one atomic snapshot).
    pub(super) fn snapshot(&self) -> ServerStats {
        ServerStats {
            connections: self.connections.load(Ordering::Relaxed),
            active_connections: self.active.load(Ordering::Relaxed),
            authenticated: self.authenticated.load(Ordering::Relaxed),
            auth_failures: self.auth_failures.load(Ordering::Relaxed),
            commands: self.commands.load(Ordering::Relaxed),
            none_probes: self.none_probes.load(Ordering::Relaxed),
            channels_opened: self.channels_opened.load(Ordering::Relaxed),
            channels_opened_ahead: self.channels_opened_ahead.load(Ordering::Relaxed),
            forwards_opened: self.forwards_opened.load(Ordering::Relaxed),
            forwards_refused: self.forwards_refused.load(Ordering::Relaxed),
            active_forwards: self.active_forwards.load(Ordering::Relaxed),
        }
    }
}

/// The state of one server, shared by its handle, its accept loop, its connections and
/// their commands.
pub(super) struct Shared {
    /// The only login names accepted (`None`: any name with a matching credential).
    pub(super) users: Option<HashSet<String>>,
    /// `(user, password)` pairs accepted; user `"*"` matches every user.
    pub(super) passwords: RwLock<Vec<(String, String)>>,
    /// `(user, key)` pairs authorized; user `"*"` matches every user.
    pub(super) keys: RwLock<Vec<(String, PublicKey)>>,
    /// Faults for connections accepted from now on.
    pub(super) faults: Mutex<Vec<Fault>>,
    /// What [`EmbeddedServer::stats`](super::EmbeddedServer::stats) reports.
    pub(super) counters: Counters,
    /// Open connections by id (an entry lives as long as its connection's task).
    pub(super) conns: Mutex<HashMap<u64, Arc<ConnCtl>>>,
    /// The next connection id (ids are never reused).
    pub(super) next_conn: AtomicU64,
    /// Process groups of running commands (killed when the server stops).
    pub(super) groups: Mutex<HashSet<i32>>,
    /// Every command line received, in order (`<shell>`, `<subsystem NAME>` for the others).
    pub(super) commands: Mutex<Vec<String>>,
    /// Every `direct-tcpip` target requested (`HOST:PORT` as the client sent it), in order.
    pub(super) forwards: Mutex<Vec<String>>,
    /// Bumped by [`EmbeddedServer::drop_forwards`](super::EmbeddedServer::drop_forwards):
    /// every forward relaying at that moment ends.
    pub(super) drop_forwards: watch::Sender<u64>,
    /// russh's configuration for connections.
    pub(super) config: Arc<server::Config>,
    /// The same, offering only SHA-1 algorithms ([`Fault::Sha1Only`]).
    pub(super) sha1_config: Arc<server::Config>,
    /// The same, opening channels with a window of 0 that never grows ([`Fault::ZeroWindow`]).
    pub(super) zero_window_config: Arc<server::Config>,
    /// The shell commands run with (`SHELL -c COMMAND`).
    pub(super) shell: PathBuf,
    /// util-linux's `setpriv`, when present: commands start through
    /// `setpriv --pdeathsig KILL` so that std can spawn them with `posix_spawn`.
    /// Setting the death signal in a `pre_exec` hook instead forces a `fork` that copies
    /// this whole process's page tables per command: at 2,000 labels the chaos bench spent
    /// most of its CPU in the kernel doing so.
    pub(super) setpriv: Option<PathBuf>,
    /// Working directory of commands.
    pub(super) working_dir: PathBuf,
    /// The environment every command starts from (`PATH` first, then `HOME`, `USER`, ...).
    pub(super) base_env: Vec<(String, String)>,
    /// Serve `scp -t/-f` in-process ([`EmbeddedServerBuilder::builtin_scp`](super::EmbeddedServerBuilder::builtin_scp)).
    pub(super) builtin_scp: bool,
    /// `HOME` of commands, for `~` in built-in scp paths.
    pub(super) home: PathBuf,
    /// The process umask, which the built-in scp applies to the modes it creates.
    pub(super) umask: u32,
}

impl Shared {
    fn user_allowed(&self, user: &str) -> bool {
        self.users.as_ref().is_none_or(|users| users.contains(user))
    }

    /// Whether `password` logs `user` in (password and keyboard-interactive methods).
    pub(super) fn password_ok(&self, user: &str, password: &str) -> bool {
        self.user_allowed(user)
            && self
                .passwords
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .any(|(u, p)| (u == user || u == "*") && p == password)
    }

    /// Whether `key` is authorized for `user`.
    pub(super) fn key_ok(&self, user: &str, key: &PublicKey) -> bool {
        self.user_allowed(user)
            && self
                .keys
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .any(|(u, k)| (u == user || u == "*") && k.key_data() == key.key_data())
    }

    /// The process groups of running commands.
    pub(super) fn lock_groups(&self) -> MutexGuard<'_, HashSet<i32>> {
        lock(&self.groups)
    }
}

/// Locks a mutex of [`Shared`], taking over a poisoned lock (its data stays consistent:
/// every critical section is one push, insert, remove or replace).
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
