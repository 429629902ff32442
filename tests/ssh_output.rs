//! Where a remote command's output goes, over real SSH on both servers: line
//! callbacks (whole lines whatever the packet boundaries, the last partial
//! line included), files named with `%LABEL%`, and capture caps.

use std::sync::{Arc, Mutex};

use ssh_parallel::{Command, Output, Parallel};

#[path = "common/servers.rs"]
mod servers;
use servers::Server;

on_both!(
    line_callbacks_get_whole_lines_with_their_label,
    files_named_by_label_and_capped_capture,
);

fn line_callbacks_get_whole_lines_with_their_label(server: &Server) {
    let lines: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let errs: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let (l, e) = (lines.clone(), errs.clone());
    let mut pssh = Parallel::new();
    for label in ["p", "q"] {
        pssh.add_host(label, server.host()).unwrap();
    }
    // 20,000 lines arrive in many packets; the last one has no newline.
    pssh.all(
        Command::new("seq 1 20000; printf tail; echo E1 >&2; printf E2 >&2")
            .stdout(Output::lines(move |label, line| {
                l.lock().unwrap().push((label.to_owned(), line.to_owned()))
            }))
            .stderr(Output::lines(move |label, line| {
                e.lock().unwrap().push((label.to_owned(), line.to_owned()))
            })),
    )
    .unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    for label in ["p", "q"] {
        let got: Vec<String> = lines
            .lock()
            .unwrap()
            .iter()
            .filter(|(l, _)| l == label)
            .map(|(_, s)| s.clone())
            .collect();
        let mut want: Vec<String> = (1..=20000).map(|i| i.to_string()).collect();
        want.push("tail".into());
        assert_eq!(got, want, "{}: label {label}", server.name());
        let got: Vec<String> = errs
            .lock()
            .unwrap()
            .iter()
            .filter(|(l, _)| l == label)
            .map(|(_, s)| s.clone())
            .collect();
        assert_eq!(got, ["E1", "E2"], "{}", server.name());
    }
}

fn files_named_by_label_and_capped_capture(server: &Server) {
    let dir = tempfile::tempdir().unwrap();
    let out = format!("{}/%LABEL%.out", dir.path().display());
    let mut pssh = Parallel::new();
    for label in ["f1", "f2"] {
        pssh.add_host(label, server.host()).unwrap();
    }
    pssh.all(
        Command::new("echo to %LABEL%; head -c 300000 /dev/zero >&2")
            .stdout(Output::file(out))
            .stderr(Output::capture_limit(1000)),
    )
    .unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    for label in ["f1", "f2"] {
        let text = std::fs::read_to_string(dir.path().join(format!("{label}.out"))).unwrap();
        assert_eq!(text, format!("to {label}\n"));
        let t = &report.label(label).unwrap().tasks()[0];
        assert_eq!(t.stderr().map(<[u8]>::len), Some(1000), "capped at the limit");
        assert!(t.stderr_truncated(), "truncation is flagged, never silent");
        assert!(!t.stdout_truncated());
    }
}
