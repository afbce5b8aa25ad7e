//! Tests for [`super::volumes`] and the host side: mounts, plans, hostPath type checks, the
//! managed `/etc/hosts`, preparation and cleanup in a temp dir (no root, so no tmpfs mounts).
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use kernlet_cri::v1;
use serde_json::json;

use super::container::container_config;
use super::test_support::{UID, node, pod};
use super::volumes::{
    FileContent, HostPathType, check_host_path, cleanup_volumes, container_mounts,
    managed_hosts_content, plan_container_files, plan_volumes, prepare_volumes,
};
use super::{NodeContext, env::container_env};
use crate::reconcile::plan::Target;

fn mounts_of(pod: &k8s_openapi::api::core::v1::Pod, node: &NodeContext) -> Vec<v1::Mount> {
    let c = &pod.spec.as_ref().unwrap().containers[0];
    let env = container_env(pod, c, &[], node).unwrap();
    container_mounts(pod, c, 0, &[], node, &env).unwrap()
}

fn volume_pod() -> k8s_openapi::api::core::v1::Pod {
    pod(json!({
        "volumes": [
            {"name": "cache", "emptyDir": {}},
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
            {"name": "logs", "hostPath": {"path": "/var/log/app", "type": "DirectoryOrCreate"}},
            {"name": "sock", "hostPath": {"path": "/run/app.sock"}},
        ],
        "containers": [{
            "name": "app",
            "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            "volumeMounts": [
                {"name": "cache", "mountPath": "/cache"},
                {"name": "shm", "mountPath": "/dev/shm"},
                {"name": "logs", "mountPath": "/logs", "readOnly": true, "mountPropagation": "HostToContainer"},
                {"name": "logs", "mountPath": "/mine", "subPathExpr": "$(POD)/out"},
                {"name": "cache", "mountPath": "/sub", "subPath": "a/b", "mountPropagation": "Bidirectional"},
                {"name": "sock", "mountPath": "run/app.sock"},
            ],
        }],
    }))
}

#[test]
fn mounts_for_empty_dir_and_host_path() {
    let node = node();
    let mounts = mounts_of(&volume_pod(), &node);
    let empty = format!("/var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~empty-dir");
    let got: Vec<(String, String, bool, i32)> = mounts
        .iter()
        .map(|m| {
            (
                m.container_path.clone(),
                m.host_path.clone(),
                m.readonly,
                m.propagation,
            )
        })
        .collect();
    let private = i32::from(v1::MountPropagation::PropagationPrivate);
    let want = vec![
        ("/cache".into(), format!("{empty}/cache"), false, private),
        ("/dev/shm".into(), format!("{empty}/shm"), false, private),
        (
            "/logs".into(),
            "/var/log/app".into(),
            true,
            i32::from(v1::MountPropagation::PropagationHostToContainer),
        ),
        (
            "/mine".into(),
            "/var/log/app/web-node-a/out".into(),
            false,
            private,
        ),
        (
            "/sub".into(),
            format!("{empty}/cache/a/b"),
            false,
            i32::from(v1::MountPropagation::PropagationBidirectional),
        ),
        (
            "/run/app.sock".into(),
            "/run/app.sock".into(),
            false,
            private,
        ),
    ];
    assert_eq!(got, want);
}

fn mount_error(volume_mount: &serde_json::Value, volumes: &serde_json::Value) -> String {
    let pod = pod(json!({
        "volumes": volumes,
        "containers": [{"name": "app", "volumeMounts": [volume_mount]}],
    }));
    let err = container_config(&pod, Target::App(0), 0, &[], &node(), "img").unwrap_err();
    assert_eq!(err.reason(), "CreateContainerConfigError");
    err.to_string()
}

#[test]
fn bad_mounts_are_errors() {
    let cache = json!([{"name": "cache", "emptyDir": {}}]);
    let cases = [
        (
            json!({"name": "ghost", "mountPath": "/x"}),
            "cannot find volume \"ghost\"",
        ),
        (
            json!({"name": "cache", "mountPath": "/x", "subPath": "/abs"}),
            "must not be an absolute path",
        ),
        (
            json!({"name": "cache", "mountPath": "/x", "subPath": "a/../../b"}),
            "must not contain '..'",
        ),
        (
            json!({"name": "cache", "mountPath": "/x", "subPathExpr": "$(NOPE)"}),
            "missing value for NOPE",
        ),
        (
            json!({"name": "cache", "mountPath": "/x", "mountPropagation": "Sideways"}),
            "invalid MountPropagation",
        ),
        (
            json!({"name": "cache", "mountPath": "/x", "readOnly": true, "recursiveReadOnly": "Enabled"}),
            "recursiveReadOnly",
        ),
    ];
    for (mount, needle) in cases {
        let text = mount_error(&mount, &cache);
        assert!(text.contains(needle), "{text}");
    }
    let text = mount_error(
        &json!({"name": "cfg", "mountPath": "/cfg"}),
        &json!([{"name": "cfg", "configMap": {"name": "settings"}}]),
    );
    assert!(
        text.contains("configMap volumes are not supported"),
        "{text}"
    );
}

#[test]
fn volume_mount_at_etc_hosts_replaces_the_managed_file() {
    let pod = pod(json!({
        "volumes": [{"name": "hosts", "hostPath": {"path": "/etc/hosts", "type": "File"}}],
        "containers": [{"name": "app", "volumeMounts": [{"name": "hosts", "mountPath": "/etc/hosts"}]}],
    }));
    let c = container_config(&pod, Target::App(0), 0, &["10.1.1.1".into()], &node(), "i").unwrap();
    let at_hosts: Vec<&v1::Mount> = c
        .mounts
        .iter()
        .filter(|m| m.container_path == "/etc/hosts")
        .collect();
    assert_eq!(at_hosts.len(), 1);
    assert_eq!(at_hosts[0].host_path, "/etc/hosts");
    let plan =
        plan_container_files(&pod, Target::App(0), 0, &["10.1.1.1".into()], &node()).unwrap();
    assert!(plan.files.iter().all(|f| !f.path.ends_with("etc-hosts")));
}

#[test]
fn pod_plan_lists_dirs_tmpfs_and_host_paths() {
    let mut node = node();
    node.allocatable.memory_bytes = Some(1 << 30);
    let plan = plan_volumes(&volume_pod(), &node).unwrap();
    let pod_dir = PathBuf::from(format!("/var/lib/kubelet/pods/{UID}"));
    let dirs: Vec<(PathBuf, u32)> = plan.dirs.iter().map(|d| (d.path.clone(), d.mode)).collect();
    let empty = pod_dir.join("volumes/kubernetes.io~empty-dir");
    assert_eq!(
        dirs,
        [
            (pod_dir.clone(), 0o750),
            (pod_dir.join("volumes"), 0o750),
            (pod_dir.join("plugins"), 0o750),
            (
                PathBuf::from(format!("/var/log/pods/default_web-node-a_{UID}")),
                0o755
            ),
            (empty.join("cache"), 0o777),
            (empty.join("shm"), 0o777),
        ]
    );
    assert_eq!(plan.tmpfs.len(), 1);
    assert_eq!(plan.tmpfs[0].path, empty.join("shm"));
    assert_eq!(plan.tmpfs[0].size_bytes, Some(64 << 20));
    let hosts: Vec<(&Path, HostPathType)> = plan
        .host_paths
        .iter()
        .map(|h| (h.path.as_path(), h.kind))
        .collect();
    assert_eq!(
        hosts,
        [
            (Path::new("/var/log/app"), HostPathType::DirectoryOrCreate),
            (Path::new("/run/app.sock"), HostPathType::Unset)
        ]
    );
}

#[test]
fn tmpfs_size_follows_allocatable_pod_limit_and_size_limit() {
    let size = |spec: serde_json::Value, allocatable: i64| {
        let mut node = node();
        node.allocatable.memory_bytes = Some(allocatable);
        plan_volumes(&pod(spec), &node).unwrap().tmpfs[0].size_bytes
    };
    let volumes = json!([{"name": "m", "emptyDir": {"medium": "Memory"}}]);
    assert_eq!(size(json!({"volumes": volumes}), 1 << 30), Some(1 << 30));
    assert_eq!(size(json!({"volumes": volumes}), 0), None);
    let limited = json!({
        "volumes": volumes,
        "containers": [{"name": "a", "resources": {"limits": {"memory": "256Mi"}}}],
    });
    assert_eq!(size(limited, 1 << 30), Some(256 << 20));
    let bigger_limit = json!({
        "volumes": [{"name": "m", "emptyDir": {"medium": "Memory", "sizeLimit": "4Gi"}}],
    });
    assert_eq!(size(bigger_limit, 1 << 30), Some(1 << 30));
}

#[test]
fn unsupported_volumes_fail_the_plan_with_failed_mount() {
    for (volume, needle) in [
        (
            json!({"name": "v", "secret": {"secretName": "s"}}),
            "secret volumes",
        ),
        (
            json!({"name": "v", "emptyDir": {"medium": "HugePages"}}),
            "medium \"HugePages\"",
        ),
        (
            json!({"name": "v", "hostPath": {"path": "/a/../b"}}),
            "must not contain '..'",
        ),
        (
            json!({"name": "v", "hostPath": {"path": "/a", "type": "Weird"}}),
            "Weird is an invalid volume type",
        ),
    ] {
        let err = plan_volumes(&pod(json!({"volumes": [volume]})), &node()).unwrap_err();
        assert_eq!(err.reason(), "FailedMount");
        assert!(err.to_string().contains(needle), "{err}");
        assert!(err.to_string().contains("volume \"v\""), "{err}");
    }
}

#[test]
fn managed_hosts_file_content() {
    let plain = pod(json!({}));
    let text = managed_hosts_content(&plain, &["10.244.1.9".into()], "web-node-a", "");
    assert_eq!(
        text,
        "# Kubernetes-managed hosts file.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n\
         10.244.1.9\tweb-node-a\n"
    );
    let aliased =
        pod(json!({"hostAliases": [{"ip": "10.0.0.1", "hostnames": ["db", "db.local"]}]}));
    let text = managed_hosts_content(
        &aliased,
        &["10.244.1.9".into(), "fd00::9".into()],
        "db-0",
        "db.default.svc.cluster.local",
    );
    assert!(text.ends_with(
        "10.244.1.9\tdb-0.db.default.svc.cluster.local\tdb-0\n\
         fd00::9\tdb-0.db.default.svc.cluster.local\tdb-0\n\
         \n# Entries added by HostAliases.\n10.0.0.1\tdb\tdb.local\n"
    ));
}

fn temp_node(dir: &Path) -> NodeContext {
    let mut node = node();
    node.root_dir = dir.join("kubelet");
    node.pod_logs_dir = dir.join("logs");
    node
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn prepare_creates_dirs_host_paths_sub_paths_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("host");
    fs::create_dir_all(host.join("run")).unwrap();
    fs::write(host.join("run/app.sock"), b"").unwrap();
    let node = temp_node(dir.path());
    let mut pod = volume_pod();
    // No root here: drop the memory-backed volume and its mount.
    let spec = pod.spec.as_mut().unwrap();
    spec.volumes.as_mut().unwrap().retain(|v| v.name != "shm");
    let mounts = spec.containers[0].volume_mounts.as_mut().unwrap();
    mounts.retain(|m| m.name != "shm");

    let plan = plan_volumes(&pod, &node).unwrap();
    prepare_volumes(&plan, &host).unwrap();
    let cache = node
        .root_dir
        .join(format!("pods/{UID}/volumes/kubernetes.io~empty-dir/cache"));
    assert_eq!(mode(&cache), 0o777);
    assert_eq!(mode(&node.root_dir.join(format!("pods/{UID}"))), 0o750);
    assert!(host.join("var/log/app").is_dir());
    assert!(
        node.pod_logs_dir
            .join(format!("default_web-node-a_{UID}"))
            .is_dir()
    );

    let ips = ["10.244.1.9".to_owned()];
    let files = plan_container_files(&pod, Target::App(0), 2, &ips, &node).unwrap();
    prepare_volumes(&files, &host).unwrap();
    let pod_dir = node.root_dir.join(format!("pods/{UID}"));
    let hosts = fs::read_to_string(pod_dir.join("etc-hosts")).unwrap();
    assert!(hosts.ends_with("10.244.1.9\tweb-node-a\n"), "{hosts}");
    assert_eq!(mode(&pod_dir.join("etc-hosts")), 0o644);
    assert!(host.join("var/log/app/web-node-a/out").is_dir());
    // subPath directories take the volume's mode.
    let volume_mode = mode(&host.join("var/log/app"));
    assert_eq!(mode(&host.join("var/log/app/web-node-a/out")), volume_mode);
    assert!(cache.join("a/b").is_dir());
    assert!(
        node.pod_logs_dir
            .join(format!("default_web-node-a_{UID}/app"))
            .is_dir()
    );
    // The pod spec has the API default terminationMessagePath only when defaulted: none here.
    assert!(!pod_dir.join("containers").exists());

    // Preparing again is harmless.
    prepare_volumes(&plan, &host).unwrap();
    prepare_volumes(&files, &host).unwrap();

    cleanup_volumes(&node.root_dir, UID).unwrap();
    assert!(!pod_dir.exists());
    assert!(
        host.join("var/log/app").is_dir(),
        "host paths are not touched"
    );
    cleanup_volumes(&node.root_dir, UID).unwrap();
    assert!(cleanup_volumes(&node.root_dir, "../x").is_err());
    assert!(cleanup_volumes(&node.root_dir, "").is_err());
}

#[test]
fn container_files_include_termination_log_and_node_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("host");
    fs::create_dir_all(host.join("etc")).unwrap();
    fs::write(host.join("etc/hosts"), "127.0.0.1 localhost node-a\n").unwrap();
    let node = temp_node(dir.path());
    let pod = pod(json!({
        "hostNetwork": true,
        "hostAliases": [{"ip": "10.0.0.1", "hostnames": ["db"]}],
        "containers": [{"name": "app", "terminationMessagePath": "/dev/termination-log"}],
    }));
    let plan = plan_container_files(&pod, Target::App(0), 1, &[], &node).unwrap();
    assert!(
        plan.files
            .iter()
            .any(|f| matches!(f.content, FileContent::NodeHosts { .. }))
    );
    prepare_volumes(&plan, &host).unwrap();
    let pod_dir = node.root_dir.join(format!("pods/{UID}"));
    let log = pod_dir.join("containers/app/00000001");
    assert_eq!(fs::read(&log).unwrap(), b"");
    assert_eq!(mode(&log), 0o666);
    let hosts = fs::read_to_string(pod_dir.join("etc-hosts")).unwrap();
    assert_eq!(
        hosts,
        "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost node-a\n\
         \n# Entries added by HostAliases.\n10.0.0.1\tdb\n"
    );
    // A message left by the previous instance is not carried over.
    fs::write(&log, "old").unwrap();
    prepare_volumes(&plan, &host).unwrap();
    assert_eq!(fs::read(&log).unwrap(), b"");
}

#[test]
fn host_path_type_checks() {
    use HostPathType as T;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("srv/data")).unwrap();
    fs::write(root.join("srv/file"), b"x").unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(root.join("srv/sock")).unwrap();
    let check =
        |path: &str, kind| check_host_path(root, Path::new(path), kind).map_err(|e| e.to_string());

    assert!(check("/nowhere", T::Unset).is_ok());
    assert!(check("/srv/data", T::Directory).is_ok());
    let err = check("/srv/file", T::Directory).unwrap_err();
    assert_eq!(
        err,
        "hostPath type check failed: /srv/file is not a directory"
    );
    assert!(check("/srv/missing", T::Directory).is_err());
    assert!(check("/srv/new/deep", T::DirectoryOrCreate).is_ok());
    assert!(root.join("srv/new/deep").is_dir());
    assert_eq!(mode(&root.join("srv/new/deep")) & 0o700, 0o700);
    assert!(check("/srv/file", T::DirectoryOrCreate).is_err());

    assert!(check("/srv/file", T::File).is_ok());
    assert!(
        check("/srv/sock", T::File).is_ok(),
        "anything but a directory is a file"
    );
    assert_eq!(
        check("/srv/data", T::File).unwrap_err(),
        "hostPath type check failed: /srv/data is not a file"
    );
    assert!(check("/srv/missing", T::File).is_err());
    assert!(check("/srv/created", T::FileOrCreate).is_ok());
    assert!(root.join("srv/created").is_file());
    assert!(check("/srv/file", T::FileOrCreate).is_ok());
    assert_eq!(
        fs::read(root.join("srv/file")).unwrap(),
        b"x",
        "existing files are kept"
    );
    assert!(check("/srv/no-parent/f", T::FileOrCreate).is_err());
    assert!(check("/srv/data", T::FileOrCreate).is_err());

    assert!(check("/srv/sock", T::Socket).is_ok());
    assert_eq!(
        check("/srv/file", T::Socket).unwrap_err(),
        "hostPath type check failed: /srv/file is not a socket file"
    );
    assert!(
        check("/srv/file", T::CharDevice)
            .unwrap_err()
            .contains("character device")
    );
    assert!(
        check("/srv/file", T::BlockDevice)
            .unwrap_err()
            .contains("block device")
    );
    // Device checks against the real root: /dev/null is a character device everywhere.
    assert!(check_host_path(Path::new("/"), Path::new("/dev/null"), T::CharDevice).is_ok());
    assert!(check_host_path(Path::new("/"), Path::new("/dev/null"), T::BlockDevice).is_err());
}

#[test]
fn sub_path_symlinks_must_stay_inside_the_volume() {
    let dir = tempfile::tempdir().unwrap();
    let node = temp_node(dir.path());
    let outside = dir.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    let pod = pod(json!({
        "volumes": [{"name": "cache", "emptyDir": {}}],
        "containers": [{"name": "app", "volumeMounts": [
            {"name": "cache", "mountPath": "/x", "subPath": "link/inner"},
        ]}],
    }));
    prepare_volumes(&plan_volumes(&pod, &node).unwrap(), dir.path()).unwrap();
    let cache = node
        .root_dir
        .join(format!("pods/{UID}/volumes/kubernetes.io~empty-dir/cache"));
    std::os::unix::fs::symlink(&outside, cache.join("link")).unwrap();
    let plan = plan_container_files(&pod, Target::App(0), 0, &[], &node).unwrap();
    let err = prepare_volumes(&plan, dir.path()).unwrap_err();
    assert!(err.to_string().contains("outside its volume"), "{err}");
    assert!(!outside.join("inner").exists());
}
