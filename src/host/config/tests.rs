//! Precedence and mapping of `apply`, without a server.

use std::path::Path;
use std::time::Duration;

use super::*;

fn resolved(text: &str, host: Host) -> Result<Host> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config");
    std::fs::write(&file, text).unwrap();
    std::fs::create_dir_all(dir.path().join(".ssh")).unwrap();
    std::fs::write(dir.path().join(".ssh/id_present"), "key").unwrap();
    let mut env = ResolveEnv::from_system()
        .unwrap()
        .with_only_file(Some(ConfigFile::explicit(&file)));
    env.home = dir.path().to_path_buf();
    env.vars.insert("MY_AGENT".into(), "/run/agent.sock".into());
    let mut configs = SshConfigs::new(ConfigSource::Env(Box::new(env)));
    let mut host = host;
    configs.apply("l", &mut host)?;
    Ok(host)
}

#[test]
fn the_files_fill_what_the_host_leaves_unset() {
    let h = resolved(
        "Host w\n HostName 10.0.0.1\n User u\n Port 2200\n ConnectTimeout 7\n ServerAliveInterval 0\n \
         ServerAliveCountMax 9\n StrictHostKeyChecking accept-new\n IdentityFile ~/.ssh/id_present\n \
         IdentityFile ~/.ssh/id_missing\n IdentityAgent $MY_AGENT\n ConnectionAttempts 3\n",
        Host::new("w"),
    )
    .unwrap();
    assert_eq!((h.alias(), h.hostname()), ("w", "10.0.0.1"));
    assert_eq!((h.user.as_deref(), h.port), (Some("u"), Some(2200)));
    assert_eq!(h.connect_timeout, Some(Duration::from_secs(7)));
    assert_eq!((h.keepalive, h.keepalive_count_max), (Duration::ZERO, 9));
    assert_eq!(h.host_key_check, HostKeyCheck::AcceptNew);
    assert_eq!(h.key_files.len(), 1, "the missing file is skipped");
    assert!(h.key_files[0].ends_with(".ssh/id_present"));
    assert!(h.ssh.no_default_keys);
    assert_eq!(h.agent_socket.as_deref(), Some(Path::new("/run/agent.sock")));
    assert_eq!(h.ssh.connection_attempts, 3);
}

#[test]
fn the_host_api_wins() {
    let host = Host::new("w")
        .user("me")
        .port(22)
        .connect_timeout(Duration::from_secs(1))
        .keepalive(Duration::from_secs(5))
        .keepalive_count_max(2)
        .host_key_check(HostKeyCheck::Strict)
        .key_file("/k")
        .agent(true);
    let h = resolved(
        "Host w\n User u\n Port 2200\n ConnectTimeout 7\n ServerAliveInterval 60\n ServerAliveCountMax 9\n \
         StrictHostKeyChecking no\n IdentityFile ~/.ssh/id_present\n IdentityAgent none\n IdentitiesOnly yes\n",
        host,
    )
    .unwrap();
    assert_eq!((h.user.as_deref(), h.port), (Some("me"), Some(22)));
    assert_eq!(h.connect_timeout, Some(Duration::from_secs(1)));
    assert_eq!((h.keepalive, h.keepalive_count_max), (Duration::from_secs(5), 2));
    assert_eq!(h.host_key_check, HostKeyCheck::Strict);
    assert_eq!(h.key_files, vec![std::path::PathBuf::from("/k")]);
    assert!(h.agent);
}

#[test]
fn strictness_agent_and_methods_map_as_documented() {
    for (value, check) in [
        ("yes", HostKeyCheck::Strict),
        ("ask", HostKeyCheck::Strict),
        ("accept-new", HostKeyCheck::AcceptNew),
        ("no", HostKeyCheck::Off),
        ("off", HostKeyCheck::Off),
    ] {
        let h = resolved(&format!("StrictHostKeyChecking {value}\n"), Host::new("w")).unwrap();
        assert_eq!(h.host_key_check, check, "{value}");
    }
    let h = resolved("IdentityAgent none\n", Host::new("w")).unwrap();
    assert!(!h.agent);
    let h = resolved("IdentitiesOnly yes\n", Host::new("w")).unwrap();
    assert!(!h.agent);
    let h = resolved(
        "PreferredAuthentications keyboard-interactive,password\nUserKnownHostsFile none\nHashKnownHosts yes\n",
        Host::new("w"),
    )
    .unwrap();
    assert_eq!(h.ssh.methods_off, vec!["publickey"]);
    assert!(h.ssh.kbd_first && h.ssh.hash_known_hosts);
    let known = h.ssh.known_hosts.as_ref().unwrap();
    assert!(known.user.is_empty());
    assert_eq!(known.global.len(), 2, "the default global files");
    let h = resolved("PasswordAuthentication no\nCiphers -aes128*\n", Host::new("w")).unwrap();
    assert_eq!(h.ssh.methods_off, vec!["password"]);
    assert_eq!(h.ssh.algorithms.len(), 1);
    assert!(h.ssh.algorithms[0].2.ends_with(":2"), "{}", h.ssh.algorithms[0].2);
}

#[test]
fn local_hosts_and_opt_out_read_nothing() {
    let h = resolved("Port x\n", Host::local()).unwrap();
    assert_eq!(h.hostname(), "localhost");
    let mut host = Host::new("w");
    SshConfigs::new(ConfigSource::Off).apply("l", &mut host).unwrap();
    assert!(host.ssh.known_hosts.is_none());
    let e = resolved("Port x\n", Host::new("w")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig);
    assert!(e.to_string().contains("config:1"), "{e}");
}

#[test]
fn resolutions_are_reused_unless_match_exec_ran() {
    let dir = tempfile::tempdir().unwrap();
    let (file, flag) = (dir.path().join("config"), dir.path().join("flag"));
    std::fs::write(
        &file,
        format!(
            "Match host x exec \"test -e {}\"\n Port 1\nHost y\n Port 2\n",
            flag.display()
        ),
    )
    .unwrap();
    let mut env = ResolveEnv::from_system()
        .unwrap()
        .with_only_file(Some(ConfigFile::explicit(&file)));
    env.home = dir.path().to_path_buf();
    let mut configs = SshConfigs::new(ConfigSource::Env(Box::new(env)));
    let port = |configs: &mut SshConfigs, name: &str| {
        let mut h = Host::new(name);
        configs.apply("l", &mut h).unwrap();
        h.port
    };
    assert_eq!(port(&mut configs, "x"), None);
    assert_eq!(port(&mut configs, "y"), Some(2));
    std::fs::write(&flag, "").unwrap();
    assert_eq!(port(&mut configs, "x"), Some(1), "Match exec runs again");
    std::fs::write(&file, "Host y\n Port 3\n").unwrap();
    assert_eq!(port(&mut configs, "y"), Some(2), "resolved once per Parallel");
}
