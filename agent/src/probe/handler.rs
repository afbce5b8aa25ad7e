//! Probe handlers as upstream runs them (`pkg/probe/{exec,http,tcp,grpc}`): one attempt, bounded
//! by the probe's `timeoutSeconds`, its output capped at 10 KiB. Lifecycle hooks reuse [`exec`]
//! and [`http_get`].
use std::{net::IpAddr, time::Duration};

use k8s_openapi::{
    api::core::v1::{ContainerPort, GRPCAction, HTTPGetAction, Probe, TCPSocketAction},
    apimachinery::pkg::util::intstr::IntOrString,
};
use kernlet_cri::v1;
use tokio::net::TcpStream;

use crate::cri::{Cri, CriError};

/// Upstream's `maxReadLength` / `maxRespBodyLength`: output kept from a command or a body.
pub const MAX_OUTPUT: usize = 10 * 1024;

/// What one probe attempt concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Counts as a success; the output says what was odd (a redirect not followed).
    Warning(String),
    Failure(String),
    /// The probe could not be run (a bad port name, a runtime error): no result, as upstream
    /// throws such attempts away.
    Error(String),
}

impl Outcome {
    /// `Some(success)` for a result; `None` for an error.
    #[must_use]
    pub fn passed(&self) -> Option<bool> {
        match self {
            Self::Success | Self::Warning(_) => Some(true),
            Self::Failure(_) => Some(false),
            Self::Error(_) => None,
        }
    }

    /// upstream's `prober_probe_total` `result` label.
    #[must_use]
    pub fn label(&self) -> &'static str {
        match self.passed() {
            Some(true) => "successful",
            Some(false) => "failed",
            None => "unknown",
        }
    }
}

/// The container a probe is run against.
#[derive(Debug, Clone)]
pub struct Target {
    /// The runtime's container ID (no scheme).
    pub container_id: String,
    /// The container's ports, to resolve ports given by name.
    pub ports: Vec<ContainerPort>,
    /// The pod's IP (the node's for hostNetwork pods): the default host.
    pub pod_ip: Option<IpAddr>,
}

/// Runs the handler `probe` names once against `target`.
pub async fn run(probe: &Probe, target: &Target, runtime: &dyn Cri) -> Outcome {
    let timeout = timeout_of(probe);
    if let Some(action) = &probe.exec {
        let command = action.command.clone().unwrap_or_default();
        return exec(runtime, &target.container_id, command, Some(timeout)).await;
    }
    network(probe, target, timeout).await
}

/// `timeoutSeconds`, at least a second (the API default and minimum).
pub(super) fn timeout_of(probe: &Probe) -> Duration {
    Duration::from_secs(
        u64::try_from(probe.timeout_seconds.unwrap_or(1))
            .unwrap_or(1)
            .max(1),
    )
}

/// The handlers that dial the pod: httpGet, tcpSocket, grpc.
pub(super) async fn network(probe: &Probe, target: &Target, timeout: Duration) -> Outcome {
    if let Some(action) = &probe.http_get {
        return http_get(action, target, timeout).await;
    }
    if let Some(action) = &probe.tcp_socket {
        return tcp_socket(action, target, timeout).await;
    }
    if let Some(action) = &probe.grpc {
        return grpc(action, target, timeout).await;
    }
    Outcome::Error("probe has no handler (exec, httpGet, tcpSocket or grpc)".into())
}

/// The httpGet handler (`pkg/probe/http`): 2xx passes, 3xx passes with a warning (a redirect
/// to another host, not followed), anything else fails.
pub async fn http_get(action: &HTTPGetAction, target: &Target, timeout: Duration) -> Outcome {
    super::http::get(action, target, timeout).await
}

/// httpGet as a lifecycle hook runs it (upstream's `runHTTPHandler`): any answer passes, whatever
/// its status code; only a request that gets no answer fails.
pub async fn http_hook(
    action: &HTTPGetAction,
    target: &Target,
    timeout: Duration,
) -> Result<(), String> {
    match super::http::get(action, target, timeout).await {
        Outcome::Success | Outcome::Warning(_) => Ok(()),
        Outcome::Failure(m) if m.starts_with(super::http::STATUS_FAILURE) => Ok(()),
        Outcome::Failure(m) | Outcome::Error(m) => Err(m),
    }
}

/// `ExecSync` of `command` with `timeout`: exit 0 passes; the output (stdout then stderr,
/// capped) says why another code failed. A command that outlives its timeout fails, as
/// upstream's `ExecProbeTimeout` (GA) has it. Without a timeout (postStart hooks, as upstream)
/// the call is bounded by the runtime request timeout only.
pub async fn exec(
    runtime: &dyn Cri,
    container_id: &str,
    command: Vec<String>,
    timeout: Option<Duration>,
) -> Outcome {
    let shown = format!("{command:?}");
    let request = v1::ExecSyncRequest {
        container_id: container_id.to_owned(),
        cmd: command,
        timeout: timeout.map_or(0, |t| i64::try_from(t.as_secs()).unwrap_or(i64::MAX)),
    };
    // The runtime enforces the timeout; this bound only covers a runtime that does not answer.
    let bound = timeout.map_or(Duration::from_hours(1), |t| t + Duration::from_secs(2));
    let answer = tokio::time::timeout(bound, runtime.exec_sync(request));
    match answer.await {
        Ok(Ok(response)) if response.exit_code == 0 => Outcome::Success,
        Ok(Ok(response)) => {
            let mut output = response.stdout;
            output.extend_from_slice(&response.stderr);
            output.truncate(MAX_OUTPUT);
            Outcome::Failure(String::from_utf8_lossy(&output).into_owned())
        }
        Ok(Err(error)) if timed_out(&error) => {
            Outcome::Failure(format!("command {shown} timed out"))
        }
        Err(_) => Outcome::Failure(format!("command {shown} timed out")),
        Ok(Err(error)) => Outcome::Error(format!("exec {shown}: {error}")),
    }
}

fn timed_out(error: &CriError) -> bool {
    matches!(error, CriError::Call { status, .. } if status.code() == tonic::Code::DeadlineExceeded)
}

/// The port a probe names: a number, or the name of one of the container's ports.
pub fn resolve_port(port: &IntOrString, ports: &[ContainerPort]) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port)
            .ok_or_else(|| format!("couldn't find port: {name}"))?,
    };
    u16::try_from(number)
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("invalid port number: {number}"))
}

/// The host a handler dials: the action's `host`, else the pod IP.
pub fn host(explicit: Option<&str>, target: &Target) -> Result<String, String> {
    match explicit.filter(|h| !h.is_empty()) {
        Some(host) => Ok(host.to_owned()),
        None => target
            .pod_ip
            .map(|ip| ip.to_string())
            .ok_or_else(|| "the pod has no IP yet".to_owned()),
    }
}

/// `host:port` with IPv6 addresses bracketed.
#[must_use]
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A TCP connection opened within the timeout passes (and is closed at once).
async fn tcp_socket(action: &TCPSocketAction, target: &Target, timeout: Duration) -> Outcome {
    let (host, port) = match (
        host(action.host.as_deref(), target),
        resolve_port(&action.port, &target.ports),
    ) {
        (Ok(host), Ok(port)) => (host, port),
        (Err(e), _) | (_, Err(e)) => return Outcome::Error(e),
    };
    let address = join_host_port(&host, port);
    match tokio::time::timeout(timeout, TcpStream::connect(&address)).await {
        Ok(Ok(_)) => Outcome::Success,
        Ok(Err(error)) => Outcome::Failure(format!("dial tcp {address}: {error}")),
        Err(_) => Outcome::Failure(format!("dial tcp {address}: i/o timeout")),
    }
}

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

/// `grpc.health.v1.HealthCheckResponse`; `status` 1 is `SERVING`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

const SERVING: i32 = 1;
const STATUS_NAMES: [&str; 4] = ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"];

/// `grpc.health.v1.Health/Check` on the pod IP (plaintext, as upstream): `SERVING` passes.
async fn grpc(action: &GRPCAction, target: &Target, timeout: Duration) -> Outcome {
    let host = match host(None, target) {
        Ok(host) => host,
        Err(e) => return Outcome::Error(e),
    };
    let Some(port) = u16::try_from(action.port).ok().filter(|&p| p > 0) else {
        return Outcome::Error(format!("invalid port number: {}", action.port));
    };
    let service = action.service.clone().unwrap_or_default();
    let address = format!("http://{}", join_host_port(&host, port));
    let endpoint = match tonic::transport::Endpoint::from_shared(address.clone()) {
        Ok(endpoint) => endpoint.connect_timeout(timeout).timeout(timeout),
        Err(error) => return Outcome::Error(format!("grpc address {address}: {error}")),
    };
    let channel = match tokio::time::timeout(timeout, endpoint.connect()).await {
        Ok(Ok(channel)) => channel,
        Ok(Err(error)) => {
            return Outcome::Failure(format!(
                "timeout: failed to connect service {address:?} within {}s: {error}",
                timeout.as_secs()
            ));
        }
        Err(_) => {
            return Outcome::Failure(format!(
                "timeout: failed to connect service {address:?} within {}s",
                timeout.as_secs()
            ));
        }
    };
    let mut client = tonic::client::Grpc::new(channel);
    if let Err(error) = client.ready().await {
        return Outcome::Failure(format!("grpc channel to {address} not ready: {error}"));
    }
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check");
    let request = tonic::Request::new(HealthCheckRequest { service });
    let codec = tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default();
    match client.unary(request, path, codec).await {
        Ok(response) if response.get_ref().status == SERVING => Outcome::Success,
        Ok(response) => {
            let status = response.get_ref().status;
            let name = usize::try_from(status)
                .ok()
                .and_then(|i| STATUS_NAMES.get(i))
                .copied()
                .unwrap_or("UNKNOWN");
            Outcome::Failure(format!("service unhealthy (responded with {name:?})"))
        }
        Err(status) if status.code() == tonic::Code::Unimplemented => Outcome::Failure(format!(
            "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {}",
            status.message()
        )),
        Err(status) if status.code() == tonic::Code::DeadlineExceeded => Outcome::Failure(format!(
            "timeout: health rpc did not complete within {}s",
            timeout.as_secs()
        )),
        Err(status) => Outcome::Failure(format!("error: health rpc probe failed: {status}")),
    }
}
