//! An `OnError::callback` policy that decides per failure, from the label, the error and
//! the attempt number:
//!
//! * `flaky` exits with 75 (EX_TEMPFAIL, "try again later") twice: retried until it works;
//! * `optional` runs a nice-to-have check that fails: ignored (kept in the report);
//! * `critical` fails for real: `AbortAll` stops every other label at its next task
//!   boundary (`web1` and `web2` are in the middle of a long rollout).
//!
//! One in-process SSH server on 127.0.0.1 serves all five labels.
//!
//! `cargo run --example error_callback`

use std::error::Error;
use std::hash::{BuildHasher, Hasher};

use ssh_parallel::{Command, ErrorKind, Host, HostKeyCheck, Join, OnError, Parallel, TaskStatus};
use testbed::EmbeddedServer;

fn main() -> Result<(), Box<dyn Error>> {
    let password = format!("{:016x}", std::hash::RandomState::new().build_hasher().finish());
    let server = EmbeddedServer::builder().password("ops", &password).start()?;

    // The policy for every task (set on the builder; a task or host could override it).
    let policy = OnError::callback(|ctx| {
        let decision = if ctx.error().exit_code() == Some(75) && ctx.attempt() < 5 {
            // A temporary failure: worth another go (a few times only).
            OnError::Retry
        } else if ctx.label() == "optional" {
            // Nice to have: record the failure and carry on with the label's next task.
            OnError::Ignore
        } else if ctx.label() == "critical" {
            // Nothing else makes sense without this one: stop everything.
            OnError::AbortAll
        } else {
            OnError::Abort
        };
        println!(
            "policy: {} attempt {} failed ({}) -> {decision:?}",
            ctx.label(),
            ctx.attempt(),
            ctx.error().detail()
        );
        decision
    });
    let mut pssh = Parallel::builder().on_error(policy).build()?;
    for label in ["flaky", "optional", "critical", "web1", "web2"] {
        let host = Host::new("127.0.0.1")
            .port(server.port())
            .user("ops")
            .password(&password)
            // A throwaway server key; keep the default `Strict` for real hosts.
            .host_key_check(HostKeyCheck::Off);
        pssh.add_host(label, host)?;
    }

    let work = tempfile::tempdir()?;
    let counter = work.path().join("flaky-count");
    let counter = counter.display();
    // Fails with 75 on its first two runs, then succeeds (the count lives on the "remote").
    pssh.push(
        "flaky",
        Command::new(format!(
            "n=$(( $(cat {counter} 2>/dev/null || echo 0) + 1 )); echo $n > {counter}; \
             [ $n -ge 3 ] || {{ echo \"busy, try later ($n)\" >&2; exit 75; }}; echo \"synced on try $n\""
        )),
    )?;
    pssh.push("optional", Command::new("echo 'no cache to warm' >&2; exit 3"))?;
    pssh.push("optional", Command::new("echo optional carried on"))?;
    // critical starts once the other two are through, so that their outcomes show first.
    pssh.push("critical", Join::new("flaky, optional"))?;
    pssh.push("critical", Command::new("echo 'schema check failed' >&2; exit 1"))?;
    // A slow rollout, one step at a time: AbortAll cuts it at the next step.
    for step in 1..=10 {
        pssh.push("web*", Command::new(format!("sleep 0.2; echo step {step}")))?;
    }

    let report = pssh.run();
    println!("\n{report}\n");

    // What each label went through, and a check that it is what the policy promised.
    let flaky = report.label("flaky").ok_or("no flaky")?;
    let optional = report.label("optional").ok_or("no optional")?;
    let web1 = report.label("web1").ok_or("no web1")?;
    println!(
        "flaky: {} after {} attempts",
        flaky.tasks()[0].stdout_str().trim(),
        flaky.tasks()[0].attempts()
    );
    println!(
        "optional: {} ignored failure, then: {}",
        optional.with_status(TaskStatus::Ignored).count(),
        optional.tasks()[1].stdout_str().trim()
    );
    println!(
        "web1: {} of 10 rollout steps done before the abort",
        web1.with_status(TaskStatus::Succeeded).count()
    );
    let expected = flaky.success()
        && flaky.tasks()[0].attempts() == 3
        && optional.success()
        && pssh.get_error("critical")?.map(|e| e.kind()) == Some(ErrorKind::Command)
        && pssh.get_error("web1")?.map(|e| e.kind()) == Some(ErrorKind::Aborted)
        && pssh.get_error("web2")?.map(|e| e.kind()) == Some(ErrorKind::Aborted);
    if !expected {
        return Err("the policy did not do what it promised".into());
    }
    println!("every label ended as the policy decided");
    Ok(())
}
