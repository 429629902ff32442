//! The three tiers of servers, each started, given its cases, and stopped: a real OpenSSH
//! sshd, the embedded russh server, and an sshd behind 50 ms of round-trip time.
//!
//! Invariant: a tier's server lives exactly as long as its cases run; a tier whose server
//! cannot start is noted in the report and skipped, the others still run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cases::{Case, Tier};
use crate::measure::{Launcher, ServerProbe};
use crate::netns::{measure_rtt, netns_setup};
use crate::opts::env_flag;
use crate::report::{note, with_ctx};
use crate::runner::{run_case, run_tier, Outcome};
use crate::tools::{Peers, Target};

/// What every tier runs with.
pub struct Bed<'a> {
    /// Starts the measured client processes (see [`Launcher`]).
    pub launcher: &'a mut Launcher,
    /// The peers installed.
    pub peers: &'a Peers,
    /// The client key every server authorizes.
    pub key: &'a testbed::ClientKey,
    /// The login name (the current OS user).
    pub user: &'a str,
    /// `target/fanout`: each tier's ssh config and hosts files go there.
    pub out_dir: &'a Path,
    /// Where each run's stderr is kept.
    pub logs: &'a Path,
}

/// The OpenSSH tier: a real sshd on 127.0.0.1.
pub fn openssh(bed: &mut Bed<'_>, cases: &[Case], all: &mut Vec<Outcome>) {
    let ossh: Vec<&Case> = cases.iter().filter(|c| c.tier == Tier::OpenSsh).collect();
    if !ossh.is_empty() {
        match testbed::OpenSshServer::builder().authorize(bed.key).start() {
            Ok(server) => {
                let target = Target::new(bed.out_dir, "openssh", server.port, bed.user, bed.key.private_path())
                    .expect("ssh_config");
                run_tier(
                    bed.launcher,
                    &ossh,
                    bed.peers,
                    &target,
                    &ServerProbe::Sshd(server.pid),
                    bed.logs,
                    all,
                );
                drop(server);
            }
            Err(e) => note(format!("OpenSSH tier not run: {e}")),
        }
    }
}

/// The embedded tier: the russh server in this process, for thousands of labels.
pub fn embedded(bed: &mut Bed<'_>, cases: &[Case], all: &mut Vec<Outcome>) {
    let emb: Vec<&Case> = cases.iter().filter(|c| c.tier == Tier::Embedded).collect();
    if !emb.is_empty() {
        match testbed::EmbeddedServer::builder()
            .authorized_key("*", bed.key.public_line())
            // The same key exchange as the OpenSSH tier, unless asked for russh's default
            // (the post-quantum hybrid mlkem768x25519, which costs more per login).
            .curve25519_only(!env_flag("FANOUT_EMB_MLKEM"))
            .start()
        {
            Ok(mut server) => {
                let target = Target::new(bed.out_dir, "embedded", server.port(), bed.user, bed.key.private_path())
                    .expect("ssh_config");
                run_tier(
                    bed.launcher,
                    &emb,
                    bed.peers,
                    &target,
                    &ServerProbe::Embedded(&server),
                    bed.logs,
                    all,
                );
                server.stop();
            }
            Err(e) => note(format!("embedded tier not run: {e}")),
        }
    }
}

/// The latency tier: a thread in a new network namespace whose loopback delays packets
/// (tc netem); where the kernel has no netem, a user-space relay adds the delay.
pub fn latency(bed: &mut Bed<'_>, cases: &[Case], all: &mut Vec<Outcome>) {
    let lat: Vec<&Case> = cases.iter().filter(|c| c.tier == Tier::Netns).collect();
    if !lat.is_empty() {
        let res = std::thread::scope(|s| {
            s.spawn(|| -> Result<Vec<Outcome>, String> {
                let netem = netns_setup();
                let server = testbed::OpenSshServer::builder()
                    .authorize(bed.key)
                    .start()
                    .map_err(|e| format!("sshd: {e}"))?;
                let mut relay = None;
                let mut netns = None;
                let port = match netem {
                    Ok(()) => {
                        // SAFETY: plain syscalls.
                        let (pid, tid) = unsafe { (libc::getpid(), libc::gettid()) };
                        netns = Some(PathBuf::from(format!("/proc/{pid}/task/{tid}/ns/net")));
                        note("latency: sshd and the clients in a network namespace of their own, `tc qdisc add dev lo root netem delay 25ms` on its loopback".into());
                        server.port
                    }
                    Err(e) => {
                        note(format!(
                            "latency: tc netem is not available on this machine ({e}); instead a user-space TCP relay on 127.0.0.1 delays every byte 25 ms each way and holds each new connection one round trip (the TCP handshake) before it reaches sshd"
                        ));
                        let r = crate::delay::DelayRelay::start(server.port, Duration::from_millis(25))
                            .map_err(|e| format!("delay relay: {e}"))?;
                        let p = r.port;
                        relay = Some(r);
                        p
                    }
                };
                let rtt = measure_rtt(port)?;
                with_ctx(|c| c.rtt_ms = Some(rtt));
                eprintln!("fanout: round trip measured (time to the SSH banner / 1.5) {rtt:.1} ms");
                let target = Target::new(bed.out_dir, "latency", port, bed.user, bed.key.private_path())
                    .map_err(|e| e.to_string())?;
                let mut outs = Vec::new();
                for case in &lat {
                    outs.extend(run_case(
                        bed.launcher,
                        case,
                        bed.peers,
                        &target,
                        &ServerProbe::Sshd(server.pid),
                        bed.logs,
                        netns.as_deref(),
                    ));
                }
                drop(relay);
                Ok(outs)
            })
            .join()
        });
        match res {
            Ok(Ok(outs)) => all.extend(outs),
            Ok(Err(e)) => note(format!("latency cases not run: {e}")),
            Err(_) => note("latency cases not run: the latency thread panicked".into()),
        }
    }
}
