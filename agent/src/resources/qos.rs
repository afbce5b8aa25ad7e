//! A pod's quality-of-service class, after upstream's `GetPodQOS` / `ComputePodQOS`
//! (`pkg/apis/core/v1/helper/qos/qos.go`), with the `PodLevelResources` gate on (its v1.34
//! default): pod-level `spec.resources`, when present, decide alone.
//!
//! Only `cpu` and `memory` count, and only positive quantities. The pod is `BestEffort` when no
//! container (app or init) requests or limits either; `Guaranteed` when every container limits
//! both and the summed requests equal the summed limits for every resource; `Burstable`
//! otherwise. Ephemeral containers never count (they cannot set resources).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use k8s_openapi::api::core::v1::{Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;

use crate::config::Quantity;

/// The `status.qosClass` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    /// The API spelling.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Guaranteed => "Guaranteed",
            Self::Burstable => "Burstable",
            Self::BestEffort => "BestEffort",
        }
    }

    /// Parses the API spelling.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "Guaranteed" => Some(Self::Guaranteed),
            "Burstable" => Some(Self::Burstable),
            "BestEffort" => Some(Self::BestEffort),
            _ => None,
        }
    }
}

impl fmt::Display for QosClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `GetPodQOS`: the class already recorded in `status.qosClass`, else [`compute_pod_qos`].
#[must_use]
pub fn get_pod_qos(pod: &Pod) -> QosClass {
    pod.status
        .as_ref()
        .and_then(|s| s.qos_class.as_deref())
        .and_then(QosClass::parse)
        .unwrap_or_else(|| compute_pod_qos(pod))
}

/// `ComputePodQOS`: the class from the pod's resources.
#[must_use]
pub fn compute_pod_qos(pod: &Pod) -> QosClass {
    let Some(spec) = pod.spec.as_ref() else {
        return QosClass::BestEffort;
    };
    let mut sums = Sums::default();
    if let Some(pod_level) = spec.resources.as_ref() {
        sums.add(pod_level, true);
    } else {
        let init = spec.init_containers.as_deref().unwrap_or_default();
        for container in spec.containers.iter().chain(init) {
            let empty = ResourceRequirements::default();
            sums.add(container.resources.as_ref().unwrap_or(&empty), false);
        }
    }
    sums.class()
}

/// Running totals in nano-units per supported resource.
#[derive(Default)]
struct Sums {
    requests: BTreeMap<&'static str, i128>,
    limits: BTreeMap<&'static str, i128>,
    guaranteed: bool,
    seen_any: bool,
}

impl Sums {
    /// Adds one set of requirements. Container sets must each limit both cpu and memory to be
    /// guaranteed; the pod-level set only when it gives limits at all (as upstream checks).
    fn add(&mut self, resources: &ResourceRequirements, pod_level: bool) {
        if !self.seen_any {
            self.guaranteed = true;
            self.seen_any = true;
        }
        for (name, quantity) in supported(resources.requests.as_ref()) {
            *self.requests.entry(name).or_default() += quantity;
        }
        let limits = resources.limits.as_ref();
        let mut found = Vec::new();
        for (name, quantity) in supported(limits) {
            found.push(name);
            *self.limits.entry(name).or_default() += quantity;
        }
        let checks_limits = !pod_level || limits.is_some_and(|l| !l.is_empty());
        if checks_limits && !(found.contains(&"cpu") && found.contains(&"memory")) {
            self.guaranteed = false;
        }
    }

    fn class(&self) -> QosClass {
        if self.requests.is_empty() && self.limits.is_empty() {
            return QosClass::BestEffort;
        }
        let matched = self
            .requests
            .iter()
            .all(|(name, request)| self.limits.get(name) == Some(request));
        if self.guaranteed && matched && self.requests.len() == self.limits.len() {
            QosClass::Guaranteed
        } else {
            QosClass::Burstable
        }
    }
}

/// The positive `cpu` / `memory` quantities of a resource list, in nano-units. A quantity that
/// does not parse counts as absent (the API server rejects such pods).
fn supported(
    list: Option<&BTreeMap<String, ApiQuantity>>,
) -> impl Iterator<Item = (&'static str, i128)> + '_ {
    list.into_iter().flatten().filter_map(|(name, quantity)| {
        let name = match name.as_str() {
            "cpu" => "cpu",
            "memory" => "memory",
            _ => return None,
        };
        let nanos = Quantity::from_str(&quantity.0).ok()?.as_nanos();
        (nanos > 0).then_some((name, nanos))
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodStatus};

    use super::*;

    fn list(cpu: &str, memory: &str) -> BTreeMap<String, ApiQuantity> {
        let mut map = BTreeMap::new();
        if !cpu.is_empty() {
            map.insert("cpu".to_owned(), ApiQuantity(cpu.to_owned()));
        }
        if !memory.is_empty() {
            map.insert("memory".to_owned(), ApiQuantity(memory.to_owned()));
        }
        map
    }

    fn resources(requests: (&str, &str), limits: (&str, &str)) -> ResourceRequirements {
        ResourceRequirements {
            requests: Some(list(requests.0, requests.1)),
            limits: Some(list(limits.0, limits.1)),
            ..Default::default()
        }
    }

    fn container(requests: (&str, &str), limits: (&str, &str)) -> Container {
        Container {
            name: "c".to_owned(),
            resources: Some(resources(requests, limits)),
            ..Default::default()
        }
    }

    fn pod(containers: Vec<Container>, init: Vec<Container>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers,
                init_containers: (!init.is_empty()).then_some(init),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    const NONE: (&str, &str) = ("", "");

    /// The cases of upstream's `TestComputePodQOS`, plus init-container edge cases.
    #[test]
    fn status_qos_classes_follow_upstream_table() {
        let g = || container(("100m", "100Mi"), ("100m", "100Mi"));
        let be = || container(NONE, NONE);
        let cases: Vec<(&str, Pod, QosClass)> = vec![
            ("guaranteed", pod(vec![g()], vec![]), QosClass::Guaranteed),
            (
                "guaranteed-guaranteed",
                pod(vec![g(), g()], vec![]),
                QosClass::Guaranteed,
            ),
            (
                "best-effort-best-effort",
                pod(vec![be(), be()], vec![]),
                QosClass::BestEffort,
            ),
            ("best-effort", pod(vec![be()], vec![]), QosClass::BestEffort),
            (
                "best-effort-burstable",
                pod(vec![be(), container(("1", ""), ("2", ""))], vec![]),
                QosClass::Burstable,
            ),
            (
                "best-effort-guaranteed",
                pod(
                    vec![be(), container(("10m", "100Mi"), ("10m", "100Mi"))],
                    vec![],
                ),
                QosClass::Burstable,
            ),
            (
                "burstable-cpu-guaranteed-memory",
                pod(vec![container(("", "100Mi"), ("", "100Mi"))], vec![]),
                QosClass::Burstable,
            ),
            (
                "burstable-no-limits",
                pod(vec![container(("100m", "100Mi"), NONE)], vec![]),
                QosClass::Burstable,
            ),
            (
                "burstable-guaranteed",
                pod(vec![container(("1", "100Mi"), ("2", "100Mi")), g()], vec![]),
                QosClass::Burstable,
            ),
            (
                "burstable-unbounded-but-requests-match-limits",
                pod(
                    vec![
                        container(("100m", "100Mi"), ("200m", "200Mi")),
                        container(("100m", "100Mi"), NONE),
                    ],
                    vec![],
                ),
                QosClass::Burstable,
            ),
            (
                "burstable-1",
                pod(vec![container(("10m", "100Mi"), ("100m", "200Mi"))], vec![]),
                QosClass::Burstable,
            ),
            (
                "burstable-2",
                pod(vec![container(("0", "0"), ("100m", "200Mi"))], vec![]),
                QosClass::Burstable,
            ),
            (
                "init-container burstable, app best-effort",
                pod(
                    vec![be()],
                    vec![container(("10m", "100Mi"), ("100m", "200Mi"))],
                ),
                QosClass::Burstable,
            ),
            (
                "requests == limits for all containers including init",
                pod(vec![g(), g()], vec![g()]),
                QosClass::Guaranteed,
            ),
            (
                "guaranteed apps, best-effort init",
                pod(vec![g()], vec![be()]),
                QosClass::Burstable,
            ),
            (
                "equal values in other units",
                pod(vec![container(("0.1", "1Gi"), ("100m", "1024Mi"))], vec![]),
                QosClass::Guaranteed,
            ),
            ("no containers", pod(vec![], vec![]), QosClass::BestEffort),
        ];
        for (name, pod, want) in cases {
            assert_eq!(compute_pod_qos(&pod), want, "{name}");
        }
    }

    #[test]
    fn status_qos_ignores_zero_and_unsupported_resources() {
        let mut requests = list("0", "0");
        let mut limits = list("0", "0");
        for l in [&mut requests, &mut limits] {
            l.insert("hugepages-2Mi".to_owned(), ApiQuantity("1Gi".to_owned()));
        }
        let c = Container {
            resources: Some(ResourceRequirements {
                requests: Some(requests),
                limits: Some(limits),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(compute_pod_qos(&pod(vec![c], vec![])), QosClass::BestEffort);
    }

    #[test]
    fn status_qos_pod_level_resources_decide_alone() {
        let with = |pod_level: ResourceRequirements, c: Container| {
            let mut p = pod(vec![c], vec![]);
            p.spec.as_mut().unwrap().resources = Some(pod_level);
            p
        };
        let cases = [
            (
                "guaranteed-with-pod-level-resources",
                with(
                    resources(("10m", "100Mi"), ("10m", "100Mi")),
                    container(NONE, NONE),
                ),
                QosClass::Guaranteed,
            ),
            (
                "guaranteed-with-pod-and-container-level-resources",
                with(
                    resources(("10m", "100Mi"), ("10m", "100Mi")),
                    container(("3m", "10Mi"), ("5m", "20Mi")),
                ),
                QosClass::Guaranteed,
            ),
            (
                "burstable-with-pod-level-resources",
                with(
                    resources(("10m", "10Mi"), ("20m", "50Mi")),
                    container(NONE, NONE),
                ),
                QosClass::Burstable,
            ),
            (
                "burstable-with-pod-and-container-level-resources",
                with(
                    resources(("10m", "10Mi"), ("20m", "50Mi")),
                    container(("5m", "10Mi"), ("5m", "10Mi")),
                ),
                QosClass::Burstable,
            ),
            (
                "burstable-with-pod-and-container-level-requests",
                with(
                    resources(("10m", "10Mi"), NONE),
                    container(("5m", "10Mi"), NONE),
                ),
                QosClass::Burstable,
            ),
            (
                "burstable-with-pod-and-container-level-resources-2",
                with(
                    resources(("10m", "10Mi"), ("5m", "")),
                    container(("5m", "10Mi"), ("5m", "10Mi")),
                ),
                QosClass::Burstable,
            ),
        ];
        for (name, pod, want) in cases {
            assert_eq!(compute_pod_qos(&pod), want, "{name}");
        }
    }

    #[test]
    fn status_qos_recorded_class_wins() {
        let mut p = pod(vec![container(NONE, NONE)], vec![]);
        p.status = Some(PodStatus {
            qos_class: Some("Burstable".to_owned()),
            ..Default::default()
        });
        assert_eq!(get_pod_qos(&p), QosClass::Burstable);
        assert_eq!(compute_pod_qos(&p), QosClass::BestEffort);
        assert_eq!(QosClass::Guaranteed.to_string(), "Guaranteed");
    }
}
