//! Tests of the static pod source: scans of temporary directories, and `run` following real
//! inotify events with a deadline on every expected snapshot.

use super::*;

const NODE: &str = "node-a";

fn manifest(name: &str, image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  \
         - name: main\n    image: {image}\n"
    )
}

fn names(snapshot: &Snapshot) -> Vec<String> {
    let mut names: Vec<String> = snapshot
        .pods
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    names.sort();
    names
}

fn seen(pod: &Pod) -> String {
    pod.metadata.annotations.as_ref().unwrap()[CONFIG_SEEN_ANNOTATION].clone()
}

#[test]
fn dot_files_and_subdirectories_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("web.yaml"), manifest("web", "nginx:1")).unwrap();
    fs::write(dir.path().join(".web.yaml.swp"), "not yaml: [").unwrap();
    fs::write(
        dir.path().join(".hidden.yaml"),
        manifest("hidden", "nginx:1"),
    )
    .unwrap();
    fs::create_dir(dir.path().join("sub")).unwrap();
    fs::write(
        dir.path().join("sub/db.yaml"),
        manifest("db", "postgres:16"),
    )
    .unwrap();
    let snapshot = StaticPodSource::new(dir.path().into(), NODE.into()).scan();
    assert_eq!(names(&snapshot), ["web-node-a"]);
    assert!(snapshot.errors.is_empty(), "{:?}", snapshot.errors);
}

#[test]
fn single_file_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("web.json");
    let json = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web"},
        "spec":{"containers":[{"name":"main","image":"nginx:1"}]}}"#;
    fs::write(&file, json).unwrap();
    fs::write(dir.path().join("other.yaml"), manifest("other", "nginx:1")).unwrap();
    let source = StaticPodSource::new(file.clone(), NODE.into());
    let snapshot = source.scan();
    assert_eq!(names(&snapshot), ["web-node-a"]);

    // Upstream keeps the last good pod of a single file that fails to parse.
    fs::write(&file, "apiVersion: v1\nkind: Pod\nmetadata: {}\n").unwrap();
    let broken = source.scan();
    assert_eq!(broken.pods, snapshot.pods);
    assert_eq!(broken.errors.len(), 1);
    assert_eq!(broken.errors[0].field.as_deref(), Some("metadata.name"));

    fs::remove_file(&file).unwrap();
    assert_eq!(source.scan(), Snapshot::default());
}

#[test]
fn a_broken_file_leaves_the_others_alone() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.yaml"), manifest("a", "nginx:1")).unwrap();
    fs::write(
        dir.path().join("b.yaml"),
        manifest("b", "nginx:1").replace("image: nginx:1", ""),
    )
    .unwrap();
    fs::write(dir.path().join("c.yaml"), manifest("c", "nginx:1")).unwrap();
    let source = StaticPodSource::new(dir.path().into(), NODE.into());
    let snapshot = source.scan();
    assert_eq!(names(&snapshot), ["a-node-a", "c-node-a"]);
    assert_eq!(snapshot.errors.len(), 1);
    let error = &snapshot.errors[0];
    assert_eq!(error.path, dir.path().join("b.yaml"));
    assert_eq!(error.field.as_deref(), Some("spec.containers[0].image"));
    assert_eq!(
        error.to_string(),
        format!(
            "{}: spec.containers[0].image: required value",
            dir.path().join("b.yaml").display()
        )
    );
    assert_eq!(source.manifest_errors_total(), 1);
    let uids: Vec<_> = snapshot
        .pods
        .iter()
        .map(|p| p.metadata.uid.clone())
        .collect();
    let mut sorted = uids.clone();
    sorted.sort();
    assert_eq!(uids, sorted);

    // The same broken file again is not counted again; new broken content is.
    assert_eq!(source.scan(), snapshot);
    assert_eq!(source.manifest_errors_total(), 1);
    fs::write(dir.path().join("b.yaml"), "kind: Pod\n").unwrap();
    assert_eq!(source.scan().errors.len(), 1);
    assert_eq!(source.manifest_errors_total(), 2);

    // A valid file turned broken loses its pod (upstream's relist does the same).
    fs::write(dir.path().join("a.yaml"), "{").unwrap();
    let snapshot = source.scan();
    assert_eq!(names(&snapshot), ["c-node-a"]);
    assert_eq!(snapshot.errors.len(), 2);
    assert!(
        snapshot.errors[0].message.contains("at line 2 column 1"),
        "{}",
        snapshot.errors[0]
    );
    assert_eq!(source.manifest_errors_total(), 3);
}

#[test]
fn seen_is_stable_and_does_not_change_the_uid() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("web.yaml"), manifest("web", "nginx:1")).unwrap();
    let source = StaticPodSource::new(dir.path().into(), NODE.into());
    let first = source.scan();
    std::thread::sleep(Duration::from_millis(5));
    let second = source.scan();
    assert_eq!(first, second);
    let stamp = seen(&first.pods[0]);
    // RFC3339NanoFixed in UTC: 2024-01-02T03:04:05.123456789Z
    assert_eq!(stamp.len(), 30, "{stamp}");
    assert!(
        stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
        "{stamp}"
    );

    // Another source (a restart) sees the same UID at another time.
    std::thread::sleep(Duration::from_millis(5));
    let restarted = StaticPodSource::new(dir.path().into(), NODE.into()).scan();
    assert_eq!(restarted.pods[0].metadata.uid, first.pods[0].metadata.uid);
    assert_ne!(seen(&restarted.pods[0]), stamp);
}

#[test]
fn duplicate_names_keep_the_first_file() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.yaml"), manifest("web", "nginx:1")).unwrap();
    fs::write(dir.path().join("b.yaml"), manifest("web", "nginx:2")).unwrap();
    let snapshot = StaticPodSource::new(dir.path().into(), NODE.into()).scan();
    assert_eq!(names(&snapshot), ["web-node-a"]);
    assert_eq!(snapshot.errors.len(), 1);
    assert_eq!(snapshot.errors[0].path, dir.path().join("b.yaml"));
    assert_eq!(snapshot.errors[0].field.as_deref(), Some("metadata.name"));
}

#[test]
fn missing_path_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let source = StaticPodSource::new(dir.path().join("nope/"), NODE.into());
    assert_eq!(
        source.path().as_os_str(),
        dir.path().join("nope").as_os_str()
    );
    assert_eq!(source.scan(), Snapshot::default());
}

async fn wait_for(
    rx: &mut watch::Receiver<Snapshot>,
    what: &str,
    done: impl Fn(&Snapshot) -> bool,
) -> Snapshot {
    // Far above the 100 ms debounce; generous for a loaded 2-core CI machine.
    let limit = Duration::from_secs(2);
    let waited = tokio::time::timeout(limit, async {
        loop {
            rx.changed().await.expect("source stopped");
            let snapshot = rx.borrow_and_update().clone();
            if done(&snapshot) {
                return snapshot;
            }
        }
    })
    .await;
    waited.unwrap_or_else(|_elapsed| {
        panic!(
            "no snapshot with {what} within {limit:?}: {:?}",
            *rx.borrow()
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_follows_the_directory_without_polling() {
    let root = tempfile::tempdir().unwrap();
    // The directory does not exist yet: the source waits for it on the parent.
    let dir = root.path().join("manifests");
    let source = StaticPodSource::new(dir.clone(), NODE.into());
    let counter = source.manifest_errors_counter();
    let (tx, mut rx) = watch::channel(Snapshot::default());
    let cancel = CancellationToken::new();
    let task = tokio::spawn(source.run(tx, cancel.clone()));

    let initial = wait_for(&mut rx, "the initial snapshot", |_| true).await;
    assert_eq!(initial, Snapshot::default());

    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("a.yaml"), manifest("a", "nginx:1")).unwrap();
    wait_for(&mut rx, "pod a", |s| names(s) == ["a-node-a"]).await;

    // An editor's save: write a dot-file, rename it into place.
    fs::write(dir.join(".b.yaml.tmp"), manifest("b", "nginx:1")).unwrap();
    fs::rename(dir.join(".b.yaml.tmp"), dir.join("b.yaml")).unwrap();
    let both = wait_for(&mut rx, "pods a and b", |s| s.pods.len() == 2).await;
    assert_eq!(names(&both), ["a-node-a", "b-node-a"]);
    assert!(both.errors.is_empty());

    fs::remove_file(dir.join("a.yaml")).unwrap();
    wait_for(&mut rx, "pod a removed", |s| names(s) == ["b-node-a"]).await;

    fs::write(dir.join("c.yaml"), manifest("c", "nginx:1")).unwrap();
    wait_for(&mut rx, "pod c", |s| s.pods.len() == 2).await;
    fs::write(dir.join("c.yaml"), "apiVersion: v1\nkind: Pod\nspec: [\n").unwrap();
    let broken = wait_for(&mut rx, "c broken", |s| !s.errors.is_empty()).await;
    assert_eq!(names(&broken), ["b-node-a"]);
    assert_eq!(broken.errors[0].path, dir.join("c.yaml"));
    assert!(counter.load(Ordering::Relaxed) >= 1);

    // The directory itself going away empties the set; coming back is seen too.
    fs::remove_dir_all(&dir).unwrap();
    wait_for(&mut rx, "no pods", |s| *s == Snapshot::default()).await;
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("d.yaml"), manifest("d", "nginx:1")).unwrap();
    wait_for(&mut rx, "pod d", |s| names(s) == ["d-node-a"]).await;

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("run did not stop on cancel")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_follows_a_single_file_replaced_by_rename() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("web.yaml");
    fs::write(&file, manifest("web", "nginx:1")).unwrap();
    let source = StaticPodSource::new(file.clone(), NODE.into());
    let (tx, mut rx) = watch::channel(Snapshot::default());
    let cancel = CancellationToken::new();
    let task = tokio::spawn(source.run(tx, cancel.clone()));
    let first = wait_for(&mut rx, "pod web", |s| s.pods.len() == 1).await;

    let tmp = root.path().join("web.yaml.new");
    fs::write(&tmp, manifest("web", "nginx:2")).unwrap();
    fs::rename(&tmp, &file).unwrap();
    let second = wait_for(&mut rx, "a new uid", |s| {
        s.pods.len() == 1 && s.pods[0].metadata.uid != first.pods[0].metadata.uid
    })
    .await;
    let spec = second.pods[0].spec.as_ref().unwrap();
    assert_eq!(spec.containers[0].image.as_deref(), Some("nginx:2"));

    // Dropping the receiver ends the run as well.
    drop(rx);
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("run did not stop without receivers")
        .unwrap();
    cancel.cancel();
}
