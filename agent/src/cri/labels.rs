//! Labels and annotations kernlet puts on sandboxes and containers, with the upstream kubelet's keys
//! (`pkg/kubelet/types/labels.go`, `pkg/kubelet/kuberuntime/labels.go`). Everything kernlet needs
//! after a restart is read back from these, so there is no local database (design decision 2).

// Labels (on sandboxes and containers).
pub const POD_NAME: &str = "io.kubernetes.pod.name";
// Labels (on sandboxes and containers).
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const POD_UID: &str = "io.kubernetes.pod.uid";
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
// Annotations (on containers, the last two on sandboxes too).
pub const CONTAINER_HASH: &str = "io.kubernetes.container.hash";
pub const CONTAINER_RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
pub const CONTAINER_TERMINATION_MESSAGE_PATH: &str =
    "io.kubernetes.container.terminationMessagePath";
pub const CONTAINER_TERMINATION_MESSAGE_POLICY: &str =
    "io.kubernetes.container.terminationMessagePolicy";
pub const CONTAINER_PRESTOP_HANDLER: &str = "io.kubernetes.container.preStopHandler";
pub const POD_TERMINATION_GRACE_PERIOD: &str = "io.kubernetes.pod.terminationGracePeriod";
pub const POD_DELETION_GRACE_PERIOD: &str = "io.kubernetes.pod.deletionGracePeriod";
pub const CONTAINER_PORTS: &str = "io.kubernetes.container.ports";

/// The label selector matching one pod's sandboxes and containers.
#[must_use]
pub fn pod_selector(uid: &str) -> std::collections::HashMap<String, String> {
    std::collections::HashMap::from([(POD_UID.to_owned(), uid.to_owned())])
}
