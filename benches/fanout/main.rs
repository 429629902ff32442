//! `cargo bench --bench fanout`: ssh-parallel against the tools people would otherwise
//! pick (parallel-ssh, pssh, pdsh, Net::OpenSSH::Parallel, plain scp/rsync), side by side,
//! in one run, on this machine's loopback.
//!
//! It installs the peers that are missing, starts the servers (a real OpenSSH sshd, the
//! embedded russh server for thousands of labels, and an sshd in a network namespace whose
//! loopback has 50 ms of round-trip time), runs every case for every tool, rotating the
//! order of the tools every round, and prints one table of medians and ratios (ours/peer)
//! of wall time, client CPU (the client process and every descendant it waited for) and
//! peak memory. The table is also written to `target/fanout/results.md` (raw runs in
//! `target/fanout/runs.csv`).
//!
//! Options (after `--`, or as environment variables):
//! * `--quick` / `FANOUT_QUICK=1`: a reduced set that takes a few minutes;
//! * `--cases=a,b` / `FANOUT_CASES=a,b`: only these cases (`fanout-*`: every id with
//!   that prefix); ids: fanout-10/50/200, lockstep-50x20, queues-50x20, sleep-200, sleep10-200,
//!   out-seq-50, out-4mb-50, put-10, get-10, rsync-10, emb-10/100/1000/10000 (emb-300 in
//!   the quick run), lat-1x10, lat-200x10 (lat-50x10 in the quick run), cli-200, jump-200;
//! * `FANOUT_TOOLS=ssh-parallel,pssh`: only these tools (prefixes of their names);
//! * `--rounds=N` / `FANOUT_ROUNDS=N`: counted rounds per case;
//! * `FANOUT_NO_INSTALL=1`: do not run apt-get or pip (missing peers are reported);
//! * `FANOUT_IO_THREADS=N`: our client's `io_threads` (default: the library's, 1);
//! * `FANOUT_EMB_MLKEM=1`: the embedded server offers russh's default key exchanges
//!   (mlkem768x25519-sha256 first) instead of curve25519-sha256 alone, as the OpenSSH tier;
//! * `FANOUT_PROFILE=1`: our client runs under `perf record -e cpu-clock -g` (data in
//!   `target/fanout/perf-*.data`); `FANOUT_PROFILE=syscalls`: under `perf stat` counting
//!   its recvfrom calls, the ones that found nothing (EAGAIN) and its epoll waits
//!   (`target/fanout/syscalls-*.txt`). Profiling runs only: perf's CPU is counted then.
//!
//! Our side runs as a separate process too: this same executable, re-invoked as
//! `fanout __client key=value ...` (see `client.rs`).
//!
//! Modules: `opts` (options), `cases` (what runs), `data` (the files transfers copy),
//! `tiers` (the servers), `runner` (running a case), `measure` (measuring a run), `tools`
//! (the peers and their command lines), `cli` (the command-line rows: the binary, clush,
//! bssh), `jump` (the jump-host tier, its case and its section), `client` (our side),
//! `netns` and `delay` (the latency tier's network), `report` and `targets` (the results).

mod cases;
mod cli;
mod client;
mod data;
mod delay;
mod jump;
mod measure;
mod netns;
mod opts;
mod report;
mod runner;
mod sftp;
mod targets;
mod tiers;
mod tools;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use opts::{env_flag, parse_opts};
use report::{machine_description, with_ctx, write_results};
use runner::Outcome;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("__client") => std::process::exit(client::main(&args[2..])),
        Some("__launcher") => std::process::exit(measure::launcher_main()),
        _ => {}
    }
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not, and must not
    // start a half-hour benchmark.
    if !args.iter().any(|a| a == "--bench") && !env_flag("FANOUT_FORCE") {
        eprintln!("fanout: a benchmark; run it with `cargo bench --bench fanout` (or set FANOUT_FORCE=1)");
        return;
    }
    // First, while this process is small (see `measure::Launcher`).
    let mut launcher = measure::Launcher::start().expect("starting the launcher");
    let started = Instant::now();
    let opts = parse_opts(&args[1..]);
    testbed::raise_fd_limit();
    // target/<profile>/deps/fanout-HASH → target/fanout
    let exe = std::env::current_exe().expect("current_exe");
    let target_dir = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"));
    let out_dir = target_dir.join("fanout");
    let logs = out_dir.join("logs");
    fs::create_dir_all(&logs).expect("creating target/fanout");
    with_ctx(|ctx| {
        ctx.out_dir = out_dir.clone();
        ctx.machine = machine_description();
        ctx.quick = opts.quick;
        ctx.started = Some(started);
    });
    eprintln!("fanout: {}", if opts.quick { "quick run" } else { "full run" });
    let peers = tools::install(&out_dir, opts.install);
    with_ctx(|c| c.versions = peers.versions());
    for v in peers.versions() {
        eprintln!("fanout: peer {v}");
    }
    let data = data::make_data(opts.quick).expect("creating the test data under /dev/shm");
    let cases = cases::cases(&opts, &data);
    let key = testbed::ClientKey::ed25519().expect("ssh-keygen");
    let user = testbed::current_user();
    let mut all: Vec<Outcome> = Vec::new();
    let mut bed = tiers::Bed {
        launcher: &mut launcher,
        peers: &peers,
        key: &key,
        user: &user,
        out_dir: &out_dir,
        logs: &logs,
    };
    tiers::openssh(&mut bed, &cases, &mut all);
    tiers::embedded(&mut bed, &cases, &mut all);
    tiers::latency(&mut bed, &cases, &mut all);
    jump::tier(&mut bed, &cases, &mut all);
    let _ = fs::remove_dir_all(&data.root);
    let ctx = with_ctx(|c| c.clone());
    let text = write_results(&all, &ctx).unwrap_or_else(|e| format!("cannot write results: {e}"));
    println!("{text}");
    eprintln!(
        "fanout: done in {:.0} s; results in {}",
        started.elapsed().as_secs_f64(),
        out_dir.join("results.md").display()
    );
}
