//! `ScpPut`/`ScpGet` over SFTP (`.sftp()`, `.protocol(..)`, the builder's
//! `transfer_protocol`) against both servers: files with their modes and
//! times, `%VAR%` paths, trees, a 20 MB file compared by SHA-256, errors
//! naming the path (missing, permission denied), a timed-out transfer that
//! leaves the session usable, and servers where SCP cannot work (no `scp` on
//! the embedded server's `PATH`; sshd with `ForceCommand internal-sftp`)
//! while SFTP does. The destination rule is `copy_semantics`'.

mod common;
#[path = "common/copy.rs"]
mod copy;
#[path = "common/servers.rs"]
mod servers;

use std::fs;
use std::time::{Duration, UNIX_EPOCH};

use copy::{assert_same_tree, make_file, make_tree, mode, mtime, ps};
use servers::{Server, PASSWORD, USER};
use ssh_parallel::{Command, ErrorKind, Host, HostKeyCheck, Parallel, ScpGet, ScpPut, TaskStatus, TransferProtocol};

/// A file out and back over SFTP on two labels, to `%LABEL%` paths: contents,
/// mode and mtime kept both ways.
fn files_keep_modes_times_and_expand_variables(s: &Server) {
    let dir = tempfile::tempdir().unwrap();
    let d = ps(dir.path());
    make_file(&dir.path().join("src.txt"), b"hello sftp\n", 0o640, 1_234_567_890);
    for sub in ["remote", "back"] {
        fs::create_dir(dir.path().join(sub)).unwrap();
    }
    let mut p = Parallel::new();
    for l in ["l1", "l2"] {
        p.add_host(l, s.host()).unwrap();
    }
    p.all(ScpPut::new(format!("{d}/src.txt"), format!("{d}/remote/%LABEL%.txt")).sftp())
        .unwrap();
    p.all(ScpGet::new(format!("{d}/remote/%LABEL%.txt"), format!("{d}/back/%LABEL%.txt")).sftp())
        .unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
    for l in ["l1", "l2"] {
        for side in ["remote", "back"] {
            let f = dir.path().join(side).join(format!("{l}.txt"));
            assert_eq!(fs::read(&f).unwrap(), b"hello sftp\n", "{}", f.display());
            assert_eq!(mode(&f), 0o640, "{}", f.display());
            assert_eq!(
                mtime(&f),
                UNIX_EPOCH + Duration::from_secs(1_234_567_890),
                "{}",
                f.display()
            );
        }
    }
}

/// Trees and several sources over SFTP, asked for through the builder's default.
fn trees_and_several_sources_by_default(s: &Server) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tree = make_tree(d);
    make_file(&d.join("x1"), b"x1", 0o600, 1_000_000_001);
    fs::create_dir(d.join("many")).unwrap();
    fs::create_dir(d.join("manyback")).unwrap();
    let mut p = Parallel::builder()
        .transfer_protocol(TransferProtocol::Sftp)
        .build()
        .unwrap();
    p.add_host("h", s.host()).unwrap();
    p.push("h", ScpPut::new(ps(&tree), ps(&d.join("remote"))).recursive(true))
        .unwrap();
    p.push(
        "h",
        ScpGet::new(ps(&d.join("remote")), ps(&d.join("back"))).recursive(true),
    )
    .unwrap();
    p.push(
        "h",
        ScpPut::many([ps(&d.join("x1")), ps(&tree)], ps(&d.join("many"))).recursive(true),
    )
    .unwrap();
    p.push(
        "h",
        ScpGet::many(
            [ps(&d.join("many/x1")), ps(&d.join("many/tree"))],
            ps(&d.join("manyback")),
        )
        .recursive(true),
    )
    .unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
    assert_same_tree(&tree, &d.join("remote"));
    assert_same_tree(&tree, &d.join("back"));
    assert_same_tree(&d.join("many"), &d.join("manyback"));
    assert_same_tree(&tree, &d.join("manyback/tree"));
    assert_eq!(fs::read(d.join("manyback/x1")).unwrap(), b"x1");
}

/// 20 MB each way, compared by SHA-256 (several requests in flight, buffers
/// refilled many times).
fn a_big_file(s: &Server) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("big"), common::random_bytes(20 << 20, 7)).unwrap();
    let mut p = Parallel::new();
    p.add_host("h", s.host()).unwrap();
    p.push("h", ScpPut::new(ps(&d.join("big")), ps(&d.join("up"))).sftp())
        .unwrap();
    p.push("h", ScpGet::new(ps(&d.join("up")), ps(&d.join("down"))).sftp())
        .unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
    let want = common::sha256(&d.join("big"));
    assert_eq!(common::sha256(&d.join("up")), want);
    assert_eq!(common::sha256(&d.join("down")), want);
}

/// A missing remote path fails the task with an error naming it; the session
/// stays usable for the next task.
fn missing_paths_are_named(s: &Server) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_file(&d.join("f"), b"f", 0o644, 1_000_000_000);
    let missing = ps(&d.join("no/such/file"));
    let mut p = Parallel::new();
    p.add_host("h", s.host()).unwrap();
    p.push(
        "h",
        ScpGet::new(&missing, ps(&d.join("out")))
            .sftp()
            .on_error(ssh_parallel::OnError::Ignore),
    )
    .unwrap();
    p.push(
        "h",
        ScpPut::new(ps(&d.join("f")), &missing)
            .sftp()
            .on_error(ssh_parallel::OnError::Ignore),
    )
    .unwrap();
    p.push("h", Command::new("echo still-here")).unwrap();
    let report = p.run();
    let t = report.label("h").unwrap().tasks();
    for task in &t[..2] {
        assert_eq!(task.status(), TaskStatus::Ignored, "{report}");
        let e = task.error().unwrap();
        assert_eq!(e.kind(), ErrorKind::Transfer, "{e}");
        assert!(e.to_string().contains(&missing), "{e}");
    }
    assert_eq!(t[2].status(), TaskStatus::Succeeded, "{report}");
    assert_eq!(s.logins(), 1, "one session for all three tasks");
}

/// A transfer stopped by its timeout midway leaves a session that runs the
/// next tasks (the abandoned handles never block the event loop).
fn a_timed_out_transfer_leaves_the_session_usable(s: &Server) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("big"), common::random_bytes(64 << 20, 9)).unwrap();
    make_file(&d.join("small"), b"small", 0o644, 1_000_000_000);
    let mut p = Parallel::new();
    p.add_host("h", s.host()).unwrap();
    p.push(
        "h",
        ScpPut::new(ps(&d.join("big")), ps(&d.join("up")))
            .sftp()
            .timeout(Duration::from_millis(30))
            .on_error(ssh_parallel::OnError::Ignore),
    )
    .unwrap();
    p.push("h", ScpPut::new(ps(&d.join("small")), ps(&d.join("after"))).sftp())
        .unwrap();
    p.push("h", Command::new("echo ok")).unwrap();
    let report = p.run();
    let t = report.label("h").unwrap().tasks();
    assert_eq!(t[0].status(), TaskStatus::Ignored, "{report}");
    assert_eq!(t[0].error().unwrap().kind(), ErrorKind::Timeout, "{report}");
    assert_eq!(t[1].status(), TaskStatus::Succeeded, "{report}");
    assert_eq!(t[2].status(), TaskStatus::Succeeded, "{report}");
    assert_eq!(fs::read(d.join("after")).unwrap(), b"small");
}

on_both!(
    files_keep_modes_times_and_expand_variables,
    trees_and_several_sources_by_default,
    a_big_file,
    missing_paths_are_named,
    a_timed_out_transfer_leaves_the_session_usable,
);

/// Puts and gets a file with `protocol` on `host`: the two tasks' errors (`None`: it worked).
fn round_trip(host: Host, protocol: TransferProtocol) -> [Option<String>; 2] {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_file(&d.join("f"), b"payload", 0o600, 1_000_000_000);
    let mut p = Parallel::new();
    p.add_host("h", host).unwrap();
    p.push(
        "h",
        ScpPut::new(ps(&d.join("f")), ps(&d.join("up")))
            .protocol(protocol)
            .on_error(ssh_parallel::OnError::Ignore),
    )
    .unwrap();
    p.push(
        "h",
        ScpGet::new(ps(&d.join("f")), ps(&d.join("down")))
            .protocol(protocol)
            .on_error(ssh_parallel::OnError::Ignore),
    )
    .unwrap();
    let report = p.run();
    let t = report.label("h").unwrap().tasks();
    let errors = [t[0].error().map(|e| e.to_string()), t[1].error().map(|e| e.to_string())];
    if errors == [None, None] {
        assert_eq!(fs::read(d.join("up")).unwrap(), b"payload");
        assert_eq!(fs::read(d.join("down")).unwrap(), b"payload");
        assert_eq!(mode(&d.join("down")), 0o600);
    }
    errors
}

/// The embedded server with no `scp` on its `PATH` (and no built-in one):
/// SCP fails, SFTP works.
#[test]
fn embedded_server_without_scp_serves_sftp() {
    let empty = tempfile::tempdir().unwrap();
    let server = testbed::EmbeddedServer::builder()
        .password(USER, PASSWORD)
        .env("PATH", ps(empty.path()))
        .builtin_scp(false)
        .start()
        .expect("start the embedded server");
    let s = Server::Embedded(Box::new(server));
    let scp = round_trip(s.host(), TransferProtocol::Scp);
    assert!(scp.iter().all(Option::is_some), "scp cannot work there: {scp:?}");
    assert_eq!(round_trip(s.host(), TransferProtocol::Sftp), [None, None]);
}

/// sshd that runs only its sftp server (`ForceCommand internal-sftp`): SCP
/// fails, SFTP works.
#[test]
fn sftp_only_sshd_serves_sftp() {
    if !testbed::prereq::sshd() {
        return;
    }
    let key = testbed::ClientKey::ed25519().unwrap();
    let sshd = testbed::OpenSshServer::builder()
        .authorize(&key)
        .config_line("ForceCommand internal-sftp")
        .start()
        .expect("start sshd");
    let s = Server::OpenSsh(Box::new((sshd, key)));
    let scp = round_trip(s.host(), TransferProtocol::Scp);
    assert!(scp.iter().all(Option::is_some), "scp cannot work there: {scp:?}");
    assert_eq!(round_trip(s.host(), TransferProtocol::Sftp), [None, None]);
}

/// The throwaway account of the password tests (see `tests/ssh_openssh.rs`).
const TEST_USER: &str = "sshpar-test";
const TEST_PASSWORD: &str = "sshpar-Throwaway-7";

/// Permission denied, on both protocols: an unprivileged user cannot write
/// into, nor read from, a root-only directory; the error names the path.
#[test]
fn permission_denied_names_the_path() {
    if !testbed::prereq::sshd() {
        return;
    }
    match testbed::OpenSshServer::ensure_user(TEST_USER, TEST_PASSWORD) {
        Ok(()) => {}
        Err(testbed::Error::Unavailable(why)) => {
            testbed::prereq::skip(format!("the permission test needs the {TEST_USER} account: {why}"));
            return;
        }
        Err(e) => panic!("cannot create the test user {TEST_USER}: {e}"),
    }
    let sshd = testbed::OpenSshServer::builder()
        .password_logins()
        .start()
        .expect("start sshd");
    let host = || {
        Host::new("127.0.0.1")
            .port(sshd.port)
            .user(TEST_USER)
            .password(TEST_PASSWORD)
            .agent(false)
            .host_key_check(HostKeyCheck::Off)
            .connect_timeout(Duration::from_secs(10))
    };
    let closed = tempfile::tempdir().unwrap();
    fs::set_permissions(closed.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    make_file(&closed.path().join("secret"), b"s", 0o600, 1_000_000_000);
    let open = tempfile::tempdir().unwrap();
    fs::set_permissions(open.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    make_file(&open.path().join("f"), b"f", 0o644, 1_000_000_000);
    for protocol in [TransferProtocol::Scp, TransferProtocol::Sftp] {
        let mut p = Parallel::new();
        p.add_host("h", host()).unwrap();
        let ignore = ssh_parallel::OnError::Ignore;
        p.push(
            "h",
            ScpPut::new(ps(&open.path().join("f")), ps(&closed.path().join("in")))
                .protocol(protocol)
                .on_error(ignore.clone()),
        )
        .unwrap();
        p.push(
            "h",
            ScpGet::new(ps(&closed.path().join("secret")), ps(&open.path().join("out")))
                .protocol(protocol)
                .on_error(ignore),
        )
        .unwrap();
        let report = p.run();
        let t = report.label("h").unwrap().tasks();
        for (task, path) in t.iter().zip([closed.path().join("in"), closed.path().join("secret")]) {
            let e = task
                .error()
                .unwrap_or_else(|| panic!("{protocol:?}: expected a failure: {report}"));
            let text = e.to_string();
            assert!(
                text.to_lowercase().contains("permission denied"),
                "{protocol:?}: {text}"
            );
            assert!(
                text.contains(&ps(closed.path())),
                "{protocol:?}: {text} should name {}",
                path.display()
            );
        }
        assert!(!closed.path().join("in").exists());
        assert!(!open.path().join("out").exists() || fs::read(open.path().join("out")).unwrap().is_empty());
    }
}
