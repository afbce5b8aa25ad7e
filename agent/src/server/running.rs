//! `GET /runningpods/`: the pods the runtime runs, whatever the pod sources say (upstream
//! `getRunningPods`: the runtime's pods with `ToAPIPod`). Each is a `v1.Pod` of the sandbox's
//! name, namespace and UID with its running containers (name and image) as its spec; pods
//! whose sandbox is not ready are left out, as `GetPods(all=false)` does. Encoded as `/pods` is.

use std::collections::BTreeMap;

use hyper::{Response, StatusCode};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kernlet_cri::v1;

use super::Providers;
use super::podlist::encode_pod_list;
use super::routes::{Body, TEXT, respond};
use crate::cri::Runtime;

/// The route.
pub(super) async fn running_pods(providers: &Providers) -> Response<Body> {
    let Some(runtime) = &providers.runtime else {
        return respond(
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            "no container runtime\n",
        );
    };
    let pods = match list(runtime).await {
        Ok(pods) => pods,
        Err(error) => {
            tracing::warn!(%error, "cannot list the runtime's pods");
            return respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                TEXT,
                format!("Internal Error: {error}\n"),
            );
        }
    };
    match encode_pod_list(&pods) {
        Ok(body) => respond(StatusCode::OK, "application/json", body),
        Err(error) => respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            TEXT,
            format!("Internal Error: {error}\n"),
        ),
    }
}

async fn list(runtime: &Runtime) -> Result<Vec<Pod>, crate::cri::CriError> {
    let ready = v1::PodSandboxFilter {
        state: Some(v1::PodSandboxStateValue {
            state: v1::PodSandboxState::SandboxReady as i32,
        }),
        ..Default::default()
    };
    let sandboxes = runtime
        .list_pod_sandbox(v1::ListPodSandboxRequest {
            filter: Some(ready),
        })
        .await?
        .items;
    let running = v1::ContainerFilter {
        state: Some(v1::ContainerStateValue {
            state: v1::ContainerState::ContainerRunning as i32,
        }),
        ..Default::default()
    };
    let containers = runtime
        .list_containers(v1::ListContainersRequest {
            filter: Some(running),
        })
        .await?
        .containers;
    Ok(to_pods(&sandboxes, &containers))
}

/// Upstream's `ToAPIPod` for each ready sandbox and its running containers, by pod name.
pub(super) fn to_pods(sandboxes: &[v1::PodSandbox], containers: &[v1::Container]) -> Vec<Pod> {
    let mut by_sandbox: BTreeMap<&str, Vec<Container>> = BTreeMap::new();
    for container in containers {
        by_sandbox
            .entry(container.pod_sandbox_id.as_str())
            .or_default()
            .push(Container {
                name: container
                    .metadata
                    .as_ref()
                    .map(|m| m.name.clone())
                    .unwrap_or_default(),
                image: container.image.as_ref().map(|i| i.image.clone()),
                ..Container::default()
            });
    }
    let mut pods: Vec<Pod> = sandboxes
        .iter()
        .map(|sandbox| {
            let meta = sandbox.metadata.clone().unwrap_or_default();
            let mut containers = by_sandbox.remove(sandbox.id.as_str()).unwrap_or_default();
            containers.sort_by(|a, b| a.name.cmp(&b.name));
            Pod {
                metadata: ObjectMeta {
                    name: Some(meta.name),
                    namespace: Some(meta.namespace),
                    uid: Some(meta.uid),
                    ..ObjectMeta::default()
                },
                spec: Some(PodSpec {
                    containers,
                    ..PodSpec::default()
                }),
                status: None,
            }
        })
        .collect();
    pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    pods
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_sandboxes_with_their_running_containers() {
        let sandbox = |id: &str, name: &str| v1::PodSandbox {
            id: id.to_owned(),
            metadata: Some(v1::PodSandboxMetadata {
                name: name.to_owned(),
                namespace: "default".to_owned(),
                uid: format!("uid-{name}"),
                attempt: 0,
            }),
            ..Default::default()
        };
        let container = |sandbox: &str, name: &str| v1::Container {
            pod_sandbox_id: sandbox.to_owned(),
            metadata: Some(v1::ContainerMetadata {
                name: name.to_owned(),
                attempt: 0,
            }),
            image: Some(v1::ImageSpec {
                image: "busybox".to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pods = to_pods(
            &[sandbox("s2", "web"), sandbox("s1", "empty")],
            &[
                container("s2", "b"),
                container("s2", "a"),
                container("gone", "x"),
            ],
        );
        let names: Vec<_> = pods
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["empty", "web"]);
        assert!(pods[0].spec.as_ref().unwrap().containers.is_empty());
        let web = &pods[1].spec.as_ref().unwrap().containers;
        assert_eq!(
            web.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(web[0].image.as_deref(), Some("busybox"));
        assert_eq!(pods[1].metadata.uid.as_deref(), Some("uid-web"));
    }
}
