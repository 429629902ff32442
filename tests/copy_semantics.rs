//! The destination rule of `ScpPut`/`ScpGet`, tried as a new user would, the
//! same on every way a copy runs: the local transport, and SCP and SFTP on the
//! embedded server and on OpenSSH's sshd.
//!
//! - the same call twice gives the same tree (a directory copied to a name
//!   *becomes* that name, whether it exists or not);
//! - a target ending in `/` (or several sources) is a directory to copy into;
//! - a source ending in `/` copies its contents into such a directory;
//! - `create_dirs(true)` makes the missing directories on the way, and
//!   without it a missing parent is an error naming it.

#[path = "common/copy.rs"]
mod copy;
#[path = "common/servers.rs"]
mod servers;

use std::fs;

use copy::{assert_same_tree, listing, make_file, make_tree, ps, Way};
use servers::Server;
use ssh_parallel::{ScpGet, ScpPut, TransferProtocol};

/// A directory copied to a name twice, each way: the same tree both times,
/// the copy of the source with its modes and times (no `dest/tree/` nesting).
fn twice_gives_the_same_tree(way: &Way) {
    let dir = tempfile::tempdir().unwrap();
    let tree = make_tree(dir.path());
    let (remote, back) = (dir.path().join("remote"), dir.path().join("back"));
    for round in 1..=2 {
        let report = way.run(vec![
            way.put(ScpPut::new(ps(&tree), ps(&remote)).recursive(true)),
            way.get(ScpGet::new(ps(&remote), ps(&back)).recursive(true)),
        ]);
        assert!(report.success(), "{} round {round}: {report}", way.name());
        assert_same_tree(&tree, &remote);
        assert_same_tree(&tree, &back);
        assert!(!remote.join("tree").exists(), "{} round {round}: nested", way.name());
        // The copy *is* the directory: its mode and time too.
        assert_eq!(copy::mtime(&remote), copy::mtime(&tree), "{}", way.name());
        assert_eq!(copy::mtime(&back), copy::mtime(&tree), "{}", way.name());
    }
}

/// A target ending in `/` is a directory to copy into: `dest/tree/...`, twice
/// the same; a source ending in `/` puts its contents there instead.
fn trailing_slashes(way: &Way) {
    let dir = tempfile::tempdir().unwrap();
    let tree = make_tree(dir.path());
    let d = dir.path();
    for sub in ["into", "back", "flat", "flatback"] {
        fs::create_dir(d.join(sub)).unwrap();
    }
    fs::set_permissions(d.join("flat"), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    for round in 1..=2 {
        let report = way.run(vec![
            way.put(ScpPut::new(ps(&tree), format!("{}/", ps(&d.join("into")))).recursive(true)),
            way.get(ScpGet::new(ps(&d.join("into/tree")), format!("{}/", ps(&d.join("back")))).recursive(true)),
            way.put(ScpPut::new(format!("{}/", ps(&tree)), format!("{}/", ps(&d.join("flat")))).recursive(true)),
            way.get(
                ScpGet::new(
                    format!("{}/", ps(&d.join("flat"))),
                    format!("{}/", ps(&d.join("flatback"))),
                )
                .recursive(true),
            ),
        ]);
        assert!(report.success(), "{} round {round}: {report}", way.name());
        assert_eq!(
            listing(&d.join("into")),
            [
                "tree/",
                "tree/a",
                "tree/sub/",
                "tree/sub/b",
                "tree/sub/deep/",
                "tree/sub/deep/c"
            ]
        );
        assert_same_tree(&tree, &d.join("into/tree"));
        assert_same_tree(&tree, &d.join("back/tree"));
        assert_eq!(
            listing(&d.join("flat")),
            ["a", "sub/", "sub/b", "sub/deep/", "sub/deep/c"]
        );
        assert_eq!(listing(&d.join("flatback")), listing(&tree));
        // The existing directory only took the contents: its own mode and time stay.
        assert_eq!(copy::mode(&d.join("flat")), 0o700, "{}", way.name());
        assert_ne!(copy::mtime(&d.join("flat")), copy::mtime(&tree), "{}", way.name());
    }
}

/// Several sources go into the target directory by name; a file copied onto
/// an existing directory goes into it.
fn several_sources_and_files_into_directories(way: &Way) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_file(&d.join("f1"), b"one", 0o644, 1_000_000_001);
    make_file(&d.join("f2"), b"two", 0o600, 1_000_000_002);
    for sub in ["remote", "back"] {
        fs::create_dir(d.join(sub)).unwrap();
    }
    for round in 1..=2 {
        let report = way.run(vec![
            way.put(ScpPut::many(
                [ps(&d.join("f1")), ps(&d.join("f2"))],
                ps(&d.join("remote")),
            )),
            way.get(ScpGet::many(
                [ps(&d.join("remote/f1")), ps(&d.join("remote/f2"))],
                ps(&d.join("back")),
            )),
            way.put(ScpPut::new(ps(&d.join("f1")), ps(&d.join("back")))),
        ]);
        assert!(report.success(), "{} round {round}: {report}", way.name());
        assert_eq!(listing(&d.join("remote")), ["f1", "f2"]);
        assert_eq!(listing(&d.join("back")), ["f1", "f2"]);
        assert_eq!(fs::read(d.join("back/f2")).unwrap(), b"two");
        assert_eq!(copy::mode(&d.join("back/f2")), 0o600);
    }
}

/// Missing parents: an error naming the path without `create_dirs`, made with it.
fn create_dirs(way: &Way) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_file(&d.join("f"), b"file", 0o640, 1_000_000_000);
    let tree = make_tree(d);
    let deep = d.join("x/y/f");
    let e = way.error(way.put(ScpPut::new(ps(&d.join("f")), ps(&deep))));
    assert!(e.contains("x/y"), "{}: {e}", way.name());
    let e = way.error(way.get(ScpGet::new(ps(&d.join("f")), ps(&d.join("g/h/f")))));
    assert!(e.contains("g/h"), "{}: {e}", way.name());
    let e = way.error(way.put(ScpPut::many([ps(&d.join("f")), ps(&tree)], ps(&d.join("many"))).recursive(true)));
    assert!(e.contains("many"), "{}: {e}", way.name());
    assert!(!d.join("x").exists() && !d.join("g").exists() && !d.join("many").exists());

    let report = way.run(vec![
        way.put(ScpPut::new(ps(&d.join("f")), ps(&deep)).create_dirs(true)),
        way.get(ScpGet::new(ps(&deep), ps(&d.join("g/h/f"))).create_dirs(true)),
        way.put(
            ScpPut::new(ps(&tree), ps(&d.join("t1/t2/copy")))
                .recursive(true)
                .create_dirs(true),
        ),
        way.put(
            ScpPut::many([ps(&d.join("f")), ps(&tree)], format!("{}/", ps(&d.join("many/m2"))))
                .recursive(true)
                .create_dirs(true),
        ),
        way.get(
            ScpGet::new(ps(&d.join("t1/t2/copy")), format!("{}/", ps(&d.join("gt1/gt2"))))
                .recursive(true)
                .create_dirs(true),
        ),
    ]);
    assert!(report.success(), "{}: {report}", way.name());
    assert_eq!(fs::read(&deep).unwrap(), b"file");
    assert_eq!(copy::mode(&deep), 0o640);
    assert_eq!(fs::read(d.join("g/h/f")).unwrap(), b"file");
    assert_same_tree(&tree, &d.join("t1/t2/copy"));
    assert_eq!(listing(&d.join("many/m2"))[..3], ["f", "tree/", "tree/a"]);
    assert_same_tree(&tree, &d.join("gt1/gt2/copy"));
}

/// A directory needs `recursive`; a missing source is named.
fn refusals_name_the_path(way: &Way) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tree = make_tree(d);
    let e = way.error(way.put(ScpPut::new(ps(&tree), ps(&d.join("out")))));
    assert!(e.contains(&ps(&tree)) && e.contains("recursive"), "{}: {e}", way.name());
    let e = way.error(way.get(ScpGet::new(ps(&d.join("nope")), ps(&d.join("out")))));
    assert!(e.contains("nope"), "{}: {e}", way.name());
    let e = way.error(way.put(ScpPut::new(ps(&d.join("nope")), ps(&d.join("out")))));
    assert!(e.contains("nope"), "{}: {e}", way.name());
    assert!(!d.join("out").exists());
}

macro_rules! every_way {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(#[test] fn $name() {
                super::$name(&super::Way { server: None, protocol: super::TransferProtocol::Scp })
            })*
        }
        mod embedded_scp {
            $(#[test] fn $name() {
                let s = super::Server::embedded();
                super::$name(&super::Way { server: Some(&s), protocol: super::TransferProtocol::Scp })
            })*
        }
        mod embedded_sftp {
            $(#[test] fn $name() {
                let s = super::Server::embedded();
                super::$name(&super::Way { server: Some(&s), protocol: super::TransferProtocol::Sftp })
            })*
        }
        mod openssh_scp {
            $(#[test] fn $name() {
                if let Some(s) = super::Server::openssh() {
                    super::$name(&super::Way { server: Some(&s), protocol: super::TransferProtocol::Scp })
                }
            })*
        }
        mod openssh_sftp {
            $(#[test] fn $name() {
                if let Some(s) = super::Server::openssh() {
                    super::$name(&super::Way { server: Some(&s), protocol: super::TransferProtocol::Sftp })
                }
            })*
        }
    };
}

every_way!(
    twice_gives_the_same_tree,
    trailing_slashes,
    several_sources_and_files_into_directories,
    create_dirs,
    refusals_name_the_path,
);
