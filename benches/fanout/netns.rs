//! The latency tier's network: a network namespace whose loopback delays packets (tc
//! netem), and the measure of the round trip it gives.
//!
//! Invariant: the namespace change is made on the calling thread only, and undone if it
//! fails half-way; processes started from that thread inherit it.

use std::fs;
use std::time::{Duration, Instant};

use crate::measure::median;

/// Moves this thread into a new network namespace and gives its loopback 25 ms of delay
/// each way (50 ms round trip). Processes this thread starts inherit the namespace.
pub fn netns_setup() -> Result<(), String> {
    let original = fs::File::open("/proc/thread-self/ns/net").map_err(|e| format!("/proc/thread-self/ns/net: {e}"))?;
    let r = netns_enter();
    if r.is_err() {
        use std::os::fd::AsRawFd;
        // SAFETY: back to the namespace this thread came from (a no-op if unshare failed).
        unsafe {
            libc::setns(original.as_raw_fd(), libc::CLONE_NEWNET);
        }
    }
    r
}

/// Unshares the network namespace, brings its loopback up and adds the netem delay.
fn netns_enter() -> Result<(), String> {
    // SAFETY: unshare only changes this thread's namespaces.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "unshare(CLONE_NEWNET) failed: {} (network namespaces are not available here)",
            std::io::Error::last_os_error()
        ));
    }
    let st = std::process::Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .map_err(|e| format!("ip: {e}"))?;
    if !st.success() {
        return Err("ip link set lo up failed".into());
    }
    let out = std::process::Command::new("tc")
        .args([
            "qdisc", "add", "dev", "lo", "root", "netem", "delay", "25ms", "limit", "100000",
        ])
        .output()
        .map_err(|e| format!("tc: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "tc qdisc add ... netem failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// The round trip, from the time the server's SSH banner takes to arrive after connect
/// (one round trip for the TCP handshake, half of one for the banner): median of 3.
pub fn measure_rtt(port: u16) -> Result<f64, String> {
    use std::io::Read;
    let mut v = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("rtt probe: {e}"))?;
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let mut b = [0u8; 1];
        while let Ok(1) = s.read(&mut b) {
            if b[0] == b'\n' {
                break;
            }
        }
        v.push(t.elapsed().as_secs_f64() * 1000.0 / 1.5);
    }
    Ok(median(v))
}
