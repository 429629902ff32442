//! A `Parsub`: your own code on a worker thread, with the label's SSH session lent to it,
//! for steps that need a conversation rather than one command. Here: `sudo -S`, which
//! reads the password from stdin, with a password looked up per label in a "vault".
//!
//! The machines are in-process SSH servers on 127.0.0.1 without a real sudo, so a tiny
//! stand-in `sudo` script checks the password and runs the command. On real hosts the
//! command is just `sudo -S -p '' id -u`.
//!
//! `cargo run --example parsub_sudo`

use std::collections::HashMap;
use std::error::Error;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::os::unix::fs::PermissionsExt;

use ssh_parallel::{ErrorKind, Host, HostKeyCheck, OnError, Parallel, Parsub};
use testbed::EmbeddedServer;

/// The stand-in: `sudo -S [-p PROMPT] CMD...` reads one line from stdin as the password.
const FAKE_SUDO: &str = r#"#!/bin/sh
IFS= read -r pw
[ "$pw" = "s3cret" ] || { echo "sudo: 1 incorrect password attempt" >&2; exit 1; }
while [ $# -gt 0 ]; do case "$1" in -S) shift ;; -p) shift 2 ;; *) break ;; esac; done
exec "$@"
"#;

fn main() -> Result<(), Box<dyn Error>> {
    let login = format!("{:016x}", std::hash::RandomState::new().build_hasher().finish());
    let server = EmbeddedServer::builder().password("admin", &login).start()?;
    let work = tempfile::tempdir()?;
    let sudo = work.path().join("sudo");
    fs::write(&sudo, FAKE_SUDO)?;
    fs::set_permissions(&sudo, fs::Permissions::from_mode(0o755))?;

    // Done: a refused sudo stops that label only.
    let mut pssh = Parallel::builder().on_error(OnError::Done).build()?;
    for label in ["app1", "app2", "app3"] {
        let host = Host::new("127.0.0.1")
            .port(server.port())
            .user("admin")
            .password(&login)
            // A throwaway server key; keep the default `Strict` for real hosts.
            .host_key_check(HostKeyCheck::Off);
        pssh.add_host(label, host)?;
    }

    // app3's entry is stale: its sudo will be refused.
    let vault: HashMap<&str, &str> = [("app1", "s3cret"), ("app2", "s3cret"), ("app3", "old-password")].into();
    let sudo = sudo.display().to_string();
    pssh.all(Parsub::new(move |label, session| {
        let password = vault.get(label).ok_or("no password in the vault")?;
        // One command with the password on stdin, never on the command line.
        let out = session.exec_with_stdin(&format!("{sudo} -S -p '' id -u"), format!("{password}\n").as_bytes())?;
        if !out.success() {
            // Any error returned here becomes the task's Local error, under the policy.
            let why = String::from_utf8_lossy(&out.stderr);
            return Err(format!("sudo refused: {}", why.trim()).into());
        }
        println!("{label}: sudo ok, running as uid {}", out.stdout_str().trim());
        // The same session serves further commands.
        let who = session.exec("echo $USER")?;
        println!("{label}: logged in as {}", who.stdout_str().trim());
        Ok(())
    }))?;

    let report = pssh.run();
    println!("\n{report}");
    // app3 is expected to fail with a Local error; anything else is unexpected.
    let errors = pssh.get_errors();
    let planned = errors.len() == 1
        && errors[0].0 == "app3"
        && errors[0].1.kind() == ErrorKind::Local
        && errors[0].1.to_string().contains("sudo refused");
    if !planned {
        return Err(format!("unexpected outcome: {errors:?}").into());
    }
    println!("app3 was refused as planned");
    Ok(())
}
