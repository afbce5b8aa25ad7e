//! The readers on temporary directories laid out like cgroups: a pure v2 container cgroup (the
//! node VM's files) and a hybrid host's controller-less v2 cgroup.
use std::{fmt::Write as _, fs};

use tempfile::TempDir;

use super::*;
use crate::stats::model::{MemoryEvents, MemoryStat, Throttling};

const VM_CPU_STAT: &str = include_str!("../fixtures/vm-6.1-cpu.stat");
const VM_MEMORY_STAT: &str = include_str!("../fixtures/vm-6.1-memory.stat");
const VM_MEMORY_EVENTS: &str = include_str!("../fixtures/vm-6.1-memory.events");
const VM_CPU_PRESSURE: &str = include_str!("../fixtures/vm-6.1-cpu.pressure");
const HOST_CPU_STAT: &str = include_str!("../fixtures/host-6.18-cpu.stat");
const HOST_IO_PRESSURE: &str = include_str!("../fixtures/host-6.18-io.pressure");
const RST_IO_STAT: &str = include_str!("../fixtures/rst-io.stat");

/// A cgroup with every controller, as in the node VM.
fn full_cgroup() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("cpu.stat", VM_CPU_STAT),
        ("memory.current", "21753856\n"),
        ("memory.peak", "22794240\n"),
        ("memory.max", "max\n"),
        ("memory.swap.current", "0\n"),
        ("memory.swap.max", "1048576\n"),
        ("memory.stat", VM_MEMORY_STAT),
        ("memory.events", VM_MEMORY_EVENTS),
        ("io.stat", RST_IO_STAT),
        ("pids.current", "2\n"),
        ("pids.max", "max\n"),
        ("cpu.pressure", VM_CPU_PRESSURE),
        ("memory.pressure", VM_CPU_PRESSURE),
        ("io.pressure", HOST_IO_PRESSURE),
    ] {
        fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

/// A v2 cgroup on a hybrid host: core files only.
fn hybrid_cgroup() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("cpu.stat"), HOST_CPU_STAT).unwrap();
    for name in ["cpu.pressure", "memory.pressure", "io.pressure"] {
        fs::write(dir.path().join(name), HOST_IO_PRESSURE).unwrap();
    }
    dir
}

fn sample(read: CgroupRead) -> CgroupSample {
    match read {
        CgroupRead::Sample(sample) => sample,
        CgroupRead::Gone => panic!("the cgroup is there"),
    }
}

#[test]
fn reads_every_controller() {
    let dir = full_cgroup();
    let mut texts = FileTexts::default();
    let sample = sample(read_cgroup(dir.path(), &CgroupFile::ALL, &mut texts).unwrap());
    assert!(sample.time.is_some());
    let cpu = sample.cpu.unwrap();
    assert_eq!(cpu.usage_usec, 244_625);
    assert_eq!(cpu.throttling, Some(Throttling::default()));
    let memory = sample.memory.unwrap();
    assert_eq!(memory.current, 21_753_856);
    assert_eq!(memory.peak, Some(22_794_240));
    assert_eq!(memory.max, None);
    assert_eq!(memory.swap_current, Some(0));
    assert_eq!(memory.swap_max, Some(1_048_576));
    assert_eq!(memory.stat.inactive_file, 122_880);
    assert_eq!(memory.working_set(), 21_753_856 - 122_880);
    assert_eq!(memory.events, MemoryEvents::default());
    assert_eq!(sample.io.len(), 2);
    assert_eq!(
        sample.pids,
        Some(PidsStats {
            current: 2,
            max: None
        })
    );
    assert_eq!(sample.pressure.cpu.unwrap().some.total_usec, 9594);
    assert_eq!(sample.pressure.io.unwrap().some.total_usec, 50_874_939);
}

#[test]
fn missing_controllers_leave_their_parts_empty() {
    let dir = hybrid_cgroup();
    let mut texts = FileTexts::default();
    let sample = sample(read_cgroup(dir.path(), &CgroupFile::ALL, &mut texts).unwrap());
    let cpu = sample.cpu.unwrap();
    assert_eq!(cpu.usage_usec, 6_254_945_666);
    assert_eq!(cpu.throttling, None);
    assert_eq!(sample.memory, None);
    assert_eq!(sample.pids, None);
    assert!(sample.io.is_empty());
    assert!(sample.pressure.memory.is_some());

    let mut files = CgroupFiles::open(dir.path(), &CgroupFile::ALL)
        .unwrap()
        .unwrap();
    let present: Vec<_> = files.files().iter().map(|(file, _)| *file).collect();
    assert_eq!(
        present,
        [
            CgroupFile::CpuPressure,
            CgroupFile::MemoryPressure,
            CgroupFile::IoPressure,
            CgroupFile::CpuStat
        ]
    );
    let mut again = FileTexts::default();
    let kept = self::sample(files.read(&mut again).unwrap());
    assert_eq!(
        CgroupSample { time: None, ..kept },
        CgroupSample {
            time: None,
            ..sample
        }
    );
}

#[test]
fn only_the_asked_files_are_read() {
    let dir = full_cgroup();
    let mut texts = FileTexts::default();
    let sample = sample(read_cgroup(dir.path(), &[CgroupFile::MemoryCurrent], &mut texts).unwrap());
    assert!(sample.cpu.is_some(), "cpu.stat is always read");
    let memory = sample.memory.unwrap();
    assert_eq!((memory.current, memory.peak), (21_753_856, None));
    assert_eq!(memory.stat, MemoryStat::default());
    assert_eq!(sample.pressure, Pressure::default());
}

#[test]
fn a_removed_cgroup_is_gone_not_an_error() {
    let dir = hybrid_cgroup();
    let path = dir.path().to_owned();
    drop(dir);
    let mut texts = FileTexts::default();
    assert_eq!(
        read_cgroup(&path, &CgroupFile::ALL, &mut texts).unwrap(),
        CgroupRead::Gone
    );
    assert!(
        CgroupFiles::open(&path, &CgroupFile::ALL)
            .unwrap()
            .is_none()
    );
}

#[test]
fn kept_files_are_reread_from_the_start() {
    let dir = hybrid_cgroup();
    let mut files = CgroupFiles::open(dir.path(), &CgroupFile::ALL)
        .unwrap()
        .unwrap();
    let mut texts = FileTexts::default();
    let before = sample(files.read(&mut texts).unwrap());
    // Rewritten in place, as the kernel regenerates a seq file: the same descriptor sees it.
    fs::write(
        dir.path().join("cpu.stat"),
        "usage_usec 7\nuser_usec 4\nsystem_usec 3\n",
    )
    .unwrap();
    let after = sample(files.read(&mut texts).unwrap());
    assert_eq!(before.cpu.unwrap().usage_usec, 6_254_945_666);
    assert_eq!(after.cpu.unwrap().usage_usec, 7);
}

#[test]
fn slow_files_are_read_again_only_when_due() {
    let dir = full_cgroup();
    let mut files = CgroupFiles::open(dir.path(), &CgroupFile::ALL)
        .unwrap()
        .unwrap();
    let mut texts = FileTexts::default();
    let first = sample(files.read_due(&mut texts, Due::ALL).unwrap());
    let pressure = first.pressure.cpu.unwrap();
    assert_eq!(first.memory.as_ref().unwrap().max, None);
    fs::write(dir.path().join("memory.max"), "1048576\n").unwrap();
    fs::write(dir.path().join("memory.current"), "4096\n").unwrap();
    fs::write(dir.path().join("cpu.pressure"), HOST_IO_PRESSURE).unwrap();

    let none = Due {
        limits: false,
        pressure: false,
    };
    let quick = sample(files.read_due(&mut texts, none).unwrap());
    let memory = quick.memory.unwrap();
    assert_eq!(memory.current, 4096, "memory.current is read every round");
    assert_eq!(memory.max, None, "memory.max is kept until due");
    assert_eq!(quick.pressure.cpu.unwrap(), pressure, "kept until due");

    let limits = Due {
        limits: true,
        pressure: false,
    };
    let limited = sample(files.read_due(&mut texts, limits).unwrap());
    assert_eq!(limited.memory.unwrap().max, Some(1_048_576));
    assert_eq!(limited.pressure.cpu.unwrap(), pressure);

    let all = sample(files.read_due(&mut texts, Due::ALL).unwrap());
    assert_ne!(all.pressure.cpu.unwrap(), pressure);
    assert_eq!(all.memory.unwrap().max, Some(1_048_576));
}

#[test]
fn files_larger_than_one_read_are_read_whole() {
    let dir = hybrid_cgroup();
    let mut long = String::new();
    for index in 0..2000 {
        let _ = writeln!(long, "padding_key_{index} {index}");
    }
    long.push_str(HOST_CPU_STAT);
    assert!(long.len() > 2 * SCRATCH);
    fs::write(dir.path().join("cpu.stat"), &long).unwrap();
    let mut texts = FileTexts::default();
    let sample = sample(read_cgroup(dir.path(), &CgroupFile::ALL, &mut texts).unwrap());
    assert_eq!(sample.cpu.unwrap().usage_usec, 6_254_945_666);
    assert_eq!(texts.text(CgroupFile::CpuStat).unwrap().unwrap(), long);
}

#[test]
fn parse_errors_name_the_cgroup_file_and_line() {
    let dir = full_cgroup();
    fs::write(dir.path().join("memory.events"), "low 1\noom_kill x\n").unwrap();
    let mut texts = FileTexts::default();
    let error = read_cgroup(dir.path(), &CgroupFile::ALL, &mut texts).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "in {}: memory.events: bad number in line \"oom_kill x\"",
            dir.path().display()
        )
    );
    fs::write(dir.path().join("pids.max"), b"\xff\xfe\n").unwrap();
    fs::write(dir.path().join("memory.events"), VM_MEMORY_EVENTS).unwrap();
    let error = read_cgroup(dir.path(), &CgroupFile::ALL, &mut texts).unwrap_err();
    assert!(
        error
            .to_string()
            .ends_with("pids.max: not UTF-8 in line \"\u{fffd}\u{fffd}\\n\""),
        "{error}"
    );
}

#[test]
fn other_io_errors_name_the_path() {
    let dir = hybrid_cgroup();
    // A directory where a file should be: open works, read fails with EISDIR.
    fs::create_dir(dir.path().join("memory.current")).unwrap();
    let mut texts = FileTexts::default();
    let error = read_cgroup(dir.path(), &CgroupFile::ALL, &mut texts).unwrap_err();
    assert!(
        matches!(&error, Error::Io { path, .. } if path.ends_with("memory.current")),
        "{error}"
    );
}

#[test]
fn texts_inserted_by_other_readers_parse_the_same() {
    let mut texts = FileTexts::default();
    texts.insert(CgroupFile::CpuStat, HOST_CPU_STAT.as_bytes());
    texts.insert(CgroupFile::PidsCurrent, b"3\n");
    let sample = texts.sample(SystemTime::UNIX_EPOCH).unwrap();
    assert_eq!(sample.cpu.unwrap().user_usec, 5_309_225_784);
    assert_eq!(sample.pids.unwrap().current, 3);
    texts.clear();
    assert_eq!(texts.text(CgroupFile::CpuStat), Ok(None));
}
