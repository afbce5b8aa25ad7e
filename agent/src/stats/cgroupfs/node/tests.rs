//! `/proc` parsers on files captured from the host (6.18), and the node reader on a fake `/proc`.
use std::fs;

use super::*;

const HOST_PROC_STAT: &str = include_str!("../fixtures/host-6.18-proc-stat");
const HOST_MEMINFO: &str = include_str!("../fixtures/host-6.18-meminfo");
const HOST_PRESSURE: &str = include_str!("../fixtures/host-6.18-proc-pressure-memory");

#[test]
fn proc_stat_cpu_line() {
    let cpu = proc_stat_cpu(HOST_PROC_STAT).unwrap();
    assert_eq!(
        cpu,
        ProcStatCpu {
            user: 530_922,
            system: 93_614,
            idle: 498_216,
            iowait: 4645,
            softirq: 958,
            steal: 377,
            ..ProcStatCpu::default()
        }
    );
    assert_eq!(cpu.busy(), 530_922 + 93_614 + 958 + 377);
    assert_eq!(cpu.total(), cpu.busy() + 498_216 + 4645);
    // A 2.6-era line with only the first counters.
    let old = proc_stat_cpu("cpu  10 1 5 100\ncpu0 10 1 5 100\n").unwrap();
    assert_eq!((old.user, old.idle, old.steal), (10, 100, 0));
}

#[test]
fn proc_stat_errors() {
    assert_eq!(
        proc_stat_cpu("cpu0 1 2 3 4\n"),
        Err(ParseError::Missing {
            file: "/proc/stat",
            key: "cpu"
        })
    );
    for line in ["cpu  1 2 3", "cpu  1 2 x 4", "cpu  1 2 3 4 5 6 7 8 9 10 11"] {
        assert!(
            matches!(proc_stat_cpu(line), Err(ParseError::Line { line: l, .. }) if l == line),
            "{line}"
        );
    }
}

#[test]
fn meminfo_in_bytes() {
    let info = meminfo(HOST_MEMINFO).unwrap();
    assert_eq!(info.total, 24_684_112 * 1024);
    assert_eq!(info.free, 20_721_220 * 1024);
    assert_eq!(info.available, 24_111_564 * 1024);
    assert_eq!(info.buffers, 20_864 * 1024);
    assert_eq!(info.cached, 3_211_372 * 1024);
    assert_eq!(info.active_file, 1_349_428 * 1024);
    assert_eq!(info.inactive_file, 1_870_048 * 1024);
    assert_eq!((info.swap_total, info.swap_free), (0, 0));
}

#[test]
fn meminfo_errors() {
    assert_eq!(
        meminfo("MemFree: 1 kB\n"),
        Err(ParseError::Missing {
            file: "/proc/meminfo",
            key: "MemTotal"
        })
    );
    for line in [
        "MemTotal 1 kB",
        "MemTotal: 1",
        "MemTotal: x kB",
        "MemTotal: 1 MB",
        "MemTotal: 99999999999999999 kB",
    ] {
        assert!(
            matches!(meminfo(line), Err(ParseError::Line { line: l, .. }) if l == line),
            "{line}"
        );
    }
    // Unit-less counts of keys kernlet does not read are fine.
    assert!(meminfo("MemTotal: 4 kB\nHugePages_Total:       0\n").is_ok());
}

#[test]
fn reads_a_fake_proc() {
    let proc_root = tempfile::tempdir().unwrap();
    fs::write(proc_root.path().join("stat"), HOST_PROC_STAT).unwrap();
    fs::write(proc_root.path().join("meminfo"), HOST_MEMINFO).unwrap();
    let node = read_node(proc_root.path()).unwrap();
    assert_eq!(node.cpu.user, 530_922);
    assert_eq!(node.memory.total, 24_684_112 * 1024);
    assert_eq!(node.pressure, Pressure::default(), "no PSI files, no PSI");

    fs::create_dir(proc_root.path().join("pressure")).unwrap();
    fs::write(proc_root.path().join("pressure/memory"), HOST_PRESSURE).unwrap();
    let node = read_node(proc_root.path()).unwrap();
    assert!(node.pressure.memory.is_some());
    assert!(node.pressure.cpu.is_none());

    fs::write(proc_root.path().join("pressure/io"), "some avg10=0.00\n").unwrap();
    let error = read_node(proc_root.path()).unwrap_err().to_string();
    assert!(
        error.contains("/proc/pressure/io: expected avg10, avg60, avg300 and total in line"),
        "{error}"
    );
    fs::remove_file(proc_root.path().join("meminfo")).unwrap();
    let error = read_node(proc_root.path()).unwrap_err().to_string();
    assert!(
        error.starts_with("reading ") && error.contains("meminfo"),
        "{error}"
    );
}

#[test]
fn reads_this_machine() {
    let node = read_node(Path::new("/proc")).unwrap();
    assert!(node.memory.total > 0);
    assert!(node.cpu.total() > 0);
}
