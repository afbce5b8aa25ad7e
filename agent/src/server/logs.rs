//! `GET /containerLogs/{namespace}/{pod}/{container}`: a container's log, after upstream's
//! `getContainerLogs` (`pkg/kubelet/server/server.go`) and `validateContainerLogStatus`
//! (`pkg/kubelet/kubelet_pods.go`).
//!
//! The query is `v1.PodLogOptions` (see [`crate::logs::LogOptions`]): undecodable values are a
//! 400, invalid ones a 422. An unknown pod or container is a 404. Which instance's log is read
//! comes from the pod's status as upstream chooses it: `previous` the last terminated instance,
//! else the running one, else the terminated one; a container still waiting has no log (400 with
//! upstream's message). The log file is the runtime's (`ContainerStatus.log_path`), read and
//! followed by [`crate::logs::read_log`]; the body streams, and a client that goes away stops the
//! reader.

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body_util::BodyExt as _;
use hyper::body::{Bytes, Frame};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kernlet_cri::v1;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Providers;
use super::query::{path_decode, query_pairs};
use super::routes::{Body, TEXT, respond};
use crate::cri::Runtime;
use crate::logs::{LogOptions, read_log};

/// Chunks in flight between the reader and the connection.
const CHUNKS: usize = 8;

/// The route: `rest` is the path after `/containerLogs/`.
pub(super) async fn container_logs(
    rest: &str,
    query: Option<&str>,
    providers: &Providers,
    shutdown: &CancellationToken,
) -> Response<Body> {
    let bad = |status: StatusCode, message: String| respond(status, TEXT, message);
    let Some([namespace, name, container]) = path_segments::<3>(rest) else {
        return bad(
            StatusCode::BAD_REQUEST,
            "expected /containerLogs/{namespace}/{pod}/{container}\n".to_owned(),
        );
    };
    let options = match LogOptions::from_query(query_pairs(query), crate::clock::wall()) {
        Ok(options) => options,
        Err(error) if error.is_validation() => {
            return bad(StatusCode::UNPROCESSABLE_ENTITY, format!("{error}\n"));
        }
        Err(error) => return bad(StatusCode::BAD_REQUEST, format!("{error}\n")),
    };
    let Some(pod) = find_pod(&providers.pods.pods(), &namespace, &name) else {
        return bad(
            StatusCode::NOT_FOUND,
            format!("pod {name:?} does not exist\n"),
        );
    };
    if !has_container(&pod, &container) {
        return bad(
            StatusCode::NOT_FOUND,
            format!("container {container:?} not found in pod {name:?}\n"),
        );
    }
    let id = match container_id(&pod, &name, &container, options.previous) {
        Ok(id) => id,
        Err(message) => return bad(StatusCode::BAD_REQUEST, format!("{message}\n")),
    };
    let Some(runtime) = providers.runtime.clone() else {
        return bad(
            StatusCode::SERVICE_UNAVAILABLE,
            "no container runtime\n".to_owned(),
        );
    };
    let request = v1::ContainerStatusRequest {
        container_id: id.clone(),
        verbose: false,
    };
    let path = match runtime.container_status(request).await {
        Ok(answer) => answer.status.map(|s| s.log_path).unwrap_or_default(),
        Err(error) => {
            return bad(
                StatusCode::BAD_REQUEST,
                format!("failed to get container status {id:?}: {error}\n"),
            );
        }
    };
    let path = std::path::PathBuf::from(path);
    if let Err(error) = std::fs::metadata(&path) {
        return bad(
            StatusCode::BAD_REQUEST,
            format!("failed to open log file {:?}: {error}\n", path.display()),
        );
    }
    let (tx, rx) = mpsc::channel(CHUNKS);
    // A follower ends with the server, not after the shutdown grace.
    let cancel = shutdown.child_token();
    tokio::spawn(async move {
        let still_running = || running(&runtime, &id);
        let read = read_log(&path, &options, tx, still_running, cancel);
        if let Err(error) = read.await {
            tracing::warn!(%error, "container log request ended early");
        }
    });
    let mut response = Response::new(ChannelBody(rx).boxed());
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// Whether container `id` runs (a failed status call counts as stopped).
async fn running(runtime: &Runtime, id: &str) -> bool {
    let request = v1::ContainerStatusRequest {
        container_id: id.to_owned(),
        verbose: false,
    };
    runtime.container_status(request).await.is_ok_and(|answer| {
        answer
            .status
            .is_some_and(|s| s.state == v1::ContainerState::ContainerRunning as i32)
    })
}

/// Exactly `N` non-empty, percent-decoded segments.
pub(super) fn path_segments<const N: usize>(rest: &str) -> Option<[String; N]> {
    let parts: Vec<String> = rest.split('/').map(path_decode).collect();
    if parts.iter().any(String::is_empty) {
        return None;
    }
    parts.try_into().ok()
}

pub(super) fn find_pod(pods: &[Pod], namespace: &str, name: &str) -> Option<Pod> {
    pods.iter()
        .find(|pod| {
            pod.metadata.namespace.as_deref().unwrap_or("default") == namespace
                && pod.metadata.name.as_deref() == Some(name)
        })
        .cloned()
}

/// Whether the pod's spec has `container` (app, init or ephemeral).
pub(super) fn has_container(pod: &Pod, container: &str) -> bool {
    let Some(spec) = &pod.spec else {
        return false;
    };
    spec.containers.iter().any(|c| c.name == container)
        || spec
            .init_containers
            .iter()
            .flatten()
            .any(|c| c.name == container)
        || spec
            .ephemeral_containers
            .iter()
            .flatten()
            .any(|c| c.name == container)
}

/// The status of `container` in `pod`, from any of its lists.
pub(super) fn status_of<'a>(pod: &'a Pod, container: &str) -> Option<&'a ContainerStatus> {
    let status = pod.status.as_ref()?;
    [
        &status.container_statuses,
        &status.init_container_statuses,
        &status.ephemeral_container_statuses,
    ]
    .into_iter()
    .flatten()
    .flatten()
    .find(|s| s.name == container)
}

/// The runtime ID of the instance whose log to read, as upstream's `validateContainerLogStatus`
/// chooses it; else upstream's message.
pub(super) fn container_id(
    pod: &Pod,
    pod_name: &str,
    container: &str,
    previous: bool,
) -> Result<String, String> {
    let Some(status) = status_of(pod, container) else {
        return Err(format!(
            "container {container:?} in pod {pod_name:?} is not available"
        ));
    };
    let state = status.state.clone().unwrap_or_default();
    let last = status
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .and_then(|t| t.container_id.clone())
        .filter(|id| !id.is_empty());
    let terminated = || format!("container {container:?} in pod {pod_name:?} is terminated");
    let id = if previous {
        last.ok_or_else(|| {
            format!("previous terminated container {container:?} in pod {pod_name:?} not found")
        })?
    } else if state.running.is_some() {
        status.container_id.clone().unwrap_or_default()
    } else if let Some(done) = &state.terminated {
        match done.container_id.clone().filter(|id| !id.is_empty()) {
            Some(id) => id,
            None => last.ok_or_else(terminated)?,
        }
    } else if let Some(id) = last {
        id
    } else if let Some(waiting) = &state.waiting {
        let reason = waiting.reason.clone().unwrap_or_default();
        return Err(match reason.as_str() {
            "ErrImagePull" => format!(
                "container {container:?} in pod {pod_name:?} is waiting to start: image can't be pulled"
            ),
            "ImagePullBackOff" => format!(
                "container {container:?} in pod {pod_name:?} is waiting to start: trying and failing to pull image"
            ),
            _ => {
                format!("container {container:?} in pod {pod_name:?} is waiting to start: {reason}")
            }
        });
    } else {
        return Err(format!(
            "container {container:?} in pod {pod_name:?} is waiting to start - no logs yet"
        ));
    };
    // `containerd://<id>`: the runtime wants the bare ID.
    Ok(id
        .split_once("://")
        .map_or(id.clone(), |(_, bare)| bare.to_owned()))
}

/// A body fed by a channel: each message a data frame, the end when the sender is gone.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}
