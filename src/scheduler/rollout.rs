//! Rolling runs: labels started in waves (`ParallelBuilder::waves`), and no
//! label started any more once more than `max_failures` labels have failed.
//!
//! The labels a run has work for (a non-empty queue when it starts) are cut,
//! in registration order, into waves of `Amount::wave_size` labels. The
//! first wave starts at once, with the labels that have no work (they take
//! no part in waves); every later wave waits `Held` until each label of the
//! wave before it has finished. A label *has started* once one of its tasks
//! got a worker slot or a sub of its ran. Once more than the threshold of
//! labels have failed (finished with an error other than `Cancelled`), the
//! rollout *trips*: every label that has not started is stopped at its head,
//! its tasks reported `Cancelled` with an error naming the threshold; the
//! labels that have started go on as usual.
//!
//! Invariants: a `Held` label has started nothing and belongs to a wave
//! after `current`; `unfinished` counts the labels of wave `current` that
//! are not `Finished` (a label a sub revives counts again); a label counts
//! as failed at most once; once `released` (tripped, cancelled, AbortAll)
//! no label is `Held` and waves are no longer counted.
//!
//! May use: what `scheduler` may use, and `amount`.

use std::sync::Arc;

use petgraph::graph::NodeIndex;

use super::state::{Discard, State};
use super::{Config, Scheduler};
use crate::amount::Amount;
use crate::error::{Error, ErrorKind, Result};
use crate::plan::{LabelId, Plan};

/// A rolling run's state; the scheduler holds one only when `waves` or
/// `max_failures` is set.
pub(super) struct Rollout {
    /// Per label, the wave it starts in (0-based); `None`: not in a wave.
    wave: Vec<Option<usize>>,
    /// The labels in waves, in registration order: wave `w` is the chunk
    /// `w` of `size`.
    order: Vec<LabelId>,
    /// Labels per wave (at least 1; unused without waves).
    size: usize,
    /// The wave running now.
    current: usize,
    /// Labels of wave `current` not `Finished`.
    unfinished: usize,
    /// Per label, whether it has started (see the module doc).
    started: Vec<bool>,
    /// Per label, whether it was counted in `failed`.
    counted: Vec<bool>,
    /// Labels that have failed so far.
    failed: usize,
    /// `max_failures` as given, for messages.
    max_failures: Option<Amount>,
    /// More failed labels than this trips the rollout.
    threshold: Option<usize>,
    /// The labels the run has work for: what percentages are of.
    base: usize,
    /// Set when the rollout tripped: why the labels not started were stopped.
    tripped: Option<Arc<str>>,
    /// Every held label was released (tripped, cancelled run, AbortAll).
    released: bool,
}

/// Per label, the wave it starts in under `cfg` (see the module doc), and
/// the labels in waves in order.
fn assign(plan: &Plan, cfg: &Config) -> (Vec<Option<usize>>, Vec<LabelId>, usize) {
    let order: Vec<LabelId> = (0..plan.labels.len())
        .filter(|&l| plan.labels[l].head.is_some())
        .collect();
    let mut wave = vec![None; plan.labels.len()];
    let Some(w) = cfg.waves else {
        return (wave, order, 0);
    };
    let size = w.wave_size(order.len());
    for (i, &l) in order.iter().enumerate() {
        wave[l] = Some(i / size);
    }
    (wave, order, size)
}

impl Rollout {
    /// The rollout of a run of `plan`, or `None` when `cfg` asks for none.
    pub(super) fn new(plan: &Plan, cfg: &Config) -> Option<Rollout> {
        if cfg.waves.is_none() && cfg.max_failures.is_none() {
            return None;
        }
        let n = plan.labels.len();
        let (wave, order, size) = assign(plan, cfg);
        let base = order.len();
        let (order, unfinished) = if size == 0 {
            (Vec::new(), 0)
        } else {
            let first = size.min(base);
            (order, first)
        };
        Some(Rollout {
            wave,
            order,
            size,
            current: 0,
            unfinished,
            started: vec![false; n],
            counted: vec![false; n],
            failed: 0,
            max_failures: cfg.max_failures,
            threshold: cfg.max_failures.map(|m| m.threshold(base)),
            base,
            tripped: None,
            released: false,
        })
    }

    fn waves(&self) -> usize {
        if self.size == 0 {
            0
        } else {
            self.order.len().div_ceil(self.size)
        }
    }

    /// The message of the labels stopped when `failed` went over the threshold.
    fn trip_message(&self) -> String {
        let (failed, base) = (self.failed, self.base);
        let limit = match (self.max_failures, self.threshold) {
            (Some(m @ Amount::Percent(_)), Some(t)) => format!("{m} ({t} of {base} labels)"),
            (Some(m), _) => m.to_string(),
            (None, _) => String::new(),
        };
        format!("not started: {failed} of {base} labels failed, above max_failures {limit}")
    }
}

impl Scheduler<'_> {
    /// Puts every label in the run: ready, or `Held` for a later wave.
    pub(super) fn start_labels(&mut self) {
        self.rollout = Rollout::new(self.plan, self.cfg);
        if let Some(r) = &self.rollout {
            if r.size > 0 {
                log::info!(target: "ssh_parallel", "starting wave 1 of {} ({} labels)", r.waves(), r.unfinished);
            }
        }
        for l in 0..self.rt.len() {
            self.active += 1;
            let held = self.rollout.as_ref().is_some_and(|r| r.wave[l].is_some_and(|w| w > 0));
            if held {
                self.rt[l].state = State::Held;
            } else {
                self.make_ready(l);
            }
        }
    }

    /// Label `l` starts a task that takes a worker slot, or runs a sub.
    pub(super) fn mark_started(&mut self, l: LabelId) {
        if let Some(r) = &mut self.rollout {
            r.started[l] = true;
        }
    }

    /// A sub pushed to the finished label `l`, which runs again.
    pub(super) fn rollout_revived(&mut self, l: LabelId) {
        if let Some(r) = &mut self.rollout {
            if !r.released && r.wave[l] == Some(r.current) {
                r.unfinished += 1;
            }
        }
    }

    /// Label `l` just finished: counts its failure (maybe tripping the
    /// rollout) and, when its wave is over, starts the next one.
    pub(super) fn rollout_finished(&mut self, l: LabelId) {
        let failed = self.reports[l]
            .error
            .as_ref()
            .is_some_and(|e| e.kind() != ErrorKind::Cancelled);
        let Some(r) = &mut self.rollout else { return };
        if failed && !r.counted[l] {
            r.counted[l] = true;
            r.failed += 1;
            if r.tripped.is_none() && r.threshold.is_some_and(|t| r.failed > t) {
                let msg = r.trip_message();
                log::info!(target: "ssh_parallel", "{msg} (label {} failed last)", self.plan.labels[l].name);
                r.tripped = Some(msg.into());
                self.trip();
                return;
            }
        }
        if r.released || r.wave[l] != Some(r.current) {
            return;
        }
        r.unfinished -= 1;
        if r.unfinished > 0 {
            return;
        }
        r.current += 1;
        let from = (r.current * r.size).min(r.order.len());
        let to = (from + r.size).min(r.order.len());
        if from == to {
            return;
        }
        r.unfinished = to - from;
        log::info!(target: "ssh_parallel", "starting wave {} of {} ({} labels)", r.current + 1, r.waves(), to - from);
        let next: Vec<LabelId> = r.order[from..to].to_vec();
        for l in next {
            if self.rt[l].state == State::Held {
                self.make_ready(l);
            }
        }
    }

    /// Stops every label that has not started: held ones, and those waiting
    /// for their first worker slot or at a join before any work.
    fn trip(&mut self) {
        self.release_held();
        let Some(r) = &self.rollout else { return };
        let waiting: Vec<LabelId> = (0..self.rt.len())
            .filter(|&l| !r.started[l] && matches!(self.rt[l].state, State::WaitSlot | State::WaitJoin))
            .collect();
        for l in waiting {
            self.make_ready(l);
        }
    }

    /// Makes every held label ready, to be stopped by whatever released it
    /// (a trip, a cancel, AbortAll); waves are over.
    pub(super) fn release_held(&mut self) {
        let Some(r) = &mut self.rollout else { return };
        if std::mem::replace(&mut r.released, true) {
            return;
        }
        for l in 0..self.rt.len() {
            if self.rt[l].state == State::Held {
                self.make_ready(l);
            }
        }
    }

    /// After a trip, stops label `l` at its head `node` if it has not
    /// started; returns whether it did.
    pub(super) fn stop_if_not_started(&mut self, l: LabelId, node: NodeIndex) -> bool {
        let Some(r) = &self.rollout else { return false };
        if r.tripped.is_none() || r.started[l] {
            return false;
        }
        let e = self.not_started_by_rollout(l, node);
        self.reports[l].error.get_or_insert(e);
        self.rt[l].stopped = Some(Discard::NotStarted);
        true
    }

    /// The error of a task of a label stopped by the trip.
    pub(super) fn not_started_by_rollout(&self, l: LabelId, node: NodeIndex) -> Error {
        let msg = self
            .rollout
            .as_ref()
            .and_then(|r| r.tripped.clone())
            .unwrap_or_else(|| "not started: max_failures exceeded".into());
        self.task_error(l, node, ErrorKind::Cancelled, &*msg)
    }

    /// The error of join `j`, at the head `node` of `l`, when it waits for a
    /// label of a later wave while `l` is in the running one: that label
    /// starts only once this wave has ended, so the join would never complete.
    pub(super) fn join_on_later_wave(&self, l: LabelId, node: NodeIndex, j: NodeIndex) -> Option<Error> {
        let r = self.rollout.as_ref()?;
        if r.released || r.wave[l] != Some(r.current) {
            return None;
        }
        let t = self.plan.join_targets(j).find(|&t| self.rt[t].state == State::Held)?;
        let selector = self.plan.join(j).map_or_else(|| "?".into(), |js| js.selector.clone());
        let msg = format!(
            "join {selector} waits for label {} of wave {}, which starts only after this label's wave {} has ended",
            self.plan.labels[t].name,
            r.wave[t].map_or(0, |w| w + 1),
            r.current + 1
        );
        Some(self.task_error(l, node, ErrorKind::JoinFailed, msg))
    }
}

/// Checks that no label joins on a label of a later wave under `cfg`: the
/// first such join is an [`ErrorKind::InvalidConfig`] error naming both
/// labels and their waves (and how many more there are).
pub(crate) fn check_waves(plan: &Plan, cfg: &Config) -> Result<()> {
    if cfg.waves.is_none() {
        return Ok(());
    }
    let (wave, _, _) = assign(plan, cfg);
    let mut problems: Vec<String> = Vec::new();
    for (l, entry) in plan.labels.iter().enumerate() {
        let Some(w) = wave[l] else { continue };
        let mut cur = entry.head;
        while let Some(n) = cur {
            if let Some(j) = plan.task(n).and_then(|t| t.join) {
                for t in plan.join_targets(j) {
                    if let Some(tw) = wave[t].filter(|&tw| tw > w) {
                        problems.push(format!(
                            "label {} (wave {}) joins on label {} (wave {}): a later wave starts only after \
                             the earlier one has ended, so the join would wait forever",
                            entry.name,
                            w + 1,
                            plan.labels[t].name,
                            tw + 1
                        ));
                    }
                }
            }
            cur = plan.next(n);
        }
    }
    match problems.len() {
        0 => Ok(()),
        1 => Err(Error::new(ErrorKind::InvalidConfig, problems.remove(0))),
        n => Err(Error::new(
            ErrorKind::InvalidConfig,
            format!("{} (and {} more joins on later waves)", problems.remove(0), n - 1),
        )),
    }
}
