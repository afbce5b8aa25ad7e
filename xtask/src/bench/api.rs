//! `cargo xtask bench api`: cluster mode's API side, against a real kube-apiserver
//! ([`crate::control_plane`]) with a release kernlet joined as a node (a `system:node` client
//! certificate, on a fresh runtime fixture, configured as the startup bench's kernlet).
//!
//! For N = 1, 10 and 50 pods bound to the node (`spec.nodeName`, one busybox container
//! `sleep 3600`, `imagePullPolicy: Never`), created one after the other as the admin:
//! - **create-to-Running**: from the first `POST` until the API server shows all N pods
//!   `Running` with every container running, read every [`super::startup::POLL`] — the whole
//!   path: kernlet's watch, admission, the runtime, the status writer;
//! - **status writes per pod start**: the growth of kernlet's own
//!   `kernlet_api_requests_total{call="pod-status",result="ok"}` over that start (read 2 s after
//!   the last pod runs, so trailing writes count), divided by N;
//! - **API requests per pod start**: the same for every call kernlet made (Lease and node status
//!   included, so it is an upper bound).
//!
//! Between sizes the pods are deleted (grace 1 s) and the bench waits until their objects are
//! gone. Each size is repeated `--repeats` times; the table shows median (min–max).
use std::{
    fs, thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::{
    Summary, cargo_build_release, machine, markdown_table, poll,
    startup::{Kernlet, POLL, with_fixture},
    target_dir,
};
use crate::{
    control_plane::ControlPlane,
    images::TEST_IMAGE,
    k8s::{self, K8sBin},
    setup,
};

const NODE: &str = "kernlet-bench";

#[derive(clap::Args, Debug)]
pub struct ApiArgs {
    /// Pod counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 10, 50])]
    pub pods: Vec<usize>,
    /// How often each measurement is repeated; the table shows median (min–max).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
}

/// One measurement.
#[derive(Debug, Clone, Copy)]
struct Sample {
    pods: usize,
    seconds: f64,
    status_writes: f64,
    requests: f64,
}

pub fn cli(args: &ApiArgs) -> Result<()> {
    setup::ensure()?;
    cargo_build_release(&["-p", "kernlet", "--bin", "kernlet"])?;
    let binary = target_dir().join("release/kernlet");
    let bin = match k8s::find()? {
        K8sBin::Found(bin) => bin,
        K8sBin::Missing(reason) => bail!("the API bench needs the Kubernetes binaries: {reason}"),
    };
    let plane = ControlPlane::start(&bin)?;
    plane.default_service_account()?;
    let pki = plane.issue("node", &format!("system:node:{NODE}"), &["system:nodes"])?;
    let kubeconfig = plane.kubeconfig("node", &pki)?;
    let flag = format!("--kubeconfig={}", kubeconfig.display());
    let samples = with_fixture(|fixture| {
        let mut kernlet = Kernlet::start_with(&binary, fixture, &[&flag])?;
        poll(
            "the node is Ready",
            Duration::from_millis(100),
            Duration::from_mins(1),
            || Ok(node_ready(&plane).then_some(())),
        )?;
        let mut samples = Vec::new();
        for round in 0..args.repeats {
            for &pods in &args.pods {
                kernlet.check_alive()?;
                let sample = measure(&plane, &kernlet, pods, &format!("r{round}n{pods}"))
                    .with_context(|| format!("kernlet log tail:\n{}", kernlet.log_tail(20)))?;
                println!(
                    "{pods} pods: {:.2} s to Running, {:.2} status writes and {:.2} requests per pod",
                    sample.seconds, sample.status_writes, sample.requests
                );
                samples.push(sample);
            }
        }
        kernlet.stop()?;
        Ok(samples)
    })?;
    let table = table(&args.pods, &samples)?;
    let report = format!(
        "# cargo xtask bench api\n\n{}\n\n{table}\n",
        machine().trim_end()
    );
    let out = target_dir().join("bench/api.md");
    fs::create_dir_all(target_dir().join("bench"))?;
    fs::write(&out, &report).with_context(|| format!("writing {}", out.display()))?;
    println!("\n{report}\n(written to {})", out.display());
    Ok(())
}

fn node_ready(plane: &ControlPlane) -> bool {
    plane
        .get_json(&format!("/api/v1/nodes/{NODE}"))
        .is_ok_and(|node| {
            node["status"]["conditions"].as_array().is_some_and(|all| {
                all.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        })
}

fn pod(name: &str, label: &str) -> String {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"bench": label}},
        "spec": {
            "nodeName": NODE, "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "app", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
            }]
        }
    })
    .to_string()
}

/// How many of the listed pods are `Running` with every container running.
fn running(list: &Value) -> usize {
    let items = list["items"].as_array().map_or(&[][..], Vec::as_slice);
    items
        .iter()
        .filter(|pod| {
            pod["status"]["phase"] == "Running"
                && pod["status"]["containerStatuses"]
                    .as_array()
                    .is_some_and(|all| all.iter().all(|c| c["state"]["running"].is_object()))
        })
        .count()
}

/// kernlet's `kernlet_api_requests_total` with result `ok`: for `call`, or for every call.
fn api_requests(kernlet: &Kernlet, call: Option<&str>) -> Result<f64> {
    let metrics = kernlet.get("/metrics")?;
    let mut total = 0.0;
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("kernlet_api_requests_total{") else {
            continue;
        };
        let (labels, value) = rest.split_once("} ").unwrap_or_default();
        let wanted = call.is_none_or(|call| labels.contains(&format!("call=\"{call}\"")));
        if wanted && labels.contains("result=\"ok\"") {
            total += value.trim().parse::<f64>().unwrap_or(0.0);
        }
    }
    Ok(total)
}

fn measure(plane: &ControlPlane, kernlet: &Kernlet, pods: usize, label: &str) -> Result<Sample> {
    let admin = plane.client(&plane.admin);
    let list = format!("/api/v1/namespaces/default/pods?labelSelector=bench%3D{label}");
    let (writes, requests) = (
        api_requests(kernlet, Some("pod-status"))?,
        api_requests(kernlet, None)?,
    );
    let started = Instant::now();
    for index in 0..pods {
        let body = pod(&format!("{label}-{index}"), label);
        let (code, answer) = admin.send("POST", "/api/v1/namespaces/default/pods", &body)?;
        if code != 201 {
            bail!("creating pod {index}: {code} {answer}");
        }
    }
    poll(
        &format!("{pods} pods are Running in the API"),
        POLL,
        Duration::from_mins(3),
        || Ok((running(&plane.get_json(&list)?) == pods).then_some(())),
    )?;
    let seconds = started.elapsed().as_secs_f64();
    thread::sleep(Duration::from_secs(2));
    let status_writes = (api_requests(kernlet, Some("pod-status"))? - writes) / pods as f64;
    let requests = (api_requests(kernlet, None)? - requests) / pods as f64;
    let (code, answer) = admin.send("DELETE", &list, "")?;
    if code != 200 {
        bail!("deleting the pods: {code} {answer}");
    }
    let gone = poll(
        "the pods are gone",
        Duration::from_millis(200),
        Duration::from_mins(2),
        || {
            let left = plane.get_json(&list)?;
            Ok(left["items"]
                .as_array()
                .is_some_and(Vec::is_empty)
                .then_some(()))
        },
    );
    if let Err(error) = gone {
        let left = plane.get_json(&list).unwrap_or_default();
        let names: Vec<String> = left["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let meta = &p["metadata"];
                format!(
                    "{} {} {}",
                    meta["name"], p["status"]["phase"], meta["deletionTimestamp"]
                )
            })
            .collect();
        let log = fs::read_to_string(kernlet.dir.join("kernlet.log")).unwrap_or_default();
        let _ = fs::write(target_dir().join("bench/api-kernlet.log"), log);
        bail!("{error:#}: left {names:?}");
    }
    Ok(Sample {
        pods,
        seconds,
        status_writes,
        requests,
    })
}

fn table(sizes: &[usize], samples: &[Sample]) -> Result<String> {
    let mut rows = Vec::new();
    for &pods in sizes {
        let of = |field: fn(&Sample) -> f64| {
            let values: Vec<f64> = samples
                .iter()
                .filter(|s| s.pods == pods)
                .map(field)
                .collect();
            Summary::of(&values).context("no samples")
        };
        rows.push(vec![
            pods.to_string(),
            of(|s| s.seconds)?.display(2, "s"),
            of(|s| s.status_writes)?.display(2, ""),
            of(|s| s.requests)?.display(2, ""),
        ]);
    }
    Ok(markdown_table(
        &[
            "pods",
            "create-to-Running (API)",
            "status writes per pod",
            "API requests per pod (all calls)",
        ],
        &rows,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_pods_running_with_every_container() {
        let list = serde_json::json!({"items": [
            {"status": {"phase": "Running", "containerStatuses": [{"state": {"running": {}}}]}},
            {"status": {"phase": "Running", "containerStatuses": [{"state": {"waiting": {}}}]}},
            {"status": {"phase": "Pending"}},
        ]});
        assert_eq!(running(&list), 1);
    }
}
