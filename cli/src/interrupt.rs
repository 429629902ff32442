//! Ctrl-C. The first SIGINT cancels the run through its `Canceller`: the
//! library closes the running tasks' channels (the remote commands get
//! their hangup) and the run ends with a report, from which the main thread
//! prints what ran and exits 130. A second SIGINT exits at once (130), for a
//! run that does not end quickly (a host still connecting, or our stdout
//! blocked by a reader that went away).
//!
//! Invariant: the handler thread only cancels or exits; it never prints, so
//! it cannot block on a full pipe and miss the second Ctrl-C.
//!
//! May use: `exit`.

use std::sync::atomic::{AtomicUsize, Ordering};

use ssh_parallel::Canceller;

use crate::exit;

/// Catches SIGINT for the run `canceller` stops.
pub fn install(canceller: Canceller) {
    static PRESSED: AtomicUsize = AtomicUsize::new(0);
    let result = ctrlc::set_handler(move || {
        if PRESSED.fetch_add(1, Ordering::SeqCst) > 0 {
            std::process::exit(exit::INTERRUPTED);
        }
        canceller.cancel();
    });
    if let Err(e) = result {
        log::warn!("cannot catch Ctrl-C: {e}");
    }
}
