//! Pod conditions, after upstream's `pkg/kubelet/status/generate.go`
//! (`GeneratePodReadyToStartContainersCondition`, `GeneratePodInitializedCondition`,
//! `GeneratePodReadyCondition`, `GenerateContainersReadyCondition`), the condition assembly of
//! `generateAPIPodStatus` and the status manager's `updateLastTransitionTime`.

use k8s_openapi::api::core::v1::{ContainerStatus, PodCondition, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::phase::{FAILED, SUCCEEDED, is_restartable_init};

pub(super) const POD_SCHEDULED: &str = "PodScheduled";
pub(super) const READY: &str = "Ready";
pub(super) const INITIALIZED: &str = "Initialized";
pub(super) const CONTAINERS_READY: &str = "ContainersReady";
pub(super) const READY_TO_START: &str = "PodReadyToStartContainers";
pub(super) const DISRUPTION_TARGET: &str = "DisruptionTarget";

pub(super) const CONTAINERS_NOT_READY: &str = "ContainersNotReady";
pub(super) const CONTAINERS_NOT_INITIALIZED: &str = "ContainersNotInitialized";
pub(super) const POD_COMPLETED: &str = "PodCompleted";
pub(super) const POD_FAILED: &str = "PodFailed";
pub(super) const READINESS_GATES_NOT_READY: &str = "ReadinessGatesNotReady";

/// `kubetypes.PodConditionByKubelet`: the condition types the kubelet owns.
const OWNED_BY_KUBELET: [&str; 7] = [
    POD_SCHEDULED,
    READY,
    INITIALIZED,
    CONTAINERS_READY,
    "PodResizeInProgress",
    "PodResizePending",
    READY_TO_START,
];

/// The inputs of the kubelet-owned conditions.
pub(super) struct Inputs<'a> {
    pub spec: &'a PodSpec,
    /// Init container statuses, then app container statuses.
    pub statuses: &'a [&'a ContainerStatus],
    pub phase: &'a str,
    /// `PodSandboxChanged` says a new sandbox is needed.
    pub new_sandbox_needed: bool,
    /// `pod.metadata.generation` when the pod has one (`PodObservedGenerationTracking`).
    pub generation: Option<i64>,
}

fn condition(
    type_: &str,
    status: bool,
    reason: Option<&str>,
    message: Option<String>,
    generation: Option<i64>,
) -> PodCondition {
    PodCondition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.map(str::to_owned),
        message,
        observed_generation: generation,
        last_probe_time: None,
        last_transition_time: None,
    }
}

fn find<'a>(statuses: &[&'a ContainerStatus], name: &str) -> Option<&'a ContainerStatus> {
    statuses.iter().copied().find(|s| s.name == name)
}

/// Go's `%s` of a `[]string`: `[a b]`.
fn go_list(names: &[&str]) -> String {
    format!("[{}]", names.join(" "))
}

/// All conditions of the new status: those of `api` (the pod's status as its source has it) the
/// kubelet does not own, `DisruptionTarget` from `old`, then the kubelet's own in upstream's
/// order (`PodReadyToStartContainers`, `Initialized`, `Ready`, `ContainersReady`,
/// `PodScheduled`). Transition times are not set here.
pub(super) fn generate(inputs: &Inputs<'_>, api: &PodStatus, old: &PodStatus) -> Vec<PodCondition> {
    let mut conditions: Vec<PodCondition> = api
        .conditions
        .iter()
        .flatten()
        .filter(|c| !OWNED_BY_KUBELET.contains(&c.type_.as_str()))
        .cloned()
        .collect();
    if let Some(disruption) = old
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == DISRUPTION_TARGET)
    {
        match conditions.iter_mut().find(|c| c.type_ == DISRUPTION_TARGET) {
            Some(existing) => *existing = disruption.clone(),
            None => conditions.push(disruption.clone()),
        }
    }
    let generation = inputs.generation;
    conditions.push(condition(
        READY_TO_START,
        !inputs.new_sandbox_needed,
        None,
        None,
        generation,
    ));
    conditions.push(initialized(inputs));
    let ready = pod_ready(inputs, &conditions);
    conditions.push(ready);
    conditions.push(containers_ready(inputs));
    conditions.push(condition(POD_SCHEDULED, true, None, None, generation));
    conditions
}

/// `GenerateContainersReadyCondition`: sidecars and app containers all ready.
pub(super) fn containers_ready(inputs: &Inputs<'_>) -> PodCondition {
    let generation = inputs.generation;
    let mut unknown = Vec::new();
    let mut unready = Vec::new();
    let sidecars = inputs
        .spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| is_restartable_init(c));
    for container in sidecars.chain(&inputs.spec.containers) {
        match find(inputs.statuses, &container.name) {
            Some(status) if !status.ready => unready.push(container.name.as_str()),
            Some(_) => {}
            None => unknown.push(container.name.as_str()),
        }
    }
    if (inputs.phase == SUCCEEDED && unknown.is_empty()) || inputs.phase == FAILED {
        let reason = if inputs.phase == FAILED {
            POD_FAILED
        } else {
            POD_COMPLETED
        };
        return condition(CONTAINERS_READY, false, Some(reason), None, generation);
    }
    let mut messages = Vec::new();
    if !unknown.is_empty() {
        messages.push(format!(
            "containers with unknown status: {}",
            go_list(&unknown)
        ));
    }
    if !unready.is_empty() {
        messages.push(format!(
            "containers with unready status: {}",
            go_list(&unready)
        ));
    }
    if messages.is_empty() {
        return condition(CONTAINERS_READY, true, None, None, generation);
    }
    condition(
        CONTAINERS_READY,
        false,
        Some(CONTAINERS_NOT_READY),
        Some(messages.join(", ")),
        generation,
    )
}

/// `GeneratePodReadyCondition`: `ContainersReady` and every readiness gate's condition true.
fn pod_ready(inputs: &Inputs<'_>, conditions: &[PodCondition]) -> PodCondition {
    let generation = inputs.generation;
    let containers = containers_ready(inputs);
    if containers.status != "True" {
        return PodCondition {
            type_: READY.to_owned(),
            ..containers
        };
    }
    let mut messages = Vec::new();
    for gate in inputs.spec.readiness_gates.iter().flatten() {
        let gate_type = &gate.condition_type;
        match conditions.iter().find(|c| &c.type_ == gate_type) {
            None => messages.push(format!(
                "corresponding condition of pod readiness gate {gate_type:?} does not exist."
            )),
            Some(c) if c.status != "True" => messages.push(format!(
                "the status of pod readiness gate {gate_type:?} is not \"True\", but {}",
                c.status
            )),
            Some(_) => {}
        }
    }
    if messages.is_empty() {
        return condition(READY, true, None, None, generation);
    }
    condition(
        READY,
        false,
        Some(READINESS_GATES_NOT_READY),
        Some(messages.join(", ")),
        generation,
    )
}

/// `GeneratePodInitializedCondition`: every init container done (sidecars: started).
fn initialized(inputs: &Inputs<'_>) -> PodCondition {
    let generation = inputs.generation;
    let mut unknown = Vec::new();
    let mut incomplete = Vec::new();
    for container in inputs.spec.init_containers.iter().flatten() {
        let Some(status) = find(inputs.statuses, &container.name) else {
            unknown.push(container.name.as_str());
            continue;
        };
        let done = if is_restartable_init(container) {
            status.started == Some(true)
        } else {
            status.ready
        };
        if !done {
            incomplete.push(container.name.as_str());
        }
    }
    if inputs.phase == SUCCEEDED && unknown.is_empty() {
        return condition(INITIALIZED, true, Some(POD_COMPLETED), None, generation);
    }
    if any_regular_container_started(inputs) {
        return condition(INITIALIZED, true, None, None, generation);
    }
    let mut messages = Vec::new();
    if !unknown.is_empty() {
        messages.push(format!(
            "containers with unknown status: {}",
            go_list(&unknown)
        ));
    }
    if !incomplete.is_empty() {
        messages.push(format!(
            "containers with incomplete status: {}",
            go_list(&incomplete)
        ));
    }
    if messages.is_empty() {
        return condition(INITIALIZED, true, None, None, generation);
    }
    condition(
        INITIALIZED,
        false,
        Some(CONTAINERS_NOT_INITIALIZED),
        Some(messages.join(", ")),
        generation,
    )
}

/// `HasAnyRegularContainerStarted`: an app container status is running or terminated.
fn any_regular_container_started(inputs: &Inputs<'_>) -> bool {
    inputs.spec.containers.iter().any(|c| {
        find(inputs.statuses, &c.name).is_some_and(|s| {
            s.state
                .as_ref()
                .is_some_and(|st| st.running.is_some() || st.terminated.is_some())
        })
    })
}

/// `updateLastTransitionTime` for each kubelet-managed type: the previous condition's time when
/// the status did not change, else `now`.
pub(super) fn set_transition_times(conditions: &mut [PodCondition], old: &PodStatus, now: &Time) {
    const MANAGED: [&str; 6] = [
        CONTAINERS_READY,
        READY,
        INITIALIZED,
        READY_TO_START,
        POD_SCHEDULED,
        DISRUPTION_TARGET,
    ];
    for condition in conditions
        .iter_mut()
        .filter(|c| MANAGED.contains(&c.type_.as_str()))
    {
        let previous = old
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == condition.type_);
        condition.last_transition_time = match previous {
            Some(p) if p.status == condition.status => p.last_transition_time.clone(),
            _ => Some(now.clone()),
        };
    }
}
