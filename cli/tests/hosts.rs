//! Choosing and reaching hosts: host files, standard input, `user@`
//! prefixes, `-o` ssh_config directives and the connect timeout.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Cluster, Out, BIN, USER};

#[test]
fn host_files_stdin_and_user_prefixes() {
    let c = Cluster::start(&["a", "b"]);
    let file = c.home.path().join("hosts");
    std::fs::write(&file, format!("# web tier\n{}  # first\n\n", c.host(0))).unwrap();
    let hat = format!("^{}", file.display());
    let mut child = c
        .cmd()
        .args(["-N", "-w", &hat, "-w", "-", "--", "cat id.txt"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{}", c.host(1)).unwrap();
    let out = Out(child.wait_with_output().unwrap());
    assert_eq!(out.sorted_stdout(), ["a", "b"], "{out:?}");

    // `bob@` overrides -l for that entry only; bob has no key there.
    let hosts = format!("bob@{},{}", c.host(0), c.host(1));
    let out = c.run(&["-N", "-w", &hosts, "--", "cat id.txt"]);
    assert_eq!((out.code(), out.stdout().as_str()), (1, "b\n"), "{out:?}");
    assert!(
        out.stderr().starts_with(&format!("{}: connect: ", c.host(0))),
        "{out:?}"
    );
}

#[test]
fn ssh_config_directives_and_the_connect_timeout() {
    let c = Cluster::start(&["a"]);
    let port = c.servers[0].port().to_string();
    let key = c.key.private_path().display().to_string();
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .env("HOME", c.home.path())
            .env_remove("SSH_AUTH_SOCK")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        Out(out)
    };
    let port_opt = format!("Port={port}");
    let user_opt = format!("User={USER}");
    let key_opt = format!("IdentityFile={key}");
    let base = [
        "-N",
        "-o",
        &port_opt,
        "-o",
        &user_opt,
        "-o",
        &key_opt,
        "-o",
        "IdentityAgent=none",
    ];
    // The host key is unknown: the default (strict) refuses it.
    let out = run(&[&base[..], &["-w", "127.0.0.1", "--", "cat id.txt"]].concat());
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(out.stderr().starts_with("127.0.0.1: connect: "), "{out:?}");
    // accept-new records it in $HOME/.ssh/known_hosts; strict then accepts it.
    std::fs::create_dir_all(c.home.path().join(".ssh")).unwrap();
    for check in ["accept-new", "yes"] {
        let opt = format!("StrictHostKeyChecking={check}");
        let out = run(&[&base[..], &["-o", &opt, "-w", "127.0.0.1", "--", "cat id.txt"]].concat());
        assert_eq!((out.code(), out.stdout().as_str()), (0, "a\n"), "{check}: {out:?}");
    }

    // A listener that never speaks SSH: only the connect timeout ends it.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_host = format!("127.0.0.1:{}", silent.local_addr().unwrap().port());
    let t = Instant::now();
    let out = run(&[
        "-t",
        "0.5",
        "-w",
        &silent_host,
        "-o",
        "StrictHostKeyChecking=no",
        "--",
        "true",
    ]);
    assert!(t.elapsed() < Duration::from_secs(5), "{out:?}");
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(
        out.stderr().starts_with(&format!("{silent_host}: connect: ")),
        "{out:?}"
    );
}
