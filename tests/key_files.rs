//! Identity files are read once per I/O thread and handed to libssh2 from
//! memory, the public line from `FILE.pub` when there is one: a key file
//! replaced during a run (a rotated key) is read again at the next login, and
//! a key without a `.pub` still logs in (libssh2 derives the public key).
//! Against OpenSSH's sshd, whose log names the key of every login.

mod common;

use std::time::Duration;

use ssh_parallel::{Command, Host, HostKeyCheck, Join, Parallel, Sub};
use testbed::{ClientKey, OpenSshServer};

#[test]
fn a_key_file_rotated_during_a_run_is_read_again_and_a_key_without_pub_logs_in() {
    if !testbed::prereq::sshd() {
        return;
    }
    let old = ClientKey::ed25519().expect("a key");
    let new = ClientKey::ed25519().expect("another key");
    let (old_print, new_print) = (
        common::fingerprint(old.public_line()),
        common::fingerprint(new.public_line()),
    );
    let server = OpenSshServer::builder().authorize(&old).start().expect("start sshd");

    // The file both labels name holds the old key (with its .pub) at first.
    let dir = tempfile::tempdir().unwrap();
    let id = dir.path().join("id");
    let id_pub = dir.path().join("id.pub");
    std::fs::copy(old.private_path(), &id).unwrap();
    std::fs::copy(old.public_path(), &id_pub).unwrap();

    let host = Host::new("127.0.0.1")
        .port(server.port)
        .user(testbed::current_user())
        .key_file(&id)
        .agent(false)
        .host_key_check(HostKeyCheck::Off)
        .connect_timeout(Duration::from_secs(10));
    // One I/O thread: the second login goes through the loop that read the old key.
    let mut p = Parallel::builder().io_threads(1).build().unwrap();
    p.add_host("first", host.clone()).unwrap();
    p.add_host("second", host).unwrap();
    p.push("first", Command::new("echo one")).unwrap();
    let (private, authorized) = (new.private_path().to_owned(), server.dir().join("authorized_keys"));
    let new_line = new.public_line().to_owned();
    let (id_w, id_pub_w) = (id.clone(), id_pub.clone());
    // Rotation: the new key in the same file, no .pub, and sshd takes only it.
    p.push(
        "first",
        Sub::new(move |_| {
            std::fs::copy(&private, &id_w)?;
            std::fs::remove_file(&id_pub_w)?;
            std::fs::write(&authorized, format!("{new_line}\n"))?;
            Ok(())
        }),
    )
    .unwrap();
    p.push("second", Join::new("first")).unwrap();
    p.push("second", Command::new("echo two")).unwrap();
    let report = p.run();
    assert!(report.success(), "{report}\n{}", server.log());
    assert_eq!(report.label("second").unwrap().tasks()[1].stdout_str(), "two\n");

    let log = server.log();
    let accepted: Vec<&str> = log.lines().filter(|l| l.contains("Accepted publickey")).collect();
    assert_eq!(accepted.len(), 2, "one login per label: {log}");
    assert!(accepted[0].contains(&old_print), "first login with the old key: {log}");
    assert!(
        accepted[1].contains(&new_print),
        "the second login read the rotated file again (new key, derived public key): {log}"
    );
}
