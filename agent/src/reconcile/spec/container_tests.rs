//! Tests for [`super::container`]: metadata, image, command expansion, log path, labels,
//! annotations, mounts and the security context.
use kernlet_cri::v1;
use serde_json::json;

use super::container::{container_config, container_log_path};
use super::test_support::{UID, node, pod, pod_with};
use crate::reconcile::plan::{Target, container_hash};

fn build(pod: &k8s_openapi::api::core::v1::Pod, target: Target) -> v1::ContainerConfig {
    container_config(
        pod,
        target,
        3,
        &["10.244.1.9".to_owned()],
        &node(),
        "sha256:abc",
    )
    .unwrap()
}

fn web() -> k8s_openapi::api::core::v1::Pod {
    pod_with(
        json!({"deletionGracePeriodSeconds": 5}),
        json!({
            "terminationGracePeriodSeconds": 45,
            "containers": [{
                "name": "app",
                "image": "nginx:1.27",
                "command": ["/bin/sh", "-c", "echo $(GREETING) $$(GREETING) $(MISSING)"],
                "args": ["--name=$(POD_NAME)"],
                "workingDir": "/srv",
                "stdin": true,
                "stdinOnce": true,
                "tty": true,
                "env": [
                    {"name": "GREETING", "value": "hi"},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                ],
                "ports": [{"containerPort": 80, "protocol": "TCP", "name": "http"}],
                "lifecycle": {"preStop": {"exec": {"command": ["/bin/sleep", "5"]}}},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
            }],
            "initContainers": [{"name": "setup", "image": "busybox", "terminationMessagePath": "/dev/termination-log"}],
        }),
    )
}

#[test]
fn metadata_image_command_and_log_path() {
    let pod = web();
    let c = build(&pod, Target::App(0));
    let meta = c.metadata.unwrap();
    assert_eq!((meta.name.as_str(), meta.attempt), ("app", 3));
    let image = c.image.unwrap();
    assert_eq!(image.image, "sha256:abc");
    assert_eq!(image.user_specified_image, "nginx:1.27");
    assert_eq!(
        c.command,
        ["/bin/sh", "-c", "echo hi $(GREETING) $(MISSING)"]
    );
    assert_eq!(c.args, ["--name=web-node-a"]);
    assert_eq!(c.working_dir, "/srv");
    assert!(c.stdin && c.stdin_once && c.tty);
    assert_eq!(c.log_path, "app/3.log");
    assert_eq!(container_log_path("db", 0), "db/0.log");
    let envs: Vec<(&str, &str)> = c
        .envs
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.as_str()))
        .collect();
    assert_eq!(envs, [("GREETING", "hi"), ("POD_NAME", "web-node-a")]);
}

#[test]
fn labels_and_annotations() {
    let pod = web();
    let spec = pod.spec.as_ref().unwrap();
    let c = build(&pod, Target::App(0));
    assert_eq!(c.labels.len(), 4);
    assert_eq!(c.labels["io.kubernetes.pod.name"], "web-node-a");
    assert_eq!(c.labels["io.kubernetes.pod.namespace"], "default");
    assert_eq!(c.labels["io.kubernetes.pod.uid"], UID);
    assert_eq!(c.labels["io.kubernetes.container.name"], "app");
    let a = &c.annotations;
    assert_eq!(
        a["io.kubernetes.container.hash"],
        container_hash(&spec.containers[0])
    );
    assert_eq!(a["io.kubernetes.container.restartCount"], "3");
    assert_eq!(
        a["io.kubernetes.container.terminationMessagePath"],
        "/dev/termination-log"
    );
    assert_eq!(
        a["io.kubernetes.container.terminationMessagePolicy"],
        "File"
    );
    assert_eq!(a["io.kubernetes.pod.terminationGracePeriod"], "45");
    assert_eq!(a["io.kubernetes.pod.deletionGracePeriod"], "5");
    assert_eq!(a["io.kubernetes.container.type"], "container");
    let pre_stop: serde_json::Value =
        serde_json::from_str(&a["io.kubernetes.container.preStopHandler"]).unwrap();
    assert_eq!(pre_stop, json!({"exec": {"command": ["/bin/sleep", "5"]}}));
    let ports: serde_json::Value =
        serde_json::from_str(&a["io.kubernetes.container.ports"]).unwrap();
    assert_eq!(
        ports,
        json!([{"containerPort": 80, "name": "http", "protocol": "TCP"}])
    );

    let init = build(&pod, Target::Init(0));
    assert_eq!(init.annotations["io.kubernetes.container.type"], "init");
    assert!(
        !init
            .annotations
            .contains_key("io.kubernetes.container.preStopHandler")
    );
    assert!(
        !init
            .annotations
            .contains_key("io.kubernetes.container.ports")
    );
    assert_eq!(
        init.annotations["io.kubernetes.container.hash"],
        container_hash(&spec.init_containers.as_ref().unwrap()[0])
    );
}

#[test]
fn default_mounts_are_etc_hosts_and_termination_log() {
    let pod = web();
    let c = build(&pod, Target::App(0));
    let mounts: Vec<(&str, &str)> = c
        .mounts
        .iter()
        .map(|m| (m.container_path.as_str(), m.host_path.as_str()))
        .collect();
    let etc_hosts = format!("/var/lib/kubelet/pods/{UID}/etc-hosts");
    let term_log = format!("/var/lib/kubelet/pods/{UID}/containers/app/00000003");
    assert_eq!(
        mounts,
        [
            ("/etc/hosts", etc_hosts.as_str()),
            ("/dev/termination-log", term_log.as_str())
        ]
    );
    assert!(c.mounts.iter().all(|m| !m.readonly && m.propagation == 0));

    // Before the sandbox has an IP there is no /etc/hosts mount.
    let early = container_config(&pod, Target::App(0), 0, &[], &node(), "img").unwrap();
    assert_eq!(early.mounts.len(), 1);
    assert_eq!(early.mounts[0].container_path, "/dev/termination-log");
}

#[test]
fn missing_target_is_an_error() {
    let err = container_config(&web(), Target::App(7), 0, &[], &node(), "img").unwrap_err();
    assert!(err.to_string().contains("no such container"), "{err}");
}

fn security(pod: &k8s_openapi::api::core::v1::Pod) -> v1::LinuxContainerSecurityContext {
    build(pod, Target::App(0))
        .linux
        .unwrap()
        .security_context
        .unwrap()
}

#[test]
fn security_context_merges_pod_and_container() {
    let pod = pod(json!({
        "securityContext": {
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "runAsNonRoot": true,
            "fsGroup": 2000,
            "supplementalGroups": [3000],
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [{
            "name": "app",
            "securityContext": {
                "runAsUser": 1001,
                "readOnlyRootFilesystem": true,
                "allowPrivilegeEscalation": false,
                "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]},
            },
        }],
    }));
    let sc = security(&pod);
    assert_eq!(sc.run_as_user, Some(v1::Int64Value { value: 1001 }));
    assert_eq!(sc.run_as_group, Some(v1::Int64Value { value: 1000 }));
    assert!(sc.readonly_rootfs && sc.no_new_privs && !sc.privileged);
    let caps = sc.capabilities.unwrap();
    assert_eq!(caps.add_capabilities, ["NET_ADMIN"]);
    assert_eq!(caps.drop_capabilities, ["ALL"]);
    assert_eq!(sc.supplemental_groups, [2000, 3000]);
    let seccomp = sc.seccomp.unwrap();
    assert_eq!(
        seccomp.profile_type,
        i32::from(v1::security_profile::ProfileType::RuntimeDefault)
    );
    assert!(sc.apparmor.is_none());
    assert_eq!(sc.masked_paths.len(), 11);
    assert_eq!(
        sc.readonly_paths,
        [
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger"
        ]
    );
    let ns = sc.namespace_options.unwrap();
    assert_eq!(ns.pid, i32::from(v1::NamespaceMode::Container));
}

#[test]
fn security_defaults_and_profiles() {
    let plain = security(&pod(json!({})));
    assert!(plain.run_as_user.is_none() && plain.run_as_group.is_none());
    assert!(!plain.no_new_privs && !plain.readonly_rootfs && plain.capabilities.is_none());
    assert_eq!(
        plain.seccomp.unwrap().profile_type,
        i32::from(v1::security_profile::ProfileType::Unconfined)
    );

    let profiles = pod_with(
        json!({"annotations": {"container.apparmor.security.beta.kubernetes.io/app": "localhost/k8s-nginx"}}),
        json!({
            "securityContext": {"appArmorProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "app", "securityContext": {
                "privileged": true,
                "procMount": "Unmasked",
                "seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/audit.json"},
            }}],
        }),
    );
    let sc = security(&profiles);
    assert!(sc.privileged);
    assert!(sc.masked_paths.is_empty() && sc.readonly_paths.is_empty());
    let seccomp = sc.seccomp.unwrap();
    assert_eq!(
        seccomp.profile_type,
        i32::from(v1::security_profile::ProfileType::Localhost)
    );
    assert_eq!(
        seccomp.localhost_ref,
        "/var/lib/kubelet/seccomp/profiles/audit.json"
    );
    // The container's annotation wins over the pod's field.
    let apparmor = sc.apparmor.unwrap();
    assert_eq!(
        apparmor.profile_type,
        i32::from(v1::security_profile::ProfileType::Localhost)
    );
    assert_eq!(apparmor.localhost_ref, "k8s-nginx");
}

#[test]
fn run_as_root_with_run_as_non_root_is_refused() {
    let pod = pod(json!({
        "securityContext": {"runAsNonRoot": true},
        "containers": [{"name": "app", "securityContext": {"runAsUser": 0}}],
    }));
    let err = container_config(&pod, Target::App(0), 0, &[], &node(), "img").unwrap_err();
    assert!(err.to_string().contains("non-root"), "{err}");
    assert_eq!(err.reason(), "CreateContainerConfigError");
    let bad_localhost = pod_with(
        json!({}),
        json!({"containers": [{"name": "app", "securityContext": {"seccompProfile": {"type": "Localhost"}}}]}),
    );
    let err = container_config(&bad_localhost, Target::App(0), 0, &[], &node(), "img").unwrap_err();
    assert!(err.to_string().contains("localhostProfile"), "{err}");
}

#[test]
fn host_network_pods_use_node_ips_for_env_and_hosts() {
    let pod = pod(json!({
        "hostNetwork": true,
        "containers": [{"name": "app", "env": [
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        ]}],
    }));
    let c = container_config(&pod, Target::App(0), 0, &[], &node(), "img").unwrap();
    assert_eq!(c.envs[0].value, "10.0.0.5");
    assert!(c.mounts.iter().any(|m| m.container_path == "/etc/hosts"));
    let ns = c
        .linux
        .unwrap()
        .security_context
        .unwrap()
        .namespace_options
        .unwrap();
    assert_eq!(ns.network, i32::from(v1::NamespaceMode::Node));
}

#[test]
fn sidecar_resources_use_sidecar_oom_rule() {
    let pod = pod(json!({
        "containers": [{"name": "app", "resources": {"requests": {"memory": "2Gi"}}}],
        "initContainers": [{"name": "side", "restartPolicy": "Always", "resources": {"requests": {"memory": "1Gi"}}}],
    }));
    let side = build(&pod, Target::Init(0));
    let resources = side.linux.unwrap().resources.unwrap();
    assert_eq!(resources.oom_score_adj, 750);
}
