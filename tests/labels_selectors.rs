//! SEMANTICS sections 1 (labels and hosts) and 2 (selectors).

use ssh_parallel::{Command, ErrorKind, Host, Parallel, Selection, TaskStatus};

mod common;
use common::*;

fn names(sel: &Selection) -> Vec<&str> {
    sel.labels().collect()
}

fn stdout_of(report: &ssh_parallel::Report, label: &str) -> Vec<String> {
    report
        .label(label)
        .unwrap()
        .tasks()
        .iter()
        .map(|t| t.stdout_str())
        .collect()
}

// ---- 1. Labels and hosts ----------------------------------------------------

#[test]
fn label_with_reserved_character_is_rejected() {
    let mut p = Parallel::new();
    for c in [',', '*', '!', '(', ')', '<', '>', '/', '{', '}'] {
        for label in [format!("a{c}b"), format!("{c}"), format!("{c}x"), format!("x{c}")] {
            let e = p.add_host(label.as_str(), Host::local()).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidLabel, "{label:?}: {e}");
            assert!(
                e.to_string().contains(&label),
                "message must name the label {label:?}: {e}"
            );
        }
    }
    let e = p.add_host("", Host::local()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidLabel);
    assert!(e.to_string().contains("\"\""), "message must show the empty label: {e}");
    // Nothing was registered by the failed calls.
    assert_eq!(p.labels().count(), 0);
}

#[test]
fn label_may_contain_any_other_character() {
    let odd = [
        "a b",
        "x?y",
        "[q]",
        "ü-1",
        "a+b.c",
        "user@host:22",
        "p$1q",
        "50%",
        "a\\b",
        "t|u",
        "^v$",
    ];
    let mut p = local(&odd);
    assert_eq!(p.labels().collect::<Vec<_>>(), odd);
    for l in odd {
        let sel = p.push(l, Command::new("printf '%%s\\n' '%LABEL%'")).unwrap();
        assert_eq!(names(&sel), vec![l], "exact selector {l:?}");
    }
    // Regex-like characters are literal.
    assert!(p.select("x.y").unwrap().is_empty());
    assert!(p.select("a.b.c").unwrap().is_empty());
    let report = p.run();
    assert!(report.success(), "{report}");
    for l in odd {
        assert_eq!(stdout_of(&report, l), vec![format!("{l}\n")], "label {l:?}");
    }
}

#[test]
fn duplicate_label_is_an_error() {
    let mut p = Parallel::new();
    p.add_host("a", Host::local().var("WHO", "first")).unwrap();
    p.push("a", Command::new("echo %WHO%")).unwrap();
    let e = p.add_host("a", Host::local().var("WHO", "second")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DuplicateLabel);
    assert!(e.to_string().contains("\"a\""), "{e}");
    // The first registration and its queue are kept (Perl lost the queue).
    assert_eq!(p.labels().collect::<Vec<_>>(), vec!["a"]);
    assert_eq!(p.queued_tasks(), 1);
    let report = p.run();
    assert!(report.success(), "{report}");
    assert_eq!(stdout_of(&report, "a"), vec!["first\n"]);
}

#[test]
fn labels_are_case_sensitive() {
    let mut p = local(&["Web", "web", "WEB1"]);
    assert_eq!(p.select("web").unwrap(), vec!["web"]);
    assert_eq!(p.select("Web").unwrap(), vec!["Web"]);
    assert!(p.select("wEb").unwrap().is_empty());
    assert_eq!(p.select("W*").unwrap(), vec!["Web", "WEB1"]);
    assert_eq!(p.select("w*").unwrap(), vec!["web"]);
    assert_eq!(p.select("*eb").unwrap(), vec!["Web", "web"]);
    assert!(p.get_error("WEB").is_err(), "get_error is case-sensitive too");
    let sel = p.push("web", Command::new("echo %LABEL%")).unwrap();
    assert_eq!(names(&sel), vec!["web"]);
    let report = p.run();
    assert_eq!(stdout_of(&report, "web"), vec!["web\n"]);
    assert!(report.label("Web").unwrap().tasks().is_empty());
    assert!(report.label("WEB1").unwrap().tasks().is_empty());
}

#[test]
fn several_labels_may_share_an_endpoint() {
    let mut p = Parallel::new();
    let h = Host::parse("deploy@db.example.com:2222").unwrap();
    p.add_host("db-read", h.clone()).unwrap();
    p.add_host("db-write", h.clone()).unwrap();
    p.add_host("db-admin", Host::new("db.example.com").user("deploy").port(2222))
        .unwrap();
    for l in ["db-read", "db-write", "db-admin"] {
        let h = p.host(l).unwrap();
        assert_eq!(
            (h.hostname(), h.user_name(), h.port_number()),
            ("db.example.com", Some("deploy"), Some(2222))
        );
    }
    // And they really run independently on one machine.
    let mut p = Parallel::new();
    let h = Host::local();
    p.add_host("one", h.clone()).unwrap();
    p.add_host("two", h).unwrap();
    p.all(Command::new("echo %LABEL%")).unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
    assert_eq!(stdout_of(&report, "one"), vec!["one\n"]);
    assert_eq!(stdout_of(&report, "two"), vec!["two\n"]);
}

#[test]
fn add_host_accepts_host_builder_options() {
    use ssh_parallel::{HostKeyCheck, OnError};
    use std::time::Duration;
    let h = Host::new("h.example.com")
        .user("u")
        .port(2200)
        .password("pw")
        .key_file("/k1")
        .key_file("/k2")
        .passphrase("pp")
        .host_key_check(HostKeyCheck::AcceptNew)
        .connect_timeout(Duration::from_secs(3))
        .on_error(OnError::Ignore)
        .reconnections(2)
        .var("ROLE", "web")
        .expand_vars(true);
    let mut p = Parallel::new();
    p.add_host("h", h).unwrap();
    let h = p.host("h").unwrap();
    assert_eq!(
        (h.hostname(), h.user_name(), h.port_number()),
        ("h.example.com", Some("u"), Some(2200))
    );
    assert!(
        !format!("{h:?}").contains("\"pw\""),
        "Debug must not show the password: {h:?}"
    );
    assert!(p.host("nosuch").is_none());
}

// ---- 2. Selectors -------------------------------------------------------------

#[test]
fn selector_parts_trimmed_and_unioned_in_registration_order() {
    let mut p = local(&["x1", "b", "a1", "c", "a2", "zz"]);
    // Wildcard parts, exact parts, duplicates and whitespace.
    assert_eq!(p.select(" c , a* ,b,\tb ").unwrap(), vec!["b", "a1", "c", "a2"]);
    // Exact parts only: registration order, not the order written.
    assert_eq!(p.select("zz, c,b").unwrap(), vec!["b", "c", "zz"]);
    assert_eq!(p.select("zz,*").unwrap(), vec!["x1", "b", "a1", "c", "a2", "zz"]);
    let sel = p.push(" c , a* ,b, b ", Command::new("echo %LABEL%")).unwrap();
    assert_eq!(names(&sel), vec!["b", "a1", "c", "a2"]);
    assert_eq!(sel.len(), 4);
    assert!(sel.contains("a2") && !sel.contains("x1"));
    // Each selected label got the task once.
    assert_eq!(p.queued_tasks(), 4);
    let report = p.run();
    assert!(report.success(), "{report}");
    for l in ["b", "a1", "c", "a2"] {
        assert_eq!(stdout_of(&report, l), vec![format!("{l}\n")]);
    }
    assert!(report.label("x1").unwrap().tasks().is_empty());
    assert!(report.label("zz").unwrap().tasks().is_empty());
}

#[test]
fn selector_star_matches_any_run_on_whole_labels() {
    let p = local(&["web", "web1", "web12", "aweb", "w-e-b", "db1"]);
    assert_eq!(
        p.select("web*").unwrap(),
        vec!["web", "web1", "web12"],
        "* also matches nothing"
    );
    assert_eq!(p.select("web").unwrap(), vec!["web"], "whole labels only");
    assert!(p.select("eb1").unwrap().is_empty(), "no substring matches");
    assert_eq!(p.select("*web").unwrap(), vec!["web", "aweb"]);
    assert_eq!(p.select("*eb*").unwrap(), vec!["web", "web1", "web12", "aweb"]);
    assert_eq!(p.select("w*b").unwrap(), vec!["web", "w-e-b"]);
    assert_eq!(p.select("w**1*").unwrap(), vec!["web1", "web12"]);
    assert_eq!(p.select("*").unwrap().len(), 6);
    assert_eq!(p.select("**").unwrap().len(), 6);
}

#[test]
fn selector_resolved_at_push_time() {
    let mut p = local(&["a1"]);
    let sel = p.push("a*", Command::new("echo %LABEL%")).unwrap();
    assert_eq!(names(&sel), vec!["a1"]);
    p.add_host("a2", Host::local()).unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
    assert_eq!(stdout_of(&report, "a1"), vec!["a1\n"]);
    assert!(
        report.label("a2").unwrap().tasks().is_empty(),
        "a label added after the push gets nothing"
    );
}

#[test]
fn selector_matching_nothing_pushes_nothing() {
    let mut p = Parallel::new();
    let sel = p.push("*", Command::new("true")).unwrap();
    assert!(sel.is_empty());
    assert_eq!(sel.labels().count(), 0);
    let sel = p.all(Command::new("true")).unwrap();
    assert!(sel.is_empty());
    p.add_host("a", Host::local()).unwrap();
    for s in ["b", "b*", "A", "a1", "*x", "b, c*"] {
        let sel = p.push(s, Command::new("echo nope")).unwrap();
        assert!(sel.is_empty(), "{s:?}");
    }
    assert_eq!(p.queued_tasks(), 0);
    let report = p.run();
    assert!(report.success());
    assert!(report.label("a").unwrap().tasks().is_empty());
}

#[test]
fn empty_or_malformed_selector_is_error() {
    let mut p = local(&["a", "b"]);
    p.push("a", Command::new("true")).unwrap();
    let bad = [
        "", "  ", "\t", ",", "a,,b", "a,", ",a", "a, ,b", "!a", "a(b)", "(a", "a)", "<a", "a>", "a/b", "{a}", "a}",
    ];
    for s in bad {
        let e = p.push(s, Command::new("true")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidSelector, "{s:?}: {e}");
        assert!(
            e.to_string().contains(&format!("{s:?}")),
            "message must name the selector {s:?}: {e}"
        );
        assert_eq!(p.select(s).unwrap_err().kind(), ErrorKind::InvalidSelector, "{s:?}");
    }
    // Nothing was pushed by the failed calls.
    assert_eq!(p.queued_tasks(), 1);
    let report = p.run();
    assert_eq!(report.label("a").unwrap().tasks().len(), 1);
    assert_eq!(report.label("a").unwrap().tasks()[0].status(), TaskStatus::Succeeded);
    assert!(report.label("b").unwrap().tasks().is_empty());
}

#[test]
fn selector_type_parses_and_matches() {
    use ssh_parallel::Selector;
    let s = Selector::parse(" web* , db1 ").unwrap();
    assert_eq!(s.as_str(), " web* , db1 ");
    assert!(s.matches("web") && s.matches("web9") && s.matches("db1"));
    assert!(!s.matches("db") && !s.matches("Web1") && !s.matches(" web"));
    assert_eq!(Selector::parse("a,,b").unwrap_err().kind(), ErrorKind::InvalidSelector);
}
