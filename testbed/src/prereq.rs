//! What a test needs from the machine (sshd and root, `rsync`, `sftp-server`, `scp`, ...),
//! and what happens when it is missing: the test **fails**, naming the Debian package, unless
//! skipping was asked for with `TESTBED_ALLOW_SKIP=1`.
//!
//! libtest has no "skipped" outcome: a test that returns early reads `ok`, so a silent skip
//! looks like a pass. Hence the rules:
//!
//! * by default a missing prerequisite is a failure (`scripts/test` installs everything first,
//!   as root, so it never gets there);
//! * with `TESTBED_ALLOW_SKIP=1` (and neither `CI` nor `TESTBED_REQUIRE_SSHD` set, which forbid
//!   skips) the test returns early after [`skip`] wrote `SKIPPED: <test>: <reason>` straight
//!   to the process's stderr, which libtest's output capture does not intercept, and appended
//!   the same line to the skip log ([`skip_log`]) that `scripts/test` counts at the end.
//!
//! Callers: `if !testbed::prereq::program("rsync", "rsync") { return; }`.

use std::fmt::Display;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The variable that lets a test skip on a missing prerequisite instead of failing.
pub const ALLOW_SKIP_ENV: &str = "TESTBED_ALLOW_SKIP";

/// The variable naming the skip log file (default: `test-skips.log` in cargo's target dir).
pub const SKIP_LOG_ENV: &str = "TESTBED_SKIP_LOG";

fn set(var: &str) -> bool {
    std::env::var_os(var).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Whether a test may skip on a missing prerequisite: only when `TESTBED_ALLOW_SKIP` is set,
/// and never when `CI` or `TESTBED_REQUIRE_SSHD` is (there a skip would hide a broken setup).
pub fn skip_allowed() -> bool {
    set(ALLOW_SKIP_ENV) && !set("CI") && !set("TESTBED_REQUIRE_SSHD")
}

/// Where skips are logged, one `SKIPPED: ...` line each: `$TESTBED_SKIP_LOG`, or
/// `test-skips.log` in the target dir of the running test binary (`target/debug/deps/..`).
pub fn skip_log() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(SKIP_LOG_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let exe = std::env::current_exe().ok()?;
    let deps = exe.parent()?;
    // Only a cargo layout has a meaningful place for it; elsewhere the stderr line is all.
    (deps.file_name()? == "deps").then_some(deps.parent()?.parent()?.join("test-skips.log"))
}

/// The running test as `binary::path::to::test`: libtest names each test's thread after it.
fn test_name() -> String {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|e| e.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|s| match s.rsplit_once('-') {
            // cargo appends `-<hash>` to test binaries.
            Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_owned(),
            _ => s,
        })
        .unwrap_or_default();
    let thread = std::thread::current();
    match thread.name() {
        Some(name) if name != "main" => format!("{binary}::{name}"),
        _ => binary,
    }
}

/// A prerequisite of the running test is missing (`why` says which, and which package has it).
///
/// Panics, failing the test, unless [`skip_allowed`]; then reports the skip loudly (stderr,
/// past libtest's capture, and the [`skip_log`]) and returns: the caller returns next.
pub fn skip(why: impl Display) {
    assert!(
        skip_allowed(),
        "missing prerequisite: {why}\n\
         (`scripts/test` installs what the tests need, as root; \
         set {ALLOW_SKIP_ENV}=1 to skip such tests instead, each skip printed and counted)"
    );
    let line = format!("SKIPPED: {}: {why}\n", test_name());
    // Not eprintln!: libtest captures that and shows it only for failing tests.
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Some(log) = skip_log() {
        // One O_APPEND write per line, so that parallel tests do not interleave.
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(log) {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// Whether `result` (of a check such as `OpenSshServer::check_available`) lets the test go on:
/// `Err(Unavailable)` is a [`skip`] (or a failure), any other error a failure.
pub fn available(result: crate::Result<()>) -> bool {
    match result {
        Ok(()) => true,
        Err(crate::Error::Unavailable(why)) => {
            skip(why);
            false
        }
        Err(e) => panic!("{e}"),
    }
}

/// Whether sshd test servers can run here (installed, and running as root); see [`available`].
pub fn sshd() -> bool {
    available(crate::OpenSshServer::check_available())
}

/// Where `program` is on `PATH`, if it is.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether `program` is on `PATH`; when it is not, a [`skip`] naming the Debian `package`.
pub fn program(program: &str, package: &str) -> bool {
    if find_program(program).is_some() {
        return true;
    }
    skip(format!("`{program}` not found on PATH (install the {package} package)"));
    false
}

/// OpenSSH's `sftp-server`, which serves the `sftp` subsystem (Debian's path first).
pub fn sftp_server_path() -> Option<PathBuf> {
    [
        "/usr/lib/openssh/sftp-server",
        "/usr/libexec/openssh/sftp-server",
        "/usr/libexec/sftp-server",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| is_executable(p))
}

/// Whether `sftp-server` is installed; when it is not, a [`skip`] naming its package.
pub fn sftp_server() -> bool {
    if sftp_server_path().is_some() {
        return true;
    }
    skip("OpenSSH's sftp-server not found (install the openssh-sftp-server package, which openssh-server pulls in)");
    false
}
