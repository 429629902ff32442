//! Resolution tests on temporary files (the `ssh -G` oracle lives in
//! `tests/ssh_config_oracle.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::*;

fn env_in(dir: &Path, config: &str) -> ResolveEnv {
    std::fs::create_dir_all(dir.join(".ssh")).unwrap();
    let file = dir.join(".ssh/config");
    std::fs::write(&file, config).unwrap();
    ResolveEnv {
        home: dir.to_path_buf(),
        local_user: "me".into(),
        uid: 1000,
        local_host: "box.example.org".into(),
        files: vec![ConfigFile::explicit(file)],
        shell: "/bin/sh".into(),
        vars: BTreeMap::from([("V".to_string(), "val".to_string())]),
        system_dir: dir.join("etc"),
    }
}

fn resolve_in(config: &str, alias: &str) -> Result<SshConfig, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    resolve(&env_in(dir.path(), config), &Query::new(alias))
}

#[test]
fn first_value_wins_and_identity_files_accumulate() {
    let cfg = resolve_in(
        "Host web*\n Port 2222\n IdentityFile ~/a\nHost *\n Port 22\n IdentityFile ~/a\n IdentityFile ~/b\n User u\n",
        "web1",
    )
    .unwrap();
    assert_eq!(cfg.port, Some(2222));
    assert_eq!(cfg.user.as_deref(), Some("u"));
    let raw: Vec<_> = cfg.identity_files.iter().map(|p| p.raw.as_str()).collect();
    assert_eq!(raw, ["~/a", "~/b"]);
    assert!(cfg.identity_files[0].path.ends_with("a") && cfg.identity_files[0].path.is_absolute());
    assert_eq!(cfg.identity_files[1].origin.line, 7);
}

#[test]
fn tokens_expand_where_openssh_expands_them() {
    let cfg = resolve_in(
        "Host h\n HostName %h.example.com\n User r\n IdentityFile /k/%h-%r-%u-%n-%p-%L-%l-%d-%i-${V}-%%\n ProxyCommand nc %h %p\n",
        "h",
    )
    .unwrap();
    assert_eq!(cfg.hostname.as_deref(), Some("h.example.com"));
    let path = cfg.identity_files[0].path.to_string_lossy().into_owned();
    assert!(
        path.starts_with("/k/h.example.com-r-me-h-22-box-box.example.org-/"),
        "{path}"
    );
    assert!(path.ends_with("-1000-val-%"), "{path}");
    assert_eq!(
        cfg.proxy,
        Some(Proxy::Command {
            raw: "nc %h %p".into(),
            command: "nc h.example.com 22".into()
        })
    );
    let cfg = resolve_in("Host j\n User u\n ProxyJump %r@gw-%n:2,%h\n", "j").unwrap();
    let Some(Proxy::Jump { jumps, .. }) = cfg.proxy else {
        panic!("{:?}", cfg.proxy)
    };
    assert_eq!(
        jumps[0],
        Jump {
            user: Some("u".into()),
            host: "gw-j".into(),
            port: Some(2)
        }
    );
    assert_eq!(jumps[1].host, "j");
    let err = resolve_in("Host *\n HostName %p\n", "x").unwrap_err().to_string();
    assert!(err.contains(":2:") && err.contains("%p"), "{err}");
    let err = resolve_in("IdentityFile ${NOPE}\n", "x").unwrap_err().to_string();
    assert!(err.contains(":1:"), "{err}");
}

#[test]
fn query_presets_win_and_are_seen_by_match() {
    let dir = tempfile::tempdir().unwrap();
    let env = env_in(
        dir.path(),
        "Match user admin\n Port 2200\nHost *\n User other\n Port 22\n",
    );
    let cfg = resolve(
        &env,
        &Query {
            alias: "x".into(),
            user: Some("admin".into()),
            port: None,
        },
    )
    .unwrap();
    assert_eq!((cfg.user.as_deref(), cfg.port), (Some("admin"), Some(2200)));
}

#[test]
fn include_depth_and_cycles_name_the_line() {
    let err = resolve_in("\nInclude config\n", "x").unwrap_err();
    assert!(matches!(err, ConfigError::IncludeDepth { line: 2, .. }), "{err}");
}

#[test]
fn include_in_inactive_block_never_matches() {
    let dir = tempfile::tempdir().unwrap();
    let env = env_in(dir.path(), "Host other\n Include inc\nHost *\n Port 3\n");
    std::fs::write(dir.path().join(".ssh/inc"), "Port 1\nHost *\n Port 2\n").unwrap();
    assert_eq!(resolve(&env, &Query::new("x")).unwrap().port, Some(3));
    std::fs::write(dir.path().join(".ssh/inc"), "Port 1\nHost *\n Port 2\n Bogus x\n").unwrap();
    let err = resolve(&env, &Query::new("x")).unwrap_err().to_string();
    assert!(err.contains("inc:4:"), "{err}");
}

#[test]
fn bad_input_is_an_error_never_a_panic() {
    for config in [
        "Port\n",
        "Port 0\n",
        "Port 22 23\n",
        "Bogus yes\n",
        "Match\n",
        "Match host\n",
        "Match all host x\n",
        "Match nope x\n",
        "UserKnownHostsFile a none\n",
        "SetEnv A\n",
        "StrictHostKeyChecking maybe\n",
        "ProxyJump a:x\n",
        "Host \"\"\n",
        "IdentityAgent $\n",
        "Include ~/x\0\n",
    ] {
        let err = resolve_in(config, "x").unwrap_err();
        assert!(err.to_string().contains(":1:"), "{config:?}: {err}");
    }
    assert!(resolve_in("IgnoreUnknown bog*\nBogus yes\n", "x").is_ok());
}

#[test]
fn missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = env_in(dir.path(), "");
    env.files = vec![ConfigFile::user_default(dir.path().join("nope"))];
    assert!(resolve(&env, &Query::new("x")).is_ok());
    env.files = vec![ConfigFile::explicit(dir.path().join("nope"))];
    assert!(matches!(resolve(&env, &Query::new("x")), Err(ConfigError::Io { .. })));
}

#[test]
fn writable_by_others_is_refused_for_checked_files() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mut env = env_in(dir.path(), "Port 1\n");
    let file: PathBuf = dir.path().join(".ssh/config");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    env.files = vec![ConfigFile::user_default(&file)];
    assert!(matches!(
        resolve(&env, &Query::new("x")),
        Err(ConfigError::BadPermissions { .. })
    ));
}

#[test]
fn match_final_sees_the_hostname() {
    let cfg = resolve_in(
        "Host a\n HostName B.example\nMatch final host b.example\n Port 7\nHost b.example\n User fin\n",
        "a",
    )
    .unwrap();
    assert_eq!((cfg.port, cfg.user.as_deref()), (Some(7), Some("fin")));
    let cfg = resolve_in("Host b.example\n User fin\n", "a").unwrap();
    assert_eq!(cfg.user, None);
}

#[test]
fn endless_include_is_refused() {
    let err = resolve_in("Host *\n Include /dev/zero\n", "x").unwrap_err().to_string();
    assert!(err.contains(":2:") && err.contains("16 MiB"), "{err}");
}

#[test]
fn system_files_include_from_their_own_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = env_in(dir.path(), "");
    std::fs::create_dir_all(dir.path().join("etc/conf.d")).unwrap();
    std::fs::write(dir.path().join("etc/conf.d/a.conf"), "Port 5001\n").unwrap();
    let system = dir.path().join("etc/ssh_config");
    std::fs::write(&system, "Include conf.d/*.conf\nUser sys\n").unwrap();
    env.files = vec![
        ConfigFile::user_default(dir.path().join(".ssh/config")),
        ConfigFile::system(&system),
    ];
    std::fs::write(dir.path().join(".ssh/config"), "User mine\n").unwrap();
    let cfg = resolve(&env, &Query::new("x")).unwrap();
    assert_eq!((cfg.user.as_deref(), cfg.port), (Some("mine"), Some(5001)));
    std::fs::write(&system, "Include ~/x\n").unwrap();
    let err = resolve(&env, &Query::new("x")).unwrap_err().to_string();
    assert!(
        err.contains("ssh_config:1:") && err.contains("bad include path"),
        "{err}"
    );
}
