//! [`Report::gather`]: labels grouped by identical results, the way
//! `clush -b` and `pssh` print them; and [`fold_labels`], which writes a
//! list of labels in ClusterShell node-set syntax (`web[01-03],db1`).
//!
//! Invariant: every label of the report is in exactly one group; groups are
//! in the order of their first label, labels in report (registration) order.
//!
//! May use: the report types only.

use std::collections::HashMap;

use serde::ser::{SerializeStruct, Serializer};
use serde::Serialize;

use super::{LabelReport, Report, TaskStatus};

/// Labels whose runs came out the same: the same captured stdout and stderr
/// (each the concatenation over the label's tasks), and the same status and
/// exit code for every task, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputGroup {
    labels: Vec<String>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    outcomes: Vec<(TaskStatus, Option<i32>)>,
    success: bool,
}

impl OutputGroup {
    /// The labels, in registration order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The labels folded into node-set syntax (see [`fold_labels`]).
    pub fn folded_labels(&self) -> String {
        fold_labels(&self.labels)
    }

    /// The captured stdout every label of the group has.
    pub fn stdout(&self) -> &[u8] {
        &self.stdout
    }

    /// The captured stderr every label of the group has.
    pub fn stderr(&self) -> &[u8] {
        &self.stderr
    }

    /// Each task's status and exit code, in queue order.
    pub fn outcomes(&self) -> &[(TaskStatus, Option<i32>)] {
        &self.outcomes
    }

    /// Whether the labels ended without an error.
    pub fn success(&self) -> bool {
        self.success
    }
}

impl Serialize for OutputGroup {
    /// `{"labels": [..], "nodeset": "web[1-3]", "success", "stdout", "stderr",
    /// "outcomes": [{"status", "exit_code"}]}`, output as lossy text.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Outcome(TaskStatus, Option<i32>);
        impl Serialize for Outcome {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut st = s.serialize_struct("Outcome", 2)?;
                st.serialize_field("status", &self.0)?;
                st.serialize_field("exit_code", &self.1)?;
                st.end()
            }
        }
        let outcomes: Vec<Outcome> = self.outcomes.iter().map(|&(st, code)| Outcome(st, code)).collect();
        let mut st = s.serialize_struct("OutputGroup", 6)?;
        st.serialize_field("labels", &self.labels)?;
        st.serialize_field("nodeset", &self.folded_labels())?;
        st.serialize_field("success", &self.success)?;
        st.serialize_field("stdout", &String::from_utf8_lossy(&self.stdout))?;
        st.serialize_field("stderr", &String::from_utf8_lossy(&self.stderr))?;
        st.serialize_field("outcomes", &outcomes)?;
        st.end()
    }
}

fn key(l: &LabelReport) -> OutputGroup {
    let mut g = OutputGroup {
        labels: Vec::new(),
        stdout: Vec::new(),
        stderr: Vec::new(),
        outcomes: Vec::with_capacity(l.tasks.len()),
        success: l.success(),
    };
    for t in &l.tasks {
        g.stdout.extend_from_slice(t.stdout().unwrap_or_default());
        g.stderr.extend_from_slice(t.stderr().unwrap_or_default());
        g.outcomes.push((t.status, t.exit_code));
    }
    g
}

impl Report {
    /// The labels grouped by identical results (see [`OutputGroup`]), in
    /// the order of each group's first label.
    pub fn gather(&self) -> Vec<OutputGroup> {
        let mut groups: Vec<OutputGroup> = Vec::new();
        let mut index: HashMap<OutputGroup, usize> = HashMap::new();
        for l in &self.labels {
            let k = key(l);
            match index.get(&k) {
                Some(&i) => groups[i].labels.push(l.label.to_string()),
                None => {
                    index.insert(k.clone(), groups.len());
                    let mut g = k;
                    g.labels.push(l.label.to_string());
                    groups.push(g);
                }
            }
        }
        groups
    }
}

impl std::hash::Hash for OutputGroup {
    // Only the result: `labels` is what a group collects, not what it is.
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.stdout.hash(h);
        self.stderr.hash(h);
        self.outcomes.hash(h);
        self.success.hash(h);
    }
}

/// Folds labels into ClusterShell node-set syntax: labels that differ only
/// in a trailing number of the same width become one range set
/// (`web01,web02,web03,web05` -> `web[01-03,05]`); other labels are kept as
/// they are. Prefixes keep the order of their first label; numbers are
/// sorted; duplicates are dropped.
///
/// ```
/// use ssh_parallel::fold_labels;
/// assert_eq!(fold_labels(["web01", "web02", "web03", "db1", "web05"]), "web[01-03,05],db1");
/// assert_eq!(fold_labels(["a", "n9", "n10"]), "a,n9,n10");
/// ```
pub fn fold_labels<I, S>(labels: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    // (prefix, digits width) -> numbers; a width of 0 is a label without one.
    let mut order: Vec<(String, usize)> = Vec::new();
    let mut nums: HashMap<(String, usize), Vec<u64>> = HashMap::new();
    for l in labels {
        let l = l.as_ref();
        let digits = l.len() - l.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let (prefix, n) = match l[l.len() - digits..].parse::<u64>() {
            Ok(n) if digits > 0 => (&l[..l.len() - digits], Some(n)),
            _ => (l, None),
        };
        let k = (prefix.to_owned(), if n.is_some() { digits } else { 0 });
        let e = nums.entry(k.clone()).or_insert_with(|| {
            order.push(k);
            Vec::new()
        });
        e.extend(n);
    }
    let mut out = Vec::with_capacity(order.len());
    for k in order {
        let (prefix, width) = (&k.0, k.1);
        let mut v = nums.remove(&k).unwrap_or_default();
        if width == 0 {
            out.push(prefix.clone());
            continue;
        }
        v.sort_unstable();
        v.dedup();
        if v.len() == 1 {
            out.push(format!("{prefix}{:0width$}", v[0]));
            continue;
        }
        let mut ranges = Vec::new();
        let mut i = 0;
        while i < v.len() {
            let mut j = i;
            while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
                j += 1;
            }
            ranges.push(if i == j {
                format!("{:0width$}", v[i])
            } else {
                format!("{:0width$}-{:0width$}", v[i], v[j])
            });
            i = j + 1;
        }
        out.push(format!("{prefix}[{}]", ranges.join(",")));
    }
    out.join(",")
}
