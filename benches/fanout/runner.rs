//! Running a case: every tool, round after round, each run measured, checked and logged,
//! into one [`Outcome`] per tool.
//!
//! Invariants: no tool always runs first (the order rotates every round); a run counts only
//! if its work is verified on disk; a tool that fails twice in a case is not run again in it.

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::time::Instant;

use crate::cases::{Case, Tier};
use crate::data::{prepare, verify_and_clean};
use crate::measure::{self, median, Run, ServerProbe};
use crate::report::{with_ctx, write_results};
use crate::tools::{self, Peers, Target, Tool, Work};

/// What one tool did in one case.
pub struct Outcome {
    /// The case's id.
    pub case_id: String,
    /// The case's title.
    pub title: String,
    /// The case's tier.
    pub tier: Tier,
    /// The case's label count.
    pub n: usize,
    /// The case's work.
    pub work: Work,
    /// The tool.
    pub tool: Tool,
    /// The counted runs that succeeded (warm-up rounds are not kept).
    pub runs: Vec<Run>,
    /// Why each failed run failed (after two, the tool is given up for the case).
    pub failures: Vec<String>,
    /// Why the tool did not run at all (then `runs` and `failures` are empty).
    pub not_run: Option<String>,
}

impl Outcome {
    /// An outcome with no run yet.
    fn new(case: &Case, tool: Tool, not_run: Option<String>) -> Outcome {
        Outcome {
            case_id: case.id.clone(),
            title: case.title.clone(),
            tier: case.tier,
            n: case.n,
            work: case.work.clone(),
            tool,
            runs: Vec::new(),
            failures: Vec::new(),
            not_run,
        }
    }

    /// The runs that succeeded.
    pub fn ok_runs(&self) -> Vec<&Run> {
        self.runs.iter().filter(|r| r.ok).collect()
    }

    /// The median of a measure over the good runs (NaN without any).
    pub fn med(&self, f: impl Fn(&Run) -> f64) -> f64 {
        median(self.ok_runs().into_iter().map(f).collect())
    }

    /// Median wall time, seconds.
    pub fn wall(&self) -> f64 {
        self.med(|r| r.wall)
    }

    /// Median client CPU, seconds.
    pub fn cpu(&self) -> f64 {
        self.med(|r| r.cpu)
    }

    /// Median peak memory, MB.
    pub fn mem_mb(&self) -> f64 {
        self.med(|r| r.mem_kb() as f64 / 1024.0)
    }

    /// Whether any run succeeded.
    pub fn has_data(&self) -> bool {
        !self.ok_runs().is_empty()
    }
}

/// Runs every tool of `case` for its rounds, the order of the tools rotating each round.
/// `netns`: the network namespace the clients run in (the latency tier), if any.
pub fn run_case(
    launcher: &mut measure::Launcher,
    case: &Case,
    peers: &Peers,
    target: &Target,
    probe: &ServerProbe<'_>,
    logs: &Path,
    netns: Option<&Path>,
) -> Vec<Outcome> {
    let started = Instant::now();
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: String = load.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    eprintln!("fanout: case {} — {} (load average {load})", case.id, case.title);
    with_ctx(|c| c.loads.push(format!("{}: {load}", case.id)));
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut commands = HashSet::new();
    for &tool in &case.tools {
        let mut o = Outcome::new(case, tool, None);
        match tools::command(tool, peers, target, case.n, &case.work, case.workers) {
            Ok(_) => {
                commands.insert(tool);
            }
            Err(e) => o.not_run = Some(e),
        }
        outcomes.push(o);
    }
    for (tool, why) in &case.skipped {
        outcomes.push(Outcome::new(case, *tool, Some(why.clone())));
    }
    let runnable: Vec<Tool> = case.tools.iter().copied().filter(|t| commands.contains(t)).collect();
    let total = case.warmup + case.rounds;
    let mut given_up: Vec<Tool> = Vec::new();
    for round in 0..total {
        // Rotate the order each round: no tool always runs first (or after the same one).
        let k = runnable.len().max(1);
        let order: Vec<Tool> = (0..runnable.len()).map(|i| runnable[(i + round) % k]).collect();
        for tool in order {
            if given_up.contains(&tool) {
                continue;
            }
            let Ok(cmd) = tools::command(tool, peers, target, case.n, &case.work, case.workers) else {
                continue;
            };
            let log_path = logs.join(format!(
                "{}-{}.stderr",
                case.id,
                tool.name().replace([':', ' ', '/'], "_")
            ));
            prepare(&case.work);
            let mut r = measure::run(launcher, &cmd, &log_path, netns, case.timeout, probe);
            if let Err(e) = verify_and_clean(&case.work, case.n) {
                if r.ok {
                    r.ok = false;
                    r.error = e;
                }
            }
            if !r.ok {
                let tail = fs::read_to_string(&log_path).unwrap_or_default();
                let tail: Vec<&str> = tail.lines().rev().take(3).collect();
                r.error = format!(
                    "{} ({})",
                    r.error,
                    tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
                );
            }
            eprintln!(
                "  round {}{} {:<24} wall {:>7.3} s  cpu {:>7.3} s  mem {:>7.1} MB  sshd {:>6.2} s  {}",
                round + 1 - case.warmup.min(round + 1),
                if round < case.warmup { " (warm-up)" } else { "" },
                tool.name(),
                r.wall,
                r.cpu,
                r.mem_kb() as f64 / 1024.0,
                r.server_cpu,
                if r.ok {
                    String::new()
                } else {
                    format!("FAILED: {}", r.error)
                }
            );
            let o = outcomes.iter_mut().find(|o| o.tool == tool).expect("outcome");
            if !r.ok {
                o.failures.push(r.error.clone());
                if o.failures.len() >= 2 {
                    given_up.push(tool);
                }
            } else if round >= case.warmup {
                o.runs.push(r);
            }
        }
    }
    eprintln!("fanout: case {} took {:.0} s", case.id, started.elapsed().as_secs_f64());
    outcomes
}

/// Runs `tier_cases` one after the other, rewriting the report after each.
pub fn run_tier(
    launcher: &mut measure::Launcher,
    tier_cases: &[&Case],
    peers: &Peers,
    target: &Target,
    probe: &ServerProbe<'_>,
    logs: &Path,
    all: &mut Vec<Outcome>,
) {
    for case in tier_cases {
        all.extend(run_case(launcher, case, peers, target, probe, logs, None));
        let ctx = with_ctx(|c| c.clone());
        let _ = write_results(all, &ctx);
    }
}
