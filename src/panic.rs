//! The text of a caught panic, for errors and reports.
//!
//! A leaf: it uses nothing of the crate, so any module (scheduler, transports)
//! may turn a panic payload from a user closure into a message.

/// The text of a panic payload.
pub(crate) fn message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}
