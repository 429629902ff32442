//! # ssh-parallel
//!
//! Run work on many machines over SSH as a dependency graph: a Rust port of
//! Perl's `Net::OpenSSH::Parallel`, with its bugs fixed.
//!
//! Register hosts under **labels**, push **actions** onto the labels' queues
//! with **selectors**, and [`Parallel::run`] executes every queue in parallel,
//! honouring joins, gotos, error policies, reconnections and the `workers` and
//! `connections` limits. The behaviour contract is spelled out in the
//! README and ARCHITECTURE.md.
//!
//! ```
//! use ssh_parallel::{Command, Host, Join, OnError, Parallel};
//!
//! let mut pssh = Parallel::builder().workers(4).build()?;
//! for label in ["web1", "web2", "db1"] {
//!     pssh.add_host(label, Host::local())?;
//! }
//! pssh.push("web*", Command::new("echo hello from %LABEL%"))?;
//! pssh.push("db*", Join::new("web*"))?;
//! pssh.push("db1", Command::new("exit 3").on_error(OnError::Ignore))?;
//! let report = pssh.run();
//! assert!(report.success());
//! assert_eq!(report.label("web2").unwrap().tasks()[0].stdout_str(), "hello from web2\n");
//! # Ok::<(), ssh_parallel::Error>(())
//! ```
//!
//! The data flow, module by module: `Parallel::push` (module `parallel`)
//! adds tasks (`task`) to the `plan`; `Parallel::run` lends the plan to the
//! `scheduler`, which sends remote work to a `transport` and turns every
//! outcome into the `report`. `policy` decides what a failure does; `host`
//! says where a label runs; `fault` scripts the fault-injection transport;
//! `plan_file` reads a whole plan from a TOML file ([`PlanFile`]).
#![deny(missing_docs)]

mod amount;
mod error;
#[cfg(feature = "fault-injection")]
pub mod fault;
mod file_stamp;
mod host;
mod panic;
mod parallel;
mod plan;
mod plan_file;
mod policy;
mod process;
mod report;
mod run;
mod scheduler;
mod session;
pub mod ssh_config;
mod task;
mod transport;

/// The README's examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use amount::Amount;
pub use error::{BoxError, Error, ErrorKind, Result};
pub use host::{Host, HostKeyCheck};
pub use parallel::{Parallel, ParallelBuilder, RunHandle};
pub use plan::{IntoSelector, Selection, Selector};
pub use plan_file::{PlanFile, PlanFileError, Problem, ProblemKind};
pub use policy::{ErrorContext, OnError, PolicyFn, RetryPolicy};
pub use report::{fold_labels, JobEntry, JobId, LabelReport, OutputGroup, Report, TaskReport, TaskStatus};
pub use run::{Canceller, OutputStream, RunEvent};
pub use session::{ExecOutput, Session};
pub use ssh_config::{ConfigError, ResolveEnv, SshConfig};
pub use task::output::{Output, Stdin, DEFAULT_CAPTURE_LIMIT};
pub use task::{
    Action, Command, Connect, DoneFn, Drain, Goto, Here, JobQueue, Join, Parsub, RsyncGet, RsyncPut, ScpGet, ScpPut,
    Stop, Sub, SubContext, TransferProtocol,
};
