//! Conversions, the JSON shape upstream writes, and the strict round trip.
use super::convert::{DEFAULT_INTERFACE, InterfaceCounters, usage_nano_cores};
use super::testdata::{at, eth0, psi, sample, summary};
use super::*;
use crate::stats::model::CgroupSample;

#[test]
fn cpu_usage_is_converted_from_microseconds_to_nanoseconds() {
    let cpu = CpuStats::from_sample(&sample(at(0), 1_234_567), None).unwrap();
    assert_eq!(cpu.usage_core_nano_seconds, Some(1_234_567_000));
    assert_eq!(cpu.usage_nano_cores, None, "no previous sample");
    assert_eq!(cpu.time, Time::new(at(0)));
    assert!(CpuStats::from_sample(&CgroupSample::default(), None).is_none());
}

#[test]
fn usage_nano_cores_is_the_rate_between_two_samples() {
    // 0.5 s of CPU in 2 s: a quarter of a core.
    let before = sample(at(0), 1_000_000);
    let now = sample(at(2_000), 1_500_000);
    assert_eq!(usage_nano_cores(&now, &before), Some(250_000_000));
    let cpu = CpuStats::from_sample(&now, Some(&before)).unwrap();
    assert_eq!(cpu.usage_nano_cores, Some(250_000_000));
    // Two full cores over 1.5 s.
    let busy = sample(at(1_500), 4_000_000);
    assert_eq!(usage_nano_cores(&busy, &before), Some(2_000_000_000));
}

#[test]
fn usage_nano_cores_needs_a_usable_previous_sample() {
    let before = sample(at(1_000), 1_000_000);
    // Same instant, earlier "current", counter reset, missing time.
    assert_eq!(
        usage_nano_cores(&sample(at(1_000), 2_000_000), &before),
        None
    );
    assert_eq!(usage_nano_cores(&sample(at(0), 2_000_000), &before), None);
    assert_eq!(usage_nano_cores(&sample(at(2_000), 10), &before), None);
    let mut timeless = sample(at(2_000), 2_000_000);
    timeless.time = None;
    assert_eq!(usage_nano_cores(&timeless, &before), None);
}

#[test]
fn memory_stats_follow_cadvisor_for_cgroup_v2() {
    let memory = MemoryStats::from_sample(&sample(at(0), 0)).unwrap();
    assert_eq!(memory.usage_bytes, Some(50 << 20));
    // Working set: usage minus inactive_file.
    assert_eq!(memory.working_set_bytes, Some(40 << 20));
    assert_eq!(memory.rss_bytes, Some(30 << 20), "rss is anon");
    assert_eq!(memory.page_faults, Some(12_345));
    assert_eq!(memory.major_page_faults, Some(12));
    // Limit 128 MiB minus working set 40 MiB.
    assert_eq!(memory.available_bytes, Some(88 << 20));
    assert_eq!(memory.psi.unwrap().some.total, 1_000);
}

#[test]
fn available_bytes_is_omitted_without_a_limit() {
    let mut unlimited = sample(at(0), 0);
    unlimited.memory.as_mut().unwrap().max = None;
    let memory = MemoryStats::from_sample(&unlimited).unwrap();
    assert_eq!(memory.available_bytes, None);
    let json = serde_json::to_value(&memory).unwrap();
    assert!(json.get("availableBytes").is_none(), "{json}");

    // cAdvisor counts anything above 2^62 as unlimited.
    unlimited.memory.as_mut().unwrap().max = Some(u64::MAX - 4095);
    assert_eq!(
        MemoryStats::from_sample(&unlimited)
            .unwrap()
            .available_bytes,
        None
    );

    // A limit below the working set reads 0, not a wrapped number.
    unlimited.memory.as_mut().unwrap().max = Some(1 << 20);
    assert_eq!(
        MemoryStats::from_sample(&unlimited)
            .unwrap()
            .available_bytes,
        Some(0)
    );

    // The node measures against the machine's memory, not its root cgroup.
    let node = MemoryStats::from_sample_with_limit(&sample(at(0), 0), Some(1 << 30)).unwrap();
    assert_eq!(node.available_bytes, Some((1 << 30) - (40 << 20)));
}

#[test]
fn swap_io_and_psi_conversions() {
    let now = sample(at(0), 0);
    let swap = SwapStats::from_sample(&now).unwrap();
    assert_eq!(swap.swap_usage_bytes, Some(1 << 20));
    assert_eq!(swap.swap_available_bytes, Some(15 << 20));

    let mut no_swap = now.clone();
    let memory = no_swap.memory.as_mut().unwrap();
    memory.swap_current = None;
    memory.swap_max = None;
    let swap = SwapStats::from_sample(&no_swap).unwrap();
    assert_eq!(
        (swap.swap_usage_bytes, swap.swap_available_bytes),
        (Some(0), None)
    );

    let io = IoStats::from_sample(&now).unwrap();
    let io_psi = io.psi.unwrap();
    assert_eq!(io_psi.some.total, 30_000, "PSI totals stay in microseconds");
    assert_eq!(io_psi.full.total, 15_000);
    assert!((io_psi.some.avg10 - 1.5).abs() < f64::EPSILON);

    let mut cpu_only_some = psi(100);
    cpu_only_some.full = None;
    let converted = PsiStats::from_model(&cpu_only_some);
    assert_eq!(converted.full, PsiData::default());
    assert_eq!(converted.some.total, 100);

    let mut no_pressure = now;
    no_pressure.pressure = crate::stats::model::Pressure::default();
    assert!(IoStats::from_sample(&no_pressure).is_none());
    assert!(
        CpuStats::from_sample(&no_pressure, None)
            .unwrap()
            .psi
            .is_none()
    );
}

#[test]
fn network_inlines_the_default_interface() {
    let lo = InterfaceCounters {
        name: "lo".to_owned(),
        ..InterfaceCounters::default()
    };
    let stats = NetworkStats::from_interfaces(Some(at(0)), &[lo.clone(), eth0()]);
    assert_eq!(stats.name, DEFAULT_INTERFACE);
    assert_eq!((stats.rx_bytes, stats.tx_bytes), (Some(1000), Some(2000)));
    assert_eq!(stats.interfaces.len(), 2);
    let json = serde_json::to_value(&stats).unwrap();
    assert_eq!(json["name"], "eth0");
    assert_eq!(json["rxBytes"], 1000);
    assert_eq!(json["interfaces"][0]["name"], "lo");

    // Without eth0 Go still writes the embedded struct's name, empty.
    let only_lo = NetworkStats::from_interfaces(Some(at(0)), &[lo]);
    let json = serde_json::to_value(&only_lo).unwrap();
    assert_eq!(json["name"], "");
    assert!(json.get("rxBytes").is_none());
}

#[test]
fn time_is_rfc3339_in_whole_seconds_and_null_when_zero() {
    let time = Time::new(at(999));
    assert_eq!(
        serde_json::to_string(&time).unwrap(),
        r#""2021-06-22T21:11:18Z""#
    );
    assert_eq!(serde_json::to_string(&Time(None)).unwrap(), "null");
    let before_epoch = Time::new(SystemTime::UNIX_EPOCH - std::time::Duration::from_millis(1500));
    assert_eq!(
        serde_json::to_string(&before_epoch).unwrap(),
        r#""1969-12-31T23:59:58Z""#
    );
    let parsed: Time = serde_json::from_str(r#""2021-06-22T21:11:18Z""#).unwrap();
    assert_eq!(parsed, Time::new(at(0)));
    assert_eq!(serde_json::from_str::<Time>("null").unwrap(), Time(None));
    assert_eq!(time.unix_millis(), Some(1_624_396_278_999));
    assert_eq!(before_epoch.unix_millis(), Some(-1500));
}

#[test]
fn summary_json_has_upstream_names_and_omissions() {
    let value = serde_json::to_value(summary()).unwrap();
    let node = &value["node"];
    assert_eq!(node["nodeName"], "node-a");
    assert_eq!(node["startTime"], "2021-06-22T21:11:18Z");
    assert_eq!(node["systemContainers"][0]["name"], "kubelet");
    assert_eq!(node["cpu"]["usageCoreNanoSeconds"], 2_000_000_000_u64);
    assert_eq!(node["cpu"]["usageNanoCores"], 100_000_000_u64);
    assert_eq!(node["cpu"]["psi"]["full"]["total"], 1_000_000);
    assert_eq!(node["cpu"]["psi"]["some"]["avg10"], 1.5);
    assert_eq!(node["cpu"]["psi"]["some"]["avg300"], 0);
    assert_eq!(node["runtime"]["imageFs"]["capacityBytes"], 4_u64 << 30);
    assert_eq!(node["runtime"]["containerFs"]["inodes"], 5000);
    assert_eq!(node["rlimit"]["maxpid"], 4_194_304);
    assert_eq!(node["rlimit"]["curproc"], 321);
    assert_eq!(node["io"]["psi"]["some"]["total"], 30_000);
    assert_eq!(node["swap"]["swapUsageBytes"], 1 << 20);
    let pod = &value["pods"][0];
    assert_eq!(
        pod["podRef"],
        serde_json::json!({"name": "web", "namespace": "default", "uid": "uid-web"})
    );
    assert_eq!(pod["ephemeral-storage"]["usedBytes"], 3_u64 << 30);
    assert_eq!(
        pod["process_stats"],
        serde_json::json!({"process_count": 3})
    );
    assert_eq!(pod["volume"][0]["name"], "data");
    assert_eq!(pod["volume"][0]["pvcRef"]["name"], "data");
    assert_eq!(
        pod["volume"][0]["capacityBytes"],
        4_u64 << 30,
        "FsStats is inlined"
    );
    assert_eq!(pod["network"]["rxBytes"], 1000, "InterfaceStats is inlined");
    let app = &pod["containers"][0];
    assert_eq!(app["name"], "app");
    assert_eq!(app["rootfs"]["usedBytes"], 4096);
    assert_eq!(app["memory"]["workingSetBytes"], 40 << 20);
    for absent in ["accelerators", "userDefinedMetrics", "logs"] {
        assert!(app.get(absent).is_none(), "{absent} is omitted when empty");
    }

    // The node's keys in upstream's declaration order (two-space indent: the node level).
    let text = String::from_utf8(encode(&summary()).unwrap()).unwrap();
    let order = [
        "nodeName",
        "systemContainers",
        "startTime",
        "cpu",
        "memory",
        "io",
        "network",
        "fs",
        "runtime",
        "rlimit",
        "swap",
    ];
    let positions: Vec<usize> = order
        .iter()
        .map(|key| {
            text.find(&format!("\n  \"{key}\":"))
                .unwrap_or_else(|| panic!("{key}"))
        })
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
}

#[test]
fn encoded_summary_is_go_restful_pretty_json() {
    let minimal = Summary {
        node: NodeStats {
            node_name: "n".to_owned(),
            start_time: Time::new(at(0)),
            cpu: Some(CpuStats {
                time: Time::new(at(0)),
                usage_core_nano_seconds: Some(5),
                psi: Some(PsiStats {
                    full: PsiData::default(),
                    some: PsiData {
                        total: 7,
                        avg10: 1.0,
                        avg60: 0.25,
                        avg300: 0.0,
                    },
                }),
                ..CpuStats::default()
            }),
            ..NodeStats::default()
        },
        pods: Vec::new(),
    };
    let expected = r#"{
 "node": {
  "nodeName": "n",
  "startTime": "2021-06-22T21:11:18Z",
  "cpu": {
   "time": "2021-06-22T21:11:18Z",
   "usageCoreNanoSeconds": 5,
   "psi": {
    "full": {
     "total": 0,
     "avg10": 0,
     "avg60": 0,
     "avg300": 0
    },
    "some": {
     "total": 7,
     "avg10": 1,
     "avg60": 0.25,
     "avg300": 0
    }
   }
  }
 },
 "pods": []
}"#;
    assert_eq!(
        String::from_utf8(encode(&minimal).unwrap()).unwrap(),
        expected
    );
}

#[test]
fn strict_round_trip_preserves_every_field() {
    let original = summary();
    let bytes = encode(&original).unwrap();
    let decoded: Summary = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(decoded, original);
    // Again through a `Value`, so nothing depends on field order.
    let value = serde_json::to_value(&original).unwrap();
    assert_eq!(serde_json::from_value::<Summary>(value).unwrap(), original);
}

#[test]
fn strict_decode_rejects_fields_upstream_does_not_have() {
    let mut value = serde_json::to_value(summary()).unwrap();
    value["pods"][0]["containers"][0]["cpu"]["usageNanoCore"] = 1.into();
    let error = serde_json::from_value::<Summary>(value).unwrap_err();
    assert!(error.to_string().contains("usageNanoCore"), "{error}");

    let mut value = serde_json::to_value(summary()).unwrap();
    value["pods"][0]["network"]["rx_bytes"] = 1.into();
    assert!(serde_json::from_value::<Summary>(value).is_err());

    // A Go nil slice without omitempty is written as null.
    let decoded: Summary =
        serde_json::from_str(r#"{"node":{"nodeName":"n","startTime":null},"pods":null}"#).unwrap();
    assert!(decoded.pods.is_empty());
}

#[test]
fn cpu_and_memory_only_drops_everything_else() {
    let full = summary();
    let only = full.cpu_and_memory_only();
    let value = serde_json::to_value(&only).unwrap();
    let keys = |v: &serde_json::Value| {
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(
        keys(&value["node"]),
        [
            "cpu",
            "memory",
            "nodeName",
            "startTime",
            "swap",
            "systemContainers"
        ]
    );
    assert_eq!(
        keys(&value["pods"][0]),
        ["containers", "cpu", "memory", "podRef", "startTime", "swap"]
    );
    assert_eq!(
        keys(&value["pods"][0]["containers"][0]),
        ["cpu", "memory", "name", "startTime", "swap"]
    );
    assert_eq!(only.node.cpu, full.node.cpu);
    assert_eq!(
        only.pods[0].containers[1].memory,
        full.pods[0].containers[1].memory
    );
}
