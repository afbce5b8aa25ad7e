//! One typed method per CRI call. Each goes through [`Runtime::call`], so every call has its
//! deadline and is timed in `kernlet_cri_request_duration_seconds{method}`, and the method name
//! is written once, here, rather than at each call site. The same list declares the [`Cri`] trait
//! the reconciler calls through.
//!
//! Deadlines are `runtimeRequestTimeout`, except where upstream makes room for the work the call
//! waits on: `RunPodSandbox` gets twice the timeout (upstream's `remote_runtime.go`),
//! `StopContainer` adds the grace period, `ExecSync` the command's timeout, and `PullImage`
//! (exempt from the timeout upstream) gets five times the timeout. `RunPodSandbox` and
//! `StartContainer` wait for admission ([`super::gate`]) before their deadline starts.
//! `ListContainers` and `ContainerStatus` overlay exits CRI has not recorded yet, when the client
//! carries exit records ([`super::exits`]).
use std::time::Duration;

use kernlet_cri::v1;

use super::{
    CallFuture, CriError, Runtime,
    exits::{ExitRecords, RecordedExit},
};

macro_rules! calls {
    ($($service:ident $name:ident $method:literal ($request:ident) -> $response:ident $(* $factor:literal)? $(, queued in $lane:ident)?;)*) => {
        /// The CRI calls kernlet makes, as a trait so that logic above the client (the reconciler)
        /// can run against a test double in unit tests. Object-safe: each call is the boxed
        /// [`CallFuture`] the client returns. [`Runtime`] is the implementation over gRPC.
        pub trait Cri: Send + Sync + std::fmt::Debug {
            $(
                #[doc = concat!("CRI `", $method, "`.")]
                fn $name(&self, request: v1::$request) -> CallFuture<'static, v1::$response>;
            )*
            /// CRI `StopContainer`; the runtime may take the request's grace period.
            fn stop_container(
                &self,
                request: v1::StopContainerRequest,
            ) -> CallFuture<'static, v1::StopContainerResponse>;
            /// CRI `ExecSync`; the command may run for the request's timeout.
            fn exec_sync(&self, request: v1::ExecSyncRequest)
                -> CallFuture<'static, v1::ExecSyncResponse>;
            /// CRI `PullImage`.
            fn pull_image(&self, request: v1::PullImageRequest)
                -> CallFuture<'static, v1::PullImageResponse>;
            /// CRI `ListContainers`.
            fn list_containers(&self, request: v1::ListContainersRequest)
                -> CallFuture<'static, v1::ListContainersResponse>;
            /// CRI `ContainerStatus`.
            fn container_status(&self, request: v1::ContainerStatusRequest)
                -> CallFuture<'static, v1::ContainerStatusResponse>;
            /// The exit of container `id` that the runtime's events reported ahead of CRI,
            /// without a call; `None` when there is none or this client keeps no records.
            fn recorded_exit(&self, _id: &str) -> Option<RecordedExit> {
                None
            }
        }

        impl Runtime {
            $(
                #[doc = concat!("CRI `", $method, "`.")]
                pub fn $name(&self, request: v1::$request) -> CallFuture<'static, v1::$response> {
                    let mut client = self.$service.clone();
                    let deadline = self.timeout * (1 $(* $factor)?);
                    let call = self.call($method, deadline, async move { client.$name(request).await });
                    $(let call = self.gate.$lane(call, deadline);)?
                    call
                }
            )*
        }

        impl Cri for Runtime {
            $(
                fn $name(&self, request: v1::$request) -> CallFuture<'static, v1::$response> {
                    Runtime::$name(self, request)
                }
            )*
            fn stop_container(
                &self,
                request: v1::StopContainerRequest,
            ) -> CallFuture<'static, v1::StopContainerResponse> {
                Runtime::stop_container(self, request)
            }
            fn exec_sync(&self, request: v1::ExecSyncRequest)
                -> CallFuture<'static, v1::ExecSyncResponse> {
                Runtime::exec_sync(self, request)
            }
            fn pull_image(&self, request: v1::PullImageRequest)
                -> CallFuture<'static, v1::PullImageResponse> {
                Runtime::pull_image(self, request)
            }
            fn list_containers(&self, request: v1::ListContainersRequest)
                -> CallFuture<'static, v1::ListContainersResponse> {
                Runtime::list_containers(self, request)
            }
            fn container_status(&self, request: v1::ContainerStatusRequest)
                -> CallFuture<'static, v1::ContainerStatusResponse> {
                Runtime::container_status(self, request)
            }
            fn recorded_exit(&self, id: &str) -> Option<RecordedExit> {
                self.exits.as_ref()?.get(id)
            }
        }
    };
}

calls! {
    runtime list_pod_sandbox "ListPodSandbox" (ListPodSandboxRequest) -> ListPodSandboxResponse;
    runtime pod_sandbox_status "PodSandboxStatus" (PodSandboxStatusRequest) -> PodSandboxStatusResponse;
    // Twice the timeout, as upstream's remote runtime client gives sandbox creation (4 m by
    // default): under load a sandbox's network setup alone can pass 2 m, and a retry after a
    // client-side timeout only collides with the creation still under way.
    runtime run_pod_sandbox "RunPodSandbox" (RunPodSandboxRequest) -> RunPodSandboxResponse * 2, queued in sandbox;
    runtime stop_pod_sandbox "StopPodSandbox" (StopPodSandboxRequest) -> StopPodSandboxResponse;
    runtime remove_pod_sandbox "RemovePodSandbox" (RemovePodSandboxRequest) -> RemovePodSandboxResponse;
    runtime create_container "CreateContainer" (CreateContainerRequest) -> CreateContainerResponse;
    runtime start_container "StartContainer" (StartContainerRequest) -> StartContainerResponse, queued in start;
    runtime remove_container "RemoveContainer" (RemoveContainerRequest) -> RemoveContainerResponse;
    runtime reopen_container_log "ReopenContainerLog" (ReopenContainerLogRequest) -> ReopenContainerLogResponse;
    runtime list_container_stats "ListContainerStats" (ListContainerStatsRequest) -> ListContainerStatsResponse;
    images image_status "ImageStatus" (ImageStatusRequest) -> ImageStatusResponse;
    images image_fs_info "ImageFsInfo" (ImageFsInfoRequest) -> ImageFsInfoResponse;
}

impl Runtime {
    /// CRI `ListContainers`, with exits the runtime's events reported but CRI has not recorded
    /// yet overlaid ([`super::exits`]) when this client has exit records.
    pub fn list_containers(
        &self,
        request: v1::ListContainersRequest,
    ) -> CallFuture<'static, v1::ListContainersResponse> {
        let mut client = self.runtime.clone();
        let call = self.call("ListContainers", self.timeout, async move {
            client.list_containers(request).await
        });
        self.with_exits(call, |exits, response| {
            exits.patch_list(&mut response.containers);
        })
    }

    /// CRI `ContainerStatus`, with the same overlay as [`Self::list_containers`].
    pub fn container_status(
        &self,
        request: v1::ContainerStatusRequest,
    ) -> CallFuture<'static, v1::ContainerStatusResponse> {
        let mut client = self.runtime.clone();
        let call = self.call("ContainerStatus", self.timeout, async move {
            client.container_status(request).await
        });
        self.with_exits(call, |exits, response| {
            if let Some(status) = response.status.as_mut() {
                exits.patch_status(status);
            }
        })
    }

    /// `call`, with `patch` applied to its answer when this client has exit records.
    fn with_exits<T: Send + 'static>(
        &self,
        call: CallFuture<'static, T>,
        patch: impl FnOnce(&ExitRecords, &mut T) + Send + 'static,
    ) -> CallFuture<'static, T> {
        let Some(exits) = self.exits.clone() else {
            return call;
        };
        Box::pin(async move {
            let mut response = call.await?;
            patch(&exits, &mut response);
            Ok(response)
        })
    }

    /// CRI `StopContainer`: the runtime may take the request's grace period before it kills.
    pub fn stop_container(
        &self,
        request: v1::StopContainerRequest,
    ) -> CallFuture<'static, v1::StopContainerResponse> {
        let grace = Duration::from_secs(u64::try_from(request.timeout).unwrap_or(0));
        let mut client = self.runtime.clone();
        self.call("StopContainer", self.timeout + grace, async move {
            client.stop_container(request).await
        })
    }

    /// CRI `ExecSync`: the command may run for the request's timeout.
    pub fn exec_sync(
        &self,
        request: v1::ExecSyncRequest,
    ) -> CallFuture<'static, v1::ExecSyncResponse> {
        let runs = Duration::from_secs(u64::try_from(request.timeout).unwrap_or(0));
        let mut client = self.runtime.clone();
        self.call("ExecSync", self.timeout + runs, async move {
            client.exec_sync(request).await
        })
    }

    /// CRI `PullImage`: no `runtimeRequestTimeout` upstream; bounded generously all the same.
    pub fn pull_image(
        &self,
        request: v1::PullImageRequest,
    ) -> CallFuture<'static, v1::PullImageResponse> {
        let mut client = self.images.clone();
        self.call("PullImage", self.timeout * 5, async move {
            client.pull_image(request).await
        })
    }

    /// CRI `GetContainerEvents`: the stream of container events, for as long as the runtime keeps
    /// it open (so it has no deadline; opening it is not timed either).
    pub async fn container_events(
        &self,
    ) -> Result<tonic::Streaming<v1::ContainerEventResponse>, CriError> {
        let mut client = self.runtime.clone();
        client
            .get_container_events(v1::GetEventsRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| CriError::Call {
                method: "GetContainerEvents",
                status,
            })
    }
}

/// The streaming calls behind the kubelet's `/exec`, `/attach` and `/portForward`: each asks the
/// runtime for a one-time URL on its own streaming server, which the kubelet then proxies to.
/// Not in [`Cri`]: the reconciler never streams.
impl Runtime {
    /// CRI `Exec`.
    pub fn exec(&self, request: v1::ExecRequest) -> CallFuture<'static, v1::ExecResponse> {
        let mut client = self.runtime.clone();
        self.call(
            "Exec",
            self.timeout,
            async move { client.exec(request).await },
        )
    }

    /// CRI `Attach`.
    pub fn attach(&self, request: v1::AttachRequest) -> CallFuture<'static, v1::AttachResponse> {
        let mut client = self.runtime.clone();
        self.call("Attach", self.timeout, async move {
            client.attach(request).await
        })
    }

    /// CRI `PortForward`.
    pub fn port_forward(
        &self,
        request: v1::PortForwardRequest,
    ) -> CallFuture<'static, v1::PortForwardResponse> {
        let mut client = self.runtime.clone();
        self.call("PortForward", self.timeout, async move {
            client.port_forward(request).await
        })
    }
}

/// What the node reports of its runtime in cluster mode (the Node's `Ready` condition and
/// `status.images`). Not in [`Cri`]: the reconciler never asks.
impl Runtime {
    /// CRI `Status`: whether the runtime and its network are ready.
    pub fn status(&self) -> CallFuture<'static, v1::StatusResponse> {
        let mut client = self.runtime.clone();
        self.call("Status", self.timeout, async move {
            client.status(v1::StatusRequest { verbose: false }).await
        })
    }

    /// CRI `ListImages`.
    pub fn list_images(&self) -> CallFuture<'static, v1::ListImagesResponse> {
        let mut client = self.images.clone();
        self.call("ListImages", self.timeout, async move {
            client
                .list_images(v1::ListImagesRequest { filter: None })
                .await
        })
    }
}
