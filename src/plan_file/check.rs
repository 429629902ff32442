//! The checks of a plan file before anything connects: every selector part
//! names a host entry or matches one, every goto and or_goto has a later
//! `here` of its tag on every label that takes it, and every `%VARIABLE%`
//! is defined for every label that expands it (a job: on every label that
//! drains its queue), and every queue is drained by some step.
//!
//! Invariant: only reads the registered hosts and the prepared steps; each
//! problem is reported once per step (listing the labels concerned), at the
//! place in the file that causes it.
//!
//! May use: `build`, `schema`, `error` (its siblings), `parallel` (selection
//! and hosts through the public API), `plan` (selectors), `task` (`vars`).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;

use super::build::Problems;
use toml::Spanned;

use super::error::ProblemKind;
use super::schema::{RawStep, Run};
use crate::parallel::Parallel;
use crate::plan::Selector;
use crate::task::{vars, Action};

/// A step whose action was built: what the checks and the push need.
pub(super) struct Step<'a> {
    /// The whole `[[step]]` table.
    pub(super) span: Range<usize>,
    /// Its selector (`*` when it has no `on`).
    pub(super) on: Selector,
    /// Where the selector is written (the action key when it is not).
    pub(super) on_span: Range<usize>,
    /// Where the action key's value is written.
    pub(super) key_span: Range<usize>,
    /// The step as written.
    pub(super) raw: &'a RawStep,
    /// The action to push.
    pub(super) action: Action,
}

/// A job queue of the file: what its checks need.
pub(super) struct Queue<'a> {
    /// Its name, where `[queue.NAME]` writes it.
    pub(super) name: &'a Spanned<String>,
    /// Its jobs, in the order they were pushed.
    pub(super) jobs: Vec<Job<'a>>,
}

/// One job of a queue, as the variable check sees it.
pub(super) struct Job<'a> {
    /// The job as written (its line in `jobs`, or its `[[queue.NAME.job]]` table).
    pub(super) span: Range<usize>,
    /// The texts `%VAR%`s are expanded in.
    pub(super) texts: Vec<&'a str>,
    /// Where those texts are written, to point at the first use of a variable.
    pub(super) fields: Vec<Range<usize>>,
}

/// Runs every check over `steps` (`None`: a step that already has problems)
/// and `queues`.
pub(super) fn check(pssh: &Parallel, steps: &[Option<Step<'_>>], queues: &[Queue<'_>], problems: &mut Problems<'_>) {
    let labels: Vec<&str> = pssh.labels().collect();
    let index: HashMap<&str, usize> = labels.iter().enumerate().map(|(i, l)| (*l, i)).collect();
    // The steps each label takes, in order.
    let mut per_label: Vec<Vec<usize>> = vec![Vec::new(); labels.len()];
    // Queue name -> the labels draining it.
    let mut drainers: BTreeMap<&str, BTreeSet<usize>> = BTreeMap::new();
    for (si, step) in steps.iter().enumerate() {
        let Some(step) = step else { continue };
        selector_parts(step.on.as_str(), &step.on_span, &labels, &index, problems);
        if let Action::Join(_) = &step.action {
            let text = step.raw.join.as_ref().map_or("", |j| j.get_ref().as_str());
            match Selector::parse(text) {
                Ok(_) => selector_parts(text, &step.key_span, &labels, &index, problems),
                Err(e) => problems.add(
                    Some(step.key_span.clone()),
                    ProblemKind::InvalidSelector,
                    format!("join: {}", e.detail()),
                ),
            }
        }
        let selected: Vec<usize> = labels
            .iter()
            .enumerate()
            .filter(|(_, l)| step.on.matches(l))
            .map(|(i, _)| i)
            .collect();
        let texts = expanded_texts(step.raw);
        let fields = field_spans(step.raw);
        variables(pssh, &texts, &fields, &step.key_span, &selected, &labels, problems);
        if let Some(name) = &step.raw.drain {
            drainers.entry(name.get_ref().as_str()).or_default().extend(&selected);
        }
        for &li in &selected {
            per_label[li].push(si);
        }
    }
    tags(steps, &per_label, &labels, problems);
    for q in queues {
        let name = q.name.get_ref().as_str();
        // A drain step with problems of its own still counts: one mistake,
        // one problem.
        let named = problems
            .file
            .raw
            .step
            .iter()
            .any(|s| s.get_ref().drain.as_ref().is_some_and(|d| d.get_ref() == name));
        if !named {
            problems.add(
                Some(q.name.span()),
                ProblemKind::UndrainedQueue,
                format!(
                    "queue {name:?} is drained by no step: its {} job(s) would never run (add a step `drain = {name:?}`)",
                    q.jobs.len()
                ),
            );
            continue;
        }
        // A job may run on any label that drains its queue: it must expand on each.
        let selected: Vec<usize> = drainers
            .get(name)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        for job in &q.jobs {
            variables(pssh, &job.texts, &job.fields, &job.span, &selected, &labels, problems);
        }
    }
}

/// Each comma-separated part of a selector must name a host entry, or (a
/// pattern) match one: a selector that selects nothing is a typo in a plan.
fn selector_parts(
    text: &str,
    span: &Range<usize>,
    labels: &[&str],
    index: &HashMap<&str, usize>,
    problems: &mut Problems<'_>,
) {
    for part in text.split(',').map(str::trim) {
        if part.contains('*') {
            let matches = Selector::parse(part).is_ok_and(|s| labels.iter().any(|l| s.matches(l)));
            if !matches {
                problems.add(
                    Some(span.clone()),
                    ProblemKind::NoMatch,
                    format!("selector {part:?} matches no label of [hosts]"),
                );
            }
        } else if !index.contains_key(part) {
            problems.add(
                Some(span.clone()),
                ProblemKind::UnknownLabel,
                format!("unknown label {part:?}: no entry of [hosts] defines it"),
            );
        }
    }
}

/// The texts of a step that `%VAR%`s are expanded in (as `Action::expand_for`
/// expands them): the command line or its words, environment values,
/// transfer paths.
pub(super) fn expanded_texts(r: &RawStep) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    match r.run.as_ref().map(|x| x.get_ref()) {
        Some(Run::Line(l)) => out.push(l),
        Some(Run::Argv(words)) => out.extend(words.iter().map(String::as_str)),
        None => {}
    }
    if let Some(env) = &r.env {
        out.extend(env.get_ref().values().map(String::as_str));
    }
    for paths in [&r.put, &r.get].into_iter().flatten() {
        out.extend(paths.get_ref().0.iter().map(String::as_str));
    }
    if let Some(to) = &r.to {
        out.push(to.get_ref());
    }
    out
}

/// Where the texts of `expanded_texts` are written.
pub(super) fn field_spans(r: &RawStep) -> Vec<Range<usize>> {
    [
        r.run.as_ref().map(|x| x.span()),
        r.env.as_ref().map(|x| x.span()),
        r.put.as_ref().map(|x| x.span()),
        r.get.as_ref().map(|x| x.span()),
        r.to.as_ref().map(|x| x.span()),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Every `%NAME%` of `texts` (written at `fields`; `fallback` when no field
/// shows it) must be known on every label of `selected`.
fn variables(
    pssh: &Parallel,
    texts: &[&str],
    fields: &[Range<usize>],
    fallback: &Range<usize>,
    selected: &[usize],
    labels: &[&str],
    problems: &mut Problems<'_>,
) {
    if texts.iter().all(|t| !t.contains('%')) {
        return;
    }
    // Variable name -> the labels it is unknown on, and the names they do know.
    let mut unknown: BTreeMap<String, (Vec<&str>, BTreeSet<String>)> = BTreeMap::new();
    for &li in selected {
        let label = labels[li];
        let Some(host) = pssh.host(label) else { continue };
        if !host.expand_vars {
            continue;
        }
        let missing = RefCell::new(BTreeSet::new());
        let lookup = |name: &str| {
            let v = host.lookup_var(label, name);
            if v.is_none() {
                missing.borrow_mut().insert(name.to_owned());
            }
            v
        };
        for t in texts {
            // The error names only the first unknown name: `lookup` saw them all.
            let _ = vars::expand(t, &lookup);
        }
        for name in missing.into_inner() {
            let entry = unknown.entry(name).or_default();
            entry.0.push(label);
            entry.1.extend(host.vars.keys().cloned());
        }
    }
    for (name, (on, known)) in unknown {
        let needle = format!("%{name}%");
        let text = &problems.file.text;
        let span = fields
            .iter()
            .find_map(|f| Some(f.start + text.get(f.clone())?.find(&needle)?))
            .map_or(fallback.clone(), |start| start..start + needle.len());
        let mut defined = vec!["LABEL", "HOST", "USER", "PORT"];
        defined.extend(known.iter().map(String::as_str));
        problems.add(
            Some(span),
            ProblemKind::UnknownVariable,
            format!(
                "unknown variable %{name}% on {} (defined there: {}; write %% for a literal %)",
                some(&on),
                defined.join(", ")
            ),
        );
    }
}

/// Every goto and or_goto must find a later `here` of its tag on each label
/// that takes it (`END` always exists).
fn tags(steps: &[Option<Step<'_>>], per_label: &[Vec<usize>], labels: &[&str], problems: &mut Problems<'_>) {
    // (step, tag, what) -> the labels where the tag is missing.
    let mut missing: BTreeMap<(usize, &str, &str), Vec<&str>> = BTreeMap::new();
    for (li, taken) in per_label.iter().enumerate() {
        let mut pending: Vec<(&str, usize, &str)> = Vec::new();
        for &si in taken {
            let Some(step) = &steps[si] else { continue };
            if let Some(h) = &step.raw.here {
                pending.retain(|(tag, _, _)| *tag != h.get_ref().as_str());
            }
            for (what, tag) in [("goto", &step.raw.goto), ("or_goto", &step.raw.or_goto)] {
                if let Some(tag) = tag.as_ref().map(|t| t.get_ref().as_str()).filter(|t| *t != "END") {
                    pending.push((tag, si, what));
                }
            }
        }
        for (tag, si, what) in pending {
            missing.entry((si, tag, what)).or_default().push(labels[li]);
        }
    }
    for ((si, tag, what), on) in missing {
        let Some(step) = &steps[si] else { continue };
        let span = match what {
            "goto" => Some(step.key_span.clone()),
            _ => step.raw.or_goto.as_ref().map(|t| t.span()),
        };
        problems.add(
            span,
            ProblemKind::MissingTag,
            format!(
                "{what} {tag:?}: no later step `here = {tag:?}` on {} (use \"END\" to skip to the end)",
                some(&on)
            ),
        );
    }
}

/// `a, b, c` or `a, b, c, d, e and 7 more`.
fn some(labels: &[&str]) -> String {
    const SHOWN: usize = 5;
    if labels.len() <= SHOWN {
        return labels.join(", ");
    }
    format!("{} and {} more", labels[..SHOWN].join(", "), labels.len() - SHOWN)
}
