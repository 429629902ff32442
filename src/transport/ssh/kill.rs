//! Stopping a cancelled command for real, so that it does not go on running
//! on the host after its task was answered (a timeout, an idle timeout, a
//! cancel).
//!
//! Closing the channel is not enough: OpenSSH signals a command only when it
//! has a pty (SIGHUP when the pty closes). So a started command first gets
//! the RFC 4254 `signal` request: HUP, what closing a terminal would send;
//! then, after [`KILL_GRACE`] or as soon as its output ended, KILL for
//! whatever ignored it. sshd (since 7.9) turns the request into `killpg` of
//! the session's process group, which reaches a pipeline too, but refuses it
//! when it has no post-auth privilege separation, which is the case for
//! every root login, and before 7.9. So on an OpenSSH server a *killer*
//! follows the close: a second exec channel whose script signals the process
//! groups of its sibling processes. sshd starts each session's command as a
//! session leader (its own process group) whose parent is the sshd process
//! of this connection, the same parent as the script's shell; and a label
//! runs one command at a time on a connection, so the siblings are exactly
//! the cancelled command (or what is left of earlier ones). Other servers
//! (the embedded test server runs its commands as children of the process
//! that also runs unrelated ones) get the signals only.
//!
//! Invariant: nothing here is sent while another packet of the session is
//! half sent (libssh2 refuses it, and then the step gives up the signals,
//! not the session); the killer's channel is opened only while no spare open
//! is in flight, so it cannot take over that open.
//!
//! May use: `conn` (`Flow`), `sftp` (`SftpClose`), `transport::libssh2`.

use std::time::{Duration, Instant};

use ssh2::Session;

use super::sftp::SftpClose;
use crate::transport::libssh2::{self, is_socket_error, would_block, OutputSink, RawChannel};

/// How long a cancelled command has to end after SIGHUP before SIGKILL.
pub(super) const KILL_GRACE: Duration = Duration::from_secs(1);

/// The killer's script: HUP to every sibling's process group, up to a second
/// for them to go, then KILL. `$$` (this shell, a sibling too) is left out.
/// Run by `sh` whatever the login shell (`exec` keeps the pid, so `$PPID` is
/// still sshd); no `--` after `kill`, which dash refuses. It does nothing
/// unless its parent is a per-connection sshd other than pid 1: once the
/// connection is gone the shell is reparented (to init, a subreaper, or an
/// sshd running as pid 1), and "its siblings" would then be every process
/// group on the host.
const KILLER: &str = "exec sh -c '[ $PPID -gt 1 ] || exit 0; \
case $(ps -o comm= -p $PPID 2>/dev/null) in sshd*) ;; *) exit 0;; esac; \
g=$(pgrep -P $PPID | grep -vx $$); [ -n \"$g\" ] || exit 0; \
for p in $g; do kill -HUP -$p 2>/dev/null; done; i=0; while [ $i -lt 10 ]; do \
a=; for p in $g; do kill -0 -$p 2>/dev/null && a=1; done; [ -z \"$a\" ] && exit 0; \
sleep 0.1; i=$((i+1)); done; for p in $g; do kill -KILL -$p 2>/dev/null; done; exit 0'";

/// A cancelled task's channel on its way out.
pub(super) struct Cancel {
    /// `None`: its open was still in flight, so it is finished first.
    pub(super) ch: Option<ssh2::Channel>,
    /// Set while a started command still has signals coming.
    pub(super) kill: Option<Kill>,
    /// The channel's close was sent.
    pub(super) closed: bool,
    /// The killer to run after the close (OpenSSH).
    pub(super) killer: Option<Killer>,
    /// What an SFTP transfer left on the session (it has no channel of its
    /// own): closed before anything else, and the session is free after it.
    pub(super) sftp: Option<Box<SftpClose>>,
}

impl Cancel {
    /// A cancelled task's channel; `raw` (with `command`: a command was
    /// started on it) means it is to be stopped, the way `sess`'s server allows.
    pub(super) fn new(sess: &Session, ch: Option<ssh2::Channel>, raw: Option<RawChannel>, command: bool) -> Cancel {
        let openssh = sess.banner().is_some_and(|b| b.starts_with("SSH-2.0-OpenSSH"));
        let kill = raw.filter(|_| command).map(|raw| Kill {
            raw,
            stage: KillStage::Hangup,
            eof: [false; 2],
            // The killer takes over after HUP: its own grace sees the processes.
            hangup_only: openssh,
        });
        Cancel {
            ch,
            closed: false,
            killer: (command && openssh).then(Killer::default),
            kill,
            sftp: None,
        }
    }

    /// What an SFTP transfer left on the session, to close.
    pub(super) fn sftp(rest: SftpClose) -> Cancel {
        Cancel {
            ch: None,
            kill: None,
            closed: true,
            killer: None,
            sftp: Some(Box::new(rest)),
        }
    }

    /// The longest it may take beyond the close itself.
    pub(super) fn extra_time(&self) -> Duration {
        let signals = if self.kill.is_some() {
            KILL_GRACE
        } else {
            Duration::ZERO
        };
        let killer = if self.killer.is_some() {
            KILL_GRACE * 2
        } else {
            Duration::ZERO
        };
        signals + killer
    }
}

/// Signalling a cancelled command: HUP, a grace period, KILL.
pub(super) struct Kill {
    raw: RawChannel,
    stage: KillStage,
    /// Which of stdout and stderr have ended (read, and dropped, meanwhile).
    eof: [bool; 2],
    /// Only HUP: a killer follows.
    hangup_only: bool,
}

#[derive(Clone, Copy)]
enum KillStage {
    Hangup,
    /// Waiting until this instant, or until both streams end.
    Grace(Instant),
    Kill,
}

/// Output that comes after the task was answered: nobody reads it any more.
struct Discard;

impl OutputSink for Discard {
    type Error = std::convert::Infallible;

    fn put(&mut self, _stream: usize, _data: &[u8]) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Moves the signals on: true once they are all sent (or turned out to be
/// impossible), false to wait. Errors mean the session is lost.
pub(super) fn step_kill(sess: &Session, ch: &mut ssh2::Channel, k: &mut Kill) -> Result<bool, String> {
    loop {
        let signal = match k.stage {
            KillStage::Hangup => "HUP",
            KillStage::Kill => "KILL",
            KillStage::Grace(until) => {
                let ended = libssh2::drain(ch, &mut k.eof, &mut Discard).map_err(|e| match e {
                    libssh2::ReadError::Channel { error, .. } => {
                        format!("reading a cancelled command's output: {error}")
                    }
                    libssh2::ReadError::Sink(never) => match never {},
                })?;
                // Ended streams do not mean an ended group (a background job
                // may hold none of them): KILL goes out anyway.
                if !ended && Instant::now() < until {
                    return Ok(false);
                }
                k.stage = KillStage::Kill;
                continue;
            }
        };
        match k.raw.signal(sess, signal) {
            Ok(()) => {}
            Err(e) if would_block(&e) => return Ok(false),
            Err(e) if is_socket_error(&e) => return Err(format!("signalling a cancelled command: {e}")),
            Err(e) => {
                // A packet of the task's is half sent (libssh2 refuses another).
                log::debug!(target: "ssh_parallel", "cannot signal a cancelled command: {e}");
                return Ok(true);
            }
        }
        match k.stage {
            KillStage::Hangup if !k.hangup_only => k.stage = KillStage::Grace(Instant::now() + KILL_GRACE),
            _ => return Ok(true),
        }
    }
}

/// The killer's channel: opened, the script started, run to its end, closed.
#[derive(Default)]
pub(super) struct Killer {
    ch: Option<ssh2::Channel>,
    started: bool,
    eof: [bool; 2],
    /// Its close was tried: only the close may be repeated now.
    closing: bool,
}

/// Moves the killer on: true once it is done (or could not run: a server
/// allowing one channel at a time refuses it while the command lives),
/// false to wait. Errors mean the session is lost. The caller makes sure no
/// spare open is in flight.
pub(super) fn step_killer(sess: &Session, k: &mut Killer) -> Result<bool, String> {
    let lost = |what: &str, e: &dyn std::fmt::Display| format!("{what} to kill a cancelled command: {e}");
    let ch = match &mut k.ch {
        Some(ch) => ch,
        None => match sess.channel_session() {
            Ok(ch) => k.ch.insert(ch),
            Err(e) if would_block(&e) => return Ok(false),
            Err(e) if is_socket_error(&e) => return Err(lost("opening a channel", &e)),
            Err(e) => {
                log::debug!(target: "ssh_parallel", "cannot open a channel to kill a cancelled command: {e}");
                return Ok(true);
            }
        },
    };
    if !k.started {
        match ch.exec(KILLER) {
            Ok(()) => k.started = true,
            Err(e) if would_block(&e) => return Ok(false),
            Err(e) if is_socket_error(&e) => return Err(lost("starting a script", &e)),
            Err(e) => {
                log::debug!(target: "ssh_parallel", "the server refused the script killing a cancelled command: {e}");
                k.started = true;
                k.eof = [true; 2];
            }
        }
    }
    if !k.closing {
        let ended = libssh2::drain(ch, &mut k.eof, &mut Discard).map_err(|e| match e {
            libssh2::ReadError::Channel { error, .. } => lost("reading a script", &error),
            libssh2::ReadError::Sink(never) => match never {},
        })?;
        if !ended {
            return Ok(false);
        }
        k.closing = true;
    }
    match ch.close() {
        Ok(()) => Ok(true),
        Err(e) if would_block(&e) => Ok(libssh2::write_blocked_on_input(sess)),
        Err(e) if is_socket_error(&e) => Err(lost("closing a channel", &e)),
        Err(_) => Ok(true),
    }
}
