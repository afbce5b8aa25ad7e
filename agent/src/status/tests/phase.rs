//! Pod phases per restart policy, init containers, termination and terminal-phase stickiness.

use k8s_openapi::api::core::v1::{Container as Spec, PodStatus};

use super::*;

fn phase(f: &Fixture) -> String {
    f.status().phase.unwrap()
}

fn backing_off(mut f: Fixture, name: &str) -> Fixture {
    f.backing_off.push(BackingOff {
        name: name.to_owned(),
        until: NOW + 10 * S,
    });
    f
}

#[test]
fn status_phase_per_restart_policy() {
    let two = |policy, a: Container, b: Container| {
        Fixture::new(pod(policy, &[], &["a", "b"])).with(vec![a, b])
    };
    let cases = [
        (
            "Always: running",
            "Always",
            running("a", "1", 0, 20),
            running("b", "2", 0, 20),
            "Running",
        ),
        (
            "Always: all exited 0",
            "Always",
            exited("a", "1", 0, 0, 20),
            exited("b", "2", 0, 0, 20),
            "Running",
        ),
        (
            "Always: all exited 1",
            "Always",
            exited("a", "1", 1, 0, 20),
            exited("b", "2", 1, 0, 20),
            "Running",
        ),
        (
            "OnFailure: all exited 0",
            "OnFailure",
            exited("a", "1", 0, 0, 20),
            exited("b", "2", 0, 0, 20),
            "Succeeded",
        ),
        (
            "OnFailure: one failed",
            "OnFailure",
            exited("a", "1", 0, 0, 20),
            exited("b", "2", 1, 0, 20),
            "Running",
        ),
        (
            "OnFailure: one running",
            "OnFailure",
            exited("a", "1", 0, 0, 20),
            running("b", "2", 0, 20),
            "Running",
        ),
        (
            "Never: all exited 0",
            "Never",
            exited("a", "1", 0, 0, 20),
            exited("b", "2", 0, 0, 20),
            "Succeeded",
        ),
        (
            "Never: one failed",
            "Never",
            exited("a", "1", 0, 0, 20),
            exited("b", "2", 1, 0, 20),
            "Failed",
        ),
        (
            "Never: one still running",
            "Never",
            exited("a", "1", 1, 0, 20),
            running("b", "2", 0, 20),
            "Running",
        ),
        (
            "created, not started",
            "Always",
            running("a", "1", 0, 20),
            instance("b", "2", RunState::Created, 0, 20),
            "Pending",
        ),
    ];
    for (name, policy, a, b, want) in cases {
        assert_eq!(phase(&two(policy, a, b)), want, "{name}");
    }
}

#[test]
fn status_phase_pending_and_waiting_cases() {
    let cases = [
        (
            "nothing yet",
            Fixture::new(pod("Always", &[], &["a"])),
            "Pending",
        ),
        (
            "image pull error next to a running container",
            Fixture::new(pod("Always", &[], &["a", "b"]))
                .with(vec![running("a", "1", 0, 20)])
                .wait("b", "ErrImagePull", "x"),
            "Pending",
        ),
        (
            "crash loop: stopped, restarting under Always",
            backing_off(
                Fixture::new(pod("Always", &[], &["a"])).with(vec![exited("a", "1", 1, 0, 20)]),
                "a",
            ),
            "Running",
        ),
        (
            "crash loop under OnFailure",
            backing_off(
                Fixture::new(pod("OnFailure", &[], &["a"])).with(vec![exited("a", "1", 1, 0, 20)]),
                "a",
            ),
            "Running",
        ),
    ];
    for (name, fixture, want) in cases {
        assert_eq!(phase(&fixture), want, "{name}");
    }
}

#[test]
fn status_phase_with_init_containers() {
    // An init container runs: Pending, and the app waits with PodInitializing.
    let f = Fixture::new(pod("Always", &["setup", "migrate"], &["app"]))
        .with(vec![running("setup", "i1", 0, 20)]);
    let status = f.status();
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    assert_eq!(
        waiting_of(app(&status, "app").state.as_ref()),
        Some(("PodInitializing".to_owned(), String::new()))
    );
    assert_eq!(
        waiting_of(init(&status, "migrate").state.as_ref()),
        Some(("PodInitializing".to_owned(), String::new()))
    );

    // An init container failed under Never: Failed.
    let f = Fixture::new(pod("Never", &["setup"], &["app"]))
        .with(vec![exited("setup", "i1", 1, 0, 20)]);
    assert_eq!(phase(&f), "Failed");

    // The same under OnFailure and Always: it backs off, the pod stays Pending.
    for policy in ["OnFailure", "Always"] {
        let f = backing_off(
            Fixture::new(pod(policy, &["setup"], &["app"]))
                .with(vec![exited("setup", "i1", 1, 0, 20)]),
            "setup",
        );
        let status = f.status();
        assert_eq!(status.phase.as_deref(), Some("Pending"), "{policy}");
        let setup = init(&status, "setup");
        assert_eq!(
            waiting_of(setup.state.as_ref()).map(|w| w.0),
            Some("CrashLoopBackOff".to_owned())
        );
        assert_eq!(
            terminated_of(setup.last_state.as_ref()),
            Some(("Error".to_owned(), 1))
        );
    }

    // Every init container succeeded and the app runs.
    let f = Fixture::new(pod("Always", &["setup"], &["app"])).with(vec![
        exited("setup", "i1", 0, 0, 20),
        running("app", "c1", 0, 30),
    ]);
    assert_eq!(phase(&f), "Running");

    // Init done, app not created yet: Pending with the app PodInitializing.
    let f = Fixture::new(pod("Always", &["setup"], &["app"]))
        .with(vec![exited("setup", "i1", 0, 0, 20)]);
    assert_eq!(phase(&f), "Pending");
}

#[test]
fn status_phase_with_a_sidecar() {
    let sidecar = Spec {
        restart_policy: Some("Always".to_owned()),
        ..spec("proxy")
    };
    let p = pod_with("Always", vec![sidecar], &["app"]);
    // The sidecar runs (started: no startup probe), the app not yet created: Pending.
    let f = Fixture::new(p.clone()).with(vec![running("proxy", "s1", 0, 20)]);
    assert_eq!(phase(&f), "Pending");
    let status = f.status();
    assert_eq!(init(&status, "proxy").started, Some(true));
    assert!(init(&status, "proxy").ready);
    // Both run: Running.
    let f = Fixture::new(p).with(vec![
        running("proxy", "s1", 0, 20),
        running("app", "c1", 0, 30),
    ]);
    assert_eq!(phase(&f), "Running");
}

#[test]
fn status_phase_when_terminating() {
    let stopped = |pod| {
        let mut f = Fixture::new(pod).with(vec![
            exited("a", "1", 0, 0, 20),
            exited("b", "2", 137, 0, 20),
        ]);
        f.terminating = true;
        f
    };
    // Torn down: terminal whatever the policy.
    assert_eq!(phase(&stopped(pod("Always", &[], &["a", "b"]))), "Failed");
    let mut all_ok = stopped(pod("Always", &[], &["a", "b"]));
    all_ok.runtime.containers[1].exit_code = 0;
    assert_eq!(phase(&all_ok), "Succeeded");
    // Static pods never get a terminal phase this way (upstream #116484).
    let mut p = pod("Always", &[], &["a", "b"]);
    make_static(&mut p);
    assert_eq!(phase(&stopped(p)), "Running");
    // While something still runs, the pod runs.
    let mut f = Fixture::new(pod("Always", &[], &["a"])).with(vec![running("a", "1", 0, 20)]);
    f.terminating = true;
    assert_eq!(phase(&f), "Running");
}

#[test]
fn status_terminal_phases_stick_and_reasons_carry_over() {
    // The previous status was terminal: a pod never leaves it.
    let mut f = Fixture::new(pod("Always", &[], &["a"])).with(vec![running("a", "1", 0, 20)]);
    f.previous = Some(PodStatus {
        phase: Some("Failed".to_owned()),
        reason: Some("Evicted".to_owned()),
        message: Some("out of memory".to_owned()),
        ..Default::default()
    });
    let status = f.status();
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    assert_eq!(status.reason.as_deref(), Some("Evicted"));
    assert_eq!(status.message.as_deref(), Some("out of memory"));

    // The source's status was terminal.
    let mut f = Fixture::new(pod("Always", &[], &["a"])).with(vec![running("a", "1", 0, 20)]);
    f.pod.status = Some(PodStatus {
        phase: Some("Succeeded".to_owned()),
        ..Default::default()
    });
    assert_eq!(phase(&f), "Succeeded");

    // Reason and message belong to a phase: dropped when the phase changes.
    let mut f = Fixture::new(pod("Always", &[], &["a"])).with(vec![running("a", "1", 0, 20)]);
    f.previous = Some(PodStatus {
        phase: Some("Pending".to_owned()),
        reason: Some("Something".to_owned()),
        ..Default::default()
    });
    assert_eq!(f.status().reason, None);
    f.previous.as_mut().unwrap().phase = Some("Running".to_owned());
    assert_eq!(f.status().reason.as_deref(), Some("Something"));
}
