//! `ssh-parallel plan FILE [--check] [--dot] [-b|-L|--json|-N]`: runs a plan
//! file (the library's `PlanFile`) with the command line's live output,
//! JSON records and exit statuses; `--check` only validates it, `--dot`
//! prints its graph for Graphviz.
//!
//! Invariant: hosts, logins and limits come from the plan file alone: the
//! options that choose hosts or logins on the command line (`-w -x -l -i -o
//! -t -u`) are refused rather than half-applied. A plan with problems
//! prints each on stderr as `FILE:LINE:COLUMN: message` and exits 2, with
//! nothing connected.
//!
//! May use: `args`, `output`, `track`, `exit`, and `watch`, `finish_action`
//! and `Usage` of `main`.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use ssh_parallel::{PlanFile, PlanFileError};

use crate::args::{Common, OutputArgs};
use crate::output::{Colours, Mode};
use crate::track::Tracker;
use crate::{exit, finish_action, watch, Usage};

/// Arguments of `plan`.
#[derive(Args, Debug)]
pub struct PlanArgs {
    /// The plan file (TOML; see examples/plans/ and the README's "Plan files").
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Check the plan and exit, connecting nowhere: 0 when it is sound, 2
    /// with every problem on stderr as FILE:LINE:COLUMN: message.
    #[arg(long = "check")]
    pub check: bool,

    /// Print the plan graph in Graphviz's DOT language and exit (the plan is
    /// checked first): `ssh-parallel plan FILE --dot | dot -Tsvg > plan.svg`.
    #[arg(long = "dot")]
    pub dot: bool,

    /// How the output is shown.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Runs `plan`; returns the exit status.
pub fn run(args: &PlanArgs, common: &Common) -> Result<i32, Usage> {
    refuse_host_options(common)?;
    let mode = Mode::from_args(&args.output);
    let built = PlanFile::load(&args.file).and_then(|p| p.build_with(|a| finish_action(a, mode, None)));
    let mut pssh = match built {
        Ok(p) => p,
        Err(PlanFileError::Invalid { problems }) => {
            let mut text = String::new();
            for p in &problems {
                text.push_str(&format!("{p}\n"));
            }
            let _ = std::io::stderr().lock().write_all(text.as_bytes());
            return Ok(exit::USAGE);
        }
        Err(e) => return Err(Usage(e.to_string())),
    };
    if args.dot {
        let _ = std::io::stdout().lock().write_all(pssh.to_dot().as_bytes());
        return Ok(exit::SUCCESS);
    }
    if args.check {
        eprintln!(
            "{}: ok: {} labels, {} tasks",
            args.file.display(),
            pssh.labels().count(),
            pssh.queued_tasks()
        );
        return Ok(exit::SUCCESS);
    }
    let order: Vec<String> = pssh.labels().map(str::to_owned).collect();
    let mut tracker = Tracker::new(mode, Colours::detect(), order, common.max_status);
    let (report, interrupted) = watch(&mut pssh, &mut tracker);
    Ok(tracker.finish(&report, interrupted))
}

/// The options that pick hosts or logins belong to the plan file in `plan`.
fn refuse_host_options(c: &Common) -> Result<(), Usage> {
    let given: Vec<&str> = [
        ("-w", !c.hosts.is_empty()),
        ("-x", !c.exclude.is_empty()),
        ("-l", c.user.is_some()),
        ("-i", !c.identity.is_empty()),
        ("-o", !c.options.is_empty()),
        ("-t", c.connect_timeout.is_some()),
        ("-u", c.command_timeout.is_some()),
    ]
    .into_iter()
    .filter_map(|(flag, on)| on.then_some(flag))
    .collect();
    if given.is_empty() {
        return Ok(());
    }
    let verb = if given.len() == 1 { "does" } else { "do" };
    Err(Usage(format!(
        "plan: {} {verb} not apply: hosts, logins and timeouts come from the plan file",
        given.join(" ")
    )))
}
