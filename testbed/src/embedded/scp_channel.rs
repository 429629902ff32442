//! The built-in scp ([`crate::scp`]) on a session channel: the protocol engine runs on a
//! blocking thread, reading the channel's data through [`ChannelInput`] and writing to the
//! channel through [`ChannelOutput`].
//!
//! Invariant: the engine never blocks for ever on a client that is gone: its input ends
//! and its writes fail once the channel closes, and the engine is then left to end alone.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use russh::ChannelMsg;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use super::exec::{feed_stdin, sleep_or_never, PendingChannel};
use super::shared::Shared;
use super::socket::ConnCtl;

/// Runs the built-in scp for a channel: the protocol engine on a blocking thread, fed from
/// the channel's data and writing to it, with the same channel handling as a command.
pub(super) async fn run_builtin_scp(
    shared: Arc<Shared>,
    ctl: Arc<ConnCtl>,
    drop_after: Option<Duration>,
    pending: PendingChannel,
    cmd: crate::scp::ScpCommand,
) {
    let (mut rx, tx) = pending.channel.split();
    let (stdin_tx, stdin_rx) = mpsc::channel::<bytes::Bytes>(16);
    // Dropped (or set) when the client goes away: a write blocked on the window gives up.
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let output = ChannelOutput {
        writer: Box::pin(tx.make_writer()),
        runtime: tokio::runtime::Handle::current(),
        cancel: cancel_rx,
    };
    let cwd = shared.working_dir.clone();
    let umask = shared.umask;
    let mut job = tokio::task::spawn_blocking(move || {
        let input = std::io::BufReader::with_capacity(
            64 * 1024,
            ChannelInput {
                rx: stdin_rx,
                chunk: bytes::Bytes::new(),
            },
        );
        crate::scp::Scp::new(cmd, &cwd, umask, input, output).run()
    });
    let mut stdin_tx = Some(stdin_tx);
    let drop_timer = sleep_or_never(drop_after);
    tokio::pin!(drop_timer);
    let mut dropped = false;
    let status = loop {
        tokio::select! {
            status = &mut job => break status.unwrap_or(1),
            _ = &mut drop_timer, if !dropped => {
                dropped = true;
                ctl.cut();
            }
            msg = rx.wait() => match msg {
                Some(ChannelMsg::Data { data }) => feed_stdin(&mut stdin_tx, data).await,
                Some(ChannelMsg::Eof) => stdin_tx = None,
                Some(ChannelMsg::Close) | None => {
                    // The client is gone: unblock the engine and leave it to end alone.
                    drop(stdin_tx);
                    let _ = cancel_tx.send(true);
                    return;
                }
                Some(_) => {}
            },
        }
    };
    let _ = tx.exit_status(status).await;
    let _ = tx.eof().await;
    let _ = tx.close().await;
}

/// The channel's incoming data as a blocking reader (EOF when the client sends EOF).
struct ChannelInput {
    /// Chunks of channel data; closed at the client's EOF (or when it goes away).
    rx: mpsc::Receiver<bytes::Bytes>,
    /// What is left of the chunk being read (empty: take the next one).
    chunk: bytes::Bytes,
}

impl std::io::Read for ChannelInput {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use bytes::Buf;
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(data) => self.chunk = data,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk.advance(n);
        Ok(n)
    }
}

/// The channel's stdout as a blocking writer (for a `spawn_blocking` thread).
struct ChannelOutput {
    /// The channel's data writer (flow-controlled by the client's window).
    writer: Pin<Box<dyn AsyncWrite + Send>>,
    /// The server's runtime, which the blocking thread drives the writer on.
    runtime: tokio::runtime::Handle,
    /// True (or closed) once the client is gone: every write fails from then on.
    cancel: watch::Receiver<bool>,
}

impl ChannelOutput {
    /// Runs one write-side operation to completion, or fails once the client is gone.
    fn block_on<T>(
        runtime: &tokio::runtime::Handle,
        cancel: &watch::Receiver<bool>,
        op: impl std::future::Future<Output = std::io::Result<T>>,
    ) -> std::io::Result<T> {
        let mut cancel = cancel.clone();
        runtime.block_on(async move {
            tokio::select! {
                r = op => r,
                _ = cancel.wait_for(|gone| *gone) => Err(std::io::ErrorKind::BrokenPipe.into()),
            }
        })
    }
}

impl std::io::Write for ChannelOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Self::block_on(&self.runtime, &self.cancel, self.writer.write(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Self::block_on(&self.runtime, &self.cancel, self.writer.flush())
    }
}
