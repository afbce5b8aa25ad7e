//! Properties of every parser a request reaches: query and path decoding, the log route's path
//! and status rules, the authorizer's path rules. Arbitrary input never panics, and encoded
//! text decodes back.

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, Pod, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use proptest::prelude::*;

use super::authz::subresources;
use super::logs::{container_id, find_pod, has_container, path_segments};
use super::query::{path_decode, query_pairs, url_decode};
use super::stream::{Kind, forwarded_ports, refused_by_runtime, stream_options};

/// Percent-encodes every byte but unreserved ones (what a client sends).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

proptest! {
    #[test]
    fn decoding_never_panics(text in ".{0,64}", raw in proptest::collection::vec(any::<u8>(), 0..64)) {
        let lossy = String::from_utf8_lossy(&raw).into_owned();
        for input in [&text, &lossy] {
            let _ = url_decode(input);
            let _ = path_decode(input);
            let _ = query_pairs(Some(input)).count();
            let _ = path_segments::<3>(input);
            let _ = subresources(input);
        }
    }

    #[test]
    fn encoded_text_decodes_back(key in "[a-zA-Z]{1,8}", value in ".{0,32}") {
        let query = format!("{}={}&other=1", encode(&key), encode(&value));
        let pairs: Vec<_> = query_pairs(Some(&query)).collect();
        prop_assert_eq!(&pairs[0], &(key.clone(), value.clone()));
        prop_assert_eq!(path_decode(&encode(&value)), value);
    }

    #[test]
    fn three_segments_or_none(a in "[a-z0-9-]{1,12}", b in "[a-z0-9.-]{1,12}", c in "[a-z0-9-]{1,12}") {
        let path = format!("{a}/{b}/{c}");
        prop_assert_eq!(path_segments::<3>(&path), Some([a.clone(), b.clone(), c.clone()]));
        prop_assert_eq!(path_segments::<3>(&format!("{path}/extra")), None);
        prop_assert_eq!(path_segments::<3>(&format!("{a}//{c}")), None);
    }
}

#[test]
fn plus_is_a_space_in_queries_only() {
    assert_eq!(url_decode("a+b%2Bc"), "a b+c");
    assert_eq!(path_decode("a+b%2Bc"), "a+b+c");
    assert_eq!(url_decode("%zz%4"), "%zz%4");
    let pairs: Vec<_> = query_pairs(Some("follow&tailLines=3&&x=")).collect();
    assert_eq!(
        pairs,
        [
            ("follow".to_owned(), String::new()),
            ("tailLines".to_owned(), "3".to_owned()),
            ("x".to_owned(), String::new())
        ]
    );
}

fn status(name: &str, state: ContainerState, last: Option<ContainerState>) -> ContainerStatus {
    ContainerStatus {
        name: name.to_owned(),
        container_id: Some(format!("containerd://{name}-now")),
        state: Some(state),
        last_state: last,
        ..Default::default()
    }
}

fn terminated(id: Option<&str>) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            container_id: id.map(str::to_owned),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn waiting(reason: &str) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_owned()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pod(statuses: Vec<ContainerStatus>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("p".to_owned()),
            namespace: Some("ns".to_owned()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: statuses
                .iter()
                .map(|s| Container {
                    name: s.name.clone(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        status: Some(PodStatus {
            container_statuses: Some(statuses),
            ..Default::default()
        }),
    }
}

#[test]
fn the_log_instance_is_chosen_as_upstream_does() {
    let running = ContainerState {
        running: Some(ContainerStateRunning::default()),
        ..Default::default()
    };
    let p = pod(vec![
        status(
            "run",
            running.clone(),
            Some(terminated(Some("containerd://run-old"))),
        ),
        status("fresh", running, None),
        status("done", terminated(Some("containerd://done-now")), None),
        status(
            "crashing",
            waiting("CrashLoopBackOff"),
            Some(terminated(Some("containerd://crashing-old"))),
        ),
        status("pulling", waiting("ErrImagePull"), None),
        status("unborn", ContainerState::default(), None),
    ]);
    let id = |c: &str, previous: bool| container_id(&p, "p", c, previous);
    assert_eq!(id("run", false).unwrap(), "run-now");
    assert_eq!(id("run", true).unwrap(), "run-old");
    assert_eq!(
        id("fresh", true).unwrap_err(),
        r#"previous terminated container "fresh" in pod "p" not found"#
    );
    assert_eq!(id("done", false).unwrap(), "done-now");
    assert_eq!(id("crashing", false).unwrap(), "crashing-old");
    assert_eq!(
        id("pulling", false).unwrap_err(),
        r#"container "pulling" in pod "p" is waiting to start: image can't be pulled"#
    );
    assert!(id("unborn", false).unwrap_err().ends_with("no logs yet"));
    assert!(has_container(&p, "run") && !has_container(&p, "nope"));
    assert!(find_pod(std::slice::from_ref(&p), "ns", "p").is_some());
    assert!(find_pod(&[p], "other", "p").is_none());
}

proptest! {
    #[test]
    fn stream_parameters_never_panic(query in ".{0,80}") {
        for kind in [Kind::Exec, Kind::Attach, Kind::PortForward] {
            let _ = stream_options(Some(&query), kind);
        }
        let _ = forwarded_ports(Some(&query), true);
    }
}

#[test]
fn stream_options_are_upstream_s() {
    let exec = |q: &str| stream_options(Some(q), Kind::Exec);
    let options = exec("command=ls&command=-l&input=1&output=1&error=1").unwrap();
    assert_eq!(options.command, ["ls", "-l"]);
    assert!(options.stdin && options.stdout && options.stderr && !options.tty);
    // A tty merges stderr into stdout; only `1` turns a stream on.
    let options = exec("command=sh&output=1&error=1&tty=1").unwrap();
    assert!(options.tty && options.stdout && !options.stderr);
    assert_eq!(
        exec("command=sh&output=true").unwrap_err(),
        "you must specify at least 1 of stdin, stdout, stderr"
    );
    assert!(
        exec("output=1")
            .unwrap_err()
            .contains("at least one command")
    );
    assert!(stream_options(Some("output=1"), Kind::Attach).is_ok());
}

#[test]
fn forwarded_ports_are_upstream_s() {
    assert_eq!(
        forwarded_ports(Some("port=80,443&port=8080"), true).unwrap(),
        [80, 443, 8080]
    );
    assert_eq!(forwarded_ports(None, false).unwrap(), Vec::<i32>::new());
    assert!(
        forwarded_ports(None, true)
            .unwrap_err()
            .contains("is required")
    );
    assert!(
        forwarded_ports(Some("port="), true)
            .unwrap_err()
            .contains("cannot be empty")
    );
    assert!(
        forwarded_ports(Some("port=0"), true)
            .unwrap_err()
            .contains("must be > 0")
    );
    assert!(
        forwarded_ports(Some("port=70000"), true)
            .unwrap_err()
            .contains("unable to parse")
    );
}

#[test]
fn runtime_refusals_map_to_upstream_s_statuses() {
    let refusal = |code: tonic::Code| {
        refused_by_runtime(&crate::cri::CriError::Call {
            method: "Exec",
            status: tonic::Status::new(code, "no"),
        })
    };
    assert_eq!(refusal(tonic::Code::NotFound).status(), 404);
    let busy = refusal(tonic::Code::ResourceExhausted);
    assert_eq!(busy.status(), 429);
    assert_eq!(busy.headers()["retry-after"], "60");
    assert_eq!(refusal(tonic::Code::Internal).status(), 500);
    let timeout = crate::cri::CriError::Timeout {
        method: "Exec",
        after: std::time::Duration::from_secs(1),
    };
    assert_eq!(refused_by_runtime(&timeout).status(), 500);
}
