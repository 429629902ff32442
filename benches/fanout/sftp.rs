//! The SFTP cases of the suite: the same big file as the `put-10` / `get-10` rows, to
//! and from 10 labels of the OpenSSH tier, over SFTP: ours (`ScpPut`/`ScpGet` with
//! `TransferProtocol::Sftp`) against parallel-ssh's `copy_file` / `copy_remote_file`
//! (its SFTP). Our SCP time is the `put-10` / `get-10` row of the same run.
//!
//! Invariant: the work is the SCP rows' work with `sftp` set, so the rows compare the
//! protocol and nothing else.
//!
//! May use: `cases`, `data`, `tools`.

use std::time::Duration;

use crate::cases::{Case, Tier};
use crate::data::{Data, MIB};
use crate::tools::{Tool, Work};

/// `sftp-put-10` and (unless quick) `sftp-get-10`.
pub fn cases(d: &Data, quick: bool, rounds: usize) -> Vec<Case> {
    let mb = d.big_bytes / MIB;
    let mk = |id: &str, title: String, work: Work| Case {
        id: id.into(),
        title,
        tier: Tier::OpenSsh,
        n: 10,
        work,
        tools: vec![Tool::Ours, Tool::ParallelSsh],
        skipped: vec![(Tool::Pssh, "no SFTP mode".into()), (Tool::Pdsh, "no SFTP mode".into())],
        rounds,
        warmup: 0,
        timeout: Duration::from_secs(300),
        workers: None,
    };
    let mut v = vec![mk(
        "sftp-put-10",
        format!("SFTP put {mb} MiB to 10 labels (OpenSSH)"),
        Work::Put {
            local: d.big.clone(),
            remote: d.root.join("remote/big"),
            bytes: d.big_bytes,
            sftp: true,
        },
    )];
    if !quick {
        v.push(mk(
            "sftp-get-10",
            format!("SFTP get {mb} MiB from 10 labels (OpenSSH)"),
            Work::Get {
                remote: d.big.clone(),
                local_dir: d.root.join("get"),
                bytes: d.big_bytes,
                sftp: true,
            },
        ));
    }
    v
}
