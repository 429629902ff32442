//! The `ssh-parallel` binary as a process, against embedded SSH servers.
//!
//! The servers listen on 127.0.0.1 only (other loopback addresses do not
//! reach them), so hosts are `127.0.0.1:PORT` node-set entries. Each server
//! runs commands in its own directory, holding an `id.txt` that tells the
//! hosts apart.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use testbed::{ClientKey, EmbeddedServer};

const BIN: &str = env!("CARGO_BIN_EXE_ssh-parallel");
const USER: &str = "alice";

struct Cluster {
    servers: Vec<EmbeddedServer>,
    dirs: Vec<tempfile::TempDir>,
    key: ClientKey,
    home: tempfile::TempDir,
}

impl Cluster {
    /// One server per entry of `ids`, in port order, each with `id.txt`
    /// holding its id.
    fn start(ids: &[&str]) -> Cluster {
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

    fn host(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.servers[i].port())
    }

    fn dir(&self, i: usize) -> &Path {
        self.dirs[i].path()
    }

    /// `127.0.0.1:[p1,p2,...]` for the servers at `idx`.
    fn nodeset(&self, idx: &[usize]) -> String {
        let ports: Vec<String> = idx.iter().map(|&i| self.servers[i].port().to_string()).collect();
        format!("127.0.0.1:[{}]", ports.join(","))
    }

    /// The folded node set ssh-parallel prints for the servers at `idx`.
    fn folded(&self, idx: &[usize]) -> String {
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
    fn cmd(&self) -> Command {
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

    fn run(&self, args: &[&str]) -> Out {
        Out(self.cmd().args(args).output().expect("run ssh-parallel"))
    }
}

struct Out(Output);

impl Out {
    fn stdout(&self) -> String {
        String::from_utf8(self.0.stdout.clone()).unwrap()
    }
    fn stderr(&self) -> String {
        String::from_utf8(self.0.stderr.clone()).unwrap()
    }
    fn code(&self) -> i32 {
        self.0.status.code().expect("exited, not killed")
    }
    fn sorted_stdout(&self) -> Vec<String> {
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

#[test]
fn live_lines_are_prefixed_stderr_goes_to_stderr_and_exclusions_apply() {
    let c = Cluster::start(&["a", "b", "c"]);
    let out = c.run(&[
        "-w",
        &c.nodeset(&[0, 1, 2]),
        "-x",
        &c.host(1),
        "--",
        "cat id.txt; echo warn >&2",
    ]);
    assert_eq!(out.code(), 0, "{out:?}");
    let want = vec![format!("{}: a", c.host(0)), format!("{}: c", c.host(2))];
    assert_eq!(out.sorted_stdout(), want, "{out:?}");
    let stderr = out.stderr();
    let mut err: Vec<&str> = stderr.lines().collect();
    err.sort();
    assert_eq!(
        err,
        [format!("{}: warn", c.host(0)), format!("{}: warn", c.host(2))],
        "{out:?}"
    );
    assert!(!out.stdout().contains('\x1b'), "no colour into a pipe: {out:?}");

    let out = c.run(&["-N", "-w", &c.nodeset(&[0, 1]), "--", "cat", "id.txt"]);
    assert_eq!(out.sorted_stdout(), ["a", "b"], "{out:?}");
}

#[test]
fn gather_groups_identical_output_under_folded_node_sets() {
    let c = Cluster::start(&["same", "same", "other"]);
    let out = c.run(&[
        "-b",
        "-w",
        &c.nodeset(&[0, 1, 2]),
        "--",
        "cat id.txt; test $(cat id.txt) = same",
    ]);
    assert_eq!(out.code(), 1, "{out:?}");
    let rule = "-".repeat(15);
    let want = format!(
        "{rule}\n{} (2)\n{rule}\nsame\n{rule}\n{} (1) exit 1\n{rule}\nother\n",
        c.folded(&[0, 1]),
        c.folded(&[2])
    );
    assert_eq!(out.stdout(), want, "{out:?}");
    assert_eq!(
        out.stderr(),
        format!("{}: exited with status 1\n", c.host(2)),
        "{out:?}"
    );
}

#[test]
fn by_host_lists_hosts_in_node_order_after_completion() {
    let c = Cluster::start(&["x", "y", "z"]);
    // The first host is the slowest: live order would put it last.
    let slow = format!("{}/id.txt", c.dir(0).display());
    let cmd = format!("grep -q x {slow} && sleep 0.5; cat id.txt; echo done");
    let out = c.run(&["-L", "-w", &c.nodeset(&[0, 1, 2]), "--", &cmd]);
    assert_eq!(out.code(), 0, "{out:?}");
    let want: String = (0..3)
        .map(|i| format!("{h}: {}\n{h}: done\n", ["x", "y", "z"][i], h = c.host(i)))
        .collect();
    assert_eq!(out.stdout(), want, "{out:?}");
    let out = c.run(&["-L", "-N", "-w", &c.nodeset(&[0, 1, 2]), "--", "cat id.txt"]);
    assert_eq!(out.stdout(), "x\ny\nz\n", "{out:?}");
}

#[test]
fn json_lines_carry_lines_results_and_a_summary() {
    let c = Cluster::start(&["a", "b"]);
    let refused = closed_port();
    let hosts = format!("{},127.0.0.1:{refused}", c.nodeset(&[0, 1]));
    let out = c.run(&["--json", "-vvv", "-w", &hosts, "--", "cat id.txt; echo e >&2; exit 2"]);
    assert_eq!(out.code(), 1, "{out:?}");
    let records: Vec<Value> = out
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    let of = |t: &'static str| records.iter().filter(move |r| r["type"] == t);
    let mut lines: Vec<(String, String, String)> = of("line")
        .map(|r| {
            (
                r["host"].as_str().unwrap().into(),
                r["stream"].as_str().unwrap().into(),
                r["line"].as_str().unwrap().into(),
            )
        })
        .collect();
    lines.sort();
    let want = |i: usize, s: &str, l: &str| (c.host(i), s.to_owned(), l.to_owned());
    assert_eq!(
        lines,
        [
            want(0, "stderr", "e"),
            want(0, "stdout", "a"),
            want(1, "stderr", "e"),
            want(1, "stdout", "b")
        ]
    );
    let results: Vec<&Value> = of("result").collect();
    assert_eq!(results.len(), 3, "{out:?}");
    for r in &results {
        assert_eq!(r["status"], "failed");
        assert!(r["duration_ms"].is_u64() && r["attempts"].is_u64(), "{r}");
        if r["host"] == format!("127.0.0.1:{refused}") {
            assert_eq!(r["exit_code"], Value::Null);
            assert_eq!(r["error"]["kind"], "connect", "{r}");
        } else {
            assert_eq!(r["exit_code"], 2);
            assert_eq!(r["error"]["kind"], "command", "{r}");
            assert!(r["started"].is_f64(), "{r}");
        }
    }
    let last = records.last().unwrap();
    assert_eq!(last["type"], "summary");
    assert_eq!(
        (
            last["hosts"].as_u64(),
            last["failed"].as_u64(),
            last["succeeded"].as_u64()
        ),
        (Some(3), Some(3), Some(0))
    );
    assert_eq!(last["exit_code"], 1);
    assert_eq!(last["interrupted"], false);
    assert!(
        out.stderr()
            .contains(&format!("{}: exited with status 2", c.folded(&[0, 1]))),
        "{out:?}"
    );
}

#[test]
fn exit_codes_with_and_without_max_status_and_the_failure_summary() {
    let c = Cluster::start(&["3", "7", "0"]);
    let all = c.nodeset(&[0, 1, 2]);
    let ok = c.run(&["-w", &all, "--", "true"]);
    assert_eq!(
        (ok.code(), ok.stdout().as_str(), ok.stderr().as_str()),
        (0, "", ""),
        "{ok:?}"
    );
    let out = c.run(&["-w", &all, "--", "exit $(cat id.txt)"]);
    assert_eq!(out.code(), 1, "{out:?}");
    let summary = format!(
        "{}: exited with status 3\n{}: exited with status 7\n",
        c.host(0),
        c.host(1)
    );
    assert_eq!(out.stderr(), summary);
    let out = c.run(&["-S", "-w", &all, "--", "exit $(cat id.txt)"]);
    assert_eq!(out.code(), 7, "{out:?}");

    // Hosts failing the same way share one line, under a folded node set.
    let r1 = closed_port();
    let r2 = std::iter::repeat_with(closed_port).find(|p| *p != r1).unwrap();
    let hosts = format!("{},127.0.0.1:[{r1},{r2}]", c.host(2));
    let out = c.run(&["-S", "-w", &hosts, "--", "true"]);
    assert_eq!(out.code(), 255, "{out:?}");
    let (lo, hi) = (r1.min(r2), r1.max(r2));
    let set = if hi == lo + 1 {
        format!("127.0.0.1:[{lo}-{hi}]")
    } else {
        format!("127.0.0.1:[{lo},{hi}]")
    };
    assert_eq!(
        out.stderr(),
        format!("{set}: connect: Connection refused (os error 111)\n"),
        "{out:?}"
    );
}

#[test]
fn usage_errors_are_one_line_and_exit_2() {
    let c = Cluster::start(&["a"]);
    let h = c.host(0);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["-w", "web[1-", "--", "true"], "invalid node set"),
        (
            vec!["-w", &h, "-o", "ProxyJump=bastion", "--", "true"],
            "unsupported ssh_config directive \"ProxyJump\"",
        ),
        (
            vec!["-w", &h, "-o", "Port=http", "--", "true"],
            "Port must be a port number",
        ),
        (
            vec!["-w", "no-such-host.invalid", "--", "true"],
            "unknown host no-such-host.invalid",
        ),
        (vec!["-w", &h, "-x", &h, "--", "true"], "empty"),
        (vec!["--", "true"], "no hosts"),
        (vec!["-w", "^/nonexistent/hosts", "--", "true"], "cannot read host file"),
        (
            vec!["copy", "--sftp", "-w", &h, "Cargo.toml", "x"],
            "--sftp is not supported yet",
        ),
        (vec!["copy", "-w", &h, "/nonexistent/file", "x"], "does not exist"),
        (vec!["-w", &h, "-f", "0", "--", "true"], "fanout"),
        (vec!["-w", &h, "-u", "0", "--", "true"], "timeout"),
    ];
    for (args, needle) in cases {
        let out = c.run(&args);
        assert_eq!(out.code(), 2, "{args:?}: {out:?}");
        let err = out.stderr();
        assert_eq!(err.lines().count(), 1, "{args:?}: {out:?}");
        assert!(
            err.starts_with("ssh-parallel: error: ") && err.contains(needle),
            "{args:?}: {out:?}"
        );
        assert_eq!(out.stdout(), "", "{args:?}");
    }
    // clap's own errors exit 2 too.
    let out = c.run(&["--no-such-flag"]);
    assert_eq!(out.code(), 2, "{out:?}");
    assert!(!out.stderr().contains("panicked"), "{out:?}");
}

#[test]
fn host_files_stdin_and_user_prefixes() {
    let c = Cluster::start(&["a", "b"]);
    let file = c.home.path().join("hosts");
    std::fs::write(&file, format!("# web tier\n{}  # first\n\n", c.host(0))).unwrap();
    let hat = format!("^{}", file.display());
    let mut child = c
        .cmd()
        .args(["-N", "-w", &hat, "-w", "-", "--", "cat id.txt"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{}", c.host(1)).unwrap();
    let out = Out(child.wait_with_output().unwrap());
    assert_eq!(out.sorted_stdout(), ["a", "b"], "{out:?}");

    // `bob@` overrides -l for that entry only; bob has no key there.
    let hosts = format!("bob@{},{}", c.host(0), c.host(1));
    let out = c.run(&["-N", "-w", &hosts, "--", "cat id.txt"]);
    assert_eq!((out.code(), out.stdout().as_str()), (1, "b\n"), "{out:?}");
    assert!(
        out.stderr().starts_with(&format!("{}: connect: ", c.host(0))),
        "{out:?}"
    );
}

#[test]
fn command_timeout_and_fanout() {
    let c = Cluster::start(&["a", "b", "c"]);
    let all = c.nodeset(&[0, 1, 2]);
    let t = Instant::now();
    let out = c.run(&["-u", "0.5", "-w", &c.host(0), "--", "sleep 10"]);
    assert!(t.elapsed() < Duration::from_secs(5), "{out:?}");
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(
        out.stderr().starts_with(&format!("{}: timeout: ", c.host(0))),
        "{out:?}"
    );

    let t = Instant::now();
    let out = c.run(&["-f", "1", "-w", &all, "--", "sleep 0.4"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(
        t.elapsed() >= Duration::from_millis(1200),
        "one host at a time: {:?}",
        t.elapsed()
    );
}

#[test]
fn copy_and_rcopy_with_scp_and_rsync() {
    let c = Cluster::start(&["a", "b"]);
    let all = c.nodeset(&[0, 1]);
    let src = c.home.path().join("payload.txt");
    std::fs::write(&src, "payload\n").unwrap();
    let src = src.to_str().unwrap();
    for (flag, name) in [(None, "scp.txt"), (Some("--rsync"), "rsync.txt")] {
        let mut args = vec!["copy", "-w", &all];
        args.extend(flag);
        args.extend([src, name]);
        let out = c.run(&args);
        assert_eq!(out.code(), 0, "{out:?}");
        for i in 0..2 {
            assert_eq!(std::fs::read_to_string(c.dir(i).join(name)).unwrap(), "payload\n");
        }
    }
    for flag in [None, Some("--rsync")] {
        let local = tempfile::tempdir().unwrap();
        let mut args = vec!["rcopy", "-w", &all];
        args.extend(flag);
        args.extend(["id.txt", local.path().to_str().unwrap()]);
        let out = c.run(&args);
        assert_eq!(out.code(), 0, "{out:?}");
        for (i, id) in ["a", "b"].iter().enumerate() {
            let copy: PathBuf = local.path().join(format!("id.txt.{}", c.host(i)));
            assert_eq!(std::fs::read_to_string(&copy).unwrap(), format!("{id}\n"), "{flag:?}");
        }
    }
}

#[test]
fn no_progress_display_when_stderr_is_piped() {
    let c = Cluster::start(&["a"]);
    for mode in ["-b", "--json", "-L"] {
        let out = c.run(&[mode, "-w", &c.host(0), "--", "sleep 0.3; true"]);
        assert_eq!(out.code(), 0, "{out:?}");
        assert_eq!(out.stderr(), "", "{mode}: {out:?}");
    }
}

#[test]
fn first_ctrl_c_prints_the_summary_and_exits_130() {
    let c = Cluster::start(&["fast", "slow"]);
    let cmd = "grep -q slow id.txt && sleep 30; cat id.txt";
    let child = c
        .cmd()
        .args(["-w", &c.nodeset(&[0, 1]), "--", cmd])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the fast host's line, then interrupt.
    std::thread::sleep(Duration::from_millis(1500));
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on the pid of our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let t = Instant::now();
    let out = Out(child.wait_with_output().unwrap());
    assert!(t.elapsed() < Duration::from_secs(10), "{out:?}");
    assert_eq!(out.code(), 130, "{out:?}");
    let slow = if std::fs::read_to_string(c.dir(0).join("id.txt")).unwrap() == "slow\n" {
        0
    } else {
        1
    };
    assert_eq!(out.stdout(), format!("{}: fast\n", c.host(1 - slow)), "{out:?}");
    assert_eq!(
        out.stderr(),
        format!("{}: interrupted before it finished\n", c.host(slow)),
        "{out:?}"
    );
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Runs the binary in a pseudo-terminal through util-linux `script`; `None`
/// where `script` is missing.
fn in_pty(c: &Cluster, args: &[&str], no_color: bool) -> Option<String> {
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

#[test]
fn on_a_terminal_progress_is_drawn_and_colour_honours_no_color() {
    let c = Cluster::start(&["a", "b"]);
    let all = c.nodeset(&[0, 1]);
    let Some(screen) = in_pty(&c, &["-b", "-w", &all, "--", "sleep 1; cat id.txt"], false) else {
        eprintln!("skipped: no `script` to make a pseudo-terminal");
        return;
    };
    assert!(
        screen.contains("2/2 done, 0 failed") || screen.contains("/2 done, "),
        "{screen:?}"
    );
    assert!(screen.contains("\x1b[34m"), "gathered headers are coloured: {screen:?}");
    let screen = in_pty(&c, &["-b", "-w", &all, "--", "sleep 1; cat id.txt"], true).unwrap();
    assert!(screen.contains("/2 done, "), "{screen:?}");
    assert!(!screen.contains("\x1b[34m"), "NO_COLOR: {screen:?}");
    let screen = in_pty(&c, &["-w", &all, "--", "cat id.txt"], false).unwrap();
    assert!(
        screen.contains(&format!("\x1b[36m{}: \x1b[0ma", c.host(0))),
        "{screen:?}"
    );
    assert!(
        !screen.contains(" done, "),
        "no progress display with live output: {screen:?}"
    );
}

#[test]
fn ssh_config_directives_and_the_connect_timeout() {
    let c = Cluster::start(&["a"]);
    let port = c.servers[0].port().to_string();
    let key = c.key.private_path().display().to_string();
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .env("HOME", c.home.path())
            .env_remove("SSH_AUTH_SOCK")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        Out(out)
    };
    let port_opt = format!("Port={port}");
    let user_opt = format!("User={USER}");
    let key_opt = format!("IdentityFile={key}");
    let base = [
        "-N",
        "-o",
        &port_opt,
        "-o",
        &user_opt,
        "-o",
        &key_opt,
        "-o",
        "IdentityAgent=none",
    ];
    // The host key is unknown: the default (strict) refuses it.
    let out = run(&[&base[..], &["-w", "127.0.0.1", "--", "cat id.txt"]].concat());
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(out.stderr().starts_with("127.0.0.1: connect: "), "{out:?}");
    // accept-new records it in $HOME/.ssh/known_hosts; strict then accepts it.
    std::fs::create_dir_all(c.home.path().join(".ssh")).unwrap();
    for check in ["accept-new", "yes"] {
        let opt = format!("StrictHostKeyChecking={check}");
        let out = run(&[&base[..], &["-o", &opt, "-w", "127.0.0.1", "--", "cat id.txt"]].concat());
        assert_eq!((out.code(), out.stdout().as_str()), (0, "a\n"), "{check}: {out:?}");
    }

    // A listener that never speaks SSH: only the connect timeout ends it.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_host = format!("127.0.0.1:{}", silent.local_addr().unwrap().port());
    let t = Instant::now();
    let out = run(&[
        "-t",
        "0.5",
        "-w",
        &silent_host,
        "-o",
        "StrictHostKeyChecking=no",
        "--",
        "true",
    ]);
    assert!(t.elapsed() < Duration::from_secs(5), "{out:?}");
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(
        out.stderr().starts_with(&format!("{silent_host}: connect: ")),
        "{out:?}"
    );
}
