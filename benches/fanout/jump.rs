//! The jump-host tier: 200 labels behind one bastion. A bastion sshd (`AllowTcpForwarding
//! yes`, `PermitOpen` the target only, `LogLevel DEBUG1` so that each login leaves an
//! `Accepted publickey` line) in front of a target sshd configured like the OpenSSH tier's.
//! Its case (`jump-200`: 200 x `true`) runs ssh-parallel through the bastion (one shared
//! jump session), ssh-parallel straight to the target (the baseline), parallel-ssh with
//! `proxy_host`, and pssh and pdsh with `ProxyJump bastion` in their ssh_config (each
//! `ssh` runs an `ssh -W` that logs in to the bastion). The report's section puts the
//! figures, the bastion's logins per run and the targets side by side.
//!
//! Invariants: every tool but the baseline reaches the same target through the same
//! bastion; the bastion's logins are counted per run from its own log (see
//! `measure::ServerProbe::Jump`); a peer that is not installed is reported `MISSING:`,
//! never left out.
//!
//! May use: `cases`, `tiers`, `tools`, `measure`, `runner`, `report`, `opts`.

use std::fmt::Write as _;
use std::time::Duration;

use crate::cases::{Case, Tier};
use crate::measure::ServerProbe;
use crate::opts::Opts;
use crate::report::{cases_led_by, note, sig};
use crate::runner::{run_tier, Outcome};
use crate::tiers::Bed;
use crate::tools::{host_block, Target, Tool};

/// The label count of the case.
const N: usize = 200;

/// Our wall through the bastion over our direct wall, at most.
const OVER_DIRECT: f64 = 1.25;
/// Our wall through the bastion over each peer's, at most.
const OVER_PEER: f64 = 0.5;

/// The jump-host case.
pub fn cases(o: &Opts) -> Vec<Case> {
    vec![Case::true_once(
        o,
        format!("jump-{N}"),
        format!("{N} x `true` behind one jump host (OpenSSH)"),
        Tier::Jump,
        N,
        vec![Tool::Ours, Tool::OursDirect, Tool::ParallelSsh, Tool::Pssh, Tool::Pdsh],
        // parallel-ssh's proxy tunnels took 38 s once and hung past 300 s the next time
        // (busy, one core): 120 s is three times its good run and keeps the case short.
        Duration::from_secs(120),
    )]
}

/// Starts the target and the bastion, runs the tier's cases, stops both.
pub fn tier(bed: &mut Bed<'_>, cases: &[Case], all: &mut Vec<Outcome>) {
    let jump: Vec<&Case> = cases.iter().filter(|c| c.tier == Tier::Jump).collect();
    if jump.is_empty() {
        return;
    }
    for tool in jump.iter().flat_map(|c| &c.tools) {
        if let Err(e) = bed.peers.available(*tool) {
            note(format!("MISSING: {} in the jump-host case: {e}", tool.name()));
        }
    }
    let target = match testbed::OpenSshServer::builder().authorize(bed.key).start() {
        Ok(s) => s,
        Err(e) => return note(format!("jump-host tier not run: target sshd: {e}")),
    };
    let bastion = match testbed::OpenSshServer::builder()
        .authorize(bed.key)
        .config_line("AllowTcpForwarding yes")
        .config_line(format!("PermitOpen 127.0.0.1:{}", target.port))
        .log_level("DEBUG1")
        .start()
    {
        Ok(s) => s,
        Err(e) => return note(format!("jump-host tier not run: bastion sshd: {e}")),
    };
    let t = match jump_target(bed, target.port, bastion.port) {
        Ok(t) => t,
        Err(e) => return note(format!("jump-host tier not run: {e}")),
    };
    let probe = ServerProbe::Jump {
        target: target.pid,
        bastion: bastion.pid,
        bastion_log: &bastion.log_path,
    };
    run_tier(bed.launcher, &jump, bed.peers, &t, &probe, bed.logs, all);
}

/// The OpenSSH tier's target with `ProxyJump bastion` for `h*` and a `Host bastion` entry
/// with the same user, key and (absent) host-key checks.
fn jump_target(bed: &Bed<'_>, target_port: u16, bastion_port: u16) -> Result<Target, String> {
    let key = bed.key.private_path();
    let mut t = Target::new(bed.out_dir, "jump", target_port, bed.user, key).map_err(|e| e.to_string())?;
    let mut cfg = std::fs::read_to_string(&t.ssh_config).map_err(|e| format!("{}: {e}", t.ssh_config.display()))?;
    // The file's only block is `Host h*`: this line ends it. `ssh` hands its `-F` file to
    // the `ssh -W` it runs for ProxyJump, which finds the bastion's entry there.
    cfg.push_str("  ProxyJump bastion\n\n");
    let _ = write!(cfg, "Host bastion\n{}", host_block(bastion_port, bed.user, key));
    std::fs::write(&t.ssh_config, cfg).map_err(|e| format!("{}: {e}", t.ssh_config.display()))?;
    t.jump = Some(bastion_port);
    Ok(t)
}

/// The bastion's logins in each good run of `o`, as `median [min–max]`.
fn logins(o: &Outcome) -> (f64, u64, u64) {
    let v: Vec<u64> = o.ok_runs().iter().filter_map(|r| r.hop_logins).collect();
    let med = crate::measure::median(v.iter().map(|&l| l as f64).collect());
    (
        med,
        v.iter().copied().min().unwrap_or(0),
        v.iter().copied().max().unwrap_or(0),
    )
}

/// ssh-parallel through the bastion against each tool of a `jump-*` case: medians, the
/// bastion's logins per run, ratios (ours through the bastion / tool) and the issue's
/// targets, met or missed; a tool with no data says why (`MISSING:` when not installed).
pub fn section(all: &[Outcome]) -> String {
    let mut md = String::new();
    for (ours, rows) in cases_led_by(all, |o| o.tier == Tier::Jump, Tool::Ours) {
        let _ = writeln!(
            md,
            "#### Jump hosts ({}): ssh-parallel through the bastion / each tool\n\n\
             | tool | runs | wall s | client CPU s | peak RSS MB | sshd CPU s (both) | bastion logins per run | wall ratio | CPU ratio | RSS ratio | targets |\n\
             |---|---|---|---|---|---|---|---|---|---|---|",
            ours.title
        );
        for o in &rows {
            if !o.has_data() {
                let why = match (&o.not_run, o.failures.first()) {
                    (Some(w), _) if o.tool != Tool::Ours && o.tool != Tool::OursDirect => format!("MISSING: {w}"),
                    (Some(w), _) => w.clone(),
                    (None, Some(f)) => format!("FAILED: {f}"),
                    (None, None) => "no run".into(),
                };
                let _ = writeln!(md, "| {} | 0 | – | – | – | – | – | | | | **{why}** |", o.tool.name());
                continue;
            }
            let mine = o.tool == Tool::Ours;
            let ratio = |f: fn(&Outcome) -> f64| -> Option<f64> { (ours.has_data() && !mine).then(|| f(ours) / f(o)) };
            let (rw, rc, rm) = (ratio(Outcome::wall), ratio(Outcome::cpu), ratio(Outcome::mem_mb));
            let show = |r: Option<f64>| r.map_or(String::new(), |r| format!("{r:.2}"));
            let (lmed, lmin, lmax) = logins(o);
            let login_text = if o.tool == Tool::OursDirect {
                format!("{lmed:.0} (no bastion)")
            } else if lmin == lmax {
                format!("{lmed:.0}")
            } else {
                format!("{lmed:.0} [{lmin}–{lmax}]")
            };
            let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
            let target = match (o.tool, rw) {
                (Tool::Ours, _) => format!("1 login on the bastion every run: {}", verdict(lmin == 1 && lmax == 1)),
                (Tool::OursDirect, Some(r)) => format!("wall <= {OVER_DIRECT}x: {}", verdict(r <= OVER_DIRECT)),
                (_, Some(r)) => format!("wall <= {OVER_PEER}x: {}", verdict(r <= OVER_PEER)),
                (_, None) => String::new(),
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {login_text} | {} | {} | {} | {target} |",
                if mine {
                    format!("**{} (via bastion)**", o.tool.name())
                } else {
                    o.tool.name().to_string()
                },
                o.ok_runs().len(),
                sig(o.wall()),
                sig(o.cpu()),
                sig(o.mem_mb()),
                sig(o.med(|r| r.server_cpu)),
                show(rw),
                show(rc),
                show(rm),
            );
        }
        md.push('\n');
    }
    md
}
