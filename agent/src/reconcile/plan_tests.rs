//! Rules of [`super::plan::plan`], one test per rule, plus property tests where rules combine.
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use proptest::prelude::*;

use super::{
    backoff::Backoff,
    plan::{Action, Desired, Garbage, StopReason, Target, backoff_key, container_hash, plan},
    state::{Container, Nanos, PodRuntime, RunState, Sandbox},
};

const S: Nanos = 1_000_000_000;
const UID: &str = "uid-1";

fn pod(policy: &str, inits: &[&str], apps: &[&str]) -> Pod {
    let containers = |names: &[&str]| -> Vec<serde_json::Value> {
        names
            .iter()
            .map(|n| serde_json::json!({"name": n, "image": "kernlet.local/busybox:1"}))
            .collect()
    };
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "p", "namespace": "default", "uid": UID},
        "spec": {
            "restartPolicy": policy,
            "terminationGracePeriodSeconds": 7,
            "initContainers": containers(inits),
            "containers": containers(apps),
        }
    }))
    .unwrap()
}

fn hash_of(pod: &Pod, name: &str) -> String {
    let spec = pod.spec.as_ref().unwrap();
    let all = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    container_hash(all.into_iter().find(|c| c.name == name).unwrap())
}

fn sandbox(id: &str, ready: bool, attempt: u32) -> Sandbox {
    Sandbox {
        id: id.into(),
        ready,
        attempt,
        created_at: i64::from(attempt) * S,
        ip: None,
    }
}

/// A container instance of `pod` in sandbox `sb`, created at `t` seconds.
fn ctr(pod: &Pod, sb: &str, name: &str, state: RunState, exit: i32, t: i64) -> Container {
    Container {
        id: format!("{name}-{t}"),
        sandbox_id: sb.into(),
        name: name.into(),
        state,
        hash: hash_of(pod, name),
        restart_count: u32::try_from(t).unwrap(),
        exit_code: exit,
        created_at: t * S,
        started_at: t * S,
        finished_at: if state == RunState::Exited {
            t * S + S
        } else {
            0
        },
        reason: String::new(),
        message: String::new(),
        image: "kernlet.local/busybox:1".into(),
        image_ref: String::new(),
    }
}

fn observed(sandboxes: Vec<Sandbox>, containers: Vec<Container>) -> PodRuntime {
    PodRuntime {
        sandboxes,
        containers,
        ..PodRuntime::default()
    }
}

fn start(target: Target, restart_count: u32, backoff_key: Option<String>) -> Action {
    Action::StartContainer {
        target,
        restart_count,
        backoff_key,
    }
}

fn run(pod: &Pod, observed: &PodRuntime, now: Nanos) -> super::plan::Plan {
    plan(UID, Desired::Run(pod), observed, &Backoff::default(), now)
}

#[test]
fn new_pod_gets_a_sandbox_and_all_app_containers() {
    let pod = pod("Always", &[], &["a", "b"]);
    let plan = run(&pod, &PodRuntime::default(), 0);
    assert_eq!(
        plan.actions,
        [
            Action::CreateSandbox { attempt: 0 },
            start(Target::App(0), 0, None),
            start(Target::App(1), 0, None)
        ]
    );
}

#[test]
fn new_pod_with_init_containers_starts_only_the_first_init() {
    let pod = pod("Always", &["i0", "i1"], &["a"]);
    let plan = run(&pod, &PodRuntime::default(), 0);
    assert_eq!(
        plan.actions,
        [
            Action::CreateSandbox { attempt: 0 },
            start(Target::Init(0), 0, None)
        ]
    );
}

#[test]
fn init_containers_run_one_at_a_time_in_order() {
    let pod = pod("Always", &["i0", "i1"], &["a"]);
    let sb = || vec![sandbox("sb", true, 0)];
    // i0 running: wait.
    let running = observed(sb(), vec![ctr(&pod, "sb", "i0", RunState::Running, 0, 0)]);
    assert_eq!(run(&pod, &running, S).actions, []);
    // i0 done: start i1.
    let first_done = observed(sb(), vec![ctr(&pod, "sb", "i0", RunState::Exited, 0, 0)]);
    assert_eq!(
        run(&pod, &first_done, S).actions,
        [start(Target::Init(1), 0, None)]
    );
    // Both done: start the app container.
    let all_done = observed(
        sb(),
        vec![
            ctr(&pod, "sb", "i0", RunState::Exited, 0, 0),
            ctr(&pod, "sb", "i1", RunState::Exited, 0, 1),
        ],
    );
    assert_eq!(
        run(&pod, &all_done, S * 3).actions,
        [start(Target::App(0), 0, None)]
    );
}

#[test]
fn failed_init_restarts_unless_policy_is_never() {
    for (policy, restarts) in [("Always", true), ("OnFailure", true), ("Never", false)] {
        let pod = pod(policy, &["i0"], &["a"]);
        let failed = observed(
            vec![sandbox("sb", true, 0)],
            vec![ctr(&pod, "sb", "i0", RunState::Exited, 2, 0)],
        );
        let plan = run(&pod, &failed, 5 * S);
        if restarts {
            let key = backoff_key(UID, "i0", &hash_of(&pod, "i0"));
            assert_eq!(
                plan.actions,
                [start(Target::Init(0), 1, Some(key))],
                "{policy}"
            );
        } else {
            assert_eq!(
                plan.actions,
                [Action::StopSandbox { id: "sb".into() }],
                "{policy}"
            );
        }
    }
}

#[test]
fn app_containers_do_not_rerun_init_containers() {
    let pod = pod("Always", &["i0"], &["a"]);
    // The init instance was garbage-collected, but the app container already ran.
    let obs = observed(
        vec![sandbox("sb", true, 0)],
        vec![ctr(&pod, "sb", "a", RunState::Running, 0, 3)],
    );
    assert_eq!(run(&pod, &obs, 4 * S).actions, []);
}

#[test]
fn restart_policy_decides_after_exit() {
    let cases = [
        ("Always", 0, true),
        ("Always", 1, true),
        ("OnFailure", 0, false),
        ("OnFailure", 1, true),
        ("Never", 0, false),
        ("Never", 1, false),
    ];
    for (policy, exit, restarts) in cases {
        let pod = pod(policy, &[], &["a"]);
        let obs = observed(
            vec![sandbox("sb", true, 0)],
            vec![ctr(&pod, "sb", "a", RunState::Exited, exit, 0)],
        );
        let plan = run(&pod, &obs, 5 * S);
        let started = plan
            .actions
            .iter()
            .any(|a| matches!(a, Action::StartContainer { .. }));
        assert_eq!(
            started, restarts,
            "{policy} exit {exit}: {:?}",
            plan.actions
        );
        if !restarts {
            // Nothing more to run: the sandbox is stopped, as upstream does for terminal pods.
            assert_eq!(
                plan.actions,
                [Action::StopSandbox { id: "sb".into() }],
                "{policy} exit {exit}"
            );
        }
    }
}

#[test]
fn crash_loop_backs_off_until_finish_plus_delay() {
    let pod = pod("Always", &[], &["a"]);
    let key = backoff_key(UID, "a", &hash_of(&pod, "a"));
    let mut backoff = Backoff::default();
    backoff.next(&key, 0); // a restart already happened: next delay 10 s
    let crashed = ctr(&pod, "sb", "a", RunState::Exited, 1, 2); // finished at 3 s
    let obs = observed(vec![sandbox("sb", true, 0)], vec![crashed]);
    let early = plan(UID, Desired::Run(&pod), &obs, &backoff, 5 * S);
    assert_eq!(early.actions, []);
    assert_eq!(early.wake_at(), Some(13 * S));
    assert_eq!(early.backing_off[0].name, "a");
    let later = plan(UID, Desired::Run(&pod), &obs, &backoff, 13 * S);
    assert_eq!(later.actions, [start(Target::App(0), 3, Some(key))]);
}

#[test]
fn spec_change_replaces_only_the_changed_container() {
    let old = pod("Always", &[], &["a", "b"]);
    let mut new = old.clone();
    new.spec.as_mut().unwrap().containers[1].args = Some(vec!["changed".into()]);
    let obs = observed(
        vec![sandbox("sb", true, 0)],
        vec![
            ctr(&old, "sb", "a", RunState::Running, 0, 0),
            ctr(&old, "sb", "b", RunState::Running, 0, 0),
        ],
    );
    let plan = run(&new, &obs, S);
    assert_eq!(
        plan.actions,
        [
            Action::StopContainer {
                id: "b-0".into(),
                name: "b".into(),
                grace: Duration::from_secs(7),
                reason: StopReason::SpecChanged
            },
            start(Target::App(1), 1, None)
        ]
    );
}

#[test]
fn containers_removed_from_the_spec_are_stopped() {
    let old = pod("Always", &[], &["a", "gone"]);
    let new = pod("Always", &[], &["a"]);
    let obs = observed(
        vec![sandbox("sb", true, 0)],
        vec![
            ctr(&new, "sb", "a", RunState::Running, 0, 0),
            ctr(&old, "sb", "gone", RunState::Running, 0, 0),
        ],
    );
    let plan = run(&new, &obs, S);
    assert!(
        matches!(&plan.actions[..], [Action::StopContainer { reason: StopReason::NotInSpec, name, .. }] if name == "gone")
    );
}

#[test]
fn dead_sandbox_is_replaced_with_the_next_attempt() {
    let pod = pod("Always", &[], &["a"]);
    let obs = observed(
        vec![sandbox("sb", false, 0)],
        vec![ctr(&pod, "sb", "a", RunState::Exited, 137, 0)],
    );
    let plan = run(&pod, &obs, 5 * S);
    assert_eq!(
        plan.actions,
        [
            Action::CreateSandbox { attempt: 1 },
            start(Target::App(0), 1, None)
        ]
    );
}

#[test]
fn dead_sandbox_is_not_replaced_for_finished_pods() {
    let never = pod("Never", &[], &["a"]);
    let obs = observed(
        vec![sandbox("sb", false, 0)],
        vec![ctr(&never, "sb", "a", RunState::Exited, 1, 0)],
    );
    assert_eq!(run(&never, &obs, 5 * S).actions, []);
    let on_failure = pod("OnFailure", &[], &["a"]);
    let obs = observed(
        vec![sandbox("sb", false, 0)],
        vec![ctr(&on_failure, "sb", "a", RunState::Exited, 0, 0)],
    );
    assert_eq!(run(&on_failure, &obs, 5 * S).actions, []);
}

#[test]
fn a_created_container_is_not_started_again_but_replaced_and_collected() {
    let pod = pod("Always", &[], &["a"]);
    // Its start failed or timed out: the runtime may still be starting it, so it is left alone.
    let created = ctr(&pod, "sb", "a", RunState::Created, 0, 0);
    let obs = observed(vec![sandbox("sb", true, 0)], vec![created.clone()]);
    let plan = run(&pod, &obs, S);
    assert_eq!(plan.actions, [start(Target::App(0), 1, None)]);
    assert_eq!(plan.garbage, []);
    // Once a newer instance exists, the created one is garbage, removed after the actions.
    let obs = observed(
        vec![sandbox("sb", true, 0)],
        vec![created, ctr(&pod, "sb", "a", RunState::Running, 0, 1)],
    );
    let plan = run(&pod, &obs, 2 * S);
    assert_eq!(plan.actions, []);
    assert_eq!(plan.garbage, [Garbage::Container("a-0".into())]);
}

#[test]
fn only_the_newest_dead_instance_is_kept() {
    let pod = pod("Always", &[], &["a"]);
    let obs = observed(
        vec![sandbox("sb", true, 0)],
        vec![
            ctr(&pod, "sb", "a", RunState::Exited, 1, 0),
            ctr(&pod, "sb", "a", RunState::Exited, 1, 1),
            ctr(&pod, "sb", "a", RunState::Running, 0, 2),
        ],
    );
    // The newest dead one stays beside the running one (it is the status's lastState).
    let plan = run(&pod, &obs, 3 * S);
    assert_eq!(plan.actions, []);
    assert_eq!(plan.garbage, [Garbage::Container("a-0".into())]);
}

#[test]
fn termination_stops_then_removes_everything() {
    let pod = pod("Always", &[], &["a"]);
    let obs = observed(
        vec![sandbox("sb", true, 0)],
        vec![ctr(&pod, "sb", "a", RunState::Running, 0, 0)],
    );
    let grace = Duration::from_secs(3);
    let plan = plan(
        UID,
        Desired::Terminate { grace, pod: None },
        &obs,
        &Backoff::default(),
        S,
    );
    assert_eq!(
        plan.actions,
        [
            Action::StopContainer {
                id: "a-0".into(),
                name: "a".into(),
                grace,
                reason: StopReason::Terminating
            },
            Action::StopSandbox { id: "sb".into() },
            Action::RemoveContainer { id: "a-0".into() },
            Action::RemoveSandbox { id: "sb".into() },
        ]
    );
    let gone = plan_for_nothing();
    assert_eq!(gone.actions, []);
}

fn plan_for_nothing() -> super::plan::Plan {
    plan(
        UID,
        Desired::Terminate {
            grace: Duration::ZERO,
            pod: None,
        },
        &PodRuntime::default(),
        &Backoff::default(),
        0,
    )
}

fn state_strategy() -> impl Strategy<Value = RunState> {
    prop_oneof![
        Just(RunState::Created),
        Just(RunState::Running),
        Just(RunState::Exited),
        Just(RunState::Unknown)
    ]
}

proptest! {
    /// Across random policies, sandbox states and container states: a plan never starts a
    /// container that is running with its current spec, never restarts anything under Never,
    /// always starts into a sandbox it has or creates, and counts restarts from the newest instance.
    #[test]
    fn plans_respect_policies_and_counts(
        policy in prop_oneof![Just("Always"), Just("OnFailure"), Just("Never")],
        ready in any::<bool>(),
        states in proptest::collection::vec((state_strategy(), -1i32..3), 0..3),
        now in 0i64..1000,
    ) {
        let pod = pod(policy, &[], &["a", "b", "c"]);
        let names = ["a", "b", "c"];
        let containers: Vec<Container> = states.iter().enumerate()
            .map(|(i, (state, exit))| ctr(&pod, "sb", names[i], *state, *exit, 0))
            .collect();
        let obs = observed(vec![sandbox("sb", ready, 0)], containers.clone());
        let plan = run(&pod, &obs, now * S);
        let creates = plan.actions.iter().any(|a| matches!(a, Action::CreateSandbox { .. }));
        for action in &plan.actions {
            if let Action::StartContainer { target: Target::App(i), restart_count, backoff_key } = action {
                let existing = containers.iter().find(|c| c.name == names[*i]);
                prop_assert!(ready || creates, "start without a sandbox: {:?}", plan.actions);
                prop_assert!(!existing.is_some_and(|c| c.state == RunState::Running && ready),
                    "restarted a healthy container: {:?}", plan.actions);
                prop_assert_eq!(*restart_count, existing.map_or(0, |c| c.restart_count + 1));
                if policy == "Never" {
                    prop_assert!(existing.is_none_or(|c| c.state == RunState::Created),
                        "Never restarted {:?}", existing);
                    prop_assert!(backoff_key.is_none());
                }
            }
        }
    }

    /// Termination plans never start or create anything and remove every object observed.
    #[test]
    fn termination_only_tears_down(
        states in proptest::collection::vec(state_strategy(), 0..4),
        ready in any::<bool>(),
    ) {
        let pod = pod("Always", &[], &["a"]);
        let containers: Vec<Container> = states.iter().enumerate()
            .map(|(i, s)| ctr(&pod, "sb", "a", *s, 0, i64::try_from(i).unwrap()))
            .collect();
        let obs = observed(vec![sandbox("sb", ready, 0)], containers.clone());
        let plan = plan(UID, Desired::Terminate { grace: Duration::from_secs(1), pod: None }, &obs, &Backoff::default(), 0);
        let builds = |a: &Action| matches!(a, Action::StartContainer { .. } | Action::CreateSandbox { .. });
        prop_assert!(!plan.actions.iter().any(builds), "termination built something: {:?}", plan.actions);
        let removed = plan.actions.iter().filter(|a| matches!(a, Action::RemoveContainer { .. })).count();
        prop_assert_eq!(removed, containers.len());
        let removes_sandbox = plan.actions.contains(&Action::RemoveSandbox { id: "sb".into() });
        prop_assert!(removes_sandbox, "sandbox kept: {:?}", plan.actions);
    }
}

/// `pod` whose first init container `side` is a sidecar (with a startup probe when asked).
fn sidecar_pod(policy: &str, startup_probe: bool) -> Pod {
    let mut pod = pod(policy, &["side", "setup"], &["a"]);
    let side = &mut pod.spec.as_mut().unwrap().init_containers.as_mut().unwrap()[0];
    side.restart_policy = Some("Always".into());
    if startup_probe {
        side.startup_probe = Some(k8s_openapi::api::core::v1::Probe::default());
    }
    pod
}

#[test]
fn a_sidecar_starts_first_and_the_next_init_waits_until_it_has_started() {
    let pod = sidecar_pod("Always", true);
    let none = observed(vec![sandbox("sb", true, 0)], vec![]);
    assert_eq!(
        run(&pod, &none, S).actions,
        [start(Target::Init(0), 0, None)]
    );
    let mut side_running = observed(
        vec![sandbox("sb", true, 0)],
        vec![ctr(&pod, "sb", "side", RunState::Running, 0, 0)],
    );
    assert_eq!(
        run(&pod, &side_running, S).actions,
        [],
        "startup probe not passed yet"
    );
    side_running.probes.insert(
        "side-0".into(),
        crate::probe::ProbeResults {
            startup: Some(true),
            ..Default::default()
        },
    );
    assert_eq!(
        run(&pod, &side_running, S).actions,
        [start(Target::Init(1), 0, None)]
    );
    side_running
        .containers
        .push(ctr(&pod, "sb", "setup", RunState::Exited, 0, 1));
    assert_eq!(
        run(&pod, &side_running, 3 * S).actions,
        [start(Target::App(0), 0, None)]
    );
}

#[test]
fn a_sidecar_is_restarted_whatever_the_policy_until_the_apps_are_done() {
    let pod = sidecar_pod("Never", false);
    let side_exited = ctr(&pod, "sb", "side", RunState::Exited, 0, 0);
    let setup = ctr(&pod, "sb", "setup", RunState::Exited, 0, 1);
    let app_running = ctr(&pod, "sb", "a", RunState::Running, 0, 2);
    let obs = observed(
        vec![sandbox("sb", true, 0)],
        vec![side_exited.clone(), setup.clone(), app_running],
    );
    let key = backoff_key(UID, "side", &hash_of(&pod, "side"));
    assert_eq!(
        run(&pod, &obs, 5 * S).actions,
        [start(Target::Init(0), 1, Some(key))],
        "restarted under Never while the app runs"
    );
    // The app succeeded: the sidecar is not restarted and the sandbox stops.
    let app_done = ctr(&pod, "sb", "a", RunState::Exited, 0, 2);
    let obs = observed(
        vec![sandbox("sb", true, 0)],
        vec![side_exited, setup.clone(), app_done.clone()],
    );
    assert_eq!(
        run(&pod, &obs, 5 * S).actions,
        [Action::StopSandbox { id: "sb".into() }]
    );
    // Still running when the app is done: it is stopped first, the sandbox after.
    let side_running = ctr(&pod, "sb", "side", RunState::Running, 0, 0);
    let obs = observed(
        vec![sandbox("sb", true, 0)],
        vec![side_running, setup, app_done],
    );
    assert_eq!(
        run(&pod, &obs, 5 * S).actions,
        [Action::StopContainer {
            id: "side-0".into(),
            name: "side".into(),
            grace: Duration::from_secs(7),
            reason: StopReason::AppsDone,
        }]
    );
}

#[test]
fn a_deleted_pod_stops_its_apps_before_its_sidecars() {
    let pod = sidecar_pod("Always", false);
    let grace = Duration::from_secs(3);
    let terminate = |obs: &PodRuntime| {
        plan(
            UID,
            Desired::Terminate {
                grace,
                pod: Some(&pod),
            },
            obs,
            &Backoff::default(),
            9 * S,
        )
        .actions
    };
    let stop = |name: &str, t: i64| Action::StopContainer {
        id: format!("{name}-{t}"),
        name: name.into(),
        grace,
        reason: StopReason::Terminating,
    };
    let mut obs = observed(
        vec![sandbox("sb", true, 0)],
        vec![
            ctr(&pod, "sb", "side", RunState::Running, 0, 0),
            ctr(&pod, "sb", "a", RunState::Running, 0, 2),
        ],
    );
    assert_eq!(terminate(&obs), [stop("a", 2)], "the app first");
    obs.containers[1] = ctr(&pod, "sb", "a", RunState::Exited, 0, 2);
    assert_eq!(terminate(&obs), [stop("side", 0)], "then the sidecar");
    obs.containers[0] = ctr(&pod, "sb", "side", RunState::Exited, 0, 0);
    let rest = terminate(&obs);
    assert_eq!(
        rest.first(),
        Some(&Action::StopSandbox { id: "sb".into() }),
        "{rest:?}"
    );
}

#[test]
fn a_liveness_failure_stops_the_container_and_the_restart_goes_through_back_off() {
    let pod = pod("Always", &[], &["a"]);
    let mut obs = observed(
        vec![sandbox("sb", true, 0)],
        vec![ctr(&pod, "sb", "a", RunState::Running, 0, 0)],
    );
    obs.probes.insert(
        "a-0".into(),
        crate::probe::ProbeResults {
            kill: Some(crate::probe::Kill {
                kind: crate::probe::Kind::Liveness,
                grace: Some(Duration::from_secs(2)),
            }),
            ..Default::default()
        },
    );
    assert_eq!(
        run(&pod, &obs, S).actions,
        [Action::StopContainer {
            id: "a-0".into(),
            name: "a".into(),
            grace: Duration::from_secs(2),
            reason: StopReason::ProbeFailed {
                kind: crate::probe::Kind::Liveness,
                restart: true,
            },
        }],
        "the probe's grace; the restart is the next round's, with back-off"
    );
}
