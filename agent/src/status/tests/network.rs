//! Pod and host IPs, start time, quality-of-service class and the serialised shape.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{PodStatus, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::*;

fn ips(status: &PodStatus) -> (Option<String>, Vec<String>) {
    let list = status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.clone())
        .collect();
    (status.pod_ip.clone(), list)
}

fn addrs(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

#[test]
fn status_pod_ips_come_from_the_newest_ready_sandbox() {
    type Case = (
        &'static str,
        Pod,
        Vec<Sandbox>,
        Vec<&'static str>,
        Vec<&'static str>,
    );
    let host_network = |mut p: Pod| {
        p.spec.as_mut().unwrap().host_network = Some(true);
        p
    };
    let base = || pod("Always", &[], &["a"]);
    let cases: Vec<Case> = vec![
        (
            "newest sandbox's IP",
            base(),
            vec![
                sandbox("s0", 0, false, Some("10.0.0.4")),
                sandbox("s1", 1, true, Some("10.0.0.5")),
            ],
            vec!["192.0.2.10"],
            vec!["10.0.0.5"],
        ),
        (
            "newest sandbox not ready: no IP",
            base(),
            vec![
                sandbox("s0", 0, true, Some("10.0.0.4")),
                sandbox("s1", 1, false, Some("10.0.0.5")),
            ],
            vec!["192.0.2.10"],
            vec![],
        ),
        ("no sandbox", base(), vec![], vec!["192.0.2.10"], vec![]),
        (
            "IPv6 pod on an IPv4 node",
            base(),
            vec![sandbox("s0", 0, true, Some("fd00::5"))],
            vec!["192.0.2.10"],
            vec!["fd00::5"],
        ),
        (
            "irregular IPv4 form is re-printed",
            base(),
            vec![sandbox("s0", 0, true, Some("010.000.000.005"))],
            vec!["192.0.2.10"],
            vec!["10.0.0.5"],
        ),
        (
            "host network: the node's IP",
            host_network(base()),
            vec![sandbox("s0", 0, true, None)],
            vec!["192.0.2.10"],
            vec!["192.0.2.10"],
        ),
        (
            "host network, dual-stack node",
            host_network(base()),
            vec![sandbox("s0", 0, true, None)],
            vec!["192.0.2.10", "2001:db8::10"],
            vec!["192.0.2.10", "2001:db8::10"],
        ),
        (
            "host network before any sandbox",
            host_network(base()),
            vec![],
            vec!["2001:db8::10"],
            vec!["2001:db8::10"],
        ),
    ];
    for (name, pod, sandboxes, host, want) in cases {
        let mut f = Fixture::new(pod);
        f.runtime.sandboxes = sandboxes;
        f.host_ips = addrs(&host);
        let status = f.status();
        let want: Vec<String> = want.iter().map(ToString::to_string).collect();
        assert_eq!(ips(&status), (want.first().cloned(), want), "{name}");
    }
}

#[test]
fn status_host_ips() {
    let mut f = Fixture::new(pod("Always", &[], &["a"]));
    f.host_ips = addrs(&["192.0.2.10", "2001:db8::10"]);
    let status = f.status();
    assert_eq!(status.host_ip.as_deref(), Some("192.0.2.10"));
    let hosts: Vec<&str> = status
        .host_ips
        .iter()
        .flatten()
        .map(|h| h.ip.as_str())
        .collect();
    assert_eq!(hosts, ["192.0.2.10", "2001:db8::10"]);
    f.host_ips.clear();
    let status = f.status();
    assert_eq!(status.host_ip, None);
    assert_eq!(status.host_ips, None);
}

#[test]
fn status_start_time() {
    let mut f = Fixture::new(pod("Always", &[], &["a"]));
    assert_eq!(f.status().start_time, Some(time_from_nanos(100 * S)));
    f.start_time = None;
    assert_eq!(f.status().start_time, Some(time_from_nanos(NOW)));
    f.previous = Some(PodStatus {
        start_time: Some(time_from_nanos(50 * S)),
        ..Default::default()
    });
    assert_eq!(f.status().start_time, Some(time_from_nanos(50 * S)));
}

#[test]
fn status_qos_class_is_reported() {
    let mut p = pod("Always", &[], &["a"]);
    p.spec.as_mut().unwrap().containers[0].resources = Some(ResourceRequirements {
        requests: Some([("cpu".to_owned(), Quantity("1".to_owned()))].into()),
        limits: Some(
            [
                ("cpu".to_owned(), Quantity("1".to_owned())),
                ("memory".to_owned(), Quantity("64Mi".to_owned())),
            ]
            .into(),
        ),
        ..Default::default()
    });
    let status = Fixture::new(p)
        .with(vec![running("a", "1", 0, 20)])
        .status();
    // Requests lack memory (the API would default it from the limit): Burstable.
    assert_eq!(status.qos_class.as_deref(), Some("Burstable"));
    // The status of a container instance reports the allocated resources.
    let a = app(&status, "a");
    assert_eq!(
        a.allocated_resources,
        Some([("cpu".to_owned(), Quantity("1".to_owned()))].into())
    );
    let best_effort = Fixture::new(pod("Always", &[], &["a"]))
        .with(vec![running("a", "1", 0, 20)])
        .status();
    assert_eq!(best_effort.qos_class.as_deref(), Some("BestEffort"));
    let json = serde_json::to_value(app(&best_effort, "a")).unwrap();
    assert_eq!(json["resources"], serde_json::json!({}));
    assert!(json.get("allocatedResources").is_none());
    // Before any instance exists upstream reports no resources.
    let waiting = Fixture::new(pod("Always", &[], &["a"])).status();
    assert_eq!(app(&waiting, "a").resources, None);
}

#[test]
fn status_serialises_like_upstream() {
    let status = Fixture::new(pod("Always", &["setup"], &["app"]))
        .with(vec![
            exited("setup", "i1", 0, 0, 20),
            running("app", "c1", 0, 30),
        ])
        .status();
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["phase"], "Running");
    assert_eq!(json["qosClass"], "BestEffort");
    assert_eq!(json["podIP"], "10.0.0.5");
    assert_eq!(json["podIPs"], serde_json::json!([{"ip": "10.0.0.5"}]));
    assert_eq!(json["hostIP"], "192.0.2.10");
    assert_eq!(json["startTime"], "1970-01-01T00:01:40Z");
    let app = &json["containerStatuses"][0];
    assert_eq!(app["name"], "app");
    assert_eq!(app["ready"], true);
    assert_eq!(app["started"], true);
    assert_eq!(app["restartCount"], 0);
    assert_eq!(app["containerID"], "containerd://c1");
    assert_eq!(app["imageID"], "sha256:app");
    assert_eq!(app["lastState"], serde_json::json!({}));
    assert_eq!(
        app["state"],
        serde_json::json!({"running": {"startedAt": "1970-01-01T00:00:31Z"}})
    );
    let setup = &json["initContainerStatuses"][0];
    assert_eq!(setup["ready"], true);
    assert_eq!(setup["started"], false);
    assert_eq!(setup["state"]["terminated"]["reason"], "Completed");
    assert_eq!(setup["state"]["terminated"]["exitCode"], 0);
}
