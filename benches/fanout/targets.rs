//! The report's analysis sections: how our client grows with the number of labels (the
//! embedded tier), and each target of the performance issue, met or missed.
//!
//! Invariant: a section only speaks of cases that have data; a target whose case or peer
//! did not run is left out, never reported as met.

use std::fmt::Write as _;

use crate::cases::Tier;
use crate::report::{sig, ReportCtx};
use crate::runner::Outcome;
use crate::tools::{Tool, Work};

/// The outcome of `tool` in `case`, if it has good runs.
fn find<'a>(all: &'a [Outcome], case: &str, tool: Tool) -> Option<&'a Outcome> {
    all.iter().find(|o| o.case_id == case && o.tool == tool && o.has_data())
}

/// The growth table (ssh-parallel on the embedded server, by N).
pub fn growth_section(all: &[Outcome]) -> String {
    let rows: Vec<&Outcome> = all
        .iter()
        .filter(|o| o.tier == Tier::Embedded && o.tool == Tool::Ours && o.has_data())
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let mut md = String::from(
        "#### Growth with N (ssh-parallel, embedded server, N x `true`, medians)\n\n\
         | N | workers | wall s | client CPU s | CPU per label ms | peak RSS MB | conns open at peak | RSS per open conn KB | threads |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    let base = rows.first().map(|o| (o.n, o.mem_mb())).unwrap_or((0, 0.0));
    for o in &rows {
        let open = o.med(|r| r.server_open as f64);
        let per_conn = if o.n > base.0 && open > 0.0 {
            format!("{:.1}", (o.mem_mb() - base.1) * 1024.0 / open)
        } else {
            "(base)".into()
        };
        let workers = if o.n == 10000 {
            "1,000".to_string()
        } else {
            format!("{}", o.n)
        };
        let _ = writeln!(
            md,
            "| {} | {workers} | {} | {} | {:.3} | {:.1} | {open:.0} | {per_conn} | {:.0} |",
            o.n,
            sig(o.wall()),
            sig(o.cpu()),
            o.cpu() * 1000.0 / o.n as f64,
            o.mem_mb(),
            o.med(|r| r.threads as f64)
        );
    }
    md.push_str(&format!(
        "\nRSS per open connection is (RSS(N) − RSS({})) / connections open at the peak: the \
         marginal cost of a connection. Threads: the most seen in the client (main + I/O \
         thread; a run of a few ms can end before the I/O thread is sampled). Open \
         connections are sampled on the server every 100 ms.\n\n",
        base.0
    ));
    md
}

/// `met`, or `**missed**`.
fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

/// Each target of the issue checked against this run.
pub fn targets_section(all: &[Outcome], ctx: &ReportCtx) -> String {
    let mut md = String::from("#### Targets of the issue, checked against this run\n\n");
    let mut line = |s: String| {
        md.push_str("- ");
        md.push_str(&s);
        md.push('\n');
    };
    // Fan-out on OpenSSH.
    for n in [10, 50, 200] {
        let id = format!("fanout-{n}");
        let Some(ours) = find(all, &id, Tool::Ours) else {
            continue;
        };
        for (peer, wall_t, cpu_t, mem_t) in [
            (Tool::ParallelSsh, Some(0.5), Some(0.5), Some(0.25)),
            (Tool::Pssh, Some(0.5), None, None),
        ] {
            let Some(p) = find(all, &id, peer) else { continue };
            let rw = ours.wall() / p.wall();
            let mut parts = vec![format!(
                "wall {rw:.2}x (target <= {:.2}x: {})",
                wall_t.unwrap_or(0.0),
                verdict(rw <= wall_t.unwrap_or(0.0))
            )];
            if let Some(t) = cpu_t {
                let rc = ours.cpu() / p.cpu();
                parts.push(format!("client CPU {rc:.2}x (<= {t}x: {})", verdict(rc <= t)));
            }
            if let Some(t) = mem_t {
                let rm = ours.mem_mb() / p.mem_mb();
                parts.push(format!("peak RSS {rm:.2}x (<= {t}x: {})", verdict(rm <= t)));
            }
            line(format!(
                "Fan-out {n} on OpenSSH vs {}: {}",
                peer.name(),
                parts.join(", ")
            ));
        }
        let sshd = ours.med(|r| r.server_cpu);
        let floor = (sshd + ours.cpu()) / 2.0;
        line(format!(
            "Fan-out {n}: sshd used {sshd:.2} s CPU, we {:.3} s; the 2-core floor (all CPU spread over both cores) is {floor:.2} s, our wall {:.2} s = {:.2}x the floor",
            ours.cpu(),
            ours.wall(),
            ours.wall() / floor
        ));
    }
    // 10,000 labels.
    if let Some(o) = find(all, "emb-10000", Tool::Ours) {
        let per = o.cpu() * 1000.0 / o.n as f64;
        let open = o.med(|r| r.server_open as f64).max(1.0);
        let per_conn = o.mem_mb() * 1024.0 / open;
        let base = find(all, "emb-10", Tool::Ours).map_or(0.0, |b| b.mem_mb());
        let marginal = (o.mem_mb() - base) * 1024.0 / open;
        let threads = o.med(|r| r.threads as f64);
        let others: Vec<String> = ["emb-100", "emb-1000"]
            .iter()
            .filter_map(|id| find(all, id, Tool::Ours))
            .map(|s| format!("{:.0} at N = {}", s.med(|r| r.threads as f64), s.n))
            .collect();
        let same = ["emb-100", "emb-1000"]
            .iter()
            .filter_map(|id| find(all, id, Tool::Ours))
            .all(|s| s.med(|r| r.threads as f64) == threads);
        line(format!(
            "10,000 labels (embedded, workers 1,000): completed {}/{} runs (met); client CPU {per:.3} ms/label (<= 1 ms: {}); peak RSS {:.0} MB over {open:.0} connections open at once = {per_conn:.0} KB each, {marginal:.0} KB each above the {base:.1} MB of a 10-label run (<= 100 KB: {} strictly, {} at the margin); client threads {threads:.0} vs {} ({})",
            o.ok_runs().len(),
            o.runs.len() + o.failures.len(),
            verdict(per <= 1.0),
            o.mem_mb(),
            verdict(per_conn <= 100.0),
            verdict(marginal <= 100.0),
            others.join(", "),
            verdict(same)
        ));
    } else if all.iter().any(|o| o.case_id == "emb-10000") {
        line("10,000 labels (embedded): **did not complete** (see the table)".into());
    }
    // Lockstep.
    if let Some(ours) = find(all, "lockstep-50x20", Tool::Ours) {
        for (peer, t) in [(Tool::ParallelSsh, 0.5), (Tool::Nop, 0.2)] {
            if let Some(p) = find(all, "lockstep-50x20", peer) {
                let r = ours.wall() / p.wall();
                line(format!(
                    "Pipeline lockstep 50 x 20 vs {}: wall {r:.2}x (<= {t}x: {})",
                    peer.name(),
                    verdict(r <= t)
                ));
            }
        }
    }
    // Waiting.
    if let (Some(s), Some(f)) = (find(all, "sleep-200", Tool::Ours), find(all, "fanout-200", Tool::Ours)) {
        let extra = s.cpu() - f.cpu();
        line(format!(
            "Waiting (200 x `sleep 5`): client CPU {:.3} s vs {:.3} s for 200 x `true`: {extra:.3} s for ~5 s of waiting = {:.1}% of one core ({})",
            s.cpu(),
            f.cpu(),
            (extra / 5.0 * 100.0).max(0.0),
            verdict(extra / 5.0 < 0.02)
        ));
    }
    if let (Some(s5), Some(s10)) = (find(all, "sleep-200", Tool::Ours), find(all, "sleep10-200", Tool::Ours)) {
        let extra = s10.cpu() - s5.cpu();
        line(format!(
            "Waiting, 200 x `sleep 10` against 200 x `sleep 5`: client CPU {:.3} s vs {:.3} s: {extra:.3} s for 5 more seconds of waiting = {:.2}% of one core, {:.1} µs per session-second ({})",
            s10.cpu(),
            s5.cpu(),
            (extra / 5.0 * 100.0).max(0.0),
            (extra / (5.0 * 200.0) * 1e6).max(0.0),
            verdict(extra / 5.0 < 0.005)
        ));
    }
    // Output.
    if let Some(o4) = find(all, "out-4mb-50", Tool::Ours) {
        let base = find(all, "fanout-50", Tool::Ours).map(|o| o.mem_mb());
        let cap_mb = 50.0; // 50 labels x 1 MiB default capture cap (stdout)
        if let Some(base) = base {
            let bound = base + cap_mb * 1.2;
            line(format!(
                "Output: 50 x 4 MiB (200 MiB produced) peaks at {:.1} MB vs {base:.1} MB for 50 x `true`; bound by the caps = {base:.1} + 50 x 1 MiB (+20%) = {bound:.0} MB ({})",
                o4.mem_mb(),
                verdict(o4.mem_mb() <= bound)
            ));
        }
    }
    // Transfers.
    for case in ["put-10", "get-10"] {
        let Some(ours) = find(all, case, Tool::Ours) else {
            continue;
        };
        for (peer, t) in [(Tool::ParallelSsh, 1.2), (Tool::OpenSsh, 0.8)] {
            if let Some(p) = find(all, case, peer) {
                let r = p.wall() / ours.wall(); // throughput ratio ours/peer
                line(format!(
                    "{case}: throughput {r:.2}x {} (>= {t}x: {})",
                    peer.name(),
                    verdict(r >= t)
                ));
            }
        }
    }
    // Latency.
    // The ideal uses the nominal 50 ms; the measured figure (time to sshd's banner / 1.5)
    // also holds sshd's own start-up of a connection.
    let rtt = 0.050;
    if let Some(m) = ctx.rtt_ms {
        line(format!("Latency set-up: nominal RTT 50 ms; time to sshd's banner after connect / 1.5 = {m:.1} ms (includes sshd forking its per-connection process)"));
    }
    for o in all
        .iter()
        .filter(|o| o.tier == Tier::Netns && o.tool == Tool::Ours && o.has_data())
    {
        let steps = match &o.work {
            Work::Run { steps, .. } => *steps,
            _ => 0,
        };
        // TCP (1) + SSH version/KEXINIT (1) + ECDH (1) + service request (1) + publickey (1).
        let handshake_rtts = 5.0;
        let ideal = (handshake_rtts + steps as f64) * rtt;
        let r = o.wall() / ideal;
        let sshd = o.med(|r| r.server_cpu);
        line(format!(
            "Latency {} labels x {steps} lockstep: wall {:.2} s = {:.1} RTT vs ideal ({handshake_rtts} handshake + {steps} command round trips) {ideal:.2} s = {r:.2}x (<= 1.3x: {}); CPU floor (sshd {sshd:.2} s + ours {:.2} s on 2 cores) {:.2} s",
            o.n,
            o.wall(),
            o.wall() / rtt,
            verdict(r <= 1.3),
            o.cpu(),
            (sshd + o.cpu()) / 2.0
        ));
    }
    md
}
