//! Shared fixtures for the spec builder tests.
use std::net::IpAddr;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Pod;

use super::{DnsSettings, NodeContext};
use crate::resources::Amounts;

pub(super) const UID: &str = "0f3c7a4e-uid";

/// A node with one IPv4 address, cluster DNS, 8 GiB of memory and 4 allocatable cores.
pub(super) fn node() -> NodeContext {
    NodeContext {
        node_name: "node-a".into(),
        host_ips: vec!["10.0.0.5".parse::<IpAddr>().unwrap()],
        root_dir: PathBuf::from("/var/lib/kubelet"),
        pod_logs_dir: PathBuf::from("/var/log/pods"),
        dns: DnsSettings {
            cluster_dns: vec!["10.96.0.10".parse().unwrap()],
            cluster_domain: "cluster.local".into(),
            resolv_conf: Some(PathBuf::from("/etc/resolv.conf")),
        },
        memory_capacity_bytes: 8 << 30,
        allocatable: Amounts {
            cpu_millis: Some(4000),
            memory_bytes: Some(7 << 30),
            ephemeral_storage_bytes: Some(100 << 30),
            pids: None,
        },
        cpu_cfs_quota: true,
        cpu_cfs_quota_period_us: 100_000,
        swap_controller: false,
        cgroup_v2: true,
        memory_qos: false,
        memory_throttling_factor: 0.9,
    }
}

/// A pod from JSON, with metadata filled in: `metadata` and `spec` are merged into a default
/// static pod `web-node-a` in `default` (one container `app` unless `spec` names containers).
pub(super) fn pod(spec: serde_json::Value) -> Pod {
    pod_with(serde_json::json!({}), spec)
}

pub(super) fn pod_with(metadata: serde_json::Value, spec: serde_json::Value) -> Pod {
    let mut meta = serde_json::json!({
        "name": "web-node-a",
        "namespace": "default",
        "uid": UID,
    });
    merge(&mut meta, metadata);
    let mut full_spec = serde_json::json!({
        "containers": [{"name": "app", "image": "nginx:1.27"}],
        "dnsPolicy": "ClusterFirst",
        "restartPolicy": "Always",
        "securityContext": {},
        "terminationGracePeriodSeconds": 30,
        "nodeName": "node-a",
    });
    merge(&mut full_spec, spec);
    serde_json::from_value(serde_json::json!({"metadata": meta, "spec": full_spec})).unwrap()
}

fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    if let (Some(into), serde_json::Value::Object(from)) = (into.as_object_mut(), from) {
        for (k, v) in from {
            into.insert(k, v);
        }
    }
}
