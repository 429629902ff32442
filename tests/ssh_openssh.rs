//! The SSH transport against the real OpenSSH sshd on 127.0.0.1 (a failure
//! when /usr/sbin/sshd is missing or we are not root, or a loud, counted skip
//! with `TESTBED_ALLOW_SKIP=1`: see `testbed::prereq`).

mod common;
#[path = "common/copy.rs"]
mod copy;
#[path = "common/servers.rs"]
mod servers;

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, UNIX_EPOCH};

use copy::{make_file, mode, mtime, ps, set_mtime};
use ssh_parallel::{
    Command, ErrorKind, Host, HostKeyCheck, Join, OnError, Output, Parallel, ScpGet, ScpPut, Stdin, TaskStatus,
};

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
/// Appends in one write, never rewriting the file: other tests' runs read it
/// (and accept-new appends to it) at the same time.
fn trust(name: &str, key: &str) {
    trust_line(&format!("{name} {key}"));
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
        testbed::prereq::skip(format!("needs {SSHD} (the openssh-server package) and root"));
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
        // The machine's /etc/ssh/ssh_config may say HashKnownHosts yes; this
        // test reads the plain entry (tests/ssh_config_wiring.rs covers hashing).
        let mut p = Parallel::builder().no_ssh_config().build().unwrap();
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

// ---- scp over the SSH transport (the remote side is this machine: sshd logs in as us) ----

/// `copy::assert_same_tree`, and the two roots' modes and mtimes too.
fn assert_same_tree(a: &Path, b: &Path) {
    copy::assert_same_tree(a, b);
    assert_eq!(mode(a), mode(b), "mode of {}", b.display());
    assert_eq!(mtime(a), mtime(b), "mtime of {}", b.display());
}

#[test]
fn scp_single_files_both_ways_with_label_in_paths_modes_and_mtimes() {
    if !usable() {
        return;
    }
    let s = sshd();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for sub in ["local", "remote", "back"] {
        fs::create_dir(d.join(sub)).unwrap();
    }
    make_file(&d.join("local/a.txt"), b"from a\n", 0o640, 1_000_000_000);
    make_file(&d.join("local/b.txt"), b"from b\n", 0o751, 1_100_000_000);
    let mut p = Parallel::new();
    for l in ["a", "b"] {
        p.add_host(l, host(s.port)).unwrap();
    }
    p.push(
        "*",
        ScpPut::new(
            format!("{}/local/%LABEL%.txt", d.display()),
            format!("{}/remote/%LABEL%-put.txt", d.display()),
        ),
    )
    .unwrap();
    // Into an existing directory: the file keeps its name.
    p.push(
        "*",
        ScpGet::new(
            format!("{}/remote/%LABEL%-put.txt", d.display()),
            format!("{}/back", d.display()),
        ),
    )
    .unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
    for (l, text, m, t) in [
        ("a", "from a\n", 0o640, 1_000_000_000),
        ("b", "from b\n", 0o751, 1_100_000_000),
    ] {
        for f in [
            d.join(format!("remote/{l}-put.txt")),
            d.join(format!("back/{l}-put.txt")),
        ] {
            assert_eq!(fs::read_to_string(&f).unwrap(), text, "{}", f.display());
            assert_eq!(mode(&f), m, "{}", f.display());
            assert_eq!(mtime(&f), UNIX_EPOCH + Duration::from_secs(t), "{}", f.display());
        }
    }
}

#[test]
fn scp_twenty_megabytes_both_ways_verified_by_checksum() {
    if !usable() {
        return;
    }
    let s = sshd();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Pseudo-random bytes (xorshift), so nothing compresses or repeats by chance.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..20 * 1024 * 1024 / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    let src = d.join("big.bin");
    fs::write(&src, &data).unwrap();
    drop(data);
    let put = d.join("put.bin");
    let got = d.join("got.bin");
    let mut p = Parallel::new();
    p.add_host("big", host(s.port)).unwrap();
    p.push("big", ScpPut::new(ps(&src), ps(&put))).unwrap();
    p.push("big", ScpGet::new(ps(&put), ps(&got))).unwrap();
    let t0 = Instant::now();
    let report = p.run();
    assert!(report.success(), "{report}");
    assert!(t0.elapsed() < Duration::from_secs(60), "took {:?}", t0.elapsed());
    let sum = common::sha256(&src);
    assert_eq!(common::sha256(&put), sum);
    assert_eq!(common::sha256(&got), sum);
    assert_eq!(fs::metadata(&got).unwrap().len(), 20 * 1024 * 1024);
}

#[test]
fn scp_directory_trees_recursive_keep_modes_and_mtimes() {
    if !usable() {
        return;
    }
    let s = sshd();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tree = d.join("tree");
    fs::create_dir_all(tree.join("sub/deeper")).unwrap();
    fs::create_dir_all(tree.join("empty")).unwrap();
    make_file(&tree.join("f1"), b"one", 0o600, 1_200_000_000);
    make_file(&tree.join("with space"), b"", 0o644, 1_250_000_000);
    make_file(&tree.join("sub/f2.sh"), b"#!/bin/sh\necho two\n", 0o755, 1_300_000_000);
    make_file(&tree.join("sub/deeper/f3"), &vec![7u8; 200_000], 0o640, 1_350_000_000);
    // Directory modes and times last (writing inside changes a directory's mtime).
    for (sub, m, t) in [
        ("sub/deeper", 0o700, 1_360_000_000),
        ("sub", 0o750, 1_400_000_000),
        ("empty", 0o711, 1_450_000_000),
        ("", 0o755, 1_500_000_000),
    ] {
        let p = tree.join(sub);
        fs::set_permissions(&p, fs::Permissions::from_mode(m)).unwrap();
        set_mtime(&p, t);
    }
    let remote = d.join("remote");
    fs::create_dir(&remote).unwrap();
    let back = d.join("back");
    let mut p = Parallel::new();
    p.add_host("r", host(s.port)).unwrap();
    // Into an existing directory (a target ending in `/`): remote/tree.
    p.push("r", ScpPut::new(ps(&tree), format!("{}/", ps(&remote))).recursive(true))
        .unwrap();
    // To a new name: back is created as the copy of remote/tree.
    p.push("r", ScpGet::new(ps(&remote.join("tree")), ps(&back)).recursive(true))
        .unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
    assert_same_tree(&tree, &remote.join("tree"));
    assert_same_tree(&tree, &back);
}

#[test]
fn scp_several_sources_into_a_directory() {
    if !usable() {
        return;
    }
    let s = sshd();
    // And a get of two files onto a local file: an error too.
    let (report, _dir) = copy::several_sources_into_a_directory(host(s.port), |p, d| {
        let got = ScpGet::many([ps(&d.join("remote/x1")), ps(&d.join("remote/x2"))], ps(&d.join("x1")));
        p.push("m", got.on_error(OnError::Ignore)).unwrap();
    });
    let e = report.label("m").unwrap().tasks()[3].error().expect("an error");
    assert_eq!(e.kind(), ErrorKind::Transfer, "{e}");
    assert!(e.to_string().contains("directory"), "{e}");
}

#[test]
fn scp_errors_are_transfer_errors_naming_the_path() {
    if !usable() {
        return;
    }
    let s = sshd();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir_all(d.join("adir/sub")).unwrap();
    make_file(&d.join("adir/f"), b"f", 0o644, 1_000_000_000);
    let missing = d.join("no-such-remote-file");
    let ign = OnError::Ignore;
    let mut p = Parallel::new();
    p.add_host("e", host(s.port)).unwrap();
    p.push("e", ScpGet::new(ps(&missing), ps(&d.join("got"))).on_error(ign.clone()))
        .unwrap();
    p.push(
        "e",
        ScpGet::new(ps(&d.join("adir")), ps(&d.join("got-dir"))).on_error(ign.clone()),
    )
    .unwrap();
    p.push(
        "e",
        ScpPut::new(ps(&d.join("adir")), ps(&d.join("put-dir"))).on_error(ign.clone()),
    )
    .unwrap();
    p.push(
        "e",
        ScpPut::new(ps(&d.join("no-such-local")), ps(&d.join("x"))).on_error(ign.clone()),
    )
    .unwrap();
    p.push(
        "e",
        ScpPut::new(ps(&d.join("adir/f")), ps(&d.join("no-such-remote-dir/f"))).on_error(ign.clone()),
    )
    .unwrap();
    // The session is still fine afterwards.
    p.push("e", Command::new("echo still-here")).unwrap();
    let report = p.run();
    let t = report.label("e").unwrap().tasks();
    let expect = [
        ("no-such-remote-file", "No such file"),
        ("adir", "recursive"),
        ("adir", "recursive"),
        ("no-such-local", "No such file"),
        ("no-such-remote-dir/f", "No such file"),
    ];
    for (i, (path, why)) in expect.iter().enumerate() {
        let e = t[i].error().unwrap_or_else(|| panic!("task {i} should fail: {report}"));
        assert_eq!(e.kind(), ErrorKind::Transfer, "task {i}: {e}");
        let msg = e.to_string();
        assert!(msg.contains(path), "task {i}: {msg}");
        assert!(msg.contains(why), "task {i}: {msg}");
    }
    assert!(!d.join("got-dir").exists());
    assert_eq!(t[5].stdout_str(), "still-here\n", "{report}");
}

#[test]
fn scp_timeout_cancels_mid_transfer_and_the_session_stays_usable() {
    if !usable() {
        return;
    }
    let s = sshd();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A sparse 4 GB file: far more than can move in the timeout.
    let huge = d.join("huge");
    fs::File::create(&huge).unwrap().set_len(4 << 30).unwrap();
    let got = d.join("got");
    let mut p = Parallel::new();
    p.add_host("c", host(s.port)).unwrap();
    p.push(
        "c",
        ScpGet::new(ps(&huge), ps(&got))
            .timeout(Duration::from_millis(700))
            .on_error(OnError::Ignore),
    )
    .unwrap();
    p.push("c", Command::new("echo after-get")).unwrap();
    let put = d.join("put");
    p.push(
        "c",
        ScpPut::new(ps(&huge), ps(&put))
            .timeout(Duration::from_millis(700))
            .on_error(OnError::Ignore),
    )
    .unwrap();
    p.push("c", Command::new("echo after-put")).unwrap();
    let t0 = Instant::now();
    let report = p.run();
    let took = t0.elapsed();
    let t = report.label("c").unwrap().tasks();
    for (i, f) in [(0, &got), (2, &put)] {
        assert_eq!(t[i].error().map(|e| e.kind()), Some(ErrorKind::Timeout), "{report}");
        let partial = fs::metadata(f).map(|m| m.len()).unwrap_or(0);
        assert!(partial < 4 << 30, "copied everything: {partial}");
    }
    assert_eq!(t[1].stdout_str(), "after-get\n", "{report}");
    assert_eq!(t[3].stdout_str(), "after-put\n", "{report}");
    // A guard against hangs, not a speed check: without a pty, sshd ends a
    // cancelled transfer only when the remote scp notices, which on a loaded
    // machine takes seconds.
    assert!(took < Duration::from_secs(60), "took {took:?}");
}

// ---- authentication modes and host-key policies through our transport --------

/// The throwaway account the password tests log in as (`.ci/run` creates it
/// too). The password is public: the account exists only on test machines.
const TEST_USER: &str = "sshpar-test";
const TEST_PASSWORD: &str = "sshpar-Throwaway-7";

/// Makes sure the test account exists with its password (needs root). Returns
/// false to skip (not root, and `TESTBED_ALLOW_SKIP=1`: see `testbed::prereq`).
fn test_user() -> bool {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    let result = DONE.get_or_init(|| match testbed::OpenSshServer::ensure_user(TEST_USER, TEST_PASSWORD) {
        Ok(()) => Ok(()),
        Err(testbed::Error::Unavailable(why)) => Err(why),
        Err(e) => panic!("cannot create the test user {TEST_USER}: {e}"),
    });
    match result {
        Ok(()) => true,
        Err(why) => {
            testbed::prereq::skip(format!("the password tests need the {TEST_USER} account: {why}"));
            false
        }
    }
}

/// A testbed sshd (trusted in the fake HOME's known_hosts) with password and
/// keyboard-interactive logins through PAM, restricted to `methods`
/// (`AuthenticationMethods`) when given.
fn pam_sshd(methods: Option<&str>) -> Option<testbed::OpenSshServer> {
    if !usable() || !test_user() {
        return None;
    }
    keys();
    let mut builder = testbed::OpenSshServer::builder().password_logins();
    if let Some(m) = methods {
        builder = builder.authentication_methods(m);
    }
    let server = builder.start().expect("start sshd with PAM");
    trust_line(&server.known_hosts_line);
    Some(server)
}

fn trust_line(line: &str) {
    let k = keys();
    let _g = k.known_hosts.lock().unwrap();
    common::append_known_host(&k.dir.join("home/.ssh/known_hosts"), line);
}

fn password_host(port: u16, password: &str) -> Host {
    Host::new("127.0.0.1")
        .port(port)
        .user(TEST_USER)
        .password(password)
        .connect_timeout(Duration::from_secs(10))
}

fn count_lines_with(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn password_login_on_a_password_only_server() {
    let Some(server) = pam_sshd(Some("password")) else {
        return;
    };
    let mut p = Parallel::new();
    for l in ["p1", "p2"] {
        p.add_host(l, password_host(server.port, TEST_PASSWORD)).unwrap();
    }
    p.all(Command::new("id -un; echo %LABEL%")).unwrap();
    p.all(Command::new("echo second")).unwrap();
    let report = p.run();
    assert!(report.success(), "{report}\n{}", server.log());
    for l in ["p1", "p2"] {
        let t = report.label(l).unwrap().tasks();
        assert_eq!(t[0].stdout_str(), format!("{TEST_USER}\n{l}\n"));
        assert_eq!(t[1].stdout_str(), "second\n");
    }
    let log = server.log();
    assert_eq!(
        count_lines_with(&log, &format!("Accepted password for {TEST_USER} ")),
        2,
        "{log}"
    );
}

#[test]
fn keyboard_interactive_login_on_a_keyboard_interactive_only_server() {
    let Some(server) = pam_sshd(Some("keyboard-interactive")) else {
        return;
    };
    let mut p = Parallel::new();
    p.add_host("k", password_host(server.port, TEST_PASSWORD)).unwrap();
    p.push("k", Command::new("id -un")).unwrap();
    let report = p.run();
    assert!(report.success(), "{report}\n{}", server.log());
    assert_eq!(
        report.label("k").unwrap().tasks()[0].stdout_str(),
        format!("{TEST_USER}\n")
    );
    let log = server.log();
    assert_eq!(
        count_lines_with(&log, &format!("Accepted keyboard-interactive/pam for {TEST_USER} ")),
        1,
        "{log}"
    );
}

#[test]
fn wrong_password_is_a_connect_error_listing_the_methods_tried() {
    if !usable() || !test_user() {
        return;
    }
    for (methods, tried, accepts) in [
        (Some("password"), "tried password;", "the server accepts: password"),
        (
            Some("keyboard-interactive"),
            "tried keyboard-interactive;",
            "the server accepts: keyboard-interactive",
        ),
        (None, "tried password, keyboard-interactive;", "keyboard-interactive"),
    ] {
        let server = pam_sshd(methods).expect("sshd");
        let mut p = Parallel::new();
        p.add_host("w", password_host(server.port, "not-the-password")).unwrap();
        p.push("w", Command::new("echo never")).unwrap();
        p.push("w", Command::new("echo never either")).unwrap();
        let report = p.run();
        let e = report.label("w").unwrap().error().expect("an error");
        assert_eq!(e.kind(), ErrorKind::Connect, "{methods:?}: {e}");
        let msg = e.to_string();
        assert!(msg.starts_with("w: task #0 (command `echo never`): "), "{msg}");
        assert!(msg.contains("authentication failed"), "{msg}");
        assert!(msg.contains(&format!("{TEST_USER}@127.0.0.1:{}", server.port)), "{msg}");
        assert!(msg.contains(tried), "{methods:?}: {msg}");
        assert!(msg.contains(accepts), "{methods:?}: {msg}");
        assert!(!msg.contains("not-the-password"), "the password leaked: {msg}");
        let statuses: Vec<TaskStatus> = report.label("w").unwrap().tasks().iter().map(|t| t.status()).collect();
        assert_eq!(statuses, [TaskStatus::Failed, TaskStatus::Cancelled]);
        // sshd logs the failure once PAM's failure delay is over.
        assert!(
            common::wait_until(Duration::from_secs(10), || server.log().contains("Failed ")),
            "{}",
            server.log()
        );
    }
}

#[test]
fn a_server_allowing_one_channel_per_connection_runs_a_queue_on_one_login() {
    if !usable() {
        return;
    }
    // Opening the next command's channel ahead needs a second channel; sshd
    // with MaxSessions 1 refuses it, and the queue must go on without it.
    let k = keys();
    let key = testbed::ClientKey::generate(testbed::KeyType::Ed25519, None).unwrap();
    let server = testbed::OpenSshServer::builder()
        .max_sessions(1)
        .authorize(&key)
        .start()
        .expect("start sshd");
    trust_line(&server.known_hosts_line);
    let mut p = Parallel::new();
    for l in ["a", "b"] {
        let h = Host::new("127.0.0.1")
            .port(server.port)
            .user(&k.user)
            .key_file(key.private_path())
            .connect_timeout(Duration::from_secs(10));
        p.add_host(l, h).unwrap();
    }
    for i in 0..5 {
        p.all(Command::new(format!("echo {i}-%LABEL%"))).unwrap();
        p.all(Join::new("*")).unwrap();
    }
    let report = p.run();
    assert!(report.success(), "{report}\n{}", server.log());
    for l in ["a", "b"] {
        let got: Vec<String> = report
            .label(l)
            .unwrap()
            .tasks()
            .iter()
            .map(|t| t.stdout_str())
            .filter(|o| !o.is_empty())
            .collect();
        let want: Vec<String> = (0..5).map(|i| format!("{i}-{l}\n")).collect();
        assert_eq!(got, want, "{l}");
    }
    let log = server.log();
    assert_eq!(server.logins_logged(), 2, "one login per label: {log}");
    // Each connection's spare was refused (and sometimes an open sent right
    // behind a close, which sshd refuses until its next loop turn; those are
    // tried again).
    assert!(log.matches("no more sessions").count() >= 2, "{log}");
}

#[test]
fn key_auth_with_ed25519_ecdsa_and_rsa_keys_with_and_without_passphrase() {
    if !usable() {
        return;
    }
    use testbed::{ClientKey, KeyType};
    let k = keys();
    let mut cases = Vec::new();
    for kind in [KeyType::Ed25519, KeyType::Ecdsa, KeyType::Rsa] {
        for passphrase in [None, Some("open sesame")] {
            cases.push((kind, passphrase, ClientKey::generate(kind, passphrase).unwrap()));
        }
    }
    let mut builder = testbed::OpenSshServer::builder();
    for (_, _, key) in &cases {
        builder = builder.authorize(key);
    }
    let server = builder.start().expect("start sshd");
    trust_line(&server.known_hosts_line);
    let key_host = |key: &ClientKey| {
        Host::new("127.0.0.1")
            .port(server.port)
            .user(&k.user)
            .key_file(key.private_path())
            .connect_timeout(Duration::from_secs(10))
    };
    let mut p = Parallel::new();
    let mut labels = Vec::new();
    for (kind, passphrase, key) in &cases {
        let label = format!("{kind:?}-{}", if passphrase.is_some() { "encrypted" } else { "plain" });
        let mut h = key_host(key);
        if let Some(pw) = passphrase {
            h = h.passphrase(*pw);
        }
        p.add_host(label.as_str(), h).unwrap();
        labels.push(label);
    }
    // An encrypted key with a wrong passphrase, and without one.
    let (_, _, encrypted) = &cases[1];
    p.add_host("wrong-passphrase", key_host(encrypted).passphrase("not it"))
        .unwrap();
    p.add_host("no-passphrase", key_host(encrypted)).unwrap();
    p.all(Command::new("echo %LABEL%")).unwrap();
    let report = p.run();
    for l in &labels {
        let r = report.label(l).unwrap();
        assert!(r.success(), "{l}: {report}\n{}", server.log());
        assert_eq!(r.tasks()[0].stdout_str(), format!("{l}\n"));
    }
    for l in ["wrong-passphrase", "no-passphrase"] {
        let e = report.label(l).unwrap().error().expect("an error");
        assert_eq!(e.kind(), ErrorKind::Connect, "{l}: {e}");
        let msg = e.to_string();
        assert!(msg.contains("authentication failed"), "{l}: {msg}");
        assert!(
            msg.contains(&encrypted.private_path().display().to_string()),
            "{l}: {msg}"
        );
        assert!(!msg.contains("not it"), "the passphrase leaked: {msg}");
    }
    let log = server.log();
    let accepted = format!("Accepted publickey for {} from", k.user);
    for (kind, n) in [("ED25519", 2), ("ECDSA", 2), ("RSA", 2)] {
        let got = log
            .lines()
            .filter(|l| l.starts_with(&accepted) && l.contains(&format!("ssh2: {kind} ")))
            .count();
        assert_eq!(got, n, "{kind} logins: {log}");
    }
}

#[test]
fn accept_new_records_an_unknown_key_then_refuses_a_changed_one_off_does_not_check() {
    if !usable() {
        return;
    }
    let k = keys();
    let authorized = fs::read_to_string(k.dir.join("client_key.pub")).unwrap();
    let first = testbed::OpenSshServer::builder()
        .authorized_key(authorized.trim())
        .start()
        .expect("start sshd");
    let port = first.port;
    let name = format!("[127.0.0.1]:{port}");
    let known_hosts = k.dir.join("home/.ssh/known_hosts");
    let run = |check: HostKeyCheck| {
        // As above: the plain entry, whatever the machine's HashKnownHosts.
        let mut p = Parallel::builder().no_ssh_config().build().unwrap();
        p.add_host("h", host(port).host_key_check(check)).unwrap();
        p.push("h", Command::new("echo ok")).unwrap();
        p.run()
    };
    let recorded = |text: &str| text.lines().filter(|l| l.starts_with(&format!("{name} "))).count();

    let r = run(HostKeyCheck::AcceptNew);
    assert!(r.success(), "{r}");
    let text = fs::read_to_string(&known_hosts).unwrap();
    let first_key: String = first
        .host_public_key
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    assert!(text.contains(&format!("{name} {first_key}\n")), "{text}");
    assert_eq!(recorded(&text), 1);
    // Known now: accepted again without a second line, and strict accepts it.
    assert!(run(HostKeyCheck::AcceptNew).success());
    assert!(run(HostKeyCheck::Strict).success());
    assert_eq!(recorded(&fs::read_to_string(&known_hosts).unwrap()), 1);

    // The host is "reinstalled": same address and port, another host key.
    drop(first);
    let mut second = None;
    for _ in 0..50 {
        match testbed::OpenSshServer::builder()
            .authorized_key(authorized.trim())
            .port(port)
            .start()
        {
            Ok(s) => {
                second = Some(s);
                break;
            }
            // The port may linger or be taken for a moment by another test's client.
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    let second = second.expect("a second sshd on the same port");
    let fp = common::fingerprint(&second.host_public_key);
    for check in [HostKeyCheck::AcceptNew, HostKeyCheck::Strict] {
        let r = run(check);
        let e = r.label("h").unwrap().error().expect("a changed key is refused");
        assert_eq!(e.kind(), ErrorKind::Connect, "{check:?}: {e}");
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("host key verification failed for {name}")),
            "{msg}"
        );
        assert!(
            msg.contains(&fp),
            "{check:?}: names the new key's fingerprint {fp}: {msg}"
        );
        assert!(msg.contains("does not match"), "{msg}");
        assert!(msg.contains(&known_hosts.display().to_string()), "{msg}");
    }
    // Nothing was recorded over the old key.
    let text = fs::read_to_string(&known_hosts).unwrap();
    assert_eq!(recorded(&text), 1, "{text}");
    assert!(text.contains(&format!("{name} {first_key}\n")), "{text}");
    // Off does not check at all.
    let r = run(HostKeyCheck::Off);
    assert!(r.success(), "{r}");
    assert_eq!(r.label("h").unwrap().tasks()[0].stdout_str(), "ok\n");
}
