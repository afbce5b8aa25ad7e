//! The cgroup manager against a temp dir laid out like cgroupfs: names, the files written and
//! their values (the kernel-side behaviour is tested for real in the node VM).
use std::{collections::HashSet, fs, path::PathBuf};

use k8s_openapi::api::core::v1::Pod;

use super::{
    fs::{FsType, Setup},
    resources::{PodSettings, pod_config},
    *,
};
use crate::resources::{Amounts, convert::CpuMax};

/// (cpu request, cpu limit, memory request, memory limit) of one container.
type Quantities<'a> = (
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
);

fn pod(uid: &str, containers: &[Quantities<'_>]) -> Pod {
    let containers: Vec<serde_json::Value> = containers
        .iter()
        .enumerate()
        .map(|(i, (cpu_req, cpu_lim, mem_req, mem_lim))| {
            let mut requests = serde_json::Map::new();
            let mut limits = serde_json::Map::new();
            if let Some(v) = cpu_req {
                requests.insert("cpu".into(), (*v).into());
            }
            if let Some(v) = mem_req {
                requests.insert("memory".into(), (*v).into());
            }
            if let Some(v) = cpu_lim {
                limits.insert("cpu".into(), (*v).into());
            }
            if let Some(v) = mem_lim {
                limits.insert("memory".into(), (*v).into());
            }
            serde_json::json!({
                "name": format!("c{i}"),
                "image": "busybox",
                "resources": {"requests": requests, "limits": limits},
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "p", "namespace": "default", "uid": uid},
        "spec": {"containers": containers},
    }))
    .expect("valid pod")
}

struct FakeRoot {
    dir: tempfile::TempDir,
}

impl FakeRoot {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::write(
            dir.path().join("cgroup.controllers"),
            "cpuset cpu io memory hugetlb pids rdma misc\n",
        )
        .expect("controllers");
        Self { dir }
    }

    fn fs(&self) -> Cgroupfs {
        Cgroupfs::new(self.dir.path())
    }

    fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.dir.path().join(rel))
            .unwrap_or_else(|e| panic!("{rel}: {e}"))
            .trim()
            .to_owned()
    }
}

/// What the node has: milli-CPU, memory bytes, `pid_max`.
fn capacity(cpu_millis: i64, memory_bytes: i64, pid_max: Option<i64>) -> Amounts {
    Amounts {
        cpu_millis: Some(cpu_millis),
        memory_bytes: Some(memory_bytes),
        pids: pid_max,
        ..Amounts::default()
    }
}

fn settings(kubepods: Amounts) -> NodeSettings {
    NodeSettings {
        cgroup_root: "/".into(),
        kubepods,
        reserved: Vec::new(),
        pods: PodSettings::default(),
    }
}

const MI: i64 = 1 << 20;

#[test]
fn setups_are_told_apart_by_filesystem_type() {
    let unified = PathBuf::from("/sys/fs/cgroup/unified");
    assert_eq!(
        Setup::classify(Some(FsType::Cgroup2), None, unified.clone()),
        Setup::Unified
    );
    assert_eq!(
        Setup::classify(Some(FsType::Other), Some(FsType::Cgroup2), unified.clone()),
        Setup::Hybrid {
            unified: unified.clone()
        }
    );
    assert_eq!(
        Setup::classify(Some(FsType::Other), None, unified),
        Setup::Legacy
    );
}

#[test]
fn check_names_the_missing_controllers_and_the_ways_out() {
    let root = FakeRoot::new();
    let error = CgroupManager::check(root.dir.path()).expect_err("a temp dir is not cgroupfs");
    let message = error.to_string();
    for needle in ["cpu, memory, pids", "cgroupsPerQOS: false", "unified"] {
        assert!(message.contains(needle), "{message}");
    }
}

#[test]
fn init_builds_the_hierarchy_and_enforces_allocatable() {
    let root = FakeRoot::new();
    let manager = CgroupManager::new(root.fs(), settings(capacity(2000, 1024 * MI, Some(4096))));
    manager.init().expect("init");
    assert_eq!(
        root.read("cgroup.subtree_control"),
        "+cpu +cpuset +io +memory +pids"
    );
    assert_eq!(root.read("kubepods/memory.max"), (1024 * MI).to_string());
    // 2000m -> 2048 shares -> weight 79.
    assert_eq!(root.read("kubepods/cpu.weight"), "79");
    assert_eq!(root.read("kubepods/pids.max"), "4096");
    assert_eq!(root.read("kubepods/burstable/cpu.weight"), "1");
    assert_eq!(root.read("kubepods/besteffort/cpu.weight"), "1");
}

#[test]
fn cgroup_root_prefixes_kubepods() {
    let root = FakeRoot::new();
    let mut settings = settings(Amounts::default());
    settings.cgroup_root = "/kernlet-test/".into();
    let manager = CgroupManager::new(root.fs(), settings);
    assert_eq!(manager.kubepods(), "/kernlet-test/kubepods");
    manager.init().expect("init");
    assert!(
        root.dir
            .path()
            .join("kernlet-test/kubepods/burstable")
            .is_dir()
    );
}

#[test]
fn pods_go_under_their_qos_tier_with_their_limits() {
    let root = FakeRoot::new();
    let manager = CgroupManager::new(root.fs(), settings(Amounts::default()));
    manager.init().expect("init");

    let guaranteed = pod(
        "g-1",
        &[(Some("200m"), Some("200m"), Some("64Mi"), Some("64Mi"))],
    );
    assert_eq!(
        manager.ensure_pod(&guaranteed).expect("g"),
        "/kubepods/podg-1"
    );
    assert_eq!(root.read("kubepods/podg-1/cpu.max"), "20000 100000");
    assert_eq!(
        root.read("kubepods/podg-1/memory.max"),
        (64 * MI).to_string()
    );
    // 200m -> 204 shares -> weight 8.
    assert_eq!(root.read("kubepods/podg-1/cpu.weight"), "8");

    let burstable = pod("b-1", &[(Some("500m"), None, Some("32Mi"), None)]);
    assert_eq!(
        manager.ensure_pod(&burstable).expect("b"),
        "/kubepods/burstable/podb-1"
    );
    assert!(
        !root
            .dir
            .path()
            .join("kubepods/burstable/podb-1/cpu.max")
            .exists()
    );
    assert!(
        !root
            .dir
            .path()
            .join("kubepods/burstable/podb-1/memory.max")
            .exists()
    );

    let best_effort = pod("e-1", &[(None, None, None, None)]);
    assert_eq!(
        manager.ensure_pod(&best_effort).expect("e"),
        "/kubepods/besteffort/pode-1"
    );
    assert_eq!(root.read("kubepods/besteffort/pode-1/cpu.weight"), "1");

    let mut uids = manager.pod_uids().expect("list");
    uids.sort();
    assert_eq!(uids, ["b-1", "e-1", "g-1"]);

    manager
        .update_tiers([&guaranteed, &burstable, &best_effort])
        .expect("tiers");
    // 500m -> 512 shares -> weight 20.
    assert_eq!(root.read("kubepods/burstable/cpu.weight"), "20");

    manager.remove_pod("b-1").expect("remove");
    let keep: HashSet<String> = ["g-1".to_owned()].into();
    assert_eq!(manager.remove_orphans(&keep).expect("orphans"), ["e-1"]);
    assert_eq!(manager.pod_uids().expect("list"), ["g-1"]);
}

#[test]
fn burstable_limits_apply_only_when_every_container_declares_them() {
    let settings = PodSettings::default();
    let both = pod(
        "x",
        &[
            (Some("100m"), Some("300m"), None, Some("10Mi")),
            (Some("100m"), Some("200m"), None, Some("20Mi")),
        ],
    );
    let config = pod_config(&both, &settings).expect("config");
    assert_eq!(
        config.cpu_max,
        Some(CpuMax {
            quota_us: Some(50_000),
            period_us: 100_000
        })
    );
    assert_eq!(config.memory_max, Some(30 * MI as u64));
    let one_unlimited = pod(
        "y",
        &[
            (Some("100m"), Some("300m"), None, Some("10Mi")),
            (Some("100m"), None, None, None),
        ],
    );
    let config = pod_config(&one_unlimited, &settings).expect("config");
    assert_eq!(config.cpu_max, None);
    assert_eq!(config.memory_max, None);
}

#[test]
fn pids_limit_and_memory_qos_reach_the_pod_cgroup() {
    let settings = PodSettings {
        pod_pids_limit: 64,
        memory_qos: true,
        ..PodSettings::default()
    };
    let p = pod("z", &[(Some("100m"), None, Some("48Mi"), Some("96Mi"))]);
    let config = pod_config(&p, &settings).expect("config");
    assert_eq!(config.pids_max, Some(64));
    assert_eq!(config.memory_min, Some(48 * MI as u64));
    let no_limit = PodSettings::default();
    assert_eq!(pod_config(&p, &no_limit).expect("config").pids_max, None);
}

#[test]
fn quota_off_leaves_cpu_max_alone() {
    let settings = PodSettings {
        cpu_cfs_quota: false,
        ..PodSettings::default()
    };
    let p = pod(
        "q",
        &[(Some("200m"), Some("200m"), Some("8Mi"), Some("8Mi"))],
    );
    assert_eq!(pod_config(&p, &settings).expect("config").cpu_max, None);
}

#[test]
fn allocatable_subtracts_reservations_and_hard_eviction() {
    let config = crate::config::KubeletConfig::from_yaml_str(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
         kubeReserved: {cpu: 100m, memory: 100Mi, pid: \"100\"}\n\
         systemReserved: {cpu: 200m, memory: 200Mi}\n\
         evictionHard: {memory.available: 50Mi}\n",
    )
    .expect("config")
    .config;
    let capacity = capacity(2000, 1024 * MI, Some(10_000));
    let allocatable = allocatable(&config, &capacity);
    assert_eq!(allocatable.cpu_millis, Some(1700));
    assert_eq!(allocatable.memory_bytes, Some((1024 - 100 - 200 - 50) * MI));
    assert_eq!(allocatable.pids, Some(9_900));
    let settings = node_settings(&config, &capacity, "6.1.0-27-amd64");
    assert_eq!(settings.kubepods, allocatable);
}

#[test]
fn percentage_eviction_thresholds_scale_with_capacity() {
    let config = crate::config::KubeletConfig::from_yaml_str(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
         evictionHard: {memory.available: \"10%\"}\n",
    )
    .expect("config")
    .config;
    let allocatable = allocatable(&config, &capacity(1000, 1000 * MI, None));
    assert_eq!(allocatable.memory_bytes, Some(900 * MI));
    assert_eq!(allocatable.pids, None);
}

#[test]
fn memory_qos_needs_kernel_5_9() {
    assert!(!kernel_supports_memory_qos("5.8.18-100.fc31.x86_64"));
    assert!(kernel_supports_memory_qos("5.9.0"));
    assert!(kernel_supports_memory_qos("6.1.0-27-amd64"));
    assert!(kernel_supports_memory_qos("6.18.2"));
    let config = crate::config::KubeletConfig::from_yaml_str(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
         featureGates: {MemoryQoS: true}\n",
    )
    .expect("config")
    .config;
    let capacity = capacity(1000, 1000, None);
    assert!(node_settings(&config, &capacity, "6.1.0").pods.memory_qos);
    assert!(!node_settings(&config, &capacity, "5.4.0").pods.memory_qos);
}

#[test]
fn writes_report_file_value_and_errno() {
    let root = FakeRoot::new();
    let fs = root.fs();
    fs.create("/a").expect("create");
    let error = fs
        .write("/missing", "cpu.max", "1 2")
        .expect_err("no such cgroup");
    let message = error.to_string();
    assert!(
        message.contains("\"1 2\"") && message.contains("missing/cpu.max"),
        "{message}"
    );
    assert!(message.contains("os error 2"), "{message}");
}
