//! The local transport: a dispatcher thread feeding a cached thread pool that
//! runs commands under `sh -c`, copies files for scp, and runs the local rsync.
//!
//! Invariant: every child runs in a process group of its own, so a cancel
//! (or a command's idle timeout) kills all it started; every `Run` is
//! answered once, by `Finished`.
//!
//! May use: the `transport` protocol and `parsub`, `task` (actions, output),
//! `process`.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use super::exit::Exit;
use super::protocol::{Event, Job, Outcome, Request, Token, TransportError};
use crate::task::output::{OutputKind, Sink, StdinKind, Stream};
use crate::task::{
    contents_only, into_dir, source_name, Action, Command, RsyncGet, RsyncPut, ScpGet, ScpPut, Transfer,
};

type Work = Box<dyn FnOnce() + Send>;

/// How long an idle pool thread waits for work before it exits.
const IDLE_THREAD_LIFETIME: Duration = Duration::from_secs(10);

/// A pool that grows to as many threads as there are running tasks and
/// shrinks when they idle: local tasks block (on processes, on closures), and
/// the scheduler's `workers` limit, not the pool, bounds their number.
struct Pool {
    tx: Sender<Work>,
    rx: Receiver<Work>,
    idle: Arc<AtomicUsize>,
}

impl Pool {
    fn new() -> Pool {
        let (tx, rx) = crossbeam_channel::unbounded();
        Pool {
            tx,
            rx,
            idle: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn execute(&self, work: Work) {
        // Reserve an idle thread, or start one: a job never queues behind a busy thread.
        let reserved = self
            .idle
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        if !reserved {
            let rx = self.rx.clone();
            let idle = self.idle.clone();
            let spawned = std::thread::Builder::new()
                .name("ssh-parallel-local".into())
                .spawn(move || worker(rx, idle));
            if let Err(e) = spawned {
                log::error!(target: "ssh_parallel", "cannot start a local worker thread: {e}; the job waits for a free one");
            }
        }
        let _ = self.tx.send(work);
    }
}

fn worker(rx: Receiver<Work>, idle: Arc<AtomicUsize>) {
    loop {
        match rx.recv_timeout(IDLE_THREAD_LIFETIME) {
            Ok(work) => {
                work();
                idle.fetch_add(1, Ordering::AcqRel);
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                // Leave only if no job has reserved us meanwhile.
                if idle
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                    .is_ok()
                {
                    return;
                }
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// How to stop a task when it is cancelled (its timeout passed, or the run
/// was cancelled).
enum Cancel {
    /// Handed to the pool, not started yet: a cancel marks it `Cancelled`.
    Queued,
    /// Cancelled before it started: the worker answers without running it.
    Cancelled,
    /// Kill the process group.
    Process(i32),
    /// A closure or an in-process copy cannot be interrupted: answer for it
    /// at once and let it finish unobserved.
    Abandon,
}

type Running = Arc<Mutex<HashMap<Token, (usize, Cancel)>>>;

/// Starts the local transport; returns its request channel and thread.
pub(crate) fn spawn(events: Sender<Event>) -> (Sender<Request>, JoinHandle<()>) {
    let (tx, rx) = crossbeam_channel::unbounded::<Request>();
    let handle = std::thread::Builder::new()
        .name("ssh-parallel-local-dispatch".into())
        .spawn(move || dispatch(rx, events))
        .expect("cannot start the local transport thread");
    (tx, handle)
}

fn dispatch(rx: Receiver<Request>, events: Sender<Event>) {
    let pool = Pool::new();
    let running: Running = Arc::default();
    for req in rx {
        match req {
            // Nothing to connect to: this machine is always there.
            Request::Connect { label, conn, .. } => {
                let _ = events.send(Event::Connected { label, conn });
            }
            Request::Disconnect { label, conn } => {
                let _ = events.send(Event::Closed { label, conn });
            }
            Request::Run(job) => {
                // Registered here, not on the worker, so that a `Cancel` sent
                // right behind the `Run` finds the task.
                running.lock().insert(job.token, (job.label, Cancel::Queued));
                let events = events.clone();
                let running = running.clone();
                pool.execute(Box::new(move || {
                    let (label, token) = (job.label, job.token);
                    let outcome = run_job(job, &running);
                    // An abandoned task was answered already.
                    if running.lock().remove(&token).is_some() {
                        let _ = events.send(Event::Finished { label, token, outcome });
                    }
                }));
            }
            Request::Cancel { token } => {
                let mut map = running.lock();
                match map.get(&token) {
                    Some((_, Cancel::Process(pgid))) => crate::process::kill_group(*pgid),
                    Some((_, Cancel::Queued)) => {
                        if let Some(entry) = map.get_mut(&token) {
                            entry.1 = Cancel::Cancelled;
                        }
                    }
                    Some((_, Cancel::Cancelled)) => {}
                    Some(&(label, Cancel::Abandon)) => {
                        map.remove(&token);
                        drop(map);
                        log::warn!(target: "ssh_parallel", "abandoning a local task after its timeout; it keeps running");
                        let _ = events.send(Event::Finished {
                            label,
                            token,
                            outcome: Outcome::new(
                                Err(TransportError::local(
                                    "abandoned after its timeout (it cannot be interrupted)",
                                )),
                                SystemTime::now(),
                            ),
                        });
                    }
                    None => {}
                }
            }
        }
    }
}

fn run_job(job: Job, running: &Running) -> Outcome {
    let started = SystemTime::now();
    let fail = |e: TransportError| Outcome::new(Err(e), started);
    // Still registered (the dispatcher did it), so every job is answered;
    // one cancelled while queued is answered without running.
    {
        let mut map = running.lock();
        let entry = map.entry(job.token).or_insert((job.label, Cancel::Queued));
        if matches!(entry.1, Cancel::Cancelled) {
            return fail(TransportError::local("cancelled before it started"));
        }
        entry.1 = Cancel::Abandon;
    }
    match &*job.action {
        Action::Command(c) => run_command(&job, c, running, started),
        Action::ScpGet(ScpGet(t)) | Action::ScpPut(ScpPut(t)) => match copy_paths(t) {
            Ok(()) => Outcome::new(Ok(Exit::OK), started),
            Err(e) => fail(TransportError::Transfer(e)),
        },
        Action::RsyncGet(RsyncGet(t)) | Action::RsyncPut(RsyncPut(t)) => run_rsync(&job, t, running, started),
        Action::Parsub(p) => super::parsub::run_parsub(&job, p, started),
        Action::Connect(_) => Outcome::new(Ok(Exit::OK), started),
        other => fail(TransportError::local(format!(
            "{} is not a remote task (scheduler bug)",
            other.describe()
        ))),
    }
}

fn run_command(job: &Job, c: &Command, running: &Running, started: SystemTime) -> Outcome {
    let fail = |m: String| Outcome::new(Err(TransportError::local(m)), started);
    let mut out = match Sink::open(job.name.clone(), Stream::Stdout, &c.stdout) {
        Ok(s) => s,
        Err(m) => return fail(m),
    };
    let mut err = match Sink::open(job.name.clone(), Stream::Stderr, &c.stderr) {
        Ok(s) => s,
        Err(m) => return fail(m),
    };
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c").arg(&c.cmd).process_group(0);
    cmd.envs(c.env.iter().map(|(k, v)| (k, v)));
    let mut feed = None;
    match &c.stdin.0 {
        StdinKind::Null => {
            cmd.stdin(Stdio::null());
        }
        StdinKind::Data(d) => {
            cmd.stdin(Stdio::piped());
            feed = Some(d.clone());
        }
        StdinKind::File(path) => match fs::File::open(path) {
            Ok(f) => {
                cmd.stdin(f);
            }
            Err(e) => return fail(format!("cannot open stdin file {path:?}: {e}")),
        },
    }
    // With an idle timeout even discarded output is read: it counts as heard.
    let pipe_or_null = |k: &OutputKind| {
        if matches!(k, OutputKind::Null) && job.idle_timeout.is_none() {
            Stdio::null()
        } else {
            Stdio::piped()
        }
    };
    cmd.stdout(pipe_or_null(&c.stdout.0));
    cmd.stderr(pipe_or_null(&c.stderr.0));
    let mut child = match cmd.spawn() {
        Ok(ch) => ch,
        Err(e) => return fail(format!("cannot start `sh -c {}`: {e}", c.cmd)),
    };
    register_process(running, job.token, child.id());
    let result = drain_and_wait(&mut child, feed, &mut out, &mut err, job.idle_timeout);
    let stdout = out.finish();
    let stderr = err.finish();
    match (result, stdout, stderr) {
        (Ok(exit), Ok(so), Ok(se)) => {
            let mut o = Outcome::new(Ok(exit), started);
            o.stdout = so;
            o.stderr = se;
            o
        }
        // Stopped for its silence: what it said before is kept.
        (Err(e @ TransportError::Timeout(_)), so, se) => {
            let mut o = Outcome::new(Err(e), started);
            o.stdout = so.unwrap_or_default();
            o.stderr = se.unwrap_or_default();
            o
        }
        (Err(e), ..) => Outcome::new(Err(e), started),
        (_, Err(m), _) | (_, _, Err(m)) => fail(m),
    }
}

/// Reads stdout here and stderr on a scoped thread (both are always drained,
/// so the child never blocks on a full pipe), feeds stdin, then reaps. With
/// an idle timeout, a watchdog kills the child's process group once neither
/// stream has said anything for that long.
fn drain_and_wait(
    child: &mut Child,
    feed: Option<Arc<[u8]>>,
    out: &mut Sink,
    err: &mut Sink,
    idle: Option<Duration>,
) -> Result<Exit, TransportError> {
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let pgid = child.id() as i32;
    let heard = Mutex::new(Instant::now());
    let fired = AtomicBool::new(false);
    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
    let (r_out, r_err) = std::thread::scope(|s| {
        if let (Some(mut i), Some(data)) = (stdin, feed) {
            // A command that exits without reading its input is not an error.
            s.spawn(move || {
                let _ = i.write_all(&data);
            });
        }
        if let Some(idle) = idle {
            let (heard, fired) = (&heard, &fired);
            s.spawn(move || watch_idle(idle, heard, fired, pgid, done_rx));
        }
        let e = s.spawn(|| pump(stderr, err, &heard));
        let o = pump(stdout, out, &heard);
        let e = e.join().unwrap_or_else(|_| Err("stderr reader panicked".into()));
        // Both streams ended: the watchdog has nothing left to watch.
        drop(done_tx);
        (o, e)
    });
    let status = child
        .wait()
        .map_err(|e| TransportError::local(format!("waiting for the command: {e}")))?;
    if fired.load(Ordering::Acquire) {
        return Err(TransportError::Timeout(format!(
            "no output for {:.2?} (idle timeout)",
            idle.unwrap_or_default()
        )));
    }
    r_out.map_err(TransportError::local)?;
    r_err.map_err(TransportError::local)?;
    Ok(Exit {
        code: status.code(),
        signal: status.signal(),
    })
}

/// Kills process group `pgid` once nothing was `heard` for `idle` (and says
/// so in `fired`); returns when `done` hangs up.
fn watch_idle(idle: Duration, heard: &Mutex<Instant>, fired: &AtomicBool, pgid: i32, done: Receiver<()>) {
    loop {
        let due = *heard.lock() + idle;
        let now = Instant::now();
        if now >= due {
            fired.store(true, Ordering::Release);
            crate::process::kill_group(pgid);
            return;
        }
        match done.recv_timeout(due - now) {
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
    }
}

fn pump(src: Option<impl Read>, sink: &mut Sink, heard: &Mutex<Instant>) -> Result<(), String> {
    let Some(mut src) = src else { return Ok(()) };
    let mut buf = [0u8; 16 * 1024];
    loop {
        match src.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                *heard.lock() = Instant::now();
                sink.write(&buf[..n])?
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading command output: {e}")),
        }
    }
}

/// Makes a started process killable by `Cancel`; kills it at once when its
/// task was cancelled while it was starting.
fn register_process(running: &Running, token: Token, pid: u32) {
    let pgid = pid as i32;
    match running.lock().get_mut(&token) {
        Some(entry) => entry.1 = Cancel::Process(pgid),
        None => crate::process::kill_group(pgid),
    }
}

fn run_rsync(job: &Job, t: &Transfer, running: &Running, started: SystemTime) -> Outcome {
    let mut cmd = std::process::Command::new("rsync");
    cmd.arg("-a").args(&t.args).args(&t.sources).arg(&t.target);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Outcome::new(
                Err(TransportError::Transfer(format!(
                    "cannot run rsync (is it installed?): {e}"
                ))),
                started,
            )
        }
    };
    register_process(running, job.token, child.id());
    let result = match child.wait_with_output() {
        Ok(o) if o.status.success() => Ok(Exit::OK),
        Ok(o) => {
            let msg = String::from_utf8_lossy(&o.stderr).trim().to_owned();
            match o.status.signal() {
                Some(sig) => Err(TransportError::Transfer(format!("rsync killed by signal {sig}"))),
                None => Err(TransportError::Transfer(format!(
                    "rsync {} -> {} exited with status {}: {msg}",
                    t.sources.join(" "),
                    t.target,
                    o.status.code().unwrap_or(-1)
                ))),
            }
        }
        Err(e) => Err(TransportError::Transfer(format!("waiting for rsync: {e}"))),
    };
    Outcome::new(result, started)
}

/// A copy on one machine, by the destination rule of [`ScpPut`] (see
/// `task::transfer`): into a directory (a trailing `/` or several sources),
/// else to a name; a directory source needs `recursive`; modes and times are
/// kept.
pub(crate) fn copy_paths(t: &Transfer) -> Result<(), String> {
    let target = Path::new(&t.target);
    prepare_local_target(t)?;
    let checked = |src: &str| -> Result<fs::Metadata, String> {
        let meta = fs::metadata(src).map_err(|e| format!("{src}: {e}"))?;
        if meta.is_dir() && !t.recursive {
            return Err(format!("{src}: is a directory (use .recursive(true))"));
        }
        Ok(meta)
    };
    if into_dir(t) {
        for src in &t.sources {
            let meta = checked(src)?;
            if meta.is_dir() && contents_only(src) {
                copy_entries(Path::new(src), target)?;
                continue;
            }
            let name = source_name(src).ok_or_else(|| format!("{src}: has no file name to copy into {}", t.target))?;
            let dest = target.join(name);
            if meta.is_dir() {
                copy_dir(Path::new(src), &dest)?;
            } else {
                copy_file(Path::new(src), &dest, &meta)?;
            }
        }
        return Ok(());
    }
    let src = &t.sources[0];
    let meta = checked(src)?;
    let dest = match source_name(src) {
        Some(name) if !meta.is_dir() && target.is_dir() => target.join(name),
        _ => target.to_path_buf(),
    };
    if meta.is_dir() {
        copy_dir(Path::new(src), &dest)
    } else {
        copy_file(Path::new(src), &dest, &meta)
    }
}

/// Prepares the side of a copy that lands on this machine (a local copy, an
/// `ScpGet`): with `create_dirs`, makes the directory the copy lands in (the
/// target when it is a directory to copy into, else the target's parent);
/// a directory to copy into must then exist.
pub(crate) fn prepare_local_target(t: &Transfer) -> Result<(), String> {
    let target = Path::new(&t.target);
    let into = into_dir(t);
    let landing = if into { Some(target) } else { target.parent() };
    if t.create_dirs {
        if let Some(dir) = landing.filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|e| format!("{}: cannot create the directory: {e}", dir.display()))?;
        }
    }
    if into && !target.is_dir() {
        let why = if target.exists() {
            "not a directory"
        } else {
            "no such directory (or use .create_dirs(true))"
        };
        return Err(format!("{}: {why}", t.target));
    }
    Ok(())
}

fn copy_file(src: &Path, dest: &Path, meta: &fs::Metadata) -> Result<(), String> {
    fs::copy(src, dest).map_err(|e| format!("{} -> {}: {e}", src.display(), dest.display()))?;
    keep_times(dest, meta)
}

fn keep_times(dest: &Path, meta: &fs::Metadata) -> Result<(), String> {
    let set = || -> std::io::Result<()> {
        let f = fs::File::options()
            .write(true)
            .open(dest)
            .or_else(|_| fs::File::open(dest))?;
        let mut times = fs::FileTimes::new();
        if let Ok(m) = meta.modified() {
            times = times.set_modified(m);
        }
        if let Ok(a) = meta.accessed() {
            times = times.set_accessed(a);
        }
        f.set_times(times)
    };
    set().map_err(|e| format!("{}: cannot keep the modification time: {e}", dest.display()))
}

fn copy_dir(src: &Path, dest: &Path) -> Result<(), String> {
    let meta = fs::metadata(src).map_err(|e| format!("{}: {e}", src.display()))?;
    if !dest.is_dir() {
        fs::create_dir(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    }
    copy_entries(src, dest)?;
    // Mode and times last: a read-only directory must still take its contents.
    fs::set_permissions(dest, fs::Permissions::from_mode(meta.permissions().mode()))
        .map_err(|e| format!("{}: {e}", dest.display()))?;
    keep_times(dest, &meta)
}

/// Copies what the directory `src` holds into the existing directory `dest`.
fn copy_entries(src: &Path, dest: &Path) -> Result<(), String> {
    let entries = fs::read_dir(src).map_err(|e| format!("{}: {e}", src.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", src.display()))?;
        let path: PathBuf = entry.path();
        let m = fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let to = dest.join(entry.file_name());
        if m.is_dir() {
            copy_dir(&path, &to)?;
        } else {
            copy_file(&path, &to, &m)?;
        }
    }
    Ok(())
}
