//! Resident memory of this process, sampled from `/proc/self/status` in a
//! background thread (shared by the chaos and big-output benches and by
//! `tests/chaos.rs`).
//!
//! The sampler is backed by the kernel's own high-water mark (`VmHWM`, reset
//! through `/proc/self/clear_refs` where allowed), because a 100 ms sample can
//! miss a short peak that the kernel cannot.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A `kB` field of `/proc/self/status` (`VmRSS`, `VmHWM`), in KiB.
pub fn status_kb(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
    line[field.len() + 1..].split_whitespace().next()?.parse().ok()
}

/// The current resident set size, KiB (0 where `/proc` is unavailable).
pub fn rss_kb() -> u64 {
    status_kb("VmRSS").unwrap_or(0)
}

/// Resets the kernel's high-water mark to the current RSS; false where the
/// kernel refuses (then only the samples count).
fn reset_hwm() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Samples the RSS every `every` until dropped or [`Sampler::finish`]ed.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    samples: Arc<AtomicU64>,
    start_kb: u64,
    hwm_reset: bool,
    thread: Option<JoinHandle<()>>,
}

/// What a [`Sampler`] saw.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// RSS when sampling started, KiB.
    pub start_kb: u64,
    /// The highest RSS seen (samples and, where it could be reset, `VmHWM`), KiB.
    pub peak_kb: u64,
    /// RSS when sampling stopped, KiB.
    pub end_kb: u64,
    /// How many samples were taken.
    pub samples: u64,
}

impl Sampler {
    /// Starts sampling now.
    pub fn start(every: Duration) -> Sampler {
        let hwm_reset = reset_hwm();
        let start = rss_kb();
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(start));
        let samples = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, peak, samples) = (stop.clone(), peak.clone(), samples.clone());
            std::thread::Builder::new()
                .name("rss-sampler".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        peak.fetch_max(rss_kb(), Ordering::Relaxed);
                        samples.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(every);
                    }
                })
                .ok()
        };
        Sampler {
            stop,
            peak,
            samples,
            start_kb: start,
            hwm_reset,
            thread,
        }
    }

    /// Stops sampling and returns what was seen.
    pub fn finish(mut self) -> Memory {
        self.halt();
        let end = rss_kb();
        let mut peak = self.peak.load(Ordering::Relaxed).max(end);
        if self.hwm_reset {
            peak = peak.max(status_kb("VmHWM").unwrap_or(0));
        }
        Memory {
            start_kb: self.start_kb,
            peak_kb: peak,
            end_kb: end,
            samples: self.samples.load(Ordering::Relaxed),
        }
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.halt();
    }
}

/// KiB as MiB with one decimal, for tables.
pub fn mib(kb: u64) -> String {
    format!("{:.1}", kb as f64 / 1024.0)
}
