//! The plan as a Graphviz DOT digraph (`Parallel::to_dot`): one cluster per
//! label holding its queue as a chain of task nodes, one node per join (a
//! diamond, `SELECTOR done`) with
//! dashed edges from the markers of the labels it waits for and edges to the
//! tasks it releases, and dotted edges for gotos, or_gotos and stops.
//!
//! Invariant: the output is a pure function of the plan, reads it only
//! through the accessors of `queue`, and is valid DOT for any labels and
//! descriptions (every string is quoted and escaped; node ids are derived
//! from graph indices, never from user text).
//!
//! May use: `task` (to tell the actions apart), the plan's own types.

use std::fmt::Write;

use petgraph::graph::NodeIndex;

use super::Plan;
use crate::task::Action;

/// Longest description shown in a node, in characters; longer ones are cut
/// with `…` so that a command holding a whole script keeps the graph readable.
const MAX_DESC: usize = 120;

impl Plan {
    /// The plan graph as Graphviz DOT.
    pub(crate) fn to_dot(&self) -> String {
        let mut out = String::from(
            "digraph plan {\n  compound=true;\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\"];\n",
        );
        let mut cross = String::new();
        for (id, entry) in self.labels.iter().enumerate() {
            let _ = writeln!(out, "  subgraph cluster_{id} {{");
            let _ = writeln!(out, "    label={};", quote(&entry.name));
            let Some(head) = entry.head else {
                // Graphviz drops an empty cluster: give it a node to show.
                let _ = writeln!(out, "    l{id}_empty [label=\"(empty queue)\", shape=plaintext];");
                out.push_str("  }\n");
                continue;
            };
            let mut needs_end = false;
            let mut prev: Option<NodeIndex> = None;
            let mut cur = Some(head);
            while let Some(n) = cur {
                let node = n.index();
                if let Some(j) = self.marker(n) {
                    let _ = writeln!(out, "    n{node} [shape=point, label=\"\"];");
                    let _ = writeln!(cross, "  n{node} -> j{} [style=dashed, arrowhead=empty];", j.index());
                } else if let Some(t) = self.task(n) {
                    let _ = writeln!(out, "    n{node} [label={}];", quote(&shorten(t.desc)));
                    if let Some(j) = t.join {
                        let _ = writeln!(cross, "  j{} -> n{node};", j.index());
                    }
                    let goto = match &**t.action {
                        Action::Goto(g) => Some(("goto", g.tag.as_str())),
                        Action::Stop(_) => Some(("stop", "END")),
                        _ => None,
                    };
                    let or_goto = t
                        .action
                        .opts()
                        .and_then(|o| o.or_goto.as_deref())
                        .map(|tag| ("or_goto", tag));
                    for (what, tag) in goto.into_iter().chain(or_goto) {
                        let style = if what == "or_goto" {
                            "style=dotted, color=red, fontcolor=red"
                        } else {
                            "style=dotted"
                        };
                        let text = quote(&format!("{what} {tag}"));
                        match self.jump_target(n, tag) {
                            Some(h) => {
                                let _ = writeln!(out, "    n{node} -> n{} [label={text}, {style}];", h.index());
                            }
                            None => {
                                needs_end = true;
                                let _ = writeln!(out, "    n{node} -> l{id}_end [label={text}, {style}];");
                            }
                        }
                    }
                }
                if let Some(p) = prev {
                    let _ = writeln!(out, "    n{} -> n{node};", p.index());
                }
                prev = Some(n);
                cur = self.next(n);
            }
            if needs_end {
                let _ = writeln!(out, "    l{id}_end [label=\"end\", shape=doublecircle];");
            }
            out.push_str("  }\n");
        }
        for j in self.graph.node_indices() {
            if let Some(js) = self.join(j) {
                let _ = writeln!(
                    out,
                    "  j{} [label={}, shape=diamond];",
                    j.index(),
                    quote(&format!("{} done", js.selector))
                );
            }
        }
        out.push_str(&cross);
        out.push_str("}\n");
        out
    }

    /// Where a jump to `tag` from `n` lands: the next `here tag`; `None` for
    /// `END` or a missing tag (both end the queue).
    fn jump_target(&self, n: NodeIndex, tag: &str) -> Option<NodeIndex> {
        if tag == "END" {
            return None;
        }
        self.find_here(n, tag)
    }
}

/// `desc` cut to [`MAX_DESC`] characters.
fn shorten(desc: &str) -> String {
    if desc.chars().count() <= MAX_DESC {
        return desc.to_owned();
    }
    let mut s: String = desc.chars().take(MAX_DESC - 1).collect();
    s.push('…');
    s
}

/// `text` as a DOT double-quoted string. Backslashes are doubled (DOT reads
/// `\n`, `\l`, `\N`... as escapes in labels), newlines become `\n` line
/// breaks, and other control characters are shown as `\xNN` text, since
/// Graphviz has no way to draw them.
pub(crate) fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {
                let _ = write!(out, "\\\\x{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn quoting_escapes_what_dot_reads() {
        assert_eq!(quote("a\"b\\c\nd\re"), r#""a\"b\\c\nd\\x0de""#);
        assert_eq!(quote("née ✓"), "\"née ✓\"");
    }
}
