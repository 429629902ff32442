//! What the chaos run has done so far, from its `RunEvent`s: tasks reported and labels
//! done per fault kind, and what each unfinished label is running. The watchdog prints
//! it when the run outlives its deadline, so that a hang names its labels.
//!
//! Invariant: a label's kind is its name's prefix before the first `-` (the scenario's
//! `KIND-NNNNN` labels); `Line` events are dropped as they come, so memory stays
//! bounded by the number of labels.
//!
//! Uses only the public API of `ssh_parallel`.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crossbeam_channel::Receiver;
use ssh_parallel::RunEvent;

/// Per kind: labels, tasks pushed (set before the run).
pub type Pushed = BTreeMap<String, (usize, usize)>;

#[derive(Debug, Default)]
struct Inner {
    /// Per kind: (tasks reported, labels done).
    done: BTreeMap<String, (usize, usize)>,
    /// Unfinished labels: (the task last started, its attempt, when, whether it has
    /// finished: the label is then at a join or waiting for a worker).
    running: HashMap<String, (String, u32, Instant, bool)>,
}

/// The run's progress, shared by the event reader and the watchdog.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    inner: Arc<Mutex<Inner>>,
    pushed: Arc<Pushed>,
}

fn kind_of(label: &str) -> &str {
    label.split('-').next().unwrap_or(label)
}

impl Progress {
    /// Progress of a run whose kinds have these labels and tasks.
    pub fn new(pushed: Pushed) -> Progress {
        Progress {
            inner: Arc::default(),
            pushed: Arc::new(pushed),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads `events` on a thread until the run ends.
    pub fn follow(&self, events: Receiver<RunEvent>) -> std::thread::JoinHandle<()> {
        let me = self.clone();
        std::thread::spawn(move || {
            for ev in events.iter() {
                match ev {
                    RunEvent::Started {
                        label,
                        description,
                        attempt,
                        ..
                    } => {
                        me.lock().running.insert(
                            label.to_string(),
                            (description.to_string(), attempt, Instant::now(), false),
                        );
                    }
                    RunEvent::Finished { label, .. } => {
                        let mut inner = me.lock();
                        inner.done.entry(kind_of(&label).to_owned()).or_default().0 += 1;
                        if let Some(r) = inner.running.get_mut(&*label) {
                            (r.2, r.3) = (Instant::now(), true);
                        }
                    }
                    RunEvent::LabelDone { label, .. } => {
                        let mut inner = me.lock();
                        inner.running.remove(&*label);
                        inner.done.entry(kind_of(&label).to_owned()).or_default().1 += 1;
                    }
                    _ => {}
                }
            }
        })
    }

    /// The figures so far, as text: per kind, tasks reported of pushed and labels done
    /// of all; then up to `show` labels with a task running, oldest first, and up to
    /// `show` labels between tasks (at a join, or waiting for a worker).
    pub fn render(&self, show: usize) -> String {
        let inner = self.lock();
        let mut t = String::new();
        for (kind, (labels, tasks)) in self.pushed.iter() {
            let (reported, done) = inner.done.get(kind).copied().unwrap_or_default();
            let _ = writeln!(
                t,
                "  {kind}: {reported}/{tasks} tasks reported, {done}/{labels} labels done"
            );
        }
        let mut labels: Vec<_> = inner.running.iter().collect();
        labels.sort_by_key(|(_, (_, _, at, _))| *at);
        for (between, what) in [(false, "running a task"), (true, "between tasks (join or worker)")] {
            let these: Vec<_> = labels.iter().filter(|(_, r)| r.3 == between).collect();
            let _ = writeln!(t, "  {} labels {what}:", these.len());
            for (label, (task, attempt, at, _)) in these.into_iter().take(show) {
                let when = if between { "ended" } else { "started" };
                let _ = writeln!(
                    t,
                    "    {label}: {task} (attempt {attempt}, {when} {:.1} s ago)",
                    at.elapsed().as_secs_f64()
                );
            }
        }
        t
    }
}
