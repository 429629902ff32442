//! Local child processes: killing the process group a task's child leads.
//!
//! A leaf: it uses nothing of the crate.

/// Kills with SIGKILL the process group `pgid` leads. Children that run a
/// task's work are started with `process_group(0)`, so this reaches every
/// process they spawned too.
pub(crate) fn kill_group(pgid: i32) {
    // SAFETY: kill(2) has no memory effects; a negative pid names the process
    // group that the child leads.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}
