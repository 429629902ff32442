//! The exit statuses this program documents (see `--help`).

/// Every host succeeded.
pub const SUCCESS: i32 = 0;
/// Some host failed (without `-S`).
pub const FAILURE: i32 = 1;
/// A usage error: bad option, node set, `-o` directive, unknown host. Also
/// what clap exits with on its own parse errors.
pub const USAGE: i32 = 2;
/// With `-S`, a host that gave no exit status (connection or transfer error), as ssh does.
pub const NO_STATUS: i32 = 255;
/// Interrupted by Ctrl-C (128 + SIGINT).
pub const INTERRUPTED: i32 = 130;
