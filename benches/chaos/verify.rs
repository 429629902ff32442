//! The chaos scenario's verdict: the report checked label by label against what each
//! label's fault implies (see `scenario::Outcome`). Mismatches are collected, not
//! panicked on, so that one run lists all of them with the seed that replays it.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::path::Path;

use ssh_parallel::{ErrorKind, Report, TaskReport, TaskStatus};

use crate::scenario::{
    content_for, count_statuses, expected_lines, label_file, sha256_hex, KindSpec, LabelPlan, Outcome, Summary,
};

use TaskStatus::{Cancelled, Failed, Ignored, Succeeded};

/// Checks `report` against the plans; fills the summary's per-kind table, statuses and
/// failures.
pub fn verify(
    report: &Report,
    plans: &[LabelPlan],
    kinds: &[KindSpec],
    pushed: &HashMap<String, usize>,
    dir: &Path,
    seed: u64,
    summary: &mut Summary,
) {
    summary.statuses = count_statuses(report);
    let mut seen = HashSet::new();
    for l in report.labels() {
        if !seen.insert(l.label()) {
            summary.failures.push(format!("{}: reported twice", l.label()));
        }
    }
    if seen.len() != plans.len() {
        summary
            .failures
            .push(format!("{} labels reported, {} added", seen.len(), plans.len()));
    }
    let any_bytes = plans.iter().any(|p| kinds[p.kind].name == "bytes");
    for p in plans {
        let kind = &kinds[p.kind];
        let entry = summary.per_kind.entry(kind.name).or_default();
        entry.0 += 1;
        let before = summary.failures.len();
        let Some(lr) = report.label(&p.label) else {
            summary.failures.push(format!("{}: missing from the report", p.label));
            continue;
        };
        let tasks = lr.tasks();
        let want = pushed.get(&p.label).copied().unwrap_or(0);
        let seqs: HashSet<usize> = tasks.iter().map(TaskReport::seq).collect();
        if tasks.len() != want || seqs.len() != tasks.len() {
            summary.failures.push(format!(
                "{}: {want} tasks pushed, {} reported ({} distinct)",
                p.label,
                tasks.len(),
                seqs.len()
            ));
            continue;
        }
        let reruns: u64 = tasks.iter().map(|t| u64::from(t.reruns())).sum();
        // Whatever the fault, a `seq` reported successful must have printed everything:
        // a connection cut mid-command must never pass for a clean exit.
        if let Some(t) = tasks.first().filter(|t| t.status() == Succeeded) {
            let want = expected_lines(&p.label, p.lines);
            let got = t.stdout().unwrap_or_default();
            if got != want.as_slice() {
                summary.failures.push(format!(
                    "{} ({}): `seq` reported {:?} (exit {:?}, {} re-runs) with {} bytes of its {} (truncated flag {})",
                    p.label,
                    kind.name,
                    t.status(),
                    t.exit_code(),
                    t.reruns(),
                    got.len(),
                    want.len(),
                    t.stdout_truncated()
                ));
            }
        }
        let mut fail = |what: String| {
            summary
                .failures
                .push(format!("{} ({} seed {seed}): {what}", p.label, kind.name))
        };
        let outcome = if kind.outcome == Outcome::JoinFails && !any_bytes {
            Outcome::Healthy
        } else {
            kind.outcome
        };
        match (outcome, kind.name) {
            (Outcome::Healthy, "dep") => {
                expect_statuses(tasks, &[Succeeded; 4], &mut fail);
                expect_head_outputs(p, tasks, &mut fail);
                expect_label_error(lr.error().map(|e| e.kind()), None, &mut fail);
            }
            (Outcome::Healthy, _) => {
                expect_statuses(
                    tasks,
                    &[
                        Succeeded, Succeeded, Succeeded, Succeeded, Succeeded, Ignored, Succeeded,
                    ],
                    &mut fail,
                );
                expect_head_outputs(p, tasks, &mut fail);
                let content = content_for(&p.label, seed);
                match std::fs::read(label_file(dir, "got", &p.label)) {
                    Ok(got) if got == content => {}
                    Ok(got) => fail(format!(
                        "scp round trip: {} bytes back, {} sent",
                        got.len(),
                        content.len()
                    )),
                    Err(e) => fail(format!("scp round trip: {e}")),
                }
                if let Some(t) = tasks.get(5) {
                    let e = t.error().map(|e| (e.kind(), e.exit_code()));
                    if e != Some((ErrorKind::Command, Some(3))) {
                        fail(format!("`exit 3` under Ignore: error {e:?}"));
                    }
                }
                if let Some(t) = tasks.get(6) {
                    if t.stdout().map(sha256_hex) != Some(sha256_hex(&content)) {
                        fail("`cat` of the copied file differs".into());
                    }
                }
                expect_label_error(lr.error().map(|e| e.kind()), None, &mut fail);
            }
            (Outcome::JoinFails, _) => {
                expect_statuses(tasks, &[Succeeded, Succeeded, Failed, Cancelled], &mut fail);
                expect_head_outputs(p, tasks, &mut fail);
                expect_label_error(lr.error().map(|e| e.kind()), Some(ErrorKind::JoinFailed), &mut fail);
            }
            (
                Outcome::Fails {
                    kind: error_kind,
                    attempts,
                    min_reruns,
                },
                _,
            ) => {
                expect_statuses(tasks, &[Failed, Cancelled], &mut fail);
                if let Some(t) = tasks.first() {
                    if t.error().map(|e| e.kind()) != Some(error_kind) {
                        fail(format!("first task: error {:?}, expected {error_kind:?}", t.error()));
                    }
                    if attempts.is_some_and(|a| a != t.attempts()) {
                        fail(format!("first task: {} attempts, expected {attempts:?}", t.attempts()));
                    }
                    // A label behind a dead gateway must be told so, not given a
                    // symptom of it.
                    if let Some(gateway) = p.gateway {
                        let hop = format!("jump host 127.0.0.1:{gateway}");
                        if !t.error().is_some_and(|e| e.to_string().contains(&hop)) {
                            fail(format!("first task: error {:?} does not name `{hop}`", t.error()));
                        }
                    }
                    if t.reruns() < min_reruns {
                        fail(format!(
                            "first task: {} re-runs, expected at least {min_reruns}",
                            t.reruns()
                        ));
                    }
                }
                expect_label_error(lr.error().map(|e| e.kind()), Some(error_kind), &mut fail);
            }
        }
        let ok = summary.failures.len() == before;
        let entry = summary.per_kind.entry(kind.name).or_default();
        entry.1 += usize::from(ok);
        entry.2 += reruns;
    }
}

fn expect_statuses(tasks: &[TaskReport], want: &[TaskStatus], fail: &mut impl FnMut(String)) {
    let got: Vec<TaskStatus> = tasks.iter().map(TaskReport::status).collect();
    if got != want {
        let errors: Vec<String> = tasks
            .iter()
            .filter_map(|t| {
                t.error().map(|e| {
                    format!(
                        "[{}] {e} ({} attempts, {} re-runs, {:.1} s)",
                        t.seq(),
                        t.attempts(),
                        t.reruns(),
                        t.duration().as_secs_f64()
                    )
                })
            })
            .collect();
        fail(format!("statuses {got:?}, expected {want:?}; errors: {errors:?}"));
    }
}

/// The first two tasks of every label that passes them: the `seq` output (checked by
/// SHA-256, byte-exact) and the `echo`.
fn expect_head_outputs(p: &LabelPlan, tasks: &[TaskReport], fail: &mut impl FnMut(String)) {
    if let Some(t) = tasks.first() {
        let want = expected_lines(&p.label, p.lines);
        let got = t.stdout().unwrap_or_default();
        if sha256_hex(got) != sha256_hex(&want) {
            fail(format!(
                "seq output: {} bytes, sha256 {}, expected {} bytes, sha256 {}{}",
                got.len(),
                sha256_hex(got),
                want.len(),
                sha256_hex(&want),
                if t.stdout_truncated() { " (truncated)" } else { "" }
            ));
        }
    }
    if let Some(t) = tasks.get(1) {
        if t.stdout_str() != format!("second {}\n", p.label) {
            fail(format!("echo output {:?}", t.stdout_str()));
        }
    }
}

fn expect_label_error(got: Option<ErrorKind>, want: Option<ErrorKind>, fail: &mut impl FnMut(String)) {
    if got != want {
        fail(format!("label error {got:?}, expected {want:?}"));
    }
}

/// Every command a server received that names a label (its output pattern, its
/// `echo`, its file paths) must come from that label's own server: a command run
/// on another label's connection would otherwise pass unnoticed whenever both
/// servers are healthy.
pub fn no_cross_talk(plans: &[LabelPlan], kinds: &[KindSpec], received: &[(u16, Vec<String>)], summary: &mut Summary) {
    let ports: HashMap<&str, u16> = plans.iter().map(|p| (p.label.as_str(), p.port)).collect();
    for (port, commands) in received {
        for command in commands {
            for kind in kinds {
                let needle = format!("{}-", kind.name);
                for (at, _) in command.match_indices(&needle) {
                    let end = at + needle.len() + 5;
                    let Some(label) = command.get(at..end) else { continue };
                    if !label[needle.len()..].bytes().all(|b| b.is_ascii_digit()) {
                        continue;
                    }
                    match ports.get(label) {
                        Some(p) if p == port => {}
                        Some(p) => summary.failures.push(format!(
                            "{label}: command {command:?} reached the server on port {port}, not the label's {p}"
                        )),
                        None => {}
                    }
                }
            }
        }
    }
}
