//! One reading pass over the configuration files, as OpenSSH's
//! `read_config_file_depth`: `Host` and `Match` switch lines on and off,
//! `Include` reads more files (sharing, then restoring, the active state),
//! everything else goes to [`directives::apply`].

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::directives;
use super::env::{ConfigFile, ResolveEnv};
use super::lexer::Line;
use super::parsed;
use super::pattern::{match_list, match_pattern, ListMatch};
use super::tokens;
use super::types::{Origin, SshConfig};
use super::ConfigError;

/// OpenSSH's `READCONF_MAX_DEPTH`.
pub(crate) const MAX_INCLUDE_DEPTH: usize = 16;

/// State of one pass.
pub(crate) struct Pass<'a> {
    pub env: &'a ResolveEnv,
    /// The name `Host` patterns and `Match host` see: the alias on the first
    /// pass, the lowercased HostName on the final one.
    pub host: String,
    /// The alias as asked (`Match originalhost`, `%n`).
    pub original: String,
    /// Whether this is the final pass (`Match final`/`canonical` true).
    pub final_pass: bool,
    /// Set when a `Match final`/`canonical` was seen: a final pass is due.
    pub want_final: bool,
    pub cfg: &'a mut SshConfig,
}

/// How a file is read.
#[derive(Clone, Copy)]
struct Flags {
    user: bool,
    check_permissions: bool,
    /// Inside an inactive block: nothing in the file may match.
    never_match: bool,
}

impl Pass<'_> {
    /// Reads one top-level file.
    pub(crate) fn read_top(&mut self, file: &ConfigFile) -> Result<(), ConfigError> {
        let lines = match parsed::lines(&file.path) {
            Ok(lines) => lines?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !file.required => return Ok(()),
            Err(source) => {
                return Err(ConfigError::Io {
                    file: file.path.clone(),
                    source,
                })
            }
        };
        let flags = Flags {
            user: file.user,
            check_permissions: file.check_permissions,
            never_match: false,
        };
        let mut active = true;
        self.read(&file.path, &lines, flags, &mut active, 0)
    }

    fn read(
        &mut self,
        path: &Path,
        lines: &[Line],
        flags: Flags,
        active: &mut bool,
        depth: usize,
    ) -> Result<(), ConfigError> {
        if flags.check_permissions {
            check_permissions(path)?;
        }
        for line in lines {
            let origin = Origin {
                file: path.to_path_buf(),
                line: line.number,
            };
            let invalid = |message: String| ConfigError::invalid(path, line.number, message);
            match line.keyword.as_str() {
                "host" => *active = self.host_line(line, flags).map_err(invalid)?,
                "match" => {
                    let matched = self.match_line(line).map_err(invalid)?;
                    *active = matched && !flags.never_match;
                }
                "include" => self.include(line, &origin, flags, active, depth)?,
                _ => directives::apply(self.cfg, line, *active, &origin).map_err(invalid)?,
            }
        }
        Ok(())
    }

    /// `Host pattern...`: active if one pattern matches and no negated one does.
    fn host_line(&self, line: &Line, flags: Flags) -> Result<bool, String> {
        let mut active = false;
        for arg in &line.args {
            if arg.is_empty() {
                return Err("Host: empty pattern".into());
            }
            if flags.never_match {
                return Ok(false);
            }
            let (negated, pattern) = match arg.strip_prefix('!') {
                Some(p) => (true, p),
                None => (false, arg.as_str()),
            };
            if match_pattern(&self.host, pattern) {
                if negated {
                    log::debug!("Host block skipped: negated match for {pattern}");
                    return Ok(false);
                }
                active = true;
            }
        }
        Ok(active)
    }

    /// `Match criteria...`; every criterion must hold (syntax is checked
    /// for all, `exec` only runs while the others still hold).
    fn match_line(&mut self, line: &Line) -> Result<bool, String> {
        if line.args.is_empty() {
            return Err("one or more attributes required for Match".into());
        }
        let host = match &self.cfg.hostname {
            Some(name) => tokens::expand(name, &[('h', &self.host)], None)?,
            None => self.host.clone(),
        };
        let mut result = true;
        let mut attributes = 0;
        let mut args = line.args.iter();
        while let Some(attr) = args.next() {
            let (negate, name) = match attr.strip_prefix('!') {
                Some(n) => (true, n),
                None => (false, attr.as_str()),
            };
            let name = name.to_ascii_lowercase();
            let matched = match name.as_str() {
                "canonical" | "final" => {
                    if name == "final" {
                        self.want_final = true;
                    }
                    self.final_pass
                }
                "all" => {
                    attributes += 1;
                    if attributes > 1 || args.len() > 0 {
                        return Err("'all' cannot be combined with other Match attributes".into());
                    }
                    true
                }
                _ => {
                    attributes += 1;
                    let arg = args
                        .next()
                        .filter(|a| !a.is_empty())
                        .ok_or(format!("missing Match criteria for {name}"))?;
                    match name.as_str() {
                        "host" => match_list(&host.to_lowercase(), arg, true) == ListMatch::Yes,
                        "originalhost" => match_list(&self.original.to_lowercase(), arg, true) == ListMatch::Yes,
                        "user" => {
                            let user = self.cfg.user.as_deref().unwrap_or(&self.env.local_user);
                            match_list(user, arg, false) == ListMatch::Yes
                        }
                        "localuser" => match_list(&self.env.local_user, arg, false) == ListMatch::Yes,
                        "exec" => {
                            self.cfg.ran_exec |= result;
                            result && self.exec(arg, &host)?
                        }
                        _ => return Err(format!("unsupported Match attribute {name}")),
                    }
                }
            };
            if matched == negate {
                result = false;
            }
        }
        Ok(result)
    }

    /// `Match exec`: the command, tokens expanded, through `$SHELL -c`; true
    /// on exit status 0.
    fn exec(&self, command: &str, host: &str) -> Result<bool, String> {
        let env = self.env;
        let port = self.cfg.port.unwrap_or(22).to_string();
        let user = self.cfg.user.as_deref().unwrap_or(&env.local_user);
        let home = env.home.to_string_lossy();
        let short = env.local_host.split('.').next().unwrap_or_default();
        let uid = env.uid.to_string();
        let hash = tokens::connection_hash(&env.local_host, host, &port, user);
        let table = [
            ('C', hash.as_str()),
            ('L', short),
            ('d', home.as_ref()),
            ('h', host),
            ('i', uid.as_str()),
            ('l', env.local_host.as_str()),
            ('n', self.original.as_str()),
            ('p', port.as_str()),
            ('r', user),
            ('u', env.local_user.as_str()),
        ];
        let command = tokens::expand(command, &table, None)?;
        let status = Command::new(&env.shell)
            .arg("-c")
            .arg(&command)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("match exec '{command}': {e}"))?;
        match status.code() {
            Some(code) => Ok(code == 0),
            None => Err(format!("match exec '{command}' exited abnormally")),
        }
    }

    /// `Include path...`: globs, relative to `~/.ssh` (user files) or
    /// `/etc/ssh`; an include in an inactive block is read but cannot match.
    fn include(
        &mut self,
        line: &Line,
        origin: &Origin,
        flags: Flags,
        active: &mut bool,
        depth: usize,
    ) -> Result<(), ConfigError> {
        let path = &origin.file;
        let invalid = |message: String| ConfigError::invalid(path, line.number, message);
        for arg in &line.args {
            if arg.is_empty() {
                return Err(invalid("Include: empty argument".into()));
            }
            if arg.starts_with('~') && !flags.user {
                return Err(invalid(format!("bad include path {arg}")));
            }
            let pattern = if arg.starts_with('/') {
                arg.clone()
            } else if arg.starts_with('~') {
                tokens::tilde(arg, &self.env.home).map_err(invalid)?
            } else if flags.user {
                format!("{}/.ssh/{arg}", self.env.home.display())
            } else {
                format!("{}/{arg}", self.env.system_dir.display())
            };
            let files = glob(&pattern);
            if files.is_empty() {
                log::debug!("{origin}: include {pattern} matched no files");
                continue;
            }
            if depth + 1 > MAX_INCLUDE_DEPTH {
                return Err(ConfigError::IncludeDepth {
                    file: path.clone(),
                    line: line.number,
                });
            }
            let outer = *active;
            for file in files {
                let lines = match parsed::lines(&file) {
                    Ok(lines) => lines?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(invalid(format!("can't open included file {}: {e}", file.display()))),
                };
                let inner = Flags {
                    user: flags.user,
                    check_permissions: true,
                    never_match: flags.never_match || !outer,
                };
                self.read(&file, &lines, inner, active, depth + 1)?;
                // A Match inside the included file must not change ours.
                *active = outer;
            }
        }
        Ok(())
    }
}

/// OpenSSH refuses files that others than their owner (or root) can write.
fn check_permissions(path: &Path) -> Result<(), ConfigError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|source| ConfigError::Io {
        file: path.to_path_buf(),
        source,
    })?;
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    if (meta.uid() != 0 && meta.uid() != uid) || meta.mode() & 0o022 != 0 {
        return Err(ConfigError::BadPermissions {
            file: path.to_path_buf(),
        });
    }
    Ok(())
}

/// Expands `*` and `?` in each path component, sorted like glob(3); hidden
/// entries match only a pattern starting with a dot. A pattern without
/// wildcards yields itself if it exists.
fn glob(pattern: &str) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::from("/")];
    for component in pattern.split('/').filter(|c| !c.is_empty()) {
        let mut next = Vec::new();
        for dir in &found {
            if !component.contains(['*', '?']) {
                let candidate = dir.join(component);
                if candidate.symlink_metadata().is_ok() {
                    next.push(candidate);
                }
                continue;
            }
            let Ok(entries) = std::fs::read_dir(dir) else { continue };
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| (!n.starts_with('.') || component.starts_with('.')) && match_pattern(n, component))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|n| dir.join(n)));
        }
        found = next;
    }
    found
}
