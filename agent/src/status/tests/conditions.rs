//! Pod conditions: values, reasons, messages, order and transition-time stability.

use k8s_openapi::api::core::v1::{PodReadinessGate, PodStatus, Probe};

use super::*;

/// `(status, reason, message)` of a condition.
fn triple(status: &PodStatus, type_: &str) -> (String, String, String) {
    let c = condition(status, type_);
    (
        c.status.clone(),
        c.reason.clone().unwrap_or_default(),
        c.message.clone().unwrap_or_default(),
    )
}

fn t(status: &str, reason: &str, message: &str) -> (String, String, String) {
    (status.to_owned(), reason.to_owned(), message.to_owned())
}

fn not_ready_probe(f: &mut Fixture, name: &str) {
    let spec = f.pod.spec.as_mut().unwrap();
    let c = spec.containers.iter_mut().find(|c| c.name == name).unwrap();
    c.readiness_probe = Some(Probe::default());
}

#[test]
fn status_conditions_when_everything_runs() {
    let status = Fixture::new(pod("Always", &[], &["a", "b"]))
        .with(vec![running("a", "1", 0, 20), running("b", "2", 0, 20)])
        .status();
    let types: Vec<&str> = status
        .conditions
        .as_deref()
        .unwrap()
        .iter()
        .map(|c| c.type_.as_str())
        .collect();
    assert_eq!(
        types,
        [
            "PodReadyToStartContainers",
            "Initialized",
            "Ready",
            "ContainersReady",
            "PodScheduled"
        ]
    );
    for c in status.conditions.as_deref().unwrap() {
        assert_eq!(c.status, "True", "{}", c.type_);
        assert_eq!(c.reason, None, "{}", c.type_);
        assert_eq!(c.last_probe_time, None);
        assert_eq!(c.last_transition_time, Some(time_from_nanos(NOW)));
        assert_eq!(c.observed_generation, None);
    }
}

#[test]
fn status_condition_reasons_and_messages() {
    let mut unready = Fixture::new(pod("Always", &[], &["b", "a", "c"])).with(vec![
        running("a", "1", 0, 20),
        running("b", "2", 0, 20),
        running("c", "3", 0, 20),
    ]);
    not_ready_probe(&mut unready, "b");
    not_ready_probe(&mut unready, "a");
    let unready = unready.status();
    let msg = "containers with unready status: [b a]";
    assert_eq!(
        triple(&unready, "ContainersReady"),
        t("False", "ContainersNotReady", msg)
    );
    assert_eq!(
        triple(&unready, "Ready"),
        t("False", "ContainersNotReady", msg)
    );
    assert_eq!(triple(&unready, "Initialized"), t("True", "", ""));

    let initializing = Fixture::new(pod("Always", &["one", "two"], &["app"]))
        .with(vec![running("one", "i1", 0, 20)])
        .status();
    assert_eq!(
        triple(&initializing, "Initialized"),
        t(
            "False",
            "ContainersNotInitialized",
            "containers with incomplete status: [one two]"
        )
    );
    assert_eq!(
        triple(&initializing, "Ready"),
        t(
            "False",
            "ContainersNotReady",
            "containers with unready status: [app]"
        )
    );

    let succeeded = Fixture::new(pod("Never", &["setup"], &["a"]))
        .with(vec![
            exited("setup", "i1", 0, 0, 10),
            exited("a", "1", 0, 0, 20),
        ])
        .status();
    assert_eq!(succeeded.phase.as_deref(), Some("Succeeded"));
    assert_eq!(
        triple(&succeeded, "Initialized"),
        t("True", "PodCompleted", "")
    );
    assert_eq!(
        triple(&succeeded, "ContainersReady"),
        t("False", "PodCompleted", "")
    );
    assert_eq!(triple(&succeeded, "Ready"), t("False", "PodCompleted", ""));

    let failed = Fixture::new(pod("Never", &[], &["a"]))
        .with(vec![exited("a", "1", 1, 0, 20)])
        .status();
    assert_eq!(failed.phase.as_deref(), Some("Failed"));
    assert_eq!(
        triple(&failed, "ContainersReady"),
        t("False", "PodFailed", "")
    );
    assert_eq!(triple(&failed, "Ready"), t("False", "PodFailed", ""));
    assert_eq!(triple(&failed, "Initialized"), t("True", "", ""));
    assert_eq!(triple(&failed, "PodScheduled"), t("True", "", ""));
}

#[test]
fn status_pod_ready_to_start_containers_follows_the_sandbox() {
    let host_network = |mut p: Pod| {
        p.spec.as_mut().unwrap().host_network = Some(true);
        p
    };
    let cases = [
        ("no sandbox", pod("Always", &[], &["a"]), vec![], "False"),
        (
            "ready sandbox with an IP",
            pod("Always", &[], &["a"]),
            vec![sandbox("s0", 0, true, Some("10.0.0.5"))],
            "True",
        ),
        (
            "newest sandbox not ready",
            pod("Always", &[], &["a"]),
            vec![
                sandbox("s0", 0, true, Some("10.0.0.5")),
                sandbox("s1", 1, false, None),
            ],
            "False",
        ),
        (
            "two ready sandboxes",
            pod("Always", &[], &["a"]),
            vec![
                sandbox("s0", 0, true, Some("10.0.0.5")),
                sandbox("s1", 1, true, Some("10.0.0.6")),
            ],
            "False",
        ),
        (
            "ready sandbox without an IP",
            pod("Always", &[], &["a"]),
            vec![sandbox("s0", 0, true, None)],
            "False",
        ),
        (
            "host network needs no IP",
            host_network(pod("Always", &[], &["a"])),
            vec![sandbox("s0", 0, true, None)],
            "True",
        ),
    ];
    for (name, pod, sandboxes, want) in cases {
        let mut f = Fixture::new(pod);
        f.runtime.sandboxes = sandboxes;
        let status = f.status();
        assert_eq!(
            condition(&status, "PodReadyToStartContainers").status,
            want,
            "{name}"
        );
    }
}

#[test]
fn status_readiness_gates() {
    let gated = |conditions: Vec<PodCondition>| {
        let mut p = pod("Always", &[], &["a"]);
        p.spec.as_mut().unwrap().readiness_gates = Some(vec![PodReadinessGate {
            condition_type: "example.com/lb".to_owned(),
        }]);
        p.status = Some(PodStatus {
            conditions: Some(conditions),
            ..Default::default()
        });
        Fixture::new(p)
            .with(vec![running("a", "1", 0, 20)])
            .status()
    };
    let gate = |status: &str| PodCondition {
        type_: "example.com/lb".to_owned(),
        status: status.to_owned(),
        ..Default::default()
    };
    assert_eq!(
        triple(&gated(vec![]), "Ready"),
        t(
            "False",
            "ReadinessGatesNotReady",
            "corresponding condition of pod readiness gate \"example.com/lb\" does not exist."
        )
    );
    assert_eq!(
        triple(&gated(vec![gate("False")]), "Ready"),
        t(
            "False",
            "ReadinessGatesNotReady",
            "the status of pod readiness gate \"example.com/lb\" is not \"True\", but False"
        )
    );
    let ready = gated(vec![gate("True")]);
    assert_eq!(triple(&ready, "Ready"), t("True", "", ""));
    assert_eq!(triple(&ready, "ContainersReady"), t("True", "", ""));
    // The gate's condition is kept, first, as the source had it.
    assert_eq!(ready.conditions.as_deref().unwrap()[0], gate("True"));
}

#[test]
fn status_kubelet_owned_conditions_from_the_source_are_replaced() {
    let mut p = pod("Always", &[], &["a"]);
    p.status = Some(PodStatus {
        conditions: Some(vec![
            PodCondition {
                type_: "Ready".to_owned(),
                status: "True".to_owned(),
                ..Default::default()
            },
            PodCondition {
                type_: "PodResizePending".to_owned(),
                status: "True".to_owned(),
                ..Default::default()
            },
        ]),
        ..Default::default()
    });
    let status = Fixture::new(p).status();
    let conditions = status.conditions.as_deref().unwrap();
    assert_eq!(conditions.len(), 5);
    assert_eq!(condition(&status, "Ready").status, "False");
    assert!(conditions.iter().all(|c| c.type_ != "PodResizePending"));
}

#[test]
fn status_transition_times_change_only_with_the_status() {
    let mut f = Fixture::new(pod("Always", &[], &["a"])).with(vec![running("a", "1", 0, 20)]);
    f.now = 500 * S;
    let first = f.status();
    // Later, nothing changed: every time stays.
    f.now = 600 * S;
    f.previous = Some(first.clone());
    let second = f.status();
    assert_eq!(second.conditions, first.conditions);
    // The container becomes unready: Ready and ContainersReady move, the rest stay.
    f.now = 700 * S;
    f.previous = Some(second);
    not_ready_probe(&mut f, "a");
    let third = f.status();
    for (type_, at) in [
        ("Ready", 700),
        ("ContainersReady", 700),
        ("Initialized", 500),
        ("PodScheduled", 500),
        ("PodReadyToStartContainers", 500),
    ] {
        assert_eq!(
            condition(&third, type_).last_transition_time,
            Some(time_from_nanos(at * S)),
            "{type_}"
        );
    }
    // Sub-second times are truncated like upstream's normalisation.
    f.previous = None;
    f.now = 800 * S + 999_999_999;
    assert_eq!(
        condition(&f.status(), "Ready").last_transition_time,
        Some(time_from_nanos(800 * S))
    );
}

#[test]
fn status_observed_generation_when_the_pod_has_one() {
    let mut f = Fixture::new(pod("Always", &[], &["a"])).with(vec![running("a", "1", 0, 20)]);
    f.pod.metadata.generation = Some(3);
    let status = f.status();
    assert_eq!(status.observed_generation, Some(3));
    assert!(
        status
            .conditions
            .as_deref()
            .unwrap()
            .iter()
            .all(|c| c.observed_generation == Some(3))
    );
    // Never lower than what was reported before.
    f.previous = Some(PodStatus {
        observed_generation: Some(5),
        ..status
    });
    assert_eq!(f.status().observed_generation, Some(5));
}
