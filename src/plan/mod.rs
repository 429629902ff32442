//! The plan: labels, their hosts, and the petgraph dependency graph of tasks.
//!
//! Each label's queue is a chain of task nodes linked by `Next` edges. A join
//! pushed with `push(W, Join::new(T))` is one `Join` node: every label in T gets
//! a marker task with a `Marker` edge into it, every label in W a wait task
//! with a `Release` edge out of it, so a join costs O(|W| + |T|) edges.

pub(crate) mod selector;

use std::collections::HashMap;
use std::sync::Arc;

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use petgraph::Direction::Outgoing;

use crate::error::{Error, ErrorKind, Result};
use crate::host::Host;
use crate::plan::selector::{validate_label, Selector};
use crate::task::Action;

/// Index of a label in registration order.
pub(crate) type LabelId = usize;

/// A registered label.
pub(crate) struct LabelEntry {
    pub(crate) name: Arc<str>,
    pub(crate) host: Arc<Host>,
    pub(crate) head: Option<NodeIndex>,
    pub(crate) tail: Option<NodeIndex>,
    /// The report position of the next task pushed (markers take none).
    pub(crate) next_seq: usize,
}

/// What a task node does.
pub(crate) enum Step {
    /// A user's action. `join` is set for `Join` actions: the join node waited on.
    Action {
        action: Arc<Action>,
        desc: Arc<str>,
        join: Option<NodeIndex>,
    },
    /// Reaching this node counts the label as done for the join.
    Marker(NodeIndex),
}

/// A join's run-time state, kept on its node.
pub(crate) struct JoinState {
    pub(crate) selector: Arc<str>,
    /// Markers not yet reached or discarded.
    pub(crate) remaining: usize,
    /// The first target whose marker an abort discarded.
    pub(crate) failed_by: Option<Arc<str>>,
}

pub(crate) enum Node {
    Task { label: LabelId, seq: usize, step: Step },
    Join(JoinState),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Edge {
    /// The next task in the same label's queue.
    Next,
    /// From a marker to its join.
    Marker,
    /// From a join to a task waiting on it.
    Release,
}

/// The labels pushed to, as returned by `push`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    labels: Vec<Arc<str>>,
}

impl Selection {
    /// The labels, in registration order.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.labels.iter().map(|l| &**l)
    }

    /// How many labels were selected.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the selector matched no label (the push did nothing).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Whether `label` was selected.
    pub fn contains(&self, label: &str) -> bool {
        self.labels.iter().any(|l| &**l == label)
    }
}

#[derive(Default)]
pub(crate) struct Plan {
    pub(crate) graph: DiGraph<Node, Edge>,
    pub(crate) labels: Vec<LabelEntry>,
    index: HashMap<Arc<str>, LabelId>,
    /// Whether a goto or or_goto was pushed since the last run: only then can
    /// `validate` find anything.
    pub(crate) has_jumps: bool,
}

impl Plan {
    pub(crate) fn add_host(&mut self, label: String, host: Host) -> Result<()> {
        validate_label(&label)?;
        if self.index.contains_key(label.as_str()) {
            return Err(Error::new(
                ErrorKind::DuplicateLabel,
                format!("label {label:?} is already registered"),
            ));
        }
        let name: Arc<str> = label.into();
        self.index.insert(name.clone(), self.labels.len());
        self.labels.push(LabelEntry {
            name,
            host: Arc::new(host),
            head: None,
            tail: None,
            next_seq: 0,
        });
        Ok(())
    }

    pub(crate) fn id(&self, label: &str) -> Option<LabelId> {
        self.index.get(label).copied()
    }

    pub(crate) fn select(&self, selector: &str) -> Result<Vec<LabelId>> {
        let sel = Selector::parse(selector)?;
        Ok(sel.resolve(self.labels.iter().map(|l| &*l.name), |n| self.id(n)))
    }

    /// Appends `action` to every label `selector` names. Nothing is appended
    /// unless every label's copy could be prepared (variables expanded, join
    /// targets resolved), so a failed push leaves the plan as it was.
    /// Returns the labels pushed to.
    pub(crate) fn push(&mut self, selector: &str, action: Action) -> Result<(Selection, Vec<LabelId>)> {
        action
            .check()
            .map_err(|e| Error::new(e.kind(), format!("push to {selector:?}: {}", e.detail())))?;
        let ids = self.select(selector)?;
        let targets = match &action {
            Action::Join(j) => {
                let t = self.select(&j.selector)?;
                if t.is_empty() {
                    log::debug!(target: "ssh_parallel", "join {:?} matches no label: nothing pushed", j.selector);
                    return Ok((Selection::default(), Vec::new()));
                }
                t
            }
            _ => Vec::new(),
        };
        self.has_jumps |= matches!(action, Action::Goto(_)) || action.opts().is_some_and(|o| o.or_goto.is_some());
        let desc: Arc<str> = action.describe().into();
        let shared = Arc::new(action);
        let mut prepared = Vec::with_capacity(ids.len());
        for &id in &ids {
            let entry = &self.labels[id];
            match shared.expand_for(&entry.name, &entry.host)? {
                Some(a) => {
                    let d: Arc<str> = a.describe().into();
                    prepared.push((id, Arc::new(a), d));
                }
                None => prepared.push((id, shared.clone(), desc.clone())),
            }
        }
        let mut touched = Vec::with_capacity(ids.len() + targets.len());
        let join = if let Action::Join(j) = &*shared {
            let node = self.graph.add_node(Node::Join(JoinState {
                selector: j.selector.as_str().into(),
                remaining: targets.len(),
                failed_by: None,
            }));
            for &t in &targets {
                let m = self.append(t, Step::Marker(node));
                self.graph.add_edge(m, node, Edge::Marker);
                touched.push(t);
            }
            Some(node)
        } else {
            None
        };
        for (id, action, desc) in prepared {
            let n = self.append(id, Step::Action { action, desc, join });
            if let Some(j) = join {
                self.graph.add_edge(j, n, Edge::Release);
            }
            touched.push(id);
        }
        let selection = Selection {
            labels: ids.iter().map(|&i| self.labels[i].name.clone()).collect(),
        };
        Ok((selection, touched))
    }

    fn append(&mut self, label: LabelId, step: Step) -> NodeIndex {
        let entry = &mut self.labels[label];
        let seq = entry.next_seq;
        if matches!(step, Step::Action { .. }) {
            entry.next_seq += 1;
        }
        let n = self.graph.add_node(Node::Task { label, seq, step });
        let entry = &mut self.labels[label];
        match entry.tail {
            Some(t) => {
                self.graph.add_edge(t, n, Edge::Next);
            }
            None => entry.head = Some(n),
        }
        entry.tail = Some(n);
        n
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
            match &self.graph[node] {
                Node::Task {
                    step: Step::Action { action, .. },
                    ..
                } => match &**action {
                    Action::Command(_)
                    | Action::ScpGet(_)
                    | Action::ScpPut(_)
                    | Action::RsyncGet(_)
                    | Action::RsyncPut(_)
                    | Action::Goto(_) => return true,
                    Action::Parsub(_) | Action::Stop(_) => return false,
                    Action::Join(_) | Action::Here(_) | Action::Sub(_) | Action::Connect(_) => {}
                },
                Node::Task {
                    step: Step::Marker(_), ..
                } => {}
                Node::Join(_) => return false,
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
            if let Node::Task {
                step: Step::Action { action, .. },
                ..
            } = &self.graph[n]
            {
                if matches!(&**action, Action::Here(h) if h.tag == tag) {
                    return Some(n);
                }
            }
            cur = self.next(n);
        }
        None
    }

    /// Checks the plan before running: every goto and or_goto must have a
    /// later `here` (except `END`), and the graph must be acyclic.
    pub(crate) fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        for entry in &self.labels {
            // Tags jumped to but not yet seen, walking the chain forward.
            let mut pending: HashMap<&str, Vec<&str>> = HashMap::new();
            let mut cur = entry.head;
            while let Some(n) = cur {
                if let Node::Task {
                    step: Step::Action { action, desc, .. },
                    ..
                } = &self.graph[n]
                {
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

    pub(crate) fn task_count(&self) -> usize {
        self.graph
            .node_weights()
            .filter(|n| {
                matches!(
                    n,
                    Node::Task {
                        step: Step::Action { .. },
                        ..
                    }
                )
            })
            .count()
    }
}
