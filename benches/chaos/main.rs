//! `cargo bench --bench chaos`: chaos at scale. 2,000 labels spread at random over a
//! dozen embedded SSH servers, each server group injecting one fault (connection
//! refused, silence before the banner, authentication rejected, connection dropped
//! mid-command, dropped after N bytes, a slow handshake, the server stopped and started
//! again on the same port three times, a jump host stopped and restarted three times, a
//! jump host stopped for good), and a plan with joins, scp transfers both ways and mixed
//! policies (Done, Abort, bounded retry, Ignore, reconnections).
//!
//! The run must end within its deadline, report every pushed task exactly once, give
//! every faulty label the error kind its fault implies and every healthy label its
//! byte-exact output (SHA-256) even across reconnections, and keep this process's memory
//! under a bound (VmRSS sampled every 100 ms, plus the kernel's high-water mark). The
//! process holds the servers too, so the figure is an upper bound of the client's.
//!
//! Knobs (environment):
//! * `CHAOS_LABELS=N` (default 2000; `-- --quick`: 300);
//! * `CHAOS_SEED=N` replays a run (the seed is printed first; default: from the clock);
//! * `CHAOS_WORKERS=N`: the client's `workers` (default 256; 0: no limit);
//! * `CHAOS_DEADLINE_SECS=N` (default 300);
//! * `CHAOS_RSS_BOUND_MB=N`: the allowed RSS growth over the run (default 64 MiB plus
//!   256 KiB per label, client and servers together).
//!
//! It prints a Markdown section with the figures (also written to
//! `target/chaos/results.md`) and exits non-zero when any check failed.

mod progress;
mod restart;
mod rss;
mod scenario;
mod verify;

use std::fmt::Write as _;
use std::time::Duration;

use scenario::{clock_seed, Config, Summary};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let labels = env_u64("CHAOS_LABELS").unwrap_or(if quick { 300 } else { 2000 }) as usize;
    let seed = env_u64("CHAOS_SEED").unwrap_or_else(clock_seed);
    let cfg = Config {
        labels,
        seed,
        workers: env_u64("CHAOS_WORKERS").unwrap_or(256) as usize,
        deadline: Duration::from_secs(env_u64("CHAOS_DEADLINE_SECS").unwrap_or(300)),
        kills: 3,
        first_kill: Duration::from_millis(400),
        kill_every: Duration::from_secs(4),
        reconnect_delay: Duration::from_millis(500),
        downtime: Duration::from_secs(1),
        rss_bound_kb: env_u64("CHAOS_RSS_BOUND_MB").map_or(64 * 1024 + 256 * labels as u64, |mb| mb * 1024),
    };
    println!("chaos seed: {seed} (replay with CHAOS_SEED={seed} CHAOS_LABELS={labels})");
    let summary = match scenario::run(&cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("chaos: could not set up the run: {e}");
            std::process::exit(2);
        }
    };
    let text = markdown(&cfg, &summary);
    println!("{text}");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/chaos");
    if std::fs::create_dir_all(&out).is_ok() {
        let _ = std::fs::write(out.join("results.md"), &text);
    }
    if !summary.failures.is_empty() {
        // A label that fails for its own reason fails every join on it: its own
        // mismatches come first, the joins' echoes of it after.
        let mut failures: Vec<&String> = summary.failures.iter().collect();
        failures.sort_by_key(|f| f.contains("failed: label") || f.contains("JoinFailed"));
        let _ = std::fs::write(
            out.join("failures.txt"),
            failures.iter().map(|f| format!("{f}\n")).collect::<String>(),
        );
        eprintln!(
            "chaos: {} mismatches (seed {seed}; all in {}):",
            failures.len(),
            out.join("failures.txt").display()
        );
        for f in failures.iter().take(50) {
            eprintln!("  {f}");
        }
        std::process::exit(1);
    }
}

fn markdown(cfg: &Config, s: &Summary) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "### Chaos at scale (`cargo bench --bench chaos`)\n");
    let _ = writeln!(
        t,
        "{} labels on {} embedded servers, {} tasks, workers {}, seed `{}`: **{}** in {:.1} s \
         (deadline {} s); the `restart` servers were killed {} times (longest outage {:.1} s; \
         their labels had {} reconnections per task).\n",
        s.labels,
        s.servers,
        s.tasks,
        if cfg.workers == 0 {
            "unlimited".to_string()
        } else {
            cfg.workers.to_string()
        },
        s.seed,
        if s.failures.is_empty() {
            "every check passed"
        } else {
            "CHECKS FAILED"
        },
        s.wall.as_secs_f64(),
        cfg.deadline.as_secs(),
        s.kills,
        s.longest_outage.as_secs_f64(),
        s.restart_reconnections,
    );
    let _ = writeln!(
        t,
        "Memory (this process: the client and the in-process servers): RSS {} MiB before the run, \
         peak {} MiB ({} samples), {} MiB after; growth bound {} MiB.\n",
        rss::mib(s.memory.start_kb),
        rss::mib(s.memory.peak_kb),
        s.memory.samples,
        rss::mib(s.memory.end_kb),
        rss::mib(cfg.rss_bound_kb),
    );
    let _ = writeln!(
        t,
        "| fault kind | expected | labels | as expected | re-runs after lost connections |"
    );
    let _ = writeln!(t, "|---|---|---:|---:|---:|");
    for k in scenario::all_kinds() {
        let (n, ok, reruns) = s.per_kind.get(k.name).copied().unwrap_or_default();
        let expected = match k.outcome {
            scenario::Outcome::Healthy => "succeeds, byte-exact".to_string(),
            scenario::Outcome::JoinFails => "join fails (JoinFailed)".to_string(),
            scenario::Outcome::Fails { kind, attempts, .. } => match attempts {
                Some(a) if a > 1 => format!("{} error after {a} attempts", kind.as_str()),
                _ => format!("{} error", kind.as_str()),
            },
        };
        let _ = writeln!(t, "| {} | {expected} | {n} | {ok} | {reruns} |", describe(k.name));
    }
    let statuses: Vec<String> = s.statuses.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(t, "\nTask statuses: {}.", statuses.join(", "));
    t
}

fn describe(name: &str) -> String {
    let what = match name {
        "ok" => "none",
        "slow" => "slow server (300 ms before the handshake)",
        "restart" => "server stopped and restarted on its port (1 s down), 3 times",
        "dep" => "none, joins the `bytes` labels",
        "refused" => "refused (closed before the banner)",
        "silent" => "silent before the banner",
        "auth" => "authentication rejected",
        "dropcmd" => "dropped mid-command",
        "bytes" => "dropped after 48 KiB",
        "jumprestart" => "reached through a gateway that is stopped and restarted (1 s down), 3 times",
        "jumpdead" => "reached through a gateway stopped for good 4.4 s in",
        other => other,
    };
    format!("`{name}`: {what}")
}
