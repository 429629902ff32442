//! The report: its context ([`ReportCtx`], shared by the whole run), the results table in
//! markdown with its number formats, and the raw runs as CSV.
//!
//! Invariant: the report is rewritten whole after every case, so an interrupted bench
//! still leaves the results of the cases it finished.

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use crate::data::MIB;
use crate::measure::{median, Run};
use crate::runner::Outcome;
use crate::targets::{growth_section, targets_section};
use crate::tools::{Tool, Work};

/// What the report needs besides the outcomes (filled in as the run goes).
#[derive(Default, Clone)]
pub struct ReportCtx {
    /// `target/fanout`: where `results.md` and `runs.csv` go.
    pub out_dir: PathBuf,
    /// CPUs, RAM, kernel, OpenSSH and rustc versions.
    pub machine: String,
    /// The peers' versions (or why each is missing).
    pub versions: Vec<String>,
    /// Remarks on the run (tiers not run, how latency was made), in order.
    pub notes: Vec<String>,
    /// A `--quick` run.
    pub quick: bool,
    /// When the bench started (`None` until it does).
    pub started: Option<Instant>,
    /// The measured round trip of the latency tier, in ms.
    pub rtt_ms: Option<f64>,
    /// Load average (1, 5, 15 min) when each case started: other work on the machine.
    pub loads: Vec<String>,
}

pub static RESULTS_CTX: std::sync::Mutex<Option<ReportCtx>> = std::sync::Mutex::new(None);

/// Runs `f` on the shared report context.
pub fn with_ctx<R>(f: impl FnOnce(&mut ReportCtx) -> R) -> R {
    let mut guard = RESULTS_CTX.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(ReportCtx::default))
}

/// Prints a remark and keeps it for the report's notes.
pub fn note(s: String) {
    eprintln!("fanout: {s}");
    with_ctx(|c| c.notes.push(s));
}

/// One line about this machine, for the report.
pub fn machine_description() -> String {
    let sh = |s: &str| {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(s)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    format!(
        "{} x {}, {} RAM, Linux {}, {}, rustc {}",
        sh("nproc"),
        sh("lscpu | sed -n 's/^Model name: *//p' | head -1"),
        sh("free -h | awk '/^Mem:/{print $2}'"),
        sh("uname -r"),
        sh("ssh -V 2>&1"),
        sh("rustc --version | cut -d' ' -f2"),
    )
}

/// `ours / peer` with two decimals (`–` without data).
fn fmt_ratio(ours: f64, peer: f64) -> String {
    if ours.is_nan() || peer.is_nan() || peer <= 0.0 {
        "–".into()
    } else {
        format!("{:.2}", ours / peer)
    }
}

/// `median [min–max]` of a measure over the good runs.
fn spread(o: &Outcome, f: impl Fn(&Run) -> f64) -> String {
    let v: Vec<f64> = o.ok_runs().into_iter().map(f).collect();
    if v.is_empty() {
        return "–".into();
    }
    let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let med = median(v);
    format!("{} [{}–{}]", sig(med), sig(min), sig(max))
}

/// A number with about three significant digits.
pub fn sig(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else if x >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// For a section of its own: each case that `keep` takes (one of its outcomes is
/// enough), in the order the cases ran, as the outcome of `lead` (the tool the others
/// are measured against) and all of the case's outcomes; a case `lead` did not take
/// part in is left out.
pub fn cases_led_by(all: &[Outcome], keep: impl Fn(&Outcome) -> bool, lead: Tool) -> Vec<(&Outcome, Vec<&Outcome>)> {
    let mut ids: Vec<&str> = all.iter().filter(|o| keep(o)).map(|o| o.case_id.as_str()).collect();
    ids.dedup();
    ids.into_iter()
        .filter_map(|id| {
            let rows: Vec<&Outcome> = all.iter().filter(|o| o.case_id == id).collect();
            let first = *rows.iter().find(|o| o.tool == lead)?;
            Some((first, rows))
        })
        .collect()
}

/// The notes column: throughput, threads, processes, connections, failures.
fn case_note(o: &Outcome) -> String {
    let mut notes = Vec::new();
    match &o.work {
        Work::Put { bytes, .. } | Work::Get { bytes, .. } if o.has_data() => {
            let mbps = (o.n as u64 * bytes) as f64 / MIB as f64 / o.wall();
            notes.push(format!("{mbps:.0} MiB/s aggregate"));
        }
        _ => {}
    }
    if o.has_data() {
        notes.push(format!("{:.0} threads", o.med(|r| r.threads as f64)));
        let procs = o.med(|r| r.procs as f64);
        if procs > 1.0 {
            notes.push(format!("{procs:.0} processes"));
        }
        notes.push(format!("{:.0} conns open at peak", o.med(|r| r.server_open as f64)));
        if o.ok_runs().iter().any(|r| r.hop_logins.is_some()) {
            let logins = o.med(|r| r.hop_logins.unwrap_or(0) as f64);
            notes.push(format!("{logins:.0} logins on the bastion"));
        }
    }
    if !o.failures.is_empty() {
        notes.push(format!("{} failed run(s): {}", o.failures.len(), o.failures[0]));
    }
    notes.join("; ")
}

/// The results table (markdown), plus the targets and growth sections; written to
/// `results.md` and a raw `runs.csv`. Returns the markdown.
pub fn write_results(all: &[Outcome], ctx: &ReportCtx) -> std::io::Result<String> {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "### Results ({} run{})\n",
        if ctx.quick { "quick" } else { "full" },
        ctx.started
            .map(|s| format!(", suite wall time {:.0} s", s.elapsed().as_secs_f64()))
            .unwrap_or_default()
    );
    let _ = writeln!(md, "Machine: {}.\n", ctx.machine);
    let _ = writeln!(md, "Peers: {}.\n", ctx.versions.join("; "));
    let _ = writeln!(
        md,
        "Medians of the counted runs, [min–max]. Wall: spawn to exit of the whole client command. \
         CPU: user+sys of the client and every process it waited for (wait4). Mem: peak RSS, the \
         larger of the biggest single process (ru_maxrss) and the sum over the client's live process \
         tree (sampled every 100-250 ms). sshd CPU: the server's CPU for the same run. Ratios are \
         ours/peer (below 1: we are faster or smaller).\n"
    );
    let _ = writeln!(
        md,
        "| case | tool | runs | wall s | client CPU s | mem MB | sshd CPU s | wall ours/peer | CPU ours/peer | mem ours/peer | notes |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|");
    let mut case_ids: Vec<&str> = Vec::new();
    for o in all {
        if !case_ids.contains(&o.case_id.as_str()) {
            case_ids.push(&o.case_id);
        }
    }
    for id in &case_ids {
        let rows: Vec<&Outcome> = all.iter().filter(|o| o.case_id == *id).collect();
        let ours = rows.iter().find(|o| o.tool == Tool::Ours);
        for o in &rows {
            if let Some(why) = &o.not_run {
                let _ = writeln!(
                    md,
                    "| {} | {} | – | not run: {why} | | | | | | | |",
                    o.title,
                    o.tool.name()
                );
                continue;
            }
            let (rw, rc, rm) = match ours {
                Some(ours) if o.tool != Tool::Ours && ours.has_data() && o.has_data() => (
                    fmt_ratio(ours.wall(), o.wall()),
                    fmt_ratio(ours.cpu(), o.cpu()),
                    fmt_ratio(ours.mem_mb(), o.mem_mb()),
                ),
                _ => (String::new(), String::new(), String::new()),
            };
            let tool = if o.tool == Tool::Ours {
                format!("**{}**", o.tool.name())
            } else {
                o.tool.name().to_string()
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                o.title,
                tool,
                o.ok_runs().len(),
                spread(o, |r| r.wall),
                spread(o, |r| r.cpu),
                spread(o, |r| r.mem_kb() as f64 / 1024.0),
                if o.has_data() {
                    sig(o.med(|r| r.server_cpu))
                } else {
                    "–".into()
                },
                rw,
                rc,
                rm,
                case_note(o)
            );
        }
    }
    md.push('\n');
    md.push_str(&crate::cli::section(all));
    md.push_str(&crate::jump::section(all));
    md.push_str(&growth_section(all));
    md.push_str(&targets_section(all, ctx));
    if !ctx.loads.is_empty() {
        let _ = writeln!(
            md,
            "\nLoad average (1/5/15 min) at the start of each case (anything above ~0.5 is other work on the machine): {}.",
            ctx.loads.join("; ")
        );
    }
    if !ctx.notes.is_empty() {
        md.push_str("\nNotes:\n");
        for n in &ctx.notes {
            let _ = writeln!(md, "- {n}");
        }
    }
    fs::write(ctx.out_dir.join("results.md"), &md)?;
    let mut csv =
        String::from("case,tool,n,wall_s,cpu_s,maxrss_kb,tree_rss_kb,threads,procs,server_open,server_cpu_s\n");
    for o in all {
        for r in &o.runs {
            let _ = writeln!(
                csv,
                "{},{},{},{:.4},{:.4},{},{},{},{},{},{:.3}",
                o.case_id,
                o.tool.name(),
                o.n,
                r.wall,
                r.cpu,
                r.maxrss_kb,
                r.tree_rss_kb,
                r.threads,
                r.procs,
                r.server_open,
                r.server_cpu
            );
        }
    }
    fs::write(ctx.out_dir.join("runs.csv"), csv)?;
    Ok(md)
}
