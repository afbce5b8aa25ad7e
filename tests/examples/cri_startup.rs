//! Direct-CRI pod startup timing for `cargo xtask bench startup`: the CRI calls kernlet issues to
//! start a pod (`RunPodSandbox`, `PodSandboxStatus`, `ImageStatus`, `CreateContainer`,
//! `StartContainer`), with configs like kernlet's for the bench's static pods, issued straight at
//! a runtime for N pods, one pod after the other or all at once.
//!
//! ```text
//! cri_startup <endpoint> <pod logs dir> <pods> <sequential|concurrent>
//! ```
//!
//! The clock starts just before the first `RunPodSandbox` and stops when the last
//! `StartContainer` has returned. Afterwards (off the clock) every container is checked to be
//! running. Prints one JSON object: `{"pods": N, "mode": "...", "seconds": S}`.
//!
//! It lives in the tests crate, not in xtask, because `kernlet-cri`'s build script needs `protoc`,
//! and xtask must build on a fresh machine before `cargo xtask setup` has installed it.
#![expect(
    clippy::disallowed_methods,
    reason = "measures real time against a real kernel and runtime"
)]
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use kernlet::reconcile::spec::container::{DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS};
use kernlet_cri::v1::image_service_client::ImageServiceClient;
use kernlet_cri::v1::runtime_service_client::RuntimeServiceClient;
use kernlet_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatusRequest,
    CreateContainerRequest, ImageSpec, ImageStatusRequest, LinuxContainerConfig,
    LinuxContainerResources, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, PodSandboxConfig, PodSandboxMetadata, PodSandboxStatusRequest,
    RunPodSandboxRequest, SecurityProfile, StartContainerRequest, security_profile::ProfileType,
};
use tonic::transport::Channel;
use xtask::images::TEST_IMAGE;

const USAGE: &str = "usage: cri_startup <endpoint> <pod logs dir> <pods> <sequential|concurrent>";
/// The namespace kernlet gives static pods without one.
const NAMESPACE: &str = "default";
/// The longest the whole run may take.
const TIMEOUT: Duration = Duration::from_mins(3);
/// What kernlet gives a `BestEffort` container: the minimum CPU shares and the highest OOM score.
const BEST_EFFORT_SHARES: i64 = 2;
const BEST_EFFORT_OOM_SCORE_ADJ: i64 = 1000;
/// The CFS period kernlet sets.
const CPU_PERIOD_US: i64 = 100_000;

/// Both CRI services on one channel, as kernlet holds them.
#[derive(Clone)]
struct Clients {
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [endpoint, logs, pods, mode] = args.as_slice() else {
        bail!("{USAGE}");
    };
    let pods: usize = pods
        .parse()
        .with_context(|| format!("pods {pods:?}: {USAGE}"))?;
    let concurrent = match mode.as_str() {
        "sequential" => false,
        "concurrent" => true,
        other => bail!("mode {other:?}: {USAGE}"),
    };
    let channel = kernlet_cri::connect(endpoint, Duration::from_secs(5))
        .await
        .with_context(|| format!("connecting to {endpoint}"))?;
    let clients = Clients {
        runtime: RuntimeServiceClient::new(channel.clone())
            .max_decoding_message_size(kernlet_cri::MAX_MESSAGE_SIZE),
        images: ImageServiceClient::new(channel)
            .max_decoding_message_size(kernlet_cri::MAX_MESSAGE_SIZE),
    };
    let logs = PathBuf::from(logs);
    let (elapsed, containers) = tokio::time::timeout(
        TIMEOUT,
        Box::pin(start_pods(&clients, &logs, pods, concurrent)),
    )
    .await
    .with_context(|| format!("{pods} pods did not start within {TIMEOUT:?}"))??;
    check_running(&clients, &containers).await?;
    println!(
        "{}",
        serde_json::json!({ "pods": pods, "mode": mode, "seconds": elapsed.as_secs_f64() })
    );
    Ok(())
}

/// Starts `pods` pods; the time from the first call to the last `StartContainer`, and the
/// container ids.
async fn start_pods(
    clients: &Clients,
    logs: &Path,
    pods: usize,
    concurrent: bool,
) -> Result<(Duration, Vec<String>)> {
    let started = Instant::now();
    let mut containers = Vec::with_capacity(pods);
    if concurrent {
        let tasks: Vec<_> = (0..pods)
            .map(|index| tokio::spawn(start_pod(clients.clone(), logs.to_owned(), index)))
            .collect();
        for task in tasks {
            containers.push(task.await.context("pod task panicked")??);
        }
    } else {
        for index in 0..pods {
            containers.push(Box::pin(start_pod(clients.clone(), logs.to_owned(), index)).await?);
        }
    }
    Ok((started.elapsed(), containers))
}

/// kernlet's calls for one new pod; the container's id.
async fn start_pod(mut clients: Clients, logs: PathBuf, index: usize) -> Result<String> {
    let name = format!("bench-{index}");
    let uid = format!("cri-bench-{}-{index}", std::process::id());
    // kernlet creates the pod's log directory before RunPodSandbox; so does this.
    let log_directory = logs.join(format!("{NAMESPACE}_{name}_{uid}"));
    tokio::fs::create_dir_all(&log_directory)
        .await
        .with_context(|| format!("creating {}", log_directory.display()))?;
    let sandbox_config = sandbox_config(&name, &uid, &log_directory);
    let sandbox = clients
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(sandbox_config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .with_context(|| format!("RunPodSandbox {name}"))?
        .into_inner()
        .pod_sandbox_id;
    clients
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: sandbox.clone(),
            verbose: false,
        })
        .await
        .with_context(|| format!("PodSandboxStatus {name}"))?;
    let image = clients
        .images
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: TEST_IMAGE.to_owned(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .context("ImageStatus")?
        .into_inner()
        .image
        .with_context(|| format!("image {TEST_IMAGE} is not present"))?
        .id;
    let container = clients
        .runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: sandbox,
            config: Some(container_config(&name, &uid, &image)),
            sandbox_config: Some(sandbox_config),
        })
        .await
        .with_context(|| format!("CreateContainer {name}"))?
        .into_inner()
        .container_id;
    clients
        .runtime
        .start_container(StartContainerRequest {
            container_id: container.clone(),
        })
        .await
        .with_context(|| format!("StartContainer {name}"))?;
    Ok(container)
}

/// The `io.kubernetes.pod.*` labels kernlet puts on sandboxes and containers.
fn pod_labels(name: &str, uid: &str) -> HashMap<String, String> {
    HashMap::from([
        ("io.kubernetes.pod.name".to_owned(), name.to_owned()),
        (
            "io.kubernetes.pod.namespace".to_owned(),
            NAMESPACE.to_owned(),
        ),
        ("io.kubernetes.pod.uid".to_owned(), uid.to_owned()),
    ])
}

/// As kernlet's for a pod without a security context: hostname, log directory, labels, no cgroup
/// parent (kernlet with `cgroupsPerQOS: false` leaves it to the runtime), seccomp
/// `RuntimeDefault`.
fn sandbox_config(name: &str, uid: &str, log_directory: &Path) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.to_owned(),
            uid: uid.to_owned(),
            namespace: NAMESPACE.to_owned(),
            attempt: 0,
        }),
        hostname: name.to_owned(),
        log_directory: log_directory.display().to_string(),
        labels: pod_labels(name, uid),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                seccomp: Some(SecurityProfile {
                    profile_type: ProfileType::RuntimeDefault.into(),
                    localhost_ref: String::new(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// As kernlet's for `main` running `sleep 3600` from the busybox image (`BestEffort`).
fn container_config(name: &str, uid: &str, image: &str) -> ContainerConfig {
    let mut labels = pod_labels(name, uid);
    labels.insert("io.kubernetes.container.name".to_owned(), "main".to_owned());
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "main".to_owned(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.to_owned(),
            user_specified_image: TEST_IMAGE.to_owned(),
            ..Default::default()
        }),
        command: vec!["sleep".to_owned(), "3600".to_owned()],
        labels,
        log_path: "main/0.log".to_owned(),
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                cpu_period: CPU_PERIOD_US,
                cpu_shares: BEST_EFFORT_SHARES,
                oom_score_adj: BEST_EFFORT_OOM_SCORE_ADJ,
                ..Default::default()
            }),
            security_context: Some(LinuxContainerSecurityContext {
                seccomp: Some(SecurityProfile {
                    profile_type: ProfileType::Unconfined.into(),
                    localhost_ref: String::new(),
                }),
                masked_paths: DEFAULT_MASKED_PATHS.iter().map(|&p| p.to_owned()).collect(),
                readonly_paths: DEFAULT_READONLY_PATHS
                    .iter()
                    .map(|&p| p.to_owned())
                    .collect(),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

/// Fails unless every container is running.
async fn check_running(clients: &Clients, containers: &[String]) -> Result<()> {
    let mut runtime = clients.runtime.clone();
    for id in containers {
        let status = runtime
            .container_status(ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            })
            .await
            .with_context(|| format!("ContainerStatus {id}"))?
            .into_inner()
            .status
            .with_context(|| format!("container {id} has no status"))?;
        ensure!(
            status.state == i32::from(ContainerState::ContainerRunning),
            "container {id} is not running: {status:?}"
        );
    }
    Ok(())
}
