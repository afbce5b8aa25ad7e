use std::{
    fs,
    io::Read,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use flate2::read::GzDecoder;

use super::*;

/// 2023-11-14 22:13:20 UTC.
const T0: u64 = 1_700_000_000;

fn at(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds)
}

fn settings(max_size: u64, max_files: usize) -> LogRotation {
    LogRotation::new(max_size, max_files, Duration::from_secs(1))
}

fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("0.log");
    (dir, log)
}

/// File names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn gunzip(path: &Path) -> String {
    let mut text = String::new();
    GzDecoder::new(fs::File::open(path).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    text
}

/// What the runtime does on `ReopenContainerLog`: a fresh, empty live file.
fn reopened(log: &Path) {
    fs::write(log, "").unwrap();
}

#[test]
fn timestamp_is_upstreams_format_in_utc() {
    assert_eq!(rotation_timestamp(at(T0)), "20231114-221320");
    assert_eq!(rotation_timestamp(UNIX_EPOCH), "19700101-000000");
}

#[test]
fn under_size_is_left_alone() {
    let (dir, log) = setup();
    fs::write(&log, "short\n").unwrap();
    let outcome = rotate_file(&log, &settings(100, 5), at(T0)).unwrap();
    assert_eq!(outcome, RotationOutcome::UnderSize { size: 6 });
    assert_eq!(names(dir.path()), ["0.log"]);
}

#[test]
fn missing_log_is_reported() {
    let (_dir, log) = setup();
    let outcome = rotate_file(&log, &settings(100, 5), at(T0)).unwrap();
    assert_eq!(outcome, RotationOutcome::Missing);
}

#[test]
fn over_size_renames_the_live_file_with_a_timestamp() {
    let (dir, log) = setup();
    fs::write(&log, "x".repeat(100)).unwrap();
    // Exactly the limit rotates, as upstream (`size < max` is the only skip).
    let outcome = rotate_file(&log, &settings(100, 5), at(T0)).unwrap();
    let rotated = dir.path().join("0.log.20231114-221320");
    assert_eq!(
        outcome,
        RotationOutcome::Rotated {
            size: 100,
            rotated: rotated.clone(),
            compressed: vec![],
            removed: vec![],
        }
    );
    assert!(!log.exists());
    assert_eq!(fs::read_to_string(&rotated).unwrap(), "x".repeat(100));
}

#[test]
fn older_rotated_files_are_gzipped_and_the_newest_stays_plain() {
    let (dir, log) = setup();
    fs::write(&log, "first\n").unwrap();
    rotate_file(&log, &settings(1, 5), at(T0)).unwrap();
    fs::write(&log, "second\n").unwrap();
    let outcome = rotate_file(&log, &settings(1, 5), at(T0 + 10)).unwrap();
    let RotationOutcome::Rotated { compressed, .. } = outcome else {
        panic!("not rotated: {outcome:?}");
    };
    let gz = dir.path().join("0.log.20231114-221320.gz");
    assert_eq!(compressed, std::slice::from_ref(&gz));
    assert_eq!(
        names(dir.path()),
        ["0.log.20231114-221320.gz", "0.log.20231114-221330"]
    );
    assert_eq!(gunzip(&gz), "first\n");
    assert_eq!(
        fs::read_to_string(dir.path().join("0.log.20231114-221330")).unwrap(),
        "second\n"
    );
}

#[test]
fn at_most_max_files_are_kept_oldest_removed_first() {
    let (dir, log) = setup();
    for i in 0..6 {
        fs::write(&log, format!("round {i}\n")).unwrap();
        rotate_file(&log, &settings(1, 3), at(T0 + i * 60)).unwrap();
        reopened(&log);
        assert!(names(dir.path()).len() <= 3, "{:?}", names(dir.path()));
    }
    // The live file, the newest rotated one plain, and one older compressed.
    assert_eq!(
        names(dir.path()),
        ["0.log", "0.log.20231114-221720.gz", "0.log.20231114-221820"]
    );
    assert_eq!(
        gunzip(&dir.path().join("0.log.20231114-221720.gz")),
        "round 4\n"
    );
}

#[test]
fn two_files_keep_only_the_just_rotated_one() {
    let (dir, log) = setup();
    for i in 0..3 {
        fs::write(&log, format!("round {i}\n")).unwrap();
        rotate_file(&log, &settings(1, 2), at(T0 + i)).unwrap();
        reopened(&log);
    }
    assert_eq!(names(dir.path()), ["0.log", "0.log.20231114-221322"]);
}

#[test]
fn leftovers_of_interrupted_rotations_are_removed() {
    let (dir, log) = setup();
    fs::write(&log, "live\n").unwrap();
    let old = dir.path().join("0.log.20231114-000000");
    fs::write(&old, "compressed, not yet removed\n").unwrap();
    fs::write(dir.path().join("0.log.20231114-000000.gz"), "gz").unwrap();
    fs::write(dir.path().join("0.log.20231114-000100.tmp"), "half").unwrap();
    // Another container's log is not this log's rotated file.
    fs::write(dir.path().join("1.log"), "other").unwrap();
    let outcome = rotate_file(&log, &settings(1, 5), at(T0)).unwrap();
    let RotationOutcome::Rotated { removed, .. } = outcome else {
        panic!("not rotated: {outcome:?}");
    };
    assert_eq!(removed, [old, dir.path().join("0.log.20231114-000100.tmp")]);
    assert_eq!(
        names(dir.path()),
        ["0.log.20231114-000000.gz", "0.log.20231114-221320", "1.log"]
    );
}

#[test]
fn a_taken_name_postpones_the_rotation() {
    let (dir, log) = setup();
    fs::write(&log, "first\n").unwrap();
    rotate_file(&log, &settings(1, 5), at(T0)).unwrap();
    fs::write(&log, "second\n").unwrap();
    let outcome = rotate_file(&log, &settings(1, 5), at(T0)).unwrap();
    assert_eq!(
        outcome,
        RotationOutcome::NameTaken {
            rotated: dir.path().join("0.log.20231114-221320")
        }
    );
    assert_eq!(fs::read_to_string(&log).unwrap(), "second\n");
}

#[test]
fn errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("0.log");
    fs::write(&log, "x").unwrap();
    let error = restore_rotated(&log, &dir.path().join("gone")).unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with("cannot rename container log"),
        "{message}"
    );
    assert!(message.contains(&dir.path().join("gone").display().to_string()));
}

fn unavailable() -> CriError {
    CriError::Call {
        method: "ReopenContainerLog",
        status: tonic::Status::unavailable("shim gone"),
    }
}

#[tokio::test]
async fn reopen_failure_renames_the_log_back() {
    let (dir, log) = setup();
    fs::write(&log, "keep me\n").unwrap();
    let error = check_log(log.clone(), settings(1, 5), || async { Err(unavailable()) })
        .await
        .unwrap_err();
    assert!(matches!(error, LogError::Reopen { .. }), "{error}");
    assert!(error.to_string().contains("0.log"), "{error}");
    assert_eq!(names(dir.path()), ["0.log"]);
    assert_eq!(fs::read_to_string(&log).unwrap(), "keep me\n");
}

#[tokio::test]
async fn rotation_reopens_the_log() {
    let (dir, log) = setup();
    fs::write(&log, "full\n").unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let reopen = {
        let (calls, log) = (calls.clone(), log.clone());
        move || async move {
            calls.fetch_add(1, Ordering::SeqCst);
            reopened(&log);
            Ok(())
        }
    };
    let outcome = check_log(log.clone(), settings(1, 5), reopen)
        .await
        .unwrap();
    assert!(
        matches!(outcome, RotationOutcome::Rotated { .. }),
        "{outcome:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(names(dir.path()).len(), 2);
    assert_eq!(fs::read_to_string(&log).unwrap(), "");
}

#[tokio::test]
async fn missing_log_is_reopened_and_small_one_is_not() {
    let (_dir, log) = setup();
    let calls = Arc::new(AtomicUsize::new(0));
    let reopen = |calls: Arc<AtomicUsize>| {
        move || async move {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    };
    let outcome = check_log(log.clone(), settings(10, 5), reopen(calls.clone()))
        .await
        .unwrap();
    assert_eq!(outcome, RotationOutcome::Missing);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    fs::write(&log, "small").unwrap();
    let outcome = check_log(log.clone(), settings(10, 5), reopen(calls.clone()))
        .await
        .unwrap();
    assert_eq!(outcome, RotationOutcome::UnderSize { size: 5 });
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn settings_follow_upstream_limits() {
    let s = LogRotation::new(10, 1, Duration::ZERO);
    assert_eq!(s.max_files(), 2);
    assert_eq!(s.interval(), LogRotation::DEFAULT_INTERVAL);
    let config = crate::config::KubeletConfig::default();
    let s = LogRotation::from_config(&config).unwrap();
    assert_eq!((s.max_size(), s.max_files()), (10 << 20, 5));
}

#[test]
fn interval_override_parses_go_durations() {
    assert_eq!(
        interval_from_env(Some("1s")).ok(),
        Some(Duration::from_secs(1))
    );
    assert_eq!(
        interval_from_env(Some("250ms")).ok(),
        Some(Duration::from_millis(250))
    );
    assert!(matches!(
        interval_from_env(Some("0s")),
        Err(LogError::IntervalNotPositive)
    ));
    assert!(matches!(
        interval_from_env(Some("soon")),
        Err(LogError::IntervalParse(_))
    ));
    assert!(matches!(
        interval_from_env(None),
        Err(LogError::IntervalNotUtf8)
    ));
}
