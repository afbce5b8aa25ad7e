//! Container log rotation through the real kernlet binary, real containerd and runc: a container
//! writing fast gets its log rotated (`containerLogMaxSize: 64Ki`), at most
//! `containerLogMaxFiles: 3` files exist, older rotated files are gzipped, and the live log keeps
//! receiving lines after each rotation (the runtime's `ReopenContainerLog` worked).
#![expect(
    clippy::disallowed_methods,
    reason = "waits on real processes and measures real time: std time is the right clock"
)]
use std::{
    collections::BTreeSet,
    fs,
    io::Read,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use kernlet_tests::node::TestNode;

const WAIT: Duration = Duration::from_mins(1);

/// Each round writes a `tick N` line and ~20 KB of filler (~100 KB once the runtime adds its
/// timestamp prefix to every line), several rounds a second.
const WRITER: &str = "i=0; while true; do i=$((i+1)); echo \"tick $i\"; \
                      yes \"fill $i\" | head -c 20000; echo; sleep 0.3; done";

fn manifest() -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: chatty\nspec:\n  \
         terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    \
         image: kernlet.local/busybox:1\n    imagePullPolicy: Never\n    \
         command: [\"sh\", \"-c\", {WRITER:?}]\n"
    )
}

/// The log files of the container: names in its log directory that belong to `0.log`.
fn log_files(dir: &Path) -> Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name().into_string().unwrap_or_default();
        if name == "0.log" || name.starts_with("0.log.") {
            names.insert(name);
        }
    }
    Ok(names)
}

/// The files upstream counts against `containerLogMaxFiles`: not a `.tmp` being written, not a
/// plain file whose `.gz` is already complete (both exist for an instant while compressing).
fn counted(names: &BTreeSet<String>) -> Vec<&String> {
    names
        .iter()
        .filter(|n| !has_ext(n, "tmp") && !names.contains(&format!("{n}.gz")))
        .collect()
}

/// Whether `name`'s last `.`-part is `ext` (`gz` for compressed, `tmp` while compressing).
fn has_ext(name: &str, ext: &str) -> bool {
    Path::new(name).extension() == Some(ext.as_ref())
}

/// A rotated file kept uncompressed: `0.log.<timestamp>`.
fn is_rotated_plain(name: &str) -> bool {
    name.starts_with("0.log.") && !has_ext(name, "gz") && !has_ext(name, "tmp")
}

/// The highest `tick N` in a CRI log text.
fn last_tick(text: &str) -> Option<u64> {
    text.lines()
        .filter_map(|line| line.rsplit_once(" tick ")?.1.trim().parse().ok())
        .max()
}

#[test]
#[ignore = "host: needs root, containerd and runc; run by cargo xtask test"]
fn fast_writer_log_is_rotated_compressed_and_bounded() -> Result<()> {
    let started = Instant::now();
    let node = TestNode::start_with(
        "containerLogMaxSize: 64Ki\ncontainerLogMaxFiles: 3\n",
        &[(kernlet::logs::MONITOR_INTERVAL_ENV, "1s")],
    )?;
    node.write_manifest("chatty.yaml", &manifest())?;
    let mut uid = String::new();
    node.wait_until("chatty runs", WAIT, |n| {
        let pod = n.pod("chatty-testnode")?.unwrap_or_default();
        uid = pod["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        Ok(pod["status"]["phase"] == "Running")
    })?;
    let running = started.elapsed();
    let dir = node
        .logs()
        .join(format!("default_chatty-testnode_{uid}/main"));

    // Rotated files appear, and a second rotation gzips the first.
    node.wait_until("a rotated log is gzipped", WAIT, |_| {
        Ok(log_files(&dir)?.iter().any(|n| has_ext(n, "gz")))
    })?;
    let first_gz = started.elapsed();

    // Watch several more rotations: never more than 3 files, and the retention moves on.
    let before = log_files(&dir)?;
    let watch_until = Instant::now() + Duration::from_secs(6);
    let mut most = 0;
    while Instant::now() < watch_until {
        let names = log_files(&dir)?;
        if counted(&names).len() > 3 {
            // A directory listing is not atomic: one racing a rotation can see a file under
            // both names. A real excess is still there a moment later.
            std::thread::sleep(Duration::from_millis(20));
            let again = log_files(&dir)?;
            let files = counted(&again);
            if files.len() > 3 {
                bail!("more than containerLogMaxFiles: {files:?}");
            }
        }
        most = most.max(counted(&names).len());
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = log_files(&dir)?;
    assert_eq!(most, 3, "never saw the full set of 3 files");
    assert_ne!(before, after, "no rotation while watching");
    let files = counted(&after);
    assert!(
        files.iter().filter(|n| has_ext(n, "gz")).count() <= 1,
        "{after:?}"
    );
    assert!(
        files.iter().filter(|n| !has_ext(n, "gz")).count() <= 2,
        "{after:?}"
    );

    // A gzipped rotation is a complete log of the writer (retried: rotations replace it).
    node.wait_until("a gzipped log decompresses to ticks", WAIT, |_| {
        let names = log_files(&dir)?;
        let Some(gz) = names.iter().find(|n| has_ext(n, "gz")) else {
            return Ok(false);
        };
        Ok(gunzip(&dir.join(gz)).is_ok_and(|text| last_tick(&text).is_some()))
    })?;

    // After a rotation the runtime writes a new live file: it gets ticks newer than any in the
    // newest rotated file, and is a different file.
    let live = dir.join("0.log");
    let mut rotated_tick = 0;
    let mut rotated_inode = 0;
    node.wait_until("the newest rotated log is readable", WAIT, |_| {
        let names = log_files(&dir)?;
        let Some(newest) = names.iter().rfind(|n| is_rotated_plain(n)) else {
            return Ok(false);
        };
        let path: PathBuf = dir.join(newest);
        let Ok(text) = fs::read_to_string(&path) else {
            return Ok(false);
        };
        rotated_tick = last_tick(&text).unwrap_or(0);
        rotated_inode = fs::metadata(&path)?.ino();
        Ok(rotated_tick > 0)
    })?;
    node.wait_until("the live log gets newer lines", WAIT, |_| {
        let Ok(text) = fs::read_to_string(&live) else {
            return Ok(false);
        };
        Ok(last_tick(&text).is_some_and(|t| t > rotated_tick)
            && fs::metadata(&live)?.ino() != rotated_inode)
    })?;
    let log = node.log();
    assert!(log.contains("rotated container log"), "no rotation logged");
    assert!(
        !log.contains("container log rotation failed"),
        "a rotation failed:\n{log}"
    );
    eprintln!(
        "pod running after {running:?}, first gzip after {first_gz:?}, done after {:?}",
        started.elapsed()
    );
    Ok(())
}

/// Decompresses a gzip file with the host's `gzip -dc` (the test crate has no gzip library).
fn gunzip(path: &Path) -> Result<String> {
    let mut text = String::new();
    let mut child = std::process::Command::new("gzip")
        .arg("-dc")
        .arg(path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running gzip -dc")?;
    child
        .stdout
        .take()
        .context("gzip stdout")?
        .read_to_string(&mut text)?;
    let status = child.wait()?;
    if !status.success() {
        bail!("gzip -dc {} failed: {status}", path.display());
    }
    Ok(text)
}
