use std::time::Duration;

use super::*;

fn queue(text: &str) -> (tempfile::TempDir, QueueFile) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.txt");
    fs::write(&path, text).unwrap();
    let q = QueueFile::open(&path).unwrap();
    (dir, q)
}

fn content(dir: &tempfile::TempDir, name: &str) -> String {
    fs::read_to_string(dir.path().join(name)).unwrap_or_default()
}

#[test]
fn jobs_are_taken_from_the_top_and_moved_to_the_consumed_file() {
    let (dir, q) = queue("# my jobs\necho one\n\n{ command = '{ two; }' }\necho three\n");
    assert_eq!(q.take(&|| true).unwrap().as_deref(), Some("echo one"));
    assert_eq!(
        content(&dir, "q.txt"),
        "# my jobs\n\n{ command = '{ two; }' }\necho three\n"
    );
    assert_eq!(q.take(&|| true).unwrap().as_deref(), Some("{ two; }"));
    assert_eq!(q.remaining(true).unwrap(), Some(1));
    assert_eq!(q.take(&|| true).unwrap().as_deref(), Some("echo three"));
    assert_eq!(q.take(&|| true).unwrap(), None);
    assert_eq!(content(&dir, "q.txt"), "# my jobs\n\n");
    assert_eq!(
        content(&dir, "q.txt.consumed"),
        "echo one\n{ command = \"{ two; }\" }\necho three\n"
    );
}

#[test]
fn a_parametrised_entry_is_expanded_in_place_when_it_reaches_the_top() {
    let (dir, q) = queue("{ command = 'run %N% on %HOST%', N = [1, 2, 3] }\necho last");
    assert_eq!(q.take(&|| true).unwrap().as_deref(), Some("run 1 on %HOST%"));
    assert_eq!(content(&dir, "q.txt"), "run 2 on %HOST%\nrun 3 on %HOST%\necho last");
    assert_eq!(content(&dir, "q.txt.consumed"), "run 1 on %HOST%\n");
}

#[test]
fn an_invalid_file_takes_nothing_and_changes_nothing() {
    let text = "echo one\necho %NOPE%\n";
    let (dir, q) = queue(text);
    let e = q.take(&|| true).unwrap_err();
    assert!(e.to_string().contains(":2: unknown variable %NOPE%"), "{e}");
    assert_eq!(content(&dir, "q.txt"), text);
    assert!(!dir.path().join("q.txt.consumed").exists());
}

#[test]
fn a_missing_queue_file_is_refused_at_open_and_empty_once_running() {
    let dir = tempfile::tempdir().unwrap();
    let e = QueueFile::open(&dir.path().join("nope.txt")).unwrap_err();
    assert!(e.to_string().contains("nope.txt"), "{e}");
    let (dir, q) = queue("echo a\n");
    fs::remove_file(dir.path().join("q.txt")).unwrap();
    assert_eq!(q.take(&|| true).unwrap(), None);
}

#[test]
fn the_permissions_of_the_queue_survive_a_take() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, q) = queue("a\nb\n");
    let path = dir.path().join("q.txt");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    q.take(&|| true).unwrap();
    assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
}

#[test]
fn a_take_waits_for_the_lock_and_reads_what_the_holder_wrote() {
    // The queue is empty until the holder writes, just before it lets go:
    // a take that did not wait would find nothing.
    let (dir, q) = queue("");
    let path = dir.path().join("q.txt");
    let lock_path = q.path.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let other = QueueLock::open(&lock_path).unwrap();
        let held = other.lock().unwrap();
        tx.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        fs::write(&path, "echo added\n").unwrap();
        drop(held);
    });
    rx.recv().unwrap();
    assert_eq!(q.take(&|| true).unwrap().as_deref(), Some("echo added"));
    holder.join().unwrap();
}

#[test]
fn the_stamp_changes_when_the_file_does() {
    let (dir, q) = queue("");
    let before = q.stamp();
    fs::write(dir.path().join("q.txt"), "echo x\n").unwrap();
    assert_ne!(q.stamp(), before);
}

#[test]
fn a_take_no_longer_wanted_once_the_lock_is_held_takes_nothing() {
    let (dir, q) = queue("echo a\n");
    assert_eq!(q.take(&|| false).unwrap(), None);
    assert_eq!(content(&dir, "q.txt"), "echo a\n");
    assert_eq!(content(&dir, "q.txt.consumed"), "");
}

#[test]
fn remaining_without_waiting_says_nothing_while_the_lock_is_held() {
    let (_dir, q) = queue("echo a\n{ command = '%N%', N = [1, 2] }\n");
    let other = QueueLock::open(&q.path).unwrap();
    let held = other.lock().unwrap();
    assert_eq!(q.remaining(false).unwrap(), None);
    drop(held);
    assert_eq!(q.remaining(false).unwrap(), Some(3));
}
