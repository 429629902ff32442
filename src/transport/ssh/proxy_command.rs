//! A `ProxyCommand`: `sh -c COMMAND` (tokens already expanded by `host`) in
//! its own process group, its stdin and stdout one end of a socketpair whose
//! other end libssh2 talks SSH over, its stderr in an unlinked temporary
//! file that we read (never wait on) for the debug log and for the message
//! when connecting fails.
//!
//! Invariant: no thread per command, nothing blocks: the child's group is
//! killed with SIGKILL when the `ProxyCommand` is dropped (the connection
//! is torn down), and a killed child not yet reaped is kept and reaped
//! later, so no zombie outlives the next spawn or drop by more than that.
//!
//! May use: `process`.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use mio::net::UnixStream;
use parking_lot::Mutex;

/// How much of the command's stderr goes into messages (its end).
const STDERR_KEEP: u64 = 4096;

/// Killed proxy commands whose exit has not been collected yet.
static UNREAPED: Mutex<Vec<Child>> = Mutex::new(Vec::new());

/// A running proxy command and our end of its socketpair.
pub(super) struct ProxyCommand {
    /// Our end (libssh2's), non-blocking; the child has the other as stdin and stdout.
    pub(super) sock: UnixStream,
    /// The `sh -c` child, which leads its own process group.
    child: Option<Child>,
    /// Where the child's stderr goes (unlinked; read with `pread` so that
    /// the child's own offset is left alone).
    stderr: File,
    /// The command line, for the log.
    command: String,
}

impl ProxyCommand {
    /// Starts `sh -c command`.
    pub(super) fn spawn(command: &str) -> Result<ProxyCommand, String> {
        reap();
        let fail = |what: &str, e: std::io::Error| format!("ProxyCommand {command:?}: {what}: {e}");
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(|e| fail("socketpair", e))?;
        ours.set_nonblocking(true).map_err(|e| fail("socketpair", e))?;
        let stderr = stderr_file().map_err(|e| fail("a file for its stderr", e))?;
        let theirs = OwnedFd::from(theirs);
        let stdout = theirs.try_clone().map_err(|e| fail("socketpair", e))?;
        let child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr.try_clone().map_err(|e| fail("stderr", e))?))
            .process_group(0)
            .spawn()
            .map_err(|e| fail("cannot run sh", e))?;
        log::debug!(target: "ssh_parallel", "ProxyCommand {command:?} started (pid {})", child.id());
        Ok(ProxyCommand {
            sock: UnixStream::from_std(ours),
            child: Some(child),
            stderr,
            command: command.to_owned(),
        })
    }

    /// The end of what the command wrote to stderr so far, if anything.
    pub(super) fn stderr_text(&self) -> Option<String> {
        let len = self.stderr.metadata().map(|m| m.len()).unwrap_or(0);
        let start = len.saturating_sub(STDERR_KEEP);
        let mut buf = vec![0u8; (len - start) as usize];
        let n = self.stderr.read_at(&mut buf, start).unwrap_or(0);
        let text = String::from_utf8_lossy(&buf[..n]).trim().to_owned();
        (!text.is_empty()).then_some(text)
    }
}

impl Drop for ProxyCommand {
    /// Kills the command's process group, logs its stderr, reaps it if it
    /// is already gone (else later).
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        // Even if `sh` has exited, what it started may live on in its group;
        // until `sh` is reaped here its pid (the group's id) cannot be reused.
        crate::process::kill_group(child.id() as i32);
        if let Some(text) = self.stderr_text() {
            log::debug!(target: "ssh_parallel", "ProxyCommand {:?} stderr: {text}", self.command);
        }
        if !matches!(child.try_wait(), Ok(Some(_)) | Err(_)) {
            UNREAPED.lock().push(child);
        }
        reap();
    }
}

/// Collects the exits of killed commands that have ended since.
fn reap() {
    UNREAPED.lock().retain_mut(|c| matches!(c.try_wait(), Ok(None)));
}

/// A new, already unlinked, temporary file.
fn stderr_file() -> std::io::Result<File> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "ssh-parallel-proxy-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(f)
}
