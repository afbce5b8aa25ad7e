//! `RunPodSandbox`'s config, after upstream's `generatePodSandboxConfig` and
//! `generatePodSandboxLinuxConfig` (`pkg/kubelet/kuberuntime/kuberuntime_sandbox.go`).
//!
//! - Metadata: name, namespace, UID, attempt. Labels: the pod's labels plus
//!   `io.kubernetes.pod.{name,namespace,uid}`; annotations: the pod's annotations (`labels.go`).
//! - Hostname: `spec.hostname` or the pod name, truncated to 63 characters, or the FQDN with
//!   `setHostnameAsFQDN` (`GeneratePodHostNameAndDomain`, `GetNodenameForKernel`); hostNetwork
//!   pods leave it empty (they get the node's).
//! - DNS for every pod ([`super::dns`]), log directory `<podLogsDir>/<ns>_<name>_<uid>`.
//! - Port mappings: every port of every app container (`MakePortMappings`, duplicates by name
//!   dropped); the runtime only publishes those with a host port.
//! - Linux: the cgroup parent, sysctls, the sandbox's resources and overhead, and a security
//!   context with `privileged` if any container is, seccomp `RuntimeDefault` (always, as
//!   upstream), and — when the pod has a security context — user, group, supplemental groups
//!   (`fsGroup` first), their policy, `SELinux` options and namespaces (`NamespacesForPod`).

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Container, Pod};
use kernlet_cri::v1;

use super::dns::{ResolvConf, pod_dns_config};
use super::resources::sandbox_linux_resources;
use super::{
    NodeContext, SpecError, all_containers, host_network, pod_log_dir, pod_name, pod_namespace,
    pod_ref, pod_spec, pod_uid,
};
use crate::cri::labels;

/// The longest hostname upstream sets (the kernel's 64 bytes minus the terminator).
const HOSTNAME_MAX_LEN: usize = 63;
/// The longest FQDN upstream sets as the hostname.
const FQDN_MAX_LEN: usize = 64;

/// The config of `pod`'s sandbox number `attempt`, given the node's parsed host `resolv.conf`
/// and the pod's cgroup parent (empty when `None`).
pub fn sandbox_config(
    pod: &Pod,
    attempt: u32,
    node: &NodeContext,
    resolv: &ResolvConf,
    cgroup_parent: Option<&str>,
) -> Result<v1::PodSandboxConfig, SpecError> {
    let spec = pod_spec(pod)?;
    let hostname = if host_network(pod) {
        String::new()
    } else {
        let (hostname, domain) = pod_hostname_and_domain(pod, &node.dns.cluster_domain)?;
        nodename_for_kernel(pod, &hostname, &domain)?
    };
    let port_mappings = spec.containers.iter().flat_map(port_mappings).collect();
    Ok(v1::PodSandboxConfig {
        metadata: Some(v1::PodSandboxMetadata {
            name: pod_name(pod).to_owned(),
            uid: pod_uid(pod).to_owned(),
            namespace: pod_namespace(pod).to_owned(),
            attempt,
        }),
        hostname,
        log_directory: pod_log_dir(&node.pod_logs_dir, pod).display().to_string(),
        dns_config: Some(pod_dns_config(pod, node, resolv)),
        port_mappings,
        labels: sandbox_labels(pod),
        annotations: pod
            .metadata
            .annotations
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        linux: Some(linux_config(pod, node, cgroup_parent)?),
    })
}

/// `newPodLabels`: the pod's labels plus the three `io.kubernetes.pod.*` labels.
fn sandbox_labels(pod: &Pod) -> std::collections::HashMap<String, String> {
    let mut out: std::collections::HashMap<String, String> = pod
        .metadata
        .labels
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    out.insert(labels::POD_NAME.to_owned(), pod_name(pod).to_owned());
    out.insert(
        labels::POD_NAMESPACE.to_owned(),
        pod_namespace(pod).to_owned(),
    );
    out.insert(labels::POD_UID.to_owned(), pod_uid(pod).to_owned());
    out
}

/// `GeneratePodHostNameAndDomain`: `(hostname, domain)`. The hostname is `spec.hostname` (which
/// must be a DNS label) or the pod name, cut to 63 characters without a trailing `-` or `.`; the
/// domain is `<subdomain>.<namespace>.svc.<clusterDomain>` when `spec.subdomain` is set.
pub fn pod_hostname_and_domain(
    pod: &Pod,
    cluster_domain: &str,
) -> Result<(String, String), SpecError> {
    let spec = pod_spec(pod)?;
    let error = |reason: String| SpecError::Sandbox {
        pod: pod_ref(pod),
        reason,
    };
    let mut hostname = pod_name(pod).to_owned();
    if let Some(requested) = spec.hostname.as_deref().filter(|h| !h.is_empty()) {
        if let Some(problem) = dns1123_label_problem(requested) {
            return Err(error(format!(
                "pod hostname {requested:?} is not a valid DNS label: {problem}"
            )));
        }
        requested.clone_into(&mut hostname);
    }
    if hostname.len() > HOSTNAME_MAX_LEN {
        let truncated = hostname[..HOSTNAME_MAX_LEN].trim_end_matches(['-', '.']);
        if truncated.is_empty() {
            return Err(error(format!("hostname {hostname:?} is invalid")));
        }
        hostname = truncated.to_owned();
    }
    let mut domain = String::new();
    if let Some(subdomain) = spec.subdomain.as_deref().filter(|s| !s.is_empty()) {
        if let Some(problem) = dns1123_label_problem(subdomain) {
            return Err(error(format!(
                "pod subdomain {subdomain:?} is not a valid DNS label: {problem}"
            )));
        }
        domain = format!("{subdomain}.{}.svc.{cluster_domain}", pod_namespace(pod));
    }
    Ok((hostname, domain))
}

/// `GetNodenameForKernel`: the FQDN when `setHostnameAsFQDN` and there is a domain (at most 64
/// characters), else the short hostname.
fn nodename_for_kernel(pod: &Pod, hostname: &str, domain: &str) -> Result<String, SpecError> {
    let as_fqdn = pod
        .spec
        .as_ref()
        .and_then(|s| s.set_hostname_as_fqdn)
        .unwrap_or(false);
    if domain.is_empty() || !as_fqdn {
        return Ok(hostname.to_owned());
    }
    let fqdn = format!("{hostname}.{domain}");
    if fqdn.len() > FQDN_MAX_LEN {
        return Err(SpecError::Sandbox {
            pod: pod_ref(pod),
            reason: format!(
                "failed to construct FQDN from pod hostname and cluster domain, FQDN {fqdn} is \
                 too long ({FQDN_MAX_LEN} characters is the max, {} characters requested)",
                fqdn.len()
            ),
        });
    }
    Ok(fqdn)
}

/// `IsDNS1123Label`: lower-case alphanumerics and `-`, starting and ending alphanumeric, at most
/// 63 characters.
fn dns1123_label_problem(value: &str) -> Option<&'static str> {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if value.len() > HOSTNAME_MAX_LEN {
        Some("must be no more than 63 characters")
    } else if value.is_empty()
        || !value.chars().all(|c| alnum(c) || c == '-')
        || !value.starts_with(alnum)
        || !value.ends_with(alnum)
    {
        Some(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or \
             '-', and must start and end with an alphanumeric character",
        )
    } else {
        None
    }
}

/// `MakePortMappings` for one container: every port, a repeated name (or, unnamed, a repeated
/// family/protocol/hostIP/ports combination) skipped.
#[must_use]
pub fn port_mappings(container: &Container) -> Vec<v1::PortMapping> {
    let mut names: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for port in container.ports.iter().flatten() {
        let protocol = port.protocol.as_deref().unwrap_or("TCP");
        let host_ip = port.host_ip.as_deref().unwrap_or_default();
        let host_port = port.host_port.unwrap_or(0);
        let name = if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            name.to_owned()
        } else {
            let family = match host_ip.parse::<IpAddr>() {
                _ if host_ip.is_empty() => "any",
                Ok(IpAddr::V6(_)) => "v6",
                _ => "v4",
            };
            format!(
                "{family}-{protocol}-{host_ip}:{}:{host_port}",
                port.container_port
            )
        };
        if names.contains(&name) {
            continue;
        }
        names.push(name);
        out.push(v1::PortMapping {
            protocol: runtime_protocol(protocol).into(),
            container_port: port.container_port,
            host_port,
            host_ip: host_ip.to_owned(),
        });
    }
    out
}

/// `toRuntimeProtocol`: unknown protocols become TCP, as upstream.
fn runtime_protocol(protocol: &str) -> v1::Protocol {
    match protocol {
        "UDP" => v1::Protocol::Udp,
        "SCTP" => v1::Protocol::Sctp,
        _ => v1::Protocol::Tcp,
    }
}

/// `NamespacesForPod`: network and IPC are the node's with hostNetwork / hostIPC, else the
/// pod's; PID is the node's with hostPID, the pod's with `shareProcessNamespace`, else the
/// container's own; user namespaces are the node's (`hostUsers: false` is not supported).
pub fn namespace_options(pod: &Pod) -> Result<v1::NamespaceOption, SpecError> {
    let spec = pod_spec(pod)?;
    let mode = |node: bool| {
        if node {
            v1::NamespaceMode::Node
        } else {
            v1::NamespaceMode::Pod
        }
    };
    let pid = if spec.host_pid.unwrap_or(false) {
        v1::NamespaceMode::Node
    } else if spec.share_process_namespace.unwrap_or(false) {
        v1::NamespaceMode::Pod
    } else {
        v1::NamespaceMode::Container
    };
    if spec.host_users == Some(false) {
        return Err(SpecError::Sandbox {
            pod: pod_ref(pod),
            reason: "hostUsers: false (user namespaces) is not supported by this node".to_owned(),
        });
    }
    Ok(v1::NamespaceOption {
        network: mode(spec.host_network.unwrap_or(false)).into(),
        pid: pid.into(),
        ipc: mode(spec.host_ipc.unwrap_or(false)).into(),
        target_id: String::new(),
        userns_options: Some(v1::UserNamespace {
            mode: v1::NamespaceMode::Node.into(),
            uids: Vec::new(),
            gids: Vec::new(),
        }),
    })
}

/// `HasPrivilegedContainer`.
fn any_privileged(pod: &Pod) -> bool {
    pod.spec.as_ref().is_some_and(|spec| {
        all_containers(spec).any(|c| {
            c.security_context
                .as_ref()
                .and_then(|sc| sc.privileged)
                .unwrap_or(false)
        })
    })
}

/// The CRI spelling of `supplementalGroupsPolicy`.
pub(super) fn supplemental_groups_policy(
    pod: &Pod,
    policy: Option<&str>,
) -> Result<v1::SupplementalGroupsPolicy, SpecError> {
    match policy {
        None | Some("Merge") => Ok(v1::SupplementalGroupsPolicy::Merge),
        Some("Strict") => Ok(v1::SupplementalGroupsPolicy::Strict),
        Some(other) => Err(SpecError::Sandbox {
            pod: pod_ref(pod),
            reason: format!("unsupported supplementalGroupsPolicy: {other}"),
        }),
    }
}

pub(super) fn selinux_option(
    options: Option<&k8s_openapi::api::core::v1::SELinuxOptions>,
) -> Option<v1::SeLinuxOption> {
    options.map(|o| v1::SeLinuxOption {
        user: o.user.clone().unwrap_or_default(),
        role: o.role.clone().unwrap_or_default(),
        r#type: o.type_.clone().unwrap_or_default(),
        level: o.level.clone().unwrap_or_default(),
    })
}

fn linux_config(
    pod: &Pod,
    node: &NodeContext,
    cgroup_parent: Option<&str>,
) -> Result<v1::LinuxPodSandboxConfig, SpecError> {
    let spec = pod_spec(pod)?;
    let mut security = v1::LinuxSandboxSecurityContext {
        privileged: any_privileged(pod),
        seccomp: Some(v1::SecurityProfile {
            profile_type: v1::security_profile::ProfileType::RuntimeDefault.into(),
            localhost_ref: String::new(),
        }),
        ..Default::default()
    };
    let mut sysctls = std::collections::HashMap::new();
    if let Some(sc) = &spec.security_context {
        for sysctl in sc.sysctls.iter().flatten() {
            sysctls.insert(sysctl.name.clone(), sysctl.value.clone());
        }
        security.run_as_user = sc.run_as_user.map(|value| v1::Int64Value { value });
        security.run_as_group = sc.run_as_group.map(|value| v1::Int64Value { value });
        security.namespace_options = Some(namespace_options(pod)?);
        security.supplemental_groups = sc
            .fs_group
            .into_iter()
            .chain(sc.supplemental_groups.iter().flatten().copied())
            .collect();
        if sc.supplemental_groups_policy.is_some() {
            security.supplemental_groups_policy =
                supplemental_groups_policy(pod, sc.supplemental_groups_policy.as_deref())?.into();
        }
        security.selinux_options = selinux_option(sc.se_linux_options.as_ref());
    }
    let (resources, overhead) = sandbox_linux_resources(pod, node)?;
    Ok(v1::LinuxPodSandboxConfig {
        cgroup_parent: cgroup_parent.unwrap_or_default().to_owned(),
        security_context: Some(security),
        sysctls,
        overhead: Some(overhead),
        resources: Some(resources),
    })
}
