//! Running the binary with its stdout and/or stderr on a real pseudo-terminal
//! (openpty(3), 132 x 40), the other streams piped, and everything the
//! terminal was sent recorded, escape sequences included.

use std::fs::File;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{wait_at_most, Out};

/// Where one of the binary's streams goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum To {
    /// The pseudo-terminal.
    Tty,
    /// A pipe, read back into the `Out`.
    Pipe,
}

/// What a run in the pseudo-terminal left.
pub struct PtyRun {
    /// Every byte written to the terminal, `\r` removed (the terminal's
    /// ONLCR turns each `\n` into `\r\n`).
    pub screen: String,
    /// The exit status and the piped streams (empty for those on the terminal).
    pub out: Out,
}

/// Runs `cmd` (stdin already set by the caller) with stdout to `stdout` and
/// stderr to `stderr`; fails the test past `limit`.
pub fn run(mut cmd: Command, stdout: To, stderr: To, limit: Duration) -> PtyRun {
    let (mut master, mut slave) = (-1, -1);
    let size = libc::winsize {
        ws_row: 40,
        ws_col: 132,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two descriptors into our integers; name and
    // termios may be null.
    let rc = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size) };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and are owned here alone.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let end = |to: To| match to {
        To::Tty => Stdio::from(slave.try_clone().expect("dup the pty")),
        To::Pipe => Stdio::piped(),
    };
    cmd.stdout(end(stdout)).stderr(end(stderr));
    let child = cmd.spawn().expect("start ssh-parallel");
    // Only the child holds the terminal now: once it exits, reading the
    // master ends (EIO).
    drop(cmd);
    drop(slave);
    let reader = std::thread::spawn(move || {
        let mut file = File::from(master);
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match file.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
        all
    });
    let out = wait_at_most(child, limit);
    let bytes = reader.join().expect("the pty reader");
    PtyRun {
        screen: String::from_utf8_lossy(&bytes).replace('\r', ""),
        out,
    }
}
