//! Parser tests on files captured from the host (6.18, hybrid: v2 has no controllers) and the
//! node VM (Debian 6.1, pure v2), plus the `io.stat` example of cgroup-v2.rst.
use super::*;

const HOST_CPU_STAT: &str = include_str!("../fixtures/host-6.18-cpu.stat");
const VM_CPU_STAT: &str = include_str!("../fixtures/vm-6.1-cpu.stat");
const VM_MEMORY_STAT: &str = include_str!("../fixtures/vm-6.1-memory.stat");
const VM_MEMORY_EVENTS: &str = include_str!("../fixtures/vm-6.1-memory.events");
const VM_CPU_PRESSURE: &str = include_str!("../fixtures/vm-6.1-cpu.pressure");
const HOST_IO_PRESSURE: &str = include_str!("../fixtures/host-6.18-io.pressure");
const RST_IO_STAT: &str = include_str!("../fixtures/rst-io.stat");

fn line_error(result: Result<impl std::fmt::Debug, ParseError>) -> (&'static str, String) {
    match result {
        Err(ParseError::Line { file, line, .. }) => (file, line),
        other => panic!("expected a line error, got {other:?}"),
    }
}

#[test]
fn cpu_stat_without_the_cpu_controller_has_no_throttling() {
    let stat = cpu_stat(HOST_CPU_STAT).unwrap();
    assert_eq!(stat.usage_usec, 6_254_945_666);
    assert_eq!(stat.user_usec, 5_309_225_784);
    assert_eq!(stat.system_usec, 945_719_881);
    assert_eq!(stat.throttling, None);
}

#[test]
fn cpu_stat_with_the_cpu_controller_has_throttling() {
    let stat = cpu_stat(VM_CPU_STAT).unwrap();
    assert_eq!(
        stat,
        CpuStat {
            usage_usec: 244_625,
            user_usec: 93_402,
            system_usec: 151_222,
            throttling: Some(Throttling::default()),
        }
    );
    let throttled = cpu_stat(
        "usage_usec 10\nuser_usec 6\nsystem_usec 4\nnr_periods 7\nnr_throttled 3\n\
         throttled_usec 1500\nnr_bursts 0\nburst_usec 0\n",
    )
    .unwrap();
    assert_eq!(
        throttled.throttling,
        Some(Throttling {
            nr_periods: 7,
            nr_throttled: 3,
            throttled_usec: 1500
        })
    );
}

#[test]
fn cpu_stat_errors_name_file_and_line() {
    let error = cpu_stat("usage_usec 1\nuser_usec x\nsystem_usec 1\n").unwrap_err();
    assert_eq!(
        error.to_string(),
        "cpu.stat: bad number in line \"user_usec x\""
    );
    assert_eq!(
        line_error(cpu_stat("usage_usec 1 2\n")),
        ("cpu.stat", "usage_usec 1 2".to_owned())
    );
    assert_eq!(
        line_error(cpu_stat("usage_usec -1\n")),
        ("cpu.stat", "usage_usec -1".to_owned())
    );
    assert_eq!(
        cpu_stat("usage_usec 1\nuser_usec 1\n").unwrap_err(),
        ParseError::Missing {
            file: "cpu.stat",
            key: "system_usec"
        }
    );
    // A bad value of a key kernlet does not read is not its business.
    assert!(cpu_stat("usage_usec 1\nuser_usec 1\nsystem_usec 0\nnice_usec ?\n").is_ok());
}

#[test]
fn single_values_and_max() {
    assert_eq!(single("memory.current", "21753856\n"), Ok(21_753_856));
    assert_eq!(single("pids.current", "2\n"), Ok(2));
    assert_eq!(single_or_max("memory.max", "max\n"), Ok(None));
    assert_eq!(
        single_or_max("memory.max", "536870912\n"),
        Ok(Some(536_870_912))
    );
    assert_eq!(
        line_error(single("memory.current", "\n")),
        ("memory.current", String::new())
    );
    assert_eq!(
        single_or_max("pids.max", "unlimited\n")
            .unwrap_err()
            .to_string(),
        "pids.max: bad number in line \"unlimited\""
    );
}

#[test]
fn memory_stat_reads_known_keys_and_skips_the_rest() {
    let stat = memory_stat(VM_MEMORY_STAT).unwrap();
    assert_eq!(stat.anon, 106_496);
    assert_eq!(stat.file, 21_151_744);
    assert_eq!(stat.kernel, 163_840);
    assert_eq!(stat.kernel_stack, 16_384);
    assert_eq!(stat.slab, 84_616);
    assert_eq!(stat.shmem, 20_971_520);
    assert_eq!(stat.file_mapped, 36_864);
    assert_eq!(stat.active_anon, 20_975_616);
    assert_eq!(stat.inactive_anon, 90_112);
    assert_eq!(stat.active_file, 57_344);
    assert_eq!(stat.inactive_file, 122_880);
    assert_eq!(stat.pgfault, 968);
    assert_eq!(stat.pgmajfault, 44);
    assert_eq!(stat.workingset_refault_file, 0);
}

#[test]
fn memory_stat_missing_keys_read_zero_and_bad_values_fail() {
    // An old kernel without `kernel`, `sock`, `pgscan`, ...
    let stat = memory_stat("anon 4096\nfile 8192\n").unwrap();
    assert_eq!(
        stat,
        MemoryStat {
            anon: 4096,
            file: 8192,
            ..MemoryStat::default()
        }
    );
    assert_eq!(memory_stat(""), Ok(MemoryStat::default()));
    assert_eq!(
        line_error(memory_stat("anon 1\ninactive_file 12k\n")),
        ("memory.stat", "inactive_file 12k".to_owned())
    );
    assert_eq!(
        line_error(memory_stat("anon\n")),
        ("memory.stat", "anon".to_owned())
    );
}

#[test]
fn memory_events() {
    assert_eq!(
        super::memory_events(VM_MEMORY_EVENTS),
        Ok(MemoryEvents::default())
    );
    let events =
        super::memory_events("low 1\nhigh 2\nmax 3\noom 4\noom_kill 5\noom_group_kill 6\n");
    assert_eq!(
        events,
        Ok(MemoryEvents {
            low: 1,
            high: 2,
            max: 3,
            oom: 4,
            oom_kill: 5
        })
    );
    assert_eq!(
        line_error(super::memory_events("oom_kill many\n")),
        ("memory.events", "oom_kill many".to_owned())
    );
}

#[test]
fn io_stat_per_device() {
    let devices = io_stat(RST_IO_STAT).unwrap();
    assert_eq!(
        devices,
        [
            IoDeviceStat {
                major: 8,
                minor: 16,
                rbytes: 1_459_200,
                wbytes: 314_773_504,
                rios: 192,
                wios: 353,
                dbytes: 0,
                dios: 0,
            },
            IoDeviceStat {
                major: 8,
                minor: 0,
                rbytes: 90_430_464,
                wbytes: 299_008_000,
                rios: 8950,
                wios: 1252,
                dbytes: 50_331_648,
                dios: 3021,
            },
        ]
    );
    // No I/O yet (the VM's test cgroups on tmpfs) is an empty file.
    assert_eq!(io_stat(""), Ok(Vec::new()));
}

#[test]
fn io_stat_tolerates_extra_and_missing_keys() {
    let text = "259:0 rbytes=4096 wbytes=0 rios=1 wios=0 dbytes=0 dios=0 \
                cost.vrate=100.00 cost.usage=12 cost.wait=0 cost.indebt=0 cost.indelay=0\n\
                253:1 rbytes=512 rios=1\n";
    let devices = io_stat(text).unwrap();
    assert_eq!(devices.len(), 2);
    assert_eq!(
        (devices[0].major, devices[0].minor, devices[0].rbytes),
        (259, 0, 4096)
    );
    assert_eq!(
        devices[1],
        IoDeviceStat {
            major: 253,
            minor: 1,
            rbytes: 512,
            rios: 1,
            ..IoDeviceStat::default()
        }
    );
}

#[test]
fn io_stat_errors() {
    for line in [
        "sda rbytes=1",
        "8-0 rbytes=1",
        "8:x rbytes=1",
        "8:0 rbytes",
        "8:0 rbytes=-3",
    ] {
        assert_eq!(
            line_error(io_stat(&format!("8:16 rbytes=1\n{line}\n"))),
            ("io.stat", line.to_owned()),
            "{line}"
        );
    }
}

#[test]
fn psi_some_and_full() {
    let cpu = psi("cpu.pressure", VM_CPU_PRESSURE).unwrap();
    assert_eq!(cpu.some.total_usec, 9594);
    assert_eq!(cpu.full.map(|full| full.total_usec), Some(9594));
    let io = psi("io.pressure", HOST_IO_PRESSURE).unwrap();
    assert!((io.some.avg300 - 0.36).abs() < 1e-9);
    assert_eq!(io.some.total_usec, 50_874_939);
    assert_eq!(io.full.map(|full| full.total_usec), Some(29_861_795));
    // Kernels before 5.13 write no `full` line for cpu.
    let some_only = psi(
        "/proc/pressure/cpu",
        "some avg10=1.50 avg60=0.25 avg300=0.05 total=123\n",
    )
    .unwrap();
    assert_eq!(
        some_only,
        Psi {
            some: PsiLine {
                avg10: 1.5,
                avg60: 0.25,
                avg300: 0.05,
                total_usec: 123
            },
            full: None
        }
    );
}

#[test]
fn psi_errors() {
    let full_only = "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
    assert_eq!(
        psi("memory.pressure", full_only),
        Err(ParseError::Missing {
            file: "memory.pressure",
            key: "some"
        })
    );
    for line in [
        "partial avg10=0.00 avg60=0.00 avg300=0.00 total=0",
        "some avg10=0.00 avg60=0.00 avg300=0.00",
        "some avg10=abc avg60=0.00 avg300=0.00 total=0",
        "some avg10=NaN avg60=0.00 avg300=0.00 total=0",
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=-1",
        "some avg10 avg60=0.00 avg300=0.00 total=0",
    ] {
        assert_eq!(
            line_error(psi("io.pressure", line)),
            ("io.pressure", line.to_owned()),
            "{line}"
        );
    }
}
