//! Our side of a case, run as its own process (`fanout __client key=value ...`) so that it
//! is measured exactly like the peers: a whole process, its CPU and its memory.
//!
//! Invariant: it uses only ssh-parallel's public API, and exits non-zero when any label
//! failed (a run counts only if every label succeeded).

use std::collections::HashMap;
use std::time::Duration;

use ssh_parallel::{Command, Host, HostKeyCheck, Join, Parallel, RsyncPut, ScpGet, ScpPut, TransferProtocol};

pub fn main(args: &[String]) -> i32 {
    match run(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("fanout client: {e}");
            1
        }
    }
}

fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let kv: HashMap<&str, &str> = args.iter().filter_map(|a| a.split_once('=')).collect();
    let get = |k: &str| kv.get(k).copied().ok_or_else(|| format!("missing {k}="));
    let n: usize = get("n")?.parse()?;
    let port: u16 = get("port")?.parse()?;
    let user = get("user")?;
    let key = get("key")?;
    let kind = kv.get("kind").copied().unwrap_or("run");
    let protocol = match kv.get("protocol").copied() {
        Some("sftp") => TransferProtocol::Sftp,
        _ => TransferProtocol::Scp,
    };
    testbed::raise_fd_limit();

    let workers: usize = kv.get("workers").map_or(Ok(n), |w| w.parse())?;
    // Channels opened ahead (the library's default) can be turned off with
    // FANOUT_CHANNELS_AHEAD=0, to see what they save.
    let ahead = std::env::var("FANOUT_CHANNELS_AHEAD").map_or(true, |v| v != "0");
    let mut builder = Parallel::builder().workers(workers).channels_ahead(ahead);
    if let Some(t) = kv.get("io_threads") {
        builder = builder.io_threads(t.parse()?);
    }
    let mut pssh = builder.build()?;
    // The peers wait for a server as long as it takes (parallel-ssh: no timeout; pssh
    // -t 0); so do we, rather than give up on a server that 10,000 logins keep busy.
    let login_timeout = Duration::from_secs(kv.get("login_timeout").map_or(Ok(600), |s| s.parse())?);
    let host = |port: u16| {
        Host::new("127.0.0.1")
            .port(port)
            .user(user)
            .key_file(key)
            .agent(false)
            .host_key_check(HostKeyCheck::Off)
            .connect_timeout(login_timeout)
            .auth_timeout(login_timeout)
    };
    // `jump_port=`: every label goes through a bastion on 127.0.0.1 (same user and key),
    // the same hop for all, so the library shares one session to it (see `jump.rs`).
    let jump: Option<u16> = kv.get("jump_port").map(|p| p.parse()).transpose()?;
    for i in 1..=n {
        let mut h = host(port);
        if let Some(j) = jump {
            h = h.jump(host(j));
        }
        pssh.add_host(format!("h{i}"), h)?;
    }
    match kind {
        "run" => {
            let cmd = get("cmd")?;
            let steps: usize = kv.get("steps").map_or(Ok(1), |s| s.parse())?;
            let joins = kv.get("joins").is_none_or(|j| *j != "0");
            for _ in 0..steps {
                pssh.push("*", Command::new(cmd))?;
                if joins && steps > 1 {
                    pssh.push("*", Join::new("*"))?;
                }
            }
        }
        "put" => {
            pssh.push("*", ScpPut::new(get("local")?, get("remote")?).protocol(protocol))?;
        }
        "get" => {
            pssh.push("*", ScpGet::new(get("remote")?, get("local")?).protocol(protocol))?;
        }
        "rsync" => {
            pssh.push("*", RsyncPut::new(get("local")?, get("remote")?))?;
        }
        other => return Err(format!("unknown kind {other}").into()),
    }
    let report = pssh.run();
    let mut captured = 0usize;
    for label in report.labels() {
        for task in label.tasks() {
            captured += task.stdout().map_or(0, |s| s.len());
        }
    }
    eprintln!("captured {captured} bytes, {:.3} s", report.duration().as_secs_f64());
    if !report.success() {
        let errors = report.errors();
        let first = errors.first().map(|(l, e)| format!("{l}: {e}")).unwrap_or_default();
        return Err(format!("{} labels failed, e.g. {first}", errors.len()).into());
    }
    Ok(())
}
