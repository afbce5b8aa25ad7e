use super::*;

fn node() -> Node {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "n1", "labels": {"disk": "ssd", "cores": "8"}},
        "spec": {"taints": [
            {"key": "maintenance", "effect": "NoExecute"},
            {"key": "gpu", "effect": "NoSchedule"}
        ]},
        "status": {"allocatable": {"cpu": "2", "memory": "1Gi", "pods": "3"}}
    }))
    .unwrap()
}

fn pod(spec: serde_json::Value) -> Pod {
    let mut spec = spec;
    spec["containers"] = serde_json::json!([{
        "name": "app", "image": "x",
        "resources": spec.get("requests").map(|r| serde_json::json!({"requests": r}))
    }]);
    if let Some(map) = spec.as_object_mut() {
        map.remove("requests");
        map.entry("tolerations").or_insert(serde_json::json!([
            {"key": "maintenance", "operator": "Exists"}
        ]));
    }
    serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
}

#[test]
fn resources_are_checked_against_allocatable_and_what_runs() {
    let node = node();
    let half = pod(serde_json::json!({"requests": {"cpu": "1500m"}}));
    assert_eq!(admit(&half, &node, &[]), Ok(()));
    let rejected = admit(&half, &node, &[&half]).unwrap_err();
    assert_eq!(rejected.reason, "OutOfcpu");
    assert_eq!(
        rejected.message,
        "Node didn't have enough resource: cpu, requested: 1500, used: 1500, capacity: 2000"
    );
    let big = pod(serde_json::json!({"requests": {"memory": "2Gi"}}));
    assert_eq!(admit(&big, &node, &[]).unwrap_err().reason, "OutOfmemory");
    let small = pod(serde_json::json!({}));
    let rejected = admit(&small, &node, &[&small, &small, &small]).unwrap_err();
    assert_eq!(rejected.reason, "OutOfpods");
    assert!(
        rejected
            .message
            .contains("pods, requested: 1, used: 3, capacity: 3")
    );
}

#[test]
fn selectors_affinity_name_ports_and_taints_are_upstream_s_predicates() {
    let node = node();
    let selected = pod(serde_json::json!({"nodeSelector": {"disk": "ssd"}}));
    assert_eq!(admit(&selected, &node, &[]), Ok(()));
    let elsewhere = pod(serde_json::json!({"nodeSelector": {"disk": "hdd"}}));
    let rejected = admit(&elsewhere, &node, &[]).unwrap_err();
    assert_eq!(rejected.reason, "NodeAffinity");
    assert_eq!(
        rejected.message,
        "Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector"
    );
    let affinity = |operator: &str, values: serde_json::Value| {
        pod(serde_json::json!({"affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "cores", "operator": operator, "values": values}]}
        ]}}}}))
    };
    assert_eq!(
        admit(&affinity("Gt", serde_json::json!(["4"])), &node, &[]),
        Ok(())
    );
    assert!(admit(&affinity("Lt", serde_json::json!(["4"])), &node, &[]).is_err());
    assert_eq!(
        admit(&affinity("In", serde_json::json!(["8", "16"])), &node, &[]),
        Ok(())
    );
    assert!(admit(&affinity("NotIn", serde_json::json!(["8"])), &node, &[]).is_err());

    let other_node = pod(serde_json::json!({"nodeName": "n2"}));
    assert_eq!(
        admit(&other_node, &node, &[]).unwrap_err().reason,
        "NodeName"
    );

    let port = pod(serde_json::json!({}));
    let mut with_port = port.clone();
    if let Some(spec) = with_port.spec.as_mut() {
        spec.containers[0].ports = Some(vec![k8s_openapi::api::core::v1::ContainerPort {
            container_port: 80,
            host_port: Some(8080),
            ..Default::default()
        }]);
    }
    assert_eq!(admit(&with_port, &node, &[]), Ok(()));
    assert_eq!(
        admit(&with_port, &node, &[&with_port]).unwrap_err().reason,
        "NodePorts"
    );

    // Only NoExecute taints matter to the kubelet; the NoSchedule one is the scheduler's.
    let intolerant = pod(serde_json::json!({"tolerations": []}));
    let rejected = admit(&intolerant, &node, &[]).unwrap_err();
    assert_eq!(rejected.reason, "TaintToleration");
    assert_eq!(
        rejected.message,
        "Predicate TaintToleration failed: node(s) had taints that the pod didn't tolerate"
    );
}
