//! `cargo bench --bench job_queue`: what a shared job queue costs.
//!
//! 1. **Idle daemon**: 50 labels drain an open, empty `JobQueue` for 3 s
//!    (`JOB_QUEUE_IDLE_SECS`); the process's CPU time over that window
//!    (user + system, `getrusage`) is printed. Waiting drainers must cost
//!    nothing: no polling, no timer, no slot. The bench fails when the idle
//!    window costs more than 1% of one core, then checks the daemon still
//!    wakes: one job pushed runs, and `close` ends the run.
//! 2. **Throughput of the drain path**: 10,000 jobs (and 100,000, unless
//!    `-- --quick`) through 4 drainers, as `Sub` jobs (run on the scheduler
//!    itself: the queue, the splice, the report) and as `true` commands on
//!    the no-op fault-injection transport (adding the transport round trip);
//!    then 1,000 real local `true` commands (`sh -c`, one process each).
//!    Jobs per second, and every job checked reported once, succeeded.
//!
//! Every figure is one run, printed as `name: value`; the machine is shared,
//! so read them as orders of magnitude.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use ssh_parallel::fault::Fault;
use ssh_parallel::{Action, Command, Drain, Host, JobQueue, Parallel, Report, Sub, TaskStatus};

const DRAINERS_IDLE: usize = 50;
const DRAINERS_BUSY: usize = 4;

/// The process's CPU time so far (user + system, every thread).
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    assert_eq!(rc, 0, "getrusage failed");
    let tv = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn labels(n: usize, host: impl Fn() -> Host) -> Parallel {
    let mut pssh = Parallel::new();
    for i in 0..n {
        pssh.add_host(format!("w{i:03}"), host()).expect("add a label");
    }
    pssh
}

/// Checks that `n` jobs ran, once each, all succeeded.
fn check(report: &Report, n: usize) -> Result<(), String> {
    let jobs = report.jobs();
    if jobs.len() != n {
        return Err(format!("{} jobs reported, {n} pushed", jobs.len()));
    }
    if let Some(j) = jobs.iter().find(|j| j.report().status() != TaskStatus::Succeeded) {
        return Err(format!(
            "{} ended {:?}: {:?}",
            j.id(),
            j.report().status(),
            j.report().error()
        ));
    }
    Ok(())
}

fn idle_daemon(secs: u64) -> Result<(), String> {
    let mut pssh = labels(DRAINERS_IDLE, Host::local);
    let jobs = JobQueue::new();
    pssh.all(Drain::new(&jobs)).map_err(|e| e.to_string())?;
    let run = pssh.start();
    // Let the run settle: every label reaches its drain and waits.
    std::thread::sleep(Duration::from_millis(300));
    let (cpu0, t0) = (cpu_time(), Instant::now());
    std::thread::sleep(Duration::from_secs(secs));
    let (cpu, wall) = (cpu_time() - cpu0, t0.elapsed());
    let share = cpu.as_secs_f64() / wall.as_secs_f64() * 100.0;
    println!(
        "idle_daemon_cpu: {:.1} ms of CPU over {:.2} s with {DRAINERS_IDLE} drainers waiting ({share:.3}% of a core)",
        cpu.as_secs_f64() * 1e3,
        wall.as_secs_f64()
    );
    let id = jobs.push(Command::new("echo woke")).map_err(|e| e.to_string())?;
    let woke = Instant::now();
    jobs.close();
    let report = run.wait();
    println!(
        "idle_daemon_wake_and_close: {:.1} ms",
        woke.elapsed().as_secs_f64() * 1e3
    );
    let job = report
        .jobs()
        .into_iter()
        .find(|j| j.id() == id)
        .ok_or("the job pushed after the idle window is not reported")?;
    if job.report().stdout_str() != "woke\n" || !report.success() {
        return Err(format!("the daemon did not run its job after idling:\n{report}"));
    }
    if share > 1.0 {
        return Err(format!("idle drainers cost {share:.2}% of a core (over 1%)"));
    }
    Ok(())
}

fn throughput(name: &str, n: usize, host: impl Fn() -> Host, job: impl Fn(usize) -> Action) -> Result<(), String> {
    let mut pssh = labels(DRAINERS_BUSY, host);
    let jobs = JobQueue::new();
    for i in 0..n {
        jobs.push(job(i)).map_err(|e| e.to_string())?;
    }
    jobs.close();
    pssh.all(Drain::new(&jobs)).map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let report = pssh.run();
    let took = t0.elapsed();
    check(&report, n)?;
    println!(
        "{name}_{n}: {:.0} jobs/s ({n} jobs in {:.3} s, {DRAINERS_BUSY} drainers)",
        n as f64 / took.as_secs_f64(),
        took.as_secs_f64()
    );
    Ok(())
}

fn main() -> ExitCode {
    let quick = std::env::args().any(|a| a == "--quick");
    let idle_secs = std::env::var("JOB_QUEUE_IDLE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let sizes: &[usize] = if quick { &[10_000] } else { &[10_000, 100_000] };
    let mut result = idle_daemon(idle_secs);
    for &n in sizes {
        result = result
            .and_then(|()| throughput("sub_jobs", n, Host::local, |_| Sub::new(|_| Ok(())).into()))
            .and_then(|()| {
                throughput(
                    "noop_transport_jobs",
                    n,
                    || Host::fault(Fault::new()),
                    |_| Command::new("true").into(),
                )
            });
    }
    result = result.and_then(|()| throughput("local_true_jobs", 1_000, Host::local, |_| Command::new("true").into()));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("job_queue bench: {e}");
            ExitCode::FAILURE
        }
    }
}
