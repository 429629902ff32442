//! The checks before a run: every goto and or_goto has a later `here` of its
//! tag, and (in debug builds) the graph is acyclic.
//!
//! Invariant: validation only reads the plan; problems are reported, the
//! first one in full and the count of the rest.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Plan, TaskRef};
use crate::error::{Error, ErrorKind, Result};
use crate::task::Action;

impl Plan {
    /// Checks the plan before running: every goto and or_goto must have a
    /// later `here` (except `END`), and the graph must be acyclic.
    pub(crate) fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        for entry in &self.labels {
            // Tags jumped to but not yet seen, walking the chain forward.
            let mut pending: HashMap<&str, Vec<&str>> = HashMap::new();
            let mut cur = entry.head;
            while let Some(n) = cur {
                if let Some(TaskRef { action, desc, .. }) = self.task(n) {
                    if let Action::Here(h) = &**action {
                        pending.remove(h.tag.as_str());
                    }
                    let goto = match &**action {
                        Action::Goto(g) => Some(g.tag.as_str()),
                        _ => None,
                    };
                    let or_goto = action.opts().and_then(|o| o.or_goto.as_deref());
                    for tag in goto.into_iter().chain(or_goto) {
                        if tag != "END" {
                            pending.entry(tag).or_default().push(desc);
                        }
                    }
                }
                cur = self.next(n);
            }
            let mut missing: Vec<_> = pending.into_iter().collect();
            missing.sort();
            for (tag, tasks) in missing {
                problems.push(
                    Error::new(
                        ErrorKind::MissingTag,
                        format!("no `here {tag}` after {} to jump to", tasks.join(", ")),
                    )
                    .with_label(entry.name.clone()),
                );
            }
        }
        // Pushes only ever add edges to new nodes, so a cycle is a bug: check
        // in debug builds, where the O(V + E) walk is affordable.
        if cfg!(debug_assertions) && petgraph::algo::is_cyclic_directed(&self.graph) {
            problems.push(Error::new(
                ErrorKind::InvalidConfig,
                "the task graph has a cycle (this is a bug)",
            ));
        }
        match problems.len() {
            0 => Ok(()),
            1 => Err(problems.remove(0)),
            n => {
                let first = problems.remove(0);
                let detail = format!("{} (and {} more problems)", first.detail(), n - 1);
                let label = first.label().map(Arc::<str>::from);
                let mut e = Error::new(first.kind(), detail);
                if let Some(l) = label {
                    e = e.with_label(l);
                }
                Err(e)
            }
        }
    }
}
