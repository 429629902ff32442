//! Walking and popping a label's queue, and the accessors that take graph
//! nodes apart: the only code that matches on `Node` and `Step`, so that
//! everything else reads a task through [`TaskRef`].
//!
//! Invariant: `pop` keeps `head`/`tail` consistent (both `None` once the
//! queue is empty); walks are forward only, along `Next` edges.

use std::sync::Arc;

use petgraph::graph::NodeIndex;
use petgraph::visit::EdgeRef;
use petgraph::Direction::{Incoming, Outgoing};

use super::{Edge, JoinState, LabelId, Node, Plan, Step};
use crate::task::Action;

/// A user's task in a queue: the parts of a `Step::Action` node.
#[derive(Clone, Copy)]
pub(crate) struct TaskRef<'a> {
    /// Its position in the label's report.
    pub(crate) seq: usize,
    pub(crate) action: &'a Arc<Action>,
    /// `action.describe()`, computed once at push.
    pub(crate) desc: &'a Arc<str>,
    /// For a `Join` action, the join node it waits on.
    pub(crate) join: Option<NodeIndex>,
}

impl Plan {
    /// The user's task at `n`; `None` for a join marker or a join node.
    pub(crate) fn task(&self, n: NodeIndex) -> Option<TaskRef<'_>> {
        match &self.graph[n] {
            Node::Task {
                seq,
                step: Step::Action { action, desc, join },
                ..
            } => Some(TaskRef {
                seq: *seq,
                action,
                desc,
                join: *join,
            }),
            _ => None,
        }
    }

    /// The join that the marker at `n` counts for; `None` if `n` is no marker.
    pub(crate) fn marker(&self, n: NodeIndex) -> Option<NodeIndex> {
        match &self.graph[n] {
            Node::Task {
                step: Step::Marker(j), ..
            } => Some(*j),
            _ => None,
        }
    }

    /// The label whose queue holds `n` (`None` for a join node).
    pub(crate) fn label_of(&self, n: NodeIndex) -> Option<LabelId> {
        match &self.graph[n] {
            Node::Task { label, .. } => Some(*label),
            Node::Join(_) => None,
        }
    }

    /// The state of join node `j`.
    pub(crate) fn join(&self, j: NodeIndex) -> Option<&JoinState> {
        match &self.graph[j] {
            Node::Join(js) => Some(js),
            Node::Task { .. } => None,
        }
    }

    /// The state of join node `j`, to count its markers down.
    pub(crate) fn join_mut(&mut self, j: NodeIndex) -> Option<&mut JoinState> {
        match &mut self.graph[j] {
            Node::Join(js) => Some(js),
            Node::Task { .. } => None,
        }
    }

    /// The task after `n` in its label's queue.
    pub(crate) fn next(&self, n: NodeIndex) -> Option<NodeIndex> {
        self.graph
            .edges_directed(n, Outgoing)
            .find(|e| *e.weight() == Edge::Next)
            .map(|e| e.target())
    }

    /// Whether a task that needs a channel (a command or a transfer) is likely
    /// to follow `n` in its queue, looking past markers, joins, `here`s, subs
    /// and connects (a `goto` usually loops back to commands). The SSH
    /// transport then opens that channel while `n` runs.
    pub(crate) fn channel_task_follows(&self, n: NodeIndex) -> bool {
        let mut cur = self.next(n);
        // Bounded: a queue of thousands of local steps is not worth walking.
        for _ in 0..16 {
            let Some(node) = cur else { return false };
            if let Some(t) = self.task(node) {
                match &**t.action {
                    Action::Command(_)
                    | Action::ScpGet(_)
                    | Action::ScpPut(_)
                    | Action::RsyncGet(_)
                    | Action::RsyncPut(_)
                    | Action::Goto(_) => return true,
                    // A drain's jobs are spliced in front of it when taken.
                    Action::Parsub(_) | Action::Stop(_) | Action::Drain(_) => return false,
                    Action::Join(_) | Action::Here(_) | Action::Sub(_) | Action::Connect(_) => {}
                }
            } else if self.marker(node).is_none() {
                return false;
            }
            cur = self.next(node);
        }
        false
    }

    /// Removes the head of `label`'s queue.
    pub(crate) fn pop(&mut self, label: LabelId) {
        let entry = &self.labels[label];
        let next = entry.head.and_then(|h| self.next(h));
        let entry = &mut self.labels[label];
        entry.head = next;
        if next.is_none() {
            entry.tail = None;
        }
    }

    /// The labels join node `j` waits for: those holding one of its markers.
    pub(crate) fn join_targets(&self, j: NodeIndex) -> impl Iterator<Item = LabelId> + '_ {
        self.graph
            .edges_directed(j, Incoming)
            .filter(|e| *e.weight() == Edge::Marker)
            .filter_map(|e| self.label_of(e.source()))
    }

    /// The tasks waiting on join node `j`.
    pub(crate) fn waiters(&self, j: NodeIndex) -> Vec<NodeIndex> {
        self.graph
            .edges_directed(j, Outgoing)
            .filter(|e| *e.weight() == Edge::Release)
            .map(|e| e.target())
            .collect()
    }

    /// The first `here tag` after `from` in its label's queue.
    pub(crate) fn find_here(&self, from: NodeIndex, tag: &str) -> Option<NodeIndex> {
        let mut cur = self.next(from);
        while let Some(n) = cur {
            if self
                .task(n)
                .is_some_and(|t| matches!(&**t.action, Action::Here(h) if h.tag == tag))
            {
                return Some(n);
            }
            cur = self.next(n);
        }
        None
    }

    /// Forgets every task; called when a run has emptied every queue.
    pub(crate) fn clear_tasks(&mut self) {
        self.graph.clear();
        self.has_jumps = false;
        for l in &mut self.labels {
            l.head = None;
            l.tail = None;
            l.next_seq = 0;
        }
    }

    /// How many user tasks are queued (markers and join nodes not counted).
    pub(crate) fn task_count(&self) -> usize {
        self.graph.node_indices().filter(|&n| self.task(n).is_some()).count()
    }
}
