//! The command-line rows: the `ssh-parallel` binary running `-w h[1-N] -- true`, against
//! the same run through the library (our `__client`: what the command line costs on top),
//! and against the command-line tools people type instead: pdsh, pssh, clush
//! (ClusterShell) and bssh. Its case (`cli-200`), the command lines of the tools this
//! module adds (the binary, clush, bssh), and the report's section that puts the binary,
//! not the library, first.
//!
//! Invariants: every tool reaches the same sshd through the same ssh_config (`Host h*`;
//! the binary reads it as `~/.ssh/config` of a home made for it, bssh with `-F`, the
//! process-per-host tools hand it to `ssh -F`), with the same fan-out (every host at
//! once); a tool that is not installed is reported missing, loudly, never left out.
//!
//! May use: `cases`, `tools`, `runner`, `report`, `opts`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::cases::{Case, Tier};
use crate::opts::Opts;
use crate::report::{cases_led_by, sig};
use crate::runner::Outcome;
use crate::tools::{Target, Tool, Work};

/// The label count of the command-line case.
const N: usize = 200;

/// The command-line case: the binary, the library, then the peers.
pub fn cases(o: &Opts) -> Vec<Case> {
    vec![Case::true_once(
        o,
        format!("cli-{N}"),
        format!("command line {N} x `true` (OpenSSH)"),
        Tier::OpenSsh,
        N,
        vec![Tool::Cli, Tool::Ours, Tool::Pdsh, Tool::Pssh, Tool::Clush, Tool::Bssh],
        Duration::from_secs(300),
    )]
}

/// The release binary: `FANOUT_CLI`, else `ssh-parallel` beside the bench's own
/// `target/<profile>/deps/fanout-*`.
fn cli_path() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("FANOUT_CLI") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("no target directory above {}", exe.display()))?;
    Ok(dir.join("ssh-parallel"))
}

/// bssh: `FANOUT_BSSH`, else the first `bssh` on the PATH.
fn bssh_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FANOUT_BSSH") {
        return Some(PathBuf::from(p));
    }
    which("bssh")
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

fn executable(p: PathBuf, missing: &str) -> Result<PathBuf, String> {
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!("MISSING: {} not found: {missing}", p.display()))
    }
}

/// Where each tool of this module is, or why it cannot run.
pub fn available(tool: Tool) -> Result<PathBuf, String> {
    match tool {
        Tool::Cli => executable(
            cli_path()?,
            "build it with `cargo build --release -p ssh-parallel-cli` (or set FANOUT_CLI)",
        ),
        Tool::Clush => {
            which("clush").ok_or_else(|| "MISSING: clush not installed (Debian package `clustershell`)".to_string())
        }
        Tool::Bssh => bssh_path()
            .ok_or_else(|| {
                "MISSING: bssh not installed (`cargo install bssh --version 2.2.3 --locked`, or set FANOUT_BSSH)".into()
            })
            .and_then(|p| executable(p, "set FANOUT_BSSH to the bssh binary")),
        other => Err(format!("{} is not a tool of the command-line rows", other.name())),
    }
}

/// A version line per tool of this module, `MISSING: ...` for one that cannot run.
pub fn versions() -> Vec<String> {
    let version = |tool: Tool, arg: &str| match available(tool) {
        Ok(p) => {
            let out = Command::new(&p).arg(arg).output();
            let text = out
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_owned()
                })
                .unwrap_or_default();
            format!("{} {text} ({})", tool.name(), p.display())
        }
        Err(e) => format!("{}: {e}", tool.name()),
    };
    vec![
        version(Tool::Cli, "--version"),
        version(Tool::Clush, "--version"),
        version(Tool::Bssh, "--version"),
    ]
}

/// A home for the binary whose `~/.ssh/config` is the target's ssh_config.
fn cli_home(target: &Target) -> Result<PathBuf, String> {
    let home = target.dir.join(format!("cli-home-{}", target.port));
    let ssh = home.join(".ssh");
    std::fs::create_dir_all(&ssh).map_err(|e| format!("{}: {e}", ssh.display()))?;
    std::fs::copy(&target.ssh_config, ssh.join("config")).map_err(|e| format!("{}: {e}", ssh.display()))?;
    Ok(home)
}

/// The target's ssh_config without its `*KnownHostsFile /dev/null` lines, which bssh
/// refuses ("points to sensitive system location"); its `--strict-host-key-checking no`
/// stands for them.
fn bssh_config(target: &Target) -> Result<PathBuf, String> {
    let text =
        std::fs::read_to_string(&target.ssh_config).map_err(|e| format!("{}: {e}", target.ssh_config.display()))?;
    let kept: String = text
        .lines()
        .filter(|l| !l.contains("KnownHostsFile"))
        .map(|l| format!("{l}\n"))
        .collect();
    let path = target.dir.join(format!("ssh_config-bssh-{}", target.port));
    std::fs::write(&path, kept).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// The command `tool` (one of this module's) runs for `work` on `n` labels of `target`.
pub fn command(tool: Tool, target: &Target, n: usize, work: &Work) -> Result<Command, String> {
    let Work::Run { cmd, steps: 1, .. } = work else {
        return Err("the command-line rows run one command per host".into());
    };
    let program = available(tool)?;
    let hosts = format!("h[1-{n}]");
    let fanout = n.to_string();
    let cfg = target.ssh_config.display().to_string();
    let mut c = Command::new(program);
    match tool {
        Tool::Cli => {
            c.env("HOME", cli_home(target)?)
                .args(["-f", &fanout, "-w", &hosts, "--"])
                .arg(cmd);
        }
        Tool::Clush => {
            // -o: options for every ssh it runs; -t: the same patience as the others.
            c.args(["-f", &fanout, "-t", "120", "-o", &format!("-F {cfg}"), "-w", &hosts])
                .arg(cmd);
        }
        Tool::Bssh => {
            // -F: the same ssh_config (less what bssh refuses); the key, user and port are repeated on the command
            // line (the same values) in case bssh's reading of the file misses one. -b:
            // no two-stage Ctrl-C; stdout is not a terminal, so no TUI either.
            c.env("HOME", cli_home(target)?)
                .args(["-H", &hosts, "--parallel", &fanout, "-b"])
                .arg("-F")
                .arg(bssh_config(target)?)
                .args(["-i", &target.key.display().to_string()])
                .args(["-l", &target.user, "-p", &target.port.to_string()])
                .args(["--strict-host-key-checking", "no"])
                .arg(cmd);
        }
        other => return Err(format!("{} is not a tool of the command-line rows", other.name())),
    }
    Ok(c)
}

/// A target of the issue: `what` of the binary over the peer's at most `limit`.
struct Goal {
    peer: Tool,
    wall: Option<f64>,
    cpu: Option<f64>,
    mem: Option<f64>,
}

const GOALS: [Goal; 5] = [
    Goal {
        peer: Tool::Ours,
        wall: Some(1.05),
        cpu: None,
        mem: None,
    },
    Goal {
        peer: Tool::Pdsh,
        wall: Some(0.5),
        cpu: Some(0.2),
        mem: None,
    },
    Goal {
        peer: Tool::Pssh,
        wall: Some(0.5),
        cpu: Some(0.2),
        mem: None,
    },
    Goal {
        peer: Tool::Clush,
        wall: Some(0.5),
        cpu: Some(0.2),
        mem: None,
    },
    Goal {
        peer: Tool::Bssh,
        wall: Some(0.9),
        cpu: Some(0.5),
        mem: Some(0.3),
    },
];

/// The binary against each tool of a `cli-*` case: medians, ratios (binary / tool) and
/// the targets, met or missed; a tool with no data says why.
pub fn section(all: &[Outcome]) -> String {
    let mut md = String::new();
    for (cli, rows) in cases_led_by(all, |o| o.case_id.starts_with("cli-"), Tool::Cli) {
        let _ = writeln!(
            md,
            "#### The command line ({}): ssh-parallel (the binary) / each tool\n\n\
             | tool | runs | wall s | client CPU s | peak RSS MB | wall ratio | CPU ratio | RSS ratio | targets |\n\
             |---|---|---|---|---|---|---|---|---|",
            cli.title
        );
        for o in &rows {
            if !o.has_data() {
                let why = o
                    .not_run
                    .clone()
                    .or_else(|| o.failures.first().cloned())
                    .unwrap_or_else(|| "no run".into());
                let _ = writeln!(md, "| {} | 0 | – | – | – | | | | **{why}** |", o.tool.name());
                continue;
            }
            let ratio = |f: fn(&Outcome) -> f64| -> Option<f64> { cli.has_data().then(|| f(cli) / f(o)) };
            let (rw, rc, rm) = (ratio(Outcome::wall), ratio(Outcome::cpu), ratio(Outcome::mem_mb));
            let show = |r: Option<f64>| r.map_or("–".into(), |r| format!("{r:.2}"));
            let mut verdicts = Vec::new();
            if let Some(g) = GOALS.iter().find(|g| g.peer == o.tool) {
                for (what, ratio, limit) in [("wall", rw, g.wall), ("CPU", rc, g.cpu), ("RSS", rm, g.mem)] {
                    if let (Some(r), Some(l)) = (ratio, limit) {
                        let v = if r <= l { "met" } else { "**missed**" };
                        verdicts.push(format!("{what} <= {l}x {v}"));
                    }
                }
            }
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                if o.tool == Tool::Cli {
                    format!("**{}**", o.tool.name())
                } else {
                    o.tool.name().to_string()
                },
                o.ok_runs().len(),
                sig(o.wall()),
                sig(o.cpu()),
                sig(o.mem_mb()),
                if o.tool == Tool::Cli { String::new() } else { show(rw) },
                if o.tool == Tool::Cli { String::new() } else { show(rc) },
                if o.tool == Tool::Cli { String::new() } else { show(rm) },
                verdicts.join(", ")
            );
        }
        md.push('\n');
    }
    md
}
