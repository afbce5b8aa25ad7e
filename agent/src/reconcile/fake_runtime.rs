//! `FakeRuntime`: a test double standing in for containerd behind [`Cri`], for unit tests of the
//! worker, manager and observer on paused time. It keeps sandboxes and containers in memory with
//! the labels and annotations CRI carries, moves them through CRI's states (created, running on
//! start, exited on stop or when a test says so), stamps times from the test clock, and logs the
//! method of every call so tests can assert what was (not) asked. It honours SIGTERM at once: a
//! stop never takes the grace period. The host tier proves the same rules on real containerd.
use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use kernlet_cri::v1;

use crate::clock::{Clock, Nanos};
use crate::cri::{CallFuture, Cri, CriError, exits::RecordedExit, labels};

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    sandboxes: BTreeMap<String, v1::PodSandboxStatus>,
    containers: BTreeMap<String, v1::ContainerStatus>,
    /// The sandbox of each container.
    sandbox_of: HashMap<String, String>,
    calls: Vec<&'static str>,
    /// `StopContainer` timeouts (seconds), in call order.
    stop_timeouts: Vec<i64>,
    /// Main process IDs a verbose `ContainerStatus` reports, as containerd's `info` JSON.
    pids: HashMap<String, u32>,
    /// Exits the runtime's events reported, as a client with exit records knows them.
    recorded: HashMap<String, RecordedExit>,
    /// The next `StartContainer` fails ([`FakeRuntime::fail_next_start`]).
    fail_next_start: bool,
    /// Every `RemoveContainer` fails ([`FakeRuntime::refuse_removals`]).
    refuse_removals: bool,
}

/// In-memory CRI runtime for unit tests (see the module doc).
#[derive(Debug)]
pub struct FakeRuntime {
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    /// The list calls answer only while no test holds this ([`FakeRuntime::hold_lists`]).
    lists: Arc<tokio::sync::RwLock<()>>,
    /// `StopContainer` answers only while no test holds this ([`FakeRuntime::hold_stops`]).
    stops: Arc<tokio::sync::RwLock<()>>,
}

fn ready<T: Send + 'static>(result: Result<T, CriError>) -> CallFuture<'static, T> {
    Box::pin(std::future::ready(result))
}

fn not_found(method: &'static str, id: &str) -> CriError {
    CriError::Call {
        method,
        status: tonic::Status::not_found(format!("{id} not found")),
    }
}

fn matches(selector: &HashMap<String, String>, labels: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Images under this prefix are absent and fail to pull.
pub const MISSING: &str = "missing/";

const RUNNING: i32 = v1::ContainerState::ContainerRunning as i32;
const EXITED: i32 = v1::ContainerState::ContainerExited as i32;

impl FakeRuntime {
    #[must_use]
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            state: Mutex::default(),
            lists: Arc::default(),
            stops: Arc::default(),
        }
    }

    /// Holds every `ListPodSandbox` and `ListContainers` answer until the guard is dropped (a
    /// runtime slow to answer).
    pub fn hold_lists(&self) -> tokio::sync::OwnedRwLockWriteGuard<()> {
        self.lists
            .clone()
            .try_write_owned()
            .expect("the lists are held once at a time")
    }

    /// Holds every `StopContainer` answer until the guard is dropped (a process that ignores
    /// SIGTERM, stopped only when its grace period ends).
    pub fn hold_stops(&self) -> tokio::sync::OwnedRwLockWriteGuard<()> {
        self.stops
            .clone()
            .try_write_owned()
            .expect("the stops are held once at a time")
    }

    /// `answer`, once no test holds the lists.
    fn after_hold<T: Send + 'static>(&self, answer: T) -> CallFuture<'static, T> {
        let lists = self.lists.clone();
        Box::pin(async move {
            let _released = lists.read_owned().await;
            Ok(answer)
        })
    }

    /// The container exits now with `code`, and the runtime's event service says so (what
    /// `cri::exits::ExitRecords` keeps for the client the reconciler uses).
    pub fn record_exit(&self, id: &str, code: i32) {
        let now = self.clock.wall_nanos();
        let mut state = self.lock();
        if let Some(c) = state.containers.get_mut(id) {
            exited(c, code, now);
            let exit = RecordedExit {
                exit_code: code,
                finished_at: now,
                reason: if code == 0 { "Completed" } else { "Error" },
            };
            state.recorded.insert(id.to_owned(), exit);
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Logs the call and hands out the state.
    fn call(&self, method: &'static str) -> MutexGuard<'_, State> {
        let mut state = self.lock();
        state.calls.push(method);
        state
    }

    /// The CRI methods called so far, in order.
    pub fn calls(&self) -> Vec<&'static str> {
        self.lock().calls.clone()
    }

    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// `StopContainer` timeouts in seconds, in call order.
    pub fn stop_timeouts(&self) -> Vec<i64> {
        self.lock().stop_timeouts.clone()
    }

    /// Every sandbox.
    pub fn sandboxes(&self) -> Vec<v1::PodSandboxStatus> {
        self.lock().sandboxes.values().cloned().collect()
    }

    /// Every instance of container `name` (any pod), oldest first.
    pub fn instances(&self, name: &str) -> Vec<v1::ContainerStatus> {
        let mut found: Vec<_> = self
            .lock()
            .containers
            .values()
            .filter(|c| c.labels.get(labels::CONTAINER_NAME).map(String::as_str) == Some(name))
            .cloned()
            .collect();
        found.sort_by_key(|c| (c.created_at, c.id.clone()));
        found
    }

    /// The next `StartContainer` fails with `DeadlineExceeded` and leaves its container created
    /// (a start that outlived the runtime request timeout).
    pub fn fail_next_start(&self) {
        self.lock().fail_next_start = true;
    }

    /// While `refuse`, every `RemoveContainer` fails as containerd 1.6 fails it for a container
    /// that reports exited while its task still runs.
    pub fn refuse_removals(&self, refuse: bool) {
        self.lock().refuse_removals = refuse;
    }

    /// The container exits by itself now with `code` (a crash, or completion with 0).
    pub fn exit(&self, id: &str, code: i32) {
        let now = self.clock.wall_nanos();
        if let Some(c) = self.lock().containers.get_mut(id) {
            exited(c, code, now);
        }
    }

    /// Makes a verbose `ContainerStatus` of container `id` report `pid` as its main process.
    pub fn set_pid(&self, id: &str, pid: u32) {
        self.lock().pids.insert(id.to_owned(), pid);
    }

    /// Rewrites a container's restart-count annotation (a pod restarted before kernlet started).
    pub fn set_restart_count(&self, id: &str, count: u32) {
        if let Some(c) = self.lock().containers.get_mut(id) {
            c.annotations
                .insert(labels::CONTAINER_RESTART_COUNT.into(), count.to_string());
        }
    }

    /// Adds an exited earlier instance of container `id` (same labels and hash) with
    /// `restart_count`, created and finished `ago` nanoseconds before now.
    pub fn add_exited_instance(&self, id: &str, restart_count: u32, ago: Nanos) {
        let now = self.clock.wall_nanos();
        let mut state = self.lock();
        let Some(mut old) = state.containers.get(id).cloned() else {
            return;
        };
        let Some(sandbox) = state.sandbox_of.get(id).cloned() else {
            return;
        };
        state.next_id += 1;
        old.id = format!("c{}", state.next_id);
        old.annotations.insert(
            labels::CONTAINER_RESTART_COUNT.into(),
            restart_count.to_string(),
        );
        old.created_at = now - ago;
        old.started_at = now - ago;
        exited(&mut old, 1, now - ago);
        state.sandbox_of.insert(old.id.clone(), sandbox);
        state.containers.insert(old.id.clone(), old);
    }

    fn status(
        &self,
        id: &str,
        config: v1::ContainerConfig,
        image_ref: String,
    ) -> v1::ContainerStatus {
        v1::ContainerStatus {
            id: id.to_owned(),
            metadata: config.metadata,
            state: v1::ContainerState::ContainerCreated as i32,
            created_at: self.clock.wall_nanos(),
            image: config.image,
            image_ref,
            labels: config.labels,
            annotations: config.annotations,
            ..Default::default()
        }
    }
}

fn exited(c: &mut v1::ContainerStatus, code: i32, now: Nanos) {
    if c.state == EXITED {
        return;
    }
    c.state = EXITED;
    c.exit_code = code;
    c.finished_at = now;
    c.reason = if code == 0 { "Completed" } else { "Error" }.into();
}

fn sandbox_item(s: &v1::PodSandboxStatus) -> v1::PodSandbox {
    v1::PodSandbox {
        id: s.id.clone(),
        metadata: s.metadata.clone(),
        state: s.state,
        created_at: s.created_at,
        labels: s.labels.clone(),
        annotations: s.annotations.clone(),
        runtime_handler: s.runtime_handler.clone(),
    }
}

fn container_item(c: &v1::ContainerStatus, sandbox: &str) -> v1::Container {
    v1::Container {
        id: c.id.clone(),
        pod_sandbox_id: sandbox.to_owned(),
        metadata: c.metadata.clone(),
        image: c.image.clone(),
        image_ref: c.image_ref.clone(),
        state: c.state,
        created_at: c.created_at,
        labels: c.labels.clone(),
        annotations: c.annotations.clone(),
        ..Default::default()
    }
}

impl Cri for FakeRuntime {
    fn recorded_exit(&self, id: &str) -> Option<RecordedExit> {
        self.lock().recorded.get(id).copied()
    }

    fn list_pod_sandbox(
        &self,
        request: v1::ListPodSandboxRequest,
    ) -> CallFuture<'static, v1::ListPodSandboxResponse> {
        let state = self.call("ListPodSandbox");
        let selector = request.filter.map(|f| f.label_selector).unwrap_or_default();
        let items = state
            .sandboxes
            .values()
            .filter(|s| matches(&selector, &s.labels))
            .map(sandbox_item)
            .collect();
        drop(state);
        self.after_hold(v1::ListPodSandboxResponse { items })
    }

    fn pod_sandbox_status(
        &self,
        request: v1::PodSandboxStatusRequest,
    ) -> CallFuture<'static, v1::PodSandboxStatusResponse> {
        let state = self.call("PodSandboxStatus");
        ready(match state.sandboxes.get(&request.pod_sandbox_id) {
            Some(status) => Ok(v1::PodSandboxStatusResponse {
                status: Some(status.clone()),
                ..Default::default()
            }),
            None => Err(not_found("PodSandboxStatus", &request.pod_sandbox_id)),
        })
    }

    fn run_pod_sandbox(
        &self,
        request: v1::RunPodSandboxRequest,
    ) -> CallFuture<'static, v1::RunPodSandboxResponse> {
        let now = self.clock.wall_nanos();
        let mut state = self.call("RunPodSandbox");
        state.next_id += 1;
        let n = state.next_id;
        let config = request.config.unwrap_or_default();
        let id = format!("s{n}");
        state.sandboxes.insert(
            id.clone(),
            v1::PodSandboxStatus {
                id: id.clone(),
                metadata: config.metadata,
                state: v1::PodSandboxState::SandboxReady as i32,
                created_at: now,
                network: Some(v1::PodSandboxNetworkStatus {
                    ip: format!("10.88.0.{}", n % 250 + 2),
                    ..Default::default()
                }),
                labels: config.labels,
                annotations: config.annotations,
                ..Default::default()
            },
        );
        ready(Ok(v1::RunPodSandboxResponse { pod_sandbox_id: id }))
    }

    fn stop_pod_sandbox(
        &self,
        request: v1::StopPodSandboxRequest,
    ) -> CallFuture<'static, v1::StopPodSandboxResponse> {
        let now = self.clock.wall_nanos();
        let mut state = self.call("StopPodSandbox");
        let id = request.pod_sandbox_id;
        let Some(sandbox) = state.sandboxes.get_mut(&id) else {
            return ready(Err(not_found("StopPodSandbox", &id)));
        };
        sandbox.state = v1::PodSandboxState::SandboxNotready as i32;
        // As containerd: stopping a sandbox kills what still runs in it.
        let inside: Vec<String> = state
            .sandbox_of
            .iter()
            .filter(|(_, s)| **s == id)
            .map(|(c, _)| c.clone())
            .collect();
        for c in inside {
            if let Some(c) = state.containers.get_mut(&c) {
                exited(c, 137, now);
            }
        }
        ready(Ok(v1::StopPodSandboxResponse {}))
    }

    fn remove_pod_sandbox(
        &self,
        request: v1::RemovePodSandboxRequest,
    ) -> CallFuture<'static, v1::RemovePodSandboxResponse> {
        let mut state = self.call("RemovePodSandbox");
        let id = request.pod_sandbox_id;
        state.sandboxes.remove(&id);
        let inside: Vec<String> = state
            .sandbox_of
            .iter()
            .filter(|(_, s)| **s == id)
            .map(|(c, _)| c.clone())
            .collect();
        for c in inside {
            state.containers.remove(&c);
            state.sandbox_of.remove(&c);
        }
        ready(Ok(v1::RemovePodSandboxResponse {}))
    }

    fn list_containers(
        &self,
        request: v1::ListContainersRequest,
    ) -> CallFuture<'static, v1::ListContainersResponse> {
        let state = self.call("ListContainers");
        let selector = request.filter.map(|f| f.label_selector).unwrap_or_default();
        let containers = state
            .containers
            .values()
            .filter(|c| matches(&selector, &c.labels))
            .map(|c| container_item(c, state.sandbox_of.get(&c.id).map_or("", String::as_str)))
            .collect();
        drop(state);
        self.after_hold(v1::ListContainersResponse { containers })
    }

    fn container_status(
        &self,
        request: v1::ContainerStatusRequest,
    ) -> CallFuture<'static, v1::ContainerStatusResponse> {
        let state = self.call("ContainerStatus");
        let pid = state
            .pids
            .get(&request.container_id)
            .filter(|_| request.verbose);
        let info = pid
            .map(|pid| {
                (
                    "info".to_owned(),
                    format!(r#"{{"sandboxID":"s","pid":{pid}}}"#),
                )
            })
            .into_iter()
            .collect();
        ready(match state.containers.get(&request.container_id) {
            Some(status) => Ok(v1::ContainerStatusResponse {
                status: Some(status.clone()),
                info,
            }),
            None => Err(not_found("ContainerStatus", &request.container_id)),
        })
    }

    fn create_container(
        &self,
        request: v1::CreateContainerRequest,
    ) -> CallFuture<'static, v1::CreateContainerResponse> {
        let mut state = self.call("CreateContainer");
        if !state.sandboxes.contains_key(&request.pod_sandbox_id) {
            return ready(Err(not_found("CreateContainer", &request.pod_sandbox_id)));
        }
        state.next_id += 1;
        let id = format!("c{}", state.next_id);
        let config = request.config.unwrap_or_default();
        let image_ref = config
            .image
            .as_ref()
            .map(|i| format!("sha256:{}", i.image))
            .unwrap_or_default();
        let status = self.status(&id, config, image_ref);
        state.sandbox_of.insert(id.clone(), request.pod_sandbox_id);
        state.containers.insert(id.clone(), status);
        ready(Ok(v1::CreateContainerResponse { container_id: id }))
    }

    fn start_container(
        &self,
        request: v1::StartContainerRequest,
    ) -> CallFuture<'static, v1::StartContainerResponse> {
        let now = self.clock.wall_nanos();
        let mut state = self.call("StartContainer");
        if std::mem::take(&mut state.fail_next_start) {
            let status = tonic::Status::deadline_exceeded("context deadline exceeded");
            let method = "StartContainer";
            return ready(Err(CriError::Call { method, status }));
        }
        let Some(c) = state.containers.get_mut(&request.container_id) else {
            return ready(Err(not_found("StartContainer", &request.container_id)));
        };
        c.state = RUNNING;
        c.started_at = now;
        ready(Ok(v1::StartContainerResponse {}))
    }

    fn stop_container(
        &self,
        request: v1::StopContainerRequest,
    ) -> CallFuture<'static, v1::StopContainerResponse> {
        let now = self.clock.wall_nanos();
        let mut state = self.call("StopContainer");
        state.stop_timeouts.push(request.timeout);
        let Some(c) = state.containers.get_mut(&request.container_id) else {
            return ready(Err(not_found("StopContainer", &request.container_id)));
        };
        // SIGTERM honoured at once: exit code 143 (128 + 15).
        exited(c, 143, now);
        let stops = self.stops.clone();
        Box::pin(async move {
            let _released = stops.read_owned().await;
            Ok(v1::StopContainerResponse {})
        })
    }

    fn remove_container(
        &self,
        request: v1::RemoveContainerRequest,
    ) -> CallFuture<'static, v1::RemoveContainerResponse> {
        let mut state = self.call("RemoveContainer");
        if state.refuse_removals {
            let status = tonic::Status::failed_precondition(format!(
                "failed to delete containerd container {:?}: cannot delete running task: \
                 failed precondition",
                request.container_id
            ));
            let method = "RemoveContainer";
            return ready(Err(CriError::Call { method, status }));
        }
        state.containers.remove(&request.container_id);
        state.sandbox_of.remove(&request.container_id);
        ready(Ok(v1::RemoveContainerResponse {}))
    }

    fn exec_sync(&self, _: v1::ExecSyncRequest) -> CallFuture<'static, v1::ExecSyncResponse> {
        drop(self.call("ExecSync"));
        ready(Ok(v1::ExecSyncResponse::default()))
    }

    fn image_status(
        &self,
        request: v1::ImageStatusRequest,
    ) -> CallFuture<'static, v1::ImageStatusResponse> {
        drop(self.call("ImageStatus"));
        // Every image is present but those under `missing/`, which cannot be pulled either.
        let image = request
            .image
            .filter(|i| !i.image.starts_with(MISSING))
            .map(|i| v1::Image {
                id: format!("sha256:{}", i.image),
                ..Default::default()
            });
        ready(Ok(v1::ImageStatusResponse {
            image,
            ..Default::default()
        }))
    }

    fn pull_image(
        &self,
        request: v1::PullImageRequest,
    ) -> CallFuture<'static, v1::PullImageResponse> {
        drop(self.call("PullImage"));
        if let Some(missing) = request
            .image
            .as_ref()
            .filter(|i| i.image.starts_with(MISSING))
        {
            return ready(Err(not_found("PullImage", &missing.image)));
        }
        let image_ref = request
            .image
            .map(|i| format!("sha256:{}", i.image))
            .unwrap_or_default();
        ready(Ok(v1::PullImageResponse { image_ref }))
    }

    fn reopen_container_log(
        &self,
        _: v1::ReopenContainerLogRequest,
    ) -> CallFuture<'static, v1::ReopenContainerLogResponse> {
        drop(self.call("ReopenContainerLog"));
        ready(Ok(v1::ReopenContainerLogResponse {}))
    }

    fn list_container_stats(
        &self,
        _: v1::ListContainerStatsRequest,
    ) -> CallFuture<'static, v1::ListContainerStatsResponse> {
        drop(self.call("ListContainerStats"));
        ready(Ok(v1::ListContainerStatsResponse::default()))
    }

    fn image_fs_info(
        &self,
        _: v1::ImageFsInfoRequest,
    ) -> CallFuture<'static, v1::ImageFsInfoResponse> {
        drop(self.call("ImageFsInfo"));
        ready(Ok(v1::ImageFsInfoResponse::default()))
    }
}
