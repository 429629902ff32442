//! What has finished so far: fed by every task's `on_done`, it drives the
//! progress display and the JSON `result` records, and at the end (or at
//! Ctrl-C) prints the deferred output, the failure summary and picks the exit
//! status.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ssh_parallel::{Report, TaskReport, TaskStatus};

use crate::exit;
use crate::hosts::fold;
use crate::output::{gather, json, paint, Colours, Mode};

/// Per label: its task reports so far.
type Done = BTreeMap<String, Vec<TaskReport>>;

/// The run's shared record of finished tasks.
pub struct Tracker {
    mode: Mode,
    colours: Colours,
    /// Labels in node order.
    order: Vec<String>,
    tasks_per_host: usize,
    fanout: usize,
    max_status: bool,
    started: Instant,
    done: Mutex<Done>,
    bar: Option<ProgressBar>,
    finishing: AtomicBool,
}

/// How one host ended.
enum Outcome {
    Succeeded(Option<i32>),
    Failed { message: String, exit_code: Option<i32> },
    Unfinished,
}

impl Tracker {
    /// A tracker for `order` (labels in node order), each running
    /// `tasks_per_host` tasks; the progress display is drawn only when output
    /// is deferred and stderr is a terminal.
    pub fn new(
        mode: Mode,
        colours: Colours,
        order: Vec<String>,
        tasks_per_host: usize,
        fanout: usize,
        max_status: bool,
    ) -> Tracker {
        let bar = (mode.is_deferred() && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(Some(order.len() as u64), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} done, {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style.progress_chars("=> "));
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        let t = Tracker {
            mode,
            colours,
            order,
            tasks_per_host: tasks_per_host.max(1),
            fanout,
            max_status,
            started: Instant::now(),
            done: Mutex::new(Done::new()),
            bar,
            finishing: AtomicBool::new(false),
        };
        t.update_bar(&Done::new());
        t
    }

    /// Records a finished task (the `on_done` of every task pushed).
    pub fn on_done(&self, label: &str, report: &TaskReport) {
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        if self.mode == Mode::Json {
            json::result(label, report);
        }
        done.entry(label.to_owned()).or_default().push(report.clone());
        self.update_bar(&done);
    }

    fn update_bar(&self, done: &Done) {
        let Some(bar) = &self.bar else { return };
        let finished = done.values().filter(|t| self.host_finished(t)).count();
        let failed = done.values().filter(|t| failed(t)).count();
        let remaining = self.order.len().saturating_sub(finished);
        // Every worker slot is busy while hosts remain, so this is what runs.
        let running = if self.fanout == 0 {
            remaining
        } else {
            remaining.min(self.fanout)
        };
        bar.set_position(finished as u64);
        bar.set_message(format!("{failed} failed, {running} running"));
    }

    fn host_finished(&self, tasks: &[TaskReport]) -> bool {
        tasks.len() >= self.tasks_per_host || failed(tasks)
    }

    /// Prints what the mode defers, the failure summary (stderr) and, with
    /// `--json`, the summary record; returns the exit status. `report` is the
    /// run's (absent when interrupted). Only the first caller gets `Some`:
    /// the end of the run and a Ctrl-C may race.
    pub fn finish(&self, report: Option<&Report>) -> Option<i32> {
        if self.finishing.swap(true, Ordering::SeqCst) {
            return None;
        }
        let interrupted = report.is_none();
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = report {
            // The report is authoritative: tasks that never ran (cancelled,
            // skipped) have no on_done of their own.
            for l in r.labels() {
                let seen = done.get(l.label()).map_or(0, Vec::len);
                if self.mode == Mode::Json {
                    for t in l.tasks().iter().skip(seen) {
                        json::result(l.label(), t);
                    }
                }
                done.insert(l.label().to_owned(), l.tasks().to_vec());
            }
        }
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        let empty: Vec<TaskReport> = Vec::new();
        let hosts: Vec<gather::HostTasks<'_>> = self
            .order
            .iter()
            .map(|l| (l.as_str(), done.get(l).map_or(&empty[..], Vec::as_slice)))
            .collect();
        match self.mode {
            Mode::Gather => gather::print_gathered(&hosts, self.colours),
            Mode::ByHost { prefix } => gather::print_by_host(&hosts, prefix, self.colours),
            Mode::Live { .. } | Mode::Json => {}
        }
        let outcomes: Vec<(&str, Outcome)> = hosts
            .iter()
            .map(|(l, t)| (*l, self.outcome(l, t, report.is_some())))
            .collect();
        let _ = std::io::stdout().flush();
        self.print_failures(&outcomes, interrupted);
        let code = self.exit_code(&outcomes, interrupted);
        if self.mode == Mode::Json {
            let count = |f: fn(&Outcome) -> bool| outcomes.iter().filter(|(_, o)| f(o)).count();
            let counts = json::Counts {
                hosts: outcomes.len(),
                succeeded: count(|o| matches!(o, Outcome::Succeeded(_))),
                failed: count(|o| matches!(o, Outcome::Failed { .. })),
                unfinished: count(|o| matches!(o, Outcome::Unfinished)),
            };
            json::summary(counts, interrupted, self.started.elapsed(), code);
        }
        let _ = std::io::stdout().flush();
        Some(code)
    }

    fn outcome(&self, label: &str, tasks: &[TaskReport], complete: bool) -> Outcome {
        let exit_code = tasks.iter().filter_map(TaskReport::exit_code).max();
        if let Some(e) = tasks
            .iter()
            .find(|t| t.status() == TaskStatus::Failed)
            .and_then(TaskReport::error)
        {
            let message = match (e.kind(), e.exit_code()) {
                (_, Some(c)) => format!("exited with status {c}"),
                (kind, None) => format!("{kind}: {}", without_host(e.detail(), label)),
            };
            return Outcome::Failed { message, exit_code };
        }
        if complete || tasks.len() >= self.tasks_per_host {
            Outcome::Succeeded(exit_code)
        } else {
            Outcome::Unfinished
        }
    }

    /// `web[03,07]: connect: connection refused`, one line per distinct
    /// message, hosts folded, in node order of each message's first host.
    fn print_failures(&self, outcomes: &[(&str, Outcome)], interrupted: bool) {
        let mut groups: Vec<(String, Vec<&str>)> = Vec::new();
        for (label, o) in outcomes {
            let message = match o {
                Outcome::Failed { message, .. } => message.clone(),
                Outcome::Unfinished if interrupted => "interrupted before it finished".to_owned(),
                _ => continue,
            };
            match groups.iter_mut().find(|(m, _)| *m == message) {
                Some((_, hosts)) => hosts.push(label),
                None => groups.push((message, vec![label])),
            }
        }
        let mut text = String::new();
        for (message, hosts) in groups {
            let set = paint(&fold(hosts.iter().copied()), "31", self.colours.stderr);
            text.push_str(&format!("{set}: {message}\n"));
        }
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }

    fn exit_code(&self, outcomes: &[(&str, Outcome)], interrupted: bool) -> i32 {
        if interrupted {
            return exit::INTERRUPTED;
        }
        if self.max_status {
            return outcomes
                .iter()
                .map(|(_, o)| match o {
                    Outcome::Succeeded(c) => c.unwrap_or(0),
                    Outcome::Failed { exit_code, .. } => exit_code.unwrap_or(exit::NO_STATUS),
                    Outcome::Unfinished => exit::NO_STATUS,
                })
                .max()
                .unwrap_or(exit::SUCCESS);
        }
        if outcomes.iter().all(|(_, o)| matches!(o, Outcome::Succeeded(_))) {
            exit::SUCCESS
        } else {
            exit::FAILURE
        }
    }
}

fn failed(tasks: &[TaskReport]) -> bool {
    tasks.iter().any(|t| t.status() == TaskStatus::Failed)
}

/// `detail` without the `: `-separated parts that name the host, so that
/// hosts failing the same way share one summary line: "cannot connect to
/// alice@web3:22: web3:22: Connection refused" becomes "Connection refused".
fn without_host(detail: &str, label: &str) -> String {
    let host = ssh_parallel::Host::parse(label).map_or_else(|_| label.to_owned(), |h| h.hostname().to_owned());
    let kept: Vec<&str> = detail.split(": ").filter(|part| !mentions(part, &host)).collect();
    if kept.is_empty() {
        detail.to_owned()
    } else {
        kept.join(": ")
    }
}

/// Whether `text` contains `name` as a whole word (so `web1` is not found in `web10`).
fn mentions(text: &str, name: &str) -> bool {
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '-' || c == '.' || c == '_');
    text.match_indices(name).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + name.len()..].chars().next();
        !word(before) && !word(after)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_taken_out_of_messages() {
        let d = "cannot connect to alice@127.0.0.1:35591: 127.0.0.1:35591: Connection refused (os error 111)";
        assert_eq!(without_host(d, "127.0.0.1:35591"), "Connection refused (os error 111)");
        assert_eq!(without_host("web10: refused", "web1"), "web10: refused");
        assert_eq!(without_host("web1", "web1"), "web1");
    }
}
