//! The bench's options: command-line flags after `--`, or environment variables.
//!
//! Invariant: an unknown argument is ignored (cargo passes `--bench`), and a flag given on
//! the command line wins over its environment variable.

/// What the options ask for.
pub struct Opts {
    /// `--quick` / `FANOUT_QUICK`: the reduced set of cases and rounds.
    pub quick: bool,
    /// `--cases=` / `FANOUT_CASES`: only these case ids (`prefix*` for every id with the
    /// prefix); `None`: every case.
    pub cases: Option<Vec<String>>,
    /// `--rounds=` / `FANOUT_ROUNDS`: counted rounds per case (`None`: each case's own).
    pub rounds: Option<usize>,
    /// False with `FANOUT_NO_INSTALL`: missing peers are reported, not installed.
    pub install: bool,
}

/// Whether the environment variable `name` is set to something other than "" or "0".
pub fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Reads the options from the environment, then from `args` (the arguments after the
/// executable's name).
pub fn parse_opts(args: &[String]) -> Opts {
    let mut o = Opts {
        quick: env_flag("FANOUT_QUICK"),
        cases: std::env::var("FANOUT_CASES")
            .ok()
            .map(|s| s.split(',').map(str::to_string).collect()),
        rounds: std::env::var("FANOUT_ROUNDS").ok().and_then(|s| s.parse().ok()),
        install: !env_flag("FANOUT_NO_INSTALL"),
    };
    for a in args {
        if a == "--quick" {
            o.quick = true;
        } else if let Some(c) = a.strip_prefix("--cases=") {
            o.cases = Some(c.split(',').map(str::to_string).collect());
        } else if let Some(r) = a.strip_prefix("--rounds=") {
            o.rounds = r.parse().ok();
        }
        // Anything else (cargo passes `--bench`) is ignored.
    }
    o
}
