//! Admission of an API pod before it runs: the checks upstream's kubelet makes
//! (`pkg/kubelet/lifecycle/predicate.go`: `scheduler.AdmissionCheck` then the `NoExecute` taints)
//! against the live Node and the pods already admitted. Only the first failure is reported, as
//! upstream: resources (`OutOfcpu`, `OutOfmemory`, `OutOfephemeral-storage`, `OutOfpods` with
//! "Node didn't have enough resource: cpu, requested: ..., used: ..., capacity: ..."), then
//! `NodeAffinity` (`nodeSelector` and required node affinity), `NodeName`, `NodePorts` and
//! `TaintToleration`, each `Predicate <name> failed: <why>`. The pod is then marked `Failed` with
//! that reason and `Pod was rejected: <message>`.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration,
};

use crate::config::Quantity;
use crate::resources::{Amounts, pod::pod_overhead, pod::pod_requests};

/// Why a pod may not run here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: String,
    pub message: String,
}

fn predicate(name: &str, why: &str) -> Rejection {
    Rejection {
        reason: name.to_owned(),
        message: format!("Predicate {name} failed: {why}"),
    }
}

/// Whether `pod` may run on `node` beside `admitted` (the pods running or about to).
pub fn admit(pod: &Pod, node: &Node, admitted: &[&Pod]) -> Result<(), Rejection> {
    fits_resources(pod, node, admitted)?;
    let spec = pod.spec.clone().unwrap_or_default();
    let name = node.metadata.name.clone().unwrap_or_default();
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let selected = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    let affine = required.is_none_or(|selector| {
        selector
            .node_selector_terms
            .iter()
            .any(|term| term_matches(term, &labels, &name))
    });
    if !selected || !affine {
        return Err(predicate(
            "NodeAffinity",
            "node(s) didn't match Pod's node affinity/selector",
        ));
    }
    if spec.node_name.as_deref().is_some_and(|bound| bound != name) {
        return Err(predicate(
            "NodeName",
            "node(s) didn't match the requested node name",
        ));
    }
    let used: BTreeSet<(String, String, i32)> =
        admitted.iter().flat_map(|p| host_ports(p)).collect();
    if host_ports(pod).iter().any(|port| conflicts(port, &used)) {
        return Err(predicate(
            "NodePorts",
            "node(s) didn't have free ports for the requested pod ports",
        ));
    }
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let tolerations = spec.tolerations.unwrap_or_default();
    let untolerated = taints
        .iter()
        .filter(|taint| taint.effect == "NoExecute")
        .any(|taint| !tolerations.iter().any(|t| tolerates(t, taint)));
    if untolerated {
        return Err(predicate(
            "TaintToleration",
            "node(s) had taints that the pod didn't tolerate",
        ));
    }
    Ok(())
}

/// Requests (with overhead) against allocatable, as the scheduler's `NodeResourcesFit`.
fn fits_resources(pod: &Pod, node: &Node, admitted: &[&Pod]) -> Result<(), Rejection> {
    let allocatable = node
        .status
        .as_ref()
        .and_then(|s| s.allocatable.clone())
        .unwrap_or_default();
    let amount = |name: &str, milli: bool| {
        allocatable
            .get(name)
            .and_then(|q| q.0.parse::<Quantity>().ok())
            .map(|q| if milli { q.milli_value() } else { q.value() })
    };
    let requests = |p: &Pod| {
        let mut total = pod_requests(p).unwrap_or_default();
        total.add(&pod_overhead(p).unwrap_or_default());
        total
    };
    let wanted = requests(pod);
    let mut used = Amounts::default();
    for other in admitted {
        used.add(&requests(other));
    }
    let pods = i64::try_from(admitted.len()).unwrap_or(i64::MAX);
    let checks = [
        ("pods", 1, pods, amount("pods", false)),
        (
            "cpu",
            wanted.cpu_millis.unwrap_or(0),
            used.cpu_millis.unwrap_or(0),
            amount("cpu", true),
        ),
        (
            "memory",
            wanted.memory_bytes.unwrap_or(0),
            used.memory_bytes.unwrap_or(0),
            amount("memory", false),
        ),
        (
            "ephemeral-storage",
            wanted.ephemeral_storage_bytes.unwrap_or(0),
            used.ephemeral_storage_bytes.unwrap_or(0),
            amount("ephemeral-storage", false),
        ),
    ];
    for (resource, requested, used, capacity) in checks {
        let Some(capacity) = capacity else { continue };
        if requested > 0 && used.saturating_add(requested) > capacity {
            return Err(Rejection {
                reason: format!("OutOf{resource}"),
                message: format!(
                    "Node didn't have enough resource: {resource}, requested: {requested}, \
                     used: {used}, capacity: {capacity}"
                ),
            });
        }
    }
    Ok(())
}

/// A node selector term: every expression and every field expression holds.
fn term_matches(term: &NodeSelectorTerm, labels: &BTreeMap<String, String>, name: &str) -> bool {
    let fields = BTreeMap::from([("metadata.name".to_owned(), name.to_owned())]);
    let expressions = term.match_expressions.iter().flatten();
    let field_expressions = term.match_fields.iter().flatten();
    let any = term
        .match_expressions
        .as_ref()
        .is_some_and(|e| !e.is_empty())
        || term.match_fields.as_ref().is_some_and(|f| !f.is_empty());
    any && expressions.clone().all(|r| requirement(r, labels))
        && field_expressions.clone().all(|r| requirement(r, &fields))
}

fn requirement(r: &NodeSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let value = labels.get(&r.key);
    let values = r.values.clone().unwrap_or_default();
    let number = |text: &str| text.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(have), Some(bound)) = (
                value.and_then(|v| number(v)),
                values.first().and_then(|v| number(v)),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                have > bound
            } else {
                have < bound
            }
        }
        _ => false,
    }
}

/// The pod's host ports: `(ip, protocol, port)`.
fn host_ports(pod: &Pod) -> Vec<(String, String, i32)> {
    let spec = pod.spec.clone().unwrap_or_default();
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|&port| port > 0)?;
            let ip = p
                .host_ip
                .clone()
                .filter(|ip| !ip.is_empty())
                .unwrap_or_else(|| "0.0.0.0".to_owned());
            Some((
                ip,
                p.protocol.clone().unwrap_or_else(|| "TCP".to_owned()),
                port,
            ))
        })
        .collect()
}

/// A wanted host port clashes with a used one on the same protocol and port when either side
/// binds every address.
fn conflicts(wanted: &(String, String, i32), used: &BTreeSet<(String, String, i32)>) -> bool {
    let (ip, protocol, port) = wanted;
    used.iter().any(|(used_ip, used_protocol, used_port)| {
        used_port == port
            && used_protocol == protocol
            && (ip == used_ip || ip == "0.0.0.0" || used_ip == "0.0.0.0")
    })
}

/// Upstream's `Toleration.ToleratesTaint`.
fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect_ok = toleration
        .effect
        .as_deref()
        .is_none_or(|e| e.is_empty() || e == taint.effect);
    let key = toleration.key.as_deref().unwrap_or("");
    let key_ok = key.is_empty() || key == taint.key;
    let value_ok = match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    };
    effect_ok && key_ok && value_ok
}

#[cfg(test)]
#[path = "admit_tests.rs"]
mod tests;
