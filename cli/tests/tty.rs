//! The binary on a real pseudo-terminal (openpty), against the embedded
//! cluster: the progress line (done, failed and running counts, elapsed) is
//! drawn on a terminal stderr in the deferred modes (`-b`, `--json`), never
//! into a pipe; colour is there on a terminal and gone under `NO_COLOR`.

mod common;

use std::time::Duration;

use common::pty::{run, PtyRun, To};
use common::Cluster;

/// Host `fast` succeeds at once, `bad` fails at once (exit 3), `slow`
/// succeeds after a while: the progress line has time to show each count.
const CMD: &str = "grep -q bad id.txt && exit 3; grep -q slow id.txt && sleep 2.5; cat id.txt";

/// The colours the binary uses (SGR): stdout prefix, stderr prefix and the
/// failure summary, `-b` headers.
const COLOURS: [&str; 3] = ["\x1b[36m", "\x1b[31m", "\x1b[34m"];

fn cluster() -> Cluster {
    Cluster::start(&["fast", "bad", "slow"])
}

fn run_on(c: &Cluster, args: &[&str], stdout: To, stderr: To, no_color: bool) -> PtyRun {
    let mut cmd = c.cmd();
    cmd.env("TERM", "xterm-256color").args(args);
    if no_color {
        cmd.env("NO_COLOR", "1");
    }
    run(cmd, stdout, stderr, Duration::from_secs(60))
}

/// The progress lines the terminal was sent: `... N/3 done, F failed, R running`.
fn progress_states(screen: &str) -> Vec<(u32, u32, u32)> {
    let mut states = Vec::new();
    for (i, _) in screen.match_indices(" done, ") {
        let before = &screen[..i];
        let done = before
            .rsplit(|c: char| !c.is_ascii_digit() && c != '/')
            .next()
            .and_then(|s| s.split('/').next())
            .and_then(|d| d.parse().ok());
        let rest = &screen[i + " done, ".len()..];
        let mut words = rest.split_whitespace();
        let failed = words.next().and_then(|w| w.parse().ok());
        let _ = words.next();
        let running = words.next().and_then(|w| w.trim_end_matches(',').parse().ok());
        if let (Some(d), Some(f), Some(r)) = (done, failed, running) {
            states.push((d, f, r));
        }
    }
    states
}

#[test]
fn gathered_output_on_a_terminal_draws_progress_and_colours() {
    let c = cluster();
    let all = c.nodeset(&[0, 1, 2]);
    let r = run_on(&c, &["-b", "-w", &all, "--", CMD], To::Tty, To::Tty, false);
    assert_eq!(r.out.code(), 1, "{:?}", r.screen);
    let states = progress_states(&r.screen);
    // While `slow` sleeps: two hosts done, one of them failed, one running.
    assert!(states.contains(&(2, 1, 1)), "{states:?} in {:?}", r.screen);
    assert!(
        states.iter().all(|&(d, f, run)| d <= 3 && f <= 1 && run <= 3),
        "{states:?}"
    );
    // Elapsed, as hh:mm:ss.
    assert!(r.screen.contains("00:00:0"), "{:?}", r.screen);
    // The bar is cleared before the gathered output is printed.
    let fast_block = r.screen.rfind("fast").expect("gathered output");
    assert!(r.screen[fast_block..].find(" done, ").is_none(), "{:?}", r.screen);
    assert!(
        r.screen.contains("\x1b[34m---------------"),
        "headers coloured: {:?}",
        r.screen
    );
    assert!(
        r.screen
            .contains(&format!("\x1b[31m{}\x1b[0m: exited with status 3", c.host(1))),
        "summary coloured: {:?}",
        r.screen
    );
}

#[test]
fn no_color_removes_colour_but_not_the_progress_line() {
    let c = cluster();
    let all = c.nodeset(&[0, 1, 2]);
    let r = run_on(&c, &["-b", "-w", &all, "--", CMD], To::Tty, To::Tty, true);
    assert_eq!(r.out.code(), 1, "{:?}", r.screen);
    assert!(progress_states(&r.screen).contains(&(2, 1, 1)), "{:?}", r.screen);
    for colour in COLOURS {
        assert!(!r.screen.contains(colour), "NO_COLOR but {colour:?} in {:?}", r.screen);
    }
    assert!(
        r.screen.contains(&format!("{}: exited with status 3\n", c.host(1))),
        "{:?}",
        r.screen
    );
}

#[test]
fn json_stdout_piped_stays_clean_while_the_terminal_shows_progress() {
    let c = cluster();
    let all = c.nodeset(&[0, 1, 2]);
    let r = run_on(&c, &["--json", "-w", &all, "--", CMD], To::Pipe, To::Tty, false);
    assert_eq!(r.out.code(), 1, "{:?}", r.out);
    assert!(progress_states(&r.screen).contains(&(2, 1, 1)), "{:?}", r.screen);
    // stdout is JSON Lines and nothing else: no progress, no escape.
    let stdout = r.out.stdout();
    assert!(!stdout.contains('\x1b') && !stdout.contains(" done, "), "{stdout:?}");
    let records = r.out.json_records();
    assert_eq!(records.last().unwrap()["type"], "summary", "{stdout}");
    assert_eq!(records.iter().filter(|r| r["type"] == "result").count(), 3, "{stdout}");
}

#[test]
fn no_progress_when_stderr_is_piped() {
    let c = cluster();
    let all = c.nodeset(&[0, 1, 2]);
    let want_err = format!("{}: exited with status 3\n", c.host(1));
    // stdout on the terminal, stderr into a pipe: the progress line would go
    // to stderr, so it is not drawn at all.
    let r = run_on(&c, &["-b", "-w", &all, "--", CMD], To::Tty, To::Pipe, false);
    assert_eq!(r.out.code(), 1, "{:?}", r.out);
    assert_eq!(r.out.stderr(), want_err, "{:?}", r.out);
    assert!(!r.screen.contains(" done, "), "{:?}", r.screen);
    assert!(
        r.screen.contains("\x1b[34m"),
        "stdout is a terminal: coloured {:?}",
        r.screen
    );
    // Both piped: exact, no escape anywhere.
    let out = c.run(&["--json", "-w", &all, "--", CMD]);
    assert_eq!(out.stderr(), want_err, "{out:?}");
    assert!(!out.stdout().contains('\x1b'), "{out:?}");
}

#[test]
fn live_output_on_a_terminal_is_coloured_and_has_no_progress_line() {
    let c = cluster();
    let all = c.nodeset(&[0, 1, 2]);
    let r = run_on(
        &c,
        &["-w", &all, "--", "cat id.txt; echo warn >&2"],
        To::Tty,
        To::Tty,
        false,
    );
    assert_eq!(r.out.code(), 0, "{:?}", r.screen);
    assert!(
        r.screen.contains(&format!("\x1b[36m{}: \x1b[0mfast\n", c.host(0))),
        "{:?}",
        r.screen
    );
    assert!(
        r.screen.contains(&format!("\x1b[31m{}: \x1b[0mwarn\n", c.host(0))),
        "{:?}",
        r.screen
    );
    assert!(!r.screen.contains(" done, "), "{:?}", r.screen);
    let r = run_on(&c, &["-w", &all, "--", "cat id.txt"], To::Tty, To::Tty, true);
    assert!(r.screen.contains(&format!("{}: fast\n", c.host(0))), "{:?}", r.screen);
    assert!(!r.screen.contains('\x1b'), "NO_COLOR: {:?}", r.screen);
}
