//! What resolution needs from the local machine, gathered in one value so
//! that tests (and the `ssh -G` oracle) never depend on the real `~`.

use std::collections::BTreeMap;
use std::ffi::{CStr, OsString};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use super::ConfigError;

/// Which file to read, and how strictly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFile {
    /// The file's path.
    pub path: PathBuf,
    /// A missing file is an error (`ssh -F FILE`) rather than skipped.
    pub required: bool,
    /// Refuse the file when someone other than its owner or root may write
    /// it, as OpenSSH does for `~/.ssh/config` and included files.
    pub check_permissions: bool,
    /// A user file: relative `Include`s live in `~/.ssh` and may start with
    /// `~`; in a system file they live in `/etc/ssh`.
    pub user: bool,
}

impl ConfigFile {
    /// An explicitly chosen file, like `ssh -F FILE`: must exist, read as a
    /// user configuration.
    pub fn explicit(path: impl Into<PathBuf>) -> Self {
        ConfigFile {
            path: path.into(),
            required: true,
            check_permissions: false,
            user: true,
        }
    }

    /// The user's `~/.ssh/config`: optional, permissions checked.
    pub fn user_default(path: impl Into<PathBuf>) -> Self {
        ConfigFile {
            path: path.into(),
            required: false,
            check_permissions: true,
            user: true,
        }
    }

    /// The system-wide `/etc/ssh/ssh_config`: optional.
    pub fn system(path: impl Into<PathBuf>) -> Self {
        ConfigFile {
            path: path.into(),
            required: false,
            check_permissions: false,
            user: false,
        }
    }
}

/// The local facts resolution depends on: home, user, host name, the files
/// to read, and the environment variables `${VAR}` may name.
#[derive(Debug, Clone)]
pub struct ResolveEnv {
    /// The local home directory: `~` and `%d`.
    pub home: PathBuf,
    /// The local user name: `%u`, `Match localuser`, and the default remote user.
    pub local_user: String,
    /// The local uid: `%i`.
    pub uid: u32,
    /// The local host name as `gethostname` gives it: `%l`; `%L` is its
    /// first label.
    pub local_host: String,
    /// The files read in order (OpenSSH: the user file, then the system file;
    /// with `-F` only that file). The first obtained value wins.
    pub files: Vec<ConfigFile>,
    /// The shell `Match exec` runs its command with (`$SHELL`, else `/bin/sh`).
    pub shell: PathBuf,
    /// Environment variables for `${VAR}` expansion.
    pub vars: BTreeMap<String, String>,
    /// Directory of relative `Include`s in system files.
    pub system_dir: PathBuf,
}

impl ResolveEnv {
    /// The real environment: `$HOME` (else the passwd entry), the passwd user
    /// name, `gethostname`, `~/.ssh/config` then `/etc/ssh/ssh_config`.
    pub fn from_system() -> Result<Self, ConfigError> {
        // SAFETY: getuid cannot fail and has no preconditions.
        let uid = unsafe { libc::getuid() };
        let passwd = passwd_entry(uid);
        let home = match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            Some(home) => PathBuf::from(home),
            None => match &passwd {
                Some((_, dir)) => dir.clone(),
                None => {
                    return Err(ConfigError::Environment(
                        "no $HOME and no passwd entry for the local user".into(),
                    ))
                }
            },
        };
        let local_user = match passwd {
            Some((name, _)) => name,
            None => std::env::var("USER")
                .map_err(|_| ConfigError::Environment(format!("no passwd entry for uid {uid} and no $USER")))?,
        };
        let shell = std::env::var_os("SHELL")
            .filter(|s| !s.is_empty())
            .map_or_else(|| "/bin/sh".into(), PathBuf::from);
        let files = vec![
            ConfigFile::user_default(home.join(".ssh/config")),
            ConfigFile::system("/etc/ssh/ssh_config"),
        ];
        Ok(ResolveEnv {
            home,
            local_user,
            uid,
            local_host: local_hostname()?,
            files,
            shell,
            vars: std::env::vars().collect(),
            system_dir: "/etc/ssh".into(),
        })
    }

    /// The same environment reading only `file`, like `ssh -F FILE`
    /// (`None`: no configuration at all, like `ssh -F none`).
    pub fn with_only_file(mut self, file: Option<ConfigFile>) -> Self {
        self.files = file.into_iter().collect();
        self
    }
}

/// The passwd entry's (name, home) for `uid`.
fn passwd_entry(uid: libc::uid_t) -> Option<(String, PathBuf)> {
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: all-zero is a valid `passwd` (null pointers, zero ids).
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: the pointers are valid for the call; `buf` outlives the
        // strings read from `pwd` below.
        let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr().cast(), buf.len(), &mut result) };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 || result.is_null() || pwd.pw_name.is_null() || pwd.pw_dir.is_null() {
            return None;
        }
        // SAFETY: getpwuid_r succeeded, so both are NUL-terminated strings in `buf`.
        let (name, dir) = unsafe { (CStr::from_ptr(pwd.pw_name), CStr::from_ptr(pwd.pw_dir)) };
        let name = name.to_str().ok()?.to_string();
        return Some((name, PathBuf::from(OsString::from_vec(dir.to_bytes().to_vec()))));
    }
}

/// `gethostname`, as OpenSSH's `%l` uses it.
fn local_hostname() -> Result<String, ConfigError> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; we NUL-terminate below.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    if rc != 0 {
        return Err(ConfigError::Environment(format!(
            "gethostname: {}",
            std::io::Error::last_os_error()
        )));
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len() - 1);
    String::from_utf8(buf[..end].to_vec()).map_err(|_| ConfigError::Environment("local host name is not UTF-8".into()))
}

/// Home directory of another user, for `~user/` paths.
pub(crate) fn home_of(user: &str) -> Option<PathBuf> {
    let name = std::ffi::CString::new(user).ok()?;
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: as in `passwd_entry`.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: as in `passwd_entry`; `name` is NUL-terminated.
        let rc = unsafe { libc::getpwnam_r(name.as_ptr(), &mut pwd, buf.as_mut_ptr().cast(), buf.len(), &mut result) };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 || result.is_null() || pwd.pw_dir.is_null() {
            return None;
        }
        // SAFETY: getpwnam_r succeeded: a NUL-terminated string in `buf`.
        let dir = unsafe { CStr::from_ptr(pwd.pw_dir) };
        return Some(PathBuf::from(OsString::from_vec(dir.to_bytes().to_vec())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_env_has_a_user_and_host() {
        let env = ResolveEnv::from_system().unwrap();
        assert!(!env.local_user.is_empty());
        assert!(!env.local_host.is_empty());
        assert_eq!(env.files.len(), 2);
        assert_eq!(home_of(&env.local_user).is_some(), passwd_entry(env.uid).is_some());
    }
}
