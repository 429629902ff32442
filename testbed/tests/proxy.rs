//! The TCP proxy: forwarding, freeze (a silent dead peer) and cut, against a plain TCP echo
//! server and against the embedded SSH server with libssh2.

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use testbed::{EmbeddedServer, Proxy};

/// A TCP echo server on 127.0.0.1 (one thread per connection); it lives as long as the
/// test process, which is fine for a test.
fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

fn connect(proxy: &Proxy) -> TcpStream {
    let s = TcpStream::connect(proxy.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    s
}

/// Sends `msg` and reads the echo back.
fn echo(s: &mut TcpStream, msg: &[u8]) -> io::Result<Vec<u8>> {
    s.write_all(msg)?;
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got)?;
    Ok(got)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

#[test]
fn forwards_both_ways_and_counts_connections() {
    let proxy = Proxy::start(echo_server()).unwrap();
    assert_eq!(proxy.connections(), 0);
    let mut a = connect(&proxy);
    let mut b = connect(&proxy);
    assert_eq!(echo(&mut a, b"hello").unwrap(), b"hello");
    assert_eq!(echo(&mut b, b"world").unwrap(), b"world");
    // A larger payload than one buffer, in both directions at once.
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut writer = a.try_clone().unwrap();
    let sent = big.clone();
    let t = std::thread::spawn(move || writer.write_all(&sent).unwrap());
    let mut got = vec![0u8; big.len()];
    a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    a.read_exact(&mut got).unwrap();
    t.join().unwrap();
    assert_eq!(got, big);
    assert_eq!(proxy.connections(), 2);
    assert_eq!(proxy.open_connections(), 2);
    // A client closing its end closes the proxied connection.
    drop(b);
    assert!(proxy.wait_open_connections(1, Duration::from_secs(2)));
    assert_eq!(proxy.connections(), 2);
}

#[test]
fn freeze_silences_open_connections_but_keeps_them_open() {
    let proxy = Proxy::start(echo_server()).unwrap();
    let mut old = connect(&proxy);
    assert_eq!(echo(&mut old, b"before").unwrap(), b"before");
    proxy.freeze();
    // Nothing comes back: neither the echo, nor EOF, nor a reset.
    let e = echo(&mut old, b"after").unwrap_err();
    assert!(is_timeout(&e), "expected silence, got {e:?}");
    let mut buf = [0u8; 16];
    let e = old.read(&mut buf).unwrap_err();
    assert!(is_timeout(&e), "still silent, still open: {e:?}");
    assert_eq!(proxy.open_connections(), 1);
    // The proxy stops reading too: a client that keeps writing fills the socket buffers
    // and blocks, as it would against a host that vanished.
    old.set_write_timeout(Some(Duration::from_millis(500))).unwrap();
    let chunk = vec![7u8; 64 * 1024];
    let mut written = 0usize;
    let blocked = loop {
        match old.write(&chunk) {
            Ok(n) => written += n,
            Err(e) if is_timeout(&e) => break true,
            Err(e) => panic!("write failed instead of blocking: {e}"),
        }
        if written > 64 << 20 {
            break false;
        }
    };
    assert!(
        blocked,
        "wrote {written} bytes into a frozen connection without blocking"
    );
    // New connections are forwarded normally.
    let mut new = connect(&proxy);
    assert_eq!(echo(&mut new, b"fresh").unwrap(), b"fresh");
    assert_eq!(proxy.connections(), 2);
    assert_eq!(proxy.open_connections(), 2);
}

#[test]
fn a_client_giving_up_on_a_frozen_connection_closes_it() {
    let proxy = Proxy::start(echo_server()).unwrap();
    let mut s = connect(&proxy);
    assert_eq!(echo(&mut s, b"x").unwrap(), b"x");
    proxy.freeze();
    assert_eq!(proxy.open_connections(), 1);
    drop(s);
    assert!(
        proxy.wait_open_connections(0, Duration::from_secs(2)),
        "still open: {}",
        proxy.open_connections()
    );
}

#[test]
fn cut_closes_open_and_frozen_connections_at_once() {
    let proxy = Proxy::start(echo_server()).unwrap();
    let mut frozen = connect(&proxy);
    assert_eq!(echo(&mut frozen, b"a").unwrap(), b"a");
    proxy.freeze();
    let mut live = connect(&proxy);
    assert_eq!(echo(&mut live, b"b").unwrap(), b"b");
    assert_eq!(proxy.open_connections(), 2);
    let start = Instant::now();
    proxy.cut();
    for s in [&mut frozen, &mut live] {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 16];
        match s.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            other => panic!("expected EOF or reset, got {other:?}"),
        }
    }
    assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
    assert!(proxy.wait_open_connections(0, Duration::from_secs(2)));
    // Still accepting.
    let mut again = connect(&proxy);
    assert_eq!(echo(&mut again, b"c").unwrap(), b"c");
    assert_eq!(proxy.connections(), 3);
}

#[test]
fn unreachable_target_closes_the_accepted_connection() {
    let port = testbed::free_port().unwrap();
    let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], port))).unwrap();
    let mut s = connect(&proxy);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 4];
    match s.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        other => panic!("expected EOF or reset, got {other:?}"),
    }
    assert!(proxy.wait_open_connections(0, Duration::from_secs(2)));
    assert_eq!(proxy.connections(), 1);
}

#[test]
fn drop_is_quick_with_open_and_frozen_connections() {
    let proxy = Proxy::start(echo_server()).unwrap();
    let addr = proxy.addr();
    let mut a = connect(&proxy);
    assert_eq!(echo(&mut a, b"a").unwrap(), b"a");
    proxy.freeze();
    let mut b = connect(&proxy);
    assert_eq!(echo(&mut b, b"b").unwrap(), b"b");
    let start = Instant::now();
    drop(proxy);
    assert!(start.elapsed() < Duration::from_millis(1500), "{:?}", start.elapsed());
    for s in [&mut a, &mut b] {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 4];
        match s.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            other => panic!("expected EOF or reset, got {other:?}"),
        }
    }
    // Nobody listens any more.
    assert!(TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err());
}

fn ssh_server() -> EmbeddedServer {
    EmbeddedServer::builder()
        .password("alice", "secret")
        .start()
        .expect("start server")
}

fn ssh2_via(proxy: &Proxy, timeout_ms: u32) -> ssh2::Session {
    let session = ssh2_connect(proxy.port(), timeout_ms).unwrap();
    session.userauth_password("alice", "secret").unwrap();
    session
}

#[test]
fn ssh_through_the_proxy_then_frozen_times_out_while_new_sessions_work() {
    let server = ssh_server();
    let proxy = Proxy::start(server.addr()).unwrap();
    let session = ssh2_via(&proxy, 1000);
    let r = ssh2_exec(&session, "echo through", b"").unwrap();
    assert_eq!(r.stdout_str(), "through\n");

    proxy.freeze();
    let start = Instant::now();
    let e = ssh2_exec(&session, "echo never", b"").unwrap_err();
    let waited = start.elapsed();
    // libssh2 gives up on its own timeout (1 s): silence, not a closed connection.
    assert!(
        e.to_string().to_lowercase().contains("time"),
        "expected a timeout, got: {e}"
    );
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    // The server still sees the connection open: nothing told it otherwise.
    assert_eq!(server.stats().active_connections, 1);
    assert_eq!(proxy.open_connections(), 1);

    // A new connection through the same proxy works normally.
    let fresh = ssh2_via(&proxy, 5000);
    let r = ssh2_exec(&fresh, "echo fresh", b"").unwrap();
    assert_eq!(r.stdout_str(), "fresh\n");
    assert_eq!(proxy.connections(), 2);
    assert_eq!(server.stats().connections, 2);
}

#[test]
fn ssh_through_a_cut_connection_fails_fast() {
    let server = ssh_server();
    let proxy = Proxy::start(server.addr()).unwrap();
    let session = ssh2_via(&proxy, 10_000);
    assert_eq!(ssh2_exec(&session, "echo up", b"").unwrap().stdout_str(), "up\n");
    proxy.cut();
    let start = Instant::now();
    let e = ssh2_exec(&session, "echo never", b"").unwrap_err();
    // Well under libssh2's 10 s timeout: the connection is gone, not silent.
    assert!(start.elapsed() < Duration::from_secs(3), "{:?}: {e}", start.elapsed());
    assert!(proxy.wait_open_connections(0, Duration::from_secs(2)));
    // The server sees its side close too.
    let deadline = Instant::now() + Duration::from_secs(3);
    while server.stats().active_connections != 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(server.stats().active_connections, 0);
    // And the proxy still serves new sessions.
    let again = ssh2_via(&proxy, 5000);
    assert_eq!(ssh2_exec(&again, "echo again", b"").unwrap().stdout_str(), "again\n");
}
