//! Upstream defaulting for pods read from manifests, and the static-pod treatment the kubelet's file
//! source applies on top of it.
//!
//! Two layers, in the order upstream runs them:
//!
//! 1. [`apply_api_defaults`]: the core/v1 scheme defaults that the kubelet's decoder applies while
//!    decoding a manifest (`pkg/apis/core/v1/defaults.go` and the generated
//!    `SetObjectDefaults_Pod`): restartPolicy, dnsPolicy, grace period, scheduler name, security
//!    context, per-container pull policy and termination message, port protocols, probe and
//!    handler defaults, volume modes, requests copied from limits, host ports under hostNetwork.
//! 2. [`static_pod_uid`] and [`apply_static_pod_defaults`]: `applyDefaults` in
//!    `pkg/kubelet/config/common.go`, which runs on the API-defaulted pod: the UID is a hash of that
//!    pod plus the node name and the file path, the name gets `-<node>` appended, the namespace
//!    defaults to `default`, `spec.nodeName` is set, the `config.hash` annotation carries the UID,
//!    a toleration for every `NoExecute` taint is added and the phase is `Pending`. The
//!    `config.source` annotation is set by upstream's pod config merge (`config.go`); we set it here
//!    as well since this source is the only one that feeds these pods.

use std::fmt::Write as _;
use std::path::Path;

use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, HTTPGetAction, LifecycleHandler, Pod, PodStatus, Probe,
    Toleration, Volume,
};

/// Annotation naming the source a pod came from (`kubetypes.ConfigSourceAnnotationKey`).
pub const CONFIG_SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";
/// Annotation holding the static pod's hash, which is its UID (`kubetypes.ConfigHashAnnotationKey`).
pub const CONFIG_HASH_ANNOTATION: &str = "kubernetes.io/config.hash";
/// Annotation holding when the kubelet first saw the pod (`kubetypes.ConfigFirstSeenAnnotationKey`).
pub const CONFIG_SEEN_ANNOTATION: &str = "kubernetes.io/config.seen";
/// The `config.source` value for pods read from `staticPodPath` (`kubetypes.FileSource`).
pub const FILE_SOURCE: &str = "file";

/// `metav1.NamespaceDefault`.
pub const DEFAULT_NAMESPACE: &str = "default";
/// `v1.DefaultSchedulerName`.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";
/// `v1.DefaultTerminationGracePeriodSeconds`.
pub const DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS: i64 = 30;
/// `v1.TerminationMessagePathDefault`.
pub const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";
/// Secret, configMap, downwardAPI and projected volumes default to mode 0644.
const DEFAULT_VOLUME_MODE: i32 = 0o644;
/// `ServiceAccountTokenProjection.expirationSeconds` defaults to one hour.
const DEFAULT_TOKEN_EXPIRATION_SECONDS: i64 = 3600;

/// `scheduling.SystemCriticalPriority`: the value of `system-cluster-critical`;
/// `system-node-critical` is 1000 above it.
const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// Fills the core/v1 API defaults the kubelet relies on, in place, where a field is absent.
pub fn apply_api_defaults(pod: &mut Pod) {
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };

    // SetDefaults_Pod: requests default to limits, service links on, host ports under hostNetwork.
    let host_network = spec.host_network.unwrap_or(false);
    for container in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        default_requests_from_limits(container);
        if host_network {
            for port in container.ports.iter_mut().flatten() {
                if port.host_port.unwrap_or(0) == 0 {
                    port.host_port = Some(port.container_port);
                }
            }
        }
    }
    spec.enable_service_links.get_or_insert(true);

    // SetDefaults_PodSpec.
    spec.dns_policy
        .get_or_insert_with(|| "ClusterFirst".to_owned());
    spec.restart_policy
        .get_or_insert_with(|| "Always".to_owned());
    spec.security_context.get_or_insert_with(Default::default);
    spec.termination_grace_period_seconds
        .get_or_insert(DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS);
    spec.scheduler_name
        .get_or_insert_with(|| DEFAULT_SCHEDULER_NAME.to_owned());

    for volume in spec.volumes.iter_mut().flatten() {
        default_volume(volume);
    }
    for container in spec
        .init_containers
        .iter_mut()
        .flatten()
        .chain(spec.containers.iter_mut())
    {
        default_container(container);
    }
}

/// `SetDefaults_Pod`: a resource with a limit and no request gets the limit as its request.
fn default_requests_from_limits(container: &mut Container) {
    let Some(resources) = container.resources.as_mut() else {
        return;
    };
    let Some(limits) = resources.limits.as_ref() else {
        return;
    };
    let requests = resources.requests.get_or_insert_with(Default::default);
    for (name, quantity) in limits {
        requests
            .entry(name.clone())
            .or_insert_with(|| quantity.clone());
    }
}

/// `SetDefaults_Container` plus the generated per-field defaults under a container.
fn default_container(container: &mut Container) {
    if container.image_pull_policy.is_none() {
        let policy = default_pull_policy(container.image.as_deref().unwrap_or(""));
        container.image_pull_policy = Some(policy.to_owned());
    }
    container
        .termination_message_path
        .get_or_insert_with(|| DEFAULT_TERMINATION_MESSAGE_PATH.to_owned());
    container
        .termination_message_policy
        .get_or_insert_with(|| "File".to_owned());
    for port in container.ports.iter_mut().flatten() {
        port.protocol.get_or_insert_with(|| "TCP".to_owned());
    }
    for env in container.env.iter_mut().flatten() {
        if let Some(field_ref) = env.value_from.as_mut().and_then(|v| v.field_ref.as_mut()) {
            field_ref.api_version.get_or_insert_with(|| "v1".to_owned());
        }
    }
    for probe in [
        &mut container.liveness_probe,
        &mut container.readiness_probe,
        &mut container.startup_probe,
    ]
    .into_iter()
    .flatten()
    {
        default_probe(probe);
    }
    if let Some(lifecycle) = container.lifecycle.as_mut() {
        for handler in [&mut lifecycle.post_start, &mut lifecycle.pre_stop]
            .into_iter()
            .flatten()
        {
            default_handler(handler);
        }
    }
}

/// `SetDefaults_Probe`, `SetDefaults_HTTPGetAction` and the gRPC service default.
fn default_probe(probe: &mut Probe) {
    probe.timeout_seconds.get_or_insert(1);
    probe.period_seconds.get_or_insert(10);
    probe.success_threshold.get_or_insert(1);
    probe.failure_threshold.get_or_insert(3);
    if let Some(http_get) = probe.http_get.as_mut() {
        default_http_get(http_get);
    }
    if let Some(grpc) = probe.grpc.as_mut() {
        grpc.service.get_or_insert_with(String::new);
    }
}

fn default_handler(handler: &mut LifecycleHandler) {
    if let Some(http_get) = handler.http_get.as_mut() {
        default_http_get(http_get);
    }
}

fn default_http_get(http_get: &mut HTTPGetAction) {
    http_get.path.get_or_insert_with(|| "/".to_owned());
    http_get.scheme.get_or_insert_with(|| "HTTP".to_owned());
}

/// `SetDefaults_Volume` and the per-source volume defaults the kubelet reads.
fn default_volume(volume: &mut Volume) {
    // A volume with no source at all is an emptyDir. Serialising is the one way to ask "is every
    // source field absent" that keeps working when k8s-openapi adds a volume type.
    let has_source = serde_json::to_value(&*volume)
        .ok()
        .and_then(|value| value.as_object().map(|o| o.keys().any(|k| k != "name")))
        .unwrap_or(true);
    if !has_source {
        volume.empty_dir = Some(EmptyDirVolumeSource::default());
    }
    if let Some(host_path) = volume.host_path.as_mut() {
        host_path.type_.get_or_insert_with(String::new);
    }
    if let Some(secret) = volume.secret.as_mut() {
        secret.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
    }
    if let Some(config_map) = volume.config_map.as_mut() {
        config_map.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
    }
    if let Some(downward_api) = volume.downward_api.as_mut() {
        downward_api.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
        for item in downward_api.items.iter_mut().flatten() {
            if let Some(field_ref) = item.field_ref.as_mut() {
                field_ref.api_version.get_or_insert_with(|| "v1".to_owned());
            }
        }
    }
    if let Some(projected) = volume.projected.as_mut() {
        projected.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
        for source in projected.sources.iter_mut().flatten() {
            if let Some(downward_api) = source.downward_api.as_mut() {
                for item in downward_api.items.iter_mut().flatten() {
                    if let Some(field_ref) = item.field_ref.as_mut() {
                        field_ref.api_version.get_or_insert_with(|| "v1".to_owned());
                    }
                }
            }
            if let Some(token) = source.service_account_token.as_mut() {
                token
                    .expiration_seconds
                    .get_or_insert(DEFAULT_TOKEN_EXPIRATION_SECONDS);
            }
        }
    }
    if let Some(image) = volume.image.as_mut()
        && image.pull_policy.is_none()
    {
        let policy = default_pull_policy(image.reference.as_deref().unwrap_or(""));
        image.pull_policy = Some(policy.to_owned());
    }
}

/// The default `imagePullPolicy` for an image reference: `Always` when the tag is `latest`, or when
/// there is neither a tag nor a digest (the tag then defaults to `latest`); `IfNotPresent` otherwise.
#[must_use]
pub fn default_pull_policy(image: &str) -> &'static str {
    let (name, has_digest) = match image.split_once('@') {
        Some((name, _digest)) => (name, true),
        None => (image, false),
    };
    // A ':' after the last '/' starts the tag; one before it belongs to a registry host:port.
    let last_component = name.rsplit('/').next().unwrap_or(name);
    let tag = last_component.split_once(':').map(|(_, tag)| tag);
    match tag {
        Some("latest") => "Always",
        Some(_) => "IfNotPresent",
        None if has_digest => "IfNotPresent",
        None => "Always",
    }
}

/// FNV-1a with a 128-bit state, the hash upstream's `applyDefaults` uses for static pod UIDs.
struct Fnv128a(u128);

impl Fnv128a {
    const OFFSET_BASIS: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;

    fn new() -> Self {
        Self(Self::OFFSET_BASIS)
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u128::from(*byte);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }

    /// The digest as 32 lower-case hex characters (the big-endian bytes, as Go's `Sum` gives them).
    fn hex(&self) -> String {
        let mut out = String::with_capacity(32);
        let _ = write!(out, "{:032x}", self.0);
        out
    }
}

/// The UID of a static pod whose manifest gives none.
///
/// Upstream hashes the decoded, API-defaulted pod (before the static-pod treatment) with Go's
/// `DeepHashObject`, then `host:<node>` and `file:<path>`, with FNV-128a (md5 before v1.32),
/// and prints the 16-byte digest as 32 hex characters. `DeepHashObject` hashes a Go-specific
/// pretty-printing of the struct that cannot be reproduced byte for byte outside Go, so ours feeds
/// FNV-128a the canonical JSON of the same pod instead (k8s-openapi serialises struct fields in a
/// fixed order and maps are `BTreeMap`s, so equal pods give equal bytes), then `host:<node>` and
/// `file:<path>`. The result has upstream's form and properties: the same manifest content, node
/// name and file path always give the same UID, and a change to any of them gives another. It is
/// not the UID upstream would compute for the same file.
///
/// Call it on the pod after [`apply_api_defaults`] and before [`apply_static_pod_defaults`]; the
/// `config.seen` annotation, added later, never takes part.
#[must_use]
pub fn static_pod_uid(pod: &Pod, node_name: &str, path: &Path) -> String {
    let mut hasher = Fnv128a::new();
    let mut without_uid = pod.clone();
    without_uid.metadata.uid = None;
    // Serialising a k8s-openapi value to JSON cannot fail (string keys, no custom serialisers
    // that error); the Debug form is a deterministic fallback that keeps this function total.
    match serde_json::to_vec(&without_uid) {
        Ok(bytes) => hasher.write(&bytes),
        Err(_) => hasher.write(format!("{without_uid:?}").as_bytes()),
    }
    hasher.write(format!("host:{node_name}").as_bytes());
    hasher.write(format!("file:{}", path.display()).as_bytes());
    hasher.hex()
}

/// The name a static pod gets on this node: `<name>-<node name in lower case>`
/// (`generatePodName`).
#[must_use]
pub fn static_pod_name(name: &str, node_name: &str) -> String {
    format!("{name}-{}", node_name.to_lowercase())
}

/// The static-pod treatment of upstream's `applyDefaults`, applied to an API-defaulted pod whose
/// UID is `uid` (the manifest's own, or [`static_pod_uid`]).
pub fn apply_static_pod_defaults(pod: &mut Pod, uid: String, node_name: &str) {
    let meta = &mut pod.metadata;
    meta.name = Some(static_pod_name(
        meta.name.as_deref().unwrap_or(""),
        node_name,
    ));
    if meta.namespace.as_deref().is_none_or(str::is_empty) {
        meta.namespace = Some(DEFAULT_NAMESPACE.to_owned());
    }
    let annotations = meta.annotations.get_or_insert_with(Default::default);
    annotations.insert(CONFIG_HASH_ANNOTATION.to_owned(), uid.clone());
    annotations.insert(CONFIG_SOURCE_ANNOTATION.to_owned(), FILE_SOURCE.to_owned());
    meta.uid = Some(uid);

    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.node_name = Some(node_name.to_owned());
    // Static pods are not evicted by the taint manager when the node has problems.
    add_or_update_toleration(
        spec.tolerations.get_or_insert_with(Vec::new),
        Toleration {
            operator: Some("Exists".to_owned()),
            effect: Some("NoExecute".to_owned()),
            ..Default::default()
        },
    );
    // Not upstream: the priority admission plugin resolves priorityClassName only on the API
    // server, so upstream's static pods carry no spec.priority and kubelet code reads the absence
    // as 0. We fill what that plugin would: the two built-in system classes, else 0, so readers
    // here never see None.
    if spec.priority.is_none() {
        spec.priority = Some(match spec.priority_class_name.as_deref() {
            Some("system-node-critical") => SYSTEM_CRITICAL_PRIORITY + 1000,
            Some("system-cluster-critical") => SYSTEM_CRITICAL_PRIORITY,
            _ => 0,
        });
    }

    pod.status.get_or_insert_with(PodStatus::default).phase = Some("Pending".to_owned());
}

/// `helper.AddOrUpdateTolerationInPod`: a toleration with the same key, operator, value and effect
/// is replaced by `toleration`; otherwise `toleration` is appended.
fn add_or_update_toleration(tolerations: &mut Vec<Toleration>, toleration: Toleration) {
    let same = |t: &Toleration| {
        t.key == toleration.key
            && t.operator == toleration.operator
            && t.value == toleration.value
            && t.effect == toleration.effect
    };
    if let Some(existing) = tolerations.iter_mut().find(|t| same(t)) {
        *existing = toleration;
    } else {
        tolerations.push(toleration);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;

    #[test]
    fn fnv128a_matches_reference_vectors() {
        let mut empty = Fnv128a::new();
        empty.write(b"");
        assert_eq!(empty.hex(), "6c62272e07bb014262b821756295c58d");
        let mut a = Fnv128a::new();
        a.write(b"a");
        assert_eq!(a.hex(), "d228cb696f1a8caf78912b704e4a8964");
    }

    #[test]
    fn pull_policy_follows_the_tag() {
        for (image, policy) in [
            ("nginx", "Always"),
            ("nginx:latest", "Always"),
            ("nginx:1.27", "IfNotPresent"),
            ("registry.local:5000/nginx", "Always"),
            ("registry.local:5000/nginx:1.27", "IfNotPresent"),
            ("nginx@sha256:0123", "IfNotPresent"),
            ("nginx:latest@sha256:0123", "Always"),
            ("", "Always"),
        ] {
            assert_eq!(default_pull_policy(image), policy, "{image}");
        }
    }

    #[test]
    fn toleration_is_added_once_and_updates_a_matching_one() {
        let mut tolerations = vec![Toleration {
            operator: Some("Exists".to_owned()),
            effect: Some("NoExecute".to_owned()),
            toleration_seconds: Some(60),
            ..Default::default()
        }];
        let wanted = Toleration {
            operator: Some("Exists".to_owned()),
            effect: Some("NoExecute".to_owned()),
            ..Default::default()
        };
        add_or_update_toleration(&mut tolerations, wanted.clone());
        assert_eq!(tolerations, vec![wanted.clone()]);
        let other = Toleration {
            key: Some("k".to_owned()),
            operator: Some("Equal".to_owned()),
            value: Some("v".to_owned()),
            effect: Some("NoSchedule".to_owned()),
            ..Default::default()
        };
        let mut tolerations = vec![other.clone()];
        add_or_update_toleration(&mut tolerations, wanted.clone());
        assert_eq!(tolerations, vec![other, wanted]);
    }

    #[test]
    fn volume_without_source_becomes_empty_dir() {
        let mut pod = Pod {
            spec: Some(PodSpec {
                volumes: Some(vec![Volume {
                    name: "scratch".to_owned(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        apply_api_defaults(&mut pod);
        let volumes = pod.spec.and_then(|s| s.volumes).unwrap_or_default();
        assert!(volumes[0].empty_dir.is_some());
    }

    #[test]
    fn system_priority_classes_resolve() {
        let mut pod = Pod {
            spec: Some(PodSpec {
                priority_class_name: Some("system-node-critical".to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        };
        apply_static_pod_defaults(&mut pod, "u".to_owned(), "n");
        assert_eq!(pod.spec.and_then(|s| s.priority), Some(2_000_001_000));
    }
}
