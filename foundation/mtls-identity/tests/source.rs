//! The rotation model: `Source`, `Publisher` and the `FilePoller`'s change test, bad files,
//! its thread's lifetime, and use from sync code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mtls_identity::source::{FilePoller, Publisher, Source};

/// A poller parsing one file into its trimmed text, refusing an empty one.
fn text_poller(path: &Path, interval: Option<Duration>) -> FilePoller<String, io::Error> {
    let shown = path.display().to_string();
    let builder = FilePoller::builder("test", [path], move |files: &[Vec<u8>]| {
        let text = String::from_utf8_lossy(&files[0]).trim().to_owned();
        if text.is_empty() {
            return Err(io::Error::other(format!(
                "{shown}: expected a token, saw an empty file"
            )));
        }
        Ok(text)
    });
    match interval {
        Some(every) => builder.interval(every),
        None => builder,
    }
    .start()
    .expect("the file parses at start")
}

fn set_mtime(path: &Path, to: std::time::SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(to)
        .unwrap();
}

#[test]
fn the_same_contents_rewritten_are_no_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "one").unwrap();
    let poller = text_poller(&path, None);
    let source = poller.source();
    let before = source.current();

    // Rewritten with a new mtime (an hour on) and by a rename over it: same bytes.
    std::fs::write(&path, "one").unwrap();
    set_mtime(
        &path,
        std::time::SystemTime::now() + Duration::from_secs(3600),
    );
    assert!(
        !poller.check().unwrap(),
        "same contents, new mtime: no change"
    );
    let other = dir.path().join("token.new");
    std::fs::write(&other, "one").unwrap();
    std::fs::rename(&other, &path).unwrap();
    assert!(
        !poller.check().unwrap(),
        "same contents renamed over: no change"
    );

    assert!(
        !source.has_changed(),
        "no change event for the same contents"
    );
    assert!(
        Arc::ptr_eq(&before, &source.current()),
        "the value in place is the first one"
    );
}

#[test]
fn changed_contents_with_the_same_mtime_are_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "aaaa").unwrap();
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let poller = text_poller(&path, None);
    let source = poller.source();

    // Same length and, set back, the same mtime: only the contents tell.
    std::fs::write(&path, "bbbb").unwrap();
    set_mtime(&path, mtime);
    assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime);
    assert!(
        poller.check().unwrap(),
        "new contents under the same mtime are a change"
    );
    assert!(source.has_changed());
    assert_eq!(*source.current(), "bbbb");
}

#[test]
fn a_broken_or_missing_file_keeps_the_last_good_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "good").unwrap();
    let poller = text_poller(&path, None);
    let source = poller.source();

    std::fs::write(&path, "\n").unwrap();
    let err = poller.check().unwrap_err();
    assert!(
        err.to_string()
            .contains("expected a token, saw an empty file"),
        "{err}"
    );
    assert_eq!(*source.current(), "good");

    std::fs::remove_file(&path).unwrap();
    let err = poller.check().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "names the file: {err}"
    );
    assert_eq!(*source.current(), "good");
    assert!(!source.has_changed(), "nothing was published");

    std::fs::write(&path, "better").unwrap();
    assert!(poller.check().unwrap());
    assert_eq!(*source.current(), "better");
}

#[test]
fn a_bad_file_at_start_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent");
    let err = FilePoller::builder("test", [&path], |_: &[Vec<u8>]| Ok::<_, io::Error>(()))
        .start()
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("cannot read {}: ", path.display())),
        "{err}"
    );
}

#[test]
fn files_are_read_together_in_order_and_published_with_the_previous_value() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::write(&a, "1").unwrap();
    std::fs::write(&b, "2").unwrap();
    let published = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = Arc::clone(&published);
    let poller = FilePoller::builder("pair", [&a, &b], |files: &[Vec<u8>]| {
        Ok::<_, io::Error>(files.concat())
    })
    .on_publish(move |paths, previous, new| {
        log.lock().unwrap().push((
            paths.to_owned(),
            previous.map(|p| String::from_utf8_lossy(p).into_owned()),
            String::from_utf8_lossy(new).into_owned(),
        ));
    })
    .start()
    .unwrap();
    assert_eq!(poller.paths(), [a.clone(), b.clone()]);
    std::fs::write(&b, "3").unwrap();
    assert!(poller.check().unwrap());
    let paths = format!("{}, {}", a.display(), b.display());
    assert_eq!(
        *published.lock().unwrap(),
        [
            (paths.clone(), None, "12".to_owned()),
            (paths, Some("12".to_owned()), "13".to_owned()),
        ]
    );
}

/// Names of this process's threads (Linux `/proc/self/task/*/comm`).
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect()
}

#[tokio::test]
async fn the_poller_thread_sees_changes_and_ends_when_its_sources_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "one").unwrap();
    let poller = FilePoller::builder("stoptest", [&path], |files: &[Vec<u8>]| {
        Ok::<_, io::Error>(files[0].clone())
    })
    .interval(Duration::from_millis(5))
    .start()
    .unwrap();
    let mut source = poller.source();
    let thread = "mtls-poll-stopt"; // comm keeps 15 bytes of "mtls-poll-stoptest"
    let deadline = Instant::now() + Duration::from_secs(10);
    while !thread_names().iter().any(|n| n == thread) {
        // The thread names itself once it runs.
        assert!(
            Instant::now() < deadline,
            "no thread {thread}: {:?}",
            thread_names()
        );
        tokio::task::yield_now().await;
    }

    drop(poller);
    std::fs::write(&path, "two").unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), source.changed())
        .await
        .expect("the thread publishes the new contents within 10 s (the source keeps it running)");
    assert_eq!(next.as_deref().map(Vec::as_slice), Some(&b"two"[..]));

    // A bare receiver does not keep the thread; it sees the publisher go when it ends.
    let mut rx = source.subscribe();
    let copy = source.clone();
    drop(source);
    assert!(
        thread_names().iter().any(|n| n == thread),
        "a clone still holds the poller"
    );
    drop(copy);
    tokio::time::timeout(Duration::from_secs(10), rx.changed())
        .await
        .expect("the thread ends within 10 s of its last source being dropped")
        .expect_err("no value is published after the last source is dropped");
    let deadline = Instant::now() + Duration::from_secs(10);
    while thread_names().iter().any(|n| n == thread) {
        assert!(
            Instant::now() < deadline,
            "thread {thread} still running after 10 s"
        );
        tokio::task::yield_now().await;
    }
    assert_eq!(**rx.borrow(), *b"two", "the last value stays readable");
}

#[test]
fn sources_are_read_from_sync_code_without_a_runtime() {
    // No tokio runtime anywhere in this test: a publisher on one OS thread, readers on others.
    let publisher = Publisher::new(0u32);
    let source = publisher.source();
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let source: Source<u32> = source.clone();
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(10);
                while *source.current() != 100 {
                    assert!(Instant::now() < deadline, "100 not seen within 10 s");
                    std::thread::yield_now();
                }
                source.has_changed()
            })
        })
        .collect();
    for n in 1..=100 {
        publisher.publish(n);
    }
    for reader in readers {
        assert!(
            reader.join().unwrap(),
            "a reader that never called changed() sees a change"
        );
    }

    // And a file poller, on its own thread, feeds sync readers the same way.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "one").unwrap();
    let source = text_poller(&path, Some(Duration::from_millis(5))).source();
    std::fs::write(&path, "two").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while *source.current() != "two" {
        assert!(
            Instant::now() < deadline,
            "the poller did not publish within 10 s"
        );
        std::thread::yield_now();
    }
}

#[tokio::test]
async fn a_fixed_source_and_a_dropped_publisher_have_no_more_changes() {
    let mut fixed = Source::fixed("x");
    assert_eq!(fixed.changed().await, None);
    assert_eq!(*fixed.current(), "x");

    let publisher = Publisher::new(1);
    let mut source = publisher.source();
    let other = publisher.clone();
    drop(publisher);
    other.update(|n| n + 1);
    assert_eq!(source.changed().await.as_deref(), Some(&2));
    drop(other);
    assert_eq!(source.changed().await, None);
    assert_eq!(*source.current(), 2, "the last value stays");
}
