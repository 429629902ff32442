//! `direct-tcpip` channels (a client's local forwarding, what a jump host serves): the
//! target is checked, connected to, and its bytes relayed both ways over the channel
//! ([`open_direct_tcpip`]), with the forwarding faults applied
//! ([`Fault::RefuseForwarding`](super::Fault::RefuseForwarding),
//! [`Fault::DropForwardAfterBytes`](super::Fault::DropForwardAfterBytes),
//! [`Fault::DelayForwardOpen`](super::Fault::DelayForwardOpen)) and
//! [`EmbeddedServer::drop_forwards`](super::EmbeddedServer::drop_forwards) obeyed.
//!
//! Invariants: only targets on 127.0.0.0/8 (or `localhost`) are ever connected to, anything
//! else is refused as administratively prohibited before any socket is opened; a forward is
//! counted in [`Shared::counters`]' active forwards exactly while its relay runs, and when
//! either side closes (or the forward is dropped) both are closed: the channel gets its
//! close, the target's socket is dropped.
//!
//! May use: [`super::shared`] and [`super::faults`]; russh and tokio.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use russh::server::{ChannelOpenHandle, Msg};
use russh::{Channel, ChannelMsg, ChannelOpenFailure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::faults::FaultSet;
use super::shared::{lock, Shared};

/// How long connecting to a forward's target may take before the open is refused.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest chunk read from a target before it is sent on the channel (russh splits it
/// into packets within the client's window).
const RELAY_CHUNK: usize = 32 * 1024;

/// The address a forward may connect to: `host` must be an IPv4 address on 127.0.0.0/8 or
/// `localhost`, and `port` a TCP port (`None`: refused).
pub(super) fn loopback_target(host: &str, port: u32) -> Option<SocketAddr> {
    let port = u16::try_from(port).ok().filter(|p| *p != 0)?;
    let ip = if host.eq_ignore_ascii_case("localhost") {
        Ipv4Addr::LOCALHOST
    } else {
        host.parse::<Ipv4Addr>().ok().filter(Ipv4Addr::is_loopback)?
    };
    Some(SocketAddr::from((ip, port)))
}

/// Counts a forward as active until dropped.
struct ActiveForward(Arc<Shared>);

impl Drop for ActiveForward {
    fn drop(&mut self) {
        self.0.counters.active_forwards.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Answers a `direct-tcpip` open: refuses it (a fault, or a target off 127.0.0.0/8), or
/// starts a task that connects to the target, accepts the channel and relays it.
///
/// The connect runs on its own task so that a slow target never holds up the connection's
/// other channels.
pub(super) async fn open_direct_tcpip(
    shared: &Arc<Shared>,
    faults: &FaultSet,
    channel: Channel<Msg>,
    host: &str,
    port: u32,
    reply: ChannelOpenHandle,
) {
    lock(&shared.forwards).push(format!("{host}:{port}"));
    let target = if faults.refuse_forwarding {
        None
    } else {
        loopback_target(host, port)
    };
    let Some(target) = target else {
        shared.counters.forwards_refused.fetch_add(1, Ordering::Relaxed);
        reply.reject(ChannelOpenFailure::AdministrativelyProhibited).await;
        return;
    };
    let shared = shared.clone();
    let budget = faults.drop_forward_after_bytes;
    let delay = faults.delay_forward_open;
    tokio::spawn(async move {
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        // Subscribed before the client hears of the channel: a drop it asks for after
        // that is never missed.
        let mut dropped = shared.drop_forwards.subscribe();
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                log::debug!("testbed: forward to {target} failed: {e}");
                shared.counters.forwards_refused.fetch_add(1, Ordering::Relaxed);
                reply.reject(ChannelOpenFailure::ConnectFailed).await;
                return;
            }
            Err(_) => {
                log::debug!("testbed: forward to {target} timed out");
                shared.counters.forwards_refused.fetch_add(1, Ordering::Relaxed);
                reply.reject(ChannelOpenFailure::ConnectFailed).await;
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        shared.counters.forwards_opened.fetch_add(1, Ordering::Relaxed);
        shared.counters.active_forwards.fetch_add(1, Ordering::Relaxed);
        let _active = ActiveForward(shared.clone());
        reply.accept().await;
        relay(channel, stream, budget, &mut dropped).await;
    });
}

/// Relays a channel and a TCP connection both ways until either side closes, until
/// `budget` bytes (if any) have gone from the target to the client, or until `dropped`
/// changes; then closes both.
async fn relay(channel: Channel<Msg>, stream: TcpStream, budget: Option<u64>, dropped: &mut watch::Receiver<u64>) {
    let (mut rx, tx) = channel.split();
    let (mut target_rx, mut target_tx) = stream.into_split();
    let upstream = async {
        while let Some(msg) = rx.wait().await {
            let written = match msg {
                ChannelMsg::Data { data } => target_tx.write_all(&data).await,
                // The client's EOF is passed on as a half-close: the target may still answer.
                ChannelMsg::Eof => target_tx.shutdown().await,
                ChannelMsg::Close => return,
                _ => Ok(()),
            };
            if written.is_err() {
                return;
            }
        }
    };
    let downstream = async {
        let mut left = budget;
        let mut buf = vec![0u8; RELAY_CHUNK];
        loop {
            let n = match target_rx.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => n,
            };
            let n = match left {
                Some(l) => n.min(usize::try_from(l).unwrap_or(usize::MAX)),
                None => n,
            };
            if tx.data_bytes(bytes::Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                return false;
            }
            if let Some(l) = left.as_mut() {
                *l -= n as u64;
                if *l == 0 {
                    // Dropped, not ended: no EOF, as when a connection is cut.
                    return false;
                }
            }
        }
    };
    let target_ended = tokio::select! {
        _ = upstream => false,
        ended = downstream => ended,
        _ = dropped.changed() => false,
    };
    if target_ended {
        let _ = tx.eof().await;
    }
    let _ = tx.close().await;
}

#[cfg(test)]
mod tests {
    use super::loopback_target;

    #[test]
    fn only_loopback_targets_are_allowed() {
        assert_eq!(loopback_target("127.0.0.1", 22), Some(([127, 0, 0, 1], 22).into()));
        assert_eq!(loopback_target("127.3.2.1", 2222), Some(([127, 3, 2, 1], 2222).into()));
        assert_eq!(loopback_target("LocalHost", 80), Some(([127, 0, 0, 1], 80).into()));
        assert_eq!(loopback_target("10.0.0.1", 22), None);
        assert_eq!(loopback_target("example.com", 22), None);
        assert_eq!(loopback_target("::1", 22), None);
        assert_eq!(loopback_target("127.0.0.1", 0), None);
        assert_eq!(loopback_target("127.0.0.1", 70_000), None);
    }
}
