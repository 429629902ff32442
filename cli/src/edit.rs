//! `queue --edit QUEUEFILE`: Pegasus' lock mode. Takes the queue's lock,
//! runs the editor on the queue file, and lets go when the editor exits, so
//! that a runner never takes a job from a half-edited file. The file is
//! checked afterwards: a runner takes nothing from an invalid file, so the
//! error is shown at once, naming its line.
//!
//! The editor is `--editor`, else `$EDITOR`, else
//! `vi` (Pegasus' order). It is run through `sh -c '$EDITOR "$@"'` as git
//! does, so that an `EDITOR` with arguments (`code --wait`) works.
//!
//! Invariant: the lock is held from before the editor starts until after it
//! has exited, and only then.
//!
//! May use: `lock`, `jobfile`, `exit`.

use std::fs::OpenOptions;
use std::path::Path;
use std::process::Command;

use crate::exit;
use crate::jobfile;
use crate::lock::QueueLock;

/// Edits `queue` under its lock with `editor` (else `$EDITOR`, else `vi`);
/// returns the exit status: 0 when the editor succeeded and the file is a
/// valid job file, 1 otherwise, with the reason on stderr.
pub fn run(queue: &Path, editor: Option<&str>) -> Result<i32, String> {
    // Created if missing, so that a new queue can be started by editing it.
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(queue)
        .map_err(|e| format!("cannot open {}: {e}", queue.display()))?;
    let real = std::fs::canonicalize(queue).map_err(|e| format!("{}: {e}", queue.display()))?;
    let lock = QueueLock::open(&real).map_err(|e| e.to_string())?;
    let held = match lock.try_lock().map_err(|e| e.to_string())? {
        Some(held) => held,
        None => {
            eprintln!(
                "ssh-parallel: {} is locked (a runner taking a job, or another editor): waiting",
                queue.display()
            );
            lock.lock().map_err(|e| e.to_string())?
        }
    };
    let editor = editor
        .map(str::to_owned)
        .or_else(|| std::env::var("EDITOR").ok().filter(|e| !e.trim().is_empty()))
        .unwrap_or_else(|| "vi".to_owned());
    // Ctrl-C in the editor reaches us too (same process group): like git,
    // wait for the editor to decide rather than leave it behind, unlocked.
    if let Err(e) = ctrlc::set_handler(|| {}) {
        log::warn!("cannot catch Ctrl-C: {e}");
    }
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$@\""))
        .arg(&editor)
        .arg(queue)
        .status()
        .map_err(|e| format!("cannot run the editor {editor:?}: {e}"))?;
    drop(held);
    if !status.success() {
        eprintln!("ssh-parallel: the editor {editor:?} failed ({status}); the queue is as it saved it");
        return Ok(exit::FAILURE);
    }
    let text = std::fs::read_to_string(queue).map_err(|e| format!("{}: {e}", queue.display()))?;
    if let Err(e) = jobfile::parse(&queue.display().to_string(), &text) {
        eprintln!("ssh-parallel: {e}\nssh-parallel: no job is taken from the queue until this is fixed");
        return Ok(exit::FAILURE);
    }
    Ok(exit::SUCCESS)
}
