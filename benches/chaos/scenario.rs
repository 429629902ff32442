//! The chaos scenario shared by `cargo bench --bench chaos` (thousands of labels) and
//! `tests/chaos.rs` (a small N in the normal test suite): labels spread at random over
//! embedded SSH servers, each server group carrying one fault, a plan with joins,
//! transfers and policies, and a verification of the report against what each fault
//! implies.
//!
//! Faults are per server in the test bed, so each fault kind has its own group of
//! servers ([`KindSpec`]); a label draws its kind, then its server within the kind's
//! group, from a seeded RNG ([`SplitMix`]), so a seed replays the same plan.
//!
//! Why each outcome is certain, whatever the load (a fault that races the work it
//! should strike would make the verdict a matter of timing):
//! * `ok`, `slow`: nothing fails; the 300 ms delay is far under the 60 s connect timeout.
//! * `restart`: the servers are stopped and started again on the same port with the same
//!   host key a bounded number of times ([`Config::kills`]); each kill costs a task at
//!   most one lost connection plus one refused attempt per `reconnect_delay` of the
//!   outage (bounded by `downtime` + [`restart::STOP_AND_START_BOUND`], checked after the
//!   run), and the labels get that many reconnections
//!   ([`Config::restart_reconnections`]), so they succeed byte-exact. Their host key is
//!   checked strictly against a known_hosts file: a restart with another key would fail.
//! * `refused`, `silent`, `auth`: the fault is on every connection, before any command.
//! * `dropcmd`: the command sleeps an hour before printing, so it can only end by the
//!   server's drop (300 ms in), on both its runs, however late that timer fires.
//! * `bytes`: the output (about 300 KB) is six times the 48 KiB the server lets through.
//! * `dep`: its join waits for the `bytes` labels, which all abort.
//! * `jumprestart`: the labels reach a healthy server through a gateway (a jump host),
//!   and the gateway is killed and restarted like the `restart` servers: losing it cuts
//!   every tunnel through it at once, and the labels get the same reconnections.
//! * `jumpdead`: the gateway is stopped for good a `kill_every` after the first kill, and the command
//!   sleeps an hour, so a label either loses its tunnel mid-command or cannot reach the
//!   gateway at all: a `Connect` failure either way, the error naming the hop.
//!
//! Only the public API of `ssh_parallel` and of the test bed is used.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use ssh_parallel::{Command, ErrorKind, Host, HostKeyCheck, Join, OnError, Parallel, Report, ScpGet, ScpPut};
use testbed::{EmbeddedServer, Fault};

use crate::progress::{Progress, Pushed};
use crate::restart::{self, KillLog, KillPlan, Slot};
use crate::rss::{Memory, Sampler};

const USER: &str = "chaos";
const PASSWORD: &str = "entropy";
/// Output a `DropAfterBytes` server lets through, counted from its banner: enough for
/// the handshake and login, far less than the command's output.
const DROP_AFTER_BYTES: u64 = 48 * 1024;
/// Lines printed by labels on `DropAfterBytes` servers (about 300 KB: always cut).
const BYTES_KIND_LINES: u32 = 20_000;

/// The seeded RNG (SplitMix64): tiny, and the same sequence on every platform.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// A seed from the clock, for the runs that explore new plans.
pub fn clock_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    SplitMix::new(nanos ^ u64::from(std::process::id())).next_u64()
}

/// What a fault implies for a label's tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every task succeeds, outputs and copies byte-exact (faults, if any, are absorbed
    /// by reconnections).
    Healthy,
    /// The first task fails with this kind (after `attempts` runs, at least
    /// `min_reruns` of them re-runs after a lost connection); the rest are cancelled.
    Fails {
        /// The error kind the fault implies.
        kind: ErrorKind,
        /// Runs of the failing task, when the policy fixes it.
        attempts: Option<u32>,
        /// Re-runs after a lost connection the failing task must show.
        min_reruns: u32,
    },
    /// The first commands succeed, then the join on the `bytes-*` labels fails
    /// (they abort) and the label stops there.
    JoinFails,
}

/// What the chaos driver does to a group's servers while the plan runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chaos {
    /// Nothing: the fault (if any) is static.
    None,
    /// Stop the server (every connection cut, the port closed) and start a new one on
    /// the same port with the same host key after [`Config::downtime`],
    /// [`Config::kills`] times. For a kind with gateways, the gateways.
    KillAndRestart,
    /// Stop the gateways of the kind for good, [`Config::kill_every`] after
    /// [`Config::first_kill`].
    KillGatewaysForGood,
}

/// One fault kind: its servers, its labels' policies and what the report must show.
#[derive(Clone)]
pub struct KindSpec {
    /// Label prefix (`PREFIX-00042`), also used in selectors.
    pub name: &'static str,
    /// Relative share of the labels.
    pub weight: u64,
    /// Servers in the group.
    pub servers: usize,
    /// Healthy jump hosts the group's labels reach their server through (each label
    /// draws one); 0: the labels connect directly.
    pub gateways: usize,
    /// Faults every server of the group injects.
    pub faults: Vec<Fault>,
    /// What happens to the servers during the run.
    pub chaos: Chaos,
    /// Shell text run before the label's output command (e.g. a sleep that lets a
    /// mid-command fault strike).
    pub pre: &'static str,
    /// The label's host settings (policies, timeouts) on top of the common ones.
    pub host: fn(Host) -> Host,
    /// What the report must show.
    pub outcome: Outcome,
}

impl std::fmt::Debug for KindSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KindSpec")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

const fn fails(kind: ErrorKind, attempts: Option<u32>, min_reruns: u32) -> Outcome {
    Outcome::Fails {
        kind,
        attempts,
        min_reruns,
    }
}

/// The fault kinds of the test bed's embedded server, and the healthy groups.
pub fn builtin_kinds() -> Vec<KindSpec> {
    let same = |h: Host| h;
    vec![
        KindSpec {
            name: "ok",
            weight: 30,
            servers: 3,
            gateways: 0,
            faults: vec![],
            chaos: Chaos::None,
            pre: "",
            host: same,
            outcome: Outcome::Healthy,
        },
        KindSpec {
            name: "slow",
            weight: 8,
            servers: 1,
            gateways: 0,
            faults: vec![Fault::DelayHandshake(Duration::from_millis(300))],
            chaos: Chaos::None,
            pre: "",
            host: same,
            outcome: Outcome::Healthy,
        },
        KindSpec {
            name: "restart",
            weight: 10,
            servers: 2,
            gateways: 0,
            faults: vec![],
            chaos: Chaos::KillAndRestart,
            pre: "sleep 0.4; ",
            // Reconnections and the strict host-key check are set in `run`, from the
            // kill plan.
            host: same,
            outcome: Outcome::Healthy,
        },
        KindSpec {
            name: "dep",
            weight: 6,
            servers: 1,
            gateways: 0,
            faults: vec![],
            chaos: Chaos::None,
            pre: "",
            host: |h| h.on_error(OnError::Done),
            outcome: Outcome::JoinFails,
        },
        KindSpec {
            name: "refused",
            weight: 8,
            servers: 1,
            gateways: 0,
            faults: vec![Fault::RefuseHandshake],
            chaos: Chaos::None,
            pre: "",
            host: |h| h.on_error(OnError::Done),
            outcome: fails(ErrorKind::Connect, Some(1), 0),
        },
        KindSpec {
            name: "silent",
            weight: 6,
            servers: 1,
            gateways: 0,
            faults: vec![Fault::NoBanner],
            chaos: Chaos::None,
            pre: "",
            host: |h| h.connect_timeout(Duration::from_secs(2)).on_error(OnError::Done),
            outcome: fails(ErrorKind::Connect, Some(1), 0),
        },
        KindSpec {
            name: "auth",
            weight: 8,
            servers: 1,
            gateways: 0,
            faults: vec![Fault::RejectAuth],
            chaos: Chaos::None,
            pre: "",
            host: |h| h.on_error(OnError::retry(2).then(OnError::Done)),
            outcome: fails(ErrorKind::Connect, Some(2), 0),
        },
        KindSpec {
            name: "dropcmd",
            weight: 8,
            servers: 1,
            gateways: 0,
            faults: vec![Fault::DropDuringCommand(Duration::from_millis(300))],
            chaos: Chaos::None,
            // Far longer than any run: only the drop can end the command.
            pre: "sleep 3600; ",
            host: |h| h.reconnections(1).on_error(OnError::Done),
            outcome: fails(ErrorKind::Connect, Some(1), 1),
        },
        KindSpec {
            name: "bytes",
            weight: 8,
            servers: 1,
            gateways: 0,
            faults: vec![Fault::DropAfterBytes(DROP_AFTER_BYTES)],
            chaos: Chaos::None,
            pre: "",
            host: same,
            outcome: fails(ErrorKind::Connect, Some(1), 0),
        },
    ]
}

/// The "jump host dies" kinds: labels that reach a healthy server through a gateway
/// (an embedded server relaying `direct-tcpip`), and the gateway goes away.
pub fn jump_host_kinds() -> Vec<KindSpec> {
    vec![
        KindSpec {
            name: "jumprestart",
            weight: 8,
            servers: 1,
            gateways: 1,
            faults: vec![],
            chaos: Chaos::KillAndRestart,
            pre: "sleep 0.4; ",
            // Reconnections and the strict host-key check are set in `run`, as for
            // the `restart` labels.
            host: |h| h,
            outcome: Outcome::Healthy,
        },
        KindSpec {
            name: "jumpdead",
            weight: 6,
            servers: 1,
            gateways: 1,
            faults: vec![],
            chaos: Chaos::KillGatewaysForGood,
            // Far longer than any run: only the gateway's death can end the command.
            pre: "sleep 3600; ",
            host: |h| h.reconnections(1).on_error(OnError::Done),
            outcome: fails(ErrorKind::Connect, Some(1), 0),
        },
    ]
}

/// Every kind the scenario runs.
pub fn all_kinds() -> Vec<KindSpec> {
    let mut kinds = builtin_kinds();
    kinds.extend(jump_host_kinds());
    kinds
}

/// The knobs of one run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Labels in all.
    pub labels: usize,
    /// The RNG seed (printed; replays the same plan).
    pub seed: u64,
    /// `workers` of the client (0: no limit).
    pub workers: usize,
    /// The run must end within this.
    pub deadline: Duration,
    /// Kills (stop, then restart on the same port) of the `restart` servers.
    pub kills: u32,
    /// Time from the start of the run to the first kill.
    pub first_kill: Duration,
    /// Pause between two kills of the `restart` servers.
    pub kill_every: Duration,
    /// How long a killed server stays stopped before it is started again.
    pub downtime: Duration,
    /// The client's pause before each reconnection (each attempt during an outage is
    /// refused and spends one of the task's reconnections).
    pub reconnect_delay: Duration,
    /// Allowed growth of the RSS over the run (client and the in-process servers), KiB.
    pub rss_bound_kb: u64,
}

impl Config {
    /// The reconnections that make a `restart` label's success certain: per kill, one
    /// lost connection, one attempt per `reconnect_delay` of the longest outage, and
    /// two more for an attempt under way when the kill lands and one that times out
    /// under load.
    pub fn restart_reconnections(&self) -> u32 {
        let outage = self.downtime + restart::STOP_AND_START_BOUND;
        let delay = self.reconnect_delay.max(Duration::from_millis(1));
        let per_kill = outage.as_millis().div_ceil(delay.as_millis()) as u32 + 3;
        self.kills * per_kill
    }
}

/// One label's draw.
#[derive(Debug, Clone)]
pub struct LabelPlan {
    /// The label.
    pub label: String,
    /// Index into the kinds.
    pub kind: usize,
    /// The server's port.
    pub port: u16,
    /// Lines of its output command.
    pub lines: u32,
    /// The port of the gateway it jumps through, for a kind with gateways.
    pub gateway: Option<u16>,
}

/// What a run measured; [`Outcome`] violations are in `failures`.
#[derive(Debug)]
pub struct Summary {
    /// The seed.
    pub seed: u64,
    /// Labels in all.
    pub labels: usize,
    /// Servers started.
    pub servers: usize,
    /// Tasks pushed (= tasks reported when `failures` is empty).
    pub tasks: usize,
    /// Wall time of `run`.
    pub wall: Duration,
    /// Memory over the run.
    pub memory: Memory,
    /// Kills of the `restart` servers during the run.
    pub kills: u64,
    /// The longest time a `restart` server's port stayed closed.
    pub longest_outage: Duration,
    /// Reconnections each `restart` label had.
    pub restart_reconnections: u32,
    /// Per kind: (labels, labels that matched their outcome, re-runs after lost connections).
    pub per_kind: BTreeMap<&'static str, (usize, usize, u64)>,
    /// Task statuses over the whole report.
    pub statuses: BTreeMap<String, usize>,
    /// Every mismatch between the report and the faults (empty: the run passed).
    pub failures: Vec<String>,
}

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// The output of `seq -f 'LABEL-%g' 1 N` (N < 10^6, where `%g` prints integers whole).
pub fn expected_lines(label: &str, lines: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 1..=lines {
        out.extend_from_slice(format!("{label}-{i}\n").as_bytes());
    }
    out
}

/// Label-specific file content for the transfers (0..8 KiB of seeded bytes).
fn file_content(label: &str, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix::new(
        seed ^ label
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(131).wrapping_add(u64::from(b))),
    );
    let len = rng.below(8 * 1024) as usize;
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// One kind's servers, and the gateways its labels jump through (if any).
struct Group {
    /// The servers the labels' commands run on.
    servers: Vec<Arc<Slot>>,
    /// The jump hosts in front of them (empty for a direct kind).
    gateways: Vec<Arc<Slot>>,
}

impl Group {
    /// The servers the kind's chaos strikes: its gateways when it has some.
    fn chaos_targets(&self) -> &[Arc<Slot>] {
        if self.gateways.is_empty() {
            &self.servers
        } else {
            &self.gateways
        }
    }
}

/// Starts every kind's servers and gateways; returns them per kind.
fn start_servers(kinds: &[KindSpec]) -> Result<Vec<Group>, String> {
    testbed::raise_fd_limit();
    let start = |k: &KindSpec, faults: &[Fault], what: &str| {
        let mut b = EmbeddedServer::builder()
            .password(USER, PASSWORD)
            .curve25519_only(true)
            .auth_rejection_time(Duration::from_millis(10));
        for f in faults {
            b = b.fault(f.clone());
        }
        Slot::start(b)
            .map(Arc::new)
            .map_err(|e| format!("starting a {} {what}: {e}", k.name))
    };
    kinds
        .iter()
        .map(|k| {
            Ok(Group {
                servers: (0..k.servers.max(1))
                    .map(|_| start(k, &k.faults, "server"))
                    .collect::<Result<_, String>>()?,
                gateways: (0..k.gateways)
                    .map(|_| start(k, &[], "gateway"))
                    .collect::<Result<_, String>>()?,
            })
        })
        .collect()
}

/// Draws every label's kind, server and output size.
pub fn draw(cfg: &Config, kinds: &[KindSpec], ports: &[Vec<u16>], gateways: &[Vec<u16>]) -> Vec<LabelPlan> {
    let mut rng = SplitMix::new(cfg.seed);
    let total: u64 = kinds.iter().map(|k| k.weight).sum();
    (0..cfg.labels)
        .map(|i| {
            // The first labels take one kind each, so that even a small run has them all.
            let kind = if i < kinds.len() {
                i
            } else {
                let mut pick = rng.below(total);
                kinds
                    .iter()
                    .position(|k| {
                        let hit = pick < k.weight;
                        pick = pick.saturating_sub(k.weight);
                        hit
                    })
                    .unwrap_or(0)
            };
            let group = &ports[kind];
            let port = group[rng.below(group.len() as u64) as usize];
            let gateway =
                (!gateways[kind].is_empty()).then(|| gateways[kind][rng.below(gateways[kind].len() as u64) as usize]);
            let lines = if kinds[kind].name == "bytes" {
                BYTES_KIND_LINES
            } else {
                1 + rng.below(1000) as u32
            };
            LabelPlan {
                label: format!("{}-{i:05}", kinds[kind].name),
                kind,
                port,
                lines,
                gateway,
            }
        })
        .collect()
}

/// Runs the whole scenario: servers, plan, run under chaos, verification.
pub fn run(cfg: &Config) -> Result<Summary, String> {
    let kinds = all_kinds();
    let servers = start_servers(&kinds)?;
    let ports_of = |slots: &[Arc<Slot>]| slots.iter().map(|s| s.port()).collect::<Vec<u16>>();
    let ports: Vec<Vec<u16>> = servers.iter().map(|g| ports_of(&g.servers)).collect();
    let gateway_ports: Vec<Vec<u16>> = servers.iter().map(|g| ports_of(&g.gateways)).collect();
    let plans = draw(cfg, &kinds, &ports, &gateway_ports);
    let all_slots = || servers.iter().flat_map(|g| g.servers.iter().chain(&g.gateways));
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    for sub in ["src", "remote", "got"] {
        std::fs::create_dir(dir.path().join(sub)).map_err(|e| format!("mkdir {sub}: {e}"))?;
    }
    let dir_str = dir.path().to_str().ok_or("temp dir is not UTF-8")?.to_owned();
    // The restarted servers' keys are checked strictly against this file only.
    let known_hosts = dir.path().join("known_hosts");
    let lines: Vec<&str> = all_slots().map(|s| s.known_hosts_line()).collect();
    std::fs::write(&known_hosts, lines.join("\n") + "\n").map_err(|e| format!("known_hosts: {e}"))?;
    let ssh_config = dir.path().join("ssh_config");
    std::fs::write(
        &ssh_config,
        format!(
            "Host *\n  UserKnownHostsFile {}\n  GlobalKnownHostsFile none\n",
            known_hosts.display()
        ),
    )
    .map_err(|e| format!("ssh_config: {e}"))?;

    let mut pssh = Parallel::builder()
        .workers(cfg.workers)
        .reconnect_delay(cfg.reconnect_delay)
        .ssh_config(&ssh_config)
        .build()
        .map_err(|e| e.to_string())?;
    let restart_reconnections = cfg.restart_reconnections();
    for p in &plans {
        let k = &kinds[p.kind];
        let mut host = Host::new("127.0.0.1")
            .port(p.port)
            .user(USER)
            .password(PASSWORD)
            .agent(false)
            .host_key_check(HostKeyCheck::Off)
            // Deadlines no load on 2 shared cores can reach: at 2,000 labels the default
            // 20 s for authentication was hit once per run by a healthy label.
            .connect_timeout(Duration::from_secs(60))
            .auth_timeout(Duration::from_secs(60))
            .var("N", p.lines.to_string())
            .var("PRE", k.pre)
            .var("DIR", dir_str.as_str());
        if let Some(gateway) = p.gateway {
            host = host.jump(
                Host::new("127.0.0.1")
                    .port(gateway)
                    .user(USER)
                    .password(PASSWORD)
                    .agent(false)
                    .connect_timeout(Duration::from_secs(60))
                    .auth_timeout(Duration::from_secs(60)),
            );
        }
        if k.chaos == Chaos::KillAndRestart {
            host = host
                .host_key_check(HostKeyCheck::Strict)
                .reconnections(restart_reconnections);
        }
        pssh.add_host(p.label.as_str(), (k.host)(host))
            .map_err(|e| e.to_string())?;
        if k.outcome == Outcome::Healthy {
            std::fs::write(dir.path().join("src").join(&p.label), file_content(&p.label, cfg.seed))
                .map_err(|e| format!("writing a source file: {e}"))?;
        }
    }
    let pushed = push_plan(&mut pssh, &kinds).map_err(|e| e.to_string())?;
    let mut per_kind: Pushed = BTreeMap::new();
    for p in &plans {
        let e = per_kind.entry(kinds[p.kind].name.to_owned()).or_default();
        e.0 += 1;
        e.1 += pushed.get(&p.label).copied().unwrap_or(0);
    }
    let progress = Progress::new(per_kind);

    let stop = Arc::new(AtomicBool::new(false));
    let kill_log = Arc::new(std::sync::Mutex::new(KillLog::default()));
    let victims_of = |chaos: Chaos| -> Vec<Arc<Slot>> {
        kinds
            .iter()
            .zip(&servers)
            .filter(|(k, _)| k.chaos == chaos)
            .flat_map(|(_, group)| group.chaos_targets().iter().cloned())
            .collect()
    };
    let victims = victims_of(Chaos::KillAndRestart);
    let doomed = victims_of(Chaos::KillGatewaysForGood);
    let plan = KillPlan {
        kills: cfg.kills,
        first: cfg.first_kill,
        every: cfg.kill_every,
        downtime: cfg.downtime,
    };
    let killer = restart::spawn_killer(victims, plan, stop.clone(), kill_log.clone());
    // One pause after the first kill, so that some labels are cut mid-command and
    // others find the gateway gone.
    let reaper = restart::spawn_reaper(doomed, cfg.first_kill + cfg.kill_every, stop.clone());
    let sampler = Sampler::start(Duration::from_millis(100));
    let started = Instant::now();
    let handle = pssh.start();
    let follower = progress.follow(handle.events().clone());
    let watchdog = spawn_watchdog(cfg.deadline, cfg.seed, &stop, progress, kill_log.clone());
    let report = handle.wait();
    let wall = started.elapsed();
    let memory = sampler.finish();
    stop.store(true, Ordering::Relaxed);
    let _ = killer.join();
    let _ = reaper.join();
    let _ = follower.join();
    drop(watchdog);

    let log = std::mem::take(&mut *kill_log.lock().unwrap_or_else(|e| e.into_inner()));
    let mut summary = Summary {
        seed: cfg.seed,
        labels: plans.len(),
        servers: all_slots().count(),
        tasks: pushed.values().sum(),
        wall,
        memory,
        kills: log.kills,
        longest_outage: log.longest_outage,
        restart_reconnections,
        per_kind: BTreeMap::new(),
        statuses: BTreeMap::new(),
        failures: log.errors,
    };
    let outage_bound = cfg.downtime + restart::STOP_AND_START_BOUND;
    if log.longest_outage > outage_bound {
        summary.failures.push(format!(
            "a restart server was down {:?}, over the {outage_bound:?} its labels' reconnections allow for",
            log.longest_outage
        ));
    }
    if wall > cfg.deadline {
        summary.failures.push(format!(
            "the run took {wall:?}, over its deadline of {:?}",
            cfg.deadline
        ));
    }
    let growth = memory.peak_kb.saturating_sub(memory.start_kb);
    if growth > cfg.rss_bound_kb {
        summary.failures.push(format!(
            "RSS grew by {growth} KiB during the run, over the bound of {} KiB",
            cfg.rss_bound_kb
        ));
    }
    crate::verify::verify(&report, &plans, &kinds, &pushed, dir.path(), cfg.seed, &mut summary);
    let received: Vec<(u16, Vec<String>)> = all_slots().map(|s| (s.port(), s.commands())).collect();
    crate::verify::no_cross_talk(&plans, &kinds, &received, &mut summary);
    Ok(summary)
}

/// Pushes the plan; returns how many tasks each label was given.
fn push_plan(pssh: &mut Parallel, kinds: &[KindSpec]) -> ssh_parallel::Result<HashMap<String, usize>> {
    let mut pushed: HashMap<String, usize> = HashMap::new();
    let mut push = |pssh: &mut Parallel, selector: &str, action: ssh_parallel::Action| {
        let selection = pssh.push(selector, action)?;
        for label in selection.labels() {
            *pushed.entry(label.to_owned()).or_default() += 1;
        }
        Ok::<_, ssh_parallel::Error>(())
    };
    let names = |wanted: &dyn Fn(&KindSpec) -> bool| {
        kinds
            .iter()
            .filter(|k| wanted(k))
            .map(|k| format!("{}-*", k.name))
            .collect::<Vec<_>>()
            .join(",")
    };
    let healthy = names(&|k| k.outcome == Outcome::Healthy);
    // The labels that stop on their first task without failing their joins: every
    // failing kind but the aborting `bytes` one (the `dep` labels join on that).
    let released = names(&|k| matches!(k.outcome, Outcome::Fails { .. }) && k.name != "bytes");
    push(pssh, "*", Command::new("%PRE%seq -f '%LABEL%-%%g' 1 %N%").into())?;
    push(pssh, "*", Command::new("echo second %LABEL%").into())?;
    push(
        pssh,
        &healthy,
        ScpPut::new("%DIR%/src/%LABEL%", "%DIR%/remote/%LABEL%").into(),
    )?;
    push(
        pssh,
        &healthy,
        ScpGet::new("%DIR%/remote/%LABEL%", "%DIR%/got/%LABEL%").into(),
    )?;
    // Healthy labels wait for the failing ones (released as success under Done) and
    // for the `ok` group.
    push(pssh, &healthy, Join::new(format!("{released},ok-*")).into())?;
    push(pssh, "dep-*", Join::new("bytes-*").into())?;
    push(pssh, "dep-*", Command::new("echo after the join").into())?;
    push(pssh, &healthy, Command::new("exit 3").on_error(OnError::Ignore).into())?;
    push(pssh, &healthy, Command::new("cat %DIR%/remote/%LABEL%").into())?;
    Ok(pushed)
}

/// Ends the process if the run outlives its deadline by far, after printing what it
/// has done so far (tasks reported per kind, the labels still running): a hang must
/// not wedge the bench or the test suite, and must be diagnosable. Setting `stop`
/// disarms it.
fn spawn_watchdog(
    deadline: Duration,
    seed: u64,
    stop: &Arc<AtomicBool>,
    progress: Progress,
    kills: Arc<std::sync::Mutex<KillLog>>,
) -> std::thread::JoinHandle<()> {
    let stop = stop.clone();
    std::thread::spawn(move || {
        let hard = Instant::now() + deadline + Duration::from_secs(30);
        while !stop.load(Ordering::Relaxed) {
            if Instant::now() > hard {
                let kills = kills.lock().map(|k| format!("{k:?}")).unwrap_or_default();
                eprintln!(
                    "chaos: the run is still going {deadline:?} + 30 s after its start (seed {seed}); giving up.\n\
                     Progress so far:\n{}  restart servers: {kills}",
                    progress.render(40)
                );
                std::process::exit(3);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
}

/// The path of a label's file under the scenario's directory.
pub fn label_file(dir: &Path, sub: &str, label: &str) -> PathBuf {
    dir.join(sub).join(label)
}

/// Re-exported for the verifier.
pub(crate) fn content_for(label: &str, seed: u64) -> Vec<u8> {
    file_content(label, seed)
}

/// Counts statuses over the report (for the summary).
pub fn count_statuses(report: &Report) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in report.labels() {
        for t in l.tasks() {
            *m.entry(format!("{:?}", t.status())).or_default() += 1;
        }
    }
    m
}
