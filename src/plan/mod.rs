//! The plan: labels, their hosts, and the petgraph dependency graph of tasks.
//!
//! Each label's queue is a chain of task nodes linked by `Next` edges. A join
//! pushed with `push(W, Join::new(T))` is one `Join` node: every label in T gets
//! a marker task with a `Marker` edge into it, every label in W a wait task
//! with a `Release` edge out of it, so a join costs O(|W| + |T|) edges.
//!
//! Layout: this file holds the types, label registration and `push`;
//! [`selector`] the selector language; `queue` walking and popping a
//! label's queue (and the accessors that take nodes apart, the only place
//! that does); `slots` sub-nodes (several labels on one host); `validate`
//! the checks before a run; `dot` the graph drawn for Graphviz.
//!
//! Invariants: a label's `head..=tail` is its queue, linked by `Next` edges
//! (`head` and `tail` are both `None` or both `Some`); pushes only add edges
//! into new nodes (or, for a job a drain takes, out of a new node), so the
//! graph is acyclic; a `Join` node's `remaining`
//! counts its markers not yet reached or discarded; a push that fails
//! changes nothing.
//!
//! May use: `error`, `host`, `report` (to build a `LabelsView`), `task` (the
//! actions it stores).

mod dot;
mod queue;
pub(crate) mod selector;
mod slots;
mod validate;

use std::collections::HashMap;
use std::sync::Arc;

use petgraph::graph::{DiGraph, NodeIndex};

use crate::error::{Error, ErrorKind, Result};
use crate::host::Host;
use crate::report::{LabelReport, LabelsView};
use crate::task::Action;
pub(crate) use queue::TaskRef;
use selector::validate_label;
pub use selector::{IntoSelector, Selector};

/// Index of a label in registration order.
pub(crate) type LabelId = usize;

/// A registered label.
pub(crate) struct LabelEntry {
    pub(crate) name: Arc<str>,
    /// Shared with every job sent to a transport for this label.
    pub(crate) host: Arc<Host>,
    /// The first task of its queue (`None`: empty).
    pub(crate) head: Option<NodeIndex>,
    /// The last task of its queue, where pushes append.
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

/// A node of the graph: a task in one label's queue, or a join.
pub(crate) enum Node {
    Task { label: LabelId, seq: usize, step: Step },
    Join(JoinState),
}

/// An edge of the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Edge {
    /// The next task in the same label's queue.
    Next,
    /// From a marker to its join.
    Marker,
    /// From a join to a task waiting on it.
    Release,
}

/// The labels a selector named, in registration order: what `push` pushed
/// to, or what `select` found.
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

/// Compares the labels, in order: `assert_eq!(pssh.select("web*")?, vec!["web1", "web2"])`.
impl<S: AsRef<str>> PartialEq<Vec<S>> for Selection {
    fn eq(&self, other: &Vec<S>) -> bool {
        self.labels.len() == other.len() && self.labels.iter().zip(other).all(|(a, b)| **a == *b.as_ref())
    }
}

/// The labels and their queues; owned by `Parallel`, lent to the scheduler
/// for a run.
#[derive(Default)]
pub(crate) struct Plan {
    pub(crate) graph: DiGraph<Node, Edge>,
    /// In registration order: a `LabelId` is a position here.
    pub(crate) labels: Vec<LabelEntry>,
    /// Name to position in `labels`; same keys as `labels`' names.
    index: HashMap<Arc<str>, LabelId>,
    /// Whether a goto or or_goto was pushed since the last run: only then can
    /// `validate` find anything.
    pub(crate) has_jumps: bool,
    /// Parent names of sub-nodes (`slots`) to their labels, in slot order;
    /// no key is also a label.
    parents: HashMap<Arc<str>, Vec<LabelId>>,
}

impl Plan {
    pub(crate) fn add_host(&mut self, label: String, host: Host) -> Result<()> {
        validate_label(&label)?;
        if self.index.contains_key(label.as_str()) || self.is_parent(&label) {
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

    /// The labels `sel` names now, in registration order; a part naming
    /// the parent of sub-nodes names all of them.
    pub(crate) fn select(&self, sel: &Selector) -> Vec<LabelId> {
        let mut ids = sel.resolve(self.labels.iter().map(|l| &*l.name), |n| self.id(n));
        if !self.parents.is_empty() {
            let found = ids.len();
            for part in sel.exact_parts() {
                ids.extend(self.slots_of(part).unwrap_or_default());
            }
            if ids.len() != found {
                ids.sort_unstable();
                ids.dedup();
            }
        }
        ids
    }

    /// `ids` as a [`Selection`].
    pub(crate) fn selection(&self, ids: &[LabelId]) -> Selection {
        Selection {
            labels: ids.iter().map(|&i| self.labels[i].name.clone()).collect(),
        }
    }

    /// What subs and error callbacks see of a run whose results are `reports`.
    pub(crate) fn view<'a>(&'a self, reports: &'a [LabelReport]) -> LabelsView<'a> {
        LabelsView::new(&self.index, reports)
    }

    /// Appends `action` to every label `selector` names. Nothing is appended
    /// unless every label's copy could be prepared (variables expanded, join
    /// targets resolved), so a failed push leaves the plan as it was.
    /// Returns the labels pushed to.
    pub(crate) fn push(&mut self, selector: Selector, action: Action) -> Result<(Selection, Vec<LabelId>)> {
        action
            .check()
            .map_err(|e| Error::new(e.kind(), format!("push to {:?}: {}", selector.as_str(), e.detail())))?;
        let ids = self.select(&selector);
        let targets = match &action {
            Action::Join(j) => {
                let t = self.select(&Selector::parse(&j.selector)?);
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
        Ok((self.selection(&ids), touched))
    }

    /// Puts a task in front of `label`'s queue (a job a drain took, run
    /// before the drain goes on) and returns its node. The new node only has
    /// an edge out, so the graph stays acyclic.
    pub(crate) fn push_front(&mut self, label: LabelId, action: Arc<Action>, desc: Arc<str>) -> NodeIndex {
        let entry = &mut self.labels[label];
        let seq = entry.next_seq;
        entry.next_seq += 1;
        let old_head = entry.head;
        let step = Step::Action {
            action,
            desc,
            join: None,
        };
        let n = self.graph.add_node(Node::Task { label, seq, step });
        if let Some(h) = old_head {
            self.graph.add_edge(n, h, Edge::Next);
        }
        let entry = &mut self.labels[label];
        entry.head = Some(n);
        if entry.tail.is_none() {
            entry.tail = Some(n);
        }
        n
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
}
