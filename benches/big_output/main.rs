//! `cargo bench --bench big_output`: 1 GiB of output from one label, over SSH from the
//! embedded server, into a file sink and through a line callback; the client's memory
//! must stay flat and the bytes intact.
//!
//! The client runs in a child process (this executable re-invoked as
//! `big_output __client`), so that its memory is measured without the server's: VmRSS
//! sampled every 100 ms plus the kernel's high-water mark, per run. Runs:
//! 1. idle: one `true`, the baseline;
//! 2. file: `seq -f '%063.0f' 1 N` (64-byte numbered lines) to `Output::file`; the file's
//!    SHA-256 must equal the expected one (computed here from the same lines);
//! 3. lines: the same command through `Output::lines`, hashing each line in the callback;
//! 4. capture: a shorter output captured with a 1 MiB cap: the report must flag the
//!    truncation and keep exactly the first 1 MiB.
//!
//! Runs 2 and 3 must stay under 50 MiB of RSS above the idle run's peak.
//!
//! Knobs: `BIG_OUTPUT_BYTES=N` (default 1 GiB, rounded down to whole 64-byte lines;
//! `-- --quick`: 64 MiB), `BIG_OUTPUT_RSS_MB=N` (the bound, default 50).

#[path = "../chaos/rss.rs"]
mod rss;

use std::fmt::Write as _;
use std::io::Read;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use ssh_parallel::{Command, Host, HostKeyCheck, Output, Parallel, Report};

const USER: &str = "big";
const PASSWORD: &str = "output";
const LINE: u64 = 64;
const CAPTURE_CAP: usize = 1 << 20;
const CAPTURE_BYTES: u64 = 64 << 20;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("__client") {
        return match client() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("big_output: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let quick = args.iter().any(|a| a == "--quick");
    let bytes = env_u64("BIG_OUTPUT_BYTES").unwrap_or(if quick { 64 << 20 } else { 1 << 30 });
    let server = match testbed::EmbeddedServer::builder()
        .password(USER, PASSWORD)
        .curve25519_only(true)
        .start()
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("big_output: cannot start the server: {e}");
            return ExitCode::FAILURE;
        }
    };
    let status = std::env::current_exe().and_then(|exe| {
        std::process::Command::new(exe)
            .arg("__client")
            .env("BIG_OUTPUT_PORT", server.port().to_string())
            .env("BIG_OUTPUT_BYTES", (bytes / LINE * LINE).to_string())
            .status()
    });
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => {
            eprintln!("big_output: the client failed ({s})");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("big_output: cannot run the client: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The same bytes `seq -f '%063.0f' 1 LINES` prints, hashed (and the first `keep` kept).
fn expected(lines: u64, keep: usize) -> (String, Vec<u8>) {
    let mut h = Sha256::new();
    let mut head = Vec::with_capacity(keep);
    let mut buf = String::with_capacity(1 << 16);
    for i in 1..=lines {
        let _ = writeln!(buf, "{i:063}");
        if buf.len() >= 1 << 16 || i == lines {
            if head.len() < keep {
                let take = (keep - head.len()).min(buf.len());
                head.extend_from_slice(&buf.as_bytes()[..take]);
            }
            h.update(buf.as_bytes());
            buf.clear();
        }
    }
    (hex(&h.finalize()), head)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn file_sha256(path: &std::path::Path) -> Result<(String, u64), String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| format!("{}: {e}", path.display()))?;
        if n == 0 {
            return Ok((hex(&h.finalize()), len));
        }
        len += n as u64;
        h.update(&buf[..n]);
    }
}

/// One run of one command on one label, with the memory it took.
fn run_one(port: u16, command: Command) -> Result<(Report, rss::Memory, Duration), String> {
    let mut pssh = Parallel::new();
    let host = Host::new("127.0.0.1")
        .port(port)
        .user(USER)
        .password(PASSWORD)
        .agent(false)
        .host_key_check(HostKeyCheck::Off);
    pssh.add_host("big", host).map_err(|e| e.to_string())?;
    pssh.push("big", command.timeout(Duration::from_secs(900)))
        .map_err(|e| e.to_string())?;
    let sampler = rss::Sampler::start(Duration::from_millis(100));
    let started = Instant::now();
    let report = pssh.run();
    let wall = started.elapsed();
    let memory = sampler.finish();
    if let Some((label, e)) = report.errors().first() {
        return Err(format!("{label}: {e}"));
    }
    Ok((report, memory, wall))
}

fn client() -> Result<(), String> {
    let port = env_u64("BIG_OUTPUT_PORT").ok_or("BIG_OUTPUT_PORT is not set")? as u16;
    let bytes = env_u64("BIG_OUTPUT_BYTES").ok_or("BIG_OUTPUT_BYTES is not set")?;
    let bound_kb = env_u64("BIG_OUTPUT_RSS_MB").unwrap_or(50) * 1024;
    let lines = bytes / LINE;
    let generate = |n: u64| format!("seq -f '%%063.0f' 1 {n}");
    let (want, _) = expected(lines, 0);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let sink = dir.path().join("big.out");
    let sink_str = sink.to_str().ok_or("temp dir is not UTF-8")?.to_owned();

    let (_, idle, _) = run_one(port, Command::new("true"))?;
    let (_, file_mem, file_wall) = run_one(port, Command::new(generate(lines)).stdout(Output::file(sink_str)))?;
    let (file_sha, file_len) = file_sha256(&sink)?;
    let _ = std::fs::remove_file(&sink);

    let hasher = Arc::new(Mutex::new((Sha256::new(), 0u64, 0u64)));
    let sink_hasher = hasher.clone();
    let callback = Output::lines(move |_label, line| {
        let mut h = sink_hasher.lock().unwrap_or_else(|e| e.into_inner());
        h.0.update(line.as_bytes());
        h.0.update(b"\n");
        h.1 += line.len() as u64 + 1;
        h.2 += 1;
    });
    let (_, lines_mem, lines_wall) = run_one(port, Command::new(generate(lines)).stdout(callback))?;
    let (lines_sha, lines_len, lines_seen) = {
        let h = hasher.lock().unwrap_or_else(|e| e.into_inner());
        (hex(&h.0.clone().finalize()), h.1, h.2)
    };

    let cap_lines = CAPTURE_BYTES.min(bytes) / LINE;
    let (_, head) = expected(cap_lines, CAPTURE_CAP);
    let (report, cap_mem, cap_wall) = run_one(
        port,
        Command::new(generate(cap_lines)).stdout(Output::capture_limit(CAPTURE_CAP)),
    )?;
    let task = report
        .label("big")
        .and_then(|l| l.tasks().first())
        .ok_or("no task in the capture run's report")?;
    let captured = task.stdout().unwrap_or_default();

    let growth = |m: &rss::Memory| m.peak_kb.saturating_sub(idle.peak_kb);
    let mut failures = Vec::new();
    if (file_sha.as_str(), file_len) != (want.as_str(), bytes / LINE * LINE) {
        failures.push(format!(
            "file sink: {file_len} bytes, sha256 {file_sha}; expected {bytes} bytes, {want}"
        ));
    }
    if (lines_sha.as_str(), lines_len, lines_seen) != (want.as_str(), bytes / LINE * LINE, lines) {
        failures.push(format!(
            "line callback: {lines_seen} lines, {lines_len} bytes, sha256 {lines_sha}; expected {lines} lines, {want}"
        ));
    }
    if !task.stdout_truncated() || captured != head.as_slice() {
        failures.push(format!(
            "capture: truncated flag {}, {} bytes kept (expected the first {CAPTURE_CAP})",
            task.stdout_truncated(),
            captured.len()
        ));
    }
    for (name, m) in [("file sink", &file_mem), ("line callback", &lines_mem)] {
        if growth(m) > bound_kb {
            failures.push(format!(
                "{name}: RSS {} KiB above the idle run, bound {bound_kb} KiB",
                growth(m)
            ));
        }
    }

    let mib = bytes as f64 / f64::from(1 << 20);
    let row = |name: &str, out: f64, wall: Duration, m: &rss::Memory, check: &str| {
        format!(
            "| {name} | {out:.0} MiB | {:.1} s | {:.0} MiB/s | {} MiB | +{} MiB | {check} |",
            wall.as_secs_f64(),
            out / wall.as_secs_f64().max(1e-9),
            rss::mib(m.peak_kb),
            rss::mib(growth(m)),
        )
    };
    let ok = |good: bool, what: &str| {
        if good {
            format!("{what}: ok")
        } else {
            format!("{what}: WRONG")
        }
    };
    println!("### Big output (`cargo bench --bench big_output`)\n");
    println!(
        "One label, embedded server on 127.0.0.1, client in its own process; RSS bound: {} MiB above the idle run. \
         Expected sha256 of the {mib:.0} MiB: `{want}`.\n",
        bound_kb / 1024
    );
    println!("| run | output | wall | throughput | peak RSS | above idle | check |");
    println!("|---|---:|---:|---:|---:|---:|---|");
    println!(
        "| idle (`true`) | 0 | - | - | {} MiB | - | baseline |",
        rss::mib(idle.peak_kb)
    );
    println!(
        "{}",
        row(
            "`Output::file`",
            mib,
            file_wall,
            &file_mem,
            &ok(file_sha == want, "sha256")
        )
    );
    println!(
        "{}",
        row(
            "`Output::lines`",
            mib,
            lines_wall,
            &lines_mem,
            &ok(lines_sha == want, "sha256")
        )
    );
    let cap_mib = (cap_lines * LINE) as f64 / f64::from(1 << 20);
    let cap_check = format!(
        "kept {} bytes, stdout_truncated() = {}",
        captured.len(),
        task.stdout_truncated()
    );
    println!("{}", row("capture, 1 MiB cap", cap_mib, cap_wall, &cap_mem, &cap_check));
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}
