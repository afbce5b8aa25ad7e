//! The checks upstream makes on a static pod before running it, on the defaulted pod: the part of
//! `ValidatePodCreate` (`pkg/apis/core/validation`) a node agent needs to refuse a manifest
//! clearly, and `podutil.HasAPIObjectReference` (`pkg/api/pod/util.go`), since static pods may
//! not reference API objects (`PreventStaticPodAPIReferences`, beta and on by default in v1.34).
//!
//! Field paths use upstream's notation (`spec.containers[1].image`) and messages its wording in
//! lower case (`required value`, `unsupported value "X": supported values: ...`).

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, Volume};

/// Receives (field path, message) for each problem found.
pub(super) type Report<'a> = dyn FnMut(String, String) + 'a;

const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const DNS_POLICIES: &[&str] = &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
const TERMINATION_MESSAGE_POLICIES: &[&str] = &["File", "FallbackToLogsOnError"];
const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];

/// The part of `ValidatePodCreate` a node agent needs, on the defaulted static pod.
pub(super) fn validate(pod: &Pod, report: &mut Report<'_>) {
    let name = pod.metadata.name.as_deref().unwrap_or("");
    if let Some(problem) = dns1123_subdomain_problem(name) {
        report(
            "metadata.name".to_owned(),
            format!("invalid value {name:?}: {problem}"),
        );
    }
    if let Some(namespace) = pod.metadata.namespace.as_deref()
        && let Some(problem) = dns1123_label_problem(namespace)
    {
        report(
            "metadata.namespace".to_owned(),
            format!("invalid value {namespace:?}: {problem}"),
        );
    }
    let Some(spec) = pod.spec.as_ref() else {
        report("spec.containers".to_owned(), "required value".to_owned());
        return;
    };
    supported(
        spec.restart_policy.as_deref(),
        "spec.restartPolicy",
        RESTART_POLICIES,
        report,
    );
    supported(
        spec.dns_policy.as_deref(),
        "spec.dnsPolicy",
        DNS_POLICIES,
        report,
    );
    if spec.containers.is_empty() {
        report("spec.containers".to_owned(), "required value".to_owned());
    }
    if spec
        .ephemeral_containers
        .as_ref()
        .is_some_and(|e| !e.is_empty())
    {
        report(
            "spec.ephemeralContainers".to_owned(),
            "forbidden: cannot be set on create".to_owned(),
        );
    }
    validate_volumes(spec, report);

    // Container names are unique across init and regular containers.
    let mut names = HashSet::new();
    let groups = [
        (
            "spec.initContainers",
            spec.init_containers.as_deref().unwrap_or_default(),
        ),
        ("spec.containers", spec.containers.as_slice()),
    ];
    for (group, containers) in groups {
        for (i, container) in containers.iter().enumerate() {
            validate_container(&format!("{group}[{i}]"), container, &mut names, report);
        }
    }
}

fn validate_volumes(spec: &PodSpec, report: &mut Report<'_>) {
    let mut names = HashSet::new();
    for (i, volume) in spec.volumes.iter().flatten().enumerate() {
        let field = format!("spec.volumes[{i}].name");
        if volume.name.is_empty() {
            report(field, "required value".to_owned());
        } else if let Some(problem) = dns1123_label_problem(&volume.name) {
            report(field, format!("invalid value {:?}: {problem}", volume.name));
        } else if !names.insert(volume.name.as_str()) {
            report(field, format!("duplicate value {:?}", volume.name));
        }
    }
}

fn validate_container<'a>(
    at: &str,
    container: &'a Container,
    names: &mut HashSet<&'a str>,
    report: &mut Report<'_>,
) {
    let name = container.name.as_str();
    if name.is_empty() {
        report(format!("{at}.name"), "required value".to_owned());
    } else if let Some(problem) = dns1123_label_problem(name) {
        report(
            format!("{at}.name"),
            format!("invalid value {name:?}: {problem}"),
        );
    } else if !names.insert(name) {
        report(format!("{at}.name"), format!("duplicate value {name:?}"));
    }
    match container.image.as_deref() {
        None | Some("") => report(format!("{at}.image"), "required value".to_owned()),
        Some(image) if image.trim() != image => report(
            format!("{at}.image"),
            "must not have leading or trailing whitespace".to_owned(),
        ),
        Some(_) => {}
    }
    supported(
        container.image_pull_policy.as_deref(),
        &format!("{at}.imagePullPolicy"),
        PULL_POLICIES,
        report,
    );
    supported(
        container.termination_message_policy.as_deref(),
        &format!("{at}.terminationMessagePolicy"),
        TERMINATION_MESSAGE_POLICIES,
        report,
    );
    for (j, port) in container.ports.iter().flatten().enumerate() {
        let at = format!("{at}.ports[{j}]");
        if !(1..=65535).contains(&port.container_port) {
            report(
                format!("{at}.containerPort"),
                format!(
                    "invalid value {}: must be between 1 and 65535, inclusive",
                    port.container_port
                ),
            );
        }
        if let Some(host_port) = port.host_port
            && !(0..=65535).contains(&host_port)
        {
            report(
                format!("{at}.hostPort"),
                format!("invalid value {host_port}: must be between 0 and 65535, inclusive"),
            );
        }
        supported(
            port.protocol.as_deref(),
            &format!("{at}.protocol"),
            PROTOCOLS,
            report,
        );
    }
}

fn supported(value: Option<&str>, field: &str, allowed: &[&str], report: &mut Report<'_>) {
    if let Some(value) = value
        && !allowed.contains(&value)
    {
        let allowed: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
        report(
            field.to_owned(),
            format!(
                "unsupported value {value:?}: supported values: {}",
                allowed.join(", ")
            ),
        );
    }
}

/// `podutil.HasAPIObjectReference`: a static pod runs without the API server and may not name
/// service accounts, secrets, config maps, claims or API-backed volumes. Upstream reports the
/// first such reference as `static pods may not reference <resource>`; we add where it is.
pub(super) fn reject_api_references(pod: &Pod, report: &mut Report<'_>) {
    let Some(spec) = pod.spec.as_ref() else {
        return;
    };
    let mut refuse = |field: String, resource: &str| {
        report(field, format!("static pods may not reference {resource}"));
    };
    if spec
        .service_account_name
        .as_deref()
        .is_some_and(|s| !s.is_empty())
    {
        refuse("spec.serviceAccountName".to_owned(), "serviceaccounts");
    }
    if spec
        .image_pull_secrets
        .as_ref()
        .is_some_and(|s| !s.is_empty())
    {
        refuse("spec.imagePullSecrets".to_owned(), "secrets");
    }
    if spec.resource_claims.as_ref().is_some_and(|c| !c.is_empty()) {
        refuse("spec.resourceClaims".to_owned(), "resourceclaims");
    }
    let groups = [
        (
            "spec.initContainers",
            spec.init_containers.as_deref().unwrap_or_default(),
        ),
        ("spec.containers", spec.containers.as_slice()),
    ];
    for (group, containers) in groups {
        for (i, container) in containers.iter().enumerate() {
            let at = format!("{group}[{i}]");
            for (j, env) in container.env.iter().flatten().enumerate() {
                let Some(from) = env.value_from.as_ref() else {
                    continue;
                };
                if from.secret_key_ref.is_some() {
                    refuse(format!("{at}.env[{j}].valueFrom.secretKeyRef"), "secrets");
                }
                if from.config_map_key_ref.is_some() {
                    refuse(
                        format!("{at}.env[{j}].valueFrom.configMapKeyRef"),
                        "configmaps",
                    );
                }
            }
            for (j, from) in container.env_from.iter().flatten().enumerate() {
                if from.secret_ref.is_some() {
                    refuse(format!("{at}.envFrom[{j}].secretRef"), "secrets");
                }
                if from.config_map_ref.is_some() {
                    refuse(format!("{at}.envFrom[{j}].configMapRef"), "configmaps");
                }
            }
        }
    }
    for (i, volume) in spec.volumes.iter().flatten().enumerate() {
        if let Some((source, resource)) = volume_api_reference(volume) {
            refuse(format!("spec.volumes[{i}].{source}"), resource);
        }
    }
}

/// The API-backed source of a volume, as (field path under the volume, what upstream says it
/// references).
fn volume_api_reference(volume: &Volume) -> Option<(String, &'static str)> {
    whole_volume_reference(volume)
        .map(|(field, resource)| (field.to_owned(), resource))
        .or_else(|| secret_ref_reference(volume).map(|f| (format!("{f}.secretRef"), "secrets")))
        .or_else(|| projected_reference(volume))
}

/// Volume types that are an API object, or need one, as a whole.
fn whole_volume_reference(v: &Volume) -> Option<(&'static str, &'static str)> {
    let kinds = [
        (
            v.config_map.is_some(),
            "configMap",
            "configmaps (via configmap volumes)",
        ),
        (v.secret.is_some(), "secret", "secrets (via secret volumes)"),
        (v.csi.is_some(), "csi", "csidrivers (via CSI volumes)"),
        (
            v.glusterfs.is_some(),
            "glusterfs",
            "endpoints (via glusterFS volumes)",
        ),
        (
            v.persistent_volume_claim.is_some(),
            "persistentVolumeClaim",
            "persistentvolumeclaims",
        ),
        (
            v.ephemeral.is_some(),
            "ephemeral",
            "persistentvolumeclaims (via ephemeral volumes)",
        ),
        (
            v.azure_file.is_some(),
            "azureFile",
            "secrets (via azureFile volumes)",
        ),
    ];
    kinds
        .into_iter()
        .find_map(|(hit, field, resource)| hit.then_some((field, resource)))
}

/// Volume types that name a secret in a `secretRef` (upstream's `VisitPodSecretNames`).
fn secret_ref_reference(v: &Volume) -> Option<&'static str> {
    let refs = [
        (
            v.cephfs.as_ref().is_some_and(|s| s.secret_ref.is_some()),
            "cephfs",
        ),
        (
            v.cinder.as_ref().is_some_and(|s| s.secret_ref.is_some()),
            "cinder",
        ),
        (
            v.flex_volume
                .as_ref()
                .is_some_and(|s| s.secret_ref.is_some()),
            "flexVolume",
        ),
        (
            v.iscsi.as_ref().is_some_and(|s| s.secret_ref.is_some()),
            "iscsi",
        ),
        (
            v.rbd.as_ref().is_some_and(|s| s.secret_ref.is_some()),
            "rbd",
        ),
        (v.scale_io.is_some(), "scaleIO"),
        (
            v.storageos.as_ref().is_some_and(|s| s.secret_ref.is_some()),
            "storageos",
        ),
    ];
    refs.into_iter()
        .find_map(|(hit, field)| hit.then_some(field))
}

/// Projected sources that need the API; downward API projections do not.
fn projected_reference(v: &Volume) -> Option<(String, &'static str)> {
    let sources = v.projected.as_ref()?.sources.as_deref().unwrap_or_default();
    sources.iter().enumerate().find_map(|(k, s)| {
        let kinds = [
            (
                s.config_map.is_some(),
                "configMap",
                "configmaps (via projected volumes)",
            ),
            (
                s.secret.is_some(),
                "secret",
                "secrets (via projected volumes)",
            ),
            (
                s.service_account_token.is_some(),
                "serviceAccountToken",
                "serviceaccounts (via projected volumes)",
            ),
            (
                s.cluster_trust_bundle.is_some(),
                "clusterTrustBundle",
                "clustertrustbundles",
            ),
            (
                s.pod_certificate.is_some(),
                "podCertificate",
                "podcertificates",
            ),
        ];
        kinds.into_iter().find_map(|(hit, field, resource)| {
            hit.then(|| (format!("projected.sources[{k}].{field}"), resource))
        })
    })
}

const DNS1123_LABEL_RULE: &str = "a lowercase RFC 1123 label must consist of lower case \
    alphanumeric characters or '-', and must start and end with an alphanumeric character";
pub(super) const DNS1123_SUBDOMAIN_RULE: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
    alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";

fn is_label(value: &str) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

fn dns1123_label_problem(value: &str) -> Option<String> {
    if value.len() > 63 {
        Some("must be no more than 63 characters".to_owned())
    } else if is_label(value) {
        None
    } else {
        Some(DNS1123_LABEL_RULE.to_owned())
    }
}

fn dns1123_subdomain_problem(value: &str) -> Option<String> {
    if value.len() > 253 {
        Some("must be no more than 253 characters".to_owned())
    } else if value.split('.').all(is_label) {
        None
    } else {
        Some(DNS1123_SUBDOMAIN_RULE.to_owned())
    }
}
