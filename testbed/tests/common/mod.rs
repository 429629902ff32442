//! Helpers shared by the test bed's tests.
#![allow(dead_code)]

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `command`, killing it (by pid) if it is still running after `timeout`.
/// Panics on timeout so that a hang is a test failure, not a stuck test.
pub fn run_with_timeout(command: &mut Command, timeout: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("command timed out after {timeout:?}: {command:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Options for the OpenSSH client: no host-key checks, batch mode, short timeouts.
pub fn ssh_opts(port: u16) -> Vec<String> {
    [
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ConnectTimeout=5",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "IdentityAgent=none",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(["-p".to_string(), port.to_string()])
    .collect()
}

/// The `ssh` client in batch mode with a private key, checking the host key
/// strictly against the `known` file.
pub fn ssh_strict_command(port: u16, key: &Path, known: &Path, user: &str, command: &str) -> Command {
    let mut c = Command::new("ssh");
    c.args([
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "IdentitiesOnly=yes",
    ])
    .arg("-o")
    .arg(format!("UserKnownHostsFile={}", known.display()))
    .args(["-p", &port.to_string(), "-i"])
    .arg(key)
    .arg(format!("{user}@127.0.0.1"))
    .arg(command);
    c
}

/// `ssh -p PORT ... -i KEY -o BatchMode=yes user@127.0.0.1 COMMAND`.
pub fn ssh_key_command(port: u16, key: &Path, user: &str, command: &str) -> Command {
    let mut c = Command::new("ssh");
    c.args(ssh_opts(port))
        .arg("-o")
        .arg("BatchMode=yes")
        .arg("-i")
        .arg(key)
        .arg(format!("{user}@127.0.0.1"))
        .arg(command);
    c
}

pub type BoxResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A TCP connection plus an ssh2 session with a timeout (ms); handshake done.
pub fn ssh2_connect(port: u16, timeout_ms: u32) -> BoxResult<ssh2::Session> {
    let tcp = TcpStream::connect(("127.0.0.1", port))?;
    let mut session = ssh2::Session::new()?;
    session.set_tcp_stream(tcp);
    session.set_timeout(timeout_ms);
    session.handshake()?;
    Ok(session)
}

/// Connects and authenticates with a password.
pub fn ssh2_password(port: u16, user: &str, password: &str) -> BoxResult<ssh2::Session> {
    let session = ssh2_connect(port, 10_000)?;
    session.userauth_password(user, password)?;
    Ok(session)
}

/// Result of a command run over ssh2.
#[derive(Debug)]
pub struct Exec {
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub status: i32,
    pub signal: Option<String>,
}

impl Exec {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Runs `command` on an authenticated session, feeding `stdin`, reading both streams.
pub fn ssh2_exec(session: &ssh2::Session, command: &str, stdin: &[u8]) -> BoxResult<Exec> {
    ssh2_exec_with(session, command, stdin, |_| Ok(()))
}

/// Like [`ssh2_exec`], with a hook to make requests (env, pty) before the exec.
pub fn ssh2_exec_with(
    session: &ssh2::Session,
    command: &str,
    stdin: &[u8],
    setup: impl FnOnce(&mut ssh2::Channel) -> BoxResult<()>,
) -> BoxResult<Exec> {
    use std::io::Write;
    let mut channel = session.channel_session()?;
    setup(&mut channel)?;
    channel.exec(command)?;
    if !stdin.is_empty() {
        channel.write_all(stdin)?;
    }
    channel.send_eof()?;
    let mut stdout = Vec::new();
    channel.read_to_end(&mut stdout)?;
    let mut stderr = String::new();
    channel.stderr().read_to_string(&mut stderr)?;
    channel.wait_close()?;
    let status = channel.exit_status()?;
    let signal = channel.exit_signal()?.exit_signal;
    Ok(Exec {
        stdout,
        stderr,
        status,
        signal,
    })
}

/// Hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> String {
    use sha2::Digest;
    let data = std::fs::read(path).expect("read file");
    format!("{:x}", sha2::Sha256::digest(&data))
}

/// Writes `len` pseudo-random bytes to `path`.
pub fn write_random_file(path: &Path, len: usize, seed: u64) {
    let mut x = seed | 1;
    let mut data = Vec::with_capacity(len);
    while data.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(len);
    std::fs::write(path, data).expect("write file");
}

/// An embedded server (user `alice`, password `secret`) with `fault`.
pub fn fault_server(fault: testbed::Fault) -> testbed::EmbeddedServer {
    testbed::EmbeddedServer::builder()
        .password("alice", "secret")
        .fault(fault)
        .start()
        .unwrap()
}
