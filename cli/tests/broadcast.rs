//! `ssh-parallel broadcast`: every job on every host, in step, against the
//! embedded cluster.

mod common;

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use common::{wait_at_most, Cluster};

fn setup(jobs: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let queue = dir.path().join("setup.txt");
    fs::write(&queue, jobs).unwrap();
    (dir, queue)
}

/// The nanosecond stamps each host wrote in `dir/NAME-HOST`.
fn stamp(dir: &tempfile::TempDir, name: &str, host: &str) -> u128 {
    let path = dir.path().join(format!("{name}-{host}"));
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{}: {text:?}: {e}", path.display()))
}

#[test]
fn the_next_job_starts_on_no_host_before_every_host_finished_this_one() {
    let c = Cluster::start(&["a", "b", "c"]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    // Host b is the slow one: without the barrier, a and c would start the
    // next job while b still runs this one.
    let jobs: String = (1..=3)
        .map(|k| {
            format!(
                "h=$(cat id.txt); date +%%s%%N > {d}/start{k}-$h; \
                 if [ $h = b ]; then sleep 0.6; fi; date +%%s%%N > {d}/end{k}-$h\n"
            )
        })
        .collect();
    let queue = dir.path().join("jobs.txt");
    fs::write(&queue, &jobs).unwrap();
    let child = c.spawn(&["broadcast", "-w", &c.nodeset(&[0, 1, 2]), queue.to_str().unwrap()]);
    let out = wait_at_most(child, Duration::from_secs(60));
    assert_eq!(out.code(), 0, "{out:?}");
    for k in 1..3 {
        let last_end = ["a", "b", "c"]
            .iter()
            .map(|h| stamp(&dir, &format!("end{k}"), h))
            .max()
            .unwrap();
        let first_start = ["a", "b", "c"]
            .iter()
            .map(|h| stamp(&dir, &format!("start{}", k + 1), h))
            .min()
            .unwrap();
        assert!(
            first_start > last_end,
            "job {} started {first_start} before job {k} ended everywhere ({last_end})",
            k + 1
        );
    }
    assert!(
        out.stderr()
            .contains("3 jobs, 9 runs: 9 succeeded, 0 failed, 0 not run; 0 left"),
        "{out:?}"
    );
    // Each job once in the consumed file, in canonical form.
    let consumed = fs::read_to_string(dir.path().join("jobs.txt.consumed")).unwrap();
    assert_eq!(consumed, jobs);
}

#[test]
fn error_aborts_stops_after_the_failed_job_and_leaves_the_rest_in_the_file() {
    let c = Cluster::start(&["a", "b"]);
    let (dir, queue) = setup("");
    let d = dir.path().display();
    let jobs = format!(
        "touch {d}/one-$(cat id.txt)\n\
         grep -q b id.txt && exit 7; touch {d}/two-$(cat id.txt)\n\
         touch {d}/three-$(cat id.txt)\n"
    );
    fs::write(&queue, &jobs).unwrap();
    let q = queue.to_str().unwrap();
    let out = c.run(&["broadcast", "-e", "-w", &c.nodeset(&[0, 1]), q]);
    assert_eq!(out.code(), 1, "{out:?}");
    let exists = |name: &str| dir.path().join(name).exists();
    assert!(exists("one-a") && exists("one-b") && exists("two-a"), "{out:?}");
    assert!(!exists("three-a") && !exists("three-b"), "{out:?}");
    let b = c.host(1);
    assert!(out.stderr().contains(&format!("{b}: job 2 ")), "{out:?}");
    assert!(out.stderr().contains("exited with status 7"), "{out:?}");
    assert!(out.stderr().contains("stopped (-e): job 2 "), "{out:?}");
    assert!(out.stderr().contains("1 left in the queue file"), "{out:?}");
    // The third job was not taken: it is still in the file.
    assert_eq!(
        fs::read_to_string(&queue).unwrap(),
        format!("touch {d}/three-$(cat id.txt)\n")
    );

    // Without -e the failure is reported and the next job still runs.
    fs::write(&queue, &jobs).unwrap();
    let out = c.run(&["broadcast", "-w", &c.nodeset(&[0, 1]), q]);
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(exists("three-a") && exists("three-b"), "{out:?}");
    assert!(
        out.stderr().contains("3 jobs, 6 runs: 5 succeeded, 1 failed"),
        "{out:?}"
    );
}

#[test]
fn gathered_output_and_host_variables() {
    let c = Cluster::start(&["a", "b"]);
    let (_dir, queue) = setup("echo same\n{ command = 'echo %WHAT% from $(cat id.txt)', WHAT = ['hi'] }\n");
    let out = c.run(&["broadcast", "-b", "-w", &c.nodeset(&[0, 1]), queue.to_str().unwrap()]);
    assert_eq!(out.code(), 0, "{out:?}");
    let stdout = out.stdout();
    assert!(stdout.contains(&format!("{} (1)", c.host(0))), "{out:?}");
    assert!(stdout.contains("same\nhi from a\n"), "{out:?}");
    assert!(stdout.contains("same\nhi from b\n"), "{out:?}");
}
