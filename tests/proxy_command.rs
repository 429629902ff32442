//! ProxyCommand: the session runs over a command's stdin and stdout (`sh -c`,
//! tokens expanded). The OpenSSH client's `ssh -W %h:%p bastion` (with `-F`
//! a generated config, `BatchMode`) through a bastion sshd; a plain relay
//! without `nc` (bash's `/dev/tcp`) from the API and from a configuration
//! under a temporary home; the command's process group killed when the
//! connection closes (a background process it started is gone too); a
//! failing command's stderr in the error.
//!
//! The `ssh -W` case needs sshd (a missing one fails, or skips loudly with
//! `TESTBED_ALLOW_SKIP=1`: `testbed::prereq`).

#[path = "common/routes.rs"]
mod routes;
#[path = "common/servers.rs"]
mod servers;

use std::fs;
use std::time::{Duration, Instant};

use routes::{embedded_target, first_error, first_ok, parallel, parallel_in_new_home};
use servers::{PASSWORD, USER};
use ssh_parallel::{Command, Host, HostKeyCheck, Parallel};
use testbed::{ClientKey, OpenSshServer};

/// The login on the embedded target, with no host-key check.
fn login(h: Host) -> Host {
    h.user(USER)
        .password(PASSWORD)
        .agent(false)
        .host_key_check(HostKeyCheck::Off)
        .connect_timeout(Duration::from_secs(10))
}

/// Processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmd) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(marker) && !cmd.contains("proxy_command-") {
            found.push(format!("{}: {cmd}", entry.file_name().to_string_lossy()));
        }
    }
    found
}

/// Waits up to 5 s for no process to carry `marker`.
fn none_left(marker: &str) -> Vec<String> {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let left = processes_with(marker);
        if left.is_empty() || Instant::now() > end {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A relay to `%h:%p` in bash alone, which first starts a background
/// `sleep` carrying `marker` (it outlives the relay unless its whole
/// process group is killed).
fn relay(marker: &str) -> String {
    format!("bash -c 'sleep {marker} & exec 3<>/dev/tcp/%h/%p; cat <&3 & exec cat >&3'")
}

/// A unique `sleep` argument.
fn marker() -> String {
    format!(
        "{}.{}",
        900 + std::process::id() % 90,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    )
}

#[test]
fn a_plain_relay_carries_the_session_and_its_process_group_is_killed() {
    let target = embedded_target();
    let (_home, mut pssh) = parallel_in_new_home("", Parallel::builder());
    let marker = marker();
    for i in 0..3 {
        let h = login(Host::new("127.0.0.1").port(target.addr().port())).proxy_command(relay(&marker));
        pssh.add_host(format!("r{i}"), h).unwrap();
    }
    assert_eq!(
        pssh.host("r0").unwrap().proxy_command_line(),
        Some(
            format!(
                "bash -c 'sleep {marker} & exec 3<>/dev/tcp/127.0.0.1/{}; cat <&3 & exec cat >&3'",
                target.addr().port()
            )
            .as_str()
        ),
        "tokens expanded at add_host"
    );
    pssh.all(Command::new("echo relayed-%LABEL%")).unwrap();
    let report = pssh.run();
    for i in 0..3 {
        first_ok(&report, &format!("r{i}"), &format!("relayed-r{i}"));
    }
    assert_eq!(target.stats().connections, 3);
    let left = none_left(&format!("sleep {marker}"));
    assert!(
        left.is_empty(),
        "the proxy commands' process groups were killed: {left:?}"
    );
}

#[test]
fn a_failing_proxy_command_puts_its_stderr_in_the_error() {
    let (_home, mut pssh) = parallel_in_new_home("", Parallel::builder());
    let h = login(Host::new("nowhere")).proxy_command("echo proxy-broke-%n >&2; exit 3");
    pssh.add_host("p", h).unwrap();
    pssh.all(Command::new("echo must-not-run")).unwrap();
    let report = pssh.run();
    let msg = first_error(&report, "p");
    assert!(msg.contains("via ProxyCommand"), "{msg}");
    assert!(msg.contains("proxy-broke-nowhere"), "{msg}");
}

#[test]
fn a_proxy_command_from_a_config_under_home_with_a_bare_alias() {
    let target = embedded_target();
    let marker = marker();
    let config = format!(
        "Host pc*\n  HostName 127.0.0.1\n  Port {}\n  User {USER}\n  ProxyCommand {}\n",
        target.addr().port(),
        relay(&marker)
    );
    let (_home, mut pssh) = parallel_in_new_home(&config, Parallel::builder());
    for i in 0..2 {
        let h = Host::new(format!("pc{i}"))
            .password(PASSWORD)
            .agent(false)
            .host_key_check(HostKeyCheck::Off);
        pssh.add_host(format!("c{i}"), h).unwrap();
    }
    pssh.all(Command::new("echo configured")).unwrap();
    let report = pssh.run();
    for i in 0..2 {
        first_ok(&report, &format!("c{i}"), "configured");
    }
    assert_eq!(target.stats().connections, 2);
    assert!(none_left(&format!("sleep {marker}")).is_empty());
}

#[test]
fn ssh_dash_w_through_a_bastion() {
    if !testbed::prereq::sshd() {
        return;
    }
    let target = embedded_target();
    let key = ClientKey::ed25519().unwrap();
    let bastion = OpenSshServer::builder()
        .authorize(&key)
        .config_line("AllowTcpForwarding yes")
        .config_line(format!("PermitOpen 127.0.0.1:{}", target.addr().port()))
        .start()
        .expect("start the bastion sshd");
    let dir = tempfile::tempdir().unwrap();
    let kh = dir.path().join("known_hosts");
    fs::write(&kh, format!("{}\n", bastion.known_hosts_line)).unwrap();
    let client_config = dir.path().join("ssh_config");
    fs::write(
        &client_config,
        format!(
            "Host bastion\n  HostName 127.0.0.1\n  Port {}\n  User {}\n  IdentityFile {}\n  IdentitiesOnly yes\n  \
             BatchMode yes\n  UserKnownHostsFile {}\n  GlobalKnownHostsFile none\n  StrictHostKeyChecking yes\n",
            bastion.port,
            testbed::current_user(),
            key.private_path().display(),
            kh.display()
        ),
    )
    .unwrap();
    let mut pssh = parallel(dir.path(), "", Parallel::builder());
    let command = format!("ssh -F {} -W %h:%p bastion", client_config.display());
    for i in 0..3 {
        let h = login(Host::new("127.0.0.1").port(target.addr().port())).proxy_command(command.clone());
        pssh.add_host(format!("w{i}"), h).unwrap();
    }
    pssh.all(Command::new("echo through-ssh-w")).unwrap();
    let report = pssh.run();
    for i in 0..3 {
        first_ok(&report, &format!("w{i}"), "through-ssh-w");
    }
    // Unlike a native jump host, each `ssh -W` logs in to the bastion by itself.
    assert_eq!(bastion.logins_logged(), 3);
    assert_eq!(target.stats().connections, 3);
    assert!(none_left(&client_config.display().to_string()).is_empty());
}
