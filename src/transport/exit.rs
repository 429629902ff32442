//! How a process ended (exit code or signal), and signal names as numbers.
//!
//! A leaf: the libssh2 glue, the session lent to a parsub and every transport
//! read exits through it without depending on the channel protocol.

/// How a process ended.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Exit {
    pub(crate) code: Option<i32>,
    pub(crate) signal: Option<i32>,
}

impl Exit {
    pub(crate) const OK: Exit = Exit {
        code: Some(0),
        signal: None,
    };
}

/// A signal name from an SSH exit-signal message (without `SIG`) as a number.
pub(crate) fn signal_number(name: &str) -> i32 {
    match name.trim_start_matches("SIG") {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "ABRT" => libc::SIGABRT,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "SEGV" => libc::SIGSEGV,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        _ => -1,
    }
}
