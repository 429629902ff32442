//! Sub-nodes (Pegasus' parametrised nodes): several labels on one host,
//! `PARENT:0` .. `PARENT:n-1`, each with its own connection and the
//! variables `%SLOT%` (its index) and `%PARENT%` (the parent's name), and
//! the parent's name as a selector for all of them.
//!
//! Invariants: a parent name is never a label, and a label never a parent
//! name (both are refused as `DuplicateLabel`); a parent's slots are
//! registered together, in slot order, or not at all.
//!
//! May use: `error`, `host`, and the rest of `plan`.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::selector::validate_label;
use super::{LabelId, Plan};
use crate::error::{Error, ErrorKind, Result};
use crate::host::Host;

impl Plan {
    /// Registers one label `parent:i` per entry of `slots` on `host`, the
    /// entry's variables added to `%SLOT%` and `%PARENT%`, and records
    /// `parent` as the name of the group. Nothing is registered if any name
    /// is taken or invalid.
    pub(crate) fn add_slots(
        &mut self,
        parent: String,
        host: Host,
        slots: Vec<BTreeMap<String, String>>,
    ) -> Result<Vec<LabelId>> {
        validate_label(&parent)?;
        if slots.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                format!("sub-nodes of {parent:?}: at least one slot is needed (got 0)"),
            ));
        }
        let taken = |name: &str| self.index.contains_key(name) || self.parents.contains_key(name);
        if taken(&parent) {
            return Err(Error::new(
                ErrorKind::DuplicateLabel,
                format!("label {parent:?} is already registered (as a label or the parent of sub-nodes)"),
            ));
        }
        let names: Vec<String> = (0..slots.len()).map(|i| format!("{parent}:{i}")).collect();
        if let Some(n) = names.iter().find(|n| taken(n)) {
            return Err(Error::new(
                ErrorKind::DuplicateLabel,
                format!("sub-node {n:?} of {parent:?}: label {n:?} is already registered"),
            ));
        }
        let mut ids = Vec::with_capacity(slots.len());
        for (i, (name, vars)) in names.into_iter().zip(slots).enumerate() {
            let mut h = host.clone().var("SLOT", i.to_string()).var("PARENT", parent.clone());
            for (k, v) in vars {
                h = h.var(k, v);
            }
            ids.push(self.labels.len());
            self.add_host(name, h)?;
        }
        self.parents.insert(Arc::from(parent), ids.clone());
        Ok(ids)
    }

    /// The slots registered under the parent name `name`, if it is one.
    pub(crate) fn slots_of(&self, name: &str) -> Option<&[LabelId]> {
        self.parents.get(name).map(Vec::as_slice)
    }

    /// Whether `name` is the parent name of sub-nodes.
    pub(crate) fn is_parent(&self, name: &str) -> bool {
        self.parents.contains_key(name)
    }
}
