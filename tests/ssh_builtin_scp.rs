//! `ScpPut` / `ScpGet` over SSH against the embedded server's built-in scp (no `scp`
//! binary involved): the same transfers the OpenSSH tier checks, so the examples and the
//! quickstart can copy files on a machine that has only the Rust toolchain.

#[path = "common/copy.rs"]
mod copy;
#[path = "common/servers.rs"]
mod servers;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use copy::{make_file, mode, mtime, ps, set_mtime};
use servers::{password_host, PASSWORD, USER};
use ssh_parallel::{Command, ErrorKind, Host, OnError, Parallel, ScpGet, ScpPut};
use testbed::EmbeddedServer;

/// A server whose shell does not exist: every transfer that works was served in-process.
fn scp_only_server() -> EmbeddedServer {
    EmbeddedServer::builder()
        .password(USER, PASSWORD)
        .builtin_scp(true)
        .shell("/nonexistent/no-shell")
        .start()
        .expect("start the embedded server")
}

fn host(server: &EmbeddedServer) -> Host {
    password_host(server.port())
}

/// Same names, contents, modes and mtimes, recursively, and of `a` and `b`
/// themselves (unlike `copy::assert_same_tree`, which compares what is
/// below them).
fn assert_same_tree(a: &Path, b: &Path) {
    let names = |p: &Path| {
        let mut v: Vec<_> = fs::read_dir(p).unwrap().map(|e| e.unwrap().file_name()).collect();
        v.sort();
        v
    };
    assert_eq!(names(a), names(b), "{} vs {}", a.display(), b.display());
    for n in names(a) {
        let (x, y) = (a.join(&n), b.join(&n));
        assert_eq!(mode(&x), mode(&y), "mode of {}", y.display());
        assert_eq!(mtime(&x), mtime(&y), "mtime of {}", y.display());
        if x.is_dir() {
            assert!(y.is_dir(), "{}", y.display());
            assert_same_tree(&x, &y);
        } else {
            assert!(fs::read(&x).unwrap() == fs::read(&y).unwrap(), "{}", y.display());
        }
    }
    assert_eq!(mode(a), mode(b), "mode of {}", b.display());
    assert_eq!(mtime(a), mtime(b), "mtime of {}", b.display());
}

#[test]
fn files_both_ways_with_label_in_paths_keep_content_modes_and_mtimes() {
    let server = scp_only_server();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for sub in ["local", "remote", "back"] {
        fs::create_dir(d.join(sub)).unwrap();
    }
    // 3 MB of non-repeating bytes for one label, a small executable for the other.
    let big: Vec<u8> = (0u32..3 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    make_file(&d.join("local/a.txt"), &big, 0o640, 1_000_000_000);
    make_file(&d.join("local/b.txt"), b"#!/bin/sh\n", 0o751, 1_100_000_000);
    let mut p = Parallel::new();
    for l in ["a", "b"] {
        p.add_host(l, host(&server)).unwrap();
    }
    p.all(ScpPut::new(
        format!("{}/local/%LABEL%.txt", d.display()),
        format!("{}/remote/%LABEL%-put.txt", d.display()),
    ))
    .unwrap();
    // Into an existing directory: the file keeps its name.
    p.all(ScpGet::new(
        format!("{}/remote/%LABEL%-put.txt", d.display()),
        format!("{}/back", d.display()),
    ))
    .unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
    for (l, m, t) in [("a", 0o640, 1_000_000_000), ("b", 0o751, 1_100_000_000)] {
        let src = fs::read(d.join(format!("local/{l}.txt"))).unwrap();
        for f in [
            d.join(format!("remote/{l}-put.txt")),
            d.join(format!("back/{l}-put.txt")),
        ] {
            assert!(fs::read(&f).unwrap() == src, "content of {}", f.display());
            assert_eq!(mode(&f), m, "{}", f.display());
            assert_eq!(mtime(&f), UNIX_EPOCH + Duration::from_secs(t), "{}", f.display());
        }
    }
    let commands = server.commands();
    assert_eq!(commands.len(), 4, "{commands:?}");
    assert!(commands.iter().all(|c| c.starts_with("scp ")), "{commands:?}");
}

#[test]
fn directory_trees_recursive_keep_modes_and_mtimes() {
    let server = scp_only_server();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tree = d.join("tree");
    fs::create_dir_all(tree.join("sub/deeper")).unwrap();
    fs::create_dir_all(tree.join("empty")).unwrap();
    make_file(&tree.join("f1"), b"one", 0o600, 1_200_000_000);
    make_file(&tree.join("with space 'n quote"), b"", 0o644, 1_250_000_000);
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
    p.add_host("r", host(&server)).unwrap();
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
fn several_sources_into_a_directory() {
    let server = scp_only_server();
    copy::several_sources_into_a_directory(host(&server), |_, _| {});
}

#[test]
fn remote_errors_are_transfer_errors_naming_the_path() {
    // A real shell this time, for the last command; scp still goes to the built-in.
    let server = EmbeddedServer::builder()
        .password(USER, PASSWORD)
        .builtin_scp(true)
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir_all(d.join("adir/sub")).unwrap();
    make_file(&d.join("adir/f"), b"f", 0o644, 1_000_000_000);
    let ign = OnError::Ignore;
    let mut p = Parallel::new();
    p.add_host("e", host(&server)).unwrap();
    p.push(
        "e",
        ScpGet::new(ps(&d.join("no-such-remote-file")), ps(&d.join("got"))).on_error(ign.clone()),
    )
    .unwrap();
    p.push(
        "e",
        ScpGet::new(ps(&d.join("adir")), ps(&d.join("got-dir"))).on_error(ign.clone()),
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
    assert_eq!(t[3].stdout_str(), "still-here\n", "{report}");
    assert!(
        server.commands()[..3].iter().all(|c| c.starts_with("scp ")),
        "{:?}",
        server.commands()
    );
}
