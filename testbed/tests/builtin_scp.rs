//! The embedded server's built-in `scp -t/-f` against the real OpenSSH `scp -O` client
//! (legacy SCP protocol), libssh2's SCP, and hand-written protocol records.
//!
//! The servers here run commands with a shell that does not exist, so every transfer that
//! works was served in-process, never by an `scp` binary.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::*;
use testbed::{ClientKey, EmbeddedServer};

const T: Duration = Duration::from_secs(30);
const NO_SHELL: &str = "/nonexistent/testbed-no-shell";

/// A server that can only do built-in scp: its shell does not exist.
fn scp_only_server(key: Option<&ClientKey>) -> EmbeddedServer {
    let mut b = EmbeddedServer::builder()
        .password("alice", "secret")
        .builtin_scp(true)
        .shell(NO_SHELL);
    if let Some(key) = key {
        b = b.authorized_key("*", key.public_line());
    }
    b.start().expect("start server")
}

fn have_openssh_scp() -> bool {
    testbed::prereq::program("scp", "openssh-client")
}

/// `scp -O -q -P PORT ... -i KEY ARGS...` (legacy protocol), run with a timeout.
fn openssh_scp(server: &EmbeddedServer, key: &ClientKey, args: &[&str]) -> std::process::Output {
    let mut c = Command::new("scp");
    c.args(["-O", "-q", "-P", &server.port().to_string()])
        .args(&ssh_opts(server.port())[..12])
        .args(["-o", "BatchMode=yes", "-i"])
        .arg(key.private_path())
        .args(args);
    run_with_timeout(&mut c, T)
}

fn remote(path: &Path) -> String {
    format!("alice@127.0.0.1:{}", path.display())
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Modification time in whole seconds (all SCP carries).
fn mtime(path: &Path) -> u64 {
    let t = fs::metadata(path).unwrap().modified().unwrap();
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()
}

fn set_mtime(path: &Path, secs: u64) {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    let f = fs::File::options().write(true).open(path).unwrap();
    f.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
        .unwrap();
}

/// Every entry under `root` (relative path, mode, contents or None for a directory), sorted.
fn tree(root: &Path) -> Vec<(PathBuf, u32, Option<Vec<u8>>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, u32, Option<Vec<u8>>)>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if p.is_dir() {
                out.push((rel, mode(&p), None));
                walk(root, &p, out);
            } else {
                out.push((rel, mode(&p), Some(fs::read(&p).unwrap())));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// A small tree: nested directories, an executable, an empty file and an empty
/// directory, names with spaces and quotes, unusual modes.
fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("sub/deeper")).unwrap();
    fs::create_dir_all(root.join("empty dir")).unwrap();
    write_random_file(&root.join("big.bin"), 300_000, 3);
    fs::write(root.join("sub/run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(root.join("sub/run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(root.join("sub/deeper/it's a file"), "quoted\n").unwrap();
    fs::write(root.join("sub/deeper/empty"), "").unwrap();
    fs::set_permissions(root.join("sub/deeper/empty"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(root.join("sub/deeper"), fs::Permissions::from_mode(0o750)).unwrap();
}

#[test]
fn default_is_on_exactly_when_no_scp_binary_is_on_path() {
    let server = EmbeddedServer::builder().start().unwrap();
    let on_path = std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("scp").is_file()));
    assert_eq!(server.builtin_scp(), !on_path);
    let forced = EmbeddedServer::builder().builtin_scp(true).start().unwrap();
    assert!(forced.builtin_scp());
    let off = EmbeddedServer::builder().builtin_scp(false).start().unwrap();
    assert!(!off.builtin_scp());
}

#[test]
fn openssh_scp_file_both_ways_keeps_content_mode_and_mtime() {
    if !have_openssh_scp() {
        return;
    }
    let key = ClientKey::ed25519().unwrap();
    let server = scp_only_server(Some(&key));
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local.bin");
    write_random_file(&local, 3_000_000, 42);
    fs::set_permissions(&local, fs::Permissions::from_mode(0o640)).unwrap();
    set_mtime(&local, 1_000_000_000);

    let up = dir.path().join("uploaded.bin");
    let out = openssh_scp(&server, &key, &["-p", local.to_str().unwrap(), &remote(&up)]);
    assert!(out.status.success(), "put: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(sha256_file(&up), sha256_file(&local));
    assert_eq!(mode(&up), 0o640);
    assert_eq!(mtime(&up), mtime(&local));

    let back = dir.path().join("back.bin");
    let out = openssh_scp(&server, &key, &["-p", &remote(&up), back.to_str().unwrap()]);
    assert!(out.status.success(), "get: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(sha256_file(&back), sha256_file(&local));
    assert_eq!(mode(&back), 0o640);
    assert_eq!(mtime(&back), mtime(&local));

    // Into an existing directory, and overwriting a longer file (truncated to the new size).
    let into = dir.path().join("into");
    fs::create_dir(&into).unwrap();
    fs::write(into.join("local.bin"), vec![1u8; 4_000_000]).unwrap();
    let out = openssh_scp(&server, &key, &[local.to_str().unwrap(), &remote(&into)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(sha256_file(&into.join("local.bin")), sha256_file(&local));

    // Every one of those was served in-process: the shell does not even exist.
    let commands = server.commands();
    assert_eq!(commands.len(), 3, "{commands:?}");
    assert!(commands.iter().all(|c| c.starts_with("scp ")), "{commands:?}");
}

#[test]
fn openssh_scp_recursive_tree_both_ways() {
    if !have_openssh_scp() {
        return;
    }
    let key = ClientKey::ed25519().unwrap();
    let server = scp_only_server(Some(&key));
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src);

    // A target that does not exist yet takes the source directory's contents.
    let up = dir.path().join("up");
    let out = openssh_scp(&server, &key, &["-r", "-p", src.to_str().unwrap(), &remote(&up)]);
    assert!(out.status.success(), "put -r: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(tree(&up), tree(&src));
    assert_eq!(mode(&up), mode(&src));

    // Into an existing directory: the tree lands under its own name.
    let back = dir.path().join("back");
    fs::create_dir(&back).unwrap();
    let out = openssh_scp(&server, &key, &["-r", "-p", &remote(&up), back.to_str().unwrap()]);
    assert!(out.status.success(), "get -r: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(tree(&back.join("up")), tree(&src));
    assert_eq!(mtime(&back.join("up/sub/run.sh")), mtime(&src.join("sub/run.sh")));
}

#[test]
fn openssh_scp_sees_remote_errors() {
    if !have_openssh_scp() {
        return;
    }
    let key = ClientKey::ed25519().unwrap();
    let server = scp_only_server(Some(&key));
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("f");
    fs::write(&local, "data").unwrap();

    let missing = dir.path().join("missing");
    let out = openssh_scp(&server, &key, &[&remote(&missing), dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("No such file or directory"), "{err}");

    let out = openssh_scp(
        &server,
        &key,
        &[&remote(dir.path()), dir.path().join("x").to_str().unwrap()],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a regular file"), "{err}");

    let nowhere = dir.path().join("no/such/dir/f");
    let out = openssh_scp(&server, &key, &[local.to_str().unwrap(), &remote(&nowhere)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("No such file or directory"), "{err}");

    // Two sources need a directory target (`scp -d -t`).
    let out = openssh_scp(
        &server,
        &key,
        &[local.to_str().unwrap(), local.to_str().unwrap(), &remote(&local)],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Not a directory"), "{err}");
}

#[test]
fn libssh2_scp_send_and_recv() {
    let server = scp_only_server(None);
    let dir = tempfile::tempdir().unwrap();
    let session = ssh2_password(server.port(), "alice", "secret").unwrap();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 256) as u8).collect();
    // A path that needs quoting on the remote side.
    let target = dir.path().join("it's here.bin");
    let mut ch = session
        .scp_send(&target, 0o604, data.len() as u64, Some((1_200_000_000, 1_200_000_000)))
        .unwrap();
    ch.write_all(&data).unwrap();
    ch.send_eof().unwrap();
    ch.wait_eof().unwrap();
    ch.close().unwrap();
    ch.wait_close().unwrap();
    // libssh2 never sends the status byte after the data, so the sink meets EOF where it
    // expects it and exits with 1 before setting the times, as OpenSSH's scp does (checked
    // against it). The contents and the mode are in place.
    assert_eq!(ch.exit_status().unwrap(), 1);
    assert_eq!(fs::read(&target).unwrap(), data);
    assert_eq!(mode(&target), 0o604);

    let (mut ch, stat) = session.scp_recv(&target).unwrap();
    assert_eq!(stat.size(), data.len() as u64);
    assert_eq!(stat.mode() & 0o7777, 0o604);
    let mut got = Vec::new();
    ch.read_to_end(&mut got).unwrap();
    assert_eq!(got, data);
    ch.send_eof().unwrap();
    ch.wait_eof().unwrap();
    ch.close().unwrap();
    ch.wait_close().unwrap();
    // libssh2 never acknowledges the file's data, so the source meets EOF where it expects
    // the answer: OpenSSH's scp exits with 1 there too (checked against it).
    assert_eq!(ch.exit_status().unwrap(), 1);

    assert!(session.scp_recv(&dir.path().join("missing")).is_err());
}

/// Runs `command` over an exec channel, sending `input` after each answer the remote gives,
/// and returns everything it wrote plus its exit status.
fn raw_scp(session: &ssh2::Session, command: &str, input: &[&[u8]]) -> (Vec<u8>, i32) {
    let mut ch = session.channel_session().unwrap();
    ch.exec(command).unwrap();
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    // The sink's first "ready".
    ch.read_exact(&mut byte).unwrap();
    out.push(byte[0]);
    for chunk in input {
        ch.write_all(chunk).unwrap();
    }
    ch.send_eof().unwrap();
    ch.read_to_end(&mut out).unwrap();
    ch.wait_close().unwrap();
    (out, ch.exit_status().unwrap())
}

#[test]
fn hand_written_records_exercise_the_sink() {
    let server = scp_only_server(None);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let session = ssh2_password(server.port(), "alice", "secret").unwrap();

    // A file with times and a directory with a file, then the end.
    let (out, status) = raw_scp(
        &session,
        &format!("scp -r -p -t '{d}'"),
        &[
            b"T1100000000 0 1100000000 0\n",
            b"C0600 5 a.txt\nhello\0",
            b"D0711 0 sub\n",
            b"C0644 2 b\nhi\0",
            b"E\n",
        ],
    );
    assert_eq!(status, 0, "{:?}", String::from_utf8_lossy(&out));
    assert_eq!(out, vec![0u8; 8], "ready + one ack per record and per file");
    assert_eq!(fs::read(dir.path().join("a.txt")).unwrap(), b"hello");
    assert_eq!(mode(&dir.path().join("a.txt")), 0o600);
    assert_eq!(mtime(&dir.path().join("a.txt")), 1_100_000_000);
    assert_eq!(mode(&dir.path().join("sub")), 0o711);
    assert_eq!(fs::read(dir.path().join("sub/b")).unwrap(), b"hi");

    // Names that would escape the target are refused, and the run ends with status 1.
    let (out, status) = raw_scp(&session, &format!("scp -t '{d}'"), &[b"C0644 1 ../evil\nx\0"]);
    assert_eq!(status, 1);
    assert_eq!(out, b"\0\x01scp: error: unexpected filename: ../evil\n");
    assert!(!dir.path().parent().unwrap().join("evil").exists());

    // A directory without -r is a protocol error.
    let (out, status) = raw_scp(&session, &format!("scp -t '{d}'"), &[b"D0755 0 x\n"]);
    assert_eq!(status, 1);
    assert_eq!(out, b"\0\x01scp: protocol error: received directory without -r\n");

    // A source's error line is counted: status 1, nothing written.
    let (out, status) = raw_scp(&session, &format!("scp -t '{d}'"), &[b"\x01scp: oops\n"]);
    assert_eq!((out, status), (b"\0".to_vec(), 1));

    // A file that cannot be created is an error for that file; the run goes on.
    let (out, status) = raw_scp(
        &session,
        &format!("scp -r -t '{d}'"),
        &[b"C0644 2 sub\n", b"C0644 2 c\nok\0"],
    );
    assert_eq!(status, 1);
    assert_eq!(
        String::from_utf8_lossy(&out),
        format!("\0\x01scp: {d}/sub: Is a directory\n\0\0")
    );
    assert_eq!(fs::read(dir.path().join("c")).unwrap(), b"ok");
}

#[test]
fn source_sends_records_in_order_with_times() {
    let server = scp_only_server(None);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("t");
    fs::create_dir(&root).unwrap();
    fs::write(root.join("f"), "abc").unwrap();
    fs::set_permissions(root.join("f"), fs::Permissions::from_mode(0o640)).unwrap();
    set_mtime(&root.join("f"), 1_300_000_000);
    fs::set_permissions(&root, fs::Permissions::from_mode(0o750)).unwrap();
    let session = ssh2_password(server.port(), "alice", "secret").unwrap();
    let mut ch = session.channel_session().unwrap();
    // A trailing slash is stripped from the name, as OpenSSH does.
    ch.exec(&format!("scp -r -f {}/", root.display())).unwrap();
    // Acknowledge everything: ready, then one \0 per record or file.
    ch.write_all(&[0u8; 8]).unwrap();
    ch.send_eof().unwrap();
    let mut out = Vec::new();
    ch.read_to_end(&mut out).unwrap();
    ch.wait_close().unwrap();
    assert_eq!(ch.exit_status().unwrap(), 0);
    let text = String::from_utf8_lossy(&out).into_owned();
    let expected_tail = "C0640 3 f\nabc\0E\n";
    assert!(text.starts_with("D0750 0 t\n"), "{text:?}");
    assert!(text.ends_with(expected_tail), "{text:?}");

    // With -p, T records come first.
    let mut ch = session.channel_session().unwrap();
    ch.exec(&format!("scp -p -f '{}'", root.join("f").display())).unwrap();
    ch.write_all(&[0u8; 4]).unwrap();
    ch.send_eof().unwrap();
    let mut out = Vec::new();
    ch.read_to_end(&mut out).unwrap();
    ch.wait_close().unwrap();
    assert_eq!(ch.exit_status().unwrap(), 0);
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(text.starts_with("T1300000000 0 "), "{text:?}");
    assert!(text.ends_with(" 0\nC0640 3 f\nabc\0"), "{text:?}");

    // A missing source is an error line, then the next source is still sent; status 1.
    let mut ch = session.channel_session().unwrap();
    ch.exec(&format!(
        "scp -f {}/nope {}",
        dir.path().display(),
        root.join("f").display()
    ))
    .unwrap();
    ch.write_all(&[0u8; 3]).unwrap();
    ch.send_eof().unwrap();
    let mut out = Vec::new();
    ch.read_to_end(&mut out).unwrap();
    ch.wait_close().unwrap();
    assert_eq!(ch.exit_status().unwrap(), 1);
    let text = String::from_utf8_lossy(&out).into_owned();
    assert_eq!(
        text,
        format!(
            "\x01scp: {}/nope: No such file or directory\nC0640 3 f\nabc\0",
            dir.path().display()
        )
    );
}

#[test]
fn command_lines_that_need_a_shell_still_go_to_the_shell() {
    let server = scp_only_server(None);
    let session = ssh2_password(server.port(), "alice", "secret").unwrap();
    // Served by the shell, which does not exist here: the server's spawn error, status 127.
    let r = ssh2_exec(&session, "scp -f /tmp/*.txt", b"").unwrap();
    assert_eq!(r.status, 127, "{r:?}");
    let r = ssh2_exec(&session, "echo hi", b"").unwrap();
    assert_eq!(r.status, 127, "{r:?}");
}
