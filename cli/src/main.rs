//! `ssh-parallel`: the command line. Runs a command (or copies files) on a
//! node set of hosts with pdsh/clush habits, on the library's public API only.
//!
//! The run is started with `Parallel::start`; this (main) thread reads its
//! events and hands them to the `track::Tracker`, which writes every line,
//! record and progress update, so the library's threads never wait on our
//! stdout. `interrupt` turns Ctrl-C into the run's cancel. Modules: `args`
//! (clap), `hosts` (node sets), `sshopts` (`-o` and login options into a
//! `Host`), `output` (modes, sinks, `-b`/`-L` printing, JSON records),
//! `track`, `interrupt`, `exit` (the statuses); the Pegasus modes: `queue`,
//! `broadcast` (runners), `jobrun` (what they share), `jobfile` (the job
//! file format), `queuefile` (consuming it), `lock`, `edit` (`queue --edit`); `plan` (the `plan`
//! subcommand: a plan file run with the same output).

#![deny(missing_docs)]

mod args;
mod broadcast;
mod edit;
mod exit;
mod hosts;
mod interrupt;
mod jobfile;
mod jobrun;
mod lock;
mod output;
mod plan;
mod queue;
mod queuefile;
mod sshopts;
mod track;

use std::path::Path;
use std::time::Duration;

use ssh_parallel::{Action, Command, Parallel, Report, RsyncGet, RsyncPut, ScpGet, ScpPut, TransferProtocol};

use args::{Action as Sub, Cli, CopyArgs};
use output::Mode;
use sshopts::SshOptions;
use track::Tracker;

/// A usage error: printed as one line, exits with [`exit::USAGE`].
struct Usage(String);

impl<E: std::fmt::Display> From<E> for Usage {
    fn from(e: E) -> Self {
        Usage(e.to_string())
    }
}

fn main() {
    let cli = Cli::parse_all();
    init_logging(cli.common.verbose);
    match run(cli) {
        Ok(code) => std::process::exit(code),
        Err(Usage(msg)) => {
            eprintln!("ssh-parallel: error: {msg}");
            std::process::exit(exit::USAGE);
        }
    }
}

/// `-v` sets the level of this program and the library; `RUST_LOG` wins.
fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .target(env_logger::Target::Stderr)
        .init();
}

fn run(cli: Cli) -> Result<i32, Usage> {
    match &cli.action {
        Some(Sub::Queue(q)) => return queue::run(&cli, q),
        Some(Sub::Broadcast(b)) => return broadcast::run(&cli, b),
        Some(Sub::Plan(p)) => return plan::run(p, &cli.common),
        _ => {}
    }
    let common = &cli.common;
    let Prepared {
        mut pssh,
        targets,
        names,
        timeout,
    } = prepare(common, false)?;
    let actions = actions(&cli, &targets)?;
    check_resolvable(&names)?;

    let mode = Mode::from_args(&cli.output);
    // Registration order is node order (sub-nodes in slot order).
    let order: Vec<String> = pssh.labels().map(str::to_owned).collect();
    let mut tracker = Tracker::new(mode, output::Colours::detect(), order, common.max_status);
    for (label, action) in actions {
        pssh.push(&label, finish_action(action, mode, timeout))?;
    }
    let (report, interrupted) = watch(&mut pssh, &mut tracker);
    Ok(tracker.finish(&report, interrupted))
}

/// The hosts of the command line, registered on a new `Parallel`.
struct Prepared {
    /// One label per target, nothing pushed yet.
    pssh: Parallel,
    /// The targets, in node order.
    targets: Vec<hosts::Target>,
    /// The host names to resolve (see [`check_resolvable`]).
    names: Vec<String>,
    /// `-u`, per task.
    timeout: Option<Duration>,
}

/// Checks the host options and registers every target; `expand_vars` says
/// whether `%VAR%`s of the tasks pushed are expanded.
fn prepare(common: &args::Common, expand_vars: bool) -> Result<Prepared, Usage> {
    if common.hosts.is_empty() {
        return Err(Usage("no hosts: give them with -w NODESET".into()));
    }
    let targets = hosts::select(&common.hosts, &common.exclude).map_err(Usage)?;
    if targets.is_empty() {
        return Err(Usage("the node set is empty once -x is applied".into()));
    }
    if common.fanout == 0 {
        return Err(Usage("-f/--fanout must be at least 1".into()));
    }
    let options = SshOptions::parse(&common.options).map_err(Usage)?;
    let timeout = common.command_timeout.map(sshopts::secs).transpose().map_err(Usage)?;

    let mut builder = Parallel::builder().workers(common.fanout);
    if let Some(w) = common.waves {
        builder = builder.waves(w);
    }
    if let Some(m) = common.max_failures {
        builder = builder.max_failures(m);
    }
    if let Some(env) = options.resolve_env().map_err(Usage)? {
        builder = builder.ssh_config_env(env);
    }
    let mut pssh = builder.build()?;
    let mut names = Vec::new();
    for t in &targets {
        // Job files are templates (`%HOST%`, `%%`); a command line is not.
        let host = options.host_for(t, common).map_err(Usage)?.expand_vars(expand_vars);
        let first = match common.slots {
            Some(n) => pssh
                .add_slots(t.label.clone(), host, n)?
                .labels()
                .next()
                .map(str::to_owned),
            None => pssh.add_host(t.label.clone(), host).map(|()| Some(t.label.clone()))?,
        };
        // After `add_host`: an ssh_config alias has its HostName by now, and
        // that is the name that must resolve.
        if let Some(h) = first.and_then(|l| pssh.host(&l)) {
            names.push(h.hostname().to_owned());
        }
    }
    Ok(Prepared {
        pssh,
        targets,
        names,
        timeout,
    })
}

/// A usage error naming the hosts of `names` that do not resolve.
fn check_resolvable(names: &[String]) -> Result<(), Usage> {
    let unknown = hosts::unresolvable(names);
    if !unknown.is_empty() {
        let set = hosts::fold(unknown.iter().map(String::as_str));
        return Err(Usage(format!("unknown host {set}: the name does not resolve")));
    }
    Ok(())
}

/// How long events gather before the main thread shows them (and looks
/// whether the run ended): short enough that live lines look immediate.
const POLL: Duration = Duration::from_millis(10);

/// Runs the plan, showing its events on this thread as they come; returns
/// the report and whether Ctrl-C cancelled the run.
fn watch(pssh: &mut Parallel, tracker: &mut Tracker) -> (Report, bool) {
    let handle = pssh.start();
    let canceller = handle.canceller();
    interrupt::install(canceller.clone());
    let events = handle.events().clone();
    // Polled, not received blocking: a blocking receive per event costs a
    // futex wait, a context switch and crossbeam's spinning, which at 200
    // hosts (3 events each) was a third of the program's CPU. Events gather
    // for one period between looks, so live lines are at most that late.
    loop {
        for ev in events.try_iter() {
            tracker.on_event(ev);
        }
        // The run sends its last event before its report is ready, so once
        // it is, what is left is all in the channel.
        if handle.is_finished() {
            break;
        }
        std::thread::sleep(POLL);
    }
    for ev in events.try_iter() {
        tracker.on_event(ev);
    }
    let report = handle.wait();
    (report, canceller.is_cancelled())
}

/// The actions to push, label by label: the command, or the copies.
fn actions(cli: &Cli, targets: &[hosts::Target]) -> Result<Vec<(String, Action)>, Usage> {
    let mut out = Vec::new();
    match &cli.action {
        None => {
            let line = cli.command.join(" ");
            if line.trim().is_empty() {
                return Err(Usage("the command is empty".into()));
            }
            for (label, slot) in targets.iter().flat_map(|t| labels(t, cli.common.slots)) {
                let mut cmd = Command::new(line.clone());
                if let Some(i) = slot {
                    // Commands pass through as typed (no `%VAR%`): the shell's `$SLOT`.
                    cmd = cmd.env("SLOT", i.to_string());
                }
                out.push((label, cmd.into()));
            }
        }
        Some(Sub::Copy(c)) => {
            let (sources, dest) = split_paths(c)?;
            for s in sources {
                if std::fs::symlink_metadata(s).is_err() {
                    return Err(Usage(format!("copy: local source {s:?} does not exist")));
                }
            }
            for t in targets {
                let action: Action = if c.rsync {
                    RsyncPut::many(sources.iter().cloned(), dest.clone())
                        .recursive(c.recursive)
                        .into()
                } else {
                    ScpPut::many(sources.iter().cloned(), dest.clone())
                        .recursive(c.recursive)
                        .protocol(protocol(c))
                        .create_dirs(c.create_dirs)
                        .into()
                };
                out.push((t.label.clone(), action));
            }
        }
        // `run` hands plans to `plan::run` before any host is looked at.
        Some(Sub::Plan(_)) => {}
        Some(Sub::Rcopy(c)) => {
            let (sources, dest) = split_paths(c)?;
            if !Path::new(dest).is_dir() {
                return Err(Usage(format!("rcopy: local directory {dest:?} does not exist")));
            }
            for (label, _) in targets.iter().flat_map(|t| labels(t, cli.common.slots)) {
                for s in sources {
                    let base = Path::new(s.trim_end_matches('/'))
                        .file_name()
                        .map(|b| b.to_string_lossy().into_owned())
                        .ok_or_else(|| Usage(format!("rcopy: remote path {s:?} names no file")))?;
                    // Like `clush --rcopy`: each host's (or sub-node's) copy gets its name appended.
                    let target = Path::new(dest).join(format!("{base}.{label}"));
                    let target = target.to_string_lossy().into_owned();
                    let action: Action = if c.rsync {
                        RsyncGet::new(s.clone(), target).recursive(c.recursive).into()
                    } else {
                        ScpGet::new(s.clone(), target)
                            .recursive(c.recursive)
                            .protocol(protocol(c))
                            .create_dirs(c.create_dirs)
                            .into()
                    };
                    out.push((label.clone(), action));
                }
            }
        }
        // Dispatched by `run` before anything is pushed.
        Some(Sub::Queue(_) | Sub::Broadcast(_)) => {}
    }
    Ok(out)
}

/// The labels of `t` and their sub-node numbers: itself, or `LABEL:0` ..
/// `LABEL:{n-1}` under `--slots n`.
fn labels(t: &hosts::Target, slots: Option<usize>) -> Vec<(String, Option<usize>)> {
    match slots {
        Some(n) => (0..n).map(|i| (format!("{}:{i}", t.label), Some(i))).collect(),
        None => vec![(t.label.clone(), None)],
    }
}

/// What `copy`/`rcopy` run over without `--rsync`.
fn protocol(c: &CopyArgs) -> TransferProtocol {
    if c.sftp {
        TransferProtocol::Sftp
    } else {
        TransferProtocol::Scp
    }
}

/// The sources and the destination (clap already asks for two paths).
fn split_paths(c: &CopyArgs) -> Result<(&[String], &String), Usage> {
    match c.paths.split_last() {
        Some((dest, sources)) if !sources.is_empty() => Ok((sources, dest)),
        _ => Err(Usage("give one source at least, then the destination".into())),
    }
}

/// Adds the output sinks and the timeout every action gets.
fn finish_action(action: Action, mode: Mode, timeout: Option<Duration>) -> Action {
    macro_rules! opts {
        ($a:expr) => {{
            let a = $a;
            match timeout {
                Some(d) => a.timeout(d),
                None => a,
            }
        }};
    }
    match action {
        Action::Command(c) => opts!(c.stdout(output::sink(mode)).stderr(output::sink(mode))).into(),
        Action::ScpPut(a) => opts!(a).into(),
        Action::ScpGet(a) => opts!(a).into(),
        Action::RsyncPut(a) => opts!(a).into(),
        Action::RsyncGet(a) => opts!(a).into(),
        other => other,
    }
}
