//! Helpers of the jump-host and ProxyCommand tests: embedded targets, a
//! `Parallel` reading only a generated config under a temporary home, and
//! checks of a label's first task.
//!
//! Include with `#[path = "common/routes.rs"] mod routes;` (next to
//! `servers`).
#![allow(dead_code)]

use std::fs;
use std::path::Path;

use ssh_parallel::ssh_config::{ConfigFile, ResolveEnv};
use ssh_parallel::{Parallel, ParallelBuilder, Report, TaskReport, TaskStatus};
use tempfile::TempDir;
use testbed::EmbeddedServer;

use super::servers::{PASSWORD, USER};

/// An embedded server taking `USER`/`PASSWORD`.
pub fn embedded_target() -> EmbeddedServer {
    testbed::raise_fd_limit();
    EmbeddedServer::builder()
        .password(USER, PASSWORD)
        .start()
        .expect("start the embedded server")
}

/// A `Parallel` from `builder` reading only `config` (written under `home`;
/// an empty one reads nothing of the real `~/.ssh`), with `home` as `~`.
pub fn parallel(home: &Path, config: &str, builder: ParallelBuilder) -> Parallel {
    let file = home.join("config");
    fs::write(&file, config).unwrap();
    let mut env = ResolveEnv::from_system()
        .unwrap()
        .with_only_file(Some(ConfigFile::explicit(&file)));
    env.home = home.to_path_buf();
    builder.ssh_config_env(env).build().unwrap()
}

/// [`parallel`] under a fresh temporary home, returned with it (the home
/// must outlive the run: the configuration and known_hosts live there).
pub fn parallel_in_new_home(config: &str, builder: ParallelBuilder) -> (TempDir, Parallel) {
    let home = tempfile::tempdir().unwrap();
    let pssh = parallel(home.path(), config, builder);
    (home, pssh)
}

/// `label`'s first task, which must have succeeded printing `stdout`.
pub fn first_ok<'r>(report: &'r Report, label: &str, stdout: &str) -> &'r TaskReport {
    let t = &report.label(label).unwrap().tasks()[0];
    assert_eq!(
        t.status(),
        TaskStatus::Succeeded,
        "{label}: {:?}",
        t.error().map(|e| e.to_string())
    );
    assert_eq!(t.stdout_str().trim(), stdout, "{label}");
    t
}

/// `label`'s tasks, which must all have succeeded.
pub fn all_ok<'r>(report: &'r Report, label: &str) -> &'r [TaskReport] {
    let tasks = report.label(label).unwrap().tasks();
    assert!(
        tasks.iter().all(|t| t.status() == TaskStatus::Succeeded),
        "{label}: {:?}",
        tasks
            .iter()
            .map(|t| (t.status(), t.error().map(|e| e.to_string())))
            .collect::<Vec<_>>()
    );
    tasks
}

/// The error of `label`'s first task, which must have failed.
pub fn first_error(report: &Report, label: &str) -> String {
    let t = &report.label(label).unwrap().tasks()[0];
    assert_ne!(t.status(), TaskStatus::Succeeded, "{label}");
    t.error().map(|e| e.to_string()).unwrap_or_default()
}
