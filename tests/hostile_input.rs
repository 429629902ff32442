//! Hostile input never panics: labels, selectors, `%VAR%` templates and host
//! specifications from property tests and from a fixed corpus of nasty
//! inputs (NUL bytes, control characters, 1 MB lines, non-UTF-8 output). Each
//! bad input gives a typed error naming the culprit.

use proptest::prelude::*;
use ssh_parallel::{Command, ErrorKind, Host, Output, Parallel};

/// Any text, weighted towards the characters our grammars care about.
fn nasty() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z0-9%*,!@:\\[\\]()<>/{} \t\n\u{0}.-]{0,40}",
        "(%[A-Z_]{0,6}%?){0,5}",
    ]
}

fn local_plan(labels: &[&str]) -> Parallel {
    let mut p = Parallel::new();
    for l in labels {
        p.add_host(*l, Host::local().var("X", "x-value")).unwrap();
    }
    p
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// A label is accepted, and then selectable by its own name, or refused
    /// with `InvalidLabel` naming it.
    #[test]
    fn labels_are_accepted_and_selectable_or_refused_by_name(label in nasty()) {
        let mut p = Parallel::new();
        match p.add_host(label.clone(), Host::local()) {
            Ok(()) => {
                let selected = p.select(&label);
                prop_assert!(selected.is_ok(), "accepted label {label:?} is not a valid selector: {selected:?}");
                let selected: Vec<String> = selected.unwrap().labels().map(|s| s.to_string()).collect();
                prop_assert_eq!(selected, vec![label.clone()]);
            }
            Err(e) => {
                prop_assert_eq!(e.kind(), ErrorKind::InvalidLabel);
                prop_assert!(e.to_string().contains(&format!("{label:?}")), "{e} does not name {label:?}");
            }
        }
    }

    /// A selector selects or is refused with a selector or label error naming it.
    #[test]
    fn selectors_select_or_are_refused_by_name(selector in nasty()) {
        let p = local_plan(&["web1", "web2", "db1"]);
        match p.select(&selector) {
            Ok(_) => {}
            Err(e) => {
                prop_assert!(
                    matches!(e.kind(), ErrorKind::InvalidSelector | ErrorKind::UnknownLabel),
                    "{selector:?}: unexpected kind {:?}: {e}", e.kind()
                );
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }

    /// A template expands or is refused with `UnknownVariable` naming the
    /// variable; the plan is untouched by a refused push.
    #[test]
    fn templates_expand_or_name_the_unknown_variable(template in nasty()) {
        let mut p = local_plan(&["a", "b"]);
        match p.push("*", Command::new(template.clone())) {
            Ok(_) => prop_assert_eq!(p.queued_tasks(), 2),
            Err(e) => {
                prop_assert_eq!(e.kind(), ErrorKind::UnknownVariable, "{}", e);
                prop_assert_eq!(p.queued_tasks(), 0);
            }
        }
    }

    /// `Host::parse` gives back what it was built from, or refuses with
    /// `InvalidHost` naming the whole specification.
    #[test]
    fn host_specs_round_trip_or_are_refused_by_name(spec in nasty()) {
        match Host::parse(&spec) {
            Ok(h) => {
                prop_assert!(!h.hostname().is_empty());
                prop_assert!(!h.hostname().chars().any(|c| c.is_whitespace() || c.is_control()),
                    "{spec:?} gave the host name {:?}", h.hostname());
            }
            Err(e) => {
                prop_assert_eq!(e.kind(), ErrorKind::InvalidHost);
                prop_assert!(e.to_string().contains(&format!("{spec:?}")), "{e} does not name {spec:?}");
            }
        }
    }

    #[test]
    fn well_formed_host_specs_round_trip(
        user in proptest::option::of("[a-z_][a-z0-9_.-]{0,12}"),
        host in "[a-z0-9][a-z0-9.-]{0,30}",
        port in proptest::option::of(1u16..),
    ) {
        let mut spec = String::new();
        if let Some(u) = &user { spec.push_str(u); spec.push('@'); }
        spec.push_str(&host);
        if let Some(p) = port { spec.push_str(&format!(":{p}")); }
        let h = Host::parse(&spec).unwrap();
        prop_assert_eq!(h.hostname(), host.as_str());
        prop_assert_eq!(h.user_name(), user.as_deref());
        prop_assert_eq!(h.port_number(), port);
    }
}

#[test]
fn control_characters_and_nul_bytes_are_refused_in_labels_and_host_names() {
    for label in ["a\0b", "tab\there", "new\nline", "bell\u{7}"] {
        let e = Parallel::new().add_host(label, Host::local()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidLabel, "{label:?}: {e}");
        assert!(e.to_string().contains(&format!("{label:?}")), "{e}");
    }
    for spec in ["web\0.example.com", "user@ho\nst", "host\u{1b}[31m:22"] {
        let e = Host::parse(spec).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidHost, "{spec:?}: {e}");
        assert!(e.to_string().contains(&format!("{spec:?}")), "{e}");
    }
}

#[test]
fn megabyte_inputs_are_handled_quickly_and_without_panic() {
    let big = "a".repeat(1 << 20);
    let mut p = Parallel::new();
    p.add_host(big.clone(), Host::local()).unwrap();
    assert_eq!(p.select(&big).unwrap().len(), 1);
    let star = format!("{}*", "a".repeat(1 << 20));
    // Either it selects, or the regex engine's size limit refuses it by name.
    match p.select(&star) {
        Ok(v) => assert_eq!(v.len(), 1),
        Err(e) => assert_eq!(e.kind(), ErrorKind::InvalidSelector, "{}", &e.to_string()[..200]),
    }
    let template = "%X%".repeat(100_000);
    let mut p = local_plan(&["a"]);
    p.push("a", Command::new(template)).unwrap();
    let e = p
        .push("a", Command::new(format!("{}%NOPE%", "x".repeat(1 << 20))))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnknownVariable);
    assert!(e.to_string().contains("NOPE"), "names the variable");
    assert!(Host::parse(&format!("u@{}:22", "h".repeat(1 << 20))).is_ok());
    assert_eq!(
        Host::parse(&format!("u@{}:99999", "h".repeat(1 << 20)))
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidHost
    );
}

#[test]
fn non_utf8_output_and_megabyte_lines_are_kept_byte_exact() {
    let mut p = local_plan(&["a"]);
    // 1 MiB without a newline, then invalid UTF-8, then a NUL byte.
    p.push(
        "a",
        Command::new("head -c 1048576 /dev/zero | tr '\\0' 'z'; printf '\\377\\376\\000end'")
            .stdout(Output::capture_limit(4 << 20)),
    )
    .unwrap();
    let report = p.run();
    assert!(report.success(), "{report}");
    let out = report.label("a").unwrap().tasks()[0].stdout().unwrap().to_vec();
    assert_eq!(out.len(), (1 << 20) + 6);
    assert!(out[..1 << 20].iter().all(|&b| b == b'z'));
    assert_eq!(&out[1 << 20..], b"\xff\xfe\0end");
    // The lossy text view never panics on it.
    assert!(report.label("a").unwrap().tasks()[0].stdout_str().ends_with("\0end"));
}

/// A resolver environment reading only `file`, with `home` as `~` and no
/// process-wide state (no real home, user or variables).
fn config_env(home: &std::path::Path, file: &std::path::Path) -> ssh_parallel::ResolveEnv {
    ssh_parallel::ResolveEnv {
        home: home.to_path_buf(),
        local_user: "me".into(),
        uid: 1000,
        local_host: "here.example".into(),
        files: vec![ssh_parallel::ssh_config::ConfigFile::explicit(file)],
        shell: "/bin/sh".into(),
        vars: Default::default(),
        system_dir: home.to_path_buf(),
    }
}

/// One line of an ssh_config: known keywords with odd values, `Host` and
/// `Match` headers, and junk. Never `Match exec` (it would run the text) nor
/// an `Include` of anything but a missing relative file.
fn ssh_config_line() -> impl Strategy<Value = String> {
    let keyword = prop::sample::select(vec![
        "HostName",
        "User",
        "Port",
        "IdentityFile",
        "ProxyJump",
        "ProxyCommand",
        "ConnectTimeout",
        "StrictHostKeyChecking",
        "UserKnownHostsFile",
        "SetEnv",
        "Ciphers",
        "ForwardAgent",
        "IdentityAgent",
        "ServerAliveInterval",
        "RequestTTY",
        "AddressFamily",
        "Compression",
        "host",
        "Match",
        "IgnoreUnknown",
        "NoSuchKeyword",
    ]);
    let value = prop_oneof![
        "[a-z0-9%~=\"'@:,.!*?{}$ /\\[\\]-]{0,30}",
        any::<String>().prop_map(|s| s.replace(['\n', '\r'], " ")),
        Just("none".to_owned()),
        Just("%h:%p %r %%".to_owned()),
        Just("all".to_owned()),
        Just("host !a*,b? user x".to_owned()),
        Just("\"unterminated".to_owned()),
    ];
    prop_oneof![
        (keyword, value.clone(), prop::bool::ANY).prop_map(|(k, v, eq)| if eq {
            format!("{k}={v}")
        } else {
            format!("  {k} {v}")
        }),
        value.prop_map(|v| format!("# {v}")),
        Just("Include missing-fragment-*.conf".to_owned()),
        "[\\x00-\\x7f]{0,20}",
    ]
    .prop_filter("no Match exec", |l| !l.to_ascii_lowercase().contains("exec"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any configuration resolves, or is refused with an error naming the
    /// file and a line that exists; never a panic.
    #[test]
    fn ssh_configs_resolve_or_name_file_and_line(
        lines in prop::collection::vec(ssh_config_line(), 0..12),
        alias in "[a-z][a-z0-9.-]{0,12}",
    ) {
        use ssh_parallel::ssh_config::{resolve, Query};
        use ssh_parallel::ConfigError;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config");
        let text = lines.join("\n");
        // A generated "line" may hold newlines of its own: count what the
        // file holds.
        let line_count = text.split('\n').count();
        std::fs::write(&file, &text).unwrap();
        match resolve(&config_env(dir.path(), &file), &Query::new(alias)) {
            Ok(_) => {}
            Err(ConfigError::Invalid { file: f, line, message }) => {
                prop_assert_eq!(&f, &file);
                prop_assert!(line >= 1 && line <= line_count, "line {line} of {line_count}: {message}");
            }
            Err(ConfigError::IncludeDepth { file: f, .. }) => prop_assert_eq!(&f, &file),
            Err(e) => prop_assert!(false, "unexpected error kind: {e}"),
        }
    }
}

#[test]
fn cyclic_and_deep_includes_and_nul_bytes_in_ssh_config_name_file_and_line() {
    use ssh_parallel::ssh_config::{resolve, Query};
    use ssh_parallel::ConfigError;
    let dir = tempfile::tempdir().unwrap();
    let env = |file: &std::path::Path| config_env(dir.path(), file);
    // A file that includes itself.
    let cyclic = dir.path().join("cyclic");
    std::fs::write(&cyclic, format!("Port 2222\nInclude {}\n", cyclic.display())).unwrap();
    match resolve(&env(&cyclic), &Query::new("h")) {
        Err(ConfigError::IncludeDepth { file, line }) => assert_eq!((file.as_path(), line), (cyclic.as_path(), 2)),
        other => panic!("a cyclic include: {other:?}"),
    }
    // A chain 40 deep.
    for i in 0..40 {
        let next = dir.path().join(format!("deep{}", i + 1));
        std::fs::write(
            dir.path().join(format!("deep{i}")),
            format!("Include {}\n", next.display()),
        )
        .unwrap();
    }
    std::fs::write(dir.path().join("deep40"), "Port 1\n").unwrap();
    let e = resolve(&env(&dir.path().join("deep0")), &Query::new("h")).unwrap_err();
    assert!(matches!(e, ConfigError::IncludeDepth { .. }), "{e}");
    assert!(e.to_string().contains(":1: too many nested includes"), "{e}");
    // NUL bytes and a 1 MB line.
    let nul = dir.path().join("nul");
    std::fs::write(&nul, b"Port 22\nUser a\0b\n").unwrap();
    let e = resolve(&env(&nul), &Query::new("h")).unwrap_err();
    assert!(e.to_string().starts_with(&format!("{}:2:", nul.display())), "{e}");
    let long = dir.path().join("long");
    std::fs::write(&long, format!("User {}\n", "u".repeat(1 << 20))).unwrap();
    match resolve(&env(&long), &Query::new("h")) {
        Ok(c) => assert_eq!(c.user.as_deref().map(str::len), Some(1 << 20)),
        Err(e) => assert!(e.to_string().starts_with(&format!("{}:1:", long.display())), "{e}"),
    }
}
