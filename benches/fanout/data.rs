//! The test data on tmpfs (a big random file, a tree of small files) and the on-disk state
//! around each run of a transfer: prepared before, checked and removed after.
//!
//! Invariant: every run starts from the same state: what a transfer writes is removed
//! after each run, checked or not.

use std::fs;
use std::path::{Path, PathBuf};

use crate::tools::Work;

/// One mebibyte.
pub const MIB: u64 = 1024 * 1024;

/// The data the transfer cases copy, under `root` (on `/dev/shm`).
pub struct Data {
    /// The directory everything is under (removed at the end of the bench).
    pub root: PathBuf,
    /// A file of random bytes.
    pub big: PathBuf,
    /// Its size (a whole number of MiB).
    pub big_bytes: u64,
    /// A directory of small files, in 20 subdirectories.
    pub tree: PathBuf,
    /// How many files `tree` holds.
    pub tree_files: usize,
}

/// Creates the data afresh (20 MiB for the big file in a quick run, else 100 MiB).
pub fn make_data(quick: bool) -> std::io::Result<Data> {
    // tmpfs, so that no disk speed shows in the transfer cases.
    // `FANOUT_DATA` moves it, for runs that share the machine with another bench.
    let root =
        std::env::var_os("FANOUT_DATA").map_or_else(|| PathBuf::from("/dev/shm/ssh-parallel-fanout"), PathBuf::from);
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root)?;
    let big_bytes = if quick { 20 * MIB } else { 100 * MIB };
    let big = root.join("big");
    {
        use std::io::{Read, Write};
        let mut src = fs::File::open("/dev/urandom")?;
        let mut dst = fs::File::create(&big)?;
        let mut buf = vec![0u8; MIB as usize];
        for _ in 0..big_bytes / MIB {
            src.read_exact(&mut buf)?;
            dst.write_all(&buf)?;
        }
    }
    let tree = root.join("tree");
    let tree_files = 1000;
    for i in 0..tree_files {
        let dir = tree.join(format!("d{}", i % 20));
        fs::create_dir_all(&dir)?;
        let size = 200 + (i * 37) % 4000;
        fs::write(dir.join(format!("f{i}.txt")), vec![b'a' + (i % 26) as u8; size])?;
    }
    fs::create_dir_all(root.join("remote"))?;
    Ok(Data {
        root,
        big,
        big_bytes,
        tree,
        tree_files,
    })
}

/// Before a run: the state the work starts from. After: check it was done; clean up.
pub fn prepare(work: &Work) {
    match work {
        Work::Run { .. } => {}
        Work::Put { remote, .. } => {
            let _ = fs::remove_file(remote);
            if let Some(p) = remote.parent() {
                let _ = fs::create_dir_all(p);
            }
        }
        Work::Get { local_dir, .. } => {
            let _ = fs::remove_dir_all(local_dir);
            let _ = fs::create_dir_all(local_dir);
        }
        Work::Rsync { remote_dir, .. } => {
            let _ = fs::remove_dir_all(remote_dir);
            let _ = fs::create_dir_all(remote_dir);
        }
    }
}

pub fn files_under(dir: &Path, out: &mut Vec<(PathBuf, u64)>) {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                files_under(&e.path(), out);
            } else if md.is_file() {
                out.push((e.path(), md.len()));
            }
        }
    }
}

pub fn verify_and_clean(work: &Work, n: usize) -> Result<(), String> {
    let r = match work {
        Work::Run { .. } => Ok(()),
        Work::Put { remote, bytes, .. } => match fs::metadata(remote) {
            Ok(m) if m.len() == *bytes => Ok(()),
            Ok(m) => Err(format!("remote file has {} bytes, expected {bytes}", m.len())),
            Err(e) => Err(format!("remote file missing: {e}")),
        },
        Work::Get { local_dir, bytes, .. } => {
            let mut f = Vec::new();
            files_under(local_dir, &mut f);
            let good = f.iter().filter(|(_, l)| l == bytes).count();
            if good == n {
                Ok(())
            } else {
                Err(format!("{good} complete local copies, expected {n}"))
            }
        }
        Work::Rsync { remote_dir, files, .. } => {
            let mut f = Vec::new();
            files_under(remote_dir, &mut f);
            if f.len() == n * files {
                Ok(())
            } else {
                Err(format!("{} files arrived, expected {}", f.len(), n * files))
            }
        }
    };
    match work {
        Work::Put { remote, .. } => {
            let _ = fs::remove_file(remote);
        }
        Work::Get { local_dir, .. } => {
            let _ = fs::remove_dir_all(local_dir);
        }
        Work::Rsync { remote_dir, .. } => {
            let _ = fs::remove_dir_all(remote_dir);
        }
        Work::Run { .. } => {}
    }
    r
}
