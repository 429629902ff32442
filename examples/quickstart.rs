//! The main job, end to end over real SSH, on a machine that has nothing but the Rust
//! toolchain: this starts a throwaway SSH "cluster" inside the process (one embedded server
//! per label on 127.0.0.1, a random password, no `sshd` or `scp` binary needed), then runs
//! a small deployment on it:
//!
//! 1. every label gets its own directory and the release config, copied with `ScpPut`;
//! 2. the web tier starts; a health check with `or_goto` skips web2's warm-up;
//! 3. web4 fails on purpose under `OnError::Done`: it stops alone, the others go on;
//! 4. db1 `Join`s the web tier, checks who is ready, then migrates;
//! 5. every label's status file comes back with `ScpGet`.
//!
//! `cargo run --example quickstart` (`RUST_LOG=ssh_parallel=debug` to watch the scheduler).
//! It exits with an error only if something other than web4's planned failure went wrong.

use std::error::Error;
use std::fs;
use std::hash::{BuildHasher, Hasher};

use ssh_parallel::{
    Command, ErrorKind, Here, Host, HostKeyCheck, Join, OnError, Parallel, ScpGet, ScpPut, Sub, TaskStatus,
};
use testbed::EmbeddedServer;

const LABELS: [&str; 5] = ["web1", "web2", "web3", "web4", "db1"];

fn main() -> Result<(), Box<dyn Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();

    // The cluster: one SSH server per "machine". Commands run as the current user; the login
    // name and password are only this run's credentials.
    let password = format!("{:016x}", std::hash::RandomState::new().build_hasher().finish());
    let servers = LABELS
        .iter()
        .map(|_| EmbeddedServer::builder().password("deploy", &password).start())
        .collect::<Result<Vec<_>, _>>()?;

    // A scratch area standing in for the machines' disks, and the release to ship.
    let work = tempfile::tempdir()?;
    let w = work.path().display();
    fs::create_dir_all(work.path().join("release"))?;
    fs::create_dir_all(work.path().join("collected"))?;
    fs::write(work.path().join("release/app.conf"), "version = 1.4.2\n")?;

    let mut pssh = Parallel::builder().workers(4).on_error(OnError::Abort).build()?;
    for (label, server) in LABELS.iter().zip(&servers) {
        let host = Host::new("127.0.0.1")
            .port(server.port())
            .user("deploy")
            .password(&password)
            // The servers' host keys were generated a moment ago, so no known_hosts file can
            // vouch for them. Against real machines keep the default, `Strict`.
            .host_key_check(HostKeyCheck::Off);
        pssh.add_host(*label, host)?;
    }

    // 1. Each label's "disk" is its own directory; %LABEL% makes one push serve them all.
    pssh.all(Command::new(format!("mkdir -p {w}/hosts/%LABEL%")))?;
    pssh.all(ScpPut::new(
        format!("{w}/release/app.conf"),
        format!("{w}/hosts/%LABEL%/app.conf"),
    ))?;

    // 2. The web tier starts. The health check fails on web2 only: or_goto jumps over its
    //    warm-up instead of failing the label.
    pssh.push(
        "web*",
        Command::new(format!(
            "cd {w}/hosts/%LABEL% && echo \"%LABEL% up, $(cat app.conf)\" > status"
        )),
    )?;
    pssh.push("web*", Command::new("test %LABEL% != web2").or_goto("warmed-up"))?;
    pssh.push("web*", Command::new(format!("echo warmed >> {w}/hosts/%LABEL%/status")))?;
    pssh.push("web*", Here::new("warmed-up"))?;

    // 3. web4's disk is "full". Done stops web4 alone, and its join markers still count as
    //    reached, so db1 is not held up by it.
    pssh.push(
        "web4",
        Command::new("echo 'disk full' >&2; exit 7").on_error(OnError::Done),
    )?;
    pssh.push("web*", Command::new(format!("echo ready >> {w}/hosts/%LABEL%/status")))?;

    // 4. db1 waits for everything queued on web* so far, then looks at what they wrote.
    pssh.push("db1", Join::new("web*"))?;
    pssh.push(
        "db1",
        Command::new(format!("cat {w}/hosts/web*/status | grep -c ready")),
    )?;
    pssh.push(
        "db1",
        Sub::new(|ctx| {
            // A Sub runs on the scheduler and sees earlier results (here, captured stdout).
            let ready = ctx.last_result().map(|r| r.stdout_str()).unwrap_or_default();
            println!("db1 sees {} web servers ready", ready.trim());
            Ok(())
        }),
    )?;
    pssh.push(
        "db1",
        Command::new(format!("echo 'db1 migrated to 1.4.2' > {w}/hosts/db1/status")),
    )?;

    // 5. Bring every label's status file home.
    pssh.all(ScpGet::new(
        format!("{w}/hosts/%LABEL%/status"),
        format!("{w}/collected/%LABEL%.status"),
    ))?;

    pssh.validate()?;
    let report = pssh.run();

    println!("\nPer-label summary:\n{report}\n");
    for label in report.labels() {
        let name = label.label();
        match fs::read_to_string(work.path().join(format!("collected/{name}.status"))) {
            Ok(text) => println!("{name} status: {}", text.trim().replace('\n', " | ")),
            Err(_) => println!("{name} status: (not collected)"),
        }
        for t in label.tasks().iter().filter(|t| t.status() != TaskStatus::Succeeded) {
            println!("  {name} task #{} {:?}: {}", t.seq(), t.status(), t.description());
        }
    }

    // web4 is expected to fail (exit 7, under Done); anything else is a real problem.
    let mut unexpected = Vec::new();
    for (label, error) in pssh.get_errors() {
        let planned = label == "web4" && error.kind() == ErrorKind::Command && error.exit_code() == Some(7);
        println!(
            "error on {label} ({}): {error}",
            if planned { "planned" } else { "UNEXPECTED" }
        );
        if !planned {
            unexpected.push(label.to_owned());
        }
    }
    if pssh.get_error("web4")?.is_none() {
        unexpected.push("web4 (should have failed)".to_owned());
    }
    if !unexpected.is_empty() {
        return Err(format!("unexpected outcome on: {}", unexpected.join(", ")).into());
    }
    println!("quickstart: done, web4 failed as planned");
    Ok(())
}
