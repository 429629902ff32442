//! Whole-process measurements of one client run: wall time, the CPU of the client and of
//! every descendant it waited for (`wait4`'s rusage), the largest process's peak RSS
//! (`ru_maxrss`), and, sampled every 100 ms from `/proc`, the RSS summed over the client's
//! live process tree, its thread count and its process count. The server's CPU for the
//! same run is measured around it (see [`ServerProbe`]).
//!
//! Invariant: clients are spawned by the [`Launcher`] (a small process started before the
//! bench grows), so that a run's costs are the client's own and not a fork of this process.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// Logins the jump host (bastion) logged during the run; `None` without a jump host.
    pub hop_logins: Option<u64>,
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
    /// plus its reaped children's (the commands it ran).
    Embedded(&'a testbed::EmbeddedServer),
    /// A target sshd behind a bastion sshd (see `jump.rs`): the CPU is both servers', the
    /// open connections the target's, and the logins are counted in the bastion's log.
    Jump {
        /// The target sshd's listener pid.
        target: u32,
        /// The bastion sshd's listener pid.
        bastion: u32,
        /// The bastion's log (`LogLevel DEBUG1`), where each login is an `Accepted publickey` line.
        bastion_log: &'a Path,
    },
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
            // The clients are the launcher's children, not ours: RUSAGE_CHILDREN here is
            // only what the embedded server ran.
            ServerProbe::Embedded(_) => rusage(libc::RUSAGE_SELF) + rusage(libc::RUSAGE_CHILDREN),
            ServerProbe::Jump { target, bastion, .. } => {
                proc_cpu_with_children(*target) + proc_cpu_with_children(*bastion)
            }
        }
    }

    /// Logins the bastion has logged so far (`None` without one).
    fn hop_logins(&self) -> Option<u64> {
        match self {
            ServerProbe::Jump { bastion_log, .. } => Some(
                fs::read_to_string(bastion_log)
                    .unwrap_or_default()
                    .matches("Accepted publickey")
                    .count() as u64,
            ),
            _ => None,
        }
    }

    /// Connections still open on every server of the run (the bastion's too).
    fn held_connections(&self) -> u64 {
        match self {
            ServerProbe::Jump { bastion, .. } => self.open_connections() + children(*bastion as i32).len() as u64,
            _ => self.open_connections(),
        }
    }

    fn open_connections(&self) -> u64 {
        match self {
            ServerProbe::Sshd(pid) => children(*pid as i32).len() as u64,
            ServerProbe::Embedded(s) => s.stats().active_connections,
            ServerProbe::Jump { target, .. } => children(*target as i32).len() as u64,
        }
    }

    /// Waits (at most `limit`) until the server holds no connection from the last run.
    pub fn quiesce(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.held_connections() == 0 {
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

/// Runs the clients for the harness. Linux keeps the parent's peak RSS in a child's
/// `ru_maxrss` across `exec` (the exec'ing copy of the parent counts), so a client
/// started directly by the harness (hundreds of MB once the embedded server has held
/// 10,000 connections) would report the harness's size. The launcher is this executable
/// re-invoked at the start, while small, and only spawns and reaps clients: what it leaks
/// into a client's figure is its own couple of MB.
pub struct Launcher {
    /// The launcher process.
    child: std::process::Child,
    /// Its stdin: one request (a client's command line) per line, see [`launcher_main`].
    to: std::process::ChildStdin,
    /// Its stdout: `PID n`, then `DONE ...` (the [`Reaped`] figures) per request.
    from: std::io::BufReader<std::process::ChildStdout>,
}

/// What the launcher reports about one finished client.
struct Reaped {
    /// The raw `wait4` status (`WIFEXITED` and friends decode it).
    status: i32,
    /// Spawn to reap, seconds.
    wall: f64,
    /// User + system CPU from `wait4`, seconds.
    cpu: f64,
    /// `ru_maxrss` from `wait4`, KiB.
    maxrss_kb: u64,
}

impl Launcher {
    pub fn start() -> std::io::Result<Launcher> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("__launcher")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let to = child.stdin.take().expect("piped");
        let from = std::io::BufReader::new(child.stdout.take().expect("piped"));
        Ok(Launcher { child, to, from })
    }

    fn send(&mut self, cmd: &Command, stderr: &Path, netns: Option<&Path>) -> std::io::Result<i32> {
        use std::io::{BufRead, Write};
        let mut fields: Vec<String> = vec![
            stderr.display().to_string(),
            netns.map(|p| p.display().to_string()).unwrap_or_default(),
            cmd.get_program().to_string_lossy().into_owned(),
        ];
        let envs: Vec<String> = cmd
            .get_envs()
            .map(|(k, v)| match v {
                Some(v) => format!("{}={}", k.to_string_lossy(), v.to_string_lossy()),
                None => format!("{}", k.to_string_lossy()),
            })
            .collect();
        fields.push(envs.len().to_string());
        fields.extend(envs);
        fields.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
        let mut line = fields.join("\u{1}");
        line.push('\n');
        self.to.write_all(line.as_bytes())?;
        self.to.flush()?;
        let mut reply = String::new();
        self.from.read_line(&mut reply)?;
        let pid: i32 = reply
            .trim()
            .strip_prefix("PID ")
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("launcher: {}", reply.trim())))?;
        Ok(pid)
    }

    fn reaped(&mut self) -> std::io::Result<Reaped> {
        use std::io::BufRead;
        let mut reply = String::new();
        self.from.read_line(&mut reply)?;
        let f: Vec<&str> = reply.split_whitespace().collect();
        if f.len() != 5 || f[0] != "DONE" {
            return Err(std::io::Error::other(format!("launcher: {}", reply.trim())));
        }
        let num = |i: usize| f[i].parse::<f64>().unwrap_or(0.0);
        Ok(Reaped {
            status: num(1) as i32,
            wall: num(2),
            cpu: num(3),
            maxrss_kb: num(4) as u64,
        })
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        // Closing its stdin ends it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The launcher's side (`fanout __launcher`): one request per line, fields separated by
/// U+0001: stderr path, netns path (may be empty), program, env count, `K=V` or `K` (to
/// remove), args. Answers `PID n`, then `DONE status wall cpu maxrss_kb`.
pub fn launcher_main() -> i32 {
    use std::io::{BufRead, Write};
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let f: Vec<&str> = line.split('\u{1}').collect();
        if f.len() < 4 {
            let _ = writeln!(out, "ERR short request");
            continue;
        }
        let nenv: usize = f[3].parse().unwrap_or(0);
        let mut cmd = Command::new(f[2]);
        for e in &f[4..4 + nenv] {
            match e.split_once('=') {
                Some((k, v)) => cmd.env(k, v),
                None => cmd.env_remove(e),
            };
        }
        cmd.args(&f[4 + nenv..]);
        cmd.process_group(0)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        if let Ok(file) = fs::File::create(f[0]) {
            cmd.stderr(file);
        }
        let netns = if f[1].is_empty() {
            None
        } else {
            match fs::File::open(f[1]) {
                Ok(file) => Some(file),
                Err(e) => {
                    let _ = writeln!(out, "ERR netns {}: {e}", f[1]);
                    let _ = out.flush();
                    continue;
                }
            }
        };
        if let Some(ns) = &netns {
            use std::os::fd::AsRawFd;
            let fd = ns.as_raw_fd();
            // SAFETY: setns is async-signal-safe; it only moves the new child.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let start = Instant::now();
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let _ = writeln!(out, "ERR cannot start {}: {e}", f[2]);
                let _ = out.flush();
                continue;
            }
        };
        drop(netns);
        let pid = child.id() as i32;
        let _ = writeln!(out, "PID {pid}");
        let _ = out.flush();
        let mut status = 0;
        // SAFETY: waiting for our own child into structs we own.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
            if r == pid || (r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR)) {
                break;
            }
        }
        let wall = start.elapsed().as_secs_f64();
        drop(child);
        let _ = writeln!(
            out,
            "DONE {status} {wall:.6} {:.6} {}",
            tv(ru.ru_utime) + tv(ru.ru_stime),
            ru.ru_maxrss.max(0)
        );
        let _ = out.flush();
    }
    0
}

/// Has the launcher start `cmd` (in its own process group; stdout to /dev/null, stderr to
/// `stderr`; in the network namespace at `netns` if given), samples it until it exits and
/// returns the measurements. After `timeout` the whole group gets SIGKILL. `server`'s CPU
/// is measured from just before the spawn until it holds no connection of this run.
pub fn run(
    launcher: &mut Launcher,
    cmd: &Command,
    stderr: &Path,
    netns: Option<&Path>,
    timeout: Duration,
    server: &ServerProbe<'_>,
) -> Run {
    let server_before = server.cpu_snapshot();
    let logins_before = server.hop_logins();
    let start = Instant::now();
    let pid = match launcher.send(cmd, stderr, netns) {
        Ok(p) => p,
        Err(e) => {
            return Run {
                error: format!("cannot start: {e}"),
                ..Run::default()
            }
        }
    };
    let done = AtomicBool::new(false);
    let timed_out = AtomicBool::new(false);
    let (reaped, peak, open_peak) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut peak = Sample {
                rss_kb: 0,
                threads: 0,
                procs: 0,
            };
            let mut open_peak = 0u64;
            while !done.load(Ordering::Acquire) {
                let s = sample_tree(pid);
                peak.rss_kb = peak.rss_kb.max(s.rss_kb);
                peak.threads = peak.threads.max(s.threads);
                peak.procs = peak.procs.max(s.procs);
                open_peak = open_peak.max(server.open_connections());
                if start.elapsed() > timeout && !timed_out.swap(true, Ordering::AcqRel) {
                    // SAFETY: signalling the process group of a client still running.
                    unsafe {
                        libc::kill(-pid, libc::SIGKILL);
                    }
                }
                // Big trees cost more to walk: sample them less often.
                let steps = if s.procs > 50 { 25 } else { 10 };
                for _ in 0..steps {
                    if done.load(Ordering::Acquire) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            (peak, open_peak)
        });
        let reaped = launcher.reaped();
        done.store(true, Ordering::Release);
        let (p, o) = sampler.join().unwrap_or((
            Sample {
                rss_kb: 0,
                threads: 0,
                procs: 0,
            },
            0,
        ));
        (reaped, p, o)
    });
    // Leftovers of the group (a tool's background helpers) must not leak into the next run.
    // SAFETY: signalling the process group made for this run.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
    let quiet = server.quiesce(Duration::from_secs(20));
    let reaped = match reaped {
        Ok(r) => r,
        Err(e) => {
            return Run {
                error: e.to_string(),
                ..Run::default()
            }
        }
    };
    // For the embedded server this includes the sampling done here (small).
    let server_cpu = (server.cpu_snapshot() - server_before).max(0.0);
    // After `quiesce`: every per-connection sshd of the run has written its lines.
    let hop_logins = server
        .hop_logins()
        .zip(logins_before)
        .map(|(after, before)| after.saturating_sub(before));
    let status = reaped.status;
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
        wall: reaped.wall,
        cpu: reaped.cpu,
        maxrss_kb: reaped.maxrss_kb,
        tree_rss_kb: peak.rss_kb,
        threads: peak.threads,
        procs: peak.procs,
        server_open: open_peak,
        server_cpu,
        hop_logins,
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
