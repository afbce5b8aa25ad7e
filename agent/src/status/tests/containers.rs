//! Container statuses: waiting reasons, terminated states, last states, restart counts,
//! readiness, ordering.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStatus, PodStatus, Probe, VolumeMount,
};

use super::*;

fn waiting_reason(f: &Fixture, name: &str) -> Option<(String, String)> {
    waiting_of(app(&f.status(), name).state.as_ref())
}

#[test]
fn status_waiting_reasons_follow_the_worker_and_the_defaults() {
    type Case = (&'static str, Fixture, Option<(&'static str, &'static str)>);
    let pull = "Back-off pulling image \"registry.local/app:1\"";
    let cases: Vec<Case> = vec![
        (
            "nothing created yet",
            Fixture::new(pod("Always", &[], &["app"])),
            Some(("ContainerCreating", "")),
        ),
        (
            "pod with init containers",
            Fixture::new(pod("Always", &["setup"], &["app"])),
            Some(("PodInitializing", "")),
        ),
        (
            "ErrImagePull",
            Fixture::new(pod("Always", &[], &["app"])).wait("app", "ErrImagePull", "not found"),
            Some(("ErrImagePull", "not found")),
        ),
        (
            "ImagePullBackOff",
            Fixture::new(pod("Always", &[], &["app"])).wait("app", "ImagePullBackOff", pull),
            Some(("ImagePullBackOff", pull)),
        ),
        (
            "ErrImageNeverPull",
            Fixture::new(pod("Always", &[], &["app"])).wait("app", "ErrImageNeverPull", "absent"),
            Some(("ErrImageNeverPull", "absent")),
        ),
        (
            "CreateContainerConfigError",
            Fixture::new(pod("Always", &[], &["app"])).wait(
                "app",
                "CreateContainerConfigError",
                "secret \"x\" not found",
            ),
            Some(("CreateContainerConfigError", "secret \"x\" not found")),
        ),
        (
            "CreateContainerError",
            Fixture::new(pod("Always", &[], &["app"])).wait("app", "CreateContainerError", "boom"),
            Some(("CreateContainerError", "boom")),
        ),
        (
            "RunContainerError on a created instance",
            Fixture::new(pod("Always", &[], &["app"]))
                .with(vec![instance("app", "c1", RunState::Created, 0, 20)])
                .wait("app", "RunContainerError", "exec failed"),
            Some(("RunContainerError", "exec failed")),
        ),
        (
            "created instance without a reason",
            Fixture::new(pod("Always", &[], &["app"])).with(vec![instance(
                "app",
                "c1",
                RunState::Created,
                0,
                20,
            )]),
            Some(("", "")),
        ),
        (
            "a running container ignores a stale reason",
            Fixture::new(pod("Always", &[], &["app"]))
                .with(vec![running("app", "c1", 0, 20)])
                .wait("app", "ErrImagePull", "old"),
            None,
        ),
        (
            "Never: an exited container is not restarted, so no reason",
            Fixture::new(pod("Never", &[], &["app"]))
                .with(vec![exited("app", "c1", 1, 0, 20)])
                .wait("app", "ErrImagePull", "old"),
            None,
        ),
        (
            "OnFailure: a success is not restarted",
            Fixture::new(pod("OnFailure", &[], &["app"]))
                .with(vec![exited("app", "c1", 0, 0, 20)])
                .wait("app", "CreateContainerError", "old"),
            None,
        ),
    ];
    for (name, fixture, want) in cases {
        let want = want.map(|(r, m)| (r.to_owned(), m.to_owned()));
        assert_eq!(waiting_reason(&fixture, "app"), want, "{name}");
    }
}

#[test]
fn status_crash_loop_back_off_message_and_last_state() {
    for (delay, text) in [(10, "10s"), (40, "40s"), (80, "1m20s"), (300, "5m0s")] {
        let mut f = Fixture::new(pod("Always", &[], &["app"]))
            .with(vec![exited("app", "c1", 2, 3, 20)])
            // A stale image error loses against the back-off.
            .wait("app", "ErrImagePull", "old");
        f.backing_off = vec![BackingOff {
            name: "app".to_owned(),
            until: 25 * S + delay * S,
        }];
        let status = f.status();
        let app = app(&status, "app");
        let message =
            format!("back-off {text} restarting failed container=app pod=web_default(uid-1)");
        assert_eq!(
            waiting_of(app.state.as_ref()),
            Some(("CrashLoopBackOff".to_owned(), message))
        );
        assert_eq!(
            terminated_of(app.last_state.as_ref()),
            Some(("Error".to_owned(), 2))
        );
        assert_eq!(app.restart_count, 3);
        assert!(!app.ready);
        assert_eq!(app.started, Some(false));
    }
}

#[test]
fn status_a_deleted_pod_shows_no_restart_reasons() {
    let mut f = Fixture::new(pod("Always", &[], &["app"]))
        .with(vec![exited("app", "c1", 1, 0, 20)])
        .wait("app", "ErrImagePull", "x");
    f.pod.metadata.deletion_timestamp = Some(time_from_nanos(NOW));
    let status = f.status();
    assert_eq!(
        terminated_of(app(&status, "app").state.as_ref()),
        Some(("Error".to_owned(), 1))
    );
}

#[test]
fn status_terminated_states_carry_the_runtime_facts() {
    let oom = {
        let mut c = exited("app", "abc", 137, 0, 20);
        c.reason = "OOMKilled".to_owned();
        c
    };
    let unreported = |code| {
        let mut c = exited("app", "abc", code, 0, 20);
        c.reason = String::new();
        c
    };
    let with_message = {
        let mut c = exited("app", "abc", 1, 0, 20);
        c.message = "panic: oops".to_owned();
        c
    };
    let cases = [
        ("exit 0", exited("app", "abc", 0, 0, 20), "Completed", 0, ""),
        ("exit 1", exited("app", "abc", 1, 0, 20), "Error", 1, ""),
        ("OOMKilled as reported", oom, "OOMKilled", 137, ""),
        (
            "no runtime reason, exit 0",
            unreported(0),
            "Completed",
            0,
            "",
        ),
        ("no runtime reason, exit 3", unreported(3), "Error", 3, ""),
        ("message", with_message, "Error", 1, "panic: oops"),
    ];
    for (name, container, reason, code, message) in cases {
        let status = Fixture::new(pod("Never", &[], &["app"]))
            .with(vec![container])
            .status();
        let app = app(&status, "app");
        let t = app.state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(t.reason.as_deref(), Some(reason), "{name}");
        assert_eq!(t.exit_code, code, "{name}");
        assert_eq!(t.message.as_deref().unwrap_or_default(), message, "{name}");
        assert_eq!(
            t.container_id.as_deref(),
            Some("containerd://abc"),
            "{name}"
        );
        assert_eq!(t.started_at, Some(time_from_nanos(21 * S)), "{name}");
        assert_eq!(t.finished_at, Some(time_from_nanos(25 * S)), "{name}");
        assert_eq!(app.container_id.as_deref(), Some("containerd://abc"));
        assert_eq!(app.image, "registry.local/app:1");
        assert_eq!(app.image_id, "sha256:app");
        assert!(!app.ready, "{name}");
        assert_eq!(app.started, Some(false), "{name}");
    }
}

#[test]
fn status_last_state_comes_from_the_previous_instance() {
    let status = Fixture::new(pod("Always", &[], &["app"]))
        .with(vec![
            exited("app", "c0", 1, 0, 20),
            exited("app", "c1", 137, 1, 40),
            running("app", "c2", 2, 60),
        ])
        .status();
    let current = app(&status, "app");
    assert_eq!(current.restart_count, 2);
    assert_eq!(current.container_id.as_deref(), Some("containerd://c2"));
    assert_eq!(
        current.state.as_ref().unwrap().running,
        Some(ContainerStateRunning {
            started_at: Some(time_from_nanos(61 * S))
        })
    );
    let last = current
        .last_state
        .as_ref()
        .unwrap()
        .terminated
        .as_ref()
        .unwrap();
    assert_eq!(last.container_id.as_deref(), Some("containerd://c1"));
    assert_eq!(last.exit_code, 137);
    // A first instance has an empty last state, serialised as `{}` like upstream.
    let fresh = Fixture::new(pod("Always", &[], &["app"]))
        .with(vec![running("app", "c0", 0, 20)])
        .status();
    let fresh = app(&fresh, "app");
    assert_eq!(fresh.last_state, Some(ContainerState::default()));
    let json = serde_json::to_value(fresh).unwrap();
    assert_eq!(json["lastState"], serde_json::json!({}));
}

fn previous_running(name: &str, restarts: i32) -> PodStatus {
    PodStatus {
        phase: Some("Running".to_owned()),
        container_statuses: Some(vec![ContainerStatus {
            name: name.to_owned(),
            restart_count: restarts,
            started: Some(true),
            ready: true,
            state: Some(ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(time_from_nanos(21 * S)),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

#[test]
fn status_restart_counts() {
    // From the runtime label.
    let status = Fixture::new(pod("Always", &[], &["app"]))
        .with(vec![running("app", "c5", 5, 20)])
        .status();
    assert_eq!(app(&status, "app").restart_count, 5);

    // A container that was running and vanished: unknown last state, one more restart.
    let mut f = Fixture::new(pod("Always", &[], &["app"]));
    f.previous = Some(previous_running("app", 2));
    let status = f.status();
    let lost = app(&status, "app");
    assert_eq!(lost.restart_count, 3);
    assert_eq!(
        terminated_of(lost.last_state.as_ref()),
        Some(("ContainerStatusUnknown".to_owned(), 137))
    );
    assert_eq!(
        waiting_of(lost.state.as_ref()),
        Some(("ContainerCreating".to_owned(), String::new()))
    );

    // The same for a deleted pod: no extra restart.
    f.pod.metadata.deletion_timestamp = Some(time_from_nanos(NOW));
    assert_eq!(app(&f.status(), "app").restart_count, 2);

    // An instance in an unknown state that used to run.
    let mut f = Fixture::new(pod("Always", &[], &["app"])).with(vec![instance(
        "app",
        "c1",
        RunState::Unknown,
        1,
        20,
    )]);
    f.previous = Some(previous_running("app", 1));
    let status = f.status();
    let unknown = app(&status, "app");
    assert_eq!(unknown.restart_count, 2);
    assert_eq!(
        terminated_of(unknown.state.as_ref()),
        Some(("ContainerStatusUnknown".to_owned(), 137))
    );
}

#[test]
fn status_started_and_ready_follow_probes() {
    let probe = || Some(Probe::default());
    let with_probes = |readiness: bool, startup: bool, results: Option<ProbeResults>| {
        let mut p = pod("Always", &[], &["app"]);
        let c = &mut p.spec.as_mut().unwrap().containers[0];
        c.readiness_probe = if readiness { probe() } else { None };
        c.startup_probe = if startup { probe() } else { None };
        let mut f = Fixture::new(p).with(vec![running("app", "c1", 0, 20)]);
        f.probes = results
            .map(|r| HashMap::from([("c1".to_owned(), r)]))
            .unwrap_or_default();
        let status = f.status();
        let app = app(&status, "app");
        (app.started, app.ready)
    };
    let ok = |startup, readiness| {
        Some(ProbeResults {
            startup,
            readiness,
            kill: None,
        })
    };
    let cases = [
        ("no probes", (false, false, None), (Some(true), true)),
        (
            "readiness not yet run",
            (true, false, None),
            (Some(true), false),
        ),
        (
            "readiness succeeded",
            (true, false, ok(None, Some(true))),
            (Some(true), true),
        ),
        (
            "readiness failed",
            (true, false, ok(None, Some(false))),
            (Some(true), false),
        ),
        (
            "startup not yet run",
            (false, true, None),
            (Some(false), false),
        ),
        (
            "startup failed",
            (false, true, ok(Some(false), None)),
            (Some(false), false),
        ),
        (
            "startup succeeded",
            (false, true, ok(Some(true), None)),
            (Some(true), true),
        ),
    ];
    for (name, (readiness, startup, results), want) in cases {
        assert_eq!(with_probes(readiness, startup, results), want, "{name}");
    }
}

#[test]
fn status_init_containers_ready_when_done_and_in_spec_order() {
    let status = Fixture::new(pod("Always", &["zeta", "alpha"], &["web", "api"]))
        .with(vec![
            exited("zeta", "i1", 0, 0, 20),
            exited("alpha", "i2", 0, 0, 30),
            running("web", "c1", 0, 40),
            running("api", "c2", 0, 41),
        ])
        .status();
    let init_names: Vec<&str> = status
        .init_container_statuses
        .as_deref()
        .unwrap()
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(init_names, ["zeta", "alpha"]);
    let app_names: Vec<&str> = status
        .container_statuses
        .as_deref()
        .unwrap()
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(app_names, ["api", "web"]);
    let zeta = init(&status, "zeta");
    assert!(zeta.ready);
    assert_eq!(zeta.started, Some(false));
    assert_eq!(
        terminated_of(zeta.state.as_ref()),
        Some(("Completed".to_owned(), 0))
    );
}

#[test]
fn status_missing_completed_init_container_is_inferred_once_apps_exist() {
    let status = Fixture::new(pod("Always", &["setup"], &["app"]))
        .with(vec![running("app", "c1", 0, 40)])
        .status();
    let setup = init(&status, "setup");
    assert_eq!(
        terminated_of(setup.state.as_ref()),
        Some(("Completed".to_owned(), 0))
    );
    assert!(setup.ready);
}

#[test]
fn status_spec_fields_before_the_first_instance() {
    let mut p = pod("Always", &[], &["app"]);
    let c = &mut p.spec.as_mut().unwrap().containers[0];
    c.volume_mounts = Some(vec![
        VolumeMount {
            name: "config".to_owned(),
            mount_path: "/etc/app".to_owned(),
            read_only: Some(true),
            ..Default::default()
        },
        VolumeMount {
            name: "data".to_owned(),
            mount_path: "/data".to_owned(),
            ..Default::default()
        },
    ]);
    let status = Fixture::new(p).status();
    let app = app(&status, "app");
    assert_eq!(app.image, "registry.local/app:1");
    assert_eq!(app.image_id, "");
    assert_eq!(app.container_id, None);
    assert_eq!(app.restart_count, 0);
    assert_eq!(app.started, Some(false));
    let mounts = serde_json::to_value(&app.volume_mounts).unwrap();
    assert_eq!(
        mounts,
        serde_json::json!([
            {"name": "config", "mountPath": "/etc/app", "readOnly": true,
             "recursiveReadOnly": "Disabled"},
            {"name": "data", "mountPath": "/data"},
        ])
    );
}
