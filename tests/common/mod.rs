//! Helpers shared by the integration tests (each test crate uses a subset).
#![allow(dead_code)]

use std::path::Path;

use ssh_parallel::fault::{Fault, FaultLog};
use ssh_parallel::{ErrorKind, Host, Parallel, Report, TaskReport, TaskStatus};

pub fn host(log: &FaultLog) -> Host {
    Host::fault(Fault::new().log(log))
}

pub fn statuses(report: &Report, label: &str) -> Vec<TaskStatus> {
    report
        .label(label)
        .expect("label in report")
        .tasks()
        .iter()
        .map(|t| t.status())
        .collect()
}

pub fn kind(pssh: &Parallel, label: &str) -> Option<ErrorKind> {
    pssh.get_error(label).expect("known label").map(|e| e.kind())
}

pub fn local(labels: &[&str]) -> Parallel {
    let mut p = Parallel::new();
    for l in labels {
        p.add_host(*l, Host::local()).unwrap();
    }
    p
}

pub fn tasks<'r>(report: &'r Report, label: &str) -> &'r [TaskReport] {
    report.label(label).unwrap().tasks()
}

pub fn task<'r>(report: &'r Report, label: &str, i: usize) -> &'r TaskReport {
    &tasks(report, label)[i]
}

pub fn path_str(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}
