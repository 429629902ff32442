//! The SSH transport against the real OpenSSH sshd on 127.0.0.1 (skipped, with
//! a message, when /usr/sbin/sshd is missing or we are not root).

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use ssh_parallel::{Command, ErrorKind, Host, HostKeyCheck, Join, OnError, Output, Parallel, Stdin, TaskStatus};

const SSHD: &str = "/usr/sbin/sshd";

/// Keys and a fake HOME shared by every test of this binary (HOME is process-wide).
struct Keys {
    dir: PathBuf,
    host_pub: String,
    client_key: PathBuf,
    other_key: PathBuf,
    user: String,
    known_hosts: Mutex<()>,
}

fn keygen(path: &Path) {
    let st = Process::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen");
    assert!(st.success());
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        // Lives as long as the test process (statics are not dropped).
        let dir = tempfile::Builder::new()
            .prefix("ssh-openssh-")
            .tempdir()
            .unwrap()
            .keep();
        let home = dir.join("home");
        fs::create_dir_all(home.join(".ssh")).unwrap();
        keygen(&dir.join("host_key"));
        keygen(&dir.join("client_key"));
        keygen(&dir.join("other_key"));
        fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
        std::env::set_var("HOME", &home);
        let host_pub = fs::read_to_string(dir.join("host_key.pub")).unwrap();
        let out = Process::new("id").arg("-un").output().unwrap();
        Keys {
            client_key: dir.join("client_key"),
            other_key: dir.join("other_key"),
            host_pub: host_pub.split_whitespace().take(2).collect::<Vec<_>>().join(" "),
            dir,
            user: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            known_hosts: Mutex::new(()),
        }
    })
}

/// Records `name` with `key` ("type base64") in the fake HOME's known_hosts.
fn trust(name: &str, key: &str) {
    let k = keys();
    let _g = k.known_hosts.lock().unwrap();
    let path = k.dir.join("home/.ssh/known_hosts");
    let mut text = fs::read_to_string(&path).unwrap_or_default();
    text.push_str(&format!("{name} {key}\n"));
    fs::write(path, text).unwrap();
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One sshd process, killed by its pid on drop.
struct Sshd {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn usable() -> bool {
    let root = Process::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false);
    if !Path::new(SSHD).exists() || !root {
        // CI installs openssh-server and runs as root: there, a skip would hide
        // a broken setup, so it is a failure.
        assert!(std::env::var_os("CI").is_none(), "CI must provide {SSHD} and root");
        eprintln!("skipping: needs {SSHD} and root");
        return false;
    }
    true
}

fn sshd() -> Sshd {
    let s = sshd_untrusted();
    trust(&format!("[127.0.0.1]:{}", s.port), &keys().host_pub);
    s
}

fn sshd_untrusted() -> Sshd {
    let k = keys();
    fs::create_dir_all("/run/sshd").unwrap();
    let dir = tempfile::tempdir().unwrap();
    for attempt in 0..5 {
        let port = free_port();
        let cfg = dir.path().join("sshd_config");
        fs::write(
            &cfg,
            format!(
                "ListenAddress 127.0.0.1\nPort {port}\nHostKey {}\nAuthorizedKeysFile {}\nPidFile {}\n\
                 StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\nSetEnv SHLVL=1\nMaxStartups 1000:30:1000\nMaxSessions 100\n\
                 LogLevel ERROR\n",
                k.dir.join("host_key").display(),
                k.dir.join("authorized_keys").display(),
                dir.path().join("sshd.pid").display(),
            ),
        )
        .unwrap();
        let log = fs::File::create(dir.path().join("sshd.log")).unwrap();
        let mut child = Process::new(SSHD)
            .arg("-D")
            .arg("-f")
            .arg(&cfg)
            .arg("-e")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sshd");
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Sshd { child, port, _dir: dir };
            }
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        let log = fs::read_to_string(dir.path().join("sshd.log")).unwrap_or_default();
        eprintln!("sshd attempt {attempt} on port {port} failed: {log}");
    }
    panic!("cannot start sshd");
}

fn host(port: u16) -> Host {
    let k = keys();
    Host::new("127.0.0.1")
        .port(port)
        .user(&k.user)
        .key_file(&k.client_key)
        .connect_timeout(Duration::from_secs(10))
}

#[test]
fn twenty_labels_capture_stdout_stderr_and_exit_codes() {
    if !usable() {
        return;
    }
    let s = sshd();
    let mut p = Parallel::new();
    for i in 0..20 {
        p.add_host(format!("h{i}"), host(s.port)).unwrap();
    }
    p.push(
        "*",
        Command::new("echo %LABEL%; echo err >&2; exit 3").on_error(OnError::Ignore),
    )
    .unwrap();
    p.push("*", Command::new("echo second")).unwrap();
    let t0 = Instant::now();
    let report = p.run();
    for i in 0..20 {
        let l = format!("h{i}");
        let tasks = report.label(&l).unwrap().tasks();
        let t = &tasks[0];
        assert_eq!(t.exit_code(), Some(3), "{l}: {report}");
        assert_eq!(t.stdout_str(), format!("{l}\n"), "{l}");
        assert_eq!(t.stderr_str(), "err\n", "{l}");
        assert_eq!(t.error().map(|e| e.kind()), Some(ErrorKind::Command), "{l}");
        // The second task reuses the label's session.
        assert_eq!(tasks[1].status(), TaskStatus::Succeeded, "{l}: {report}");
        assert_eq!(tasks[1].stdout_str(), "second\n", "{l}");
    }
    assert!(t0.elapsed() < Duration::from_secs(30), "took {:?}", t0.elapsed());
}

#[test]
fn join_pipeline_orders_work_across_labels() {
    if !usable() {
        return;
    }
    let s = sshd();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let mut p = Parallel::new();
    for l in ["a", "b", "c"] {
        p.add_host(l, host(s.port)).unwrap();
    }
    p.push("a", Command::new(format!("sleep 0.3; echo from-a > {d}/a.txt")))
        .unwrap();
    p.push("b", Command::new(format!("echo from-b > {d}/b.txt"))).unwrap();
    p.push("c", Join::new("a, b")).unwrap();
    p.push("c", Command::new(format!("cat {d}/a.txt {d}/b.txt"))).unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
    let tasks = report.label("c").unwrap().tasks();
    assert_eq!(tasks.last().unwrap().stdout_str(), "from-a\nfrom-b\n");
}

#[test]
fn timeout_cancels_quickly_and_the_session_stays_usable() {
    if !usable() {
        return;
    }
    let s = sshd();
    let mut p = Parallel::new();
    p.add_host("t", host(s.port)).unwrap();
    p.push(
        "t",
        Command::new("echo started; sleep 30")
            .timeout(Duration::from_secs(1))
            .on_error(OnError::Ignore),
    )
    .unwrap();
    p.push("t", Command::new("echo after")).unwrap();
    let t0 = Instant::now();
    let report = p.run();
    let took = t0.elapsed();
    let tasks = report.label("t").unwrap().tasks();
    assert_eq!(tasks[0].error().map(|e| e.kind()), Some(ErrorKind::Timeout), "{report}");
    assert_eq!(tasks[0].stdout_str(), "started\n");
    assert_eq!(tasks[1].status(), TaskStatus::Succeeded, "{report}");
    assert_eq!(tasks[1].stdout_str(), "after\n");
    assert!(took < Duration::from_secs(6), "took {took:?}");
}

#[test]
fn wrong_key_is_a_connect_error_naming_the_methods_tried() {
    if !usable() {
        return;
    }
    let s = sshd();
    let k = keys();
    let mut p = Parallel::new();
    let h = Host::new("127.0.0.1").port(s.port).user(&k.user).key_file(&k.other_key);
    p.add_host("w", h).unwrap();
    p.push("w", Command::new("true")).unwrap();
    let report = p.run();
    let e = report.label("w").unwrap().error().expect("an error");
    assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
    let msg = e.to_string();
    assert!(msg.contains("publickey"), "{msg}");
    assert!(msg.contains("other_key"), "{msg}");
    assert!(msg.contains("authentication failed"), "{msg}");
}

#[test]
fn unreachable_and_silent_ports_fail_without_hanging() {
    if !usable() {
        return;
    }
    let refused = free_port();
    // Accepts TCP (backlog) but never speaks SSH.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let mut p = Parallel::new();
    p.add_host("refused", host(refused)).unwrap();
    p.add_host("silent", host(silent_port).connect_timeout(Duration::from_millis(800)))
        .unwrap();
    p.push("*", Command::new("true")).unwrap();
    let t0 = Instant::now();
    let report = p.run();
    assert!(t0.elapsed() < Duration::from_secs(5), "took {:?}", t0.elapsed());
    for l in ["refused", "silent"] {
        let e = report.label(l).unwrap().error().expect("an error");
        assert_eq!(e.kind(), ErrorKind::Connect, "{l}: {e}");
    }
    let silent_msg = report.label("silent").unwrap().error().unwrap().to_string();
    assert!(silent_msg.contains("timed out"), "{silent_msg}");
    let refused_msg = report.label("refused").unwrap().error().unwrap().to_string();
    assert!(refused_msg.contains(&refused.to_string()), "{refused_msg}");
    drop(silent);
}

#[test]
fn strict_host_key_mismatch_names_host_and_fingerprint() {
    if !usable() {
        return;
    }
    let s = sshd();
    let k = keys();
    // Some other key recorded under the name we connect with.
    let other_pub = fs::read_to_string(k.dir.join("other_key.pub")).unwrap();
    let other: String = other_pub.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    trust(&format!("[localhost]:{}", s.port), &other);
    let mut p = Parallel::new();
    let h = Host::new("localhost")
        .port(s.port)
        .user(&k.user)
        .key_file(&k.client_key)
        .host_key_check(HostKeyCheck::Strict);
    p.add_host("m", h).unwrap();
    p.push("m", Command::new("true")).unwrap();
    let report = p.run();
    let e = report.label("m").unwrap().error().expect("an error");
    assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&format!("[localhost]:{}", s.port)), "{msg}");
    assert!(msg.contains("SHA256:"), "{msg}");
    assert!(msg.contains("does not match"), "{msg}");
}

#[test]
fn unknown_host_key_strict_refuses_accept_new_records_off_skips() {
    if !usable() {
        return;
    }
    let k = keys();
    // A server whose key is not recorded anywhere yet.
    let fresh = sshd_untrusted();
    let run = |check: HostKeyCheck| {
        let mut p = Parallel::new();
        p.add_host("u", host(fresh.port).host_key_check(check)).unwrap();
        p.push("u", Command::new("echo ok")).unwrap();
        p.run()
    };
    let r = run(HostKeyCheck::Strict);
    let e = r.label("u").unwrap().error().expect("strict refuses an unknown key");
    assert_eq!(e.kind(), ErrorKind::Connect);
    assert!(e.to_string().contains("no key for it"), "{e}");
    assert!(e.to_string().contains("SHA256:"), "{e}");

    let r = run(HostKeyCheck::Off);
    assert!(r.success(), "{r}");

    let r = run(HostKeyCheck::AcceptNew);
    assert!(r.success(), "{r}");
    let text = fs::read_to_string(k.dir.join("home/.ssh/known_hosts")).unwrap();
    assert!(
        text.contains(&format!("[127.0.0.1]:{} {}", fresh.port, k.host_pub)),
        "{text}"
    );
    // Now recorded: strict accepts it.
    let r = run(HostKeyCheck::Strict);
    assert!(r.success(), "{r}");
}

#[test]
fn large_stdin_and_outputs_env_pty_and_signals() {
    if !usable() {
        return;
    }
    let s = sshd();
    let mut p = Parallel::new();
    p.add_host("x", host(s.port)).unwrap();
    // 5 MB in while 3 MB + 2 MB come out on both streams: every window must move.
    p.push(
        "x",
        Command::new("wc -c; head -c 3000000 /dev/zero | tr '\\0' a; head -c 2000000 /dev/zero | tr '\\0' b >&2")
            .stdin(Stdin::data(vec![b'x'; 5_000_000]))
            .stdout(Output::capture_limit(10 << 20))
            .stderr(Output::capture_limit(1000)),
    )
    .unwrap();
    p.push("x", Command::new("echo \"$GREETING\"").env("GREETING", "hello 'world'"))
        .unwrap();
    p.push("x", Command::new("test -t 0 && echo tty").pty(true)).unwrap();
    p.push("x", Command::new("kill -TERM $$").on_error(OnError::Ignore))
        .unwrap();
    p.push("x", Command::new("echo last")).unwrap();
    let report = p.run();
    let t = report.label("x").unwrap().tasks();
    let out = t[0].stdout().unwrap();
    assert!(out.starts_with(b"5000000\n"), "{report}");
    assert_eq!(out.len(), 8 + 3_000_000);
    assert!(!t[0].stdout_truncated());
    assert_eq!(t[0].stderr().unwrap().len(), 1000);
    assert!(t[0].stderr_truncated());
    assert_eq!(t[1].stdout_str(), "hello 'world'\n", "{report}");
    assert_eq!(t[2].stdout_str().trim(), "tty", "{report}");
    assert_eq!(t[3].signal(), Some(15), "{report}");
    assert_eq!(t[4].stdout_str(), "last\n", "{report}");
}

#[test]
fn connection_lost_mid_command_is_rerun_after_reconnecting() {
    if !usable() {
        return;
    }
    let s = sshd();
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("killed-once");
    let mut p = Parallel::new();
    p.add_host("r", host(s.port)).unwrap();
    p.add_host("n", host(s.port)).unwrap();
    // The first run kills its own sshd session process: the connection drops.
    let cmd = format!(
        "if [ ! -e {f} ]; then touch {f}; kill -9 $PPID; sleep 5; fi; echo ran",
        f = flag.display()
    );
    p.push("r", Command::new(&cmd).reconnections(1)).unwrap();
    p.push("n", Command::new("kill -9 $PPID; sleep 5").reconnections(0))
        .unwrap();
    let t0 = Instant::now();
    let report = p.run();
    assert!(t0.elapsed() < Duration::from_secs(5), "took {:?}", t0.elapsed());
    let t = &report.label("r").unwrap().tasks()[0];
    assert_eq!(t.status(), TaskStatus::Succeeded, "{report}");
    assert_eq!(t.stdout_str(), "ran\n");
    assert_eq!(t.reruns(), 1, "{report}");
    let e = report.label("n").unwrap().error().expect("an error");
    assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
    assert!(e.to_string().contains("connection lost"), "{e}");
}
