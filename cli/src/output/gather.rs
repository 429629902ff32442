//! Output shown after completion: `-b` groups hosts whose output and exit
//! status are identical under one folded node set (the `clubak -b` layout),
//! `-L` lists each host's lines in node order.
//!
//! Why not `Report::gather`: clubak groups each stream on its own, and so do
//! we (stdout groups keyed on the output and the exit status, printed on
//! stdout; stderr groups keyed on the text alone, printed on stderr), while
//! `Report::gather` keys one group on stdout, stderr and every task's status
//! together. With it, hosts printing the same stdout but different warnings
//! would be split into several stdout groups, and hosts printing the same
//! warning but exiting differently into several stderr groups: the output
//! would no longer be clubak's.
//!
//! Node sets are folded by `hosts::fold` (the `nodeset` crate) rather than
//! the library's `fold_labels`: it folds every dimension (`r[1-2]n[1-4]`,
//! where `fold_labels` folds the trailing number only) and is the very
//! grammar `-w` parses, so a printed set can be pasted back into `-w`.
//!
//! May use: `output`, `hosts`.

use std::io::Write;

use ssh_parallel::TaskReport;

use super::{emit, paint, Colours, Stream};
use crate::hosts::fold;

/// What hosts are grouped on: the output, and the exit status.
type GroupKey = (Vec<u8>, Option<i32>);

/// A host and the reports of its tasks, in node order.
pub type HostTasks<'a> = (&'a str, &'a [TaskReport]);

fn captured(tasks: &[TaskReport], stream: Stream) -> Vec<u8> {
    let mut all = Vec::new();
    for t in tasks {
        let bytes = match stream {
            Stream::Stdout => t.stdout(),
            Stream::Stderr => t.stderr(),
        };
        all.extend_from_slice(bytes.unwrap_or_default());
    }
    all
}

/// The exit status shown with a group: the last task's that has one.
fn exit_code(tasks: &[TaskReport]) -> Option<i32> {
    tasks.iter().rev().find_map(TaskReport::exit_code)
}

/// Prints the `-b` groups: stdout groups (with their exit status) on stdout,
/// then stderr groups on stderr. Hosts with nothing to show (no output and
/// no exit status: they never ran the command) are left to the summary.
pub fn print_gathered(hosts: &[HostTasks<'_>], colours: Colours) {
    for stream in [Stream::Stdout, Stream::Stderr] {
        // Groups in the node order of their first host.
        let mut groups: Vec<(GroupKey, Vec<&str>)> = Vec::new();
        for (label, tasks) in hosts {
            let text = captured(tasks, stream);
            let code = exit_code(tasks);
            let shown = match stream {
                Stream::Stdout => code.is_some() || !text.is_empty(),
                Stream::Stderr => !text.is_empty(),
            };
            if !shown {
                continue;
            }
            let key = (text, if stream == Stream::Stdout { code } else { None });
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, members)) => members.push(label),
                None => groups.push((key, vec![label])),
            }
        }
        let mut out = Vec::new();
        for ((text, code), members) in groups {
            let mut title = format!("{} ({})", fold(members.iter().copied()), members.len());
            if let Some(c) = code.filter(|c| *c != 0) {
                title.push_str(&format!(" exit {c}"));
            }
            let rule = "-".repeat(15);
            let on = colours.on(stream);
            let _ = writeln!(
                out,
                "{}\n{}\n{}",
                paint(&rule, "34", on),
                paint(&title, "34", on),
                paint(&rule, "34", on)
            );
            out.extend_from_slice(&text);
            if !text.is_empty() && !text.ends_with(b"\n") {
                out.push(b'\n');
            }
        }
        let _ = match stream {
            Stream::Stdout => std::io::stdout().lock().write_all(&out),
            Stream::Stderr => std::io::stderr().lock().write_all(&out),
        };
    }
}

/// Prints the `-L` listing: every host's stdout lines (on stdout) and stderr
/// lines (on stderr), host after host in node order.
pub fn print_by_host(hosts: &[HostTasks<'_>], prefix: bool, colours: Colours) {
    for (label, tasks) in hosts {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let text = captured(tasks, stream);
            for line in String::from_utf8_lossy(&text).lines() {
                emit(stream, label, line, prefix, colours);
            }
        }
    }
}
