//! The servers of the chaos scenario as slots that can be killed and restarted:
//! [`Slot`] holds the server listening on a fixed port now (none while it is down)
//! and what its earlier incarnations received; [`spawn_killer`] is the thread that
//! stops the `KillAndRestart` servers and brings them back on the same port with
//! the same host key, a bounded number of times.
//!
//! Invariant: a slot's port and host key never change; a restart that cannot bind
//! the port again or that comes back with another key is recorded in
//! [`KillLog::errors`] (and fails the run), never ignored.
//!
//! Uses only the test bed's public API.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use testbed::{EmbeddedServer, EmbeddedServerBuilder};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One server address of the scenario, across restarts.
pub struct Slot {
    /// The port, fixed for the whole run.
    port: u16,
    /// How to build the server again (host key included).
    builder: EmbeddedServerBuilder,
    /// The host key's fingerprint, the same for every incarnation.
    fingerprint: String,
    /// The known_hosts line of the first incarnation.
    known_hosts_line: String,
    /// The server now serving the port; `None` while it is down.
    live: Mutex<Option<EmbeddedServer>>,
    /// Commands received by the stopped incarnations.
    past_commands: Mutex<Vec<String>>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").field("port", &self.port).finish_non_exhaustive()
    }
}

impl Slot {
    /// Starts a server from `builder` on an ephemeral port; its restarts reuse the
    /// port and the host key.
    pub fn start(builder: EmbeddedServerBuilder) -> Result<Slot, String> {
        let server = builder.clone().start().map_err(|e| e.to_string())?;
        let builder = builder.host_key(server.host_key().clone()).port(server.port());
        Ok(Slot {
            port: server.port(),
            builder,
            fingerprint: server.host_key_fingerprint(),
            known_hosts_line: server.known_hosts_line(),
            live: Mutex::new(Some(server)),
            past_commands: Mutex::new(Vec::new()),
        })
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `[127.0.0.1]:PORT KEY`, valid for every incarnation.
    pub fn known_hosts_line(&self) -> &str {
        &self.known_hosts_line
    }

    /// Every command received so far, by every incarnation.
    pub fn commands(&self) -> Vec<String> {
        let mut all = lock(&self.past_commands).clone();
        if let Some(s) = lock(&self.live).as_ref() {
            all.extend(s.commands());
        }
        all
    }

    /// Stops the server (every connection cut, the port closed, commands killed).
    fn kill(&self) {
        let server = lock(&self.live).take();
        if let Some(mut s) = server {
            let commands = s.commands();
            s.stop();
            lock(&self.past_commands).extend(commands);
        }
    }

    /// Starts the server again on its port with its host key; retries the bind for a
    /// while (the old listener may take a moment to go).
    fn restart(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.builder.clone().start() {
                Ok(s) if s.host_key_fingerprint() != self.fingerprint => {
                    return Err(format!(
                        "port {}: restarted with key {}, not {}",
                        self.port,
                        s.host_key_fingerprint(),
                        self.fingerprint
                    ))
                }
                Ok(s) => {
                    *lock(&self.live) = Some(s);
                    return Ok(());
                }
                Err(e) if Instant::now() > deadline => return Err(format!("port {}: cannot restart: {e}", self.port)),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

/// How the killer thread's work went.
#[derive(Debug, Default)]
pub struct KillLog {
    /// Kills done (each stops every victim once).
    pub kills: u64,
    /// The longest time a victim's port was closed, from the start of its stop to
    /// its new server listening.
    pub longest_outage: Duration,
    /// Restarts that failed (the run then fails).
    pub errors: Vec<String>,
}

/// What the killer does: `kills` times, first `first` after the start then every
/// `every`, stop each victim, wait `downtime`, start it again.
#[derive(Debug, Clone, Copy)]
pub struct KillPlan {
    /// Kills in all.
    pub kills: u32,
    /// Time from the start to the first kill.
    pub first: Duration,
    /// Pause between the end of a kill and the next.
    pub every: Duration,
    /// Time a victim stays stopped before it is started again.
    pub downtime: Duration,
}

/// The longest a stop can keep a port closed besides `downtime`: `EmbeddedServer::stop`
/// waits at most about 3 s for its thread, the restart retries its bind for 5 s.
pub const STOP_AND_START_BOUND: Duration = Duration::from_secs(8);

/// Starts the killer thread; it ends after its last kill or at `stop`.
pub fn spawn_killer(
    victims: Vec<Arc<Slot>>,
    plan: KillPlan,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<KillLog>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut next = Instant::now() + plan.first;
        for _ in 0..plan.kills {
            if !sleep_until(next, &stop) {
                return;
            }
            // All victims go down together, each on its own thread, so that one
            // slow stop does not lengthen another's outage.
            std::thread::scope(|scope| {
                for v in &victims {
                    let log = &log;
                    scope.spawn(move || {
                        let t0 = Instant::now();
                        v.kill();
                        std::thread::sleep(plan.downtime);
                        let result = v.restart();
                        let mut log = lock(log);
                        log.longest_outage = log.longest_outage.max(t0.elapsed());
                        if let Err(e) = result {
                            log.errors.push(e);
                        }
                    });
                }
            });
            lock(&log).kills += 1;
            next = Instant::now() + plan.every;
        }
    })
}

/// Starts the thread that stops `victims` for good once, `at` after the start (unless
/// `stop` is set first).
pub fn spawn_reaper(victims: Vec<Arc<Slot>>, at: Duration, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        if sleep_until(Instant::now() + at, &stop) {
            for v in &victims {
                v.kill();
            }
        }
    })
}

/// Sleeps until `when`; `false` if `stop` was set first.
fn sleep_until(when: Instant, stop: &AtomicBool) -> bool {
    while Instant::now() < when {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}
