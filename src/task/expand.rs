//! Per-label `%VAR%` expansion of an action: which fields are expanded
//! (command line, output and input file paths, environment values, transfer
//! paths) and sharing: an action with nothing to expand is not copied.
//!
//! Invariant: expansion is all or nothing: an unknown variable in any field
//! fails the whole action (and so the whole push).

use super::output::{Output, OutputKind, StdinKind};
use super::{vars, Action, Command, RsyncGet, RsyncPut, ScpGet, ScpPut, Transfer};
use crate::error::Result;
use crate::host::Host;

impl Action {
    /// This action with `%VAR%`s expanded for `label` on `host`, or `None` when
    /// nothing needed expanding (the caller then shares one copy between labels).
    pub(crate) fn expand_for(&self, label: &str, host: &Host) -> Result<Option<Action>> {
        if !host.expand_vars {
            return Ok(None);
        }
        let lookup = |name: &str| host.lookup_var(label, name);
        let mut changed = false;
        let mut ex = |s: &str| -> Result<String> {
            let out = vars::expand(s, &lookup).map_err(|e| e.with_label(label))?;
            if let std::borrow::Cow::Owned(o) = out {
                changed = true;
                Ok(o)
            } else {
                Ok(s.to_owned())
            }
        };
        let expanded = match self {
            Action::Command(c) => {
                if !needs_expansion(c) {
                    return Ok(None);
                }
                let mut c = c.clone();
                c.cmd = ex(&c.cmd)?;
                for out in [&mut c.stdout, &mut c.stderr] {
                    if let OutputKind::File { path, .. } = &mut out.0 {
                        *path = ex(path)?;
                    }
                }
                if let StdinKind::File(path) = &mut c.stdin.0 {
                    *path = ex(path)?;
                }
                for (_, v) in &mut c.env {
                    *v = ex(v)?;
                }
                Action::Command(c)
            }
            Action::ScpGet(ScpGet(t)) => Action::ScpGet(ScpGet(expand_transfer(t, &mut ex)?)),
            Action::ScpPut(ScpPut(t)) => Action::ScpPut(ScpPut(expand_transfer(t, &mut ex)?)),
            Action::RsyncGet(RsyncGet(t)) => Action::RsyncGet(RsyncGet(expand_transfer(t, &mut ex)?)),
            Action::RsyncPut(RsyncPut(t)) => Action::RsyncPut(RsyncPut(expand_transfer(t, &mut ex)?)),
            _ => return Ok(None),
        };
        Ok(changed.then_some(expanded))
    }
}

fn needs_expansion(c: &Command) -> bool {
    let file_has = |o: &Output| matches!(&o.0, OutputKind::File { path, .. } if path.contains('%'));
    c.cmd.contains('%')
        || file_has(&c.stdout)
        || file_has(&c.stderr)
        || matches!(&c.stdin.0, StdinKind::File(p) if p.contains('%'))
        || c.env.iter().any(|(_, v)| v.contains('%'))
}

fn expand_transfer(t: &Transfer, ex: &mut dyn FnMut(&str) -> Result<String>) -> Result<Transfer> {
    let mut t = t.clone();
    for s in &mut t.sources {
        *s = ex(s)?;
    }
    t.target = ex(&t.target)?;
    Ok(t)
}
