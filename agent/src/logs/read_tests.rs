use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use hyper::body::Bytes;
use proptest::prelude::*;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    LogEnd, LogOptions, LogQueryError, LogReadError,
    follow::{read_log_checking, tail_start},
    read::{CriLineError, parse_cri_line},
};

/// 2026-01-01 00:00:00 UTC.
const T0: u64 = 1_767_225_600;
/// How often the follow tests ask whether the container runs.
const CHECK: Duration = Duration::from_millis(50);
/// How long a test waits for output before failing.
const PATIENCE: Duration = Duration::from_secs(10);

fn at(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds)
}

fn query(pairs: &[(&str, &str)]) -> Result<LogOptions, LogQueryError> {
    let pairs = pairs.iter().map(|&(k, v)| (k.to_owned(), v.to_owned()));
    LogOptions::from_query(pairs, at(T0))
}

/// A CRI log line logged `second` seconds after T0.
fn cri(second: u64, tag: &str, content: &str) -> String {
    format!("2026-01-01T00:00:{second:02}.000000001Z stdout {tag} {content}\n")
}

fn setup(content: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("0.log");
    fs::write(&log, content).unwrap();
    (dir, log)
}

fn append(path: &Path, content: &str) {
    let mut file = fs::OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(content.as_bytes()).unwrap();
}

/// Reads `log` without following; the output and why it ended.
async fn read(log: &Path, options: &LogOptions) -> (String, LogEnd) {
    let (tx, mut rx) = mpsc::channel::<Bytes>(4);
    let cancel = CancellationToken::new();
    let collect = async {
        let mut out = Vec::new();
        while let Some(chunk) = rx.recv().await {
            out.extend_from_slice(&chunk);
        }
        out
    };
    let (end, out) = tokio::join!(
        async move {
            let reader = read_log_checking(log, options, &tx, || async { false }, &cancel, CHECK);
            reader.await.unwrap()
        },
        collect
    );
    (String::from_utf8(out).unwrap(), end)
}

/// A follow of `log` in a task, with the switch telling whether the container runs.
struct Following {
    rx: mpsc::Receiver<Bytes>,
    running: Arc<AtomicBool>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<LogEnd, LogReadError>>,
    received: String,
}

impl Following {
    fn start(log: &Path, options: LogOptions) -> Self {
        let (tx, rx) = mpsc::channel(4);
        let running = Arc::new(AtomicBool::new(true));
        let cancel = CancellationToken::new();
        let task = tokio::spawn({
            let (log, running, cancel) = (log.to_owned(), running.clone(), cancel.clone());
            async move {
                let still_running = move || {
                    let running = running.clone();
                    async move { running.load(Ordering::SeqCst) }
                };
                let options = LogOptions {
                    follow: true,
                    ..options
                };
                read_log_checking(&log, &options, &tx, still_running, &cancel, CHECK).await
            }
        });
        Self {
            rx,
            running,
            cancel,
            task,
            received: String::new(),
        }
    }

    /// Receives until the output is `expected`.
    async fn expect(&mut self, expected: &str) {
        let receive = async {
            while self.received.len() < expected.len() {
                let chunk = self.rx.recv().await.expect("the reader ended early");
                self.received.push_str(std::str::from_utf8(&chunk).unwrap());
            }
        };
        tokio::time::timeout(PATIENCE, receive)
            .await
            .unwrap_or_else(|_| panic!("timed out; received {:?}", self.received));
        assert_eq!(self.received, expected);
    }

    async fn end(self) -> LogEnd {
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the reader did not stop")
            .unwrap()
            .unwrap()
    }
}

// ---- the query ----

#[test]
fn an_empty_query_reads_everything_once() {
    assert_eq!(query(&[]).unwrap(), LogOptions::default());
}

#[test]
fn every_key_is_read() {
    let options = query(&[
        ("follow", "true"),
        ("previous", "1"),
        ("timestamps", "TRUE"),
        ("tailLines", "10"),
        ("limitBytes", "100"),
        ("sinceSeconds", "60"),
        ("container", "app"),
        ("insecureSkipTLSVerifyBackend", "true"),
    ])
    .unwrap();
    assert_eq!(
        options,
        LogOptions {
            tail_lines: Some(10),
            limit_bytes: Some(100),
            since: Some(at(T0 - 60)),
            timestamps: true,
            follow: true,
            previous: true,
        }
    );
}

#[test]
fn booleans_are_false_only_for_false_and_zero() {
    for value in ["false", "FALSE", "False", "0"] {
        assert!(!query(&[("follow", value)]).unwrap().follow, "{value}");
    }
    for value in ["true", "1", "t", "", "yes"] {
        assert!(query(&[("follow", value)]).unwrap().follow, "{value}");
    }
}

#[test]
fn the_first_value_of_a_key_counts() {
    let options = query(&[("tailLines", "3"), ("tailLines", "-1")]).unwrap();
    assert_eq!(options.tail_lines, Some(3));
}

#[test]
fn since_time_is_rfc3339_with_fractional_seconds() {
    let options = query(&[("sinceTime", "2026-01-01T01:00:00.5+01:00")]).unwrap();
    assert_eq!(options.since, Some(at(T0) + Duration::from_millis(500)));
    let options = query(&[("sinceTime", "2026-01-01T00:00:00Z")]).unwrap();
    assert_eq!(options.since, Some(at(T0)));
    assert_eq!(query(&[("sinceTime", "")]).unwrap().since, None);
    let error = query(&[("sinceTime", "yesterday")]).unwrap_err();
    assert_eq!(
        error.to_string(),
        r#"invalid sinceTime "yesterday": not an RFC 3339 time"#
    );
    assert!(!error.is_validation());
}

#[test]
fn the_legacy_tail_key_overrides_tail_lines() {
    let options = query(&[("tailLines", "1"), ("tail", "5")]).unwrap();
    assert_eq!(options.tail_lines, Some(5));
    let options = query(&[("tailLines", "1"), ("tail", "all")]).unwrap();
    assert_eq!(options.tail_lines, None);
}

#[test]
fn values_that_do_not_decode_are_named() {
    let error = query(&[("tailLines", "ten")]).unwrap_err();
    assert_eq!(
        error.to_string(),
        r#"invalid tailLines "ten": not an integer"#
    );
    assert!(!error.is_validation());
    let error = query(&[("limitBytes", "")]).unwrap_err();
    assert_eq!(
        error.to_string(),
        r#"invalid limitBytes "": not an integer"#
    );
    let error = query(&[("sinceSeconds", "99999999999999999999")]).unwrap_err();
    assert!(matches!(
        error,
        LogQueryError::NotAnInteger {
            key: "sinceSeconds",
            ..
        }
    ));
}

#[test]
fn values_out_of_range_fail_validation() {
    let cases = [
        (
            vec![("tailLines", "-1")],
            "invalid tailLines -1: must be greater than or equal to 0",
        ),
        (
            vec![("limitBytes", "0")],
            "invalid limitBytes 0: must be greater than 0",
        ),
        (
            vec![("sinceSeconds", "0")],
            "invalid sinceSeconds 0: must be greater than 0",
        ),
        (
            vec![("sinceSeconds", "5"), ("sinceTime", "2026-01-01T00:00:00Z")],
            "at most one of sinceTime or sinceSeconds may be specified",
        ),
    ];
    for (pairs, message) in cases {
        let error = query(&pairs).unwrap_err();
        assert_eq!(error.to_string(), message);
        assert!(error.is_validation(), "{message}");
    }
    assert_eq!(query(&[("tailLines", "0")]).unwrap().tail_lines, Some(0));
}

#[test]
fn a_huge_since_seconds_means_every_line() {
    let options = query(&[("sinceSeconds", &i64::MAX.to_string())]).unwrap();
    assert!(options.since.is_none_or(|since| since < UNIX_EPOCH));
}

proptest! {
    #[test]
    fn from_query_never_panics(
        pairs in proptest::collection::vec(
            (
                prop_oneof![
                    Just("follow".to_owned()), Just("previous".to_owned()),
                    Just("timestamps".to_owned()), Just("tailLines".to_owned()),
                    Just("tail".to_owned()), Just("limitBytes".to_owned()),
                    Just("sinceSeconds".to_owned()), Just("sinceTime".to_owned()),
                    ".*",
                ],
                prop_oneof![".*", "-?[0-9]{1,20}", Just("all".to_owned())],
            ),
            0..8,
        ),
        now in any::<u64>(),
    ) {
        let now = UNIX_EPOCH + Duration::from_nanos(now);
        let _ = LogOptions::from_query(pairs, now);
    }
}

// ---- CRI lines ----

#[test]
fn a_full_line_keeps_its_newline() {
    let line = parse_cri_line(b"2026-01-01T00:00:00.000000001Z stdout F hello world\n").unwrap();
    assert!(!line.stderr && !line.partial);
    assert_eq!(line.content, b"hello world\n");
    assert_eq!(line.time.instant.as_second(), T0 as i64);
    assert_eq!(line.time.instant.subsec_nanosecond(), 1);
}

#[test]
fn a_partial_line_drops_its_newline() {
    let line = parse_cri_line(b"2026-01-01T02:00:00+02:00 stderr P part\n").unwrap();
    assert!(line.stderr && line.partial);
    assert_eq!(line.content, b"part");
    assert_eq!(line.time.instant.as_second(), T0 as i64);
    // Further tags after `:` are allowed; the first decides.
    let line = parse_cri_line(b"2026-01-01T00:00:00Z stdout P:x y\n").unwrap();
    assert!(line.partial);
    assert_eq!(line.content, b"y");
    let line = parse_cri_line(b"2026-01-01T00:00:00Z stdout F \n").unwrap();
    assert_eq!(line.content, b"\n");
}

#[test]
fn malformed_lines_say_why() {
    let cases: [(&[u8], CriLineError); 5] = [
        (b"garbage\n", CriLineError::NoTimestamp),
        (b"yesterday stdout F x\n", CriLineError::BadTimestamp),
        (b"2026-01-01T00:00:00Z stdout\n", CriLineError::NoStream),
        (b"2026-01-01T00:00:00Z stdin F x\n", CriLineError::BadStream),
        (b"2026-01-01T00:00:00Z stdout F\n", CriLineError::NoTag),
    ];
    for (line, error) in cases {
        assert_eq!(parse_cri_line(line), Err(error));
    }
}

// ---- reading ----

#[tokio::test]
async fn partial_lines_join_and_malformed_ones_are_skipped() {
    let content = [
        cri(0, "F", "one"),
        cri(1, "P", "two "),
        cri(1, "P", "and "),
        "not a log line\n".to_owned(),
        cri(2, "F", "a half"),
        "2026-01-01T00:00:03Z stderr F incomplete".to_owned(),
    ]
    .concat();
    let (_dir, log) = setup(&content);
    let (out, end) = read(&log, &LogOptions::default()).await;
    assert_eq!(out, "one\ntwo and a half\nincomplete");
    assert_eq!(end, LogEnd::Eof);
}

#[tokio::test]
async fn timestamps_prefix_each_logical_line_once_as_written() {
    let content = [
        cri(0, "F", "one"),
        cri(1, "P", "two "),
        cri(2, "F", "parts"),
        "2026-01-01T02:00:03.5+02:00 stdout F zoned\n".to_owned(),
    ]
    .concat();
    let (_dir, log) = setup(&content);
    let options = LogOptions {
        timestamps: true,
        ..LogOptions::default()
    };
    let (out, _) = read(&log, &options).await;
    assert_eq!(
        out,
        "2026-01-01T00:00:00.000000001Z one\n\
         2026-01-01T00:00:01.000000001Z two parts\n\
         2026-01-01T02:00:03.500000000+02:00 zoned\n"
    );
}

#[tokio::test]
async fn tail_reads_the_last_lines() {
    let content: String = (0..5).map(|i| cri(i, "F", &format!("line {i}"))).collect();
    let (_dir, log) = setup(&content);
    let tail = |n| LogOptions {
        tail_lines: Some(n),
        ..LogOptions::default()
    };
    assert_eq!(read(&log, &tail(2)).await.0, "line 3\nline 4\n");
    assert_eq!(read(&log, &tail(0)).await.0, "");
    let all = "line 0\nline 1\nline 2\nline 3\nline 4\n";
    assert_eq!(read(&log, &tail(5)).await.0, all);
    assert_eq!(read(&log, &tail(100)).await.0, all);
}

#[test]
fn tail_start_searches_backwards_across_chunks() {
    let (_dir, log) = setup("a\nbb\nccc\n");
    let file = fs::File::open(&log).unwrap();
    for chunk in [1, 2, 3, 4096] {
        assert_eq!(tail_start(&file, 0, chunk).unwrap(), 9, "chunk {chunk}");
        assert_eq!(tail_start(&file, 1, chunk).unwrap(), 5, "chunk {chunk}");
        assert_eq!(tail_start(&file, 2, chunk).unwrap(), 2, "chunk {chunk}");
        assert_eq!(tail_start(&file, 3, chunk).unwrap(), 0, "chunk {chunk}");
        assert_eq!(tail_start(&file, 9, chunk).unwrap(), 0, "chunk {chunk}");
    }
    // An incomplete last line comes with the lines asked for.
    let (_dir, log) = setup("a\nbb\ncc");
    let file = fs::File::open(&log).unwrap();
    assert_eq!(tail_start(&file, 1, 2).unwrap(), 2);
}

#[tokio::test]
async fn tail_of_a_file_bigger_than_the_read_chunk() {
    // About 600 KiB, several times the reader's 64 KiB chunk.
    let content: String = (0..10_000)
        .map(|i| cri(i % 60, "F", &format!("line {i:05}")))
        .collect();
    let (_dir, log) = setup(&content);
    let options = LogOptions {
        tail_lines: Some(3),
        ..LogOptions::default()
    };
    let (out, end) = read(&log, &options).await;
    assert_eq!(out, "line 09997\nline 09998\nline 09999\n");
    assert_eq!(end, LogEnd::Eof);
    let (out, _) = read(&log, &LogOptions::default()).await;
    assert_eq!(out.lines().count(), 10_000);
}

#[tokio::test]
async fn since_skips_older_lines() {
    let content: String = (0..4).map(|i| cri(i, "F", &format!("line {i}"))).collect();
    let (_dir, log) = setup(&content);
    let options = LogOptions {
        since: Some(at(T0 + 2)),
        ..LogOptions::default()
    };
    assert_eq!(read(&log, &options).await.0, "line 2\nline 3\n");
}

#[tokio::test]
async fn limit_bytes_cuts_the_output() {
    let content: String = (0..4).map(|i| cri(i, "F", &format!("line {i}"))).collect();
    let (_dir, log) = setup(&content);
    let options = LogOptions {
        limit_bytes: Some(10),
        ..LogOptions::default()
    };
    assert_eq!(
        read(&log, &options).await,
        ("line 0\nlin".to_owned(), LogEnd::LimitReached)
    );
    let options = LogOptions {
        limit_bytes: Some(10),
        timestamps: true,
        ..LogOptions::default()
    };
    assert_eq!(read(&log, &options).await.0, "2026-01-01");
}

#[tokio::test]
async fn an_overlong_line_is_skipped() {
    let overlong = "x".repeat(1100 * 1024);
    let content = [cri(0, "F", &overlong), cri(1, "F", "after")].concat();
    let (_dir, log) = setup(&content);
    assert_eq!(read(&log, &LogOptions::default()).await.0, "after\n");
}

#[tokio::test]
async fn a_missing_log_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("missing.log");
    let (tx, _rx) = mpsc::channel(1);
    let cancel = CancellationToken::new();
    let options = LogOptions::default();
    let error = read_log_checking(&log, &options, &tx, || async { true }, &cancel, CHECK)
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with(&format!("cannot open container log {}: ", log.display())),
        "{message}"
    );
}

// ---- following ----

#[tokio::test]
async fn follow_receives_appended_lines_until_the_container_stops() {
    let (_dir, log) = setup(&cri(0, "F", "first"));
    let mut following = Following::start(&log, LogOptions::default());
    following.expect("first\n").await;
    append(&log, &cri(1, "P", "second "));
    append(&log, &cri(1, "F", "line"));
    following.expect("first\nsecond line\n").await;
    following.running.store(false, Ordering::SeqCst);
    // Written before the reader noticed: still read.
    append(&log, &cri(2, "F", "last"));
    following.expect("first\nsecond line\nlast\n").await;
    assert_eq!(following.end().await, LogEnd::ContainerExited);
}

#[tokio::test]
async fn follow_ends_at_once_for_a_stopped_container() {
    let (_dir, log) = setup(&cri(0, "F", "only"));
    let mut following = Following::start(&log, LogOptions::default());
    following.running.store(false, Ordering::SeqCst);
    following.expect("only\n").await;
    assert_eq!(following.end().await, LogEnd::ContainerExited);
}

#[tokio::test]
async fn follow_with_tail_starts_at_the_last_lines() {
    let content: String = (0..3).map(|i| cri(i, "F", &format!("line {i}"))).collect();
    let (_dir, log) = setup(&content);
    let options = LogOptions {
        tail_lines: Some(1),
        ..LogOptions::default()
    };
    let mut following = Following::start(&log, options);
    following.expect("line 2\n").await;
    append(&log, &cri(3, "F", "line 3"));
    following.expect("line 2\nline 3\n").await;
    following.cancel.cancel();
    assert_eq!(following.end().await, LogEnd::Cancelled);
}

#[tokio::test]
async fn follow_continues_across_a_rotation() {
    let (dir, log) = setup(&cri(0, "F", "old 1"));
    // The runtime's descriptor, which keeps writing the old file until it reopens.
    let mut runtime = fs::OpenOptions::new().append(true).open(&log).unwrap();
    let mut following = Following::start(&log, LogOptions::default());
    following.expect("old 1\n").await;
    runtime.write_all(cri(1, "F", "old 2").as_bytes()).unwrap();
    fs::rename(&log, dir.path().join("0.log.20260101-000000")).unwrap();
    runtime.write_all(cri(2, "F", "old 3").as_bytes()).unwrap();
    // ReopenContainerLog: a new file at the path.
    fs::write(&log, cri(3, "F", "new 1")).unwrap();
    drop(runtime);
    following.expect("old 1\nold 2\nold 3\nnew 1\n").await;
    append(&log, &cri(4, "F", "new 2"));
    following
        .expect("old 1\nold 2\nold 3\nnew 1\nnew 2\n")
        .await;
    following.cancel.cancel();
    assert_eq!(following.end().await, LogEnd::Cancelled);
}

#[tokio::test]
async fn follow_stops_when_the_receiver_is_dropped() {
    let (_dir, log) = setup(&cri(0, "F", "first"));
    let mut following = Following::start(&log, LogOptions::default());
    following.expect("first\n").await;
    let Following { rx, task, .. } = following;
    drop(rx);
    let end = tokio::time::timeout(PATIENCE, task).await.unwrap().unwrap();
    assert_eq!(end.unwrap(), LogEnd::ReceiverGone);
}

#[tokio::test]
async fn follow_stops_at_the_byte_limit() {
    let (_dir, log) = setup(&cri(0, "F", "first"));
    let options = LogOptions {
        limit_bytes: Some(9),
        ..LogOptions::default()
    };
    let mut following = Following::start(&log, options);
    following.expect("first\n").await;
    append(&log, &cri(1, "F", "second"));
    following.expect("first\nsec").await;
    assert_eq!(following.end().await, LogEnd::LimitReached);
}
