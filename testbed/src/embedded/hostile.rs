//! Connections that never become SSH sessions: a server that floods the client with text
//! instead of a banner ([`Fault::EndlessBanner`](super::Fault::EndlessBanner)), or sends a
//! valid banner followed by bytes that are no SSH packet
//! ([`Fault::GarbageAfterBanner`](super::Fault::GarbageAfterBanner)).
//!
//! Invariant: each of these ends when the client closes the connection or the server stops,
//! whichever comes first, and never writes faster than a bounded pace (the machine is shared:
//! a hostile server must not burn a core to be hostile).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Lines sent per burst by [`endless_banner`], one burst per [`BANNER_PACE`].
const BANNER_BURST: usize = 16;
/// The pause between two bursts of [`endless_banner`].
const BANNER_PACE: Duration = Duration::from_millis(10);

/// Sends text lines that never start with `SSH-` until the client goes away or the server
/// stops.
pub(super) async fn endless_banner(mut stream: TcpStream, mut shutdown: watch::Receiver<bool>) {
    let burst = "Welcome! This server has a lot to say before it speaks SSH.\r\n".repeat(BANNER_BURST);
    let flood = async {
        loop {
            // A client that stopped reading blocks this write; the shutdown arm still ends it.
            if stream.write_all(burst.as_bytes()).await.is_err() {
                return;
            }
            tokio::time::sleep(BANNER_PACE).await;
        }
    };
    tokio::select! {
        _ = flood => {}
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
}

/// Sends a valid banner, then a packet header no client may accept (a length of nearly
/// 4 GiB) and some noise, then only reads (and drops) what the client sends until it goes
/// away or the server stops.
pub(super) async fn garbage_after_banner(mut stream: TcpStream, mut shutdown: watch::Receiver<bool>) {
    let mut garbage = b"SSH-2.0-testbed_hostile\r\n".to_vec();
    garbage.extend_from_slice(&[0xff, 0xff, 0xff, 0xf0]);
    garbage.extend((0..252u8).map(|i| i.wrapping_mul(37) ^ 0x5a));
    let hold = async {
        if stream.write_all(&garbage).await.is_err() {
            return;
        }
        let mut sink = [0u8; 4096];
        // Reading keeps the client's writes from blocking: it must notice the garbage itself.
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    };
    tokio::select! {
        _ = hold => {}
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
}
