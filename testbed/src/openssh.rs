//! Real OpenSSH `sshd` processes with throwaway keys and config, on ephemeral ports.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::keys::{keygen, ClientKey, KeyType};
use crate::{io_err, Error, Result};

const SSHD: &str = "/usr/sbin/sshd";

/// Builder for [`OpenSshServer`].
#[derive(Debug, Clone)]
pub struct OpenSshServerBuilder {
    sshd: PathBuf,
    extra_config: Vec<String>,
    authorized_keys: Vec<String>,
    startup_timeout: Duration,
    use_pam: bool,
    password_authentication: bool,
    kbd_interactive_authentication: bool,
    authentication_methods: Option<String>,
    port: Option<u16>,
    max_sessions: u32,
    log_level: String,
}

impl Default for OpenSshServerBuilder {
    fn default() -> Self {
        OpenSshServerBuilder {
            sshd: SSHD.into(),
            extra_config: Vec::new(),
            authorized_keys: Vec::new(),
            startup_timeout: Duration::from_secs(10),
            use_pam: false,
            password_authentication: true,
            kbd_interactive_authentication: true,
            authentication_methods: None,
            port: None,
            max_sessions: 100,
            log_level: "VERBOSE".into(),
        }
    }
}

impl OpenSshServerBuilder {
    /// sshd's `LogLevel` (default `VERBOSE`). `DEBUG1` also logs one
    /// `server_request_direct_tcpip` line per forwarded channel, which jump-host
    /// tests count.
    pub fn log_level(mut self, level: impl Into<String>) -> Self {
        self.log_level = level.into();
        self
    }

    /// Uses another sshd binary (default `/usr/sbin/sshd`).
    pub fn sshd_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.sshd = path.into();
        self
    }

    /// Adds a line to `sshd_config` (after the defaults; for most keywords sshd keeps the
    /// first value, so this cannot override the defaults listed in [`OpenSshServer::start`]
    /// except for keywords they do not set).
    pub fn config_line(mut self, line: impl Into<String>) -> Self {
        self.extra_config.push(line.into());
        self
    }

    /// Authorizes a public key line (`ssh-ed25519 AAAA...`) for every user.
    pub fn authorized_key(mut self, line: impl Into<String>) -> Self {
        self.authorized_keys.push(line.into());
        self
    }

    /// Authorizes a generated client key.
    pub fn authorize(self, key: &ClientKey) -> Self {
        self.authorized_key(key.public_line())
    }

    /// `PasswordAuthentication yes|no` (default yes). Passwords are checked against the
    /// system's password database (through PAM with [`use_pam`](Self::use_pam)), so only
    /// accounts with a password can log in this way (see [`OpenSshServer::ensure_user`]).
    pub fn password_authentication(mut self, on: bool) -> Self {
        self.password_authentication = on;
        self
    }

    /// `KbdInteractiveAuthentication yes|no` (default yes). On Linux, sshd answers
    /// keyboard-interactive only through PAM: turn [`use_pam`](Self::use_pam) on as well.
    pub fn kbd_interactive_authentication(mut self, on: bool) -> Self {
        self.kbd_interactive_authentication = on;
        self
    }

    /// `UsePAM yes` instead of `UsePAM no` (the default). Needs `/etc/pam.d/sshd` (checked by
    /// [`start`](Self::start), which returns [`Error::Unavailable`] without it). With PAM,
    /// password and keyboard-interactive logins go through the system's PAM stack.
    pub fn use_pam(mut self, on: bool) -> Self {
        self.use_pam = on;
        self
    }

    /// Enables password and keyboard-interactive logins through PAM: `UsePAM yes`,
    /// `PasswordAuthentication yes`, `KbdInteractiveAuthentication yes`.
    pub fn password_logins(self) -> Self {
        self.use_pam(true)
            .password_authentication(true)
            .kbd_interactive_authentication(true)
    }

    /// `AuthenticationMethods LIST` (e.g. `"password"`, `"keyboard-interactive"`,
    /// `"publickey"`): forces clients to use exactly these methods.
    pub fn authentication_methods(mut self, methods: impl Into<String>) -> Self {
        self.authentication_methods = Some(methods.into());
        self
    }

    /// Listens on this port instead of a free one picked at random (e.g. to start a server
    /// with another host key where an earlier one listened). `start` fails if it is taken.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// `MaxSessions`: session channels open at once per connection (default 100).
    pub fn max_sessions(mut self, n: u32) -> Self {
        self.max_sessions = n;
        self
    }

    /// How long to wait for sshd to accept connections (default 10 s).
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Starts sshd. See [`OpenSshServer::start`].
    pub fn start(self) -> Result<OpenSshServer> {
        OpenSshServer::check_available_at(&self.sshd)?;
        if self.use_pam && !Path::new(PAM_SSHD).exists() {
            return Err(Error::Unavailable(format!(
                "UsePAM yes needs {PAM_SSHD} (install openssh-server's PAM configuration)"
            )));
        }
        std::fs::create_dir_all("/run/sshd").map_err(io_err("creating /run/sshd"))?;
        let dir = tempfile::Builder::new()
            .prefix("testbed-sshd")
            .tempdir()
            .map_err(io_err("creating a temporary directory"))?;
        let host_key = dir.path().join("ssh_host_ed25519_key");
        keygen(&host_key, KeyType::Ed25519, "", "testbed-sshd")?;
        let host_public_key = std::fs::read_to_string(dir.path().join("ssh_host_ed25519_key.pub"))
            .map_err(io_err("reading the sshd host key"))?
            .trim()
            .to_string();
        let authorized_keys = dir.path().join("authorized_keys");
        let mut keys = self.authorized_keys.join("\n");
        keys.push('\n');
        std::fs::write(&authorized_keys, keys).map_err(io_err("writing authorized_keys"))?;

        let mut last_error = String::new();
        let attempts = if self.port.is_some() { 1 } else { 5 };
        for _attempt in 0..attempts {
            let port = match self.port {
                Some(port) => port,
                None => crate::free_port()?,
            };
            match self.try_start(dir.path(), port) {
                Ok(mut child) => match crate::wait_for_ssh_banner_or_exit(port, &mut child, self.startup_timeout) {
                    Ok(()) => {
                        return Ok(OpenSshServer {
                            port,
                            pid: child.id(),
                            sshd: self.sshd.clone(),
                            startup_timeout: self.startup_timeout,
                            known_hosts_line: crate::known_hosts_line(port, &host_public_key),
                            host_public_key,
                            authorized_keys,
                            config_path: dir.path().join("sshd_config"),
                            log_path: dir.path().join("sshd.log"),
                            child: Some(child),
                            dir,
                        });
                    }
                    Err(e) => {
                        kill_child(&mut child);
                        let log = std::fs::read_to_string(dir.path().join("sshd.log")).unwrap_or_default();
                        last_error = format!("{e}; sshd log: {}", log.trim());
                        if !log.contains("Address already in use") {
                            break;
                        }
                    }
                },
                Err(e) => return Err(e),
            }
        }
        Err(Error::Start(format!("sshd did not start: {last_error}")))
    }

    fn try_start(&self, dir: &Path, port: u16) -> Result<Child> {
        let config_path = dir.join("sshd_config");
        let d = dir.display();
        let yes = |on: bool| if on { "yes" } else { "no" };
        let use_pam = yes(self.use_pam);
        let max_sessions = self.max_sessions;
        let password = yes(self.password_authentication);
        let kbd_interactive = yes(self.kbd_interactive_authentication);
        let log_level = &self.log_level;
        let mut config = format!(
            "Port {port}
ListenAddress 127.0.0.1
HostKey {d}/ssh_host_ed25519_key
PidFile {d}/sshd.pid
AuthorizedKeysFile {d}/authorized_keys
StrictModes no
UsePAM {use_pam}
PermitRootLogin yes
PubkeyAuthentication yes
PasswordAuthentication {password}
KbdInteractiveAuthentication {kbd_interactive}
PermitEmptyPasswords no
MaxStartups 1000:30:1000
MaxSessions {max_sessions}
MaxAuthTries 20
LoginGraceTime 30
SetEnv SHLVL=1
AcceptEnv *
PrintMotd no
PrintLastLog no
UseDNS no
HostKeyAlgorithms ssh-ed25519
KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256,diffie-hellman-group14-sha256
Subsystem sftp internal-sftp
LogLevel {log_level}
"
        );
        if let Some(methods) = &self.authentication_methods {
            config.push_str(&format!("AuthenticationMethods {methods}\n"));
        }
        for line in &self.extra_config {
            config.push_str(line);
            config.push('\n');
        }
        std::fs::write(&config_path, config).map_err(io_err("writing sshd_config"))?;
        let log = std::fs::File::create(dir.join("sshd.log")).map_err(io_err("creating sshd.log"))?;
        spawn_sshd(&self.sshd, &config_path, log)
    }
}

/// `/etc/pam.d/sshd`, which `UsePAM yes` needs.
const PAM_SSHD: &str = "/etc/pam.d/sshd";

/// Starts `sshd -D -e -f CONFIG` with its output going to `log`.
fn spawn_sshd(sshd: &Path, config_path: &Path, log: std::fs::File) -> Result<Child> {
    Command::new(sshd)
        .arg("-D")
        .arg("-e")
        .arg("-f")
        .arg(config_path)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(io_err("dup sshd.log"))?)
        .stderr(log)
        .spawn()
        .map_err(io_err(format!("starting {}", sshd.display())))
}

/// A running OpenSSH `sshd -D` on 127.0.0.1 with its own host key (ed25519), config,
/// `authorized_keys` file and pid file in a temporary directory. Killed (by its pid) on drop.
///
/// Password authentication is enabled, but works only for OS users that have a password.
#[derive(Debug)]
pub struct OpenSshServer {
    /// The TCP port sshd listens on (127.0.0.1).
    pub port: u16,
    /// Process id of the sshd listener.
    pub pid: u32,
    /// `[127.0.0.1]:PORT ssh-ed25519 AAAA...`, ready for a `known_hosts` file.
    pub known_hosts_line: String,
    /// The host public key (`ssh-ed25519 AAAA... comment`).
    pub host_public_key: String,
    /// The `authorized_keys` file (shared by all users).
    pub authorized_keys: PathBuf,
    /// The generated `sshd_config`.
    pub config_path: PathBuf,
    /// sshd's log (`-e` output).
    pub log_path: PathBuf,
    sshd: PathBuf,
    startup_timeout: Duration,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl OpenSshServer {
    /// A builder for more options (extra config lines, keys authorized up front).
    pub fn builder() -> OpenSshServerBuilder {
        OpenSshServerBuilder::default()
    }

    /// Starts `/usr/sbin/sshd -D -e -f CONFIG` on a free port of 127.0.0.1 (retrying with
    /// another port if that one was taken meanwhile) and waits until it sends its banner.
    ///
    /// The config sets: `ListenAddress 127.0.0.1`, its own ed25519 `HostKey`, `PidFile`,
    /// `AuthorizedKeysFile`, `StrictModes no`, `UsePAM no` (see
    /// [`OpenSshServerBuilder::use_pam`]), `PermitRootLogin yes`, password,
    /// keyboard-interactive and public-key auth, `MaxStartups 1000:30:1000`,
    /// `MaxSessions 100`, `SetEnv SHLVL=1`, `AcceptEnv *`, sftp as `internal-sftp`, and
    /// curve25519 / ed25519 algorithms. `/run/sshd` is created if missing.
    ///
    /// Returns [`Error::Unavailable`] when sshd is not installed or the process is not root.
    pub fn start() -> Result<OpenSshServer> {
        Self::builder().start()
    }

    /// `Ok(())` if sshd can be started here (binary present and running as root), else
    /// [`Error::Unavailable`] saying why.
    pub fn check_available() -> Result<()> {
        Self::check_available_at(Path::new(SSHD))
    }

    fn check_available_at(sshd: &Path) -> Result<()> {
        if !sshd.exists() {
            return Err(Error::Unavailable(format!(
                "{} not found (install the openssh-server package)",
                sshd.display()
            )));
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(Error::Unavailable(
                "sshd test servers need root (sshd refuses to run otherwise)".into(),
            ));
        }
        Ok(())
    }

    /// Authorizes one more public key line (takes effect for the next login).
    pub fn authorize_key(&self, line: &str) -> Result<()> {
        crate::append_line(&self.authorized_keys, line)
    }

    /// Authorizes a generated client key.
    pub fn authorize(&self, key: &ClientKey) -> Result<()> {
        self.authorize_key(key.public_line())
    }

    /// Appends [`known_hosts_line`](Self::known_hosts_line) to a `known_hosts` file.
    pub fn write_known_hosts(&self, path: &Path) -> Result<()> {
        crate::append_line(path, &self.known_hosts_line)
    }

    /// The server's temporary directory (config, keys, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// sshd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// TCP connections sshd has logged so far (`Connection from ...` lines, written by the
    /// per-connection process once it starts). This includes the probe [`start`](Self::start)
    /// made to wait for the banner, which is logged shortly after `start` returns.
    pub fn connections_logged(&self) -> usize {
        self.log().lines().filter(|l| l.starts_with("Connection from ")).count()
    }

    /// Successful logins sshd has logged so far (`Accepted METHOD for USER from ...` lines;
    /// not the `Accepted key ... found at` lines of public-key probes).
    pub fn logins_logged(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.starts_with("Accepted ") && l.contains(" for ") && l.contains(" from "))
            .count()
    }

    /// Cuts every open connection, like [`stop`](Self::stop), but keeps the listener: SIGKILL
    /// to every process the listener forked (per-connection sshd processes and the commands
    /// they run). Clients see their connection closed; new connections are accepted.
    /// Returns how many processes were signalled.
    pub fn drop_connections(&self) -> usize {
        let Some(child) = &self.child else { return 0 };
        kill_descendants(child.id())
    }

    /// Starts the listener again after [`stop_listener`](Self::stop_listener) (or
    /// [`stop`](Self::stop)): same config, same port, same host key; waits for its banner.
    /// Does nothing if the listener is running.
    pub fn start_listener(&mut self) -> Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log_path)
            .map_err(io_err("opening sshd.log"))?;
        let mut child = spawn_sshd(&self.sshd, &self.config_path, log)?;
        if let Err(e) = crate::wait_for_ssh_banner_or_exit(self.port, &mut child, self.startup_timeout) {
            kill_child(&mut child);
            return Err(Error::Start(format!("sshd did not restart on port {}: {e}", self.port)));
        }
        self.pid = child.id();
        self.child = Some(child);
        Ok(())
    }

    /// Makes sure the local account `user` exists (`useradd -m -s /bin/sh`) and has
    /// `password` (`chpasswd`), for password and keyboard-interactive logins. Idempotent.
    /// Needs root ([`Error::Unavailable`] otherwise) and the `useradd`/`chpasswd` tools.
    pub fn ensure_user(user: &str, password: &str) -> Result<()> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(Error::Unavailable(format!("creating the user {user} needs root")));
        }
        let mut last = None;
        for _ in 0..5 {
            match Self::try_ensure_user(user, password) {
                Ok(()) => return Ok(()),
                // Another process may hold the lock on /etc/passwd or /etc/shadow.
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(last.expect("at least one attempt"))
    }

    fn try_ensure_user(user: &str, password: &str) -> Result<()> {
        let exists = Command::new("id")
            .arg("-u")
            .arg(user)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(io_err("running id"))?
            .success();
        if !exists {
            let out = Command::new("useradd")
                .args(["-m", "-s", "/bin/sh", user])
                .stdin(Stdio::null())
                .output()
                .map_err(io_err("running useradd"))?;
            // Another test process may have created it meanwhile (exit 9: already exists).
            if !out.status.success() && out.status.code() != Some(9) {
                return Err(Error::Start(format!(
                    "useradd {user} failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        }
        let mut child = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io_err("running chpasswd"))?;
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("piped stdin");
            writeln!(stdin, "{user}:{password}").map_err(io_err("writing to chpasswd"))?;
        }
        let out = child.wait_with_output().map_err(io_err("waiting for chpasswd"))?;
        if !out.status.success() {
            return Err(Error::Start(format!(
                "chpasswd for {user} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    /// Stops sshd like a host going away: SIGKILL to every process it forked (per-connection
    /// sshd processes and the commands they run, found through `/proc`), then SIGTERM to the
    /// listener (SIGKILL after 2 s), which is reaped. Open connections see EOF.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_descendants(child.id());
            kill_child(&mut child);
        }
    }

    /// Kills only the sshd listener (SIGTERM, then SIGKILL after 2 s), leaving sessions
    /// already open running, as when a real sshd is restarted.
    pub fn stop_listener(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_child(&mut child);
        }
    }
}

impl Drop for OpenSshServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// SIGKILL to every descendant of `root` (the sshd listener) and to the process groups
/// they lead: sshd runs each command in its own session, so a command's children forked
/// after the `/proc` scan die with their group. Groups shared with `root` or with this
/// process are never signalled as groups. Returns how many processes were found.
fn kill_descendants(root: u32) -> usize {
    let pids = descendants(root);
    // SAFETY: getpgrp has no preconditions; getpgid on our own child is fine.
    let (own_group, root_group) = unsafe { (libc::getpgrp(), libc::getpgid(root as libc::pid_t)) };
    let mut groups: Vec<libc::pid_t> = pids
        .iter()
        .filter_map(|&pid| process_group(pid))
        .filter(|&g| g > 1 && g != own_group && g != root_group)
        .collect();
    groups.sort_unstable();
    groups.dedup();
    for g in groups {
        // SAFETY: signalling a process group led by a process the sshd we started forked.
        unsafe {
            libc::kill(-g, libc::SIGKILL);
        }
    }
    for &pid in &pids {
        // SAFETY: signalling processes forked by the sshd we started.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
    pids.len()
}

/// The process group of `pid` (field 5 of `/proc/PID/stat`), if it still exists.
fn process_group(pid: u32) -> Option<libc::pid_t> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// Every descendant of `root` (not `root` itself), parents before children, from `/proc`.
fn descendants(root: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // Field 4 (ppid) follows the parenthesised command name, which may contain spaces.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok()) {
                parents.push((pid, ppid));
            }
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(parents.iter().filter(|(_, ppid)| *ppid == parent).map(|(pid, _)| *pid));
        i += 1;
    }
    found.remove(0);
    found
}

fn kill_child(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // SAFETY: signalling a child we spawned and have not reaped yet (so the pid is ours).
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}
