//! Running a parsub's closure on the calling thread with a given session:
//! shared by every transport (local, SSH, fault injection).
//!
//! May use: `task` (the closure), `session`, `transport` (Job, Outcome), `panic`.

use std::time::SystemTime;

use crate::session::{Session, SessionKind};
use crate::task::Parsub;
use crate::transport::exit::Exit;
use crate::transport::protocol::{Job, Outcome, TransportError};

/// Runs a parsub on a session of its own: a local one, or none (`no_ssh`).
pub(crate) fn run_parsub(job: &Job, p: &Parsub, started: SystemTime) -> Outcome {
    let kind = if p.no_ssh {
        SessionKind::Detached
    } else {
        SessionKind::Local
    };
    run_parsub_with(job, p, kind, started)
}

/// Runs a parsub's closure with the given session, turning an `Err` or a panic
/// into the task's Local error. The session is dropped before this returns.
pub(crate) fn run_parsub_with(job: &Job, p: &Parsub, kind: SessionKind, started: SystemTime) -> Outcome {
    let mut session = Session::new(job.name.clone(), kind);
    let f = p.f.clone();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&job.name, &mut session)));
    drop(session);
    let result = match result {
        Ok(Ok(())) => Ok(Exit::OK),
        Ok(Err(e)) => Err(TransportError::Local {
            message: format!("parsub failed: {e}"),
            source: Some(e),
        }),
        Err(panic) => Err(TransportError::local(format!(
            "parsub panicked: {}",
            crate::panic::message(&*panic)
        ))),
    };
    Outcome::new(result, started)
}
