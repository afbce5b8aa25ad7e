//! The calls of kernlet's probes issued directly, for `cargo xtask bench probes`: per target and
//! per second, CRI `ExecSync` of `true`, a TCP connect, and an HTTP GET of `/`, each timed,
//! all targets at once as kernlet's probe tasks run them.
//!
//! ```text
//! probe_direct <endpoint> <seconds> <container-id>,<ip>,<port> ...
//! ```
//!
//! Prints one JSON object: `{"exec": [ms...], "tcp": [ms...], "http": [ms...], "failed": N}`.
#![expect(
    clippy::disallowed_methods,
    reason = "measures real time against a real runtime"
)]
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kernlet_cri::v1::{ExecSyncRequest, runtime_service_client::RuntimeServiceClient};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic::transport::Channel;

const USAGE: &str = "usage: probe_direct <endpoint> <seconds> <container-id>,<ip>,<port> ...";
/// As the bench's probes: `timeoutSeconds: 1` for tcp and http, 5 for exec.
const TIMEOUT: Duration = Duration::from_secs(1);
const EXEC_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
struct Target {
    container: String,
    address: String,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [endpoint, seconds, targets @ ..] = args.as_slice() else {
        bail!("{USAGE}");
    };
    let seconds: u64 = seconds.parse().context(USAGE)?;
    let targets: Vec<Target> = targets
        .iter()
        .map(|t| match t.split(',').collect::<Vec<_>>().as_slice() {
            [container, ip, port] => Ok(Target {
                container: (*container).to_owned(),
                address: format!("{ip}:{port}"),
            }),
            _ => bail!("target {t:?}: {USAGE}"),
        })
        .collect::<Result<_>>()?;
    let channel = kernlet_cri::connect(endpoint, Duration::from_secs(5))
        .await
        .with_context(|| format!("connecting to {endpoint}"))?;
    let client = RuntimeServiceClient::new(channel);
    let (mut exec, mut tcp, mut http, mut failed) = (Vec::new(), Vec::new(), Vec::new(), 0_usize);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    for _ in 0..seconds {
        tick.tick().await;
        let tasks: Vec<_> = targets
            .iter()
            .map(|t| tokio::spawn(round(client.clone(), t.clone())))
            .collect();
        for task in tasks {
            let [e, t, h] = task.await.context("a probe task panicked")?;
            for (sample, into) in [(e, &mut exec), (t, &mut tcp), (h, &mut http)] {
                match sample {
                    Some(ms) => into.push(ms),
                    None => failed += 1,
                }
            }
        }
    }
    println!(
        "{}",
        serde_json::json!({"exec": exec, "tcp": tcp, "http": http, "failed": failed})
    );
    Ok(())
}

/// One of each call against `target`, concurrently; milliseconds, `None` for a failure.
async fn round(client: RuntimeServiceClient<Channel>, target: Target) -> [Option<f64>; 3] {
    let (e, t, h) = tokio::join!(
        timed(exec(client, &target.container), EXEC_TIMEOUT),
        timed(tcp(&target.address), TIMEOUT),
        timed(http(&target.address), TIMEOUT),
    );
    [e, t, h]
}

async fn timed(call: impl Future<Output = Result<()>>, limit: Duration) -> Option<f64> {
    let started = Instant::now();
    let ok = tokio::time::timeout(limit, call)
        .await
        .is_ok_and(|r| r.is_ok());
    ok.then(|| started.elapsed().as_secs_f64() * 1e3)
}

async fn exec(mut client: RuntimeServiceClient<Channel>, container: &str) -> Result<()> {
    let request = ExecSyncRequest {
        container_id: container.to_owned(),
        cmd: vec!["true".into()],
        timeout: 5,
    };
    let response = client.exec_sync(request).await?.into_inner();
    if response.exit_code != 0 {
        bail!("exit code {}", response.exit_code);
    }
    Ok(())
}

async fn tcp(address: &str) -> Result<()> {
    TcpStream::connect(address).await?;
    Ok(())
}

async fn http(address: &str) -> Result<()> {
    let mut stream = TcpStream::connect(address).await?;
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {address}\r\nUser-Agent: probe_direct\r\nAccept: */*\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    let ok = answer.starts_with(b"HTTP/1.1 2") || answer.starts_with(b"HTTP/1.0 2");
    if !ok {
        bail!(
            "{}",
            String::from_utf8_lossy(&answer[..answer.len().min(40)])
        );
    }
    Ok(())
}
