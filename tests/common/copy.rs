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

use ssh_parallel::{Action, Host, Parallel, Report, ScpGet, ScpPut, TransferProtocol};

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
