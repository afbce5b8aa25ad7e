//! A container's environment, after upstream's `makeEnvironmentVariables`
//! (`pkg/kubelet/kubelet_pods.go`), and `$(VAR)` expansion as in
//! `third_party/forked/golang/expansion/expand.go`.
//!
//! - Each `env` entry with a non-empty `value` is expanded against the variables declared before
//!   it (`$(VAR)` known: replaced; unknown: left as `$(VAR)`; `$$` is a literal `$`, so `$$(VAR)`
//!   stays `$(VAR)`).
//! - `valueFrom.fieldRef`: `metadata.name|namespace|uid`, `metadata.labels|annotations` (whole,
//!   as sorted `k="v"` lines, or one `['key']`), `spec.nodeName`, `spec.serviceAccountName`,
//!   `status.hostIP(s)`, `status.podIP(s)`.
//! - `valueFrom.resourceFieldRef`: `limits|requests.cpu|memory|ephemeral-storage`, of this or a
//!   named container, divided by `divisor` (default 1) and rounded up; a missing limit defaults
//!   to node allocatable (`defaultPodLimitsForDownwardAPI`).
//! - `configMapKeyRef`, `secretKeyRef`, `fileKeyRef` and `envFrom` need the API server (or the
//!   `EnvFiles` gate): an error naming the variable, as upstream fails without a kube client.
//!
//! Upstream collects the variables in a Go map, so the order it hands the runtime is unspecified;
//! here each name keeps the position of its first declaration and the value of its last. No
//! service variables are added: a kubelet without an API server has no service lister.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::hash::BuildHasher;

use k8s_openapi::api::core::v1::{Container, ObjectFieldSelector, Pod, ResourceFieldSelector};
use kernlet_cri::v1;

use super::resources::{container_resources, quantity_value};
use super::{NodeContext, SpecError, pod_name, pod_namespace, pod_ref, pod_spec, pod_uid};

/// Expands `$(NAME)` references in `input` with `mapping`, following upstream's `Expand`:
/// `$$` is an escaped `$`, `$(` without a closing `)` and `$` before anything else are copied.
#[must_use]
pub fn expand(input: &str, mut mapping: impl FnMut(&str) -> String) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let mut chars = after.chars();
        match chars.next() {
            // A trailing `$` is copied as is.
            None => {
                out.push('$');
                rest = after;
            }
            Some('$') => {
                out.push('$');
                rest = chars.as_str();
            }
            Some('(') => {
                if let Some(close) = after[1..].find(')') {
                    out.push_str(&mapping(&after[1..=close]));
                    rest = &after[close + 2..];
                } else {
                    out.push_str("$(");
                    rest = &after[1..];
                }
            }
            Some(other) => {
                out.push('$');
                out.push(other);
                rest = chars.as_str();
            }
        }
    }
    out.push_str(rest);
    out
}

/// Upstream's `MappingFuncFor` over one set of variables: unknown names stay `$(NAME)`.
#[must_use]
pub fn expand_with_vars<S: BuildHasher>(input: &str, vars: &HashMap<&str, &str, S>) -> String {
    expand(input, |name| {
        vars.get(name)
            .map_or_else(|| format!("$({name})"), |v| (*v).to_owned())
    })
}

/// Variables in declaration order: first position, last value.
#[derive(Default)]
struct OrderedEnv {
    entries: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl OrderedEnv {
    fn set(&mut self, name: &str, value: String) {
        if let Some(&i) = self.index.get(name) {
            self.entries[i].1 = value;
        } else {
            self.index.insert(name.to_owned(), self.entries.len());
            self.entries.push((name.to_owned(), value));
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.index.get(name).map(|&i| self.entries[i].1.as_str())
    }
}

/// Why one environment variable cannot be resolved; reported as [`SpecError::Env`] with its name.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error(
        "{kind} {namespace}/{name} key {key:?} cannot be read: there is no API server in \
         standalone mode"
    )]
    Unreadable {
        kind: &'static str,
        namespace: String,
        name: String,
        key: String,
    },
    #[error("fileKeyRef is not supported (the EnvFiles feature gate is off)")]
    FileKeyRef,
    #[error("unsupported pod version: {version}")]
    PodVersion { version: String },
    #[error("the node has no known IP address")]
    NoNodeIp,
    #[error("unsupported fieldPath: {path}")]
    UnsupportedFieldPath { path: String },
    #[error("fieldPath {path:?} does not support subscript")]
    NoSubscript { path: String },
    /// The pod or the referenced container's resources are invalid.
    #[error(transparent)]
    Spec(Box<SpecError>),
    #[error("container {name} not found")]
    ContainerNotFound { name: String },
    #[error("divisor: {reason}")]
    Divisor { reason: String },
    #[error("unsupported container resource: {resource}")]
    UnsupportedResource { resource: String },
    #[error("divisor must be positive, got {divisor}")]
    DivisorNotPositive { divisor: i64 },
}

/// The environment of `container` in `pod`, as CRI key/values. `pod_ips` are the pod's IPs,
/// primary first (node IPs for a hostNetwork pod).
pub fn container_env(
    pod: &Pod,
    container: &Container,
    pod_ips: &[String],
    node: &NodeContext,
) -> Result<Vec<v1::KeyValue>, SpecError> {
    let error = |variable: String, reason: String| SpecError::Env {
        pod: pod_ref(pod),
        container: container.name.clone(),
        variable,
        reason,
    };
    for (i, from) in container.env_from.iter().flatten().enumerate() {
        let source = if let Some(cm) = &from.config_map_ref {
            format!("configMapRef {}/{}", pod_namespace(pod), cm.name)
        } else if let Some(secret) = &from.secret_ref {
            format!("secretRef {}/{}", pod_namespace(pod), secret.name)
        } else {
            continue;
        };
        return Err(error(
            format!("envFrom[{i}]"),
            format!("{source} cannot be read: there is no API server in standalone mode"),
        ));
    }

    let mut env = OrderedEnv::default();
    for var in container.env.iter().flatten() {
        let literal = var.value.as_deref().unwrap_or_default();
        let value = if !literal.is_empty() {
            expand(literal, |name| {
                env.get(name)
                    .map_or_else(|| format!("$({name})"), str::to_owned)
            })
        } else if let Some(from) = &var.value_from {
            let resolved = if let Some(field) = &from.field_ref {
                field_ref_value(pod, field, pod_ips, node)
            } else if let Some(resource) = &from.resource_field_ref {
                resource_field_value(pod, container, resource, node)
            } else if let Some(cm) = &from.config_map_key_ref {
                Err(unreadable(pod, "configMapKeyRef", &cm.name, &cm.key))
            } else if let Some(secret) = &from.secret_key_ref {
                Err(unreadable(pod, "secretKeyRef", &secret.name, &secret.key))
            } else if from.file_key_ref.is_some() {
                Err(EnvError::FileKeyRef)
            } else {
                Ok(String::new())
            };
            resolved.map_err(|reason| error(var.name.clone(), reason.to_string()))?
        } else {
            String::new()
        };
        env.set(&var.name, value);
    }
    Ok(env
        .entries
        .into_iter()
        .map(|(key, value)| v1::KeyValue { key, value })
        .collect())
}

/// `podFieldSelectorRuntimeValue` plus `fieldpath.ExtractFieldPathAsString`.
fn field_ref_value(
    pod: &Pod,
    selector: &ObjectFieldSelector,
    pod_ips: &[String],
    node: &NodeContext,
) -> Result<String, EnvError> {
    if let Some(version) = selector.api_version.as_deref()
        && !version.is_empty()
        && version != "v1"
    {
        return Err(EnvError::PodVersion {
            version: version.to_owned(),
        });
    }
    let spec = pod.spec.as_ref();
    let path = selector.field_path.as_str();
    let value = match path {
        "metadata.name" => pod_name(pod).to_owned(),
        "metadata.namespace" => pod_namespace(pod).to_owned(),
        "metadata.uid" => pod_uid(pod).to_owned(),
        "metadata.labels" => format_map(pod.metadata.labels.as_ref()),
        "metadata.annotations" => format_map(pod.metadata.annotations.as_ref()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" => node
            .host_ips
            .first()
            .map(ToString::to_string)
            .ok_or(EnvError::NoNodeIp)?,
        "status.hostIPs" => {
            if node.host_ips.is_empty() {
                return Err(EnvError::NoNodeIp);
            }
            let ips: Vec<String> = node.host_ips.iter().map(ToString::to_string).collect();
            ips.join(",")
        }
        "status.podIP" => pod_ips.first().cloned().unwrap_or_default(),
        "status.podIPs" => pod_ips.join(","),
        _ => subscripted_value(pod, path)?,
    };
    Ok(value)
}

/// `metadata.labels['key']` and `metadata.annotations['key']`; a missing key is empty.
fn subscripted_value(pod: &Pod, path: &str) -> Result<String, EnvError> {
    let unsupported = || EnvError::UnsupportedFieldPath {
        path: path.to_owned(),
    };
    let (base, key) = path
        .strip_suffix("']")
        .and_then(|s| s.split_once("['"))
        .filter(|(base, _)| !base.is_empty())
        .ok_or_else(unsupported)?;
    let map = match base {
        "metadata.labels" => pod.metadata.labels.as_ref(),
        "metadata.annotations" => pod.metadata.annotations.as_ref(),
        _ => {
            return Err(EnvError::NoSubscript {
                path: path.to_owned(),
            });
        }
    };
    Ok(map.and_then(|m| m.get(key)).cloned().unwrap_or_default())
}

/// `fieldpath.FormatMap`: `key="value"` lines in key order, values quoted as Go's `%q`.
fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    let lines: Vec<String> = map
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect();
    lines.join("\n")
}

/// Go's `strconv.Quote` for the characters that matter in labels and annotations.
fn go_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `containerResourceRuntimeValue` on the pod with limits defaulted to node allocatable.
fn resource_field_value(
    pod: &Pod,
    container: &Container,
    selector: &ResourceFieldSelector,
    node: &NodeContext,
) -> Result<String, EnvError> {
    let spec_error = |e: SpecError| EnvError::Spec(Box::new(e));
    let target = match selector.container_name.as_deref() {
        Some(name) if !name.is_empty() => {
            let spec = pod_spec(pod).map_err(spec_error)?;
            super::all_containers(spec)
                .find(|c| c.name == name)
                .ok_or_else(|| EnvError::ContainerNotFound {
                    name: name.to_owned(),
                })?
        }
        _ => container,
    };
    let parsed = container_resources(pod, target).map_err(|e| spec_error(e.into()))?;
    let default = |v: Option<i64>, allocatable: Option<i64>| {
        v.filter(|v| *v != 0).unwrap_or(allocatable.unwrap_or(0))
    };
    let divisor = match &selector.divisor {
        Some(q) => {
            let parsed = quantity_value(q).map_err(|reason| EnvError::Divisor { reason })?;
            (!parsed.is_zero()).then_some(parsed)
        }
        None => None,
    };
    let (amount, divisor) = match selector.resource.as_str() {
        "limits.cpu" | "requests.cpu" => {
            let amount = if selector.resource == "limits.cpu" {
                default(parsed.limits.cpu_millis, node.allocatable.cpu_millis)
            } else {
                parsed.requests.cpu_millis.unwrap_or(0)
            };
            (amount, divisor.map_or(1000, |d| d.milli_value()))
        }
        "limits.memory" => (
            default(parsed.limits.memory_bytes, node.allocatable.memory_bytes),
            divisor.map_or(1, |d| d.value()),
        ),
        "requests.memory" => (
            parsed.requests.memory_bytes.unwrap_or(0),
            divisor.map_or(1, |d| d.value()),
        ),
        "limits.ephemeral-storage" => (
            default(
                parsed.limits.ephemeral_storage_bytes,
                node.allocatable.ephemeral_storage_bytes,
            ),
            divisor.map_or(1, |d| d.value()),
        ),
        "requests.ephemeral-storage" => (
            parsed.requests.ephemeral_storage_bytes.unwrap_or(0),
            divisor.map_or(1, |d| d.value()),
        ),
        other => {
            return Err(EnvError::UnsupportedResource {
                resource: other.to_owned(),
            });
        }
    };
    if divisor <= 0 {
        return Err(EnvError::DivisorNotPositive { divisor });
    }
    Ok(div_ceil(amount, divisor).to_string())
}

/// `ceil(amount / divisor)` for a positive divisor, exact in wide arithmetic.
fn div_ceil(amount: i64, divisor: i64) -> i64 {
    let (a, d) = (i128::from(amount), i128::from(divisor));
    let quotient = a / d;
    let rounded = if a % d > 0 { quotient + 1 } else { quotient };
    i64::try_from(rounded).unwrap_or(i64::MAX)
}

/// The final environment as a lookup table, for command, args and `subPathExpr` expansion.
#[must_use]
pub fn env_map(env: &[v1::KeyValue]) -> HashMap<&str, &str> {
    env.iter()
        .map(|kv| (kv.key.as_str(), kv.value.as_str()))
        .collect()
}

/// Why a `configMapKeyRef`/`secretKeyRef` cannot be resolved in standalone mode.
fn unreadable(pod: &Pod, kind: &'static str, name: &str, key: &str) -> EnvError {
    EnvError::Unreadable {
        kind,
        namespace: pod_namespace(pod).to_owned(),
        name: name.to_owned(),
        key: key.to_owned(),
    }
}
