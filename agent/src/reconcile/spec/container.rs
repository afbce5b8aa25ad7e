//! `CreateContainer`'s config, after upstream's `generateContainerConfig`
//! (`pkg/kubelet/kuberuntime/kuberuntime_container.go`), `generateLinuxContainerConfig`
//! (`kuberuntime_container_linux.go`) and `determineEffectiveSecurityContext`
//! (`security_context.go`, `pkg/securitycontext/util.go`).
//!
//! - Metadata: the container name, attempt = restart count. Image: the resolved `image_ref`,
//!   with the spec's image as `user_specified_image`.
//! - Command and args: `$(VAR)` expanded against the container's final environment
//!   (`ExpandContainerCommandAndArgs`); working dir, `stdin`, `stdin_once`, `tty` as given.
//! - Log path `<name>/<restartCount>.log`, relative to the sandbox's log directory.
//! - Labels `io.kubernetes.pod.{name,namespace,uid}` and `io.kubernetes.container.name`;
//!   annotations as `newContainerAnnotations`: hash, restart count, termination message path and
//!   policy, deletion / termination grace periods, the preStop handler and ports as JSON, and the
//!   container type (`init` or `container`).
//! - Linux resources from [`super::resources`]; the security context merges the pod's and the
//!   container's (container wins): capabilities, privileged, user, group, read-only root,
//!   `allowPrivilegeEscalation: false` as `no_new_privs`, masked and read-only `/proc` paths
//!   (none with `procMount: Unmasked`), seccomp (container, else pod, else `Unconfined`),
//!   `AppArmor` (container field, container annotation, pod field; unset otherwise), `SELinux`,
//!   supplemental groups and namespaces.
//!
//! Not done here: the image's own user (upstream reads it with `ImageStatus` to check
//! `runAsNonRoot`; only an explicit `runAsUser: 0` is refused here, the runtime applies the
//! image user), devices and CDI devices.

use std::collections::HashMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{Container, Pod, SecurityContext};
use kernlet_cri::v1;

use super::env::{container_env, env_map, expand_with_vars};
use super::resources::container_linux_resources;
use super::sandbox::{namespace_options, selinux_option, supplemental_groups_policy};
use super::volumes::container_mounts;
use super::{
    NodeContext, SpecError, effective_pod_ips, pod_name, pod_namespace, pod_ref, pod_uid,
    target_container,
};
use crate::cri::labels;
use crate::reconcile::plan::{Target, container_hash};

/// `io.kubernetes.container.type`: `init` or `container`.
pub const CONTAINER_TYPE: &str = "io.kubernetes.container.type";
/// The pod annotation naming a container's `AppArmor` profile (deprecated upstream, still read).
const APPARMOR_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

/// `/proc` paths masked unless `procMount: Unmasked` (`defaultMaskedPaths`).
pub const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
/// `/proc` paths made read-only unless `procMount: Unmasked` (`defaultReadonlyPaths`).
pub const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// `<name>/<restartCount>.log`, relative to the sandbox's log directory (`buildContainerLogsPath`).
#[must_use]
pub fn container_log_path(container_name: &str, restart_count: u32) -> String {
    Path::new(container_name)
        .join(format!("{restart_count}.log"))
        .display()
        .to_string()
}

/// The config that creates `target` of `pod` for the `restart_count`-th time. `pod_ips` are the
/// sandbox's IPs (ignored for hostNetwork pods, which use the node's); `image_ref` is the image
/// as the runtime resolved it.
pub fn container_config(
    pod: &Pod,
    target: Target,
    restart_count: u32,
    pod_ips: &[String],
    node: &NodeContext,
    image_ref: &str,
) -> Result<v1::ContainerConfig, SpecError> {
    let (container, sidecar) = target_container(pod, target)?;
    let pod_ips = effective_pod_ips(pod, pod_ips, node);
    let envs = container_env(pod, container, &pod_ips, node)?;
    let vars = env_map(&envs);
    let expand_all = |items: &Option<Vec<String>>| -> Vec<String> {
        items
            .iter()
            .flatten()
            .map(|item| expand_with_vars(item, &vars))
            .collect()
    };
    let command = expand_all(&container.command);
    let args = expand_all(&container.args);
    let mounts = container_mounts(pod, container, restart_count, &pod_ips, node, &envs)?;
    let security_context = security_context(pod, container, node)?;
    let resources = container_linux_resources(pod, container, sidecar, node)?;
    let is_init = matches!(target, Target::Init(_));
    Ok(v1::ContainerConfig {
        metadata: Some(v1::ContainerMetadata {
            name: container.name.clone(),
            attempt: restart_count,
        }),
        image: Some(v1::ImageSpec {
            image: image_ref.to_owned(),
            user_specified_image: container.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command,
        args,
        working_dir: container.working_dir.clone().unwrap_or_default(),
        envs,
        mounts,
        devices: Vec::new(),
        labels: container_labels(pod, container),
        annotations: container_annotations(pod, container, restart_count, is_init),
        log_path: container_log_path(&container.name, restart_count),
        stdin: container.stdin.unwrap_or(false),
        stdin_once: container.stdin_once.unwrap_or(false),
        tty: container.tty.unwrap_or(false),
        linux: Some(v1::LinuxContainerConfig {
            resources: Some(resources),
            security_context: Some(security_context),
        }),
        cdi_devices: Vec::new(),
    })
}

/// `newContainerLabels`.
fn container_labels(pod: &Pod, container: &Container) -> HashMap<String, String> {
    HashMap::from([
        (labels::POD_NAME.to_owned(), pod_name(pod).to_owned()),
        (
            labels::POD_NAMESPACE.to_owned(),
            pod_namespace(pod).to_owned(),
        ),
        (labels::POD_UID.to_owned(), pod_uid(pod).to_owned()),
        (labels::CONTAINER_NAME.to_owned(), container.name.clone()),
    ])
}

/// `newContainerAnnotations`.
fn container_annotations(
    pod: &Pod,
    container: &Container,
    restart_count: u32,
    is_init: bool,
) -> HashMap<String, String> {
    let mut out = HashMap::from([
        (labels::CONTAINER_HASH.to_owned(), container_hash(container)),
        (
            labels::CONTAINER_RESTART_COUNT.to_owned(),
            restart_count.to_string(),
        ),
        (
            labels::CONTAINER_TERMINATION_MESSAGE_PATH.to_owned(),
            container
                .termination_message_path
                .clone()
                .unwrap_or_default(),
        ),
        (
            labels::CONTAINER_TERMINATION_MESSAGE_POLICY.to_owned(),
            container
                .termination_message_policy
                .clone()
                .unwrap_or_default(),
        ),
        (
            CONTAINER_TYPE.to_owned(),
            if is_init { "init" } else { "container" }.to_owned(),
        ),
    ]);
    if let Some(seconds) = pod.metadata.deletion_grace_period_seconds {
        out.insert(
            labels::POD_DELETION_GRACE_PERIOD.to_owned(),
            seconds.to_string(),
        );
    }
    if let Some(seconds) = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
    {
        out.insert(
            labels::POD_TERMINATION_GRACE_PERIOD.to_owned(),
            seconds.to_string(),
        );
    }
    let pre_stop = container
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref());
    if let Some(json) = pre_stop.and_then(|h| serde_json::to_string(h).ok()) {
        out.insert(labels::CONTAINER_PRESTOP_HANDLER.to_owned(), json);
    }
    let ports = container.ports.as_ref().filter(|p| !p.is_empty());
    if let Some(json) = ports.and_then(|p| serde_json::to_string(p).ok()) {
        out.insert(labels::CONTAINER_PORTS.to_owned(), json);
    }
    out
}

/// Overrides `dst` with `src` when `src` is set.
fn take<T: Clone>(dst: &mut Option<T>, src: Option<&T>) {
    if let Some(src) = src {
        *dst = Some(src.clone());
    }
}

/// `DetermineEffectiveSecurityContext`: the pod's user, group, non-root flag and `SELinux` options,
/// overridden field by field by the container's security context.
#[must_use]
pub fn effective_security_context(pod: &Pod, container: &Container) -> SecurityContext {
    let mut effective = SecurityContext::default();
    if let Some(pod_sc) = pod.spec.as_ref().and_then(|s| s.security_context.as_ref()) {
        effective
            .se_linux_options
            .clone_from(&pod_sc.se_linux_options);
        effective
            .windows_options
            .clone_from(&pod_sc.windows_options);
        effective.run_as_user = pod_sc.run_as_user;
        effective.run_as_group = pod_sc.run_as_group;
        effective.run_as_non_root = pod_sc.run_as_non_root;
    }
    let Some(sc) = container.security_context.as_ref() else {
        return effective;
    };
    take(
        &mut effective.se_linux_options,
        sc.se_linux_options.as_ref(),
    );
    take(&mut effective.capabilities, sc.capabilities.as_ref());
    take(&mut effective.privileged, sc.privileged.as_ref());
    take(&mut effective.run_as_user, sc.run_as_user.as_ref());
    take(&mut effective.run_as_group, sc.run_as_group.as_ref());
    take(&mut effective.run_as_non_root, sc.run_as_non_root.as_ref());
    take(
        &mut effective.read_only_root_filesystem,
        sc.read_only_root_filesystem.as_ref(),
    );
    take(
        &mut effective.allow_privilege_escalation,
        sc.allow_privilege_escalation.as_ref(),
    );
    take(&mut effective.proc_mount, sc.proc_mount.as_ref());
    effective
}

fn profile(kind: v1::security_profile::ProfileType, localhost_ref: String) -> v1::SecurityProfile {
    v1::SecurityProfile {
        profile_type: kind.into(),
        localhost_ref,
    }
}

/// `determineEffectiveSecurityContext` for `container` of `pod`.
fn security_context(
    pod: &Pod,
    container: &Container,
    node: &NodeContext,
) -> Result<v1::LinuxContainerSecurityContext, SpecError> {
    let error = |reason: String| SpecError::Container {
        pod: pod_ref(pod),
        container: container.name.clone(),
        reason,
    };
    let effective = effective_security_context(pod, container);
    if effective.run_as_non_root == Some(true) && effective.run_as_user == Some(0) {
        return Err(error(
            "container's runAsUser breaks non-root policy".to_owned(),
        ));
    }
    let unmasked = effective.proc_mount.as_deref() == Some("Unmasked");
    let paths = |defaults: &[&str]| -> Vec<String> {
        if unmasked {
            Vec::new()
        } else {
            defaults.iter().map(|&p| p.to_owned()).collect()
        }
    };
    let (apparmor, apparmor_profile) =
        apparmor(pod, container).map_err(|e| error(e.to_string()))?;
    let mut out = v1::LinuxContainerSecurityContext {
        capabilities: effective.capabilities.as_ref().map(|c| v1::Capability {
            add_capabilities: c.add.clone().unwrap_or_default(),
            drop_capabilities: c.drop.clone().unwrap_or_default(),
            add_ambient_capabilities: Vec::new(),
        }),
        privileged: effective.privileged.unwrap_or(false),
        namespace_options: Some(namespace_options(pod)?),
        selinux_options: selinux_option(effective.se_linux_options.as_ref()),
        run_as_user: effective.run_as_user.map(|value| v1::Int64Value { value }),
        run_as_group: effective.run_as_group.map(|value| v1::Int64Value { value }),
        readonly_rootfs: effective.read_only_root_filesystem.unwrap_or(false),
        no_new_privs: effective.allow_privilege_escalation == Some(false),
        masked_paths: paths(DEFAULT_MASKED_PATHS),
        readonly_paths: paths(DEFAULT_READONLY_PATHS),
        seccomp: Some(seccomp(pod, container, &node.root_dir).map_err(|e| error(e.to_string()))?),
        apparmor,
        ..Default::default()
    };
    #[expect(
        deprecated,
        reason = "upstream still fills the string form for older runtimes"
    )]
    {
        out.apparmor_profile = apparmor_profile;
    }
    if let Some(pod_sc) = pod.spec.as_ref().and_then(|s| s.security_context.as_ref()) {
        out.supplemental_groups = pod_sc
            .fs_group
            .into_iter()
            .chain(pod_sc.supplemental_groups.iter().flatten().copied())
            .collect();
        if pod_sc.supplemental_groups_policy.is_some() {
            out.supplemental_groups_policy =
                supplemental_groups_policy(pod, pod_sc.supplemental_groups_policy.as_deref())?
                    .into();
        }
    }
    Ok(out)
}

/// Why a container's seccomp or `AppArmor` profile cannot be chosen; reported as
/// [`SpecError::Container`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    #[error("localhostProfile must be set if seccompProfile type is Localhost")]
    SeccompLocalhostUnnamed,
    #[error("missing localhost apparmor profile name")]
    AppArmorLocalhostUnnamed,
    #[error("unknown apparmor profile type: {kind:?}")]
    AppArmorUnknownType { kind: String },
}

/// `getSeccompProfile` with `seccompDefault` off: the container's profile, else the pod's, else
/// `Unconfined`; a `Localhost` profile is a file below `<rootDir>/seccomp`.
fn seccomp(
    pod: &Pod,
    container: &Container,
    root_dir: &Path,
) -> Result<v1::SecurityProfile, ProfileError> {
    use v1::security_profile::ProfileType;
    let from_container = container
        .security_context
        .as_ref()
        .and_then(|sc| sc.seccomp_profile.as_ref());
    let from_pod = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|sc| sc.seccomp_profile.as_ref());
    let Some(chosen) = from_container.or(from_pod) else {
        return Ok(profile(ProfileType::Unconfined, String::new()));
    };
    match chosen.type_.as_str() {
        "RuntimeDefault" => Ok(profile(ProfileType::RuntimeDefault, String::new())),
        "Localhost" => match chosen.localhost_profile.as_deref() {
            Some(name) if !name.is_empty() => {
                let path = root_dir.join("seccomp").join(name);
                Ok(profile(ProfileType::Localhost, path.display().to_string()))
            }
            _ => Err(ProfileError::SeccompLocalhostUnnamed),
        },
        _ => Ok(profile(ProfileType::Unconfined, String::new())),
    }
}

/// `getAppArmorProfile`: the profile and its deprecated string form, or nothing (runtime default).
fn apparmor(
    pod: &Pod,
    container: &Container,
) -> Result<(Option<v1::SecurityProfile>, String), ProfileError> {
    use v1::security_profile::ProfileType;
    let field = container
        .security_context
        .as_ref()
        .and_then(|sc| sc.app_armor_profile.as_ref())
        .map(|p| (p.type_.clone(), p.localhost_profile.clone()));
    let annotation = || {
        let key = format!("{APPARMOR_ANNOTATION_PREFIX}{}", container.name);
        let value = pod.metadata.annotations.as_ref()?.get(&key)?;
        match value.as_str() {
            "runtime/default" => Some(("RuntimeDefault".to_owned(), None)),
            "unconfined" => Some(("Unconfined".to_owned(), None)),
            other => other
                .strip_prefix("localhost/")
                .map(|name| ("Localhost".to_owned(), Some(name.to_owned()))),
        }
    };
    let pod_field = || {
        pod.spec
            .as_ref()
            .and_then(|s| s.security_context.as_ref())
            .and_then(|sc| sc.app_armor_profile.as_ref())
            .map(|p| (p.type_.clone(), p.localhost_profile.clone()))
    };
    let Some((kind, localhost)) = field.or_else(annotation).or_else(pod_field) else {
        return Ok((None, String::new()));
    };
    match kind.as_str() {
        "RuntimeDefault" => Ok((
            Some(profile(ProfileType::RuntimeDefault, String::new())),
            "runtime/default".to_owned(),
        )),
        "Unconfined" => Ok((
            Some(profile(ProfileType::Unconfined, String::new())),
            "unconfined".to_owned(),
        )),
        "Localhost" => match localhost.filter(|name| !name.is_empty()) {
            Some(name) => Ok((
                Some(profile(ProfileType::Localhost, name.clone())),
                format!("localhost/{name}"),
            )),
            None => Err(ProfileError::AppArmorLocalhostUnnamed),
        },
        other => Err(ProfileError::AppArmorUnknownType {
            kind: other.to_owned(),
        }),
    }
}
