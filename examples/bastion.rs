//! A fleet reached only through a bastion, configured the OpenSSH way, on a machine that
//! has nothing but the Rust toolchain: this starts a throwaway "cluster" in the process (an
//! embedded SSH server as the bastion, one per app machine behind it, all on 127.0.0.1),
//! writes an `ssh_config` with `ProxyJump bastion` for the `app*` aliases, and runs a
//! command on every app with bare `Host::new("app01")`.
//!
//! Every app's session runs over a `direct-tcpip` channel of ONE session to the bastion,
//! pumped by the event loop: eight apps cost one login on the bastion (OpenSSH's `-J`
//! would log in there eight times). Host keys are checked on every hop against the
//! `UserKnownHostsFile` the config names.
//!
//! `cargo run --example bastion` (`RUST_LOG=ssh_parallel=debug` to watch the tunnels).

use std::error::Error;
use std::fmt::Write as _;
use std::fs;

use ssh_parallel::{Command, Host, Parallel, TaskStatus};
use testbed::{ClientKey, EmbeddedServer};

const APPS: usize = 8;

fn main() -> Result<(), Box<dyn Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();

    // One key logs in everywhere: `ops` on the bastion, `deploy` on the apps.
    let key = ClientKey::ed25519_in_process()?;
    let bastion = EmbeddedServer::builder().start()?;
    bastion.add_authorized_key("ops", key.public_line())?;
    let apps = (0..APPS)
        .map(|_| {
            let s = EmbeddedServer::builder().start()?;
            s.add_authorized_key("deploy", key.public_line())?;
            Ok(s)
        })
        .collect::<Result<Vec<_>, Box<dyn Error>>>()?;

    // The user's side: known_hosts and an ssh_config, as they would be in ~/.ssh.
    let dir = tempfile::tempdir()?;
    let known_hosts = dir.path().join("known_hosts");
    let mut kh = format!("{}\n", bastion.known_hosts_line());
    let mut config = format!(
        "Host bastion\n  HostName 127.0.0.1\n  Port {}\n  User ops\n\n",
        bastion.port()
    );
    for (i, app) in apps.iter().enumerate() {
        writeln!(kh, "{}", app.known_hosts_line())?;
        writeln!(config, "Host app{:02}\n  Port {}\n", i + 1, app.port())?;
    }
    write!(
        config,
        "Host app*\n  HostName 127.0.0.1\n  User deploy\n  ProxyJump bastion\n\n\
         Host *\n  IdentityFile {}\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n  \
         GlobalKnownHostsFile none\n  StrictHostKeyChecking yes\n",
        key.private_path().display(),
        known_hosts.display()
    )?;
    fs::write(&known_hosts, kh)?;
    let config_path = dir.path().join("ssh_config");
    fs::write(&config_path, &config)?;
    println!("--- ssh_config:\n{config}---");

    // Bare aliases: everything else comes from the config, the bastion included.
    let mut pssh = Parallel::builder().ssh_config(&config_path).build()?;
    for i in 1..=APPS {
        let alias = format!("app{i:02}");
        pssh.add_host(alias.clone(), Host::new(alias))?;
    }
    let hop = &pssh.host("app01").ok_or("app01 is registered")?.jump_hosts()[0];
    println!(
        "app01 goes through {} ({}:{})",
        hop.alias(),
        hop.hostname(),
        hop.port_number().unwrap_or(22)
    );

    pssh.all(Command::new("echo %LABEL% reached through the bastion as $(id -un)"))?;
    let report = pssh.run();
    let mut failed = 0;
    for label in report.labels() {
        let task = &label.tasks()[0];
        match task.status() {
            TaskStatus::Succeeded => println!("{}: {}", label.label(), task.stdout_str().trim()),
            _ => {
                failed += 1;
                println!("{}: FAILED: {:?}", label.label(), task.error().map(|e| e.to_string()));
            }
        }
    }
    let stats = bastion.stats();
    println!(
        "bastion: {} login(s) for {APPS} labels, {} tunnels",
        stats.connections, stats.forwards_opened
    );
    if failed > 0 {
        return Err(format!("{failed} label(s) failed").into());
    }
    Ok(())
}
