//! From the schema to a `Parallel`: the builder's settings, one `Host` per
//! entry (defaults merged in), one `Action` per step, then the checks, then
//! the pushes.
//!
//! Invariant: problems are collected, not returned at the first; nothing is
//! pushed unless no problem was found, so a `Parallel` that comes out holds
//! the whole plan and a failure holds every problem found.
//!
//! May use: `schema`, `check`, `queue`, `error` (its siblings), `parallel`, `host`,
//! `task`, `plan` (selectors).

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;

use toml::Spanned;

use super::check::{self, Step};
use super::error::{PlanFileError, Problem, ProblemKind};
use super::queue;
use super::schema::{HostDefaults, RawHost, RawStep, Run, Tool};
use super::PlanFile;
use crate::host::Host;
use crate::parallel::Parallel;
use crate::plan::Selector;
use crate::task::output::Stdin;
use crate::task::{
    Action, Command, Connect, Drain, Goto, Here, JobQueue, Join, RsyncGet, RsyncPut, ScpGet, ScpPut, Stop,
};

/// The problems found so far, and the file they are in.
pub(super) struct Problems<'a> {
    pub(super) file: &'a PlanFile,
    pub(super) found: Vec<Problem>,
}

impl Problems<'_> {
    pub(super) fn add(&mut self, span: Option<Range<usize>>, kind: ProblemKind, message: impl Into<String>) {
        let p = Problem::at(&self.file.path, &self.file.text, span, kind, message.into());
        self.found.push(p);
    }

    /// All of them, in file order, as the error; `Ok` when there are none.
    fn finish(mut self) -> Result<(), PlanFileError> {
        if self.found.is_empty() {
            return Ok(());
        }
        self.found
            .sort_by_key(|p| (p.line().unwrap_or(usize::MAX), p.column().unwrap_or(0)));
        self.found.dedup();
        Err(PlanFileError::Invalid { problems: self.found })
    }
}

pub(super) fn build(file: &PlanFile, mut edit: impl FnMut(Action) -> Action) -> Result<Parallel, PlanFileError> {
    let mut problems = Problems {
        file,
        found: Vec::new(),
    };
    let raw = &file.raw;
    let Some(mut pssh) = parallel(file, &mut problems) else {
        return Err(problems.finish().err().unwrap_or_else(|| unreachable_error(file)));
    };
    add_hosts(file, &mut pssh, &mut problems);
    let (handles, queues) = queue::queues(file, &mut problems);
    let steps: Vec<Option<Step<'_>>> = raw.step.iter().map(|s| step(s, &handles, &mut problems)).collect();
    check::check(&pssh, &steps, &queues, &mut problems);
    problems.finish()?;
    let mut problems = Problems {
        file,
        found: Vec::new(),
    };
    for s in steps.into_iter().flatten() {
        let span = s.span.clone();
        if let Err(e) = pssh.push(s.on.clone(), edit(s.action)) {
            problems.add(Some(span), ProblemKind::Library(e.kind()), e.to_string());
        }
    }
    if let Err(e) = pssh.validate() {
        problems.add(None, ProblemKind::Library(e.kind()), e.to_string());
    }
    problems.finish()?;
    Ok(pssh)
}

/// A build that failed without saying why would be a bug; say so rather than panic.
fn unreachable_error(file: &PlanFile) -> PlanFileError {
    PlanFileError::Invalid {
        problems: vec![Problem::at(
            &file.path,
            &file.text,
            None,
            ProblemKind::Library(crate::error::ErrorKind::InvalidConfig),
            "the plan could not be built (no reason recorded: this is a bug)".into(),
        )],
    }
}

/// The `Parallel` the `[defaults]` settings describe.
fn parallel(file: &PlanFile, problems: &mut Problems<'_>) -> Option<Parallel> {
    let mut b = Parallel::builder();
    let Some(d) = &file.raw.defaults else {
        return Some(Parallel::new());
    };
    let span = d.span();
    let d = d.get_ref();
    if let Some(n) = d.workers {
        b = b.workers(n);
    }
    if let Some(n) = d.connections {
        b = b.connections(n);
    }
    if let Some(n) = d.reconnections {
        b = b.reconnections(n);
    }
    if let Some(t) = d.reconnect_delay {
        b = b.reconnect_delay(t.0);
    }
    if let Some(p) = &d.on_error {
        b = b.on_error(p.0.clone());
    }
    if let Some(t) = d.idle_timeout {
        b = b.idle_timeout(t.0);
    }
    if let Some(n) = d.io_threads {
        b = b.io_threads(n);
    }
    if let Some(on) = d.channels_ahead {
        b = b.channels_ahead(on);
    }
    match d.ssh_config.as_ref().map(|s| s.get_ref().as_str()) {
        None => {}
        Some("none") => b = b.no_ssh_config(),
        Some(path) => b = b.ssh_config(tilde(path)),
    }
    match b.build() {
        Ok(p) => Some(p),
        Err(e) => {
            problems.add(
                Some(span),
                ProblemKind::Library(e.kind()),
                format!("[defaults]: {}", e.detail()),
            );
            None
        }
    }
}

/// Registers every host entry, in file order.
fn add_hosts(file: &PlanFile, pssh: &mut Parallel, problems: &mut Problems<'_>) {
    let defaults = file
        .raw
        .defaults
        .as_ref()
        .map(|d| d.get_ref().host_defaults())
        .unwrap_or_default();
    let Some(hosts) = &file.raw.hosts else {
        problems.add(
            Some(0..0),
            ProblemKind::Schema,
            "the plan has no [hosts] table: name at least one host",
        );
        return;
    };
    if hosts.get_ref().0.is_empty() {
        problems.add(
            Some(hosts.span()),
            ProblemKind::Schema,
            "[hosts] is empty: name at least one host",
        );
    }
    for (label, entry) in &hosts.get_ref().0 {
        let host = match entry.get_ref() {
            RawHost::Spec(spec) => Host::parse(spec).map(|h| with_defaults(h, &defaults, &HostDefaults::default())),
            RawHost::Table(t) => {
                let base = match (t.local, &t.host) {
                    (true, Some(h)) => {
                        problems.add(
                            Some(h.span()),
                            ProblemKind::Schema,
                            format!(
                                "host {:?}: `local = true` and `host` exclude each other",
                                label.get_ref()
                            ),
                        );
                        continue;
                    }
                    (true, None) => Ok(Host::local()),
                    (false, Some(h)) => Host::parse(h.get_ref()),
                    (false, None) => Host::parse(label.get_ref()),
                };
                base.map(|h| {
                    let mut h = with_defaults(h, &defaults, &t.host_defaults());
                    if let Some(p) = &t.on_error {
                        h = h.on_error(p.0.clone());
                    }
                    if let Some(n) = t.reconnections {
                        h = h.reconnections(n);
                    }
                    h
                })
            }
        };
        let result = host
            .map_err(|e| (entry.span(), e))
            .and_then(|h| pssh.add_host(label.get_ref().clone(), h).map_err(|e| (label.span(), e)));
        if let Err((span, e)) = result {
            problems.add(
                Some(span),
                ProblemKind::Host,
                format!("host {:?}: {}", label.get_ref(), e.detail()),
            );
        }
    }
}

/// `host` with the entry's settings, else the defaults'.
fn with_defaults(mut h: Host, d: &HostDefaults, own: &HostDefaults) -> Host {
    if let Some(u) = own.user.as_ref().or(d.user.as_ref()) {
        // A `user@` in the host specification wins, as on ssh's command line.
        if h.user_name().is_none() {
            h = h.user(u.clone());
        }
    }
    if let Some(p) = own.port.or(d.port) {
        if h.port_number().is_none() {
            h = h.port(p);
        }
    }
    for k in own
        .key
        .as_ref()
        .or(d.key.as_ref())
        .map(|k| k.0.as_slice())
        .unwrap_or_default()
    {
        h = h.key_file(tilde(k));
    }
    if let Some(t) = own.connect_timeout.or(d.connect_timeout) {
        h = h.connect_timeout(t.0);
    }
    if let Some(t) = own.auth_timeout.or(d.auth_timeout) {
        h = h.auth_timeout(t.0);
    }
    if let Some(t) = own.keepalive.or(d.keepalive) {
        h = h.keepalive(t.0);
    }
    if let Some(c) = own.host_key_check.or(d.host_key_check) {
        h = h.host_key_check(c.0);
    }
    for vars in [&d.vars, &own.vars].into_iter().flatten() {
        for (name, value) in vars {
            h = h.var(name.clone(), value.clone());
        }
    }
    if let Some(on) = own.expand_vars.or(d.expand_vars) {
        h = h.expand_vars(on);
    }
    h
}

/// `~/` at the start of a path is the home directory, as in ssh_config.
fn tilde(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

/// The keys that choose a step's action.
const ACTION_KEYS: &str = "run, put, get, join, here, goto, stop, connect or drain";

/// The step's action and selector, or `None` after adding its problems.
fn step<'a>(
    s: &'a Spanned<RawStep>,
    queues: &BTreeMap<&str, JobQueue>,
    problems: &mut Problems<'_>,
) -> Option<Step<'a>> {
    let span = s.span();
    let r = s.get_ref();
    let (kind, key_span, action) = prepare(r, span.clone(), ACTION_KEYS, "a step", problems)?;
    let action = match (kind, &r.drain) {
        ("drain", Some(name)) => match queues.get(name.get_ref().as_str()) {
            Some(q) => Drain::new(q).into(),
            None => {
                let known: Vec<&str> = queues.keys().copied().collect();
                problems.add(
                    Some(key_span),
                    ProblemKind::UnknownQueue,
                    format!(
                        "unknown queue {:?}: no [queue.{}] table defines it (defined: {})",
                        name.get_ref(),
                        name.get_ref(),
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
                return None;
            }
        },
        _ => action,
    };
    let on_text = r.on.as_ref().map_or("*", |o| o.get_ref().as_str());
    let on_span = r.on.as_ref().map_or(key_span.clone(), Spanned::span);
    let on = match Selector::parse(on_text) {
        Ok(s) => s,
        Err(e) => {
            problems.add(Some(on_span), ProblemKind::InvalidSelector, e.detail().to_owned());
            return None;
        }
    };
    Some(Step {
        span,
        on,
        on_span,
        key_span,
        raw: r,
        action,
    })
}

/// The action key of a step or job (one of `allowed`), where its value is
/// written, and its action with every option applied and checked by the
/// library; `None` after adding its problems. A drain's action is a
/// placeholder (`Stop`) for the caller to replace: only it knows the queues.
pub(super) fn prepare(
    r: &RawStep,
    span: Range<usize>,
    allowed: &str,
    what: &str,
    problems: &mut Problems<'_>,
) -> Option<(&'static str, Range<usize>, Action)> {
    let keys: Vec<(&'static str, Range<usize>)> = [
        ("run", r.run.as_ref().map(Spanned::span)),
        ("put", r.put.as_ref().map(Spanned::span)),
        ("get", r.get.as_ref().map(Spanned::span)),
        ("join", r.join.as_ref().map(Spanned::span)),
        ("here", r.here.as_ref().map(Spanned::span)),
        ("goto", r.goto.as_ref().map(Spanned::span)),
        ("stop", r.stop.as_ref().map(Spanned::span)),
        ("connect", r.connect.as_ref().map(Spanned::span)),
        ("drain", r.drain.as_ref().map(Spanned::span)),
    ]
    .into_iter()
    .filter_map(|(k, s)| s.map(|s| (k, s)))
    .collect();
    let (kind, key_span) = match keys.as_slice() {
        [] => {
            problems.add(
                Some(span),
                ProblemKind::Schema,
                format!("{what} needs one of {allowed}"),
            );
            return None;
        }
        [(k, s)] if !allowed.split([',', ' ']).any(|a| a == *k) => {
            problems.add(
                Some(s.clone()),
                ProblemKind::Schema,
                format!("`{k}` is not {what}'s action: {what} is one of {allowed}"),
            );
            return None;
        }
        [(k, s)] => (*k, s.clone()),
        [(a, _), (b, s), ..] => {
            problems.add(
                Some(s.clone()),
                ProblemKind::Schema,
                format!("{what} has one action, and this one has `{a}` and `{b}`: split it in two"),
            );
            return None;
        }
    };
    let before = problems.found.len();
    check_options(r, kind, problems);
    let action = action(r, kind, &key_span, problems);
    if problems.found.len() > before {
        return None;
    }
    let action = action?;
    if let Err(e) = action.check() {
        problems.add(Some(key_span), ProblemKind::Library(e.kind()), e.detail().to_owned());
        return None;
    }
    Some((kind, key_span, action))
}

/// Refuses the options that mean nothing for a step of this `kind`.
fn check_options(r: &RawStep, kind: &str, problems: &mut Problems<'_>) {
    let transfer = matches!(kind, "put" | "get");
    let remote = matches!(kind, "run" | "put" | "get" | "connect");
    let options: [(&str, Option<Range<usize>>, bool); 13] = [
        ("to", r.to.as_ref().map(Spanned::span), transfer),
        ("with", r.with.as_ref().map(Spanned::span), transfer),
        ("recursive", r.recursive.as_ref().map(Spanned::span), transfer),
        ("args", r.args.as_ref().map(Spanned::span), transfer),
        ("timeout", r.timeout.as_ref().map(Spanned::span), remote),
        ("reconnections", r.reconnections.as_ref().map(Spanned::span), remote),
        ("or_goto", r.or_goto.as_ref().map(Spanned::span), remote),
        (
            "on_error",
            r.on_error.as_ref().map(Spanned::span),
            remote || kind == "join",
        ),
        (
            "idle_timeout",
            r.idle_timeout.as_ref().map(Spanned::span),
            kind == "run",
        ),
        (
            "ok_exit_codes",
            r.ok_exit_codes.as_ref().map(Spanned::span),
            kind == "run",
        ),
        ("env", r.env.as_ref().map(Spanned::span), kind == "run"),
        ("pty", r.pty.as_ref().map(Spanned::span), kind == "run"),
        ("stdin", r.stdin.as_ref().map(Spanned::span), kind == "run"),
    ];
    for (name, span, applies) in options {
        if let (Some(span), false) = (span, applies) {
            problems.add(
                Some(span),
                ProblemKind::Schema,
                format!("option `{name}` does not apply to a `{kind}` step"),
            );
        }
    }
    if transfer && r.to.is_none() {
        problems.add(
            r.put.as_ref().or(r.get.as_ref()).map(Spanned::span),
            ProblemKind::Schema,
            format!("a `{kind}` step needs `to`, the destination"),
        );
    }
    if let (Some(args), false) = (&r.args, r.with.as_ref().is_some_and(|w| *w.get_ref() == Tool::Rsync)) {
        problems.add(
            Some(args.span()),
            ProblemKind::Schema,
            "option `args` needs `with = \"rsync\"`",
        );
    }
    for (key, flag) in [("stop", &r.stop), ("connect", &r.connect)] {
        if let Some(f) = flag.as_ref().filter(|f| !*f.get_ref()) {
            problems.add(
                Some(f.span()),
                ProblemKind::Schema,
                format!("write `{key} = true` (or leave the step out)"),
            );
        }
    }
}

/// Applies the options every remote task takes.
macro_rules! task_opts {
    ($a:expr, $r:expr) => {{
        let mut a = $a;
        if let Some(t) = &$r.timeout {
            a = a.timeout(t.get_ref().0);
        }
        if let Some(n) = &$r.reconnections {
            a = a.reconnections(*n.get_ref());
        }
        if let Some(tag) = &$r.or_goto {
            a = a.or_goto(tag.get_ref().clone());
        }
        if let Some(p) = &$r.on_error {
            a = a.on_error(p.get_ref().0.clone());
        }
        Action::from(a)
    }};
}

/// The action of a step whose options were checked.
fn action(r: &RawStep, kind: &str, key_span: &Range<usize>, problems: &mut Problems<'_>) -> Option<Action> {
    let rsync = r.with.as_ref().is_some_and(|w| *w.get_ref() == Tool::Rsync);
    let recursive = r.recursive.as_ref().is_some_and(|f| *f.get_ref());
    let args = r.args.as_ref().map(|a| a.get_ref().clone()).unwrap_or_default();
    let to = r.to.as_ref().map(|t| t.get_ref().clone()).unwrap_or_default();
    Some(match kind {
        "run" => {
            let mut c = match r.run.as_ref()?.get_ref() {
                Run::Line(line) => Command::new(line.clone()),
                Run::Argv(words) if words.is_empty() => {
                    problems.add(Some(key_span.clone()), ProblemKind::Schema, "`run` has no words");
                    return None;
                }
                Run::Argv(words) => Command::argv(words),
            };
            for (name, value) in r.env.as_ref().map(|e| e.get_ref().iter()).into_iter().flatten() {
                c = c.env(name.clone(), value.clone());
            }
            if let Some(on) = &r.pty {
                c = c.pty(*on.get_ref());
            }
            if let Some(codes) = &r.ok_exit_codes {
                c = c.ok_exit_codes(codes.get_ref().iter().copied());
            }
            if let Some(t) = &r.idle_timeout {
                c = c.idle_timeout(t.get_ref().0);
            }
            if let Some(text) = &r.stdin {
                c = c.stdin(Stdin::data(text.get_ref().as_bytes()));
            }
            task_opts!(c, r)
        }
        "put" => {
            let sources = r.put.as_ref()?.get_ref().0.clone();
            if rsync {
                task_opts!(RsyncPut::many(sources, to).recursive(recursive).args(args), r)
            } else {
                task_opts!(ScpPut::many(sources, to).recursive(recursive), r)
            }
        }
        "get" => {
            let sources = r.get.as_ref()?.get_ref().0.clone();
            if rsync {
                task_opts!(RsyncGet::many(sources, to).recursive(recursive).args(args), r)
            } else {
                task_opts!(ScpGet::many(sources, to).recursive(recursive), r)
            }
        }
        "join" => {
            let mut j = Join::new(r.join.as_ref()?.get_ref().clone());
            if let Some(p) = &r.on_error {
                j = j.on_error(p.get_ref().0.clone());
            }
            j.into()
        }
        "here" => Here::new(r.here.as_ref()?.get_ref().clone()).into(),
        "goto" => Goto::new(r.goto.as_ref()?.get_ref().clone()).into(),
        "stop" => Stop.into(),
        "connect" => task_opts!(Connect::new(), r),
        // The queue is the caller's to find (see `prepare`).
        "drain" => Stop.into(),
        _ => return None,
    })
}
