//! A bag of jobs shared by a small cluster (Pegasus' queue and daemon modes, in the
//! library): three embedded SSH servers stand in for GPU machines, each free machine
//! takes the next job, and the queue stays open while the run goes on.
//!
//! 1. twelve training jobs are queued before the run; `Drain` makes every `gpu*` label
//!    take jobs from the queue as soon as it is free;
//! 2. a thread plays the user adding more work while the run goes on (daemon mode: the
//!    drainers wait, without CPU or worker slots, until the queue is closed);
//! 3. one job fails on gpu1 only; under a retry policy it goes back to the queue and
//!    runs on another machine;
//! 4. `report` joins the gpu labels (it waits for every job they took), then collects.
//!
//! `cargo run --example job_queue`. It exits with an error if any job was lost, ran
//! twice or failed for good.

use std::error::Error;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use ssh_parallel::{Command, Drain, Host, HostKeyCheck, JobQueue, Join, OnError, Parallel};
use testbed::EmbeddedServer;

const GPUS: [&str; 3] = ["gpu1", "gpu2", "gpu3"];

fn main() -> Result<(), Box<dyn Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();

    let password = format!("{:016x}", std::hash::RandomState::new().build_hasher().finish());
    let servers = GPUS
        .iter()
        .map(|_| EmbeddedServer::builder().password("train", &password).start())
        .collect::<Result<Vec<_>, _>>()?;
    let work = tempfile::tempdir()?;
    let w = work.path().display().to_string();

    let mut pssh = Parallel::builder().workers(3).build()?;
    for (label, server) in GPUS.iter().zip(&servers) {
        let host = Host::new("127.0.0.1")
            .port(server.port())
            .user("train")
            .password(&password)
            // Throwaway host keys: against real machines keep the default, `Strict`.
            .host_key_check(HostKeyCheck::Off);
        pssh.add_host(*label, host)?;
    }
    pssh.add_host("report", Host::local())?;

    // 1. The queue and its first jobs. %LABEL% is expanded for the label that takes a job.
    let jobs = JobQueue::new();
    // 3. First, a job that gpu1 cannot run. gpu1 (the first label) takes it and fails;
    //    retried, it goes back to the front of the queue for the next free label.
    jobs.push(
        Command::new(format!(
            "test %LABEL% != gpu1 && echo 'big model on %LABEL%' > {w}/big.out"
        ))
        .on_error(OnError::retry(5).delay(Duration::from_millis(300))),
    )?;
    for seed in 1..=12 {
        jobs.push(Command::new(format!(
            "sleep 0.1; echo 'seed {seed} trained on %LABEL%' > {w}/seed-{seed}.out"
        )))?;
    }
    pssh.push("gpu*", Drain::new(&jobs))?;
    // 4. After the drains: every job taken has finished.
    pssh.push("report", Join::new("gpu*"))?;
    pssh.push("report", Command::new(format!("cat {w}/*.out | sort")))?;

    // 2. More work arrives while the run goes on; then the queue is closed.
    let feeder = {
        let (jobs, w) = (jobs.clone(), w.clone());
        std::thread::spawn(move || -> ssh_parallel::Result<()> {
            for seed in 13..=18 {
                std::thread::sleep(Duration::from_millis(150));
                jobs.push(Command::new(format!(
                    "echo 'seed {seed} (late) trained on %LABEL%' > {w}/seed-{seed}.out"
                )))?;
            }
            jobs.close();
            Ok(())
        })
    };
    let report = pssh.run();
    feeder.join().map_err(|_| "the feeder thread panicked")??;

    println!("Results, collected after the join:");
    if let Some(t) = report.label("report").and_then(|l| l.tasks().last()) {
        print!("{}", t.stdout_str());
    }
    println!("\nWho ran what:");
    for j in report.jobs() {
        let r = j.report();
        println!(
            "  {} on {:5} {:?} (attempts {}): {}",
            j.id(),
            j.label().unwrap_or("-"),
            r.status(),
            r.attempts(),
            r.description().replace(&w, "$WORK")
        );
    }
    println!("\n{report}");

    let all = report.jobs();
    if all.len() != 19 || !report.success() || all.iter().any(|j| !j.report().status().is_success()) {
        return Err(format!("expected 19 jobs, each run once and succeeded; got {}", all.len()).into());
    }
    let big = all
        .iter()
        .find(|j| j.report().description().contains("big model"))
        .ok_or("no big job")?;
    if big.label() == Some("gpu1") {
        return Err("the big model job should have moved off gpu1".into());
    }
    println!(
        "job_queue: done, 19 jobs ran once each; the big model ran on {}",
        big.label().unwrap_or("-")
    );
    Ok(())
}
