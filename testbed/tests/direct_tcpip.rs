//! The embedded server's `direct-tcpip` channels (a client's local forwarding, what a jump
//! host serves), seen from libssh2: bytes relayed both ways, an SSH session run through
//! one to a second embedded server, targets off loopback refused, and each forwarding fault
//! (refused, dropped after N bytes, all dropped now) as named.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::*;
use testbed::{EmbeddedServer, Fault};

/// A TCP echo server on 127.0.0.1: each connection gets back what it sends, and when the
/// client's side ends, the server reports how many bytes it echoed on `done` and closes.
fn echo_listener() -> (u16, mpsc::Receiver<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (done_tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let done_tx = done_tx.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                let mut total = 0;
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            total += n;
                            if conn.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = done_tx.send(total);
            });
        }
    });
    (port, done)
}

/// A TCP server on 127.0.0.1 that sends `len` bytes (`i % 251`) to each connection, then
/// closes it.
fn talker(len: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
                let _ = conn.write_all(&data);
            });
        }
    });
    port
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn server_with(faults: &[Fault]) -> EmbeddedServer {
    faults
        .iter()
        .fold(EmbeddedServer::builder().password("alice", "secret"), |b, f| {
            b.fault(f.clone())
        })
        .start()
        .unwrap()
}

fn login(server: &EmbeddedServer) -> ssh2::Session {
    ssh2_password(server.port(), "alice", "secret").unwrap()
}

/// Reads until EOF (or error), returning what came and whether it ended by EOF.
fn read_all(channel: &mut ssh2::Channel) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match channel.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (got, false),
        }
    }
}

/// Waits (at most 5 s) until `check` holds.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn bytes_are_relayed_both_ways_and_eof_closes_the_target() {
    let server = server_with(&[]);
    let (echo_port, echoed) = echo_listener();
    let session = login(&server);
    let mut channel = session.channel_direct_tcpip("127.0.0.1", echo_port, None).unwrap();
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 256) as u8).collect();
    // Written in pieces and read back as it comes, so that neither window fills up.
    let mut back = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut sent = 0;
    for piece in payload.chunks(16 * 1024) {
        channel.write_all(piece).unwrap();
        channel.flush().unwrap();
        sent += piece.len();
        while back.len() < sent {
            let n = channel.read(&mut buf).unwrap();
            assert!(n > 0, "EOF after {} bytes", back.len());
            back.extend_from_slice(&buf[..n]);
        }
    }
    assert_eq!(back.len(), payload.len());
    assert!(back == payload, "the echoed bytes differ");
    assert_eq!(server.stats().active_forwards, 1);
    // The client's EOF reaches the target, which then closes: the channel ends with EOF.
    channel.send_eof().unwrap();
    assert_eq!(echoed.recv_timeout(Duration::from_secs(5)).unwrap(), payload.len());
    let (rest, eof) = read_all(&mut channel);
    assert!(rest.is_empty() && eof, "rest {} bytes, eof {eof}", rest.len());
    channel.wait_close().unwrap();
    eventually("the forward is no longer active", || {
        server.stats().active_forwards == 0
    });
    let stats = server.stats();
    assert_eq!((stats.forwards_opened, stats.forwards_refused), (1, 0));
    assert_eq!(server.forwards(), vec![format!("127.0.0.1:{echo_port}")]);
}

#[test]
fn the_target_closing_closes_the_channel_and_the_client_closing_closes_the_target() {
    let server = server_with(&[]);
    let talker_port = talker(5000);
    let session = login(&server);
    let mut channel = session.channel_direct_tcpip("localhost", talker_port, None).unwrap();
    let (got, eof) = read_all(&mut channel);
    assert_eq!(got.len(), 5000);
    assert!(eof);
    assert!(got.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    channel.wait_close().unwrap();

    let (echo_port, echoed) = echo_listener();
    let mut channel = session.channel_direct_tcpip("127.0.0.1", echo_port, None).unwrap();
    channel.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    channel.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    // A close without EOF: the target's socket is closed all the same.
    channel.close().unwrap();
    assert_eq!(echoed.recv_timeout(Duration::from_secs(5)).unwrap(), 4);
    eventually("the forwards are no longer active", || {
        server.stats().active_forwards == 0
    });
}

/// Pumps bytes between an ssh2 channel and a Unix socket until `stop` is set or either
/// side ends. The session must be non-blocking: the pump polls both sides on one thread.
fn pump(mut channel: ssh2::Channel, mut local: UnixStream, stop: Arc<AtomicBool>) {
    local.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 16 * 1024];
    while !stop.load(Ordering::Relaxed) {
        let mut idle = true;
        match channel.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                idle = false;
                let mut sent = 0;
                while sent < n {
                    match local.write(&buf[sent..n]) {
                        Ok(k) => sent += k,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(1)),
                        Err(_) => return,
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
        match local.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                idle = false;
                let mut sent = 0;
                while sent < n {
                    match channel.write(&buf[sent..n]) {
                        Ok(k) => sent += k,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(1)),
                        Err(_) => return,
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
        if idle {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[test]
fn an_ssh_session_runs_through_a_forward_to_a_second_server() {
    let jump = server_with(&[]);
    let target = EmbeddedServer::builder().password("bob", "hunter2").start().unwrap();
    let outer = login(&jump);
    let channel = outer.channel_direct_tcpip("127.0.0.1", target.port(), None).unwrap();
    outer.set_blocking(false);
    let (near, far) = UnixStream::pair().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let pumping = {
        let stop = stop.clone();
        std::thread::spawn(move || pump(channel, far, stop))
    };
    let mut inner = ssh2::Session::new().unwrap();
    inner.set_tcp_stream(near);
    inner.set_timeout(10_000);
    inner.handshake().unwrap();
    // The host key seen through the tunnel is the target's, not the jump host's.
    let (key, _) = inner.host_key().unwrap();
    let fingerprint = target.host_key_openssh();
    assert!(
        fingerprint.contains(&base64_of(key)),
        "host key through the tunnel is not the target's"
    );
    inner.userauth_password("bob", "hunter2").unwrap();
    let out = ssh2_exec(&inner, "echo through the jump; echo err >&2; exit 3", b"").unwrap();
    assert_eq!(out.stdout_str(), "through the jump\n");
    assert_eq!(out.stderr, "err\n");
    assert_eq!(out.status, 3);
    stop.store(true, Ordering::Relaxed);
    pumping.join().unwrap();
    assert_eq!(target.stats().authenticated, 1);
    assert_eq!(jump.stats().forwards_opened, 1);
    assert_eq!(
        target.commands(),
        vec!["echo through the jump; echo err >&2; exit 3".to_string()]
    );
}

/// Standard base64 (with padding) of a host key blob, as in an OpenSSH key line.
fn base64_of(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn targets_off_loopback_are_refused_and_unreachable_ones_fail_to_connect() {
    let server = server_with(&[]);
    let session = login(&server);
    for host in ["10.1.2.3", "192.0.2.1", "example.com", "::1"] {
        let e = session.channel_direct_tcpip(host, 22, None).err().expect(host);
        assert!(e.message().contains("administratively prohibited"), "{host}: {e}");
    }
    let port = closed_port();
    let e = session.channel_direct_tcpip("127.0.0.1", port, None).err().unwrap();
    assert!(e.message().contains("connect failed"), "{e}");
    let stats = server.stats();
    assert_eq!((stats.forwards_opened, stats.forwards_refused), (0, 5));
    assert_eq!(server.forwards()[0], "10.1.2.3:22");
    // The session survives refusals.
    assert_eq!(ssh2_exec(&session, "echo ok", b"").unwrap().stdout_str(), "ok\n");
}

#[test]
fn refuse_forwarding_refuses_even_loopback_targets_but_commands_run() {
    let server = server_with(&[Fault::RefuseForwarding]);
    let (echo_port, _echoed) = echo_listener();
    let session = login(&server);
    let e = session
        .channel_direct_tcpip("127.0.0.1", echo_port, None)
        .err()
        .unwrap();
    assert!(e.message().contains("administratively prohibited"), "{e}");
    assert_eq!(server.stats().forwards_refused, 1);
    assert_eq!(ssh2_exec(&session, "echo ok", b"").unwrap().stdout_str(), "ok\n");

    // Faults apply to connections accepted after they change.
    server.clear_faults();
    let session = login(&server);
    let mut channel = session.channel_direct_tcpip("127.0.0.1", echo_port, None).unwrap();
    channel.write_all(b"hi").unwrap();
    let mut buf = [0u8; 2];
    channel.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hi");
}

#[test]
fn drop_forward_after_bytes_cuts_the_forward_without_eof_but_not_the_session() {
    let server = server_with(&[Fault::DropForwardAfterBytes(1000)]);
    let talker_port = talker(100_000);
    let session = login(&server);
    let mut channel = session.channel_direct_tcpip("127.0.0.1", talker_port, None).unwrap();
    let (got, _) = read_all(&mut channel);
    assert_eq!(got.len(), 1000);
    assert!(got.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    channel.wait_close().unwrap();
    eventually("the forward is no longer active", || {
        server.stats().active_forwards == 0
    });
    // A second forward on the same session gets its own budget.
    let mut channel = session.channel_direct_tcpip("127.0.0.1", talker_port, None).unwrap();
    assert_eq!(read_all(&mut channel).0.len(), 1000);
    assert_eq!(
        ssh2_exec(&session, "echo still up", b"").unwrap().stdout_str(),
        "still up\n"
    );
}

#[test]
fn drop_forwards_cuts_every_forward_now_and_later_ones_work() {
    let server = server_with(&[]);
    let (echo_port, echoed) = echo_listener();
    let session = login(&server);
    let mut channels: Vec<_> = (0..3)
        .map(|_| session.channel_direct_tcpip("127.0.0.1", echo_port, None).unwrap())
        .collect();
    for channel in &mut channels {
        channel.write_all(b"abc").unwrap();
        let mut buf = [0u8; 3];
        channel.read_exact(&mut buf).unwrap();
    }
    assert_eq!(server.stats().active_forwards, 3);
    server.drop_forwards();
    for channel in &mut channels {
        let (rest, _) = read_all(channel);
        assert!(rest.is_empty());
        channel.wait_close().unwrap();
    }
    for _ in 0..3 {
        assert_eq!(echoed.recv_timeout(Duration::from_secs(5)).unwrap(), 3);
    }
    eventually("no forward is active", || server.stats().active_forwards == 0);
    let mut channel = session.channel_direct_tcpip("127.0.0.1", echo_port, None).unwrap();
    channel.write_all(b"again").unwrap();
    let mut buf = [0u8; 5];
    channel.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"again");
    assert_eq!(server.stats().forwards_opened, 4);
    // The one TCP connection carried all of it.
    assert_eq!(server.stats().connections, 1);
}
