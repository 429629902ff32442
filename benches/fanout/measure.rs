//! Whole-process measurements of one client run: wall time, the CPU of the client and of
//! every descendant it waited for (`wait4`'s rusage), the largest process's peak RSS
//! (`ru_maxrss`), and, sampled every 100 ms from `/proc`, the RSS summed over the client's
//! live process tree, its thread count and its process count. The server's CPU for the
//! same run is measured around it (see [`ServerProbe`]).

use std::fs;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one run cost.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// Wall time from spawn to reap, seconds.
    pub wall: f64,
    /// User + system CPU of the client and its reaped descendants, seconds.
    pub cpu: f64,
    /// `ru_maxrss` of the largest process (client or a reaped descendant), KiB.
    pub maxrss_kb: u64,
    /// Largest sampled sum of VmRSS over the client's live process tree, KiB.
    pub tree_rss_kb: u64,
    /// Most threads seen in the client process itself.
    pub threads: u64,
    /// Most processes seen in the client's tree (client included).
    pub procs: u64,
    /// Most connections the server had open at once (sampled), if known.
    pub server_open: u64,
    /// Server CPU for the run (user + system), seconds.
    pub server_cpu: f64,
    /// Exit status 0, not timed out, and the case's own check passed.
    pub ok: bool,
    /// Why not ok.
    pub error: String,
}

impl Run {
    /// Peak memory of the client: the larger of the sampled tree sum and the biggest
    /// single process (the sample can miss a short peak; ru_maxrss cannot).
    pub fn mem_kb(&self) -> u64 {
        self.tree_rss_kb.max(self.maxrss_kb)
    }
}

/// Where a run's server is, to measure its CPU and how many connections it holds.
pub enum ServerProbe<'a> {
    /// A real sshd: its listener's pid (the per-connection processes are its children,
    /// reaped by it, so their CPU shows up in the listener's cutime/cstime).
    Sshd(u32),
    /// The embedded server, running in this process: its CPU is this process's own CPU
    /// plus its reaped children's (the commands it ran), minus the client's.
    Embedded(&'a testbed::EmbeddedServer),
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime + cutime + cstime of `pid`, seconds.
fn proc_cpu_with_children(pid: u32) -> f64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return 0.0;
    };
    // Fields after the command: state(3) ppid(4) ... utime(14) stime(15) cutime(16) cstime(17).
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i - 3).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (get(14) + get(15) + get(16) + get(17)) / clock_ticks()
}

fn rusage(who: libc::c_int) -> f64 {
    // SAFETY: getrusage fills the struct we own.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut ru);
        tv(ru.ru_utime) + tv(ru.ru_stime)
    }
}

fn tv(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

impl ServerProbe<'_> {
    fn cpu_snapshot(&self) -> f64 {
        match self {
            ServerProbe::Sshd(pid) => proc_cpu_with_children(*pid),
            ServerProbe::Embedded(_) => rusage(libc::RUSAGE_SELF) + rusage(libc::RUSAGE_CHILDREN),
        }
    }

    fn open_connections(&self) -> u64 {
        match self {
            ServerProbe::Sshd(pid) => children(*pid as i32).len() as u64,
            ServerProbe::Embedded(s) => s.stats().active_connections,
        }
    }

    /// Waits (at most `limit`) until the server holds no connection from the last run.
    pub fn quiesce(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.open_connections() == 0 {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Direct children of `pid` (every thread's), from `/proc/PID/task/TID/children`.
pub fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        if let Ok(text) = fs::read_to_string(task.path().join("children")) {
            out.extend(text.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
        }
    }
    out
}

struct Sample {
    rss_kb: u64,
    threads: u64,
    procs: u64,
}

fn sample_tree(root: i32) -> Sample {
    let page_kb = 4;
    let mut s = Sample {
        rss_kb: 0,
        threads: 0,
        procs: 0,
    };
    let mut stack = vec![root];
    let mut guard = 0;
    while let Some(pid) = stack.pop() {
        guard += 1;
        if guard > 100_000 {
            break;
        }
        if let Ok(statm) = fs::read_to_string(format!("/proc/{pid}/statm")) {
            if let Some(rss) = statm.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()) {
                s.rss_kb += rss * page_kb;
                s.procs += 1;
            }
        }
        if pid == root {
            s.threads = fs::read_dir(format!("/proc/{pid}/task"))
                .map(|d| d.count() as u64)
                .unwrap_or(0);
        }
        stack.extend(children(pid));
    }
    s
}

/// Spawns `cmd` in its own process group, samples it until it exits, reaps it with
/// `wait4` and returns the measurements. After `timeout` the whole group gets SIGKILL.
/// `server`'s CPU is measured from just before the spawn until it holds no connection
/// of this run any more.
pub fn run(cmd: &mut Command, timeout: Duration, server: &ServerProbe<'_>) -> Run {
    cmd.process_group(0);
    let server_before = server.cpu_snapshot();
    let start = Instant::now();
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Run {
                error: format!("cannot start: {e}"),
                ..Run::default()
            }
        }
    };
    let pid = child.id() as i32;
    let done = Arc::new(AtomicBool::new(false));
    let timed_out = Arc::new(AtomicBool::new(false));
    let mut peak = Sample {
        rss_kb: 0,
        threads: 0,
        procs: 0,
    };
    let mut open_peak = 0u64;
    let (status, ru) = std::thread::scope(|scope| {
        let done2 = done.clone();
        let timed_out2 = timed_out.clone();
        let sampler = scope.spawn(move || {
            let mut peak = Sample {
                rss_kb: 0,
                threads: 0,
                procs: 0,
            };
            let mut open_peak = 0u64;
            while !done2.load(Ordering::Acquire) {
                let s = sample_tree(pid);
                peak.rss_kb = peak.rss_kb.max(s.rss_kb);
                peak.threads = peak.threads.max(s.threads);
                peak.procs = peak.procs.max(s.procs);
                open_peak = open_peak.max(server.open_connections());
                if start.elapsed() > timeout && !timed_out2.swap(true, Ordering::AcqRel) {
                    // SAFETY: signalling the process group of a child we have not reaped yet.
                    unsafe {
                        libc::kill(-pid, libc::SIGKILL);
                    }
                }
                // Sleep 100 ms in small steps so that a finished run is not held up.
                for _ in 0..10 {
                    if done2.load(Ordering::Acquire) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            (peak, open_peak)
        });
        let mut status = 0;
        // SAFETY: waiting for our own child; rusage is a plain struct we own.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
            if r == pid || (r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR)) {
                break;
            }
        }
        done.store(true, Ordering::Release);
        let (p, o) = sampler.join().unwrap_or((
            Sample {
                rss_kb: 0,
                threads: 0,
                procs: 0,
            },
            0,
        ));
        peak = p;
        open_peak = o;
        (status, ru)
    });
    let wall = start.elapsed().as_secs_f64();
    // The child was reaped by wait4; forget the std handle without waiting again.
    drop(child);
    // Leftovers of the group (a tool's background helpers) must not leak into the next run.
    // SAFETY: signalling the process group we created for this run.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
    let quiet = server.quiesce(Duration::from_secs(20));
    let cpu = tv(ru.ru_utime) + tv(ru.ru_stime);
    let mut server_cpu = server.cpu_snapshot() - server_before;
    if matches!(server, ServerProbe::Embedded(_)) {
        server_cpu -= cpu;
    }
    let exited_ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    let mut error = String::new();
    if timed_out.load(Ordering::Acquire) {
        error = format!("timed out after {} s", timeout.as_secs());
    } else if !exited_ok {
        error = if libc::WIFEXITED(status) {
            format!("exit status {}", libc::WEXITSTATUS(status))
        } else {
            format!("killed by signal {}", libc::WTERMSIG(status))
        };
    }
    if !quiet && error.is_empty() {
        error = "server still held connections 20 s after the client exited".into();
    }
    Run {
        wall,
        cpu,
        maxrss_kb: ru.ru_maxrss.max(0) as u64,
        tree_rss_kb: peak.rss_kb,
        threads: peak.threads,
        procs: peak.procs,
        server_open: open_peak,
        server_cpu: server_cpu.max(0.0),
        ok: error.is_empty(),
        error,
    }
}

/// Median of the values (upper median for an even count); NaN when empty.
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}
