//! Fan-out: one command on many labels at once, every output line streamed to this
//! terminal as it arrives, prefixed with its label (`web07: ...`).
//!
//! Twelve labels share one in-process SSH server on 127.0.0.1 (several labels may point
//! at the same endpoint; each still gets its own connection).
//!
//! `cargo run --example fanout`

use std::error::Error;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use ssh_parallel::{Command, Host, HostKeyCheck, Output, Parallel};
use testbed::EmbeddedServer;

fn main() -> Result<(), Box<dyn Error>> {
    let password = format!("{:016x}", std::hash::RandomState::new().build_hasher().finish());
    let server = EmbeddedServer::builder().password("ops", &password).start()?;

    // At most 8 labels connect or run at once; the other 4 wait for a slot (FIFO).
    let mut pssh = Parallel::builder().workers(8).build()?;
    for i in 1..=12 {
        let host = Host::new("127.0.0.1")
            .port(server.port())
            .user("ops")
            .password(&password)
            // A throwaway server key that no known_hosts file knows; keep `Strict` for real hosts.
            .host_key_check(HostKeyCheck::Off);
        pssh.add_host(format!("web{i:02}"), host)?;
    }

    // `uptime` where it exists (it is not on every minimal system), then a few slow lines, so
    // the labels' outputs interleave on the terminal while they run. Output::inherit() writes
    // each complete line as `label: line`, one write per line, so lines never mix.
    pssh.push(
        "web*",
        Command::new(
            "uptime 2>/dev/null || echo \"up (load $(cut -d' ' -f1-3 /proc/loadavg))\"; \
             for step in 1 2 3; do sleep 0.1; echo \"step $step on %LABEL%\"; done",
        )
        .stdout(Output::inherit())
        .stderr(Output::inherit())
        .timeout(Duration::from_secs(20)),
    )?;

    let report = pssh.run();
    // Nothing was captured (it all went to the terminal): the report keeps the outcomes.
    println!("\n{report}");
    if !report.success() {
        return Err("some labels failed".into());
    }
    Ok(())
}
