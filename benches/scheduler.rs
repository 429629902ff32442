//! Scheduler throughput and memory on the no-op transport.
//!
//! Every label runs on a fault-injection host with no faults and no log, which
//! answers every connect and task at once, so what is measured is the
//! scheduler itself (plus the channel round trip to the transport thread).
//!
//! The plan: `labels` labels x 100 `Command::new("true")` tasks each, with a
//! `Join::new("*")` pushed to every label after every 10 tasks. The goal is
//! at least 1,000,000 tasks/s on one core, and memory linear in tasks.
//!
//! Throughput counts the 100 commands per label only (joins are extra work
//! the figures do not take credit for).
//!
//! `cargo bench --bench scheduler` runs criterion (plan built in the batched
//! setup, only `Parallel::run` timed), then prints a one-shot summary line
//! per size and the allocated bytes per task for 10k, 100k and 1M tasks.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{black_box, BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput};
use ssh_parallel::fault::Fault;
use ssh_parallel::{Command, Host, Join, Parallel};

/// Tasks (commands) per label.
const TASKS_PER_LABEL: usize = 100;
/// A join on every label after this many tasks.
const JOIN_EVERY: usize = 10;

// ---- a counting allocator -------------------------------------------------

/// Counts live and peak heap bytes while `COUNTING` is on; off during the
/// timed runs so the shared counters do not slow the two threads down.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// Frees of blocks allocated while counting was off would make LIVE wrap, so
// LIVE is a wrapping counter read as a signed difference between two points.
fn grow(n: usize) {
    let now = LIVE.fetch_add(n, Ordering::Relaxed).wrapping_add(n);
    if (now as isize) > (PEAK.load(Ordering::Relaxed) as isize) {
        PEAK.fetch_max(now, Ordering::Relaxed);
    }
}

fn shrink(n: usize) {
    LIVE.fetch_sub(n, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() && COUNTING.load(Ordering::Relaxed) {
            grow(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() && COUNTING.load(Ordering::Relaxed) {
            grow(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Ordering::Relaxed) {
            shrink(layout.size());
        }
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() && COUNTING.load(Ordering::Relaxed) {
            shrink(layout.size());
            grow(new_size);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed) as isize
}

/// Restarts the peak from the current live count.
fn reset_peak() {
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
}

fn peak() -> isize {
    PEAK.load(Ordering::Relaxed) as isize
}

// ---- the plan -------------------------------------------------------------

/// `labels` no-op hosts, each with 100 `true` commands and a join on all
/// labels after every 10 of them.
fn build(labels: usize) -> Parallel {
    let mut pssh = Parallel::new();
    for i in 0..labels {
        pssh.add_host(format!("h{i}"), Host::fault(Fault::new())).unwrap();
    }
    for t in 1..=TASKS_PER_LABEL {
        pssh.push("*", Command::new("true")).unwrap();
        if t % JOIN_EVERY == 0 {
            pssh.push("*", Join::new("*")).unwrap();
        }
    }
    pssh
}

fn tasks(labels: usize) -> usize {
    labels * TASKS_PER_LABEL
}

/// Runs the plan and checks that it really did the work.
fn run(pssh: &mut Parallel, labels: usize) -> ssh_parallel::Report {
    let report = pssh.run();
    debug_assert!(report.success());
    debug_assert_eq!(report.labels().len(), labels);
    report
}

// ---- criterion: throughput ------------------------------------------------

fn throughput(c: &mut Criterion) {
    let mut g = c.benchmark_group("scheduler");
    g.sample_size(10);
    g.sampling_mode(SamplingMode::Flat);
    g.warm_up_time(Duration::from_secs(1));
    for (labels, secs) in [(100, 3), (1_000, 5), (10_000, 20)] {
        g.measurement_time(Duration::from_secs(secs));
        g.throughput(Throughput::Elements(tasks(labels) as u64));
        let id = BenchmarkId::new("run", format!("{labels}x{TASKS_PER_LABEL}"));
        g.bench_with_input(id, &labels, |b, &labels| {
            // The plan is built outside the timing; the report is dropped outside it too.
            b.iter_batched_ref(|| build(labels), |pssh| run(pssh, labels), BatchSize::LargeInput)
        });
    }
    g.finish();
}

// ---- one-shot summary and memory ------------------------------------------

fn summary() {
    for labels in [100, 1_000, 10_000] {
        let n = tasks(labels);
        let mut pssh = build(labels);
        let t = Instant::now();
        let report = black_box(run(&mut pssh, labels));
        let secs = t.elapsed().as_secs_f64();
        assert!(report.success());
        println!(
            "scheduler: {n} tasks ({labels} labels x {TASKS_PER_LABEL}, join every {JOIN_EVERY}) in {secs:.3} s = {:.0} tasks/s",
            n as f64 / secs
        );
    }
}

fn memory() {
    println!(
        "memory (heap bytes counted by the global allocator; per task = per command, joins included in the cost):"
    );
    for labels in [100, 1_000, 10_000] {
        let n = tasks(labels) as f64;
        COUNTING.store(true, Ordering::SeqCst);
        let base = live();
        let mut pssh = build(labels);
        let plan = live() - base;
        reset_peak();
        let before_run = live();
        let report = run(&mut pssh, labels);
        let run_peak = peak() - before_run;
        let kept = live() - before_run;
        drop(report);
        drop(pssh);
        COUNTING.store(false, Ordering::SeqCst);
        println!(
            "memory: {:>9} tasks: plan {:>6.1} B/task ({plan} B), run peak +{:>6.1} B/task ({run_peak} B), \
             report {:>6.1} B/task ({kept} B)",
            n as usize,
            plan as f64 / n,
            run_peak as f64 / n,
            kept as f64 / n,
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --benches` runs this with `--test`: keep that quick, and
    // keep `--profile-time` runs to the profiled benchmark.
    let quick = args
        .iter()
        .any(|a| a == "--test" || a == "--list" || a == "--profile-time");
    let mut c = Criterion::default().configure_from_args();
    throughput(&mut c);
    if !quick {
        summary();
        memory();
    }
    c.final_summary();
}
