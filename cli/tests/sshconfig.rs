//! Hosts named by `~/.ssh/config` aliases, and `-o` directives winning over
//! the file as with `ssh -o`.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Cluster, Out, BIN, USER};

/// `~/.ssh/config` under the cluster's home: `box1` and `box2` are the first
/// two servers, `silent` a listener that never speaks SSH.
fn write_config(c: &Cluster, silent_port: u16, host_keys: &str) {
    let ssh = c.home.path().join(".ssh");
    std::fs::create_dir_all(&ssh).unwrap();
    let key = c.key.private_path().display().to_string();
    let mut text = String::new();
    for (alias, i) in [("box1", 0), ("box2", 1)] {
        text.push_str(&format!(
            "Host {alias}\n  HostName 127.0.0.1\n  Port {}\n",
            c.servers[i].port()
        ));
    }
    text.push_str(&format!(
        "Host silent\n  HostName 127.0.0.1\n  Port {silent_port}\n\
         Host *\n  User {USER}\n  IdentityFile {key}\n  IdentityAgent none\n{host_keys}"
    ));
    std::fs::write(ssh.join("config"), text).unwrap();
}

/// The binary with `args` only: everything else comes from `~/.ssh/config`.
/// Its private `-o` file must be gone once it exited.
fn run(home: &Path, args: &[&str]) -> Out {
    let tmp = home.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let out = Command::new(BIN)
        .env("HOME", home)
        .env("TMPDIR", &tmp)
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ssh-parallel");
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(left.is_empty(), "{args:?} left {left:?}");
    Out(out)
}

#[test]
fn aliases_from_the_user_config_and_o_winning_over_it() {
    let c = Cluster::start(&["a", "b"]);
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    write_config(&c, silent_port, "  StrictHostKeyChecking no\n");
    let home = c.home.path();

    let out = run(home, &["-w", "box[1-2]", "--", "echo hi"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(out.sorted_stdout(), ["box1: hi", "box2: hi"], "{out:?}");

    let out = run(home, &["-N", "-w", "box1", "--", "cat id.txt"]);
    assert_eq!((out.code(), out.stdout().as_str()), (0, "a\n"), "{out:?}");
    // The command line comes first: its Port wins over the file's.
    let other = format!("Port={}", c.servers[1].port());
    let out = run(home, &["-N", "-o", &other, "-w", "box1", "--", "cat id.txt"]);
    assert_eq!((out.code(), out.stdout().as_str()), (0, "b\n"), "{out:?}");
    // So does the first of two -o values.
    let wrong = format!("Port={}", common::closed_port());
    let out = run(
        home,
        &["-N", "-o", &other, "-o", &wrong, "-w", "box1", "--", "cat id.txt"],
    );
    assert_eq!((out.code(), out.stdout().as_str()), (0, "b\n"), "{out:?}");

    // Only the connect timeout ends a connection to a server that never speaks.
    let t = Instant::now();
    let out = run(home, &["-o", "ConnectTimeout=1", "-w", "silent", "--", "true"]);
    assert!(t.elapsed() < Duration::from_secs(8), "{out:?}");
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(out.stderr().starts_with("silent: connect: "), "{out:?}");
}

#[test]
fn user_known_hosts_file_given_with_o() {
    let c = Cluster::start(&["a", "b"]);
    write_config(&c, common::closed_port(), "");
    let home = c.home.path();
    let known = home.join("elsewhere_known_hosts");
    let known_opt = format!("UserKnownHostsFile={}", known.display());

    // Strict by default, and the host is in no known_hosts file.
    let out = run(home, &["-N", "-o", &known_opt, "-w", "box1", "--", "cat id.txt"]);
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(out.stderr().starts_with("box1: connect: "), "{out:?}");

    // Unhashed, whatever /etc/ssh/ssh_config says, so the name can be seen.
    let new = ["-o", "StrictHostKeyChecking=accept-new", "-o", "HashKnownHosts=no"];
    let out = run(
        home,
        &[&new[..], &["-N", "-o", &known_opt, "-w", "box1", "--", "cat id.txt"]].concat(),
    );
    assert_eq!((out.code(), out.stdout().as_str()), (0, "a\n"), "{out:?}");
    let recorded = std::fs::read_to_string(&known).unwrap();
    assert!(
        recorded.contains(&format!("[127.0.0.1]:{}", c.servers[0].port())),
        "{recorded}"
    );
    assert!(!home.join(".ssh/known_hosts").exists());

    // Strict now accepts it, from that file.
    let out = run(home, &["-N", "-o", &known_opt, "-w", "box1", "--", "cat id.txt"]);
    assert_eq!((out.code(), out.stdout().as_str()), (0, "a\n"), "{out:?}");
}

#[test]
fn bad_o_directives_are_usage_errors_naming_the_option() {
    let c = Cluster::start(&["a", "b"]);
    write_config(&c, common::closed_port(), "  StrictHostKeyChecking no\n");
    let cases = [
        ("Bogus=1", "-o \"Bogus=1\": bad configuration option"),
        ("ConnectTimeout=soon", "-o \"ConnectTimeout=soon\": "),
        ("Port=99999", "-o \"Port=99999\": "),
        ("StrictHostKeyChecking=maybe", "-o \"StrictHostKeyChecking=maybe\": "),
        ("Host=box1", "-o \"Host=box1\": Host is not supported"),
        ("Port", "-o \"Port\": expected Key=Value"),
    ];
    for (opt, needle) in cases {
        let out = run(c.home.path(), &["-o", opt, "-w", "box1", "--", "true"]);
        assert_eq!(out.code(), 2, "{opt}: {out:?}");
        let err = out.stderr();
        assert_eq!(err.lines().count(), 1, "{opt}: {out:?}");
        assert!(
            err.starts_with("ssh-parallel: error: ") && err.contains(needle),
            "{opt}: {out:?}"
        );
        assert!(!err.contains("ssh-parallel-o-"), "names the temporary file: {out:?}");
    }
}
