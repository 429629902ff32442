//! `ssh -G` is the oracle: for every config of `tests/ssh_config/*.conf`
//! (each names its aliases on a `# aliases:` line), our resolution of every
//! honoured directive, rendered as `ssh -G` renders it (OpenSSH defaults
//! where the files set nothing), must equal what `ssh -G -F FILE ALIAS`
//! prints; a config `ssh` rejects must be rejected too.
//!
//! The corpus is copied to a temporary directory first; `@DIR@` in any
//! corpus file stands for that directory. OpenSSH takes `~` from the passwd
//! entry, so our environment uses the passwd home too (and `-F` means only
//! that file, no `/etc/ssh/ssh_config`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use ssh_parallel::ssh_config::{
    resolve, AddressFamily, Algorithms, ConfigError, ConfigFile, ForwardAgent, IdentityAgent, KnownHostsFiles, Proxy,
    Query, RequestTty, ResolveEnv, SshConfig, StrictHostKeyChecking,
};

/// The `ssh -G` keywords of the directives we honour.
const HONOURED: &[&str] = &[
    "user",
    "hostname",
    "port",
    "identityfile",
    "identitiesonly",
    "identityagent",
    "proxyjump",
    "proxycommand",
    "connecttimeout",
    "connectionattempts",
    "serveraliveinterval",
    "serveralivecountmax",
    "stricthostkeychecking",
    "userknownhostsfile",
    "globalknownhostsfile",
    "hostkeyalias",
    "hashknownhosts",
    "pubkeyauthentication",
    "passwordauthentication",
    "kbdinteractiveauthentication",
    "preferredauthentications",
    "ciphers",
    "kexalgorithms",
    "macs",
    "hostkeyalgorithms",
    "compression",
    "setenv",
    "requesttty",
    "forwardagent",
    "addressfamily",
];

// OpenSSH 9.2's defaults, as `ssh -G` prints them.
const CIPHERS: &str =
    "chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr,aes128-gcm@openssh.com,aes256-gcm@openssh.com";
const KEX: &str = "sntrup761x25519-sha512,sntrup761x25519-sha512@openssh.com,curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256,ecdh-sha2-nistp384,ecdh-sha2-nistp521,diffie-hellman-group-exchange-sha256,diffie-hellman-group16-sha512,diffie-hellman-group18-sha512,diffie-hellman-group14-sha256";
const MACS: &str = "umac-64-etm@openssh.com,umac-128-etm@openssh.com,hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com,hmac-sha1-etm@openssh.com,umac-64@openssh.com,umac-128@openssh.com,hmac-sha2-256,hmac-sha2-512,hmac-sha1";
const HOSTKEYS: &str = "ssh-ed25519-cert-v01@openssh.com,ecdsa-sha2-nistp256-cert-v01@openssh.com,ecdsa-sha2-nistp384-cert-v01@openssh.com,ecdsa-sha2-nistp521-cert-v01@openssh.com,sk-ssh-ed25519-cert-v01@openssh.com,sk-ecdsa-sha2-nistp256-cert-v01@openssh.com,rsa-sha2-512-cert-v01@openssh.com,rsa-sha2-256-cert-v01@openssh.com,ssh-ed25519,ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,sk-ssh-ed25519@openssh.com,sk-ecdsa-sha2-nistp256@openssh.com,rsa-sha2-512,rsa-sha2-256";
const IDENTITY_FILES: &[&str] = &[
    "~/.ssh/id_rsa",
    "~/.ssh/id_ecdsa",
    "~/.ssh/id_ecdsa_sk",
    "~/.ssh/id_ed25519",
    "~/.ssh/id_ed25519_sk",
    "~/.ssh/id_xmss",
    "~/.ssh/id_dsa",
];

type Rendered = BTreeMap<String, Vec<String>>;

fn yes_no(value: Option<bool>, default: bool) -> String {
    if value.unwrap_or(default) { "yes" } else { "no" }.to_string()
}

fn algorithms(value: &Option<Algorithms>, defaults: &str) -> String {
    let defaults: Vec<&str> = defaults.split(',').collect();
    match value {
        Some(a) => a.apply(&defaults).join(","),
        None => defaults.join(","),
    }
}

/// Our resolution, printed like `ssh -G` prints it.
fn render(cfg: &SshConfig, env: &ResolveEnv) -> Rendered {
    let mut out = Rendered::new();
    let mut put = |key: &str, value: String| out.entry(key.to_string()).or_default().push(value);
    let home = env.home.display().to_string();
    put("user", cfg.user.clone().unwrap_or_else(|| env.local_user.clone()));
    put("hostname", cfg.effective_hostname());
    put("port", cfg.port.unwrap_or(22).to_string());
    if cfg.identity_files.is_empty() {
        IDENTITY_FILES.iter().for_each(|f| put("identityfile", f.to_string()));
    }
    cfg.identity_files
        .iter()
        .for_each(|f| put("identityfile", f.raw.clone()));
    put("identitiesonly", yes_no(cfg.identities_only, false));
    match &cfg.identity_agent {
        None => {}
        Some(IdentityAgent::None) => put("identityagent", "none".into()),
        Some(IdentityAgent::SshAuthSock) => put("identityagent", "SSH_AUTH_SOCK".into()),
        Some(IdentityAgent::Env(name)) => put("identityagent", format!("${name}")),
        Some(IdentityAgent::Path(p)) => put("identityagent", p.path.display().to_string()),
    }
    match &cfg.proxy {
        None | Some(Proxy::None) => {}
        Some(Proxy::Command { raw, .. }) => put("proxycommand", raw.clone()),
        Some(Proxy::Jump { spec, jumps }) => {
            // ssh -G prints the hops before the last as written, the last
            // one normalised.
            let extra = spec
                .rsplit_once(',')
                .map(|(extra, _)| format!("{extra},"))
                .unwrap_or_default();
            let hops: Vec<String> = jumps
                .last()
                .into_iter()
                .map(|j| {
                    let numeric = j.host.contains(':') || j.host.chars().all(|c| c.is_ascii_digit() || c == '.');
                    let host = if numeric {
                        format!("[{}]", j.host)
                    } else {
                        j.host.clone()
                    };
                    let user = j.user.as_ref().map(|u| format!("{u}@")).unwrap_or_default();
                    let port = j.port.map(|p| format!(":{p}")).unwrap_or_default();
                    format!("{user}{host}{port}")
                })
                .collect();
            put("proxyjump", format!("{extra}{}", hops.join(",")));
        }
    }
    put(
        "connecttimeout",
        cfg.connect_timeout.map_or("none".into(), |d| d.as_secs().to_string()),
    );
    put("connectionattempts", cfg.connection_attempts.unwrap_or(1).to_string());
    put(
        "serveraliveinterval",
        cfg.server_alive_interval.map_or(0, |d| d.as_secs()).to_string(),
    );
    put(
        "serveralivecountmax",
        cfg.server_alive_count_max.unwrap_or(3).to_string(),
    );
    let strict = match cfg.strict_host_key_checking.unwrap_or(StrictHostKeyChecking::Ask) {
        StrictHostKeyChecking::Yes => "true",
        StrictHostKeyChecking::Ask => "ask",
        StrictHostKeyChecking::AcceptNew => "accept-new",
        StrictHostKeyChecking::No => "false",
    };
    put("stricthostkeychecking", strict.into());
    let user_known = match &cfg.user_known_hosts_files {
        None => format!("{home}/.ssh/known_hosts {home}/.ssh/known_hosts2"),
        Some(KnownHostsFiles::None) => "none".into(),
        Some(KnownHostsFiles::Files(f)) => f
            .iter()
            .map(|p| p.path.display().to_string())
            .collect::<Vec<_>>()
            .join(" "),
    };
    put("userknownhostsfile", user_known);
    let global_known = match &cfg.global_known_hosts_files {
        None => "/etc/ssh/ssh_known_hosts /etc/ssh/ssh_known_hosts2".into(),
        Some(KnownHostsFiles::None) => "none".into(),
        Some(KnownHostsFiles::Files(f)) => f.iter().map(|p| p.raw.clone()).collect::<Vec<_>>().join(" "),
    };
    put("globalknownhostsfile", global_known);
    if let Some(alias) = &cfg.host_key_alias {
        put("hostkeyalias", alias.clone());
    }
    put(
        "pubkeyauthentication",
        cfg.pubkey_authentication.unwrap_or(true).to_string(),
    );
    put("passwordauthentication", yes_no(cfg.password_authentication, true));
    put(
        "kbdinteractiveauthentication",
        yes_no(cfg.kbd_interactive_authentication, true),
    );
    if let Some(list) = &cfg.preferred_authentications {
        put("preferredauthentications", list.join(","));
    }
    put("ciphers", algorithms(&cfg.ciphers, CIPHERS));
    put("kexalgorithms", algorithms(&cfg.kex_algorithms, KEX));
    put("macs", algorithms(&cfg.macs, MACS));
    put("hostkeyalgorithms", algorithms(&cfg.host_key_algorithms, HOSTKEYS));
    put("compression", yes_no(cfg.compression, false));
    put("hashknownhosts", yes_no(cfg.hash_known_hosts, false));
    cfg.set_env.iter().for_each(|(n, v)| put("setenv", format!("{n}={v}")));
    let tty = match cfg.request_tty.unwrap_or(RequestTty::Auto) {
        RequestTty::Yes => "true",
        RequestTty::No => "false",
        RequestTty::Force => "force",
        RequestTty::Auto => "auto",
    };
    put("requesttty", tty.into());
    let agent = match &cfg.forward_agent {
        None | Some(ForwardAgent::No) => "no".into(),
        Some(ForwardAgent::Yes) => "yes".into(),
        Some(ForwardAgent::Socket(p)) => p.path.display().to_string(),
    };
    put("forwardagent", agent);
    let family = match cfg.address_family.unwrap_or(AddressFamily::Any) {
        AddressFamily::Any => "any",
        AddressFamily::Inet => "inet",
        AddressFamily::Inet6 => "inet6",
    };
    put("addressfamily", family.into());
    out
}

/// What `ssh -G` prints for the honoured keywords, or its error output.
fn oracle(file: &Path, alias: &str) -> Result<Rendered, String> {
    let output = Command::new("ssh")
        .arg("-G")
        .arg("-F")
        .arg(file)
        .arg(alias)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running ssh -G");
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let mut out = Rendered::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        if HONOURED.contains(&key) {
            out.entry(key.to_string()).or_default().push(value.to_string());
        }
    }
    Ok(out)
}

fn ssh_available() -> bool {
    Command::new("ssh").arg("-V").output().is_ok_and(|o| o.status.success())
}

/// The passwd home, which is what OpenSSH's `~` means.
fn passwd_home() -> PathBuf {
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let out = Command::new("getent")
        .arg("passwd")
        .arg(uid.to_string())
        .output()
        .expect("getent passwd");
    let entry = String::from_utf8(out.stdout).expect("passwd entry is UTF-8");
    PathBuf::from(entry.trim_end().split(':').nth(5).expect("passwd home field"))
}

/// Copies the corpus into `dest`, replacing `@DIR@` with `dest`.
fn copy_corpus(src: &Path, dest: &Path) {
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let target = dest.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_corpus(&entry.path(), &target);
        } else {
            let text = std::fs::read_to_string(entry.path()).unwrap();
            std::fs::write(&target, text.replace("@DIR@", &dest.display().to_string())).unwrap();
        }
    }
}

#[test]
fn resolution_equals_ssh_dash_g() {
    if !ssh_available() {
        if std::env::var("TESTBED_ALLOW_SKIP").as_deref() == Ok("1") {
            println!("SKIPPED: no `ssh` client to use as the oracle");
            return;
        }
        panic!("`ssh` (OpenSSH client) is required as the oracle; install openssh-client or set TESTBED_ALLOW_SKIP=1");
    }
    let dir = tempfile::tempdir().unwrap();
    copy_corpus(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ssh_config"),
        dir.path(),
    );
    let mut base = ResolveEnv::from_system().unwrap();
    base.home = passwd_home();
    let mut configs: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    configs.sort();
    assert!(
        configs.len() >= 25,
        "the corpus needs at least 25 configs, has {}",
        configs.len()
    );
    let (mut checked, mut failures) = (0, Vec::new());
    for config in &configs {
        let text = std::fs::read_to_string(config).unwrap();
        let aliases: Vec<&str> = text
            .lines()
            .find_map(|l| l.strip_prefix("# aliases:"))
            .unwrap_or_else(|| panic!("{}: no `# aliases:` line", config.display()))
            .split_whitespace()
            .collect();
        let env = base.clone().with_only_file(Some(ConfigFile::explicit(config)));
        let name = config.file_name().unwrap().to_string_lossy().into_owned();
        for alias in aliases {
            checked += 1;
            let ours = resolve(&env, &Query::new(alias)).map(|cfg| render(&cfg, &env));
            match (oracle(config, alias), ours) {
                (Ok(theirs), Ok(ours)) => {
                    for key in HONOURED {
                        if theirs.get(*key) != ours.get(*key) {
                            failures.push(format!(
                                "{name} {alias}: {key}: ssh -G {:?}, ours {:?}",
                                theirs.get(*key),
                                ours.get(*key)
                            ));
                        }
                    }
                }
                // Both reject it: ours must say where.
                (Err(_), Err(ConfigError::Invalid { .. } | ConfigError::IncludeDepth { .. })) => {}
                (Err(_), Err(e)) => failures.push(format!("{name} {alias}: our error names no line: {e}")),
                (Ok(_), Err(e)) => failures.push(format!("{name} {alias}: ssh accepts it, we fail: {e}")),
                (Err(e), Ok(_)) => {
                    failures.push(format!("{name} {alias}: ssh rejects it ({}), we accept it", e.trim()))
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches over {checked} resolutions:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!("{checked} resolutions over {} configs agree with ssh -G", configs.len());
}
