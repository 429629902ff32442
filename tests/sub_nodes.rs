//! Sub-nodes (`Parallel::add_slots`): several labels on one host, each with
//! its own SSH connection and its `%SLOT%`; the parent name as a selector.

use std::time::Duration;

use ssh_parallel::{Command, ErrorKind, Host, Join, Parallel};

mod common;
use common::*;
#[path = "common/servers.rs"]
mod servers;
use servers::Server;

#[test]
fn four_slots_on_one_host_are_four_connections_running_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let marks = path_str(&dir.path().join("mark"));
    let server = Server::embedded();
    let mut pssh = Parallel::builder().no_ssh_config().build().unwrap();
    let added = pssh.add_slots("gpu1", server.host(), 4).unwrap();
    assert_eq!(added, vec!["gpu1:0", "gpu1:1", "gpu1:2", "gpu1:3"]);
    pssh.push("gpu1:*", Command::new("echo %SLOT% %PARENT% %LABEL% %HOST%"))
        .unwrap();
    // A barrier: each slot marks itself, then waits for all four marks, so
    // the run only succeeds if the four commands run at the same time.
    pssh.push(
        "gpu1",
        Command::new(format!(
            "touch {marks}.%SLOT%; while [ $(ls {marks}.* | wc -l) -lt 4 ]; do sleep 0.05; done"
        ))
        .timeout(Duration::from_secs(20)),
    )
    .unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    for i in 0..4 {
        let label = format!("gpu1:{i}");
        assert_eq!(
            task(&report, &label, 0).stdout_str(),
            format!("{i} gpu1 {label} 127.0.0.1\n")
        );
    }
    assert_eq!(server.logins(), 4);
}

#[test]
fn per_slot_variables_and_selectors() {
    let mut pssh = Parallel::new();
    pssh.add_host("cpu", Host::local()).unwrap();
    let added = pssh
        .add_slots_with(
            "gpu1",
            Host::local().var("CARD", "none"),
            [vec![("CARD", "a100")], vec![], vec![("CARD", "h100"), ("MEM", "80")]],
        )
        .unwrap();
    assert_eq!(added.len(), 3);
    assert_eq!(pssh.select("gpu1").unwrap(), vec!["gpu1:0", "gpu1:1", "gpu1:2"]);
    assert_eq!(pssh.select("gpu1:*").unwrap(), pssh.select("gpu1").unwrap());
    assert_eq!(pssh.select("gpu1:1, cpu").unwrap(), vec!["cpu", "gpu1:1"]);
    assert_eq!(pssh.select("gpu1, gpu1:2").unwrap(), vec!["gpu1:0", "gpu1:1", "gpu1:2"]);
    pssh.push("gpu1", Command::new("echo %SLOT%-%CARD%")).unwrap();
    // `%MEM%` exists on slot 2 only: a push to every slot is refused whole.
    let e = pssh.push("gpu1", Command::new("echo %MEM%")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnknownVariable);
    pssh.push("gpu1:2", Command::new("echo %MEM%")).unwrap();
    pssh.push("cpu", Join::new("gpu1")).unwrap();
    pssh.push("cpu", Command::new("echo after")).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    let out: Vec<String> = (0..3)
        .map(|i| task(&report, &format!("gpu1:{i}"), 0).stdout_str())
        .collect();
    assert_eq!(out, ["0-a100\n", "1-none\n", "2-h100\n"]);
    assert_eq!(task(&report, "gpu1:2", 1).stdout_str(), "80\n");
    assert_eq!(task(&report, "cpu", 1).stdout_str(), "after\n");
}

#[test]
fn names_already_taken_are_refused_and_nothing_is_added() {
    let mut pssh = Parallel::new();
    pssh.add_host("web", Host::local()).unwrap();
    pssh.add_host("gpu2:1", Host::local()).unwrap();
    let e = pssh.add_slots("web", Host::local(), 2).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DuplicateLabel);
    assert!(e.to_string().contains("\"web\""), "{e}");
    let e = pssh.add_slots("gpu2", Host::local(), 3).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DuplicateLabel);
    assert!(e.to_string().contains("gpu2:1"), "{e}");
    assert_eq!(pssh.labels().collect::<Vec<_>>(), ["web", "gpu2:1"]);

    pssh.add_slots("gpu1", Host::local(), 2).unwrap();
    let e = pssh.add_host("gpu1", Host::local()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DuplicateLabel);
    let e = pssh.add_slots("gpu1", Host::local(), 2).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DuplicateLabel);
    let e = pssh.add_slots("gpu3", Host::local(), 0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig);
    let e = pssh.add_slots("bad*", Host::local(), 2).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidLabel);
    assert_eq!(pssh.labels().count(), 4);
}
