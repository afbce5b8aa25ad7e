//! Tests for [`super::env`]: expansion, ordering, every field path and resource references.
use serde_json::json;

use super::env::{container_env, expand};
use super::test_support::{UID, node, pod, pod_with};

fn vars(name: &str) -> String {
    match name {
        "A" => "alpha".to_owned(),
        "EMPTY" => String::new(),
        other => format!("$({other})"),
    }
}

#[test]
fn expansion_follows_upstream_cases() {
    let cases = [
        ("$(A)", "alpha"),
        ("pre-$(A)-post", "pre-alpha-post"),
        ("$(A)$(A)", "alphaalpha"),
        ("$(UNKNOWN)", "$(UNKNOWN)"),
        ("$$(A)", "$(A)"),
        ("$$$(A)", "$alpha"),
        ("$$$$(A)", "$$(A)"),
        ("$(EMPTY)x", "x"),
        ("$(A", "$(A"),
        ("$()", "$()"),
        ("$A", "$A"),
        ("$", "$"),
        ("x$", "x$"),
        ("$$", "$"),
        ("$(A)$", "alpha$"),
        ("$(A$(A)", "$(A$(A)"),
        ("no refs", "no refs"),
        ("ünï$(A)çødé$é", "ünïalphaçødé$é"),
        ("", ""),
    ];
    for (input, want) in cases {
        assert_eq!(expand(input, vars), want, "{input:?}");
    }
}

fn env_of(pod: &k8s_openapi::api::core::v1::Pod, pod_ips: &[String]) -> Vec<(String, String)> {
    let container = &pod.spec.as_ref().unwrap().containers[0];
    container_env(pod, container, pod_ips, &node())
        .unwrap()
        .into_iter()
        .map(|kv| (kv.key, kv.value))
        .collect()
}

fn one(env: &serde_json::Value) -> k8s_openapi::api::core::v1::Pod {
    pod(json!({"containers": [{"name": "app", "image": "nginx", "env": env}]}))
}

#[test]
fn env_keeps_declaration_order_and_expands_earlier_vars_only() {
    let pod = one(&json!([
        {"name": "B", "value": "$(A)-b"},
        {"name": "A", "value": "a"},
        {"name": "C", "value": "$(A)-$(B)-$$(A)"},
        {"name": "EMPTY"},
        {"name": "B", "value": "b2"},
    ]));
    let env = env_of(&pod, &[]);
    let want = [
        ("B", "b2"),
        ("A", "a"),
        ("C", "a-$(A)-b-$(A)"),
        ("EMPTY", ""),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    assert_eq!(env, want);
}

#[test]
fn every_field_path() {
    let pod = pod_with(
        json!({
            "labels": {"app": "web", "tier": "front"},
            "annotations": {"note": "say \"hi\"\n", "kubernetes.io/config.source": "file"},
        }),
        json!({
            "serviceAccountName": "builder",
            "containers": [{"name": "app", "env": [
                {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "NS", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}},
                {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "NOPE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['nope']"}}},
                {"name": "NOTE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['note']"}}},
                {"name": "LABELS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels"}}},
                {"name": "ANNOTATIONS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations"}}},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
                {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
                {"name": "HOST_IPS", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIPs"}}},
                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "POD_IPS", "valueFrom": {"fieldRef": {"fieldPath": "status.podIPs"}}},
                {"name": "GREETING", "value": "hello from $(NAME) at $(POD_IP)"},
            ]}],
        }),
    );
    let ips = ["10.244.0.7".to_owned(), "fd00::7".to_owned()];
    let env: std::collections::HashMap<String, String> = env_of(&pod, &ips).into_iter().collect();
    let get = |k: &str| env.get(k).map(String::as_str).unwrap();
    assert_eq!(get("NAME"), "web-node-a");
    assert_eq!(get("NS"), "default");
    assert_eq!(get("UID"), UID);
    assert_eq!(get("APP"), "web");
    assert_eq!(get("NOPE"), "");
    assert_eq!(get("NOTE"), "say \"hi\"\n");
    assert_eq!(get("LABELS"), "app=\"web\"\ntier=\"front\"");
    assert_eq!(
        get("ANNOTATIONS"),
        "kubernetes.io/config.source=\"file\"\nnote=\"say \\\"hi\\\"\\n\""
    );
    assert_eq!(get("NODE"), "node-a");
    assert_eq!(get("SA"), "builder");
    assert_eq!(get("HOST_IP"), "10.0.0.5");
    assert_eq!(get("HOST_IPS"), "10.0.0.5");
    assert_eq!(get("POD_IP"), "10.244.0.7");
    assert_eq!(get("POD_IPS"), "10.244.0.7,fd00::7");
    assert_eq!(get("GREETING"), "hello from web-node-a at 10.244.0.7");
}

#[test]
fn pod_ip_is_empty_before_the_sandbox_has_one() {
    let pod =
        one(&json!([{"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]));
    assert_eq!(env_of(&pod, &[]), [("IP".to_owned(), String::new())]);
}

#[test]
fn bad_field_refs_are_errors() {
    for (path, version, needle) in [
        ("status.phase", "v1", "unsupported fieldPath: status.phase"),
        ("metadata.name", "v2", "unsupported pod version: v2"),
        ("spec.nodeName['x']", "v1", "does not support subscript"),
    ] {
        let pod = one(
            &json!([{"name": "X", "valueFrom": {"fieldRef": {"apiVersion": version, "fieldPath": path}}}]),
        );
        let c = &pod.spec.as_ref().unwrap().containers[0];
        let err = container_env(&pod, c, &[], &node()).unwrap_err();
        assert!(err.to_string().contains(needle), "{err}");
        assert!(err.to_string().contains("variable X"), "{err}");
    }
}

#[test]
fn resource_field_refs_with_divisors() {
    let pod = pod(json!({"containers": [
        {
            "name": "app",
            "resources": {
                "requests": {"cpu": "250m", "memory": "100Mi", "ephemeral-storage": "1Gi"},
                "limits": {"cpu": "1500m", "memory": "129Mi"},
            },
            "env": [
                {"name": "LIM_CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
                {"name": "LIM_CPU_M", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}},
                {"name": "REQ_CPU", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu"}}},
                {"name": "REQ_CPU_M", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}}},
                {"name": "LIM_MEM_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                {"name": "LIM_MEM_GI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Gi"}}},
                {"name": "REQ_MEM", "valueFrom": {"resourceFieldRef": {"resource": "requests.memory"}}},
                {"name": "REQ_EPH", "valueFrom": {"resourceFieldRef": {"resource": "requests.ephemeral-storage", "divisor": "1Mi"}}},
                {"name": "LIM_EPH", "valueFrom": {"resourceFieldRef": {"resource": "limits.ephemeral-storage", "divisor": "1Gi"}}},
                {"name": "ZERO_DIV", "valueFrom": {"resourceFieldRef": {"resource": "requests.memory", "divisor": "0"}}},
                {"name": "SIDE_MEM", "valueFrom": {"resourceFieldRef": {"containerName": "side", "resource": "limits.memory", "divisor": "1Mi"}}},
                {"name": "SIDE_CPU", "valueFrom": {"resourceFieldRef": {"containerName": "side", "resource": "limits.cpu"}}},
            ],
        },
        {"name": "side", "resources": {"limits": {"memory": "64Mi"}}},
    ]}));
    let env: std::collections::HashMap<String, String> = env_of(&pod, &[]).into_iter().collect();
    let get = |k: &str| env.get(k).map(String::as_str).unwrap();
    assert_eq!(get("LIM_CPU"), "2"); // ceil(1.5)
    assert_eq!(get("LIM_CPU_M"), "1500");
    assert_eq!(get("REQ_CPU"), "1"); // ceil(0.25)
    assert_eq!(get("REQ_CPU_M"), "250");
    assert_eq!(get("LIM_MEM_MI"), "129");
    assert_eq!(get("LIM_MEM_GI"), "1");
    assert_eq!(get("REQ_MEM"), (100 << 20).to_string());
    assert_eq!(get("REQ_EPH"), "1024");
    // No ephemeral-storage limit: node allocatable (100 GiB).
    assert_eq!(get("LIM_EPH"), "100");
    assert_eq!(get("ZERO_DIV"), (100 << 20).to_string());
    assert_eq!(get("SIDE_MEM"), "64");
    // The sidecar has no CPU limit: node allocatable (4 cores).
    assert_eq!(get("SIDE_CPU"), "4");
}

#[test]
fn bad_resource_field_refs_are_errors() {
    for (selector, needle) in [
        (
            json!({"resource": "limits.hugepages-2Mi"}),
            "unsupported container resource",
        ),
        (
            json!({"resource": "limits.cpu", "containerName": "ghost"}),
            "container ghost not found",
        ),
        (
            json!({"resource": "limits.cpu", "divisor": "lots"}),
            "divisor",
        ),
    ] {
        let pod = one(&json!([{"name": "R", "valueFrom": {"resourceFieldRef": selector}}]));
        let c = &pod.spec.as_ref().unwrap().containers[0];
        let err = container_env(&pod, c, &[], &node()).unwrap_err();
        assert!(err.to_string().contains(needle), "{err}");
        assert_eq!(err.reason(), "CreateContainerConfigError");
    }
}

#[test]
fn api_references_are_create_container_config_errors() {
    let cases = [
        (
            json!({"env": [{"name": "DB_URL", "valueFrom": {"configMapKeyRef": {"name": "db", "key": "url"}}}]}),
            "DB_URL",
            "configMapKeyRef default/db",
        ),
        (
            json!({"env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token", "optional": true}}}]}),
            "TOKEN",
            "secretKeyRef default/creds",
        ),
        (
            json!({"envFrom": [{"configMapRef": {"name": "settings"}}]}),
            "envFrom[0]",
            "configMapRef default/settings",
        ),
        (
            json!({"envFrom": [{"prefix": "X_"}, {"secretRef": {"name": "s"}}]}),
            "envFrom[1]",
            "secretRef default/s",
        ),
    ];
    for (fields, variable, needle) in cases {
        let mut container = json!({"name": "app", "image": "nginx"});
        for (k, v) in fields.as_object().unwrap() {
            container[k] = v.clone();
        }
        let pod = pod(json!({"containers": [container]}));
        let c = &pod.spec.as_ref().unwrap().containers[0];
        let err = container_env(&pod, c, &[], &node()).unwrap_err();
        let text = err.to_string();
        assert_eq!(err.reason(), "CreateContainerConfigError");
        assert!(text.contains(&format!("variable {variable}")), "{text}");
        assert!(text.contains(needle), "{text}");
        assert!(
            text.contains("default/web-node-a") && text.contains("\"app\""),
            "{text}"
        );
    }
}
