//! The socket of one accepted connection: [`ConnCtl`] (cut it, count its running commands)
//! and [`FaultStream`] (the stream russh reads and writes, which counts the bytes sent for
//! [`Fault::DropAfterBytes`](super::Fault::DropAfterBytes)).
//!
//! Invariant: a socket's fd is shut down only while its stream is open (checked under
//! [`ConnCtl::open`]'s lock, which the stream's `Drop` takes before the fd is closed), so a
//! reused fd number is never touched.

use std::os::fd::RawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Control over one accepted TCP connection: lets a fault (or
/// [`EmbeddedServer`](super::EmbeddedServer)) cut it.
pub(super) struct ConnCtl {
    /// The socket's fd; valid only while `open` holds true.
    pub(super) fd: RawFd,
    /// False once the socket is closed (so the fd number is never shut down after reuse).
    pub(super) open: Mutex<bool>,
    /// Commands of this connection started and not yet ended (each held by a
    /// [`RunningGuard`]); above zero, a channel opened is counted as opened ahead.
    pub(super) running: AtomicU64,
}

/// Counts a command as running on its connection until dropped.
pub(super) struct RunningGuard(pub(super) Arc<ConnCtl>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ConnCtl {
    /// Shuts the socket down in both directions: the client sees EOF at once.
    pub(super) fn cut(&self) {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if *open {
            // SAFETY: the fd belongs to a TcpStream that is still open (checked under the lock
            // that its Drop takes before closing it).
            unsafe {
                libc::shutdown(self.fd, libc::SHUT_RDWR);
            }
        }
    }
}

/// The TCP stream of a connection, counting bytes sent for
/// [`Fault::DropAfterBytes`](super::Fault::DropAfterBytes).
pub(super) struct FaultStream {
    /// The accepted socket.
    pub(super) inner: TcpStream,
    /// Its control; marked closed when this stream drops.
    pub(super) ctl: Arc<ConnCtl>,
    /// Bytes still allowed out before the connection is cut (`None`: no limit).
    pub(super) budget: Option<u64>,
}

impl Drop for FaultStream {
    fn drop(&mut self) {
        *self.ctl.open.lock().unwrap_or_else(|e| e.into_inner()) = false;
    }
}

impl AsyncRead for FaultStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for FaultStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let limit = match this.budget {
            None => buf.len(),
            Some(0) => {
                this.ctl.cut();
                return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
            }
            Some(n) => buf.len().min(usize::try_from(n).unwrap_or(usize::MAX)),
        };
        let result = Pin::new(&mut this.inner).poll_write(cx, &buf[..limit]);
        if let (Poll::Ready(Ok(written)), Some(budget)) = (&result, this.budget.as_mut()) {
            *budget -= *written as u64;
            if *budget == 0 {
                this.ctl.cut();
            }
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
