//! Tests for [`super::sandbox`]: metadata, labels, annotations, hostname, log directory, ports,
//! namespaces and the security context, for normal and hostNetwork pods.
use std::path::Path;

use kernlet_cri::v1;
use serde_json::json;

use super::dns::ResolvConf;
use super::sandbox::{pod_hostname_and_domain, port_mappings, sandbox_config};
use super::test_support::{UID, node, pod, pod_with};
use super::{SpecError, pod_log_dir};

fn config(pod: &k8s_openapi::api::core::v1::Pod) -> Result<v1::PodSandboxConfig, SpecError> {
    sandbox_config(
        pod,
        2,
        &node(),
        &ResolvConf::default(),
        Some("/kubepods/burstable/pod1"),
    )
}

#[test]
fn metadata_labels_annotations_and_log_dir() {
    let pod = pod_with(
        json!({
            "labels": {"app": "web", "io.kubernetes.pod.name": "spoofed"},
            "annotations": {"kubernetes.io/config.source": "file", "note": "x"},
        }),
        json!({}),
    );
    let c = config(&pod).unwrap();
    let meta = c.metadata.unwrap();
    assert_eq!(
        (
            meta.name.as_str(),
            meta.namespace.as_str(),
            meta.uid.as_str(),
            meta.attempt
        ),
        ("web-node-a", "default", UID, 2)
    );
    assert_eq!(c.labels.len(), 4);
    assert_eq!(c.labels["app"], "web");
    assert_eq!(c.labels["io.kubernetes.pod.name"], "web-node-a");
    assert_eq!(c.labels["io.kubernetes.pod.namespace"], "default");
    assert_eq!(c.labels["io.kubernetes.pod.uid"], UID);
    assert_eq!(c.annotations.len(), 2);
    assert_eq!(c.annotations["note"], "x");
    assert_eq!(
        c.log_directory,
        format!("/var/log/pods/default_web-node-a_{UID}")
    );
    assert_eq!(
        pod_log_dir(Path::new("/logs"), &pod),
        Path::new("/logs").join(format!("default_web-node-a_{UID}"))
    );
    assert_eq!(c.hostname, "web-node-a");
    assert_eq!(c.dns_config.unwrap().servers, ["10.96.0.10"]);
}

#[test]
fn hostname_rules() {
    let domain = |spec: serde_json::Value| pod_hostname_and_domain(&pod(spec), "cluster.local");
    assert_eq!(
        domain(json!({"hostname": "db-0", "subdomain": "db"})).unwrap(),
        ("db-0".to_owned(), "db.default.svc.cluster.local".to_owned())
    );
    assert!(domain(json!({"hostname": "Bad_Name"})).is_err());
    assert!(domain(json!({"subdomain": "-x"})).is_err());

    let long = format!("{}-{}", "a".repeat(62), "b".repeat(10));
    let long_pod = pod_with(json!({"name": long}), json!({}));
    let (hostname, _) = pod_hostname_and_domain(&long_pod, "cluster.local").unwrap();
    // Cut to 63 characters, then the trailing '-' is trimmed.
    assert_eq!(hostname, "a".repeat(62));

    let fqdn = pod(json!({"hostname": "db-0", "subdomain": "db", "setHostnameAsFQDN": true}));
    assert_eq!(
        config(&fqdn).unwrap().hostname,
        "db-0.db.default.svc.cluster.local"
    );
    let too_long = pod(json!({
        "hostname": "h".repeat(40),
        "subdomain": "db",
        "setHostnameAsFQDN": true,
    }));
    let err = config(&too_long).unwrap_err();
    assert!(err.to_string().contains("too long"), "{err}");
    assert_eq!(err.reason(), "CreatePodSandboxError");
}

#[test]
fn port_mappings_cover_every_app_container_port() {
    let pod = pod(json!({
        "containers": [
            {"name": "a", "ports": [
                {"containerPort": 80, "protocol": "TCP"},
                {"containerPort": 53, "protocol": "UDP", "hostPort": 5353, "hostIP": "127.0.0.1"},
                {"containerPort": 53, "protocol": "UDP", "hostPort": 5353, "hostIP": "127.0.0.1"},
                {"name": "metrics", "containerPort": 9100, "protocol": "TCP"},
                {"name": "metrics", "containerPort": 9101, "protocol": "TCP"},
            ]},
            {"name": "b", "ports": [{"containerPort": 36412, "protocol": "SCTP", "hostPort": 36412, "hostIP": "::1"}]},
        ],
        "initContainers": [{"name": "init", "ports": [{"containerPort": 1, "protocol": "TCP"}]}],
    }));
    let c = config(&pod).unwrap();
    let got: Vec<(i32, i32, i32, &str)> = c
        .port_mappings
        .iter()
        .map(|p| {
            (
                p.protocol,
                p.container_port,
                p.host_port,
                p.host_ip.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (v1::Protocol::Tcp.into(), 80, 0, ""),
            (v1::Protocol::Udp.into(), 53, 5353, "127.0.0.1"),
            (v1::Protocol::Tcp.into(), 9100, 0, ""),
            (v1::Protocol::Sctp.into(), 36412, 36412, "::1"),
        ]
    );
    let b = &pod.spec.as_ref().unwrap().containers[1];
    assert_eq!(port_mappings(b).len(), 1);
}

fn namespaces(c: &v1::PodSandboxConfig) -> (i32, i32, i32) {
    let ns = c
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .unwrap();
    (ns.network, ns.pid, ns.ipc)
}

#[test]
fn namespace_options_for_normal_and_host_pods() {
    let (pod_mode, node_mode, container_mode) = (
        v1::NamespaceMode::Pod.into(),
        v1::NamespaceMode::Node.into(),
        v1::NamespaceMode::Container.into(),
    );
    let normal = config(&pod(json!({}))).unwrap();
    assert_eq!(namespaces(&normal), (pod_mode, container_mode, pod_mode));
    let shared = config(&pod(json!({"shareProcessNamespace": true}))).unwrap();
    assert_eq!(namespaces(&shared), (pod_mode, pod_mode, pod_mode));
    let host = config(&pod(
        json!({"hostNetwork": true, "hostPID": true, "hostIPC": true}),
    ))
    .unwrap();
    assert_eq!(namespaces(&host), (node_mode, node_mode, node_mode));
    let userns = host
        .linux
        .unwrap()
        .security_context
        .unwrap()
        .namespace_options
        .unwrap()
        .userns_options
        .unwrap();
    assert_eq!(userns.mode, node_mode);
    let err = config(&pod(json!({"hostUsers": false}))).unwrap_err();
    assert!(err.to_string().contains("hostUsers"), "{err}");
}

#[test]
fn host_network_pod_has_no_hostname_but_has_dns() {
    let c = config(&pod(json!({"hostNetwork": true, "hostname": "ignored"}))).unwrap();
    assert_eq!(c.hostname, "");
    let dns = c.dns_config.unwrap();
    // ClusterFirst on the host network falls back to the (here empty) host resolv.conf.
    assert!(dns.servers.is_empty());
    assert_eq!(
        c.log_directory,
        format!("/var/log/pods/default_web-node-a_{UID}")
    );
}

#[test]
fn security_context_and_sysctls() {
    let pod = pod(json!({
        "securityContext": {
            "runAsUser": 1000,
            "runAsGroup": 3000,
            "fsGroup": 2000,
            "supplementalGroups": [4000, 5000],
            "supplementalGroupsPolicy": "Strict",
            "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}],
            "seLinuxOptions": {"level": "s0:c1,c2"},
        },
        "containers": [{"name": "app"}],
        "initContainers": [{"name": "setup", "securityContext": {"privileged": true}}],
    }));
    let c = config(&pod).unwrap();
    let linux = c.linux.unwrap();
    assert_eq!(linux.cgroup_parent, "/kubepods/burstable/pod1");
    assert_eq!(linux.sysctls["net.ipv4.ip_unprivileged_port_start"], "0");
    let sc = linux.security_context.unwrap();
    assert!(sc.privileged);
    assert_eq!(sc.run_as_user, Some(v1::Int64Value { value: 1000 }));
    assert_eq!(sc.run_as_group, Some(v1::Int64Value { value: 3000 }));
    assert_eq!(sc.supplemental_groups, [2000, 4000, 5000]);
    assert_eq!(
        sc.supplemental_groups_policy,
        i32::from(v1::SupplementalGroupsPolicy::Strict)
    );
    assert_eq!(sc.selinux_options.unwrap().level, "s0:c1,c2");
    assert_eq!(
        sc.seccomp.unwrap().profile_type,
        i32::from(v1::security_profile::ProfileType::RuntimeDefault)
    );
    assert!(linux.resources.is_some() && linux.overhead.is_some());
}

#[test]
fn pod_without_security_context_has_no_namespace_options() {
    let mut pod = pod(json!({}));
    pod.spec.as_mut().unwrap().security_context = None;
    let c = sandbox_config(&pod, 0, &node(), &ResolvConf::default(), None).unwrap();
    let linux = c.linux.unwrap();
    assert_eq!(linux.cgroup_parent, "");
    let sc = linux.security_context.unwrap();
    assert!(sc.namespace_options.is_none());
    assert!(!sc.privileged);
}
