//! The embedded server's hostile faults, seen from a plain socket or libssh2: what each
//! sends (or withholds), and that the server still stops promptly.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use testbed::{EmbeddedServer, Fault};

fn tcp(server: &EmbeddedServer) -> TcpStream {
    let s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

#[test]
fn endless_banner_keeps_sending_lines_that_are_not_a_banner() {
    let mut server = fault_server(Fault::EndlessBanner);
    let mut s = tcp(&server);
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    while got.len() < 64 * 1024 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the server closed after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.lines().all(|l| !l.starts_with("SSH-")), "{}", &text[..200]);
    let started = Instant::now();
    server.stop();
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[test]
fn garbage_after_banner_sends_a_banner_then_an_impossible_packet() {
    let server = fault_server(Fault::GarbageAfterBanner);
    let mut s = tcp(&server);
    s.write_all(b"SSH-2.0-test\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while got.len() < 64 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    let end = got.iter().position(|&b| b == b'\n').unwrap();
    assert!(got.starts_with(b"SSH-2.0-"));
    assert_eq!(&got[end + 1..end + 5], [0xff, 0xff, 0xff, 0xf0]);
}

#[test]
fn zero_window_lets_output_out_but_no_stdin_in() {
    let server = fault_server(Fault::ZeroWindow);
    let sess = ssh2_password(server.port(), "alice", "secret").unwrap();
    let out = ssh2_exec(&sess, "echo out", b"").unwrap();
    assert_eq!(out.stdout_str(), "out\n");
    let mut ch = sess.channel_session().unwrap();
    ch.exec("cat").unwrap();
    sess.set_timeout(700);
    let started = Instant::now();
    let written = ch.write(b"never").and_then(|_| ch.flush());
    assert!(written.is_err(), "the window is 0: nothing may be sent");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn never_read_channels_accept_the_command_but_never_run_it() {
    let server = fault_server(Fault::NeverReadChannels);
    let sess = ssh2_password(server.port(), "alice", "secret").unwrap();
    let mut ch = sess.channel_session().unwrap();
    ch.exec("echo never").unwrap();
    sess.set_timeout(700);
    let mut out = String::new();
    assert!(ch.read_to_string(&mut out).is_err(), "got {out:?}");
    assert!(out.is_empty());
    assert_eq!(server.commands(), ["echo never"]);
    assert_eq!(server.stats().commands, 0);
    // Unread, the channel's buffer fills and the connection stops reading: 10 MB of stdin
    // cannot all go out.
    let mut ch = sess.channel_session().unwrap();
    ch.exec("cat >/dev/null").unwrap();
    sess.set_timeout(2000);
    let started = Instant::now();
    assert!(
        ch.write_all(&vec![b'x'; 10 << 20]).is_err(),
        "10 MB went to a server that never reads"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}
