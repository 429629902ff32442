//! `Parallel::to_dot`, with Graphviz's `dot` as the oracle: every graph
//! must parse and render (`dot -Tsvg`, no warning), the structure read back
//! from `dot -Tjson` must be the plan's (clusters, chains, joins, jumps),
//! and the text drawn in the SVG must be the descriptions as written.

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command as Process, Stdio};

use serde_json::Value;
use ssh_parallel::{Command, Goto, Here, Host, Join, Parallel, ScpPut, Stop};

/// Runs `dot -T<format>` on `graph`; panics with dot's complaint when it
/// refuses the graph or warns about it.
fn dot(graph: &str, format: &str) -> String {
    let mut child = Process::new("dot")
        .arg(format!("-T{format}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dot");
    let mut stdin = child.stdin.take().unwrap();
    let input = graph.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("dot output");
    writer.join().unwrap().expect("write to dot");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.is_empty(),
        "dot -T{format}: {stderr}\n{graph}"
    );
    String::from_utf8(out.stdout).expect("dot prints UTF-8")
}

fn have_dot() -> bool {
    testbed::prereq::program("dot", "graphviz")
}

/// What `dot -Tjson` read: object names with their labels, and edges as
/// (tail name, head name, style or "solid", edge label).
struct Parsed {
    labels: HashMap<String, String>,
    shapes: HashMap<String, String>,
    edges: Vec<(String, String, String, String)>,
}

impl Parsed {
    fn of(graph: &str) -> Parsed {
        let json: Value = serde_json::from_str(&dot(graph, "json")).expect("dot -Tjson is JSON");
        let objects = json["objects"].as_array().cloned().unwrap_or_default();
        let name = |i: &Value| {
            objects[i.as_u64().unwrap() as usize]["name"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        let text = |v: &Value, k: &str| v[k].as_str().unwrap_or_default().to_owned();
        let mut labels = HashMap::new();
        let mut shapes = HashMap::new();
        for o in &objects {
            labels.insert(text(o, "name"), text(o, "label"));
            shapes.insert(text(o, "name"), text(o, "shape"));
        }
        let edges = json["edges"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|e| {
                let style = e["style"].as_str().unwrap_or("solid").to_owned();
                (name(&e["tail"]), name(&e["head"]), style, text(e, "label"))
            })
            .collect();
        Parsed { labels, shapes, edges }
    }

    /// The name of the one object labelled `label`.
    fn node(&self, label: &str) -> String {
        let found: Vec<&String> = self
            .labels
            .iter()
            .filter(|(_, l)| *l == label)
            .map(|(n, _)| n)
            .collect();
        assert_eq!(found.len(), 1, "objects labelled {label:?}: {found:?}");
        found[0].clone()
    }

    fn edge(&self, tail: &str, head: &str) -> Option<&(String, String, String, String)> {
        self.edges.iter().find(|(t, h, _, _)| t == tail && h == head)
    }
}

/// The lines of text drawn in an SVG, entities decoded.
fn svg_text(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| {
            let body = t.split_once('>')?.1;
            let body = body.split_once("</text>")?.0;
            Some(
                body.replace("&quot;", "\"")
                    .replace("&lt;", "<")
                    .replace("&gt;", ">")
                    .replace("&#45;", "-")
                    .replace("&#39;", "'")
                    .replace("&#160;", "\u{a0}")
                    .replace("&amp;", "&"),
            )
        })
        .collect()
}

fn local(labels: &[&str]) -> Parallel {
    let mut p = Parallel::new();
    for l in labels {
        p.add_host(*l, Host::local()).unwrap();
    }
    p
}

#[test]
fn labels_are_clusters_and_joins_are_nodes_fed_by_the_labels_they_wait_for() {
    if !have_dot() {
        return;
    }
    let mut p = local(&["web1", "web2", "db1"]);
    p.push("web*", Command::new("deploy")).unwrap();
    p.push("db1", Command::new("backup")).unwrap();
    p.push("db1", Join::new("web*")).unwrap();
    p.push("db1", Command::new("migrate")).unwrap();
    let graph = p.to_dot();
    dot(&graph, "svg");
    let g = Parsed::of(&graph);
    for (i, l) in ["web1", "web2", "db1"].iter().enumerate() {
        assert_eq!(g.labels[&format!("cluster_{i}")], *l, "{graph}");
    }
    let join = g.node("web* done");
    assert_eq!(g.shapes[&join], "diamond");
    // Both web labels reach the join after their deploy (through a marker point).
    let fed: Vec<&String> = g
        .edges
        .iter()
        .filter(|(_, h, s, _)| *h == join && s == "dashed")
        .map(|(t, _, _, _)| t)
        .collect();
    assert_eq!(fed.len(), 2, "{graph}");
    for marker in fed {
        assert_eq!(g.shapes[marker], "point");
        let before: Vec<_> = g.edges.iter().filter(|(_, h, _, _)| h == marker).collect();
        assert_eq!(before.len(), 1, "{graph}");
        assert_eq!(g.labels[&before[0].0], "command `deploy`");
    }
    // db1's chain: backup -> join task -> migrate, the join node releasing the join task.
    let (backup, migrate) = (g.node("command `backup`"), g.node("command `migrate`"));
    let wait_task = g
        .edges
        .iter()
        .find(|(t, _, s, _)| *t == join && s == "solid")
        .map(|(_, h, _, _)| h.clone())
        .expect("an edge from the join to the task it releases");
    assert!(g.edge(&backup, &wait_task).is_some(), "{graph}");
    assert!(g.edge(&wait_task, &migrate).is_some(), "{graph}");
}

#[test]
fn gotos_or_gotos_and_stops_point_at_their_here_or_the_end() {
    if !have_dot() {
        return;
    }
    let mut p = local(&["a"]);
    p.push("a", Command::new("check").or_goto("repair")).unwrap();
    p.push("a", Goto::new("done")).unwrap();
    p.push("a", Here::new("repair")).unwrap();
    p.push("a", Command::new("fix")).unwrap();
    p.push("a", Here::new("done")).unwrap();
    p.push("a", Goto::new("END")).unwrap();
    p.push("a", Command::new("never")).unwrap();
    p.push("a", Stop).unwrap();
    let graph = p.to_dot();
    dot(&graph, "svg");
    let g = Parsed::of(&graph);
    let (check, goto, repair, done) = (
        g.node("command `check`"),
        g.node("goto done"),
        g.node("here repair"),
        g.node("here done"),
    );
    let e = g.edge(&check, &repair).expect("or_goto edge");
    assert_eq!((e.2.as_str(), e.3.as_str()), ("dotted", "or_goto repair"));
    let e = g.edge(&goto, &done).expect("goto edge");
    assert_eq!((e.2.as_str(), e.3.as_str()), ("dotted", "goto done"));
    let end = g.node("end");
    assert_eq!(g.edge(&g.node("goto END"), &end).expect("goto END edge").3, "goto END");
    assert_eq!(g.edge(&g.node("stop"), &end).expect("stop edge").3, "stop END");
    // The chain itself is there too: check -> goto done -> here repair.
    assert_eq!(g.edge(&check, &goto).expect("next edge").2, "solid");
    assert_eq!(g.edge(&goto, &repair).expect("next edge").2, "solid");
}

#[test]
fn many_labels_and_an_empty_queue_render() {
    if !have_dot() {
        return;
    }
    let names: Vec<String> = (0..150).map(|i| format!("node{i:03}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut p = local(&refs);
    p.add_host("idle", Host::local()).unwrap();
    p.push("node*", Command::new("echo %LABEL%")).unwrap();
    p.push("node000", Join::new("node*")).unwrap();
    let graph = p.to_dot();
    let svg = dot(&graph, "svg");
    let g = Parsed::of(&graph);
    for (i, n) in names.iter().enumerate() {
        assert_eq!(g.labels[&format!("cluster_{i}")], *n);
        assert!(!g.node(&format!("command `echo {n}`")).is_empty());
    }
    assert_eq!(g.labels["cluster_150"], "idle");
    assert!(svg_text(&svg).contains(&"(empty queue)".to_owned()), "{svg}");
    let join = g.node("node* done");
    assert_eq!(g.edges.iter().filter(|(_, h, _, _)| *h == join).count(), 150);
}

#[test]
fn hostile_labels_and_commands_are_drawn_as_written() {
    if !have_dot() {
        return;
    }
    let labels = ["we\"b 1", "back\\slash", "ünï-cødé ✓", "tab\there?"];
    let mut p = Parallel::new();
    for l in labels {
        // A tab is a control character: labels refuse it, so it stands here
        // only to prove that refusal happens before any graph is drawn.
        if p.add_host(l, Host::local()).is_err() {
            continue;
        }
    }
    let commands = [
        "echo \"quoted\" 'single'",
        "printf 'a\\nb\\\\c'",
        "line one\nline two\n  indented",
        "grep -E '^(a|b){2}<x>&y$' file; echo ünï ✓ 日本",
        "bell \u{7} nul-free \u{1b}[31m",
        "}\" ] [ label=oops ]; n0 -> n1 {",
    ];
    for c in commands {
        p.push("*", Command::new(c)).unwrap();
    }
    p.push("*", ScpPut::new("/tmp/a \"b\"\\c", "/remote/ü")).unwrap();
    let graph = p.to_dot();
    let svg = dot(&graph, "svg");
    let drawn = svg_text(&svg);
    for l in ["we\"b 1", "back\\slash", "ünï-cødé ✓"] {
        assert!(drawn.iter().any(|t| t == l), "label {l:?} not drawn: {drawn:?}");
    }
    for c in commands {
        let shown = format!("command `{c}`")
            .replace('\u{7}', "\\x07")
            .replace('\u{1b}', "\\x1b");
        for line in shown.lines() {
            // Graphviz trims the spaces that start a centred line.
            assert!(
                drawn.iter().any(|t| t.trim() == line.trim()),
                "line {line:?} of {c:?} not drawn: {drawn:?}"
            );
        }
    }
    assert!(
        drawn.iter().any(|t| t == "scp_put /tmp/a \"b\"\\c -> /remote/ü"),
        "{drawn:?}"
    );
    // The injection attempt stayed one label: no node or edge of its own.
    let g = Parsed::of(&graph);
    assert!(!g.labels.contains_key("oops") && !g.labels.values().any(|l| l == "oops"));
    assert_eq!(g.labels.len(), 3 + 3 * commands.len() + 3, "{graph}");
}

#[test]
fn a_long_description_is_cut() {
    if !have_dot() {
        return;
    }
    let mut p = local(&["a"]);
    p.push("a", Command::new("x".repeat(5000))).unwrap();
    let graph = p.to_dot();
    let svg = dot(&graph, "svg");
    let drawn = svg_text(&svg);
    let line = drawn
        .iter()
        .find(|t| t.starts_with("command `x"))
        .expect("the command drawn");
    assert!(line.ends_with('…') && line.chars().count() == 120, "{line}");
}
