//! What every test file of the `ssh-parallel` binary shares: a cluster of
//! embedded SSH servers and the binary run against it.
//!
//! The servers listen on 127.0.0.1 only (other loopback addresses do not
//! reach them), so hosts are `127.0.0.1:PORT` node-set entries. Each server
//! runs commands in its own directory, holding an `id.txt` that tells the
//! hosts apart.

// Each test file uses its own part of this module.
#![allow(dead_code)]

pub mod pty;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use testbed::{ClientKey, EmbeddedServer};

pub const BIN: &str = env!("CARGO_BIN_EXE_ssh-parallel");
pub const USER: &str = "alice";

pub struct Cluster {
    pub servers: Vec<EmbeddedServer>,
    pub dirs: Vec<tempfile::TempDir>,
    pub key: ClientKey,
    pub home: tempfile::TempDir,
}

impl Cluster {
    /// One server per entry of `ids`, in port order, each with `id.txt`
    /// holding its id.
    pub fn start(ids: &[&str]) -> Cluster {
        let key = ClientKey::ed25519_in_process().expect("client key");
        let mut servers = Vec::new();
        let mut dirs = Vec::new();
        for _ in ids {
            let dir = tempfile::tempdir().unwrap();
            let server = EmbeddedServer::builder()
                .authorized_key(USER, key.public_line())
                .working_dir(dir.path())
                .start()
                .expect("start the embedded server");
            servers.push(server);
            dirs.push(dir);
        }
        // Ports in node-set order, so that index i is the i-th host shown.
        let mut both: Vec<_> = servers.into_iter().zip(dirs).collect();
        both.sort_by_key(|(s, _)| s.port());
        let (servers, dirs): (Vec<_>, Vec<tempfile::TempDir>) = both.into_iter().unzip();
        for (dir, id) in dirs.iter().zip(ids) {
            std::fs::write(dir.path().join("id.txt"), format!("{id}\n")).unwrap();
        }
        Cluster {
            servers,
            dirs,
            key,
            home: tempfile::tempdir().unwrap(),
        }
    }

    pub fn host(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.servers[i].port())
    }

    pub fn dir(&self, i: usize) -> &Path {
        self.dirs[i].path()
    }

    /// `127.0.0.1:[p1,p2,...]` for the servers at `idx`.
    pub fn nodeset(&self, idx: &[usize]) -> String {
        let ports: Vec<String> = idx.iter().map(|&i| self.servers[i].port().to_string()).collect();
        format!("127.0.0.1:[{}]", ports.join(","))
    }

    /// The folded node set ssh-parallel prints for the servers at `idx`.
    pub fn folded(&self, idx: &[usize]) -> String {
        let mut ports: Vec<u16> = idx.iter().map(|&i| self.servers[i].port()).collect();
        ports.sort_unstable();
        if ports.len() == 1 {
            return format!("127.0.0.1:{}", ports[0]);
        }
        let mut ranges: Vec<(u16, u16)> = Vec::new();
        for p in ports {
            match ranges.last_mut() {
                Some((_, end)) if *end + 1 == p => *end = p,
                _ => ranges.push((p, p)),
            }
        }
        let parts: Vec<String> = ranges
            .iter()
            .map(|(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") })
            .collect();
        format!("127.0.0.1:[{}]", parts.join(","))
    }

    /// The binary with the login options every test needs.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env("HOME", self.home.path())
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            .args(["-l", USER, "-i"])
            .arg(self.key.private_path())
            .args(["-o", "StrictHostKeyChecking=no", "-o", "IdentitiesOnly=yes"])
            .stdin(Stdio::null());
        c
    }

    /// The binary started with `args`, its stdout and stderr piped.
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.cmd()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ssh-parallel")
    }

    pub fn run(&self, args: &[&str]) -> Out {
        Out(self.cmd().args(args).output().expect("run ssh-parallel"))
    }
}

pub struct Out(pub Output);

impl Out {
    pub fn stdout(&self) -> String {
        String::from_utf8(self.0.stdout.clone()).unwrap()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8(self.0.stderr.clone()).unwrap()
    }
    pub fn code(&self) -> i32 {
        self.0.status.code().expect("exited, not killed")
    }
    /// Stdout as JSON Lines, one value a line.
    pub fn json_records(&self) -> Vec<serde_json::Value> {
        self.stdout()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
            .collect()
    }

    /// The `(a, b)` fields, as text, of every JSON Lines record of type
    /// `kind` on stdout, in order: `json_pairs("line", ["host", "line"])`.
    pub fn json_pairs(&self, kind: &str, [a, b]: [&str; 2]) -> Vec<(String, String)> {
        let text = |r: &serde_json::Value, field: &str| {
            r[field]
                .as_str()
                .unwrap_or_else(|| panic!("no text {field:?} in {r}"))
                .to_owned()
        };
        self.json_records()
            .iter()
            .filter(|r| r["type"] == kind)
            .map(|r| (text(r, a), text(r, b)))
            .collect()
    }

    pub fn sorted_stdout(&self) -> Vec<String> {
        let mut v: Vec<String> = self.stdout().lines().map(str::to_owned).collect();
        v.sort();
        v
    }
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--stdout--\n{}--stderr--\n{}",
            self.0.status,
            self.stdout(),
            self.stderr()
        )
    }
}

/// A port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Runs the binary in a pseudo-terminal through util-linux `script`; `None`
/// where `script` is missing.
pub fn in_pty(c: &Cluster, args: &[&str], no_color: bool) -> Option<String> {
    let mut line = vec![BIN.to_owned(), "-l".into(), USER.into(), "-i".into()];
    line.push(c.key.private_path().display().to_string());
    line.extend(["-o", "StrictHostKeyChecking=no", "-o", "IdentitiesOnly=yes"].map(String::from));
    line.extend(args.iter().map(|a| a.to_string()));
    let quoted: Vec<String> = line.iter().map(|a| format!("'{}'", a.replace('\'', "'\\''"))).collect();
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &quoted.join(" "), "/dev/null"])
        .env("HOME", c.home.path())
        .env("TERM", "xterm")
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null());
    if no_color {
        cmd.env("NO_COLOR", "1");
    } else {
        cmd.env_remove("NO_COLOR");
    }
    let out = cmd.output().ok()?;
    assert!(out.status.success(), "{out:?}");
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The processes on this machine whose command line contains `marker`,
/// but `except`: an embedded server runs commands as local processes, so
/// this is what is left running "remotely".
pub fn processes_with(marker: &str, except: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != except)
        .filter(|pid| {
            // A process may end between the listing and this read.
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .collect()
}

/// A marker no other run on this machine has in its command lines.
pub fn unique_marker(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("ssh-parallel-test-{what}-{}-{nanos}", std::process::id())
}

/// Sends `signo` to the process `pid` (a child of the test).
pub fn signal(pid: u32, signo: i32) {
    let pid = i32::try_from(pid).expect("a pid fits in pid_t");
    // SAFETY: kill(2) on the pid of our own child.
    assert_eq!(unsafe { libc::kill(pid, signo) }, 0);
}

/// Waits for `child` at most `limit`; kills it (and fails) past that, so
/// that a hanging binary fails the test instead of hanging it.
pub fn wait_at_most(child: std::process::Child, limit: std::time::Duration) -> Out {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => Out(out.expect("wait for ssh-parallel")),
        Err(_) => {
            signal(pid, libc::SIGKILL);
            panic!("ssh-parallel still running after {limit:?}");
        }
    }
}
