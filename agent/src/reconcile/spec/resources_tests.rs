//! Tests for [`super::resources`]: the CRI resources against upstream's formulas, `QoS` classes
//! and OOM score adjustments.
use proptest::prelude::*;
use serde_json::json;

use crate::resources::{QosClass, get_pod_qos, milli_cpu_to_quota, milli_cpu_to_shares};

use super::resources::{
    clamp_burstable, container_linux_resources, linux_resources, oom_score_adj,
    sandbox_linux_resources,
};
use super::test_support::{node, pod, pod_with};

proptest! {
    #[test]
    fn burstable_score_stays_between_guaranteed_and_best_effort(
        request in 1_u64..(64 << 30),
        capacity in 1_u64..(64 << 30),
    ) {
        let memory = format!("{request}");
        let pod = pod(json!({"containers": [{
            "name": "app",
            "resources": {"requests": {"memory": memory}},
        }]}));
        let spec = pod.spec.as_ref().unwrap();
        let score = oom_score_adj(&pod, &spec.containers[0], false, capacity).unwrap();
        let raw = 1000 - (1000 * i128::from(request)) / i128::from(capacity);
        let expected = clamp_burstable(i64::try_from(raw).unwrap_or(i64::MIN));
        prop_assert_eq!(score, expected);
        prop_assert!((3..=999).contains(&score));
    }

    #[test]
    fn memory_limit_passes_through(bytes in 1_i64..(1 << 50), milli in 1_i64..64_000) {
        let resources = linux_resources(None, Some(milli), Some(bytes), &node());
        prop_assert_eq!(resources.memory_limit_in_bytes, bytes);
        prop_assert_eq!(resources.cpu_shares, milli_cpu_to_shares(milli));
        prop_assert_eq!(resources.cpu_quota, milli_cpu_to_quota(milli, 100_000));
    }
}

fn one_container(resources: &serde_json::Value) -> k8s_openapi::api::core::v1::Pod {
    pod(json!({"containers": [{"name": "app", "resources": resources}]}))
}

#[test]
fn qos_counts_init_containers() {
    let pod = pod(json!({
        "containers": [{"name": "app", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}}}],
        "initContainers": [{"name": "init"}],
    }));
    assert_eq!(get_pod_qos(&pod), QosClass::Burstable);
}

#[test]
fn oom_score_by_qos() {
    let node = node();
    let capacity = node.memory_capacity_bytes;
    let guaranteed = one_container(&json!({
        "limits": {"cpu": "1", "memory": "1Gi"},
        "requests": {"cpu": "1", "memory": "1Gi"},
    }));
    let best_effort = one_container(&json!({}));
    // 1 GiB of 8 GiB: 1000 - 125 = 875.
    let burstable = one_container(&json!({"requests": {"memory": "1Gi"}}));
    let tiny = one_container(&json!({"requests": {"cpu": "10m"}}));
    let huge = one_container(&json!({"requests": {"memory": "16Gi"}}));
    let score = |pod: &k8s_openapi::api::core::v1::Pod| {
        let c = &pod.spec.as_ref().unwrap().containers[0];
        oom_score_adj(pod, c, false, capacity).unwrap()
    };
    assert_eq!(score(&guaranteed), -997);
    assert_eq!(score(&best_effort), 1000);
    assert_eq!(score(&burstable), 875);
    assert_eq!(score(&tiny), 999);
    assert_eq!(score(&huge), 3);
}

#[test]
fn node_critical_static_pods_get_guaranteed_score() {
    let pod = pod_with(
        json!({"annotations": {"kubernetes.io/config.source": "file"}}),
        json!({"priorityClassName": "system-node-critical"}),
    );
    let c = &pod.spec.as_ref().unwrap().containers[0];
    assert_eq!(oom_score_adj(&pod, c, false, 8 << 30).unwrap(), -997);
}

#[test]
fn sidecar_score_is_no_higher_than_smallest_app_container() {
    let pod = pod(json!({
        "containers": [
            {"name": "a", "resources": {"requests": {"memory": "4Gi"}}},
            {"name": "b", "resources": {"requests": {"memory": "2Gi"}}},
        ],
        "initContainers": [{"name": "side", "restartPolicy": "Always", "resources": {"requests": {"memory": "1Gi"}}}],
    }));
    let side = &pod.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0];
    // Own request: 875; smallest app container (2 GiB): 750.
    assert_eq!(oom_score_adj(&pod, side, true, 8 << 30).unwrap(), 750);
}

#[test]
fn container_resources_convert_requests_and_limits() {
    let pod = one_container(&json!({
        "requests": {"cpu": "250m", "memory": "64Mi"},
        "limits": {"cpu": "500m", "memory": "128Mi"},
    }));
    let c = &pod.spec.as_ref().unwrap().containers[0];
    let r = container_linux_resources(&pod, c, false, &node()).unwrap();
    assert_eq!(r.cpu_shares, 256);
    assert_eq!(r.cpu_quota, 50_000);
    assert_eq!(r.cpu_period, 100_000);
    assert_eq!(r.memory_limit_in_bytes, 128 << 20);
    assert_eq!(r.oom_score_adj, 1000 - 1000 * (64 << 20) / (8_i64 << 30));
    assert_eq!(
        r.unified.get("memory.oom.group").map(String::as_str),
        Some("1")
    );
    assert!(!r.unified.contains_key("memory.swap.max"));
}

#[test]
fn limit_only_cpu_sets_shares_from_limit_and_no_limit_means_no_quota() {
    let node = node();
    let r = linux_resources(None, Some(2000), None, &node);
    assert_eq!(
        (r.cpu_shares, r.cpu_quota, r.cpu_period),
        (2048, 200_000, 100_000)
    );
    assert_eq!(r.memory_limit_in_bytes, 0);
    let r = linux_resources(Some(100), None, None, &node);
    assert_eq!((r.cpu_shares, r.cpu_quota, r.cpu_period), (102, 0, 100_000));
    let r = linux_resources(None, None, None, &node);
    assert_eq!(r.cpu_shares, 2);
}

#[test]
fn cfs_quota_off_leaves_quota_and_period_unset() {
    let mut node = node();
    node.cpu_cfs_quota = false;
    let r = linux_resources(Some(500), Some(1000), None, &node);
    assert_eq!((r.cpu_quota, r.cpu_period), (0, 0));
}

#[test]
fn swap_controller_pins_swap_to_zero() {
    let mut node = node();
    node.swap_controller = true;
    let pod = one_container(&json!({}));
    let c = &pod.spec.as_ref().unwrap().containers[0];
    let r = container_linux_resources(&pod, c, false, &node).unwrap();
    assert_eq!(
        r.unified.get("memory.swap.max").map(String::as_str),
        Some("0")
    );
}

#[test]
fn invalid_quantity_is_an_error_naming_it() {
    let pod = one_container(&json!({"limits": {"memory": "12 bytes"}}));
    let c = &pod.spec.as_ref().unwrap().containers[0];
    let err = container_linux_resources(&pod, c, false, &node()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("limits.memory") && text.contains("12 bytes"),
        "{text}"
    );
    assert_eq!(err.reason(), "CreateContainerConfigError");
}

#[test]
fn sandbox_resources_and_overhead() {
    let pod = pod(json!({
        "containers": [{"name": "a", "resources": {"requests": {"cpu": "250m"}, "limits": {"cpu": "500m", "memory": "1Gi"}}}],
        "overhead": {"cpu": "100m", "memory": "10Mi"},
    }));
    let (resources, overhead) = sandbox_linux_resources(&pod, &node()).unwrap();
    assert_eq!(resources.cpu_shares, 256);
    assert_eq!(resources.cpu_quota, 50_000);
    assert_eq!(resources.memory_limit_in_bytes, 1 << 30);
    assert_eq!(resources.oom_score_adj, 0);
    assert_eq!(overhead.cpu_shares, 102);
    assert_eq!(overhead.cpu_quota, 10_000);
    assert_eq!(overhead.memory_limit_in_bytes, 10 << 20);
    let plain = one_container(&json!({}));
    let (_, overhead) = sandbox_linux_resources(&plain, &node()).unwrap();
    assert_eq!(
        overhead,
        kernlet_cri::v1::LinuxContainerResources::default()
    );
}

#[test]
fn memory_qos_sets_min_and_high_on_v2() {
    let mut node = node();
    node.memory_qos = true;
    node.allocatable.memory_bytes = Some(1 << 30);
    let mi = 1_i64 << 20;
    let burstable =
        one_container(&json!({"requests": {"memory": "64Mi"}, "limits": {"memory": "128Mi"}}));
    let container = &burstable.spec.as_ref().expect("spec").containers[0];
    let resources = container_linux_resources(&burstable, container, false, &node).expect("ok");
    assert_eq!(resources.unified["memory.min"], (64 * mi).to_string());
    let high = (64 * mi + 64 * mi * 9 / 10) / 4096 * 4096;
    assert_eq!(resources.unified["memory.high"], high.to_string());

    // Request equal to limit (Guaranteed memory): memory.min only.
    let guaranteed =
        one_container(&json!({"requests": {"memory": "64Mi"}, "limits": {"memory": "64Mi"}}));
    let container = &guaranteed.spec.as_ref().expect("spec").containers[0];
    let resources = container_linux_resources(&guaranteed, container, false, &node).expect("ok");
    assert!(!resources.unified.contains_key("memory.high"));

    // No limit: node allocatable is the ceiling.
    let unlimited = one_container(&json!({"requests": {"memory": "64Mi"}}));
    let container = &unlimited.spec.as_ref().expect("spec").containers[0];
    let resources = container_linux_resources(&unlimited, container, false, &node).expect("ok");
    let high = (64 * mi + ((1 << 30) - 64 * mi) * 9 / 10) / 4096 * 4096;
    assert_eq!(resources.unified["memory.high"], high.to_string());

    // Gate off: nothing.
    node.memory_qos = false;
    let resources = container_linux_resources(&unlimited, container, false, &node).expect("ok");
    assert!(!resources.unified.contains_key("memory.min"));
}
