//! Helpers of the copy tests (`sftp_transfers`, `copy_semantics`): the ways a
//! copy can run (local, SCP or SFTP on either server), trees with known modes
//! and times, and comparing them.
//!
//! Include with `#[path = "common/copy.rs"] mod copy;` next to `servers`.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ssh_parallel::{Action, ErrorKind, Host, OnError, Parallel, Report, ScpGet, ScpPut, TaskStatus, TransferProtocol};

use crate::servers::Server;

/// Where and how a copy runs: a host, and the protocol asked for.
pub struct Way<'s> {
    pub server: Option<&'s Server>,
    pub protocol: TransferProtocol,
}

impl Way<'_> {
    pub fn host(&self) -> Host {
        match self.server {
            Some(s) => s.host(),
            None => Host::local(),
        }
    }

    pub fn name(&self) -> String {
        let server = self.server.map_or("local", |s| s.name());
        format!("{server}/{:?}", self.protocol)
    }

    /// A put with this way's protocol.
    pub fn put(&self, put: ScpPut) -> Action {
        put.protocol(self.protocol).into()
    }

    /// A get with this way's protocol.
    pub fn get(&self, get: ScpGet) -> Action {
        get.protocol(self.protocol).into()
    }

    /// Runs `actions` in order on one label (the first failure stops it).
    pub fn run(&self, actions: Vec<Action>) -> Report {
        let mut p = Parallel::new();
        p.add_host("h", self.host()).unwrap();
        for a in actions {
            p.push("h", a).unwrap();
        }
        p.run()
    }

    /// Runs one action and returns its error message, which must exist.
    pub fn error(&self, action: Action) -> String {
        let report = self.run(vec![action]);
        let t = &report.label("h").unwrap().tasks()[0];
        match t.error() {
            Some(e) => e.to_string(),
            None => panic!("{}: expected a failure, got {report}", self.name()),
        }
    }
}

/// The path as text.
pub fn ps(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

pub fn make_file(path: &Path, data: &[u8], mode: u32, mtime: u64) {
    fs::write(path, data).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    set_mtime(path, mtime);
}

pub fn set_mtime(path: &Path, secs: u64) {
    let t = UNIX_EPOCH + Duration::from_secs(secs);
    let f = fs::File::open(path).unwrap();
    f.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
        .unwrap();
}

pub fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

pub fn mtime(path: &Path) -> SystemTime {
    fs::metadata(path).unwrap().modified().unwrap()
}

/// `dir/tree`: `a` (0640), `sub/` (0750) with `b` (0755), `sub/deep/` with
/// `c`; every entry with its own mtime.
pub fn make_tree(dir: &Path) -> std::path::PathBuf {
    let tree = dir.join("tree");
    fs::create_dir_all(tree.join("sub/deep")).unwrap();
    make_file(&tree.join("a"), b"alpha", 0o640, 1_100_000_000);
    make_file(&tree.join("sub/b"), b"beta", 0o755, 1_200_000_000);
    make_file(&tree.join("sub/deep/c"), b"gamma", 0o600, 1_300_000_000);
    fs::set_permissions(tree.join("sub"), fs::Permissions::from_mode(0o750)).unwrap();
    set_mtime(&tree.join("sub/deep"), 1_350_000_000);
    set_mtime(&tree.join("sub"), 1_400_000_000);
    set_mtime(&tree, 1_450_000_000);
    tree
}

/// Every entry under `dir`, relative, sorted (directories end in `/`).
pub fn listing(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(base).unwrap().to_str().unwrap().to_owned();
            if p.is_dir() {
                out.push(format!("{rel}/"));
                walk(base, &p, out);
            } else {
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Same names, contents, modes and mtimes below `a` and `b`.
pub fn assert_same_tree(a: &Path, b: &Path) {
    assert_eq!(listing(a), listing(b), "{} vs {}", a.display(), b.display());
    for rel in listing(a) {
        let (x, y) = (a.join(&rel), b.join(&rel));
        assert_eq!(mode(&x), mode(&y), "mode of {}", y.display());
        assert_eq!(mtime(&x), mtime(&y), "mtime of {}", y.display());
        if x.is_file() {
            assert_eq!(fs::read(&x).unwrap(), fs::read(&y).unwrap(), "{}", y.display());
        }
    }
}

/// Several sources in one copy, on `host` as label `m`: `x1` (0644), `x2`
/// (0600) and the directory `xd` put into `remote/` by one put and got back
/// into `back/` by one get, then two files put onto the file `remote/x1`
/// (an error, ignored); `more` pushes any further task (paths under the
/// directory it is given). Checks the put and the get (contents, modes,
/// mtimes) and that the bad put is a transfer error naming `remote/x1`;
/// returns the report and the directory.
pub fn several_sources_into_a_directory(
    host: Host,
    more: impl FnOnce(&mut Parallel, &Path),
) -> (Report, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_file(&d.join("x1"), b"x1", 0o644, 1_000_000_001);
    make_file(&d.join("x2"), b"x2", 0o600, 1_000_000_002);
    fs::create_dir(d.join("xd")).unwrap();
    make_file(&d.join("xd/inner"), b"inner", 0o640, 1_000_000_003);
    for sub in ["remote", "back"] {
        fs::create_dir(d.join(sub)).unwrap();
    }
    let mut p = Parallel::new();
    p.add_host("m", host).unwrap();
    let put = ScpPut::many(
        [ps(&d.join("x1")), ps(&d.join("x2")), ps(&d.join("xd"))],
        ps(&d.join("remote")),
    );
    p.push("m", put.recursive(true)).unwrap();
    let got = ["x1", "x2", "xd"].map(|n| ps(&d.join("remote").join(n)));
    p.push("m", ScpGet::many(got, ps(&d.join("back"))).recursive(true))
        .unwrap();
    let onto_a_file = ScpPut::many([ps(&d.join("x1")), ps(&d.join("x2"))], ps(&d.join("remote/x1")));
    p.push("m", onto_a_file.on_error(OnError::Ignore)).unwrap();
    more(&mut p, d);
    let report = p.run();
    let t = report.label("m").unwrap().tasks();
    assert_eq!(t[0].status(), TaskStatus::Succeeded, "{report}");
    assert_eq!(t[1].status(), TaskStatus::Succeeded, "{report}");
    for sub in ["remote", "back"] {
        let base = d.join(sub);
        assert_eq!(fs::read(base.join("x1")).unwrap(), b"x1");
        assert_eq!(fs::read(base.join("x2")).unwrap(), b"x2");
        assert_eq!(mode(&base.join("x2")), 0o600);
        assert_eq!(mtime(&base.join("x2")), UNIX_EPOCH + Duration::from_secs(1_000_000_002));
        assert_eq!(fs::read(base.join("xd/inner")).unwrap(), b"inner");
    }
    let e = t[2].error().expect("an error");
    assert_eq!(e.kind(), ErrorKind::Transfer, "{e}");
    assert!(e.to_string().contains("remote/x1"), "{e}");
    (report, dir)
}
