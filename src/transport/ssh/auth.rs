//! Authentication, in order: in-memory keys, the host's key files, the
//! agent's identities, OpenSSH's default key files, password,
//! keyboard-interactive; each method only if the server lists it (once
//! asked) and the host's OpenSSH configuration leaves it on
//! (`SshSettings::methods_off`; keyboard-interactive first when
//! `PreferredAuthentications` says so). Failing, the error lists everything
//! tried and why it failed.
//!
//! Invariant: `auth_timeout` (the connection's deadline) bounds it all; the
//! agent socket is local, so its blocking calls are brief.
//!
//! May use: `conn`, `key_file`, `transport::libssh2`, `host`.

use std::path::{Path, PathBuf};

use ssh2::Session;

use super::conn::{Conn, Flow, Phase};
use super::key_file::KeyFiles;
use crate::host::Host;
use crate::transport::libssh2::{is_socket_error, would_block};

impl Conn {
    /// Authentication: key files, then password, then keyboard-interactive.
    pub(super) fn step_auth(&mut self, keys: &KeyFiles) -> Result<Flow, String> {
        let target = self.target();
        let Conn {
            sess,
            phase,
            host,
            user,
            ..
        } = self;
        let sess = sess.as_ref().expect("session in auth");
        let Phase::Auth(a) = phase else {
            return Ok(Flow::Again);
        };
        loop {
            if sess.authenticated() {
                return Ok(Flow::Up);
            }
            let result = match a.stage {
                AuthStage::Methods => match sess.auth_methods(user) {
                    Ok(m) => {
                        // Asked first, or after the keys (before passwords).
                        a.stage = if a.keys_done { a.first_secret } else { AuthStage::Data };
                        a.methods = Some(m.to_owned());
                        continue;
                    }
                    Err(e) => Err(e),
                },
                AuthStage::Data => {
                    let Some(pem) = host.key_data.get(a.next_data).filter(|_| a.allows("publickey")) else {
                        a.stage = AuthStage::Key;
                        continue;
                    };
                    sess.userauth_pubkey_memory(user, None, pem, host.passphrase.as_deref())
                }
                AuthStage::Key => {
                    let Some(key) = a.keys.get(a.next_key).filter(|_| a.allows("publickey")) else {
                        a.stage = AuthStage::Agent;
                        continue;
                    };
                    login_with_file(sess, user, key, host.passphrase.as_deref(), keys)
                }
                AuthStage::Agent => {
                    if !host.agent || !a.allows("publickey") {
                        a.stage = AuthStage::DefaultKey;
                        continue;
                    }
                    if a.agent.is_none() {
                        match open_agent(sess, host) {
                            Ok(Some((agent, ids))) => {
                                a.agent = Some(agent);
                                a.agent_ids = ids;
                            }
                            Ok(None) => {
                                a.stage = AuthStage::DefaultKey;
                                continue;
                            }
                            Err(m) => {
                                a.tried.push(format!("agent ({m})"));
                                a.stage = AuthStage::DefaultKey;
                                continue;
                            }
                        }
                    }
                    match (a.agent.as_ref(), a.agent_ids.get(a.next_agent)) {
                        (Some(agent), Some(id)) => agent.userauth(user, id),
                        _ => {
                            a.stage = AuthStage::DefaultKey;
                            continue;
                        }
                    }
                }
                AuthStage::DefaultKey => {
                    let Some(key) = a.default_keys.get(a.next_default).filter(|_| a.allows("publickey")) else {
                        a.keys_done = true;
                        a.stage = if a.methods.is_none() {
                            AuthStage::Methods
                        } else {
                            a.first_secret
                        };
                        continue;
                    };
                    login_with_file(sess, user, key, host.passphrase.as_deref(), keys)
                }
                AuthStage::Password => match &host.password {
                    Some(pw) if a.allows("password") => sess.userauth_password(user, pw),
                    _ => {
                        a.stage = a.after(AuthStage::Password);
                        continue;
                    }
                },
                AuthStage::Keyboard => match &host.password {
                    Some(pw) if a.allows("keyboard-interactive") => {
                        sess.userauth_keyboard_interactive(user, &mut Answer(pw.clone()))
                    }
                    _ => {
                        a.stage = a.after(AuthStage::Keyboard);
                        continue;
                    }
                },
                AuthStage::Failed => {
                    let tried = if a.tried.is_empty() {
                        "no method (no key file found and no password given)".to_owned()
                    } else {
                        a.tried.join(", ")
                    };
                    return Err(format!(
                        "authentication failed for {target}: tried {tried}; the server accepts: {}",
                        match a.methods.as_deref() {
                            None | Some("") => "(none listed)",
                            Some(m) => m,
                        }
                    ));
                }
            };
            match result {
                Ok(()) => continue,
                Err(e) if would_block(&e) => return Ok(Flow::Wait),
                Err(e) if is_socket_error(&e) => {
                    return Err(format!("{target}: connection lost while authenticating: {e}"))
                }
                Err(e) => match a.stage {
                    AuthStage::Methods => {
                        if sess.authenticated() {
                            continue;
                        }
                        return Err(format!("{target}: cannot list authentication methods: {e}"));
                    }
                    AuthStage::Data => {
                        a.tried.push(format!(
                            "publickey in-memory key #{} ({})",
                            a.next_data + 1,
                            e.message()
                        ));
                        a.next_data += 1;
                    }
                    AuthStage::Key => {
                        a.tried
                            .push(format!("publickey {} ({})", a.keys[a.next_key].display(), e.message()));
                        a.next_key += 1;
                    }
                    AuthStage::Agent => {
                        let comment = a.agent_ids[a.next_agent].comment().to_owned();
                        a.tried.push(format!("agent key {comment:?} ({})", e.message()));
                        a.next_agent += 1;
                    }
                    AuthStage::DefaultKey => {
                        a.tried.push(format!(
                            "publickey {} ({})",
                            a.default_keys[a.next_default].display(),
                            e.message()
                        ));
                        a.next_default += 1;
                    }
                    AuthStage::Password => {
                        a.tried.push("password".to_owned());
                        a.stage = a.after(AuthStage::Password);
                    }
                    AuthStage::Keyboard => {
                        a.tried.push("keyboard-interactive".to_owned());
                        a.stage = a.after(AuthStage::Keyboard);
                    }
                    AuthStage::Failed => {}
                },
            }
        }
    }
}

/// Authentication progress.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum AuthStage {
    Methods,
    /// In-memory keys.
    Data,
    /// Key files the host names.
    Key,
    /// Every identity of the ssh-agent.
    Agent,
    /// `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa` (when the host names no key).
    DefaultKey,
    Password,
    Keyboard,
    Failed,
}

/// Authentication state of one connection. Each `next_*` indexes the next
/// candidate of its stage's list; a stage ends when its index runs off the
/// list, so every candidate is tried at most once.
pub(super) struct Auth {
    /// The stage being tried; it only moves forward, but for `Methods`,
    /// which may be asked first or after the keys.
    stage: AuthStage,
    /// What the server accepts (comma-separated); `None` until asked.
    methods: Option<String>,
    /// The host's key files.
    keys: Vec<PathBuf>,
    next_key: usize,
    /// Into the host's in-memory keys.
    next_data: usize,
    /// The agent, once connected, and its identities.
    agent: Option<ssh2::Agent>,
    agent_ids: Vec<ssh2::PublicKey>,
    next_agent: usize,
    /// OpenSSH's default key files that exist (none when the host names keys).
    default_keys: Vec<PathBuf>,
    next_default: usize,
    /// What was tried and why it failed, for the error message.
    tried: Vec<String>,
    /// Every key was tried.
    keys_done: bool,
    /// Password, or keyboard-interactive when the configuration prefers it.
    first_secret: AuthStage,
    /// Methods the OpenSSH configuration turned off.
    off: Vec<&'static str>,
}

impl Auth {
    /// Where authenticating `host` starts.
    pub(super) fn new(host: &Host) -> Auth {
        // Keys the host names replace the default files (as `ssh -i` with
        // IdentitiesOnly would), and go before the agent's so that a server's
        // MaxAuthTries is not spent on agent keys first.
        let explicit = !host.key_files.is_empty() || !host.key_data.is_empty() || host.ssh.no_default_keys;
        // Asking for the methods first ("none") costs a round trip that a key
        // login does not need; a host with only a password asks first so as
        // not to spend the server's MaxAuthTries on default keys it refuses.
        let ask_first = host.password.is_some() && !explicit;
        Auth {
            stage: if ask_first { AuthStage::Methods } else { AuthStage::Data },
            methods: None,
            keys: host.key_files.clone(),
            next_key: 0,
            next_data: 0,
            agent: None,
            agent_ids: Vec::new(),
            next_agent: 0,
            default_keys: if explicit { Vec::new() } else { default_keys(host) },
            next_default: 0,
            tried: Vec::new(),
            keys_done: false,
            first_secret: if host.ssh.kbd_first {
                AuthStage::Keyboard
            } else {
                AuthStage::Password
            },
            off: host.ssh.methods_off.clone(),
        }
    }

    /// The stage after a password stage.
    fn after(&self, stage: AuthStage) -> AuthStage {
        match (stage, self.first_secret) {
            (AuthStage::Password, AuthStage::Password) => AuthStage::Keyboard,
            (AuthStage::Keyboard, AuthStage::Keyboard) => AuthStage::Password,
            _ => AuthStage::Failed,
        }
    }

    /// Whether the configuration leaves `method` on and the server lists it
    /// (anything goes before it was asked).
    fn allows(&self, method: &str) -> bool {
        !self.off.contains(&method)
            && self
                .methods
                .as_deref()
                .is_none_or(|ms| ms.split(',').any(|m| m == method))
    }
}

/// A public key login with the key file at `path`, from the loop's copy of
/// its text when it has one (see `key_file`).
fn login_with_file(
    sess: &Session,
    user: &str,
    path: &Path,
    passphrase: Option<&str>,
    keys: &KeyFiles,
) -> Result<(), ssh2::Error> {
    match keys.get(path) {
        Some(k) => sess.userauth_pubkey_memory(user, k.public.as_deref(), &k.private, passphrase),
        None => sess.userauth_pubkey_file(user, None, path, passphrase),
    }
}

/// Connects to the ssh-agent and lists its identities. `Ok(None)` when no
/// agent is configured (`$SSH_AUTH_SOCK` unset and no socket given); the
/// agent socket is local, so its blocking calls are brief.
fn open_agent(sess: &Session, host: &Host) -> Result<Option<(ssh2::Agent, Vec<ssh2::PublicKey>)>, String> {
    if host.agent_socket.is_none() && std::env::var_os("SSH_AUTH_SOCK").is_none_or(|s| s.is_empty()) {
        return Ok(None);
    }
    let mut agent = sess.agent().map_err(|e| e.to_string())?;
    if let Some(path) = &host.agent_socket {
        agent.set_identity_path(path).map_err(|e| e.to_string())?;
    }
    let where_ = host
        .agent_socket
        .as_ref()
        .map_or_else(|| "$SSH_AUTH_SOCK".to_owned(), |p| p.display().to_string());
    agent
        .connect()
        .map_err(|e| format!("cannot connect to the agent at {where_}: {e}"))?;
    agent
        .list_identities()
        .map_err(|e| format!("cannot list the agent's identities: {e}"))?;
    let ids = agent.identities().map_err(|e| e.to_string())?;
    if ids.is_empty() {
        return Err(format!("the agent at {where_} has no identities"));
    }
    Ok(Some((agent, ids)))
}

/// Answers every keyboard-interactive prompt with the password.
struct Answer(String);

impl ssh2::KeyboardInteractivePrompt for Answer {
    fn prompt<'a>(&mut self, _user: &str, _instructions: &str, prompts: &[ssh2::Prompt<'a>]) -> Vec<String> {
        prompts.iter().map(|_| self.0.clone()).collect()
    }
}

/// `$HOME`, if set.
pub(super) fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from)
}

/// OpenSSH's default identities that exist (under the configuration's home,
/// else `$HOME`).
fn default_keys(host: &Host) -> Vec<PathBuf> {
    let Some(home) = host.ssh.home.clone().or_else(home) else {
        return Vec::new();
    };
    ["id_ed25519", "id_ecdsa", "id_rsa"]
        .iter()
        .map(|k| home.join(".ssh").join(k))
        .filter(|p| p.is_file())
        .collect()
}
