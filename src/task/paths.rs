//! Paths as actions keep them: text, because `%VAR%`s are expanded in them.
//! The API takes a local path (on this machine) as `impl Into<PathBuf>` and a
//! remote path (read by the host's shell or scp) as `impl Into<String>`.
//!
//! Invariant: a local path that was not valid UTF-8 is kept with U+FFFD in
//! place of its bad bytes, and `Action::check` refuses it at push, so such a
//! path never silently names another file.

use std::path::PathBuf;

use crate::error::{Error, ErrorKind, Result};

/// What a non-UTF-8 local path's bad bytes become.
const REPLACED: char = char::REPLACEMENT_CHARACTER;

/// A local path as text.
pub(crate) fn local(path: impl Into<PathBuf>) -> String {
    match path.into().into_os_string().into_string() {
        Ok(s) => s,
        Err(os) => os.to_string_lossy().into_owned(),
    }
}

/// Refuses a local path that [`local`] could not keep as it was.
pub(crate) fn check_local(path: &str) -> Result<()> {
    if path.contains(REPLACED) {
        return Err(Error::new(
            ErrorKind::InvalidConfig,
            format!("local path {path:?} is not valid UTF-8 (variables are expanded in paths, which needs text)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    use crate::{Action, Command, ErrorKind, Host, Output, Parallel, ScpGet, ScpPut};

    fn not_utf8() -> &'static OsStr {
        OsStr::from_bytes(b"/tmp/bad-\xff-name")
    }

    #[test]
    fn non_utf8_local_paths_are_refused_at_push() {
        let mut p = Parallel::new();
        p.add_host("a", Host::local()).unwrap();
        let actions: [Action; 3] = [
            Command::new("true").stdout(Output::file(not_utf8())).into(),
            ScpGet::new("/remote", not_utf8()).into(),
            ScpPut::many([not_utf8()], "/remote").into(),
        ];
        for action in actions {
            let e = p.push("a", action).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
        }
        assert_eq!(p.queued_tasks(), 0);
    }

    #[test]
    fn utf8_local_paths_are_kept_as_given() {
        assert_eq!(super::local(std::path::Path::new("/tmp/ü %LABEL%")), "/tmp/ü %LABEL%");
    }
}
