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
