//! Host tests of the private containerd fixture (`xtask::runtime`): a pod runs through CRI with
//! its own network namespace and IP, survives a containerd restart, and tearing the fixture
//! down leaves nothing behind on the host, which the tests check through `/proc` themselves
//! besides asking the fixture.
//!
//! Run with `cargo test -p kernlet-tests --test host_runtime -- --ignored --nocapture` as root.
#![expect(
    clippy::disallowed_methods,
    reason = "waits on real processes and measures real time: std time is the right clock"
)]
use std::collections::HashMap;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use kernlet_cri::v1::image_service_client::ImageServiceClient;
use kernlet_cri::v1::runtime_service_client::RuntimeServiceClient;
use kernlet_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatusRequest,
    CreateContainerRequest, ImageSpec, ImageStatusRequest, LinuxPodSandboxConfig, PodSandboxConfig,
    PodSandboxMetadata, PodSandboxStatusRequest, RemovePodSandboxRequest, RunPodSandboxRequest,
    StartContainerRequest, StopPodSandboxRequest, VersionRequest,
};
use tonic::transport::Channel;
use xtask::images::{PAUSE_IMAGE, TEST_IMAGE};
use xtask::runtime::{Footprint, Options, RuntimeFixture};

const HELLO: &str = "hello-from-kernlet";

type Runtime = RuntimeServiceClient<Channel>;

async fn connect(
    fixture: &RuntimeFixture,
) -> anyhow::Result<(Runtime, ImageServiceClient<Channel>)> {
    let channel = kernlet_cri::connect(&fixture.endpoint_uri(), Duration::from_secs(5))
        .await
        .with_context(|| format!("connecting to {}", fixture.endpoint_uri()))?;
    Ok((
        RuntimeServiceClient::new(channel.clone())
            .max_decoding_message_size(kernlet_cri::MAX_MESSAGE_SIZE),
        ImageServiceClient::new(channel).max_decoding_message_size(kernlet_cri::MAX_MESSAGE_SIZE),
    ))
}

async fn start_fixture() -> anyhow::Result<RuntimeFixture> {
    tokio::task::spawn_blocking(|| RuntimeFixture::start(Options::default())).await?
}

async fn stop_fixture(fixture: RuntimeFixture) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || fixture.stop()).await?
}

/// A running pod and its container.
struct Pod {
    id: String,
    container: String,
    log: PathBuf,
}

fn pod_config(name: &str, logs: &Path, cgroup_parent: String) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.to_owned(),
            uid: format!("uid-{name}-{}", std::process::id()),
            namespace: "kernlet-test".to_owned(),
            attempt: 0,
        }),
        hostname: name.to_owned(),
        log_directory: logs.display().to_string(),
        labels: HashMap::from([("app".to_owned(), name.to_owned())]),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `RunPodSandbox`, `CreateContainer` (busybox echoing [`HELLO`], then sleeping) and
/// `StartContainer`; waits until the container runs.
async fn run_pod(
    runtime: &mut Runtime,
    name: &str,
    logs: &Path,
    cgroup_parent: String,
) -> anyhow::Result<Pod> {
    let config = pod_config(name, logs, cgroup_parent);
    let id = runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            ..Default::default()
        })
        .await
        .context("RunPodSandbox")?
        .into_inner()
        .pod_sandbox_id;
    let container = runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: id.clone(),
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: "hello".to_owned(),
                    attempt: 0,
                }),
                image: Some(ImageSpec {
                    image: TEST_IMAGE.to_owned(),
                    ..Default::default()
                }),
                command: vec![
                    "sh".to_owned(),
                    "-c".to_owned(),
                    format!("echo {HELLO}; sleep 300"),
                ],
                log_path: "hello.log".to_owned(),
                ..Default::default()
            }),
            sandbox_config: Some(config),
        })
        .await
        .context("CreateContainer")?
        .into_inner()
        .container_id;
    runtime
        .start_container(StartContainerRequest {
            container_id: container.clone(),
        })
        .await
        .context("StartContainer")?;
    wait_running(runtime, &container).await?;
    Ok(Pod {
        id,
        container,
        log: logs.join("hello.log"),
    })
}

async fn wait_running(runtime: &mut Runtime, container: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = runtime
            .container_status(ContainerStatusRequest {
                container_id: container.to_owned(),
                verbose: false,
            })
            .await
            .context("ContainerStatus")?
            .into_inner()
            .status
            .context("ContainerStatus without status")?;
        if status.state == ContainerState::ContainerRunning as i32 {
            return Ok(());
        }
        if status.state == ContainerState::ContainerExited as i32 || Instant::now() > deadline {
            bail!("container {container} is not running: {status:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn pod_ip(runtime: &mut Runtime, pod: &str) -> anyhow::Result<Ipv4Addr> {
    let status = runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.to_owned(),
            verbose: false,
        })
        .await
        .context("PodSandboxStatus")?
        .into_inner()
        .status
        .context("PodSandboxStatus without status")?;
    let ip = status
        .network
        .context("pod sandbox without network status")?
        .ip;
    ip.parse()
        .with_context(|| format!("pod ip {ip:?} is not ipv4"))
}

fn in_benchmarking_range(ip: Ipv4Addr) -> bool {
    let [a, b, _, _] = ip.octets();
    a == 198 && (b & 0xfe) == 18
}

async fn wait_for_log_line(log: &Path, needle: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(needle)) {
            return Ok(line.to_owned());
        }
        if Instant::now() > deadline {
            bail!(
                "{} has no line with {needle:?}; it holds:\n{text}",
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn remove_pod(runtime: &mut Runtime, pod: &str) -> anyhow::Result<()> {
    runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.to_owned(),
        })
        .await
        .context("StopPodSandbox")?;
    runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.to_owned(),
        })
        .await
        .context("RemovePodSandbox")?;
    Ok(())
}

/// Checks the host directly, without the fixture's own bookkeeping: no process mentions the
/// fixture's socket or base directory, nothing is mounted below it, the bridge is gone.
fn assert_host_clean(footprint: &Footprint, bridge: &str) -> anyhow::Result<()> {
    let leaks = footprint.leaks();
    assert!(leaks.is_empty(), "fixture reports leftovers: {leaks:#?}");

    let base = footprint.base_dir().display().to_string();
    let socket = footprint.socket().display().to_string();
    let mut offenders = Vec::new();
    for entry in fs::read_dir("/proc")?.flatten() {
        let Ok(raw) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        let shim_of_ours = cmdline.contains("containerd-shim") && cmdline.contains(&socket);
        if shim_of_ours || cmdline.contains(&base) {
            offenders.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    assert!(
        offenders.is_empty(),
        "processes of the fixture survived: {offenders:#?}"
    );

    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    let mounts: Vec<&str> = mountinfo.lines().filter(|l| l.contains(&base)).collect();
    assert!(
        mounts.is_empty(),
        "mounts below {base} survived: {mounts:#?}"
    );

    assert!(!Path::new(&base).exists(), "{base} still exists");
    assert!(
        !Path::new("/sys/class/net").join(bridge).exists(),
        "bridge {bridge} still exists"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "host: needs root, containerd and runc; run by cargo xtask test"]
async fn pod_runs_survives_restart_and_teardown_is_clean() -> anyhow::Result<()> {
    let logs = tempfile::tempdir()?;

    let t = Instant::now();
    let mut fixture = start_fixture().await?;
    println!(
        "fixture {} up in {:?}: socket {}, bridge {}, subnet {}, containerd pid {:?}",
        fixture.id(),
        t.elapsed(),
        fixture.endpoint().display(),
        fixture.bridge(),
        fixture.subnet(),
        fixture.pid()
    );
    let footprint = fixture.footprint();
    let bridge = fixture.bridge();

    let (mut runtime, mut images) = connect(&fixture).await?;
    let version = runtime
        .version(VersionRequest {
            version: kernlet_cri::CRI_API_VERSION.to_owned(),
        })
        .await?
        .into_inner();
    println!(
        "runtime {} {} (cri {})",
        version.runtime_name, version.runtime_version, version.runtime_api_version
    );
    ensure!(
        version.runtime_name == "containerd",
        "unexpected runtime {version:?}"
    );
    for image in [PAUSE_IMAGE, TEST_IMAGE] {
        let status = images
            .image_status(ImageStatusRequest {
                image: Some(ImageSpec {
                    image: image.to_owned(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await?
            .into_inner();
        ensure!(status.image.is_some(), "cri does not know image {image}");
    }

    let t = Instant::now();
    let pod = Box::pin(run_pod(
        &mut runtime,
        "hello",
        logs.path(),
        fixture.cgroup_parent(),
    ))
    .await
    .with_context(|| format!("containerd log tail:\n{}", fixture.log_tail(40)))?;
    println!("pod {} running in {:?}", &pod.id[..12], t.elapsed());

    let ip = pod_ip(&mut runtime, &pod.id).await?;
    println!("pod ip {ip}");
    ensure!(
        in_benchmarking_range(ip),
        "pod ip {ip} is outside 198.18.0.0/15"
    );
    ensure!(
        fixture.subnet_contains(ip),
        "pod ip {ip} is outside {}",
        fixture.subnet()
    );
    let line = wait_for_log_line(&pod.log, HELLO).await?;
    ensure!(
        line.contains(" stdout "),
        "cri log line {line:?} is not a stdout line"
    );

    // containerd restarts; the shim and the container keep running.
    let old_pid = fixture.pid();
    let t = Instant::now();
    tokio::task::block_in_place(|| fixture.restart())?;
    println!(
        "containerd restarted in {:?} (pid {old_pid:?} -> {:?})",
        t.elapsed(),
        fixture.pid()
    );
    ensure!(
        fixture.pid() != old_pid,
        "containerd pid did not change across restart"
    );
    let (mut runtime, _) = connect(&fixture).await?;
    wait_running(&mut runtime, &pod.container)
        .await
        .context("after containerd restart")?;

    let t = Instant::now();
    remove_pod(&mut runtime, &pod.id).await?;
    println!("pod stopped and removed in {:?}", t.elapsed());

    let t = Instant::now();
    stop_fixture(fixture).await?;
    println!("fixture torn down in {:?}", t.elapsed());
    assert_host_clean(&footprint, &bridge)?;
    Ok(())
}

/// Teardown with a pod still running (what a failing test leaves): `stop` must clean it all.
/// Two fixtures run side by side meanwhile, each with its own bridge, subnet and socket; the
/// pods here get no cgroup parent, so they land in `/k8s.io/<id>`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "host: needs root, containerd and runc; run by cargo xtask test"]
async fn two_fixtures_side_by_side_and_teardown_with_running_pods() -> anyhow::Result<()> {
    let logs = tempfile::tempdir()?;
    let (a, b) = tokio::try_join!(start_fixture(), start_fixture())?;
    ensure!(a.endpoint() != b.endpoint(), "fixtures share a socket");
    ensure!(a.bridge() != b.bridge(), "fixtures share a bridge");
    ensure!(a.subnet() != b.subnet(), "fixtures share a subnet");

    let mut footprints = Vec::new();
    for (fixture, name) in [(&a, "left"), (&b, "right")] {
        let (mut runtime, _) = connect(fixture).await?;
        let dir = logs.path().join(name);
        fs::create_dir_all(&dir)?;
        let pod = Box::pin(run_pod(&mut runtime, name, &dir, String::new()))
            .await
            .with_context(|| format!("containerd log tail:\n{}", fixture.log_tail(40)))?;
        let ip = pod_ip(&mut runtime, &pod.id).await?;
        println!(
            "{name}: fixture {} pod ip {ip} (subnet {})",
            fixture.id(),
            fixture.subnet()
        );
        ensure!(
            fixture.subnet_contains(ip),
            "pod ip {ip} is outside {}",
            fixture.subnet()
        );
        wait_for_log_line(&pod.log, HELLO).await?;
        footprints.push((fixture.footprint(), fixture.bridge()));
    }

    let t = Instant::now();
    let (ra, rb) = tokio::join!(stop_fixture(a), stop_fixture(b));
    println!(
        "both fixtures torn down (pods still running) in {:?}",
        t.elapsed()
    );
    ra?;
    rb?;
    for (footprint, bridge) in &footprints {
        assert_host_clean(footprint, bridge)?;
    }
    Ok(())
}
