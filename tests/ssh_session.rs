//! Work that borrows a label's SSH session, on both servers: `Parsub` with a
//! blocking session handle (exec, stdin, scp, sftp; the session goes back to
//! the event loop afterwards) and `RsyncPut` / `RsyncGet` carried over the
//! label's existing connection.

use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ssh_parallel::{Command, ErrorKind, Parallel, Parsub, RsyncGet, RsyncPut};

#[path = "common/servers.rs"]
mod servers;
use servers::Server;

on_both!(
    parsub_runs_commands_with_stdin_on_the_labels_own_connection,
    parsub_scp_and_sftp_move_files_on_the_session,
    parsub_failures_and_panics_are_local_errors_and_the_session_survives,
    parsub_timeout_abandons_it_and_the_label_reconnects,
    rsync_put_and_get_trees_over_the_labels_own_session,
    rsync_passes_extra_arguments_through,
    rsync_errors_are_transfer_errors_and_the_session_stays_usable,
    rsync_timeout_stops_the_transfer_and_the_label_goes_on,
);

fn parsub_runs_commands_with_stdin_on_the_labels_own_connection(server: &Server) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut pssh = Parallel::new();
    for l in ["a", "b", "c"] {
        pssh.add_host(l, server.host()).unwrap();
    }
    pssh.all(Command::new("echo before")).unwrap();
    let s = seen.clone();
    pssh.all(Parsub::new(move |label, session| {
        assert!(session.is_connected());
        assert!(session.ssh2().is_some(), "an SSH host lends its libssh2 session");
        // sudo -S style: the secret goes in on stdin, never on the command line.
        let out = session.exec_with_stdin(
            "read pw; [ \"$pw\" = secret ] && echo granted for $pw; echo oops >&2; exit 3",
            b"secret\n",
        )?;
        let big = session.exec("head -c 3000000 /dev/zero | tr '\\0' x; head -c 100000 /dev/zero >&2")?;
        s.lock().unwrap().push((
            label.to_owned(),
            out.stdout_str(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            out.exit_code,
            big.stdout.len(),
            big.stderr.len(),
        ));
        Ok(())
    }))
    .unwrap();
    pssh.all(Command::new("echo after")).unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen.len(), 3);
    for (i, l) in ["a", "b", "c"].iter().enumerate() {
        assert_eq!(seen[i].0, *l);
        assert_eq!(seen[i].1, "granted for secret\n");
        assert_eq!(seen[i].2, "oops\n");
        assert_eq!(seen[i].3, Some(3));
        assert_eq!(seen[i].4, 3_000_000, "stdout drained in full");
        assert_eq!(seen[i].5, 100_000, "stderr drained in full");
        let tasks = report.label(l).unwrap().tasks();
        assert_eq!(
            tasks[2].stdout_str(),
            "after\n",
            "the session went back to the event loop"
        );
    }
    // One login per label: the parsub used the label's connection, and the
    // command after it ran on the same one.
    assert_eq!(server.logins(), 3);
}

fn parsub_scp_and_sftp_move_files_on_the_session(server: &Server) {
    if !testbed::prereq::sftp_server() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.bin");
    let data: Vec<u8> = (0..1_500_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(&src, &data).unwrap();
    fs::set_permissions(&src, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let base = dir.path().to_owned();
    let mut pssh = Parallel::new();
    pssh.add_host("x", server.host()).unwrap();
    pssh.add_host("y", server.host()).unwrap();
    pssh.all(Parsub::new(move |label, session| {
        let up = base.join(format!("up-{label}"));
        session.scp_put(base.join("src.bin"), &up)?;
        let back = base.join(format!("back-{label}"));
        session.scp_get(&up, &back)?;
        let sftp = session.sftp()?;
        let mut f = sftp.create(&base.join(format!("sftp-{label}")))?;
        std::io::Write::write_all(&mut f, format!("written by {label} over sftp").as_bytes())?;
        drop(f);
        // A directory of this label's own: the other label writes to `base` meanwhile.
        let own = base.join(format!("own-{label}"));
        sftp.mkdir(&own, 0o755)?;
        for i in 0..3 {
            drop(sftp.create(&own.join(format!("f{i}")))?);
        }
        let listed = sftp.readdir(&own)?.len();
        drop(sftp);
        if listed != 3 {
            return Err(format!("sftp lists {listed} files, not 3").into());
        }
        let out = session.exec(&format!("ls {} | wc -l", shlex::try_quote(&own.display().to_string())?))?;
        if out.stdout_str().trim().parse::<usize>()? != listed {
            return Err(format!("ls and sftp disagree: {} vs {listed}", out.stdout_str()).into());
        }
        Ok(())
    }))
    .unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    for l in ["x", "y"] {
        let up = dir.path().join(format!("up-{l}"));
        assert_eq!(fs::read(&up).unwrap(), data, "scp_put content");
        assert_eq!(mode(&up), 0o640, "scp_put keeps the mode");
        assert_eq!(
            fs::read(dir.path().join(format!("back-{l}"))).unwrap(),
            data,
            "scp_get content"
        );
        assert_eq!(
            fs::read_to_string(dir.path().join(format!("sftp-{l}"))).unwrap(),
            format!("written by {l} over sftp")
        );
    }
}

fn parsub_failures_and_panics_are_local_errors_and_the_session_survives(server: &Server) {
    let mut pssh = Parallel::new();
    pssh.add_host("err", server.host()).unwrap();
    pssh.add_host("panic", server.host()).unwrap();
    pssh.add_host("scp", server.host()).unwrap();
    let ignore = ssh_parallel::OnError::Ignore;
    pssh.push(
        "err",
        Parsub::new(|_, _| Err("the closure said no".into())).on_error(ignore.clone()),
    )
    .unwrap();
    pssh.push(
        "panic",
        Parsub::new(|_, _| panic!("boom in parsub")).on_error(ignore.clone()),
    )
    .unwrap();
    pssh.push(
        "scp",
        Parsub::new(|_, s| {
            s.scp_get("/nonexistent/dir/file", "/tmp/never")?;
            Ok(())
        })
        .on_error(ignore),
    )
    .unwrap();
    pssh.all(Command::new("echo still %LABEL%")).unwrap();
    let report = pssh.run();
    let first = |l: &str| report.label(l).unwrap().tasks()[0].error().cloned().expect("an error");
    let e = first("err");
    assert_eq!(e.kind(), ErrorKind::Local);
    assert!(e.to_string().contains("the closure said no"), "{e}");
    let e = first("panic");
    assert_eq!(e.kind(), ErrorKind::Local);
    assert!(e.to_string().contains("boom in parsub"), "{e}");
    let e = first("scp");
    assert_eq!(e.kind(), ErrorKind::Local, "a parsub's own error is Local");
    assert!(e.to_string().contains("/nonexistent/dir/file"), "names the path: {e}");
    for l in ["err", "panic", "scp"] {
        assert_eq!(report.label(l).unwrap().tasks()[1].stdout_str(), format!("still {l}\n"));
    }
    assert_eq!(server.logins(), 3, "no reconnection was needed");
}

fn parsub_timeout_abandons_it_and_the_label_reconnects(server: &Server) {
    let mut pssh = Parallel::new();
    pssh.add_host("slow", server.host().reconnections(1)).unwrap();
    pssh.push(
        "slow",
        Parsub::new(|_, s| {
            s.exec("sleep 30")?;
            Ok(())
        })
        .timeout(Duration::from_millis(500))
        .on_error(ssh_parallel::OnError::Ignore),
    )
    .unwrap();
    pssh.push("slow", Command::new("echo alive")).unwrap();
    let t0 = Instant::now();
    let report = pssh.run();
    // No-hang bound: the abandoned parsub's blocking exec is interrupted by
    // shutting its socket down, far sooner than `sleep 30`.
    assert!(t0.elapsed() < Duration::from_secs(20), "took {:?}", t0.elapsed());
    let tasks = report.label("slow").unwrap().tasks();
    assert_eq!(tasks[0].error().map(|e| e.kind()), Some(ErrorKind::Timeout), "{report}");
    assert_eq!(tasks[1].stdout_str(), "alive\n", "{report}");
    assert_eq!(server.logins(), 2, "the abandoned session is replaced by a new login");
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// A tree with nested directories, several sizes and modes.
fn make_tree(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for (i, rel) in ["a.txt", "sub/b.bin", "sub/deeper/c.sh", "sub/deeper/empty", "z/big.bin"]
        .iter()
        .enumerate()
    {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        let len = if rel.ends_with("big.bin") { 2_500_000 } else { i * 1000 };
        let data: Vec<u8> = (0..len).map(|j| ((j * 31 + i) % 256) as u8).collect();
        fs::write(&p, data).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode([0o644, 0o600, 0o755, 0o640, 0o444][i])).unwrap();
    }
}

/// relative path -> (sha256, mode) of every file under `root`.
fn digest(root: &Path) -> std::collections::BTreeMap<String, (String, u32)> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let sum = std::process::Command::new("sha256sum").arg(&p).output().unwrap();
                let sum = String::from_utf8_lossy(&sum.stdout)
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .to_owned();
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, (sum, mode(&p)));
            }
        }
    }
    out
}

fn rsync_put_and_get_trees_over_the_labels_own_session(server: &Server) {
    if !testbed::prereq::program("rsync", "rsync") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src);
    let d = dir.path().display().to_string();
    let mut pssh = Parallel::new();
    for l in ["r1", "r2"] {
        pssh.add_host(l, server.host()).unwrap();
    }
    pssh.all(Command::new("echo first")).unwrap();
    pssh.all(RsyncPut::new(format!("{d}/src/"), format!("{d}/remote-%LABEL%/")))
        .unwrap();
    pssh.all(RsyncGet::new(
        format!("{d}/remote-%LABEL%/"),
        format!("{d}/back-%LABEL%"),
    ))
    .unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    let want = digest(&src);
    assert_eq!(want.len(), 5);
    for l in ["r1", "r2"] {
        assert_eq!(digest(&dir.path().join(format!("remote-{l}"))), want, "put {l}");
        assert_eq!(digest(&dir.path().join(format!("back-{l}"))), want, "get {l}");
    }
    // No second login: both rsyncs ran on the connection of the first command.
    assert_eq!(server.logins(), 2);
    if let Server::Embedded(s) = server {
        let rsyncs = s.commands().iter().filter(|c| c.starts_with("rsync --server")).count();
        assert_eq!(rsyncs, 4, "{:?}", s.commands());
    }
}

fn rsync_passes_extra_arguments_through(server: &Server) {
    if !testbed::prereq::program("rsync", "rsync") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src);
    fs::write(src.join("skip.tmp"), "not copied").unwrap();
    let dst = dir.path().join("dst");
    fs::create_dir_all(&dst).unwrap();
    fs::write(dst.join("stale"), "deleted by --delete").unwrap();
    let mut pssh = Parallel::new();
    pssh.add_host("r", server.host()).unwrap();
    pssh.push(
        "r",
        RsyncPut::new(format!("{}/", src.display()), format!("{}/", dst.display())).args([
            "--delete",
            "--exclude=*.tmp",
            "--stats",
        ]),
    )
    .unwrap();
    let report = pssh.run();
    assert!(report.success(), "{report}");
    assert!(!dst.join("stale").exists(), "--delete reached the remote rsync");
    assert!(!dst.join("skip.tmp").exists(), "--exclude applied");
    assert!(dst.join("sub/deeper/c.sh").exists());
    let out = report.label("r").unwrap().tasks()[0].stdout_str();
    assert!(out.contains("Number of files"), "--stats output is captured: {out}");
}

fn rsync_errors_are_transfer_errors_and_the_session_stays_usable(server: &Server) {
    if !testbed::prereq::program("rsync", "rsync") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let mut pssh = Parallel::new();
    pssh.add_host("r", server.host()).unwrap();
    pssh.push(
        "r",
        RsyncGet::new("/nonexistent/ssh-parallel/source", format!("{d}/x")).on_error(ssh_parallel::OnError::Ignore),
    )
    .unwrap();
    pssh.push(
        "r",
        RsyncPut::new(format!("{d}/missing-local"), format!("{d}/y")).on_error(ssh_parallel::OnError::Ignore),
    )
    .unwrap();
    pssh.push("r", Command::new("echo still here")).unwrap();
    let report = pssh.run();
    let tasks = report.label("r").unwrap().tasks();
    for (i, path) in [(0, "/nonexistent/ssh-parallel/source"), (1, "missing-local")] {
        let e = tasks[i].error().expect("the transfer failed");
        assert_eq!(e.kind(), ErrorKind::Transfer, "{e}");
        assert!(e.to_string().contains(path), "names the path: {e}");
    }
    assert_eq!(
        tasks[2].stdout_str(),
        "still here
"
    );
    assert_eq!(server.logins(), 1);
}

fn rsync_timeout_stops_the_transfer_and_the_label_goes_on(server: &Server) {
    if !testbed::prereq::program("rsync", "rsync") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    fs::write(&big, vec![7u8; 8_000_000]).unwrap();
    let mut pssh = Parallel::new();
    pssh.add_host("r", server.host().reconnections(1)).unwrap();
    pssh.push(
        "r",
        RsyncPut::new(big.display().to_string(), format!("{}/copy", dir.path().display()))
            .args(["--bwlimit=200"])
            .timeout(Duration::from_millis(800))
            .on_error(ssh_parallel::OnError::Ignore),
    )
    .unwrap();
    pssh.push("r", Command::new("echo after")).unwrap();
    let t0 = Instant::now();
    let report = pssh.run();
    assert!(t0.elapsed() < Duration::from_secs(30), "no hang: {:?}", t0.elapsed());
    let tasks = report.label("r").unwrap().tasks();
    assert_eq!(tasks[0].error().map(|e| e.kind()), Some(ErrorKind::Timeout), "{report}");
    assert_eq!(tasks[1].stdout_str(), "after\n");
}
