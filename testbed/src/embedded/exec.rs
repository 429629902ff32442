//! A command on a session channel: a real process (`SHELL -c LINE`, the shell, or a
//! subsystem's program) in a process group of its own, its stdio streamed over the channel
//! with flow control, signals delivered, and its exit status or signal reported; or, for a
//! `scp -t/-f` line when the built-in scp is on, [`run_builtin_scp`].
//!
//! Invariants: a command's process group is in [`Shared::groups`] exactly while it runs
//! (so [`EmbeddedServer::stop`](super::EmbeddedServer::stop) can kill it); a client that
//! closes the channel gets nothing more on it, and the group gets SIGHUP, then SIGKILL after
//! [`HANGUP_GRACE`]; a command counts as running on its connection until its exit status
//! is about to be sent, never after.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use russh::server::{self, Msg};
use russh::{Channel, ChannelMsg, Sig};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::scp_channel::run_builtin_scp;
use super::shared::Shared;
use super::socket::{ConnCtl, RunningGuard};

/// A session channel opened but not yet running a command.
pub(super) struct PendingChannel {
    /// The channel itself.
    pub(super) channel: Channel<Msg>,
    /// The client's env requests, in order (applied after the base environment).
    pub(super) env: Vec<(String, String)>,
    /// `TERM` from a pty request (no terminal is allocated).
    pub(super) term: Option<String>,
}

/// What a channel runs.
pub(super) enum Launch {
    /// An exec request's command line, run by `SHELL -c` (or by the built-in scp).
    Exec(Vec<u8>),
    /// A shell request: the shell, reading commands from the channel.
    Shell,
    /// A subsystem's program.
    Program(PathBuf),
}

/// Passes a chunk of channel data to a command's stdin; a command that stopped reading
/// loses its stdin for good (the sender is dropped).
pub(super) async fn feed_stdin(stdin: &mut Option<mpsc::Sender<bytes::Bytes>>, data: bytes::Bytes) {
    if let Some(sender) = stdin {
        if sender.send(data).await.is_err() {
            *stdin = None;
        }
    }
}

/// The signal number of an SSH signal name (`None`: one this server does not deliver).
fn signal_number(sig: &Sig) -> Option<i32> {
    Some(match sig {
        Sig::ABRT => libc::SIGABRT,
        Sig::ALRM => libc::SIGALRM,
        Sig::FPE => libc::SIGFPE,
        Sig::HUP => libc::SIGHUP,
        Sig::ILL => libc::SIGILL,
        Sig::INT => libc::SIGINT,
        Sig::KILL => libc::SIGKILL,
        Sig::PIPE => libc::SIGPIPE,
        Sig::QUIT => libc::SIGQUIT,
        Sig::SEGV => libc::SIGSEGV,
        Sig::TERM => libc::SIGTERM,
        Sig::USR1 => libc::SIGUSR1,
        Sig::Custom(name) => match name.as_str() {
            "USR2" => libc::SIGUSR2,
            "CONT" => libc::SIGCONT,
            "STOP" => libc::SIGSTOP,
            "TSTP" => libc::SIGTSTP,
            "WINCH" => libc::SIGWINCH,
            _ => return None,
        },
    })
}

/// The SSH signal name of a signal number, for an `exit-signal` message.
fn signal_from_number(signo: i32) -> Sig {
    match signo {
        libc::SIGABRT => Sig::ABRT,
        libc::SIGALRM => Sig::ALRM,
        libc::SIGFPE => Sig::FPE,
        libc::SIGHUP => Sig::HUP,
        libc::SIGILL => Sig::ILL,
        libc::SIGINT => Sig::INT,
        libc::SIGKILL => Sig::KILL,
        libc::SIGPIPE => Sig::PIPE,
        libc::SIGQUIT => Sig::QUIT,
        libc::SIGSEGV => Sig::SEGV,
        libc::SIGTERM => Sig::TERM,
        libc::SIGUSR1 => Sig::USR1,
        libc::SIGUSR2 => Sig::Custom("USR2".into()),
        other => Sig::Custom(format!("SIG{other}")),
    }
}

/// Sleeps for `delay`, or forever without one (for [`Fault::DropDuringCommand`](super::Fault::DropDuringCommand)).
pub(super) async fn sleep_or_never(delay: Option<Duration>) {
    match delay {
        Some(delay) => tokio::time::sleep(delay).await,
        None => std::future::pending().await,
    }
}

/// How long a command has after the SIGHUP of a closed channel before SIGKILL.
const HANGUP_GRACE: Duration = Duration::from_secs(1);

/// Sends `signo` to a process group this server started (0: no group, nothing sent).
pub(super) fn kill_group(group: i32, signo: i32) {
    if group > 0 {
        // SAFETY: signalling a process group this server created.
        unsafe {
            libc::kill(-group, signo);
        }
    }
}

/// Runs one command for a channel: a real process with piped stdio, streamed both ways.
pub(super) async fn run_command(
    shared: Arc<Shared>,
    ctl: Arc<ConnCtl>,
    drop_after: Option<Duration>,
    handle: server::Handle,
    pending: PendingChannel,
    launch: Launch,
) {
    let running = RunningGuard(ctl.clone());
    if let Launch::Exec(line) = &launch {
        if shared.builtin_scp {
            if let Some(cmd) = crate::scp::parse_command(line, &shared.home) {
                let _running = running;
                return run_builtin_scp(shared, ctl, drop_after, pending, cmd).await;
            }
        }
    }
    let PendingChannel { channel, env, term } = pending;
    let id = channel.id();
    let (mut rx, tx) = channel.split();
    let (program, args): (&OsStr, Vec<&OsStr>) = match &launch {
        Launch::Exec(line) => (
            shared.shell.as_os_str(),
            vec![OsStr::new("-c"), OsStr::from_bytes(line)],
        ),
        Launch::Shell => (shared.shell.as_os_str(), Vec::new()),
        Launch::Program(path) => (path.as_os_str(), Vec::new()),
    };
    let mut command = match &shared.setpriv {
        Some(setpriv) => {
            let mut c = tokio::process::Command::new(setpriv);
            c.args(["--pdeathsig", "KILL", "--"]).arg(program);
            c
        }
        None => {
            let mut c = tokio::process::Command::new(program);
            // SAFETY: prctl is async-signal-safe.
            unsafe {
                c.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            c
        }
    };
    // Either way the command dies with the server's runtime thread even if the test
    // process exits without stopping the server.
    command
        .args(args)
        .env_clear()
        .envs(shared.base_env.iter().map(|(k, v)| (k, v)))
        .envs(term.map(|t| ("TERM".to_string(), t)))
        .envs(env)
        .current_dir(&shared.working_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            let message = format!("testbed: cannot run command: {e}\n");
            let _ = tx.extended_data_bytes(1, message.into_bytes()).await;
            let _ = tx.exit_status(127).await;
            let _ = tx.eof().await;
            let _ = tx.close().await;
            return;
        }
    };
    let group = child.id().map(|pid| pid as i32).unwrap_or(0);
    shared.lock_groups().insert(group);

    // stdin: fed by a task so that a command that does not read its input cannot block the
    // channel's other traffic; dropping the sender closes the pipe (EOF).
    let mut stdin_tx = child.stdin.take().map(|mut stdin| {
        let (sender, mut receiver) = mpsc::channel::<bytes::Bytes>(16);
        tokio::spawn(async move {
            while let Some(data) = receiver.recv().await {
                if stdin.write_all(&data).await.is_err() {
                    break;
                }
            }
        });
        sender
    });
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let mut out_writer = tx.make_writer();
    let mut err_writer = tx.make_writer_ext(Some(1));
    let mut io = tokio::spawn(async move {
        let out = async {
            if let Some(stdout) = stdout {
                let mut reader = tokio::io::BufReader::with_capacity(32 * 1024, stdout);
                let _ = tokio::io::copy_buf(&mut reader, &mut out_writer).await;
            }
        };
        let err = async {
            if let Some(stderr) = stderr {
                let mut reader = tokio::io::BufReader::with_capacity(32 * 1024, stderr);
                let _ = tokio::io::copy_buf(&mut reader, &mut err_writer).await;
            }
        };
        tokio::join!(out, err);
        child.wait().await
    });

    let drop_timer = sleep_or_never(drop_after);
    tokio::pin!(drop_timer);
    let mut dropped = false;
    let mut client_gone = false;
    let grace = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(grace);
    let status = loop {
        tokio::select! {
            status = &mut io => break status.ok().and_then(|s| s.ok()),
            _ = &mut drop_timer, if !dropped => {
                dropped = true;
                ctl.cut();
            }
            _ = &mut grace, if client_gone => {
                kill_group(group, libc::SIGKILL);
                grace.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(3600));
            }
            msg = rx.wait(), if !client_gone => match msg {
                Some(ChannelMsg::Data { data }) => feed_stdin(&mut stdin_tx, data).await,
                Some(ChannelMsg::Eof) => stdin_tx = None,
                Some(ChannelMsg::Signal { signal }) => {
                    if let Some(signo) = signal_number(&signal) {
                        kill_group(group, signo);
                    }
                }
                Some(ChannelMsg::Close) | None => {
                    client_gone = true;
                    stdin_tx = None;
                    kill_group(group, libc::SIGHUP);
                    grace.as_mut().reset(tokio::time::Instant::now() + HANGUP_GRACE);
                }
                Some(_) => {}
            },
        }
    };
    shared.lock_groups().remove(&group);
    if client_gone {
        return;
    }
    // Ended before the client can hear of it: an open that follows the exit
    // status is never counted as opened ahead.
    drop(running);
    match status {
        Some(status) => {
            if let Some(code) = status.code() {
                let _ = tx.exit_status(code as u32).await;
            } else if let Some(signo) = status.signal() {
                let _ = handle
                    .exit_signal_request(
                        id,
                        signal_from_number(signo),
                        status.core_dumped(),
                        String::new(),
                        String::new(),
                    )
                    .await;
            }
        }
        None => {
            let _ = tx.exit_status(255).await;
        }
    }
    let _ = tx.eof().await;
    let _ = tx.close().await;
}
