//! The cases the bench runs ([`Case`]), per tier of server ([`Tier`]), and the filters of
//! the options on them.
//!
//! Invariants: case ids are unique (they name log files and rows of the report); the
//! options' filters only take cases and tools out, never change what a case does.

use std::time::Duration;

use crate::data::{Data, MIB};
use crate::opts::Opts;
use crate::tools::{Tool, Work};

/// The server a case runs against.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Tier {
    /// Real sshd on 127.0.0.1.
    OpenSsh,
    /// The embedded russh server (in this process).
    Embedded,
    /// Real sshd behind 50 ms of round-trip time (netem in a network namespace, or a
    /// user-space relay where the kernel has no netem).
    Netns,
    /// Real sshd behind a bastion sshd, both on 127.0.0.1 (see `jump.rs`).
    Jump,
}

/// One case: a piece of work on `n` labels of one tier, run by several tools.
pub struct Case {
    /// Short id, for `--cases` and file names (`fanout-50`).
    pub id: String,
    /// What the table calls it.
    pub title: String,
    /// The server it runs against.
    pub tier: Tier,
    /// Labels (one connection each).
    pub n: usize,
    /// What every label does.
    pub work: Work,
    /// Tools that run it, in the order of the first round.
    pub tools: Vec<Tool>,
    /// Tools deliberately not run, and why.
    pub skipped: Vec<(Tool, String)>,
    /// Counted rounds.
    pub rounds: usize,
    /// Rounds run first and not counted.
    pub warmup: usize,
    /// A run that takes longer is killed and fails.
    pub timeout: Duration,
    /// Our client's `workers` (default: n, every label at once).
    pub workers: Option<usize>,
}

impl Case {
    /// `true` once on each of `n` labels of `tier`, by `tools` (in this order in the
    /// first round): the rounds the options ask for (5, or 3 in a quick run) after one
    /// warm-up round, every label at once.
    pub fn true_once(
        o: &Opts,
        id: String,
        title: String,
        tier: Tier,
        n: usize,
        tools: Vec<Tool>,
        timeout: Duration,
    ) -> Case {
        Case {
            id,
            title,
            tier,
            n,
            work: Work::Run {
                cmd: "true".into(),
                steps: 1,
                joins: false,
            },
            tools,
            skipped: Vec::new(),
            rounds: o.rounds.unwrap_or(if o.quick { 3 } else { 5 }),
            warmup: 1,
            timeout,
            workers: None,
        }
    }
}

/// Every tool that runs commands.
pub fn all_peers() -> Vec<Tool> {
    vec![Tool::Ours, Tool::ParallelSsh, Tool::Pssh, Tool::Pdsh, Tool::Nop]
}

/// Every case the options ask for, with the tools the options leave in.
pub fn cases(o: &Opts, d: &Data) -> Vec<Case> {
    let q = o.quick;
    let rounds = |full: usize| o.rounds.unwrap_or(if q { 3 } else { full });
    let warm = if q { 0 } else { 1 };
    let run = |cmd: &str, steps: usize, joins: bool| Work::Run {
        cmd: cmd.into(),
        steps,
        joins,
    };
    let mk = |id: &str, title: String, tier: Tier, n: usize, work: Work, tools: Vec<Tool>, r: usize, w: usize| Case {
        id: id.into(),
        title,
        tier,
        n,
        work,
        tools,
        skipped: Vec::new(),
        rounds: r,
        warmup: w,
        timeout: Duration::from_secs(300),
        workers: None,
    };
    let mut v = Vec::new();
    // 1. Fan-out on OpenSSH.
    let fan_ns: &[usize] = if q { &[50, 200] } else { &[10, 50, 200] };
    for &n in fan_ns {
        let mut tools = all_peers();
        let mut skipped = Vec::new();
        if q && n == 200 {
            tools.retain(|t| *t != Tool::Nop && *t != Tool::Pdsh);
            skipped.push((Tool::Nop, "left out of the quick run".into()));
            skipped.push((Tool::Pdsh, "left out of the quick run".into()));
        }
        let mut c = mk(
            &format!("fanout-{n}"),
            format!("fan-out {n} x `true` (OpenSSH)"),
            Tier::OpenSsh,
            n,
            run("true", 1, false),
            tools,
            rounds(5),
            warm,
        );
        c.skipped = skipped;
        v.push(c);
    }
    // 2. Pipelines.
    let mut lock_tools = vec![Tool::Ours, Tool::ParallelSsh, Tool::Nop];
    if !q {
        lock_tools.extend([Tool::Pssh, Tool::Pdsh]);
    }
    v.push(mk(
        "lockstep-50x20",
        "pipeline 50 x 20 `true`, `join *` after each (OpenSSH)".into(),
        Tier::OpenSsh,
        50,
        run("true", 20, true),
        lock_tools,
        rounds(3),
        0,
    ));
    if !q {
        v.push(mk(
            "queues-50x20",
            "pipeline 50 x 20 `true`, no joins (OpenSSH)".into(),
            Tier::OpenSsh,
            50,
            run("true", 20, false),
            vec![Tool::Ours, Tool::ParallelSsh, Tool::Nop, Tool::Pssh, Tool::Pdsh],
            rounds(3),
            warm,
        ));
        // 3. Waiting.
        v.push(mk(
            "sleep-200",
            "200 x `sleep 5` (OpenSSH)".into(),
            Tier::OpenSsh,
            200,
            run("sleep 5", 1, false),
            all_peers(),
            rounds(3),
            0,
        ));
        // Against sleep-200, the cost of 5 more seconds of waiting, and nothing else.
        v.push(mk(
            "sleep10-200",
            "200 x `sleep 10` (OpenSSH; ours only, for the cost of waiting)".into(),
            Tier::OpenSsh,
            200,
            run("sleep 10", 1, false),
            vec![Tool::Ours],
            rounds(3),
            0,
        ));
    }
    // 4. Output.
    if !q {
        v.push(mk(
            "out-seq-50",
            "output 50 x `seq 1 30000` (OpenSSH)".into(),
            Tier::OpenSsh,
            50,
            run("seq 1 30000", 1, false),
            all_peers(),
            rounds(3),
            warm,
        ));
    }
    let four_mb = "yes 0123456789012345678901234567890123456789012345678901234567890123456789 | head -c 4194304";
    if !q {
        v.push(mk(
            "out-4mb-50",
            "output 50 x 4 MiB (OpenSSH)".into(),
            Tier::OpenSsh,
            50,
            run(four_mb, 1, false),
            all_peers(),
            rounds(3),
            warm,
        ));
    }
    // 5. Transfers.
    let mb = d.big_bytes / MIB;
    let mut xfer = all_peers();
    xfer.push(Tool::OpenSsh);
    if q {
        xfer = vec![Tool::Ours, Tool::ParallelSsh, Tool::OpenSsh];
    }
    v.push(mk(
        "put-10",
        format!("ScpPut {mb} MiB to 10 labels (OpenSSH)"),
        Tier::OpenSsh,
        10,
        Work::Put {
            local: d.big.clone(),
            remote: d.root.join("remote/big"),
            bytes: d.big_bytes,
            sftp: false,
        },
        xfer.clone(),
        rounds(3),
        0,
    ));
    if !q {
        v.push(mk(
            "get-10",
            format!("ScpGet {mb} MiB from 10 labels (OpenSSH)"),
            Tier::OpenSsh,
            10,
            Work::Get {
                remote: d.big.clone(),
                local_dir: d.root.join("get"),
                bytes: d.big_bytes,
                sftp: false,
            },
            xfer.clone(),
            rounds(3),
            0,
        ));
        v.push(mk(
            "rsync-10",
            format!("RsyncPut of {} small files to 10 labels (OpenSSH)", d.tree_files),
            Tier::OpenSsh,
            10,
            Work::Rsync {
                tree: d.tree.clone(),
                remote_dir: d.root.join("rsync"),
                files: d.tree_files,
            },
            vec![
                Tool::Ours,
                Tool::Nop,
                Tool::OpenSsh,
                Tool::ParallelSsh,
                Tool::Pssh,
                Tool::Pdsh,
            ],
            rounds(3),
            0,
        ));
    }
    v.extend(crate::sftp::cases(d, q, rounds(3)));
    // 1b + growth: the embedded server.
    let emb_ns: &[usize] = if q { &[300] } else { &[10, 100, 1000, 10000] };
    for &n in emb_ns {
        let mut tools = vec![Tool::Ours];
        let mut skipped = Vec::new();
        if n == 1000 || n == 300 {
            tools.push(Tool::ParallelSsh);
            if !q {
                tools.push(Tool::Pssh);
            }
        }
        if n == 10000 {
            for t in [Tool::Pssh, Tool::Pdsh, Tool::Nop] {
                skipped.push((
                    t,
                    "one ssh process (or more) per label: 10,000 of them do not fit this 2-core box".into(),
                ));
            }
            skipped.push((Tool::ParallelSsh, "not run at 10,000: see its 1,000-label time".into()));
        }
        let mut c = mk(
            &format!("emb-{n}"),
            format!("fan-out {n} x `true` (embedded server)"),
            Tier::Embedded,
            n,
            run("true", 1, false),
            tools,
            // 10,000 logins take the embedded server minutes: one run (a completion and
            // per-label cost check with no peer to compare against) keeps the suite short.
            match n {
                10000 => o.rounds.unwrap_or(1),
                1000 => rounds(3),
                _ => rounds(5),
            },
            if n >= 1000 { 0 } else { warm },
        );
        c.skipped = skipped;
        c.timeout = Duration::from_secs(600);
        if n == 10000 {
            // All 10,000 logins at once keep the embedded server (~10 ms of CPU a login, on
            // the 2 cores it shares with the client) busy for longer than libssh2's own 60 s
            // packet timeout: some logins fail. 1,000 at a time is what a user would set.
            c.workers = Some(1000);
            c.title = format!("fan-out {n} x `true`, workers 1,000 (embedded server)");
        }
        v.push(c);
    }
    // 6. Latency.
    let lat_n = if q { 50 } else { 200 };
    v.push(mk(
        "lat-1x1",
        "latency 1 label x 1 `true`, 50 ms RTT".into(),
        Tier::Netns,
        1,
        run("true", 1, true),
        vec![Tool::Ours, Tool::ParallelSsh],
        rounds(3),
        0,
    ));
    v.push(mk(
        "lat-1x10",
        "latency 1 label x 10 `true` lockstep, 50 ms RTT".into(),
        Tier::Netns,
        1,
        run("true", 10, true),
        vec![Tool::Ours, Tool::ParallelSsh],
        rounds(3),
        0,
    ));
    v.push(mk(
        &format!("lat-{lat_n}x10"),
        format!("latency {lat_n} labels x 10 `true` lockstep, 50 ms RTT"),
        Tier::Netns,
        lat_n,
        run("true", 10, true),
        vec![Tool::Ours, Tool::ParallelSsh],
        rounds(3),
        0,
    ));
    // 7. The command line against the command-line tools.
    v.extend(crate::cli::cases(o));
    // 8. Behind a jump host.
    v.extend(crate::jump::cases(o));
    if let Some(filter) = &o.cases {
        v.retain(|c| {
            filter
                .iter()
                .any(|f| c.id == *f || (f.ends_with('*') && c.id.starts_with(f.trim_end_matches('*'))))
        });
    }
    if let Ok(t) = std::env::var("FANOUT_TOOLS") {
        let wanted: Vec<String> = t.split(',').map(|s| s.trim().to_lowercase()).collect();
        for c in &mut v {
            c.tools.retain(|tool| {
                wanted
                    .iter()
                    .any(|w| tool.name().to_lowercase().starts_with(w.as_str()))
            });
            c.skipped.clear();
        }
    }
    v
}
