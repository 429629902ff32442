//! How a session's byte stream is made: a TCP connection (the default), one
//! end of a socketpair whose other end a jump host's `direct-tcpip` channel
//! is pumped to ([`jump`](super::jump)), or one end of a socketpair whose
//! other end is a proxy command's stdin and stdout
//! ([`proxy_command`](super::proxy_command)). libssh2 gets only the raw
//! descriptor ([`Fd`]); we keep the socket.
//!
//! Invariant: whatever the kind, the stream is non-blocking, registered in
//! the loop's poll under its connection's key while it exists, and shut down
//! before the session on it is freed (so libssh2 cannot block on it in
//! `Drop`).
//!
//! May use: `proxy_command`.

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};

use super::proxy_command::ProxyCommand;

/// Hands libssh2 the socket's descriptor while we keep the socket.
pub(super) struct Fd(pub(super) RawFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// A session's byte stream.
pub(super) enum Stream {
    /// A direct TCP connection.
    Tcp(TcpStream),
    /// libssh2's end of a socketpair; a jump session's tunnel pumps the other.
    Tunnel(UnixStream),
    /// libssh2's end of a socketpair; a proxy command has the other.
    Command(ProxyCommand),
}

impl Stream {
    /// The socket libssh2 reads and writes.
    fn socket(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Tunnel(s) => s.as_raw_fd(),
            Stream::Command(c) => c.sock.as_raw_fd(),
        }
    }

    /// Shuts the socket down both ways (a proxy command also loses its stdin
    /// and stdout; it is killed when dropped).
    pub(super) fn shutdown(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
            Stream::Tunnel(s) => s.shutdown(Shutdown::Both),
            Stream::Command(c) => c.sock.shutdown(Shutdown::Both),
        };
    }

    /// Whether the peer has closed the stream or it failed, without reading
    /// anything (a peek).
    pub(super) fn peer_gone(&self) -> bool {
        let mut b = [0u8; 1];
        // SAFETY: recv(2) into a one-byte buffer we own, on a descriptor we own.
        let n = unsafe {
            libc::recv(
                self.socket(),
                b.as_mut_ptr().cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        match n {
            0 => true,
            n if n > 0 => false,
            _ => {
                let e = io::Error::last_os_error();
                !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted)
            }
        }
    }

    /// The proxy command's stderr so far, if this is one (for messages).
    pub(super) fn command_stderr(&self) -> Option<String> {
        match self {
            Stream::Command(c) => c.stderr_text(),
            _ => None,
        }
    }

    /// The descriptor libssh2 is handed.
    pub(super) fn fd(&self) -> Fd {
        Fd(self.socket())
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        self.socket()
    }
}

impl Source for Stream {
    fn register(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.register(registry, token, interests),
            Stream::Tunnel(s) => s.register(registry, token, interests),
            Stream::Command(c) => c.sock.register(registry, token, interests),
        }
    }

    fn reregister(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.reregister(registry, token, interests),
            Stream::Tunnel(s) => s.reregister(registry, token, interests),
            Stream::Command(c) => c.sock.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.deregister(registry),
            Stream::Tunnel(s) => s.deregister(registry),
            Stream::Command(c) => c.sock.deregister(registry),
        }
    }
}
