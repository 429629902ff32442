//! The embedded server against the real OpenSSH client (`ssh`, `scp -O`, `rsync`).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use testbed::{ClientKey, EmbeddedServer, Fault};

const T: Duration = Duration::from_secs(30);

fn key_server() -> (EmbeddedServer, ClientKey) {
    let key = ClientKey::ed25519().unwrap();
    let server = EmbeddedServer::builder()
        .authorized_key("*", key.public_line())
        .start()
        .unwrap();
    (server, key)
}

#[test]
fn ssh_key_auth_batch_mode_exit_codes_and_stderr() {
    let (server, key) = key_server();
    let out = run_with_timeout(
        &mut ssh_key_command(server.port(), key.private_path(), "alice", "echo hi"),
        T,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"hi\n");

    let out = run_with_timeout(
        &mut ssh_key_command(server.port(), key.private_path(), "alice", "echo err >&2; exit 7"),
        T,
    );
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
}

#[test]
fn ssh_strict_host_key_checking_with_written_known_hosts() {
    let (server, key) = key_server();
    let dir = tempfile::tempdir().unwrap();
    let known = dir.path().join("known_hosts");
    server.write_known_hosts(&known).unwrap();
    let strict = |known: &std::path::Path| {
        run_with_timeout(
            &mut ssh_strict_command(server.port(), key.private_path(), known, "alice", "echo ok"),
            T,
        )
    };
    let out = strict(&known);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"ok\n");
    // Another server's key on that port is a mismatch.
    let other = EmbeddedServer::builder().start().unwrap();
    let wrong = dir.path().join("wrong_known_hosts");
    testbed::append_line(
        &wrong,
        &testbed::known_hosts_line(server.port(), &other.host_key_openssh()),
    )
    .unwrap();
    let out = strict(&wrong);
    assert_eq!(out.status.code(), Some(255));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HOST IDENTIFICATION HAS CHANGED"));
}

#[test]
fn ssh_password_auth_via_askpass() {
    let server = EmbeddedServer::builder().password("alice", "s3cret").start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let askpass = dir.path().join("askpass");
    std::fs::write(&askpass, "#!/bin/sh\necho s3cret\n").unwrap();
    std::fs::set_permissions(&askpass, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    for method in ["password", "keyboard-interactive"] {
        let mut c = Command::new("ssh");
        c.args(ssh_opts(server.port()))
            .arg("-o")
            .arg(format!("PreferredAuthentications={method}"))
            .args(["-o", "NumberOfPasswordPrompts=1", "alice@127.0.0.1", "echo pw"])
            .env("SSH_ASKPASS", &askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", ":0");
        let out = run_with_timeout(&mut c, T);
        assert!(
            out.status.success(),
            "{method}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, b"pw\n");
    }
}

#[test]
fn scp_legacy_protocol_both_ways_verified_by_checksum() {
    let (server, key) = key_server();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local.bin");
    write_random_file(&local, 3_000_000, 42);
    let remote = dir.path().join("remote.bin");
    let back = dir.path().join("back.bin");
    let scp = |from: String, to: String| {
        let mut c = Command::new("scp");
        c.arg("-O")
            .arg("-q")
            .arg("-p")
            .args(
                ssh_opts(server.port())
                    .iter()
                    .map(|o| if o == "-p" { "-P".into() } else { o.clone() }),
            );
        c.arg("-o")
            .arg("BatchMode=yes")
            .arg("-i")
            .arg(key.private_path())
            .arg(from)
            .arg(to);
        let out = run_with_timeout(&mut c, T);
        assert!(out.status.success(), "scp: {}", String::from_utf8_lossy(&out.stderr));
    };
    scp(
        local.display().to_string(),
        format!("alice@127.0.0.1:{}", remote.display()),
    );
    assert_eq!(sha256_file(&remote), sha256_file(&local));
    scp(
        format!("alice@127.0.0.1:{}", remote.display()),
        back.display().to_string(),
    );
    assert_eq!(sha256_file(&back), sha256_file(&local));
    // Recursive directories.
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    write_random_file(&tree.join("sub/a"), 10_000, 7);
    let remote_tree = dir.path().join("remote_tree");
    let mut c = Command::new("scp");
    c.args(["-O", "-q", "-r", "-P", &server.port().to_string()])
        .args(&ssh_opts(server.port())[..12]);
    c.arg("-i")
        .arg(key.private_path())
        .arg(&tree)
        .arg(format!("alice@127.0.0.1:{}", remote_tree.display()));
    let out = run_with_timeout(&mut c, T);
    assert!(out.status.success(), "scp -r: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        sha256_file(&remote_tree.join("sub/a")),
        sha256_file(&tree.join("sub/a"))
    );
}

#[test]
fn rsync_over_ssh_verified_by_checksum() {
    if !testbed::prereq::program("rsync", "rsync") {
        return;
    }
    let (server, key) = key_server();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    write_random_file(&src.join("f"), 1_000_000, 9);
    let rsh = format!(
        "ssh -p {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o IdentitiesOnly=yes -i {}",
        server.port(),
        key.private_path().display()
    );
    let dest = dir.path().join("dest");
    let mut c = Command::new("rsync");
    c.args(["-a", "-e", &rsh])
        .arg(format!("{}/", src.display()))
        .arg(format!("alice@127.0.0.1:{}/", dest.display()));
    let out = run_with_timeout(&mut c, T);
    assert!(out.status.success(), "rsync: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(sha256_file(&dest.join("f")), sha256_file(&src.join("f")));
    assert!(server.commands().iter().any(|c| c.starts_with("rsync --server")));
}

#[test]
fn sftp_subsystem() {
    let (server, key) = key_server();
    if !testbed::prereq::sftp_server() || !testbed::prereq::program("sftp", "openssh-client") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, "sftp works\n").unwrap();
    let got = dir.path().join("got");
    let batch = dir.path().join("batch");
    std::fs::write(&batch, format!("get {} {}\n", file.display(), got.display())).unwrap();
    let mut c = Command::new("sftp");
    c.args(["-q", "-b"])
        .arg(&batch)
        .args(["-P", &server.port().to_string()])
        .args(&ssh_opts(server.port())[..12]);
    c.arg("-i").arg(key.private_path()).arg("alice@127.0.0.1");
    let out = run_with_timeout(&mut c, T);
    assert!(out.status.success(), "sftp: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(&got).unwrap(), "sftp works\n");
}

#[test]
fn ssh_sees_each_fault_without_hanging() {
    let (server, key) = key_server();
    let run = |faults: Vec<Fault>, command: &str| {
        server.set_faults(faults);
        let started = Instant::now();
        let out = run_with_timeout(
            &mut ssh_key_command(server.port(), key.private_path(), "alice", command),
            T,
        );
        (out, started.elapsed())
    };
    let (out, _) = run(vec![Fault::RefuseHandshake], "true");
    assert_eq!(out.status.code(), Some(255));
    let (out, _) = run(vec![Fault::RejectAuth], "true");
    assert_eq!(out.status.code(), Some(255));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{out:?}"
    );
    let (out, _) = run(vec![Fault::DropAfterBytes(500)], "true");
    assert_eq!(out.status.code(), Some(255));
    let (out, elapsed) = run(vec![Fault::DropDuringCommand(Duration::from_millis(300))], "sleep 30");
    assert_eq!(out.status.code(), Some(255));
    assert!(elapsed < Duration::from_secs(10));
    let (out, elapsed) = run(vec![Fault::DelayHandshake(Duration::from_millis(800))], "echo late");
    assert!(out.status.success());
    assert!(elapsed >= Duration::from_millis(800));
    // No banner: ssh's ConnectTimeout (5 s in ssh_opts) covers the banner exchange.
    let (out, elapsed) = run(vec![Fault::NoBanner], "true");
    assert_eq!(out.status.code(), Some(255));
    assert!(
        elapsed >= Duration::from_secs(4) && elapsed < Duration::from_secs(20),
        "{elapsed:?}"
    );
    server.clear_faults();
    let (out, _) = run(vec![], "echo fine");
    assert_eq!(out.stdout, b"fine\n");
}
