//! The Node object kernlet registers and the status it reports, built from what the daemon
//! knows of the node ([`NodeFacts`]) without touching the API server.
//!
//! Upstream: `pkg/kubelet/kubelet_node_status.go` (`initialNode`, `updateDefaultLabels`) and
//! `pkg/kubelet/nodestatus/setters.go` (addresses, machine info, version, daemon endpoints,
//! images, the pressure and `Ready` conditions with their reasons and messages). Conditions keep
//! their `lastTransitionTime` while their status stays; `lastHeartbeatTime` is the time of each
//! computation, and [`changed`] ignores it, so an unchanged status is not written.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ContainerImage, DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints,
    NodeSpec, NodeStatus, NodeSystemInfo, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use crate::config::ClusterSettings;

/// The Kubernetes version kernlet implements, as `nodeInfo.kubeletVersion` reports it (with
/// kernlet's own version as build metadata, which version comparisons ignore).
pub const KUBELET_VERSION: &str = concat!("v1.36.2+kernlet-", env!("CARGO_PKG_VERSION"));

/// Annotation saying volumes are attached by the controller manager (upstream sets it when
/// `enableControllerAttachDetach` is true, its default).
const ATTACH_DETACH_ANNOTATION: &str = "volumes.kubernetes.io/controller-managed-attach-detach";

/// What the node reports about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFacts {
    pub name: String,
    pub host_ips: Vec<std::net::IpAddr>,
    /// `capacity`, by resource name (`cpu`, `memory`, `pods`, `ephemeral-storage`,
    /// `hugepages-2Mi`, ...), in Kubernetes quantity syntax.
    pub capacity: BTreeMap<String, String>,
    pub allocatable: BTreeMap<String, String>,
    pub port: u16,
    pub machine_id: String,
    pub system_uuid: String,
    pub boot_id: String,
    pub kernel_version: String,
    pub os_image: String,
    /// `<runtime name>://<version>`, e.g. `containerd://1.6.20`.
    pub runtime_version: String,
}

/// The runtime's readiness (CRI `Status`): why the node is not ready, if it is not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readiness {
    /// Upstream's messages, e.g. `container runtime network not ready: NetworkReady=false
    /// reason:NetworkPluginNotReady message:...`; empty when ready.
    pub problems: Vec<String>,
}

/// One image of the runtime, for `status.images`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub names: Vec<String>,
    pub size_bytes: u64,
}

/// Upstream's `maxNamesPerImageInNodeStatus`.
const MAX_NAMES_PER_IMAGE: usize = 5;

/// The Go architecture name of this build (`runtime.GOARCH`).
#[must_use]
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The labels every kubelet sets on its Node (upstream `initialNode` / `updateDefaultLabels`).
#[must_use]
pub fn default_labels(name: &str) -> BTreeMap<String, String> {
    [
        ("kubernetes.io/hostname", name),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", go_arch()),
        ("beta.kubernetes.io/os", "linux"),
        ("beta.kubernetes.io/arch", go_arch()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value.to_owned()))
    .collect()
}

/// The Node to create: name, labels (`--node-labels` under the default ones), the attach/detach
/// annotation and `registerWithTaints`.
#[must_use]
pub fn initial_node(facts: &NodeFacts, settings: &ClusterSettings) -> Node {
    let mut labels = settings.node_labels.clone();
    labels.extend(default_labels(&facts.name));
    let taints: Vec<Taint> = settings
        .register_with_taints
        .iter()
        .map(|taint| Taint {
            key: taint.key.clone(),
            value: Some(taint.value.clone()).filter(|value| !value.is_empty()),
            effect: taint.effect.clone(),
            time_added: None,
        })
        .collect();
    Node {
        metadata: ObjectMeta {
            name: Some(facts.name.clone()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                ATTACH_DETACH_ANNOTATION.to_owned(),
                "true".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            taints: Some(taints).filter(|taints| !taints.is_empty()),
            ..NodeSpec::default()
        }),
        status: None,
    }
}

/// The Node as kernlet registers it, with its allocatable: what admission judges by while the
/// API server's copy cannot be read.
#[must_use]
pub fn registered_node(facts: &NodeFacts, settings: &ClusterSettings) -> Node {
    let allocatable = facts
        .allocatable
        .iter()
        .map(|(name, value)| (name.clone(), Quantity(value.clone())))
        .collect();
    Node {
        status: Some(NodeStatus {
            allocatable: Some(allocatable),
            ..NodeStatus::default()
        }),
        ..initial_node(facts, settings)
    }
}

/// The labels and annotations an existing Node lacks or has wrong (upstream reconciles the
/// default labels and the attach/detach annotation of a Node it adopts); `None` when it is right.
#[must_use]
pub fn adoption_patch(existing: &Node, facts: &NodeFacts) -> Option<serde_json::Value> {
    let labels = existing.metadata.labels.clone().unwrap_or_default();
    let wrong: BTreeMap<String, String> = default_labels(&facts.name)
        .into_iter()
        .filter(|(key, value)| labels.get(key) != Some(value))
        .collect();
    let annotated = existing
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(ATTACH_DETACH_ANNOTATION))
        .is_some_and(|value| value == "true");
    if wrong.is_empty() && annotated {
        return None;
    }
    let mut metadata = serde_json::Map::new();
    if !wrong.is_empty() {
        metadata.insert("labels".to_owned(), serde_json::json!(wrong));
    }
    if !annotated {
        metadata.insert(
            "annotations".to_owned(),
            serde_json::json!({ ATTACH_DETACH_ANNOTATION: "true" }),
        );
    }
    Some(serde_json::json!({ "metadata": metadata }))
}

/// The node's status at `now`, carrying the transition times of `previous` conditions whose
/// status did not change.
#[must_use]
pub fn status(
    facts: &NodeFacts,
    readiness: &Readiness,
    images: &[Image],
    max_images: Option<usize>,
    previous: Option<&NodeStatus>,
    now: Timestamp,
) -> NodeStatus {
    let quantities = |map: &BTreeMap<String, String>| {
        map.iter()
            .map(|(name, value)| (name.clone(), Quantity(value.clone())))
            .collect::<BTreeMap<_, _>>()
    };
    let mut addresses: Vec<NodeAddress> = facts
        .host_ips
        .iter()
        .map(|ip| NodeAddress {
            type_: "InternalIP".to_owned(),
            address: ip.to_string(),
        })
        .collect();
    addresses.push(NodeAddress {
        type_: "Hostname".to_owned(),
        address: facts.name.clone(),
    });
    NodeStatus {
        capacity: Some(quantities(&facts.capacity)),
        allocatable: Some(quantities(&facts.allocatable)),
        addresses: Some(addresses),
        conditions: Some(conditions(readiness, previous, now)),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(facts.port),
            }),
        }),
        node_info: Some(NodeSystemInfo {
            machine_id: facts.machine_id.clone(),
            system_uuid: facts.system_uuid.clone(),
            boot_id: facts.boot_id.clone(),
            kernel_version: facts.kernel_version.clone(),
            os_image: facts.os_image.clone(),
            container_runtime_version: facts.runtime_version.clone(),
            kubelet_version: KUBELET_VERSION.to_owned(),
            operating_system: "linux".to_owned(),
            architecture: go_arch().to_owned(),
            ..NodeSystemInfo::default()
        }),
        images: Some(node_images(images, max_images)),
        ..NodeStatus::default()
    }
}

/// `status.images`: largest first, at most `max` (upstream sorts by size and caps at
/// `nodeStatusMaxImages`), each with at most five names, digests before tags.
fn node_images(images: &[Image], max: Option<usize>) -> Vec<ContainerImage> {
    let mut sorted: Vec<&Image> = images.iter().filter(|i| !i.names.is_empty()).collect();
    sorted.sort_by_key(|image| std::cmp::Reverse(image.size_bytes));
    sorted
        .into_iter()
        .take(max.unwrap_or(usize::MAX))
        .map(|image| ContainerImage {
            names: Some(
                image
                    .names
                    .iter()
                    .take(MAX_NAMES_PER_IMAGE)
                    .cloned()
                    .collect(),
            ),
            size_bytes: i64::try_from(image.size_bytes).ok(),
        })
        .collect()
}

/// The four conditions upstream's setters report. kernlet has no eviction manager yet, so the
/// pressure conditions say there is none.
fn conditions(
    readiness: &Readiness,
    previous: Option<&NodeStatus>,
    now: Timestamp,
) -> Vec<NodeCondition> {
    let ready = if readiness.problems.is_empty() {
        (
            "True",
            "KubeletReady",
            "kubelet is posting ready status".to_owned(),
        )
    } else {
        ("False", "KubeletNotReady", readiness.problems.join(", "))
    };
    [
        (
            "MemoryPressure",
            (
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available".to_owned(),
            ),
        ),
        (
            "DiskPressure",
            (
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure".to_owned(),
            ),
        ),
        (
            "PIDPressure",
            (
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available".to_owned(),
            ),
        ),
        ("Ready", ready),
    ]
    .into_iter()
    .map(|(type_, (status, reason, message))| {
        let transition = previous
            .and_then(|previous| previous.conditions.as_ref())
            .and_then(|conditions| conditions.iter().find(|c| c.type_ == type_))
            .filter(|c| c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now));
        NodeCondition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: Some(reason.to_owned()),
            message: Some(message),
            last_heartbeat_time: Some(Time(now)),
            last_transition_time: Some(transition),
        }
    })
    .collect()
}

/// Whether `new` differs from `old` in anything but the conditions' heartbeat times (upstream's
/// `nodeStatusHasChanged`).
#[must_use]
pub fn changed(old: &NodeStatus, new: &NodeStatus) -> bool {
    let without_heartbeats = |status: &NodeStatus| {
        let mut status = status.clone();
        for condition in status.conditions.iter_mut().flatten() {
            condition.last_heartbeat_time = None;
        }
        status
    };
    without_heartbeats(old) != without_heartbeats(new)
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;

/// The node events upstream's condition setters record for what changed from `old` to `new`
/// (a condition `old` lacks counts as changed): `NodeReady`, `NodeHasSufficientMemory`, ...
#[must_use]
pub fn condition_events(old: Option<&NodeStatus>, new: &NodeStatus) -> Vec<&'static str> {
    let status_of = |status: Option<&NodeStatus>, type_: &str| {
        status?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| c.status.clone())
    };
    let table = [
        (
            "MemoryPressure",
            "NodeHasInsufficientMemory",
            "NodeHasSufficientMemory",
        ),
        (
            "DiskPressure",
            "NodeHasDiskPressure",
            "NodeHasNoDiskPressure",
        ),
        (
            "PIDPressure",
            "NodeHasInsufficientPID",
            "NodeHasSufficientPID",
        ),
        ("Ready", "NodeReady", "NodeNotReady"),
    ];
    let mut reasons = Vec::new();
    for (type_, when_true, otherwise) in table {
        let now = status_of(Some(new), type_);
        if now.is_some() && now != status_of(old, type_) {
            reasons.push(if now.as_deref() == Some("True") {
                when_true
            } else {
                otherwise
            });
        }
    }
    reasons
}
