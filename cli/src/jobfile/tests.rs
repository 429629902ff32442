use proptest::prelude::*;

use super::*;

/// Whether the entry is written as it runs: no parameters.
fn single(e: &Entry) -> bool {
    e.params.is_empty()
}

fn jobs(text: &str) -> Vec<String> {
    parse("q.txt", text).unwrap().iter().flat_map(Entry::jobs).collect()
}

fn problem(text: &str) -> (usize, Problem) {
    let e = parse("q.txt", text).unwrap_err();
    assert_eq!(e.file, "q.txt");
    (e.line, e.problem)
}

#[test]
fn plain_lines_comments_and_blanks() {
    let text = "# setup\n\n  echo one  \r\n\t# indented comment\nsleep 1; echo 'two # not a comment'\n";
    let entries = parse("q.txt", text).unwrap();
    assert_eq!(entries.iter().map(|e| e.index).collect::<Vec<_>>(), [2, 4]);
    assert!(entries.iter().all(single));
    assert_eq!(jobs(text), ["echo one", "sleep 1; echo 'two # not a comment'"]);
}

#[test]
fn a_parametrised_job_is_the_cartesian_product_first_parameter_slowest() {
    let text = r#"{ command = "train --lr %LR% --seed %SEED% on %HOST%", LR = ["1e-3", 0.5], SEED = [1, 2, 3] }"#;
    let entries = parse("q.txt", text).unwrap();
    assert_eq!(entries[0].count(), 6);
    assert!(!single(&entries[0]));
    assert_eq!(
        jobs(text),
        [
            "train --lr 1e-3 --seed 1 on %HOST%",
            "train --lr 1e-3 --seed 2 on %HOST%",
            "train --lr 1e-3 --seed 3 on %HOST%",
            "train --lr 0.5 --seed 1 on %HOST%",
            "train --lr 0.5 --seed 2 on %HOST%",
            "train --lr 0.5 --seed 3 on %HOST%",
        ]
    );
}

#[test]
fn unused_parameters_still_multiply_as_in_pegasus() {
    // Pegasus' quiz: `echo bye` with low = [1, 2] and high = [3, 4] runs 4 times.
    assert_eq!(jobs("{ command = 'echo bye', low = [1, 2], high = [3, 4] }").len(), 4);
}

#[test]
fn scalar_parameters_booleans_and_percent_in_values() {
    assert_eq!(
        jobs("{ command = 'run %A% %B% %C% 100%%', A = 'x%y', B = true, C = [7] }"),
        ["run x%%y true 7 100%%"]
    );
}

#[test]
fn a_table_with_only_a_command_is_that_command() {
    assert_eq!(jobs("{ command = '{ echo a; echo b; }' }"), ["{ echo a; echo b; }"]);
    assert!(parse("q.txt", "{ command = 'x' }").map(|e| single(&e[0])).unwrap());
}

#[test]
fn errors_name_the_line_and_what_is_wrong() {
    let (line, p) = problem("echo ok\n\n{ echo a; }\n");
    assert_eq!(line, 3);
    assert!(matches!(p, Problem::Table { .. }), "{p}");
    assert!(p.to_string().contains("command = '...'"), "{p}");

    assert_eq!(problem("{ SEED = [1] }"), (1, Problem::MissingCommand));
    assert_eq!(problem("{ command = 3 }"), (1, Problem::CommandType("integer")));
    assert_eq!(problem("{ command = '  ' }"), (1, Problem::EmptyCommand));
    assert_eq!(
        problem("{ command = 'x', \"a-b\" = 1 }"),
        (1, Problem::ParamName("a-b".into()))
    );
    assert_eq!(
        problem("{ command = 'x', HOST = 1 }"),
        (1, Problem::ReservedParam("HOST".into()))
    );
    assert_eq!(
        problem("{ command = 'x', A = [] }"),
        (1, Problem::EmptyList("A".into()))
    );
    assert!(matches!(
        problem("{ command = 'x', A = [[1]] }"),
        (1, Problem::ParamType { found: "array", .. })
    ));
    assert!(matches!(
        problem("{ command = 'x', A.b = 1 }"),
        (1, Problem::ParamType { found: "table", .. })
    ));
}

#[test]
fn unknown_variables_are_refused_when_read() {
    let (line, p) = problem("echo %HOST%\n{ command = 'echo %SEEED%', SEED = [1] }");
    assert_eq!(line, 2);
    let Problem::UnknownVariable { name, known } = &p else {
        panic!("{p:?}")
    };
    assert_eq!(name, "SEEED");
    assert!(known.starts_with("%SEED%, %LABEL%"), "{known}");
    // What the library would refuse as well: `%s%` in a printf format.
    assert_eq!(problem("printf '%s%s'").0, 1);
    // `date +%Y-%m-%d` has no variable.
    assert_eq!(jobs("date +%Y-%m-%d"), ["date +%Y-%m-%d"]);
}

#[test]
fn too_large_a_product_is_refused_before_expansion() {
    let list = format!("[{}]", (0..1000).map(|i| i.to_string()).collect::<Vec<_>>().join(","));
    let line = format!("{{ command = 'x', A = {list}, B = {list} }}");
    assert_eq!(problem(&line), (1, Problem::TooMany(1_000_000)));
}

#[test]
fn the_error_message_has_file_line_and_column() {
    let e = parse("jobs/q.txt", "ok\n{ command = 'x' oops }").unwrap_err();
    let text = e.to_string();
    assert!(text.starts_with("jobs/q.txt:2: column "), "{text}");
}

#[test]
fn canonical_forms() {
    assert_eq!(canonical("echo hi"), "echo hi");
    assert_eq!(canonical("{ a; }"), r#"{ command = "{ a; }" }"#);
    assert_eq!(canonical("# not a comment"), r##"{ command = "# not a comment" }"##);
    assert_eq!(canonical(" x"), r#"{ command = " x" }"#);
    assert_eq!(canonical("a\nb\\\"c\u{7f}"), r#"{ command = "a\nb\\\"c\u007F" }"#);
}

proptest! {
    #[test]
    fn parsing_never_panics(text in "(?s).{0,400}") {
        if let Ok(entries) = parse("q.txt", &text) {
            for e in entries {
                prop_assert!(e.count() <= MAX_JOBS_PER_LINE);
            }
        }
    }

    #[test]
    fn table_lines_never_panic(body in r#"[ a-zA-Z0-9_=,\[\]{}'"%.\-+:#\\]{0,120}"#) {
        let line = format!("{{ command = 'x %A%', {body}");
        if let Ok(entries) = parse("q.txt", &line) {
            for e in entries {
                prop_assert_eq!(e.jobs().len(), e.count());
            }
        }
    }

    #[test]
    fn canonical_reads_back_as_the_same_single_job(command in "(?s).{1,80}") {
        // Commands the file may hold: no variable other than host ones.
        prop_assume!(command.trim() != "");
        let parsed = parse("q.txt", &canonical(&command));
        if !command.contains('%') {
            prop_assert!(parsed.is_ok(), "{:?}", parsed);
        }
        if let Ok(entries) = parsed {
            prop_assert_eq!(entries.len(), 1);
            prop_assert!(single(&entries[0]));
            prop_assert_eq!(entries[0].jobs(), vec![command.clone()]);
            prop_assert_eq!(canonical(&entries[0].jobs()[0]), canonical(&command));
        }
    }
}

#[test]
fn the_readme_side_by_side_example() {
    let text = ". ~/.bashrc && python train.py --lr 1e-3 --seed 1\n\
        { command = \"python train.py --lr %lr% --seed %seed% > %HOST%.log\", lr = [\"1e-3\", \"1e-4\"], seed = [1, 2] }\n";
    let all: Vec<String> = jobs(text).iter().map(|j| canonical(j)).collect();
    assert_eq!(
        all,
        [
            ". ~/.bashrc && python train.py --lr 1e-3 --seed 1",
            "python train.py --lr 1e-3 --seed 1 > %HOST%.log",
            "python train.py --lr 1e-3 --seed 2 > %HOST%.log",
            "python train.py --lr 1e-4 --seed 1 > %HOST%.log",
            "python train.py --lr 1e-4 --seed 2 > %HOST%.log",
        ]
    );
}
