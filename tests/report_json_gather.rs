//! The report as JSON (serde), `Report::gather` and `fold_labels`.

use serde_json::{json, Value};
use ssh_parallel::{fold_labels, Command, Host, OnError, Output, Parallel, TaskStatus};

#[test]
fn report_serializes_to_the_documented_json_shape() {
    let mut p = Parallel::new();
    for l in ["ok", "bad"] {
        p.add_host(l, Host::local()).unwrap();
    }
    p.push("ok", Command::new("printf 'h\\377i'; echo e >&2")).unwrap();
    p.push("ok", Command::new("echo 12345678").stdout(Output::capture_limit(4)))
        .unwrap();
    p.push("bad", Command::new("exit 7")).unwrap();
    p.push("bad", Command::new("echo never")).unwrap();
    let report = p.run();
    let text = serde_json::to_string(&report).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["success"], json!(false));
    assert!(v["duration"].as_f64().unwrap() > 0.0);
    let labels = v["labels"].as_array().unwrap();
    assert_eq!(labels.len(), 2);
    let ok = &labels[0];
    assert_eq!(
        (&ok["label"], &ok["success"], &ok["error"]),
        (&json!("ok"), &json!(true), &Value::Null)
    );
    let t0 = &ok["tasks"][0];
    let keys: Vec<&str> = t0.as_object().unwrap().keys().map(String::as_str).collect();
    let mut want = vec![
        "seq",
        "task",
        "status",
        "attempts",
        "reruns",
        "exit_code",
        "signal",
        "started",
        "duration",
        "stdout",
        "stdout_truncated",
        "stderr",
        "stderr_truncated",
        "error",
    ];
    want.sort_unstable();
    let mut keys_sorted = keys.clone();
    keys_sorted.sort_unstable();
    assert_eq!(keys_sorted, want);
    assert_eq!(t0["status"], json!("succeeded"));
    assert_eq!(t0["exit_code"], json!(0));
    assert_eq!(t0["stdout"], json!("h\u{fffd}i"), "lossy text");
    assert_eq!(t0["stderr"], json!("e\n"));
    assert_eq!(t0["stdout_truncated"], json!(false));
    assert!(t0["started"].as_f64().unwrap() > 1.6e9, "seconds since the epoch");
    assert!(t0["duration"].is_f64());
    let t1 = &ok["tasks"][1];
    assert_eq!((&t1["stdout"], &t1["stdout_truncated"]), (&json!("1234"), &json!(true)));
    let bad = &labels[1];
    assert_eq!(bad["success"], json!(false));
    assert_eq!(bad["error"]["kind"], json!("Command"));
    assert_eq!(bad["error"]["exit_code"], json!(7));
    assert_eq!(bad["error"]["label"], json!("bad"));
    let msg = bad["error"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("bad: task #0") && msg.ends_with("exited with status 7"),
        "{msg}"
    );
    assert_eq!(bad["tasks"][0]["status"], json!("failed"));
    assert_eq!(bad["tasks"][1]["status"], json!("cancelled"));
    assert_eq!(bad["tasks"][1]["started"], Value::Null);
    assert_eq!(bad["tasks"][1]["stdout"], Value::Null, "never ran: nothing captured");
}

#[test]
fn gather_groups_labels_with_identical_results_in_label_order() {
    let mut p = Parallel::builder().on_error(OnError::Ignore).build().unwrap();
    let labels = ["n01", "n02", "x", "n03", "n04", "n05"];
    for l in labels {
        p.add_host(l, Host::local()).unwrap();
    }
    // n01, n02, n04: "a"; x: "b"; n03: "a" but exit 1; n05: "a" but stderr.
    p.push("n01,n02,n04,n03,n05", Command::new("echo a")).unwrap();
    p.push("x", Command::new("echo b")).unwrap();
    p.push("n03", Command::new("exit 1")).unwrap();
    p.push("n05", Command::new("echo oops >&2")).unwrap();
    p.push("n01,n02,n04,x", Command::new("true")).unwrap();
    let report = p.run();
    let groups = report.gather();
    let got: Vec<Vec<&str>> = groups
        .iter()
        .map(|g| g.labels().iter().map(String::as_str).collect())
        .collect();
    assert_eq!(got, [vec!["n01", "n02", "n04"], vec!["x"], vec!["n03"], vec!["n05"]]);
    assert_eq!(groups[0].folded_labels(), "n[01-02,04]");
    assert_eq!(groups[0].stdout(), b"a\n");
    assert_eq!(
        groups[0].outcomes(),
        [(TaskStatus::Succeeded, Some(0)), (TaskStatus::Succeeded, Some(0))]
    );
    assert_eq!(groups[2].outcomes()[1], (TaskStatus::Ignored, Some(1)));
    assert_eq!(groups[3].stderr(), b"oops\n");
    assert!(groups.iter().all(|g| g.success()));
    let v = serde_json::to_value(&groups).unwrap();
    assert_eq!(v[0]["nodeset"], json!("n[01-02,04]"));
    assert_eq!(v[0]["labels"], json!(["n01", "n02", "n04"]));
    assert_eq!(v[2]["outcomes"][1], json!({"status": "ignored", "exit_code": 1}));
}

#[test]
fn fold_labels_writes_clustershell_node_sets() {
    assert_eq!(fold_labels(["web01", "web02", "web03"]), "web[01-03]");
    assert_eq!(fold_labels(["web3", "web1", "web2", "web2"]), "web[1-3]");
    assert_eq!(fold_labels(["a1", "b", "a3", "a01", "db"]), "a[1,3],b,a01,db");
    assert_eq!(fold_labels(["n9", "n10", "n11"]), "n9,n[10-11]");
    assert_eq!(fold_labels(["rack1-n1", "rack1-n2"]), "rack1-n[1-2]");
    assert_eq!(fold_labels(Vec::<String>::new()), "");
}
