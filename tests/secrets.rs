//! Secrets stay secret: passwords, key passphrases and in-memory private keys
//! appear nowhere a user or a log collector can read them — not in `Debug` or
//! `Display` of hosts, the builder, errors or reports, not in the report's
//! JSON, and not in the logs at `trace` level.
//!
//! The logins run in a child process (this test binary re-run with
//! `RUST_LOG=trace` and the real `env_logger`), so that *everything* the
//! process writes, on stdout and stderr, is searched: not only what a test
//! logger chose to record.

#[path = "common/child.rs"]
mod child;

use std::ffi::OsStr;
use std::fs;
use std::time::Duration;

use ssh_parallel::{Command, Host, HostKeyCheck, Parallel};
use testbed::{ClientKey, EmbeddedServer, KeyType};

const USER: &str = "alice";
/// Distinctive values, so that a hit can only be a leak.
const PASSWORD: &str = "Pw-4bd1e0-correct";
const WRONG_PASSWORD: &str = "Pw-9c7a22-wrong";
const PASSPHRASE: &str = "Pp-51f0aa-correct";
const WRONG_PASSPHRASE: &str = "Pp-e3b8d4-wrong";
const CHILD: &str = "SSH_PARALLEL_SECRETS_CHILD";
/// Where the parent put the passphrase-protected private key for the child.
const KEY: &str = "SSH_PARALLEL_SECRETS_KEY";

/// The child's side: logins that succeed and fail with every kind of secret,
/// printing the `Debug` and `Display` of everything a user could print.
#[test]
#[ignore = "run as a child process by secrets_stay_out_of_debug_display_errors_reports_and_trace_logs"]
fn child_logins_at_trace_level() {
    if std::env::var_os(CHILD).is_none() {
        // Not a test by itself: its parent asserts on what it prints.
        eprintln!("child_logins_at_trace_level runs only as the child of its parent test");
        return;
    }
    env_logger::builder().is_test(false).init();
    log::trace!("child logger up");

    let key_path = std::path::PathBuf::from(std::env::var_os(KEY).expect("the parent names the key"));
    let public = fs::read_to_string(key_path.with_extension("pub")).expect("read the public key");
    let server = EmbeddedServer::builder()
        .password(USER, PASSWORD)
        .authorized_key(USER, public.trim())
        .start()
        .expect("start the embedded server");
    let pem = fs::read_to_string(&key_path).expect("read the private key");
    let base = || {
        Host::new("127.0.0.1")
            .port(server.port())
            .user(USER)
            .agent(false)
            .host_key_check(HostKeyCheck::Off)
            .connect_timeout(Duration::from_secs(20))
    };

    let mut pssh = Parallel::builder().reconnections(0).build().unwrap();
    let hosts = [
        ("pw_ok", base().password(PASSWORD)),
        ("pw_bad", base().password(WRONG_PASSWORD)),
        ("mem_ok", base().key_data(pem.clone()).passphrase(PASSPHRASE)),
        ("mem_bad", base().key_data(pem.clone()).passphrase(WRONG_PASSPHRASE)),
        ("file_ok", base().key_file(&key_path).passphrase(PASSPHRASE)),
        ("file_bad", base().key_file(&key_path).passphrase(WRONG_PASSPHRASE)),
    ];
    for (label, host) in hosts {
        println!("host {label}: {host:?}");
        pssh.add_host(label, host).unwrap();
    }
    pssh.all(Command::new("echo logged-in-as-%LABEL%")).unwrap();
    println!("builder: {pssh:?}");
    let report = pssh.run();
    println!("report display:\n{report}");
    println!("report debug:\n{report:#?}");
    println!(
        "report json:\n{}",
        serde_json::to_string(&report).expect("the report serializes")
    );
    for (label, e) in pssh.get_errors() {
        println!("error {label}: {e} / {e:?}");
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            println!("  caused by: {s} / {s:?}");
            source = s.source();
        }
    }
    for label in ["pw_ok", "mem_ok", "file_ok"] {
        let l = report.label(label).unwrap();
        assert!(l.success(), "{label} logs in: {report}");
        println!("stdout {label}: {}", l.tasks()[0].stdout_str());
    }
    for label in ["pw_bad", "mem_bad", "file_bad"] {
        assert!(!report.label(label).unwrap().success(), "{label} is refused: {report}");
    }
    println!("{}", child::DONE);
}

#[test]
fn secrets_stay_out_of_debug_display_errors_reports_and_trace_logs() {
    let key = ClientKey::generate(KeyType::Ed25519, Some(PASSPHRASE)).expect("generate a key with a passphrase");
    let all = child::run_at_trace(
        "child_logins_at_trace_level",
        [(CHILD, OsStr::new("1")), (KEY, key.private_path().as_os_str())],
    );
    // The search is meaningful only if the child really logged at trace
    // level and printed what it was asked to.
    assert!(
        all.contains("TRACE") && all.contains("child logger up"),
        "no trace logs:\n{all}"
    );
    for want in [
        "logged-in-as-pw_ok",
        "logged-in-as-mem_ok",
        "logged-in-as-file_ok",
        "error pw_bad",
        "error mem_bad",
    ] {
        assert!(all.contains(want), "the child printed no {want:?}:\n{all}");
    }
    let mut leaks = Vec::new();
    for secret in [PASSWORD, WRONG_PASSWORD, PASSPHRASE, WRONG_PASSPHRASE] {
        if all.contains(secret) {
            leaks.push(secret.to_owned());
        }
    }
    // Any line of the private key would be a leak too.
    let pem = fs::read_to_string(key.private_path()).unwrap();
    for line in pem.lines().filter(|l| l.len() >= 16) {
        if all.contains(line) {
            leaks.push(format!("private key line {line:?}"));
        }
    }
    assert!(leaks.is_empty(), "secrets leaked: {leaks:?}\n{all}");
}
