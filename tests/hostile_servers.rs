//! Hostile servers (issue 13, item 7): an SCP source that sends more, or other, than was
//! asked for (the class of CVE-2019-6111) is refused and writes nothing outside the target;
//! a handshake that never becomes SSH, a channel that is never read and a window that never
//! opens all end in a typed error by their deadlines; a host key that changes across a
//! reconnection is refused even under accept-new.

#[path = "common/servers.rs"]
mod servers;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use servers::{password_host, PASSWORD, USER};
use ssh_parallel::{Command, ErrorKind, Host, HostKeyCheck, Parallel, ScpGet, Stdin};
use testbed::{EmbeddedServer, Fault as ServerFault};

/// This test binary's scratch directory under the target dir, emptied once per process
/// (statics are never dropped, so a `TempDir` here would be left behind in /tmp).
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hostile_servers");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    })
}

/// A throwaway HOME (known_hosts lives there) for the whole test process: HOME is
/// process-wide, so it is set once, before any test connects.
fn fake_home() -> &'static Path {
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    HOME.get_or_init(|| {
        let home = scratch().join("home");
        fs::create_dir_all(home.join(".ssh")).unwrap();
        std::env::set_var("HOME", &home);
        home
    })
}

/// [`password_host`], once the fake home is set.
fn host(port: u16) -> Host {
    fake_home();
    password_host(port)
}

fn ps(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

/// A fake `scp` that speaks the source side of the protocol (it waits for each answer
/// of the sink) and sends, for the source it is asked for, the records this test names.
const FAKE_SCP: &str = r#"#!/bin/sh
for last; do :; done
ack() { dd bs=1 count=1 of=/dev/null 2>/dev/null; }
file() { printf 'C0644 5 %s\n' "$1"; ack; printf 'evil\n\000'; ack; }
ack
case "$last" in
  dotdot) file ../evil ;;
  absolute) file "@ABS@" ;;
  slash) file a/b ;;
  two) file two; file extra ;;
  renamed) file .bashrc ;;
  dir) printf 'D0755 0 dir\n'; ack; file inner; printf 'E\n'; ack ;;
  tree) printf 'T1000000000 0 1000000000 0\n'; ack; printf 'D0755 0 tree\n'; ack; file inner;
        printf 'D0755 0 sub\n'; ack; file deeper; printf 'E\n'; ack; printf 'E\n'; ack ;;
  tree-then-more) printf 'D0755 0 tree-then-more\n'; ack; file inner; printf 'E\n'; ack; file more ;;
  *) printf '\001scp: %s: unknown fake\n' "$last"; exit 1 ;;
esac
"#;

/// The embedded server running the fake `scp` (first on its commands' `PATH`; the
/// built-in scp is off so it cannot shadow it), and where it lives.
struct HostileScp {
    server: EmbeddedServer,
    /// The absolute path the fake sends as a name (must never be created).
    absolute: PathBuf,
}

fn hostile_scp() -> &'static Mutex<Option<Arc<HostileScp>>> {
    static SERVER: OnceLock<Mutex<Option<Arc<HostileScp>>>> = OnceLock::new();
    SERVER.get_or_init(|| Mutex::new(None))
}

fn hostile_scp_server() -> Arc<HostileScp> {
    fake_home();
    let mut slot = hostile_scp().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = &*slot {
        return s.clone();
    }
    let bin = scratch().join("bin");
    fs::create_dir_all(&bin).unwrap();
    let absolute = std::env::temp_dir().join(format!("hostile-abs-{}-{}", std::process::id(), rand_tag()));
    let script = bin.join("scp");
    fs::write(&script, FAKE_SCP.replace("@ABS@", &ps(&absolute))).unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", ps(&bin), std::env::var("PATH").unwrap_or_default());
    let server = EmbeddedServer::builder()
        .password(USER, PASSWORD)
        .env("PATH", path)
        .builtin_scp(false)
        .start()
        .unwrap();
    let s = Arc::new(HostileScp { server, absolute });
    *slot = Some(s.clone());
    s
}

fn rand_tag() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Names in a directory, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Runs one get from the fake scp into `target` and returns its error, if any.
fn get(source: &str, target: &Path, recursive: bool) -> Option<ssh_parallel::Error> {
    let s = hostile_scp_server();
    let mut pssh = Parallel::new();
    pssh.add_host("h", host(s.server.port())).unwrap();
    pssh.all(ScpGet::new(source, ps(target)).recursive(recursive)).unwrap();
    pssh.run();
    pssh.get_error("h").unwrap().cloned()
}

fn assert_refused(e: Option<ssh_parallel::Error>, name: &str) {
    let e = e.expect("the hostile transfer must fail");
    assert_eq!(e.kind(), ErrorKind::Transfer, "{e}");
    assert!(e.to_string().contains(&format!("{name:?}")), "names {name:?}: {e}");
}

#[test]
fn names_that_leave_the_target_are_refused_and_nothing_is_written_outside() {
    let s = hostile_scp_server();
    for (source, bad) in [
        ("dotdot", "../evil".to_owned()),
        ("slash", "a/b".to_owned()),
        ("absolute", ps(&s.absolute)),
    ] {
        let top = tempfile::tempdir().unwrap();
        let dest = top.path().join("dest");
        fs::create_dir(&dest).unwrap();
        assert_refused(get(source, &dest, false), &bad);
        assert!(names(&dest).is_empty(), "{source}: {:?}", names(&dest));
        assert_eq!(names(top.path()), ["dest"], "{source}: outside the target");
        assert!(!s.absolute.exists(), "{source}: wrote {}", s.absolute.display());
        // The same refusal when the target is a file name, not a directory.
        let file = dest.join("file");
        assert_refused(get(source, &file, false), &bad);
        assert!(!file.exists(), "{source}");
        assert_eq!(names(top.path()), ["dest"], "{source}: outside the target");
    }
}

#[test]
fn more_or_other_files_than_asked_for_are_refused() {
    let top = tempfile::tempdir().unwrap();
    let dest = top.path().join("dest");
    fs::create_dir(&dest).unwrap();
    // A second top-level record: the first (asked for) arrives, the extra never does.
    assert_refused(get("two", &dest, false), "extra");
    assert_eq!(names(&dest), ["two"]);
    // ... nor does it overwrite a file target.
    let single = top.path().join("single");
    let e = get("two", &single, false);
    assert_refused(e, "extra");
    assert_eq!(fs::read(&single).unwrap(), b"evil\n");
    // A name other than the one asked for (a dotfile in the target, say).
    assert_refused(get("renamed", &dest, false), ".bashrc");
    assert!(!dest.join(".bashrc").exists());
    // A directory for a get that is not recursive.
    assert_refused(get("dir", &dest, false), "dir");
    assert!(!dest.join("dir").exists());
    // A recursive get takes the directory (into `dest/`: a target ending in
    // `/`), but not a top-level record after it.
    assert_refused(get("tree-then-more", &dest.join(""), true), "more");
    assert_eq!(names(&dest.join("tree-then-more")), ["inner"]);
    assert!(!dest.join("more").exists());
    assert_eq!(names(top.path()), ["dest", "single"]);
}

#[test]
fn a_well_formed_recursive_get_from_the_fake_still_works() {
    let top = tempfile::tempdir().unwrap();
    // Into the directory (a target ending in `/`): top/tree.
    let e = get("tree", &top.path().join(""), true);
    assert!(e.is_none(), "{e:?}");
    assert_eq!(names(&top.path().join("tree")), ["inner", "sub"]);
    assert_eq!(fs::read(top.path().join("tree/sub/deeper")).unwrap(), b"evil\n");
}

/// Runs `command` on a server with `fault` (connect timeout 2 s) and returns the error
/// it must end with and how long the run took.
fn fault_error(fault: ServerFault, command: Command) -> (ssh_parallel::Error, Duration) {
    let server = EmbeddedServer::builder()
        .password(USER, PASSWORD)
        .fault(fault)
        .start()
        .unwrap();
    let mut pssh = Parallel::new();
    pssh.add_host("x", host(server.port()).connect_timeout(Duration::from_secs(2)))
        .unwrap();
    pssh.all(command).unwrap();
    let start = Instant::now();
    pssh.run();
    let e = pssh.get_error("x").unwrap().cloned().expect("an error");
    (e, start.elapsed())
}

#[test]
fn endless_banner_and_garbage_after_the_banner_are_connect_errors_in_time() {
    for fault in [ServerFault::EndlessBanner, ServerFault::GarbageAfterBanner] {
        let (e, took) = fault_error(fault.clone(), Command::new("true"));
        eprintln!("{fault:?} after {took:?}: {e}");
        assert_eq!(e.kind(), ErrorKind::Connect, "{fault:?}: {e}");
        // Generous: this asserts "no hang", not speed (connect_timeout is 2 s).
        assert!(took < Duration::from_secs(15), "{fault:?} took {took:?}");
    }
}

/// Sends `stdin` to `cat` on a server with `fault`, under a task timeout of 2 s.
fn stdin_error(fault: ServerFault, stdin: Vec<u8>) -> (ssh_parallel::Error, Duration) {
    let cat = Command::new("cat >/dev/null")
        .stdin(Stdin::data(stdin))
        .timeout(Duration::from_secs(2));
    fault_error(fault, cat)
}

#[test]
fn a_server_that_never_reads_stdin_ends_in_a_timeout() {
    let (e, took) = stdin_error(ServerFault::NeverReadChannels, vec![b'x'; 10 << 20]);
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

#[test]
fn a_window_that_never_opens_ends_in_a_timeout() {
    let (e, took) = stdin_error(ServerFault::ZeroWindow, vec![b'x'; 1 << 20]);
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

#[test]
fn a_host_key_changed_across_a_reconnection_is_refused_under_accept_new() {
    let home = fake_home();
    let first = EmbeddedServer::builder().password(USER, PASSWORD).start().unwrap();
    let port = first.port();
    let first_key = first.host_key_openssh();
    let first = Arc::new(Mutex::new(Some(first)));
    // Once the second command runs on the first server, replace the server: same port,
    // another host key; the client's reconnection then meets the new key.
    let swapper = {
        let first = first.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let started = first.lock().unwrap().as_ref().map_or(0, |s| s.commands().len());
                if started >= 2 || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            if let Some(mut server) = first.lock().unwrap().take() {
                server.stop();
            }
            // The old listener's runtime may take a moment to let the port go.
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match EmbeddedServer::builder().password(USER, PASSWORD).port(port).start() {
                    Ok(server) => return server,
                    Err(e) if Instant::now() > deadline => panic!("restart on port {port}: {e}"),
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        })
    };
    let mut pssh = Parallel::builder()
        .reconnections(1)
        .reconnect_delay(Duration::from_secs(3))
        .build()
        .unwrap();
    pssh.add_host("k", host(port).host_key_check(HostKeyCheck::AcceptNew))
        .unwrap();
    pssh.all(Command::new("echo first")).unwrap();
    pssh.all(Command::new("sleep 30")).unwrap();
    let start = Instant::now();
    let report = pssh.run();
    let second = swapper.join().unwrap();
    assert!(start.elapsed() < Duration::from_secs(30), "{:?}", start.elapsed());
    assert_eq!(report.label("k").unwrap().tasks()[0].stdout_str(), "first\n");
    let e = pssh.get_error("k").unwrap().expect("the reconnection must be refused");
    eprintln!("{e}");
    assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
    assert!(e.to_string().contains("does not match"), "{e}");
    assert!(
        second.stats().connections >= 1,
        "the reconnection reached the new server"
    );
    assert_eq!(
        second.stats().authenticated,
        0,
        "no login on a server with the wrong key"
    );
    let known = fs::read_to_string(home.join(".ssh/known_hosts")).unwrap();
    let key_of = |line: &str| line.split_whitespace().skip(1).collect::<Vec<_>>().join(" ");
    // Entries may be hashed (`HashKnownHosts yes` in the machine's
    // /etc/ssh/ssh_config, as on Debian): match them by key. The file
    // belongs to this test's own home and holds this server only.
    let second_key = second.host_key_openssh();
    assert_ne!(second_key, first_key);
    let recorded: Vec<String> = known
        .lines()
        .map(key_of)
        .filter(|k| *k == first_key || *k == second_key)
        .collect();
    assert_eq!(recorded, [first_key.as_str()], "{known}");
}
