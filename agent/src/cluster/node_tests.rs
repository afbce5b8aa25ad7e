use std::collections::BTreeMap;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::*;
use crate::config::{ClusterSettings, Taint as ConfigTaint};

fn facts() -> NodeFacts {
    NodeFacts {
        name: "worker-1".to_owned(),
        host_ips: vec!["10.0.0.5".parse().unwrap()],
        capacity: BTreeMap::from([("cpu".to_owned(), "2".to_owned())]),
        allocatable: BTreeMap::from([("cpu".to_owned(), "1500m".to_owned())]),
        port: 10250,
        runtime_version: "containerd://1.6.20".to_owned(),
        ..NodeFacts::default()
    }
}

fn condition<'a>(status: &'a NodeStatus, type_: &str) -> &'a NodeCondition {
    let conditions = status.conditions.as_ref().unwrap();
    conditions.iter().find(|c| c.type_ == type_).unwrap()
}

#[test]
fn a_new_node_has_the_default_labels_over_the_flag_s_and_its_taints() {
    let settings = ClusterSettings {
        node_labels: BTreeMap::from([
            ("team".to_owned(), "a".to_owned()),
            ("kubernetes.io/hostname".to_owned(), "spoofed".to_owned()),
        ]),
        register_with_taints: vec![ConfigTaint {
            key: "dedicated".to_owned(),
            value: String::new(),
            effect: "NoSchedule".to_owned(),
        }],
        ..ClusterSettings::default()
    };
    let node = initial_node(&facts(), &settings);
    let labels = node.metadata.labels.unwrap();
    assert_eq!(labels["kubernetes.io/hostname"], "worker-1");
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert_eq!(labels["team"], "a");
    let taints = node.spec.unwrap().taints.unwrap();
    assert_eq!(taints[0].key, "dedicated");
    assert_eq!(taints[0].value, None);
}

#[test]
fn an_adopted_node_gets_only_what_it_lacks() {
    let mut node = initial_node(&facts(), &ClusterSettings::default());
    assert_eq!(adoption_patch(&node, &facts()), None);
    if let Some(labels) = node.metadata.labels.as_mut() {
        labels.insert("kubernetes.io/arch".to_owned(), "s390x".to_owned());
    }
    node.metadata.annotations = None;
    let patch = adoption_patch(&node, &facts()).unwrap();
    assert_eq!(patch["metadata"]["labels"]["kubernetes.io/arch"], go_arch());
    assert!(
        patch["metadata"]["labels"]
            .get("kubernetes.io/os")
            .is_none()
    );
    assert_eq!(
        patch["metadata"]["annotations"][ATTACH_DETACH_ANNOTATION],
        "true"
    );
}

#[test]
fn conditions_keep_their_transition_time_while_their_status_stays() {
    let t0 = Timestamp::from_second(1_800_000_000).unwrap();
    let t1 = t0 + SignedDuration::from_secs(10);
    let ready = Readiness::default();
    let first = status(&facts(), &ready, &[], Some(50), None, t0);
    let ready_condition = condition(&first, "Ready");
    assert_eq!(ready_condition.status, "True");
    assert_eq!(ready_condition.reason.as_deref(), Some("KubeletReady"));
    assert_eq!(
        condition(&first, "MemoryPressure").reason.as_deref(),
        Some("KubeletHasSufficientMemory")
    );

    let second = status(&facts(), &ready, &[], Some(50), Some(&first), t1);
    let ready_condition = condition(&second, "Ready");
    assert_eq!(ready_condition.last_transition_time, Some(Time(t0)));
    assert_eq!(ready_condition.last_heartbeat_time, Some(Time(t1)));
    assert!(!changed(&first, &second), "only heartbeats moved");

    let broken = Readiness {
        problems: vec!["container runtime network not ready: NetworkReady=false".to_owned()],
    };
    let third = status(&facts(), &broken, &[], Some(50), Some(&second), t1);
    let ready_condition = condition(&third, "Ready");
    assert_eq!(ready_condition.status, "False");
    assert_eq!(ready_condition.reason.as_deref(), Some("KubeletNotReady"));
    assert_eq!(ready_condition.last_transition_time, Some(Time(t1)));
    assert!(changed(&second, &third));
}

#[test]
fn status_carries_addresses_endpoint_info_and_the_largest_images() {
    let images: Vec<Image> = (1..=4)
        .map(|i| Image {
            names: (0..7).map(|n| format!("img{i}:{n}")).collect(),
            size_bytes: i * 100,
        })
        .collect();
    let now = Timestamp::from_second(1_800_000_000).unwrap();
    let s = status(&facts(), &Readiness::default(), &images, Some(2), None, now);
    let addresses = s.addresses.unwrap();
    assert_eq!(addresses[0].type_, "InternalIP");
    assert_eq!(addresses[0].address, "10.0.0.5");
    assert_eq!(addresses[1].type_, "Hostname");
    assert_eq!(
        s.daemon_endpoints.unwrap().kubelet_endpoint.unwrap().port,
        10250
    );
    let info = s.node_info.unwrap();
    assert_eq!(info.container_runtime_version, "containerd://1.6.20");
    assert!(info.kubelet_version.starts_with("v1.36."));
    let images = s.images.unwrap();
    assert_eq!(images.len(), 2);
    assert_eq!(images[0].size_bytes, Some(400));
    assert_eq!(images[0].names.as_ref().unwrap().len(), 5);
    assert_eq!(s.allocatable.unwrap()["cpu"].0, "1500m");
    let unlimited = status(&facts(), &Readiness::default(), &[], None, None, now);
    assert_eq!(unlimited.images.unwrap().len(), 0);
}

#[test]
fn condition_changes_become_upstream_node_events() {
    let status = |ready: &str, memory: &str| -> NodeStatus {
        serde_json::from_value(serde_json::json!({"conditions": [
            {"type": "MemoryPressure", "status": memory},
            {"type": "Ready", "status": ready},
        ]}))
        .unwrap()
    };
    let first = status("True", "False");
    assert_eq!(
        condition_events(None, &first),
        ["NodeHasSufficientMemory", "NodeReady"]
    );
    assert!(condition_events(Some(&first), &first).is_empty());
    let later = status("False", "True");
    assert_eq!(
        condition_events(Some(&first), &later),
        ["NodeHasInsufficientMemory", "NodeNotReady"]
    );
}
