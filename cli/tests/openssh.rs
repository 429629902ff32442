//! The binary against real OpenSSH sshd servers on 127.0.0.1, every host an
//! alias of a generated `~/.ssh/config` under a temporary `$HOME` (HostName,
//! Port, User, IdentityFile, UserKnownHostsFile): node sets of aliases, the
//! login options, both timeouts, the exit statuses, every output mode, the
//! copies, and Ctrl-C. A missing sshd or a non-root run fails, or skips
//! loudly under `TESTBED_ALLOW_SKIP=1` (see `testbed::prereq`).
//!
//! sshd runs the commands on this machine, so `ps` here is `ps` on the hosts:
//! a command left running after a timeout or a Ctrl-C is seen.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use testbed::{ClientKey, OpenSshServer};

use common::{signal, wait_at_most, Out, BIN};

/// The throwaway account `scripts/setup` makes (password logins use it too).
const OTHER_USER: &str = "sshpar-test";
const OTHER_PASSWORD: &str = "sshpar-Throwaway-7";

/// Two sshd servers and a home whose `~/.ssh/config` names them:
/// `node1`, `node2` -> server a; `node3` -> server b; `nokey` -> server a
/// with no key (the default key files do not exist in this home); `silent`
/// -> a listener that never speaks SSH. Every alias logs in as the current
/// user and checks host keys against a known_hosts file of its own.
struct Bed {
    a: OpenSshServer,
    b: OpenSshServer,
    key: ClientKey,
    home: tempfile::TempDir,
    _silent: TcpListener,
}

impl Bed {
    /// `None` (after a loud skip) when sshd cannot run here.
    fn start() -> Option<Bed> {
        if let Err(e) = OpenSshServer::check_available() {
            testbed::prereq::skip(e);
            return None;
        }
        let key = ClientKey::ed25519().expect("client key");
        let a = OpenSshServer::builder().authorize(&key).start().expect("sshd a");
        let b = OpenSshServer::builder().authorize(&key).start().expect("sshd b");
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let silent_port = silent.local_addr().unwrap().port();
        let home = tempfile::tempdir().unwrap();
        let ssh = home.path().join(".ssh");
        std::fs::create_dir_all(&ssh).unwrap();
        let known = ssh.join("known_hosts_test");
        a.write_known_hosts(&known).unwrap();
        b.write_known_hosts(&known).unwrap();
        let k = key.private_path().display();
        let config = format!(
            "Host node1 node2\n  HostName 127.0.0.1\n  Port {pa}\n  IdentityFile {k}\n\
             Host node3\n  HostName 127.0.0.1\n  Port {pb}\n  IdentityFile {k}\n\
             Host nokey\n  HostName 127.0.0.1\n  Port {pa}\n\
             Host silent\n  HostName 127.0.0.1\n  Port {silent_port}\n  IdentityFile {k}\n\
             Host *\n  User {user}\n  UserKnownHostsFile {known}\n  StrictHostKeyChecking yes\n  \
             IdentitiesOnly yes\n  IdentityAgent none\n  BatchMode yes\n",
            pa = a.port,
            pb = b.port,
            user = testbed::current_user(),
            known = known.display(),
        );
        std::fs::write(ssh.join("config"), config).unwrap();
        Some(Bed {
            a,
            b,
            key,
            home,
            _silent: silent,
        })
    }

    /// The binary with nothing but `args`: the rest comes from the config.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.env("HOME", self.home.path())
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    fn run(&self, args: &[&str]) -> Out {
        let child = self.cmd(args).spawn().expect("start ssh-parallel");
        wait_at_most(child, Duration::from_secs(60))
    }

    fn key_path(&self) -> String {
        self.key.private_path().display().to_string()
    }
}

/// Prints the port of the server the command runs on (sshd's
/// `SSH_CONNECTION` ends with it): tells the hosts apart.
const SERVER_PORT: &str = "echo ${SSH_CONNECTION##* }";

/// Lines of `ps -eo pid=,args=` (the hosts' processes) containing `marker`,
/// but the process `except` (the client, whose own arguments hold it).
fn ps_with(marker: &str, except: u32) -> Vec<String> {
    let out = Command::new("ps").args(["-eo", "pid=,args="]).output().expect("ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(marker))
        .filter(|l| l.split_whitespace().next() != Some(except.to_string().as_str()))
        .map(str::to_owned)
        .collect()
}

/// Waits (at most `limit`) until no process on the hosts holds `marker`.
fn assert_none_left(marker: &str, except: u32, limit: Duration) {
    let t = Instant::now();
    loop {
        let left = ps_with(marker, except);
        if left.is_empty() {
            return;
        }
        assert!(t.elapsed() < limit, "still running {limit:?} later: {left:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `sleep` whose argument no other process on this machine has: its
/// process (not only the shell around it) can be looked for with `ps`.
fn unique_sleep() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("sleep 9{:04}{:05}", std::process::id() % 10_000, nanos % 100_000)
}

#[test]
fn aliases_node_sets_and_exclusions() {
    let Some(bed) = Bed::start() else { return };
    let (a, b) = (bed.a.port, bed.b.port);
    let out = bed.run(&["-w", "node[1-3]", "--", SERVER_PORT]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(
        out.sorted_stdout(),
        [format!("node1: {a}"), format!("node2: {a}"), format!("node3: {b}")],
        "{out:?}"
    );
    assert_eq!(out.stderr(), "", "{out:?}");

    let out = bed.run(&["-w", "node[1-3]", "-x", "node2", "--", SERVER_PORT]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(
        out.sorted_stdout(),
        [format!("node1: {a}"), format!("node3: {b}")],
        "{out:?}"
    );
    // Repeated -w, a list and a range, and -x of a set.
    let out = bed.run(&[
        "-w",
        "node1",
        "-w",
        "node[2-3],nokey",
        "-x",
        "node[2,4],nokey",
        "--",
        "echo",
        "hi",
    ]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(out.sorted_stdout(), ["node1: hi", "node3: hi"], "{out:?}");
}

#[test]
fn login_user_from_l_and_user_at_and_identity_from_i() {
    let Some(bed) = Bed::start() else { return };
    OpenSshServer::ensure_user(OTHER_USER, OTHER_PASSWORD).expect("the throwaway account");
    let me = testbed::current_user();
    let out = bed.run(&["-w", "node1", "--", "whoami"]);
    assert_eq!((out.code(), out.stdout()), (0, format!("node1: {me}\n")), "{out:?}");
    // -l wins over the config's User.
    let out = bed.run(&["-l", OTHER_USER, "-w", "node[1,3]", "--", "whoami"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(
        out.sorted_stdout(),
        [format!("node1: {OTHER_USER}"), format!("node3: {OTHER_USER}")],
        "{out:?}"
    );
    // user@ in the node set wins over -l, for that entry only.
    let at = format!("{OTHER_USER}@node1,node3");
    let out = bed.run(&["-l", &me, "-w", &at, "--", "whoami"]);
    assert_eq!(
        out.sorted_stdout(),
        [format!("node1: {OTHER_USER}"), format!("node3: {me}")],
        "{out:?}"
    );

    // No key for `nokey` in the config: the login fails, and names the host.
    let out = bed.run(&["-w", "nokey", "--", "whoami"]);
    assert_eq!(out.code(), 1, "{out:?}");
    assert_eq!(out.stdout(), "", "{out:?}");
    assert!(out.stderr().starts_with("nokey: "), "{out:?}");
    assert_eq!(out.stderr().lines().count(), 1, "{out:?}");
    let out = bed.run(&["-i", &bed.key_path(), "-w", "nokey", "--", "whoami"]);
    assert_eq!((out.code(), out.stdout()), (0, format!("nokey: {me}\n")), "{out:?}");
}

#[test]
fn o_directives_win_over_the_config_and_bad_ones_are_usage_errors() {
    let Some(bed) = Bed::start() else { return };
    let (a, b) = (bed.a.port, bed.b.port);
    let port_b = format!("Port={b}");
    let out = bed.run(&["-N", "-o", &port_b, "-w", "node1", "--", SERVER_PORT]);
    assert_eq!((out.code(), out.stdout()), (0, format!("{b}\n")), "{out:?}");
    let key = format!("IdentityFile={}", bed.key_path());
    let out = bed.run(&["-N", "-o", &key, "-w", "nokey", "--", SERVER_PORT]);
    assert_eq!((out.code(), out.stdout()), (0, format!("{a}\n")), "{out:?}");
    // `Key Value` works as well as `Key=Value`.
    let out = bed.run(&["-N", "-o", &format!("Port {b}"), "-w", "node2", "--", SERVER_PORT]);
    assert_eq!((out.code(), out.stdout()), (0, format!("{b}\n")), "{out:?}");

    for bad in ["Port=notanumber", "NoSuchDirective=1", "Port", "Host=x"] {
        let out = bed.run(&["-o", bad, "-w", "node1", "--", "true"]);
        assert_eq!(out.code(), 2, "-o {bad}: {out:?}");
        let err = out.stderr();
        assert_eq!(err.lines().count(), 1, "-o {bad}: {out:?}");
        assert!(err.starts_with("ssh-parallel: error: -o "), "-o {bad}: {out:?}");
        assert!(!err.contains("panicked"), "-o {bad}: {out:?}");
    }
}

#[test]
fn connect_timeout_ends_a_host_that_never_answers() {
    let Some(bed) = Bed::start() else { return };
    let t = Instant::now();
    let out = bed.run(&["-t", "1", "-w", "silent,node1", "--", "echo", "up"]);
    let took = t.elapsed();
    assert!(took < Duration::from_secs(10), "took {took:?}: {out:?}");
    assert_eq!(out.code(), 1, "{out:?}");
    assert_eq!(out.stdout(), "node1: up\n", "{out:?}");
    let err = out.stderr();
    assert_eq!(err.lines().count(), 1, "{out:?}");
    assert!(err.starts_with("silent: "), "{out:?}");
    assert!(
        err.to_lowercase().contains("timed out") || err.contains("timeout"),
        "{out:?}"
    );
}

#[test]
fn command_timeout_leaves_no_remote_process() {
    let Some(bed) = Bed::start() else { return };
    let sleep = unique_sleep();
    let cmd = format!("{sleep}; echo finished");
    let t = Instant::now();
    let out = bed.run(&["-u", "1", "-w", "node[1-3]", "--", &cmd]);
    assert!(t.elapsed() < Duration::from_secs(15), "{out:?}");
    assert_eq!(out.code(), 1, "{out:?}");
    assert_eq!(out.stdout(), "", "{out:?}");
    let err = out.stderr();
    assert_eq!(err.lines().count(), 1, "one reason, hosts folded: {out:?}");
    assert!(err.starts_with("node[1-3]: "), "{out:?}");
    assert!(err.contains("timeout") || err.contains("timed out"), "{out:?}");
    // The client has exited: nothing on the hosts still holds the command.
    assert_none_left(&sleep, 0, Duration::from_secs(5));
}

#[test]
fn max_status_and_the_default_exit_codes() {
    let Some(bed) = Bed::start() else { return };
    let a = bed.a.port;
    // Hosts of server a exit 3, the host of server b 5.
    let cmd = format!("test ${{SSH_CONNECTION##* }} = {a} && exit 3; exit 5");
    let out = bed.run(&["-S", "-w", "node[1-3]", "--", &cmd]);
    assert_eq!(out.code(), 5, "{out:?}");
    assert_eq!(
        out.stderr(),
        "node[1-2]: exited with status 3\nnode3: exited with status 5\n",
        "{out:?}"
    );
    let out = bed.run(&["-w", "node[1-3]", "--", &cmd]);
    assert_eq!(out.code(), 1, "{out:?}");
    let out = bed.run(&["-S", "-w", "node[1-3]", "--", "true"]);
    assert_eq!(out.code(), 0, "{out:?}");
    // A host with no exit status (it never logged in) counts as 255 under -S.
    let out = bed.run(&["-S", "-w", "node1,nokey", "--", "exit 4"]);
    assert_eq!(out.code(), 255, "{out:?}");
}

#[test]
fn no_prefix_gather_and_by_host_output_exactly() {
    let Some(bed) = Bed::start() else { return };
    let (a, b) = (bed.a.port, bed.b.port);
    let out = bed.run(&["-N", "-w", "node[1-3]", "--", SERVER_PORT]);
    assert_eq!(out.code(), 0, "{out:?}");
    let mut want = [a.to_string(), a.to_string(), b.to_string()];
    want.sort();
    assert_eq!(out.sorted_stdout(), want, "{out:?}");

    let cmd = format!("{SERVER_PORT}; echo second; echo warn >&2");
    let out = bed.run(&["-b", "-w", "node[1-3]", "--", &cmd]);
    assert_eq!(out.code(), 0, "{out:?}");
    let rule = "-".repeat(15);
    assert_eq!(
        out.stdout(),
        format!("{rule}\nnode[1-2] (2)\n{rule}\n{a}\nsecond\n{rule}\nnode3 (1)\n{rule}\n{b}\nsecond\n"),
        "{out:?}"
    );
    assert_eq!(
        out.stderr(),
        format!("{rule}\nnode[1-3] (3)\n{rule}\nwarn\n"),
        "{out:?}"
    );

    // -L: hosts in node order, whatever order -w gave them in.
    let out = bed.run(&["-L", "-w", "node3,node[1-2]", "--", &cmd]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(
        out.stdout(),
        format!("node1: {a}\nnode1: second\nnode2: {a}\nnode2: second\nnode3: {b}\nnode3: second\n"),
        "{out:?}"
    );
    assert_eq!(out.stderr(), "node1: warn\nnode2: warn\nnode3: warn\n", "{out:?}");
    let out = bed.run(&["-L", "-N", "-w", "node[1-3]", "--", "echo x"]);
    assert_eq!(out.stdout(), "x\nx\nx\n", "{out:?}");
}

#[test]
fn json_records_parse_back_and_tell_what_happened() {
    let Some(bed) = Bed::start() else { return };
    let (a, b) = (bed.a.port, bed.b.port);
    let cmd = format!("{SERVER_PORT}; echo oops >&2; test ${{SSH_CONNECTION##* }} = {a}");
    let out = bed.run(&["--json", "-w", "node[1-3],nokey", "--", &cmd]);
    assert_eq!(out.code(), 1, "{out:?}");
    let records: Vec<Value> = out.json_records();
    let lines = |host: &str, stream: &str| -> Vec<String> {
        records
            .iter()
            .filter(|r| r["type"] == "line" && r["host"] == host && r["stream"] == stream)
            .map(|r| r["line"].as_str().unwrap().to_owned())
            .collect()
    };
    for (host, port) in [("node1", a), ("node2", a), ("node3", b)] {
        assert_eq!(lines(host, "stdout"), [port.to_string()], "{host}: {out:?}");
        assert_eq!(lines(host, "stderr"), ["oops"], "{host}: {out:?}");
    }
    assert!(lines("nokey", "stdout").is_empty(), "{out:?}");
    let result = |host: &str| -> &Value {
        let found: Vec<&Value> = records
            .iter()
            .filter(|r| r["type"] == "result" && r["host"] == host)
            .collect();
        assert_eq!(found.len(), 1, "{host}: {out:?}");
        found[0]
    };
    for host in ["node1", "node2"] {
        let r = result(host);
        assert_eq!(
            (&r["status"], &r["exit_code"], &r["error"]),
            (&"succeeded".into(), &0.into(), &Value::Null),
            "{r}"
        );
        assert_eq!(r["attempts"], 1, "{r}");
        assert!(r["duration_ms"].as_f64().unwrap() >= 0.0, "{r}");
        assert!(r["started"].as_f64().unwrap() > 1.6e9, "{r}");
        assert!(r["task"].as_str().unwrap().contains("SSH_CONNECTION"), "{r}");
    }
    let r = result("node3");
    assert_eq!((&r["status"], &r["exit_code"]), (&"failed".into(), &1.into()), "{r}");
    assert!(
        r["error"]["kind"].is_string() && r["error"]["message"].is_string(),
        "{r}"
    );
    let r = result("nokey");
    assert_eq!((&r["status"], &r["exit_code"]), (&"failed".into(), &Value::Null), "{r}");
    assert!(!r["error"]["message"].as_str().unwrap().is_empty(), "{r}");
    let last = records.last().unwrap();
    assert_eq!(last["type"], "summary", "{out:?}");
    assert_eq!(
        (&last["hosts"], &last["succeeded"], &last["failed"], &last["unfinished"]),
        (&4.into(), &2.into(), &2.into(), &0.into()),
        "{last}"
    );
    assert_eq!(
        (&last["interrupted"], &last["exit_code"]),
        (&false.into(), &1.into()),
        "{last}"
    );
    assert_eq!(records.iter().filter(|r| r["type"] == "summary").count(), 1, "{out:?}");
}

#[test]
fn copy_and_rcopy() {
    let Some(bed) = Bed::start() else { return };
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("app.conf");
    std::fs::write(&src, "setting = 1\n").unwrap();
    let remote = work.path().join("remote");
    std::fs::create_dir(&remote).unwrap();
    let dest = format!("{}/", remote.display());
    let out = bed.run(&["copy", "-w", "node[1-3]", &src.display().to_string(), &dest]);
    assert_eq!(
        (out.code(), out.stdout(), out.stderr()),
        (0, String::new(), String::new()),
        "{out:?}"
    );
    assert_eq!(
        std::fs::read_to_string(remote.join("app.conf")).unwrap(),
        "setting = 1\n"
    );

    let logs = work.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let remote_file = remote.join("app.conf").display().to_string();
    let out = bed.run(&["rcopy", "-w", "node[1-3]", &remote_file, &logs.display().to_string()]);
    assert_eq!(out.code(), 0, "{out:?}");
    let mut got: Vec<PathBuf> = std::fs::read_dir(&logs).unwrap().map(|e| e.unwrap().path()).collect();
    got.sort();
    let want: Vec<PathBuf> = ["app.conf.node1", "app.conf.node2", "app.conf.node3"]
        .iter()
        .map(|n| logs.join(n))
        .collect();
    assert_eq!(got, want);
    for p in &got {
        assert_eq!(std::fs::read_to_string(p).unwrap(), "setting = 1\n", "{}", p.display());
    }
    // A remote file that does not exist: that host's copy fails, by name.
    let out = bed.run(&[
        "rcopy",
        "-w",
        "node1",
        "/nonexistent/ssh-parallel-x",
        &logs.display().to_string(),
    ]);
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(out.stderr().starts_with("node1: "), "{out:?}");
    assert!(!Path::new(&logs.join("ssh-parallel-x.node1")).exists());
}

#[test]
fn sigint_mid_run_leaves_no_remote_process_and_exits_130() {
    let Some(bed) = Bed::start() else { return };
    let sleep = unique_sleep();
    let cmd = format!("echo started; {sleep}; echo finished");
    let child = bed
        .cmd(&["-w", "node[1-3]", "--", &cmd])
        .spawn()
        .expect("start ssh-parallel");
    let pid = child.id();
    let t = Instant::now();
    // Every host's sleep is running before the interrupt.
    while ps_with(&sleep, pid)
        .iter()
        .filter(|l| l.contains("sleep 9") && !l.contains("sh -c"))
        .count()
        < 3
    {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the commands never started: {:?}",
            ps_with(&sleep, pid)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(pid, libc::SIGINT);
    let out = wait_at_most(child, Duration::from_secs(30));
    assert_eq!(out.code(), 130, "{out:?}");
    assert_eq!(
        out.sorted_stdout(),
        ["node1: started", "node2: started", "node3: started"],
        "{out:?}"
    );
    assert_eq!(out.stderr(), "node[1-3]: interrupted before it finished\n", "{out:?}");
    assert_none_left(&sleep, pid, Duration::from_secs(5));
}

#[test]
fn ipv6_literals_in_the_node_set() {
    let Some(bed) = Bed::start() else { return };
    let v6 = OpenSshServer::builder()
        .authorize(&bed.key)
        .config_line("ListenAddress ::1")
        .start()
        .expect("sshd on ::1 and 127.0.0.1");
    let me = testbed::current_user();
    let bracketed = format!("[::1]:{}", v6.port);
    let with_user = format!("{me}@[::1]:{},node1", v6.port);
    let common = [
        "-i",
        bed.key.private_path().to_str().unwrap(),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
    ];
    for hosts in [&bracketed, &with_user] {
        let mut args: Vec<&str> = common.to_vec();
        args.extend(["-w", hosts.as_str(), "--", "echo ${SSH_CONNECTION%% *}"]);
        let out = bed.run(&args);
        assert_eq!(out.code(), 0, "{hosts}: {out:?}");
        assert!(
            out.stdout().lines().any(|l| l == format!("{bracketed}: ::1")),
            "{hosts}: the client came from ::1: {out:?}"
        );
    }
    // Excluded like any other entry, and folded after the node set in the summary.
    let mut args: Vec<&str> = common.to_vec();
    let both = format!("{bracketed},nokey");
    args.extend(["-o", "IdentitiesOnly=yes", "-w", &both, "-x", "nokey", "--", "exit 7"]);
    let out = bed.run(&args);
    assert_eq!(
        (out.code(), out.stderr()),
        (1, format!("{bracketed}: exited with status 7\n")),
        "{out:?}"
    );
}
