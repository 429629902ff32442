//! `-o Key=Value` ssh_config directives, and the `Host` each target gets from
//! the login options.
//!
//! `-o` lines are handed to the library's ssh_config resolver rather than
//! interpreted here, so every directive it honours works with OpenSSH's
//! meaning: they are written to a private file read before `~/.ssh/config`
//! and `/etc/ssh/ssh_config`, and the first obtained value wins, as with
//! `ssh -o`. Each line is first resolved alone so that an error names the
//! option as typed rather than the private file.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ssh_parallel::ssh_config::{resolve, ConfigFile, Query};
use ssh_parallel::{ConfigError, Host, ResolveEnv};

use crate::args::Common;
use crate::hosts::Target;

/// Keywords that make sense only in a file: `ssh -o` refuses them too.
const FILE_ONLY: [&str; 3] = ["host", "match", "include"];

/// The `-o` directives, validated, in a private file the resolver reads first;
/// the file is removed when this value is dropped.
#[derive(Debug)]
pub struct SshOptions {
    file: Option<PathBuf>,
}

impl SshOptions {
    /// Validates `directives` (`Key=Value` or `Key Value`) and writes them,
    /// in order, to a private file. An error names the option as typed.
    pub fn parse(directives: &[String]) -> Result<SshOptions, String> {
        if directives.is_empty() {
            return Ok(SshOptions { file: None });
        }
        let env = ResolveEnv::from_system().map_err(|e| e.to_string())?;
        let mut text = String::new();
        for d in directives {
            check_shape(d)?;
            text.push_str(d.trim());
            text.push('\n');
        }
        for d in directives {
            let one = SshOptions::write(&format!("{}\n", d.trim()))?;
            let Some(path) = one.file.as_ref() else { continue };
            let alone = env.clone().with_only_file(Some(ConfigFile::explicit(path)));
            resolve(&alone, &Query::new("ssh-parallel-check")).map_err(|e| explain(d, path, &e))?;
        }
        SshOptions::write(&text)
    }

    /// The resolver environment: the `-o` file, then the usual files.
    pub fn resolve_env(&self) -> Result<Option<ResolveEnv>, String> {
        let Some(path) = &self.file else { return Ok(None) };
        let mut env = ResolveEnv::from_system().map_err(|e| e.to_string())?;
        env.files.insert(0, ConfigFile::explicit(path));
        Ok(Some(env))
    }

    /// A private file (mode 0600, created afresh so nobody can plant one)
    /// holding `text`.
    fn write(text: &str) -> Result<SshOptions, String> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let mut last = None;
        for attempt in 0..16u32 {
            let name = format!("ssh-parallel-o-{}-{nanos}-{attempt}", std::process::id());
            let path = std::env::temp_dir().join(name);
            match OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
                Ok(mut f) => {
                    // Owned from here on, so a failed write still removes it.
                    let owned = SshOptions { file: Some(path) };
                    f.write_all(text.as_bytes())
                        .map_err(|e| format!("cannot write the -o options to a temporary file: {e}"))?;
                    return Ok(owned);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(format!("cannot create a temporary file for the -o options: {e}")),
            }
        }
        let e = last.map_or_else(String::new, |e| e.to_string());
        Err(format!("cannot create a temporary file for the -o options: {e}"))
    }

    /// The `Host` for `target`: the `user@` of the node set first, then `-l`;
    /// the `-i` keys and `-t`. These win over every ssh_config value.
    pub fn host_for(&self, target: &Target, common: &Common) -> Result<Host, String> {
        let mut h = Host::parse(&target.label).map_err(|e| e.to_string())?;
        // User commands and paths are passed through as typed: `date +%s%N`
        // must not be read as a `%VAR%` reference.
        h = h.expand_vars(false);
        if let Some(u) = target.user.as_ref().or(common.user.as_ref()) {
            h = h.user(u.clone());
        }
        for key in &common.identity {
            h = h.key_file(expand_tilde(key));
        }
        if let Some(t) = common.connect_timeout.map(secs).transpose()? {
            h = h.connect_timeout(t);
        }
        Ok(h)
    }
}

impl Drop for SshOptions {
    fn drop(&mut self) {
        if let Some(path) = &self.file {
            // Nothing useful to do if it is already gone.
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A directive must be one line with a keyword and a value, and not one of
/// the keywords that only mean something in a file.
fn check_shape(d: &str) -> Result<(), String> {
    let t = d.trim();
    if t.contains(['\n', '\r']) {
        return Err(format!("-o {d:?}: a directive is one line"));
    }
    let key_end = t.find(|c: char| c.is_whitespace() || c == '=').unwrap_or(t.len());
    let (key, rest) = t.split_at(key_end);
    let value = rest.trim_start().strip_prefix('=').unwrap_or(rest).trim();
    if key.is_empty() || value.is_empty() || key.starts_with('#') {
        return Err(format!("-o {d:?}: expected Key=Value"));
    }
    if FILE_ONLY.contains(&key.to_ascii_lowercase().as_str()) {
        return Err(format!("-o {d:?}: {key} is not supported as a command-line option"));
    }
    Ok(())
}

/// The resolver's error for the one-line file of `d`, told about `-o d`.
fn explain(d: &str, path: &std::path::Path, e: &ConfigError) -> String {
    let message = match e {
        ConfigError::Invalid { message, .. } => message.clone(),
        other => other.to_string().replace(&path.display().to_string(), "-o"),
    };
    format!("-o {d:?}: {message}")
}

/// A timeout option's seconds as a `Duration`; zero, negative or absurd
/// values are refused.
pub fn secs(s: f64) -> Result<Duration, String> {
    if s.is_finite() && s > 0.0 && s < 1e9 {
        Ok(Duration::from_secs_f64(s))
    } else {
        Err(format!("timeout {s} must be a number of seconds above 0"))
    }
}

fn expand_tilde(p: &std::path::Path) -> PathBuf {
    match (p.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => p.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert!(check_shape("Port=2222").is_ok());
        assert!(check_shape("StrictHostKeyChecking no").is_ok());
        assert!(check_shape(" Port = 1 ").is_ok());
        assert!(check_shape("Port").is_err());
        assert!(check_shape("Port=").is_err());
        assert!(check_shape("=1").is_err());
        assert!(check_shape("Port=1\nUser=x").is_err());
        let e = check_shape("Host=x").unwrap_err();
        assert!(e.contains("not supported as a command-line option"), "{e}");
    }
}
