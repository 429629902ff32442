//! A real pipeline on four local labels: copy a file to every label, run
//! commands with per-label output files, fail one label under a policy, jump
//! with or_goto and goto, synchronise with joins, and gather the results.
//!
//! `cargo run --example quickstart` (set `RUST_LOG=ssh_parallel=debug` to watch
//! the scheduler).

use std::error::Error;
use std::fs;

use ssh_parallel::{Command, Goto, Here, Host, Join, OnError, Output, Parallel, ScpPut, Sub, TaskStatus};

fn main() -> Result<(), Box<dyn Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();

    let dir = std::env::temp_dir().join(format!("ssh-parallel-quickstart-{}", std::process::id()));
    fs::create_dir_all(dir.join("logs"))?;
    fs::write(dir.join("app.conf"), "greeting = hello\n")?;
    let d = dir.display();

    let mut pssh = Parallel::builder().workers(3).on_error(OnError::Abort).build()?;
    for label in ["web1", "web2", "web3", "db1"] {
        // Each label gets its own "machine root" under the work directory.
        pssh.add_host(label, Host::local().var("ROOT", format!("{d}/hosts/%LABEL%")))?;
    }

    // 1. Every label: a root directory, then the config copied into it.
    pssh.all(Command::new(format!("mkdir -p {d}/hosts/%LABEL%")))?;
    pssh.all(ScpPut::new(
        format!("{d}/app.conf"),
        format!("{d}/hosts/%LABEL%/app.conf"),
    ))?;

    // 2. The web tier serves; each label logs to its own file.
    pssh.push(
        "web*",
        Command::new(format!(
            "echo \"%LABEL% up with $(cat {d}/hosts/%LABEL%/app.conf)\"; seq 1 3"
        ))
        .stdout(Output::file(format!("{d}/logs/%LABEL%.log"))),
    )?;

    // 3. A health check that fails on web2 only: or_goto skips its warm-up.
    pssh.push("web*", Command::new("test %LABEL% != web2").or_goto("skip-warmup"))?;
    pssh.push("web*", Command::new(format!("echo warmed >> {d}/logs/%LABEL%.log")))?;
    pssh.push("web*", Here::new("skip-warmup"))?;

    // 4. web3 hits a hard failure; Done stops web3 alone and lets joins go on.
    pssh.push(
        "web3",
        Command::new("echo 'disk full' >&2; exit 7").on_error(OnError::Done),
    )?;
    pssh.push("web*", Command::new(format!("echo finished >> {d}/logs/%LABEL%.log")))?;

    // 5. db1 waits for the whole web tier, then gathers what it wrote.
    pssh.push("db1", Join::new("web*"))?;
    pssh.push("db1", Command::new(format!("cat {d}/logs/*.log | wc -l")))?;
    pssh.push(
        "db1",
        Sub::new(|ctx| {
            let lines = ctx.last_result().map(|r| r.stdout_str()).unwrap_or_default();
            println!("db1 gathered {} log lines from the web tier", lines.trim());
            Ok(())
        }),
    )?;

    // 6. A maintenance step nobody needs today: goto jumps over it.
    pssh.all(Goto::new("done"))?;
    pssh.all(Command::new("echo this never runs; exit 1"))?;
    pssh.all(Here::new("done"))?;

    pssh.validate()?;
    let report = pssh.run();

    println!("\nPer-label summary:\n{report}\n");
    for label in report.labels() {
        let log = dir.join("logs").join(format!("{}.log", label.label()));
        if let Ok(text) = fs::read_to_string(&log) {
            println!("{} log: {}", label.label(), text.trim().replace('\n', " | "));
        }
        for t in label.tasks().iter().filter(|t| t.status() != TaskStatus::Succeeded) {
            let why = t.error().map(|e| e.detail().to_owned()).unwrap_or_default();
            println!(
                "  {} task #{} {:?}: {} {}",
                label.label(),
                t.seq(),
                t.status(),
                t.description(),
                why
            );
        }
    }
    for (label, error) in pssh.get_errors() {
        println!(
            "error on {label}: {error} (kind: {}, exit code {:?})",
            error.kind(),
            error.exit_code()
        );
    }

    fs::remove_dir_all(&dir)?;
    // web3 is expected to fail under its Done policy; anything else is a bug.
    let unexpected: Vec<_> = pssh.get_errors().into_iter().filter(|(l, _)| *l != "web3").collect();
    if !unexpected.is_empty() {
        return Err(format!("unexpected failures: {unexpected:?}").into());
    }
    Ok(())
}
