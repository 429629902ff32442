//! What the run shows while it goes and once it ended. Fed on the main
//! thread with the run's events (live and JSON lines, JSON `result` records,
//! the progress display); at the end it prints, from the final `Report`, the
//! deferred output, the failure summary and picks the exit status.
//!
//! Invariant: nothing here is shared with the library's threads: a stdout
//! nobody reads blocks this thread only, never the SSH event loop.
//!
//! May use: `output`, `hosts`, `exit`.

use std::collections::{BTreeMap, HashSet};
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ssh_parallel::{ErrorKind, Report, RunEvent, TaskReport, TaskStatus};

use crate::exit;
use crate::hosts::fold;
use crate::output::{emit, gather, json, paint, Colours, Mode};

/// The run's display state.
pub struct Tracker {
    mode: Mode,
    colours: Colours,
    /// Labels in node order.
    order: Vec<String>,
    max_status: bool,
    started: Instant,
    bar: Option<ProgressBar>,
    /// Labels with a task handed to its transport and not finished yet.
    running: HashSet<Arc<str>>,
    /// Labels whose queue is done.
    done: usize,
    /// Labels that ended on an error (not a cancel).
    failed: usize,
}

/// How one host ended.
enum Outcome {
    Succeeded(Option<i32>),
    Failed { message: String, exit_code: Option<i32> },
    Unfinished,
}

impl Tracker {
    /// A tracker for `order` (labels in node order); the progress display is
    /// drawn only when output is deferred and stderr is a terminal.
    pub fn new(mode: Mode, colours: Colours, order: Vec<String>, max_status: bool) -> Tracker {
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
            max_status,
            started: Instant::now(),
            bar,
            running: HashSet::new(),
            done: 0,
            failed: 0,
        };
        t.update_bar();
        t
    }

    /// Shows one event of the run.
    pub fn on_event(&mut self, ev: RunEvent) {
        match ev {
            RunEvent::Line {
                label, stream, line, ..
            } => match self.mode {
                Mode::Live { prefix } => emit(stream.into(), &label, &line, prefix, self.colours),
                Mode::Json => json::line(&label, stream.into(), &line),
                // Their tasks capture: the report has the lines at the end.
                Mode::Gather | Mode::ByHost { .. } => {}
            },
            RunEvent::Started { label, .. } => {
                self.running.insert(label);
                self.update_bar();
            }
            RunEvent::Finished { label, report } => {
                // Local steps finish without starting; removing is harmless.
                self.running.remove(&label);
                if self.mode == Mode::Json {
                    json::result(&label, &report);
                }
                self.update_bar();
            }
            RunEvent::LabelDone { label, error } => {
                self.running.remove(&label);
                self.done += 1;
                if error.is_some_and(|e| e.kind() != ErrorKind::Cancelled) {
                    self.failed += 1;
                }
                self.update_bar();
            }
            // An event added to the library later is nothing to show yet.
            _ => {}
        }
    }

    fn update_bar(&self) {
        let Some(bar) = &self.bar else { return };
        bar.set_position(self.done as u64);
        bar.set_message(format!("{} failed, {} running", self.failed, self.running.len()));
    }

    /// Prints what the mode defers, the failure summary (stderr) and, with
    /// `--json`, the summary record; returns the exit status. `report` is the
    /// run's final one; `interrupted` says whether Ctrl-C cancelled it.
    pub fn finish(self, report: &Report, interrupted: bool) -> i32 {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        let by_label: BTreeMap<&str, &[TaskReport]> = report.labels().iter().map(|l| (l.label(), l.tasks())).collect();
        let hosts: Vec<gather::HostTasks<'_>> = self
            .order
            .iter()
            .map(|l| (l.as_str(), by_label.get(l.as_str()).copied().unwrap_or_default()))
            .collect();
        match self.mode {
            Mode::Gather => gather::print_gathered(&hosts, self.colours),
            Mode::ByHost { prefix } => gather::print_by_host(&hosts, prefix, self.colours),
            Mode::Live { .. } | Mode::Json => {}
        }
        let outcomes: Vec<(&str, Outcome)> = hosts.iter().map(|(l, t)| (*l, outcome(l, t, interrupted))).collect();
        let _ = std::io::stdout().flush();
        self.print_failures(&outcomes);
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
        code
    }

    /// `web[03,07]: connect: connection refused`, one line per distinct
    /// message, hosts folded, in node order of each message's first host.
    fn print_failures(&self, outcomes: &[(&str, Outcome)]) {
        let mut groups: Vec<(String, Vec<&str>)> = Vec::new();
        for (label, o) in outcomes {
            let message = match o {
                Outcome::Failed { message, .. } => message.clone(),
                Outcome::Unfinished => "interrupted before it finished".to_owned(),
                Outcome::Succeeded(_) => continue,
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

/// How a host ended, from its tasks in the final report: a failure wins
/// (it happened before any cancel), then a cancelled task: Ctrl-C, or,
/// when not `interrupted`, a host `--max-failures` never started (a
/// failure, its error naming the threshold).
fn outcome(label: &str, tasks: &[TaskReport], interrupted: bool) -> Outcome {
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
    let cancelled = tasks.iter().find(|t| t.status() == TaskStatus::Cancelled);
    if let Some(e) = cancelled.and_then(TaskReport::error).filter(|_| !interrupted) {
        let message = e.detail().to_owned();
        return Outcome::Failed { message, exit_code };
    }
    if cancelled.is_some() {
        Outcome::Unfinished
    } else {
        Outcome::Succeeded(exit_code)
    }
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
