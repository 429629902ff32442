//! The user's OpenSSH configuration applied to hosts, over real SSH on both
//! tiers: HostName, User, Port, IdentityFile (with `~` under an injected
//! home), UserKnownHostsFile and StrictHostKeyChecking taken from a
//! generated config; the `Host` API winning over it; `Match exec`; hashed
//! known_hosts entries written (HashKnownHosts) and read; a changed key
//! refused; malformed configs refused at `add_host` naming file:line;
//! ProxyJump and ProxyCommand resolved there (each hop through the
//! configuration); opting out.
//!
//! Every test writes its config under its own temporary directory and hands
//! it to the builder (`ssh_config_env`, home included): nothing reads or
//! writes the real `~/.ssh`, and no process-wide variable is changed.

#[path = "common/servers.rs"]
mod servers;

use std::fs;
use std::path::{Path, PathBuf};

use servers::Server;
use ssh_parallel::ssh_config::{ConfigFile, ResolveEnv};
use ssh_parallel::{Command, ErrorKind, Host, HostKeyCheck, Parallel, Report};
use testbed::ClientKey;

/// A temporary home with `.ssh/`, and a login for `server` in it: the user,
/// and a key copied to `~/.ssh/id_cfg` (authorized on the server).
struct Home {
    dir: tempfile::TempDir,
    user: String,
    /// Keeps the generated key's files alive.
    _key: ClientKey,
}

impl Home {
    fn new(server: &Server) -> Home {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join(".ssh")).unwrap();
        let key = ClientKey::ed25519().expect("generate a client key");
        let user = match server {
            Server::Embedded(s) => {
                s.add_authorized_key(servers::USER, key.public_line()).unwrap();
                servers::USER.to_owned()
            }
            Server::OpenSsh(b) => {
                key.authorize_in(&b.0.authorized_keys).unwrap();
                testbed::current_user()
            }
        };
        fs::copy(key.private_path(), dir.path().join(".ssh/id_cfg")).unwrap();
        Home { dir, user, _key: key }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn known_hosts(&self) -> PathBuf {
        self.path().join("kh")
    }

    /// Writes `text` as the config file and returns its path.
    fn config(&self, text: &str) -> PathBuf {
        let path = self.path().join("config");
        fs::write(&path, text).unwrap();
        path
    }

    /// A `Parallel` reading only `config`, with this home for `~`.
    fn parallel(&self, config: &Path) -> Parallel {
        parallel_for(self.path(), config)
    }

    /// The config lines that reach `server` as alias `web`, trusting nothing yet.
    fn web(&self, server: &Server, extra: &str) -> String {
        format!(
            "Host web\n  HostName 127.0.0.1\n  Port {}\n  User {}\n  IdentityFile ~/.ssh/id_cfg\n  IdentityAgent none\n  \
             UserKnownHostsFile {}\n  GlobalKnownHostsFile none\n{extra}",
            server.addr().port(),
            self.user,
            self.known_hosts().display()
        )
    }
}

fn run(p: &mut Parallel, host: Host) -> Report {
    p.add_host("h", host).unwrap();
    p.push("h", Command::new("echo ok")).unwrap();
    p.run()
}

fn output(r: &Report) -> String {
    r.label("h").unwrap().tasks()[0].stdout_str().to_owned()
}

/// HostName, Port, User, IdentityFile (`~` under the injected home),
/// UserKnownHostsFile and accept-new all come from the file; the key is
/// recorded hashed (HashKnownHosts yes), read back on the next run, and a
/// strict check accepts it.
fn config_supplies_the_destination_and_records_the_key_hashed(server: &Server) {
    let home = Home::new(server);
    let config = home.config(&home.web(server, "  StrictHostKeyChecking accept-new\n  HashKnownHosts yes\n"));
    let r = run(&mut home.parallel(&config), Host::new("web"));
    assert!(r.success(), "{r}");
    assert_eq!(output(&r), "ok\n");
    let text = fs::read_to_string(home.known_hosts()).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.starts_with("|1|"), "hashed: {text}");
    assert!(!text.contains("127.0.0.1"), "the name is not in clear: {text}");
    // OpenSSH finds it under the name it would look up.
    let found = std::process::Command::new("ssh-keygen")
        .arg("-F")
        .arg(format!("[127.0.0.1]:{}", server.addr().port()))
        .arg("-f")
        .arg(home.known_hosts())
        .output()
        .expect("ssh-keygen (it made the client key)");
    assert!(found.status.success(), "ssh-keygen -F finds the hashed entry: {text}");
    // The hashed entry is found again: nothing more recorded, and strict passes.
    let r = run(&mut home.parallel(&config), Host::new("web"));
    assert!(r.success(), "{r}");
    assert_eq!(fs::read_to_string(home.known_hosts()).unwrap(), text);
    let r = run(
        &mut home.parallel(&config),
        Host::new("web").host_key_check(HostKeyCheck::Strict),
    );
    assert!(r.success(), "{r}");
    // What the label shows: the config's destination.
    let mut p = home.parallel(&config);
    p.add_host("w", Host::new("web")).unwrap();
    let h = p.host("w").unwrap();
    assert_eq!((h.alias(), h.hostname()), ("web", "127.0.0.1"));
    assert_eq!(h.port_number(), Some(server.addr().port()));
    assert_eq!(h.user_name(), Some(home.user.as_str()));
}

/// Without HashKnownHosts the name is written plain; a strict config then
/// accepts the recorded key.
fn accept_new_writes_plain_names_by_default(server: &Server) {
    let home = Home::new(server);
    let config = home.config(&home.web(server, "  StrictHostKeyChecking accept-new\n"));
    assert!(run(&mut home.parallel(&config), Host::new("web")).success());
    let text = fs::read_to_string(home.known_hosts()).unwrap();
    let name = format!("[127.0.0.1]:{} ", server.addr().port());
    assert!(text.starts_with(&name), "{text}");
    let config = home.config(&home.web(server, "  StrictHostKeyChecking yes\n"));
    assert!(run(&mut home.parallel(&config), Host::new("web")).success());
}

/// HostKeyAlias names the entry instead of `[host]:port`, written and read.
fn host_key_alias_names_the_entry(server: &Server) {
    let home = Home::new(server);
    let config = home.config(&home.web(server, "  StrictHostKeyChecking accept-new\n  HostKeyAlias web-key\n"));
    assert!(run(&mut home.parallel(&config), Host::new("web")).success());
    let text = fs::read_to_string(home.known_hosts()).unwrap();
    assert!(text.starts_with("web-key "), "{text}");
    let config = home.config(&home.web(server, "  StrictHostKeyChecking yes\n  HostKeyAlias web-key\n"));
    assert!(run(&mut home.parallel(&config), Host::new("web")).success());
    let config = home.config(&home.web(server, "  StrictHostKeyChecking yes\n  HostKeyAlias other\n"));
    let r = run(&mut home.parallel(&config), Host::new("web"));
    let e = r.label("h").unwrap().error().expect("no entry for `other`");
    assert!(e.to_string().contains("no key for it"), "{e}");
}

/// A key recorded for the host that is not the server's is refused under
/// accept-new (hashed or not), naming the file; nothing is added.
fn a_changed_key_is_refused(server: &Server) {
    let home = Home::new(server);
    let other = ClientKey::ed25519().unwrap();
    let wrong: Vec<&str> = other.public_line().split_whitespace().take(2).collect();
    let name = format!("[127.0.0.1]:{}", server.addr().port());
    for recorded in [name.clone(), hash_of(&name)] {
        let line = format!("{recorded} {}\n", wrong.join(" "));
        fs::write(home.known_hosts(), &line).unwrap();
        let config = home.config(&home.web(server, "  StrictHostKeyChecking accept-new\n"));
        let r = run(&mut home.parallel(&config), Host::new("web"));
        let e = r.label("h").unwrap().error().expect("a changed key is refused");
        assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
        let msg = e.to_string();
        assert!(msg.contains("does not match"), "{msg}");
        assert!(msg.contains(&home.known_hosts().display().to_string()), "{msg}");
        assert_eq!(fs::read_to_string(home.known_hosts()).unwrap(), line);
    }
}

/// OpenSSH's `|1|salt|hash` form of `name` (a fixed salt will do here).
fn hash_of(name: &str) -> String {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use hmac::{KeyInit, Mac};
    let salt: Vec<u8> = (0u8..20).collect();
    let mut mac = <hmac::Hmac<sha1::Sha1> as KeyInit>::new_from_slice(&salt).unwrap();
    mac.update(name.as_bytes());
    let hash = mac.finalize().into_bytes();
    format!("|1|{}|{}", STANDARD.encode(&salt), STANDARD.encode(hash))
}

/// What the `Host` API sets wins over the file: port, user, key, host-key
/// policy, given through the builder or `Host::parse`.
fn host_settings_win_over_the_config(server: &Server) {
    let home = Home::new(server);
    let config = home.config(
        "Host web\n  HostName 127.0.0.1\n  Port 1\n  User nobody-here\n  IdentityFile ~/.ssh/missing\n  \
         StrictHostKeyChecking yes\n  UserKnownHostsFile none\n  IdentityAgent none\n",
    );
    let port = server.addr().port();
    let key = home.path().join(".ssh/id_cfg");
    let host = Host::new("web")
        .port(port)
        .user(&home.user)
        .key_file(&key)
        .host_key_check(HostKeyCheck::Off);
    let r = run(&mut home.parallel(&config), host);
    assert!(r.success(), "{r}");
    let host = Host::parse(&format!("{}@web:{port}", home.user))
        .unwrap()
        .key_file(&key)
        .host_key_check(HostKeyCheck::Off);
    let r = run(&mut home.parallel(&config), host);
    assert!(r.success(), "{r}");
}

/// `Match exec` runs at `add_host`: its block applies only while the command succeeds.
fn match_exec_decides(server: &Server) {
    let home = Home::new(server);
    let flag = home.path().join("flag");
    let config = home.config(&format!(
        "Match host web exec \"test -e {}\"\n  Port {}\nHost web\n  Port 1\n  StrictHostKeyChecking no\n{}",
        flag.display(),
        server.addr().port(),
        home.web(server, "")
    ));
    fs::write(&flag, "").unwrap();
    let r = run(&mut home.parallel(&config), Host::new("web"));
    assert!(r.success(), "{r}");
    fs::remove_file(&flag).unwrap();
    let r = run(&mut home.parallel(&config), Host::new("web"));
    let e = r.label("h").unwrap().error().expect("port 1 refuses");
    assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
    assert!(e.to_string().contains(":1"), "{e}");
}

/// Algorithm lists (applied to libssh2's defaults), Compression, SetEnv and
/// RequestTTY force reach the session and its commands.
fn algorithms_compression_setenv_and_tty(server: &Server) {
    let home = Home::new(server);
    let config = home.config(&home.web(
        server,
        concat!(
            "  StrictHostKeyChecking no\n  Ciphers aes256-ctr\n  MACs -hmac-sha1*\n",
            "  KexAlgorithms ^curve25519-sha256\n  HostKeyAlgorithms ssh-ed25519\n  Compression yes\n",
            "  SetEnv CFG_VAR=hello\n  RequestTTY force\n",
        ),
    ));
    let mut p = home.parallel(&config);
    p.add_host("h", Host::new("web")).unwrap();
    p.push("h", Command::new("echo \"$CFG_VAR:${TERM:-none}\"")).unwrap();
    let r = p.run();
    assert!(r.success(), "{r}");
    assert!(output(&r).contains("hello:xterm"), "{:?}", output(&r));
}

/// An algorithm list libssh2 cannot speak fails the connection naming the
/// directive's file:line, instead of silently using other algorithms.
fn unsupported_algorithms_fail_naming_the_line(server: &Server) {
    let home = Home::new(server);
    let config = home.config(&home.web(
        server,
        "  StrictHostKeyChecking no\n  KexAlgorithms sntrup761x25519-sha512@openssh.com\n",
    ));
    let r = run(&mut home.parallel(&config), Host::new("web"));
    let e = r.label("h").unwrap().error().expect("no common kex");
    assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
    let msg = e.to_string();
    assert!(msg.contains("KexAlgorithms"), "{msg}");
    assert!(
        msg.contains(&format!("{}:10", home.path().join("config").display())),
        "{msg}"
    );
}

on_both!(
    host_key_alias_names_the_entry,
    algorithms_compression_setenv_and_tty,
    unsupported_algorithms_fail_naming_the_line,
    config_supplies_the_destination_and_records_the_key_hashed,
    accept_new_writes_plain_names_by_default,
    a_changed_key_is_refused,
    host_settings_win_over_the_config,
    match_exec_decides,
);

/// A `Parallel` reading only `config`, with `dir` as the home.
fn parallel_for(dir: &Path, config: &Path) -> Parallel {
    let mut env = ResolveEnv::from_system()
        .unwrap()
        .with_only_file(Some(ConfigFile::explicit(config)));
    env.home = dir.to_path_buf();
    Parallel::builder().ssh_config_env(env).build().unwrap()
}

#[test]
fn a_malformed_config_is_invalid_config_at_add_host_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    fs::write(&config, "Host web\n  Port 22\n  Port twenty\n").unwrap();
    let mut p = parallel_for(dir.path(), &config);
    let e = p.add_host("w", Host::new("web")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
    assert!(e.to_string().contains(&format!("{}:3", config.display())), "{e}");
    assert_eq!(p.labels().count(), 0, "nothing registered");
    // Local hosts never read it.
    p.add_host("l", Host::local()).unwrap();
    // `ssh_config(path)` reads it the same way; a missing file is an error too.
    let mut p = Parallel::builder().ssh_config(&config).build().unwrap();
    assert_eq!(
        p.add_host("w", Host::new("web")).unwrap_err().kind(),
        ErrorKind::InvalidConfig
    );
    let mut p = Parallel::builder()
        .ssh_config(dir.path().join("absent"))
        .build()
        .unwrap();
    assert!(p.add_host("w", Host::new("web")).is_err());
}

#[test]
fn proxy_jump_and_proxy_command_are_resolved_at_add_host() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    fs::write(
        &config,
        "Host behind\n  ProxyJump ops@bastion:2222,gw\nHost piped\n  HostName 10.1.1.1\n  ProxyCommand nc %h %p\n\
         Host direct\n  ProxyJump none\nHost bastion\n  HostName 10.0.0.9\n  User nobody\nHost loop\n  ProxyJump loop\n",
    )
    .unwrap();
    let mut p = parallel_for(dir.path(), &config);
    p.add_host("behind", Host::new("behind")).unwrap();
    let hops = p.host("behind").unwrap().jump_hosts();
    let seen: Vec<_> = hops
        .iter()
        .map(|h| (h.alias(), h.hostname(), h.user_name(), h.port_number()))
        .collect();
    // Each hop is itself resolved (bastion's HostName), what the spec says wins (its user).
    assert_eq!(
        seen,
        [
            ("bastion", "10.0.0.9", Some("ops"), Some(2222)),
            ("gw", "gw", None, None)
        ]
    );
    assert_eq!(hops[1].jump_hosts().len(), 1, "gw is reached through bastion");
    p.add_host("piped", Host::new("piped")).unwrap();
    assert_eq!(p.host("piped").unwrap().proxy_command_line(), Some("nc 10.1.1.1 22"));
    p.add_host("direct", Host::new("direct")).unwrap();
    assert!(p.host("direct").unwrap().jump_hosts().is_empty());
    // The API wins: `none` connects directly whatever the file says.
    p.add_host("b2", Host::new("behind").proxy_jump("none")).unwrap();
    assert!(p.host("b2").unwrap().jump_hosts().is_empty());
    // A jump host whose own ProxyJump leads back to itself ends with an error naming file:line.
    let e = p.add_host("loop", Host::new("loop")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
    assert!(e.to_string().contains(&format!("{}:", config.display())), "{e}");
    let e = p.add_host("bad", Host::new("x").proxy_jump("a,,b")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidHost, "{e}");
    assert!(e.to_string().contains("a,,b"), "{e}");
}

#[test]
fn opting_out_ignores_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    fs::write(&config, "Host web\n  HostName 127.0.0.1\n  Port 2222\n  User deploy\n").unwrap();
    let mut p = parallel_for(dir.path(), &config);
    p.add_host("w", Host::new("web")).unwrap();
    let h = p.host("w").unwrap();
    assert_eq!(
        (h.hostname(), h.port_number(), h.user_name()),
        ("127.0.0.1", Some(2222), Some("deploy"))
    );
    let mut p = Parallel::builder().ssh_config(&config).no_ssh_config().build().unwrap();
    p.add_host("w", Host::new("web")).unwrap();
    let h = p.host("w").unwrap();
    assert_eq!((h.hostname(), h.port_number(), h.user_name()), ("web", None, None));
    // A broken file is not even read.
    fs::write(&config, "Port x\n").unwrap();
    let mut p = Parallel::builder().ssh_config(&config).no_ssh_config().build().unwrap();
    p.add_host("w", Host::new("web")).unwrap();
}

/// `PasswordAuthentication no` and `KbdInteractiveAuthentication no` (or a
/// `PreferredAuthentications` without them) turn those methods off even
/// with a password given, as they would for `ssh`; the error says nothing
/// was tried.
#[test]
fn config_turns_authentication_methods_off() {
    let server = Server::embedded();
    let dir = tempfile::tempdir().unwrap();
    let port = server.addr().port();
    for extra in [
        "  PasswordAuthentication no\n  KbdInteractiveAuthentication no\n",
        "  PreferredAuthentications publickey\n",
    ] {
        let config = dir.path().join("config");
        fs::write(
            &config,
            format!(
                "Host web\n  HostName 127.0.0.1\n  Port {port}\n  StrictHostKeyChecking no\n  \
                 IdentityAgent none\n  IdentityFile ~/.ssh/none\n{extra}"
            ),
        )
        .unwrap();
        let mut p = parallel_for(dir.path(), &config);
        let host = Host::new("web").user(servers::USER).password(servers::PASSWORD);
        let r = run(&mut p, host);
        let e = r.label("h").unwrap().error().expect("no method left");
        assert_eq!(e.kind(), ErrorKind::Connect, "{extra}: {e}");
        assert!(e.to_string().contains("authentication failed"), "{e}");
        assert!(!e.to_string().contains("tried password"), "{e}");
    }
    // The same config without the switches logs in with the password.
    let config = dir.path().join("config");
    fs::write(
        &config,
        format!("Host web\n  HostName 127.0.0.1\n  Port {port}\n  StrictHostKeyChecking no\n  IdentityAgent none\n"),
    )
    .unwrap();
    let mut p = parallel_for(dir.path(), &config);
    let host = Host::new("web").user(servers::USER).password(servers::PASSWORD);
    assert!(run(&mut p, host).success());
}
