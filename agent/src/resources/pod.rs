//! A pod's and a container's requests and limits, parsed once for every caller.
//!
//! - [`container_resources`]: the cpu, memory and ephemeral-storage requests and limits of one
//!   container; other resources (hugepages, extended resources) are ignored.
//! - [`pod_requests`] / [`pod_limits`]: `AggregateContainerRequests` / `...Limits`
//!   (`k8s.io/component-helpers/resource`): app containers summed, init containers as a maximum,
//!   restartable init containers (sidecars) counted in both.
//! - [`pod_overhead`]: `spec.overhead`, which callers add where upstream does.
//!
//! Pod-level `spec.resources` (the `PodLevelResources` gate) and hugepage limits are not applied
//! to these sums; the `QoS` class ([`super::qos`]) does read pod-level resources.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;

use super::{Amounts, ResourceError};
use crate::config::Quantity;

/// A container's parsed requests and limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub requests: Amounts,
    pub limits: Amounts,
}

/// `namespace/name`, how errors name a pod.
fn pod_ref(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

fn pod_spec(pod: &Pod) -> Result<&PodSpec, ResourceError> {
    pod.spec
        .as_ref()
        .ok_or_else(|| ResourceError::NoSpec { pod: pod_ref(pod) })
}

/// Parses the cpu, memory and ephemeral-storage requests and limits of `container`.
pub fn container_resources(pod: &Pod, container: &Container) -> Result<Resources, ResourceError> {
    let parse = |map: Option<&BTreeMap<String, ApiQuantity>>, kind: &str| {
        parse_amounts(map, |resource, value, reason| ResourceError::Container {
            pod: pod_ref(pod),
            container: container.name.clone(),
            resource: format!("{kind}.{resource}"),
            value: value.to_owned(),
            reason,
        })
    };
    let resources = container.resources.as_ref();
    Ok(Resources {
        requests: parse(resources.and_then(|r| r.requests.as_ref()), "requests")?,
        limits: parse(resources.and_then(|r| r.limits.as_ref()), "limits")?,
    })
}

fn parse_amounts(
    map: Option<&BTreeMap<String, ApiQuantity>>,
    error: impl Fn(&str, &str, String) -> ResourceError,
) -> Result<Amounts, ResourceError> {
    let mut amounts = Amounts::default();
    for (name, quantity) in map.into_iter().flatten() {
        let slot = match name.as_str() {
            "cpu" => &mut amounts.cpu_millis,
            "memory" => &mut amounts.memory_bytes,
            "ephemeral-storage" => &mut amounts.ephemeral_storage_bytes,
            _ => continue,
        };
        let parsed: Quantity = quantity
            .0
            .parse()
            .map_err(|e| error(name, &quantity.0, format!("invalid quantity: {e}")))?;
        *slot = Some(if name == "cpu" {
            parsed.milli_value()
        } else {
            parsed.value()
        });
    }
    Ok(amounts)
}

fn is_sidecar(container: &Container) -> bool {
    container.restart_policy.as_deref() == Some("Always")
}

/// `AggregateContainerRequests` / `AggregateContainerLimits` for one side (requests or limits).
fn aggregate(pod: &Pod, side: fn(&Resources) -> Amounts) -> Result<Amounts, ResourceError> {
    let spec = pod_spec(pod)?;
    let mut total = Amounts::default();
    for container in &spec.containers {
        total.add(&side(&container_resources(pod, container)?));
    }
    let mut sidecars = Amounts::default();
    let mut init_peak = Amounts::default();
    for container in spec.init_containers.iter().flatten() {
        let own = side(&container_resources(pod, container)?);
        let in_use = if is_sidecar(container) {
            total.add(&own);
            sidecars.add(&own);
            sidecars
        } else {
            let mut in_use = own;
            in_use.add(&sidecars);
            in_use
        };
        init_peak.max(&in_use);
    }
    total.max(&init_peak);
    Ok(total)
}

/// The pod's effective requests, without overhead.
pub fn pod_requests(pod: &Pod) -> Result<Amounts, ResourceError> {
    aggregate(pod, |r| r.requests)
}

/// The pod's effective limits, without overhead; a resource no container limits is absent.
pub fn pod_limits(pod: &Pod) -> Result<Amounts, ResourceError> {
    aggregate(pod, |r| r.limits)
}

/// `spec.overhead`, parsed.
pub fn pod_overhead(pod: &Pod) -> Result<Amounts, ResourceError> {
    let spec = pod_spec(pod)?;
    parse_amounts(spec.overhead.as_ref(), |resource, value, reason| {
        ResourceError::Overhead {
            pod: pod_ref(pod),
            resource: resource.to_owned(),
            value: value.to_owned(),
            reason,
        }
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(spec: &serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
            "spec": spec,
        }))
        .expect("valid pod")
    }

    #[test]
    fn pod_totals_sum_apps_and_take_init_peak() {
        let pod = pod(&json!({
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "100Mi"}}},
                {"name": "b", "resources": {"requests": {"cpu": "200m"}}},
            ],
            "initContainers": [
                {"name": "big-init", "resources": {"requests": {"cpu": "1"}}},
                {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "50m"}}},
                {"name": "late-init", "resources": {"requests": {"cpu": "900m"}}},
            ],
        }));
        // Apps 300m + sidecar 50m = 350m; init peak max(1000m, 900m + 50m) = 1000m.
        assert_eq!(pod_requests(&pod).unwrap().cpu_millis, Some(1000));
        assert_eq!(pod_limits(&pod).unwrap().memory_bytes, Some(100 << 20));
        assert_eq!(pod_limits(&pod).unwrap().cpu_millis, None);
    }

    #[test]
    fn errors_name_the_pod_the_container_and_the_value() {
        let bad = pod(&json!({"containers": [
            {"name": "app", "resources": {"limits": {"memory": "12 bytes"}}},
        ]}));
        let text = pod_limits(&bad).unwrap_err().to_string();
        assert!(
            text.starts_with("pod default/web: container \"app\": limits.memory \"12 bytes\""),
            "{text}"
        );
        let overhead = pod(&json!({"containers": [], "overhead": {"cpu": "x"}}));
        let text = pod_overhead(&overhead).unwrap_err().to_string();
        assert!(
            text.starts_with("pod default/web: overhead cpu \"x\""),
            "{text}"
        );
        let no_spec: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}})).unwrap();
        assert_eq!(
            pod_requests(&no_spec).unwrap_err().to_string(),
            "pod /p: the pod has no spec"
        );
    }
}
