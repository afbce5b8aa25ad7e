use super::*;
use kernlet_cri::containerd::wire;

fn envelope(namespace: &str, topic: &str, payload: Vec<u8>) -> service::Envelope {
    service::Envelope {
        timestamp: None,
        namespace: namespace.to_owned(),
        topic: topic.to_owned(),
        event: Some(wire::Any {
            type_url: format!("containerd.events.{topic}"),
            value: payload,
        }),
    }
}

fn task_exit(container: &str, process: &str, status: u32) -> Vec<u8> {
    events::TaskExit {
        container_id: container.to_owned(),
        id: process.to_owned(),
        pid: 4242,
        exit_status: status,
        exited_at: Some(wire::Timestamp {
            seconds: 1_800_000_000,
            nanos: 5,
        }),
    }
    .encode_to_vec()
}

fn running(id: &str) -> v1::ContainerStatus {
    v1::ContainerStatus {
        id: id.to_owned(),
        state: RUNNING,
        started_at: 7,
        ..Default::default()
    }
}

#[test]
fn decodes_main_process_exits_and_ooms_of_cri_containers_only() {
    let exit = envelope(CRI_NAMESPACE, EXIT_TOPIC, task_exit("c1", "c1", 137));
    assert_eq!(
        TaskEvent::decode(&exit),
        Some(TaskEvent::Exit(Exit {
            container_id: "c1".into(),
            exit_code: 137,
            finished_at: 1_800_000_000_000_000_005,
        }))
    );
    // An exec process's exit, another namespace, another topic: not a container exit.
    let exec = envelope(CRI_NAMESPACE, EXIT_TOPIC, task_exit("c1", "exec-1", 0));
    assert_eq!(TaskEvent::decode(&exec), None);
    let other = envelope("moby", EXIT_TOPIC, task_exit("c1", "c1", 0));
    assert_eq!(TaskEvent::decode(&other), None);
    let start = envelope(CRI_NAMESPACE, "/tasks/start", task_exit("c1", "c1", 0));
    assert_eq!(TaskEvent::decode(&start), None);
    let garbage = envelope(CRI_NAMESPACE, EXIT_TOPIC, vec![0xff, 0xff, 0xff]);
    assert_eq!(TaskEvent::decode(&garbage), None);

    let oom = events::TaskOom {
        container_id: "c2".into(),
    };
    let oom = envelope(CRI_NAMESPACE, OOM_TOPIC, oom.encode_to_vec());
    assert_eq!(
        TaskEvent::decode(&oom),
        Some(TaskEvent::Oom {
            container_id: "c2".into()
        })
    );
}

#[test]
fn records_overlay_exits_until_cri_catches_up() {
    let records = ExitRecords::default();
    let exit = |id: &str, code| {
        TaskEvent::Exit(Exit {
            container_id: id.into(),
            exit_code: code,
            finished_at: 99,
        })
    };
    records.record(exit("crashed", 1));
    records.record(exit("done", 0));
    records.record(TaskEvent::Oom {
        container_id: "oom".into(),
    });
    records.record(exit("oom", 137));

    let mut status = running("crashed");
    records.patch_status(&mut status);
    assert_eq!(
        (status.state, status.exit_code, status.finished_at),
        (EXITED, 1, 99)
    );
    assert_eq!((status.reason.as_str(), status.started_at), ("Error", 7));
    let mut status = running("done");
    records.patch_status(&mut status);
    assert_eq!(status.reason, "Completed");
    let mut status = running("oom");
    records.patch_status(&mut status);
    assert_eq!(status.reason, "OOMKilled");
    let mut status = running("other");
    records.patch_status(&mut status);
    assert_eq!(status.state, RUNNING, "no record, no change");

    let mut list = vec![
        v1::Container {
            id: "crashed".into(),
            state: RUNNING,
            ..Default::default()
        },
        v1::Container {
            id: "other".into(),
            state: RUNNING,
            ..Default::default()
        },
    ];
    records.patch_list(&mut list);
    assert_eq!((list[0].state, list[1].state), (EXITED, RUNNING));

    // CRI now lists only "oom" as running: the other records have served their turn.
    records.retain_running(&HashSet::from(["oom"]));
    assert_eq!(records.len(), 1);
    let mut status = running("crashed");
    records.patch_status(&mut status);
    assert_eq!(status.state, RUNNING);
    let mut status = running("oom");
    records.patch_status(&mut status);
    assert_eq!(status.reason, "OOMKilled");
}
