//! A multi-stage pipeline kept in step with joins: build -> test -> deploy -> notify.
//!
//! Each tier is a set of labels with its own queue; a `Join` makes a tier wait for
//! everything queued on the previous tier *so far*, so the stages never overlap even though
//! every label runs in parallel with its peers. Every step appends a line to a shared log,
//! which is checked at the end.
//!
//! Two in-process SSH servers on 127.0.0.1 (the "CI" and the "production" side), with a
//! throwaway key pair.
//!
//! `cargo run --example pipeline_joins`

use std::error::Error;
use std::fs;

use ssh_parallel::{Command, Host, HostKeyCheck, Join, Parallel, Sub};
use testbed::{ClientKey, EmbeddedServer};

fn main() -> Result<(), Box<dyn Error>> {
    // Key authentication this time: a fresh ed25519 key made in-process (no ssh-keygen
    // needed), authorized on both servers.
    let key = ClientKey::ed25519_in_process()?;
    let ci = EmbeddedServer::builder()
        .authorized_key("ci", key.public_line())
        .start()?;
    let prod = EmbeddedServer::builder()
        .authorized_key("ci", key.public_line())
        .start()?;
    let host = |server: &EmbeddedServer| {
        Host::new("127.0.0.1")
            .port(server.port())
            .user("ci")
            .key_file(key.private_path())
            // Throwaway host keys: nothing to check them against. Keep `Strict` for real hosts.
            .host_key_check(HostKeyCheck::Off)
    };

    let mut pssh = Parallel::new();
    for label in ["build-amd64", "build-arm64", "test-unit", "test-e2e"] {
        pssh.add_host(label, host(&ci))?;
    }
    for label in ["web1", "web2", "web3", "notify"] {
        pssh.add_host(label, host(&prod))?;
    }

    let work = tempfile::tempdir()?;
    let log = work.path().join("pipeline.log");
    let log = log.display();
    // Each step takes a different time, so without the joins the log would be a jumble.
    let step = |stage: &str, secs: &str| Command::new(format!("sleep {secs}; echo \"{stage} %LABEL%\" >> {log}"));

    // Stage 1: both builds in parallel.
    pssh.push("build-amd64", step("build", "0.3"))?;
    pssh.push("build-arm64", step("build", "0.1"))?;
    // Stage 2: the tests wait for both builds, then run in parallel.
    pssh.push("test-*", Join::new("build-*"))?;
    pssh.push("test-unit", step("test", "0.05"))?;
    pssh.push("test-e2e", step("test", "0.25"))?;
    // Stage 3: deploy only once every test passed. A failed test would fail this join
    // (the default policy is Abort) and the web tier would not deploy.
    pssh.push("web*", Join::new("test-*"))?;
    pssh.push("web*", step("deploy", "0.1"))?;
    // Stage 4: notify after everything queued so far, on every label (itself included:
    // a label joining itself does not deadlock).
    pssh.push("notify", Join::new("*"))?;
    pssh.push("notify", step("notify", "0"))?;
    let log_path = work.path().join("pipeline.log");
    pssh.push(
        "notify",
        Sub::new(move |_ctx| {
            let text = fs::read_to_string(&log_path)?;
            let stages: Vec<&str> = text.lines().filter_map(|l| l.split(' ').next()).collect();
            println!("pipeline log:\n{text}");
            // The joins promise that every stage's lines come after all of the previous one's.
            let order = ["build", "test", "deploy", "notify"];
            let rank = |s: &str| order.iter().position(|o| *o == s);
            if stages.windows(2).all(|w| rank(w[0]) <= rank(w[1])) && stages.len() == 8 {
                println!("stage order verified: build < test < deploy < notify");
                Ok(())
            } else {
                Err(format!("stages out of order: {stages:?}").into())
            }
        }),
    )?;

    let report = pssh.run();
    println!("{report}");
    if !report.success() {
        return Err("the pipeline failed".into());
    }
    Ok(())
}
