//! Cluster mode's certificates against the real control plane, its controller manager signing
//! certificates valid for 2m30s (so renewals come within the test):
//!
//! - `--bootstrap-kubeconfig`: a node with only a bootstrap token gets its client certificate
//!   through a CSR the controller manager approves and signs; a restart reuses it.
//! - `rotateCertificates`: the client certificate is renewed with the node's own credentials
//!   before it expires, and the node keeps renewing its Lease after the first one expired.
//! - `serverTLSBootstrap`: the kubelet port serves a certificate the cluster signed for the
//!   node's name (approved by the test, as an operator's approver would), and a renewed one
//!   after the first expired.
//!
//! Skipped, with the reason printed, where the Kubernetes binaries are absent.
#![expect(
    clippy::disallowed_methods,
    reason = "a test compares certificate validity with the wall clock"
)]
mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use support::cluster::{NODE, condition, local_control_plane, start_node};
use xtask::control_plane::ControlPlane;

const CSRS: &str = "/apis/certificates.k8s.io/v1/certificatesigningrequests";

fn is_ready(object: &Value) -> bool {
    condition(object, "Ready").is_some_and(|c| c["status"] == "True")
}

/// The CSRs with `signer`, oldest first.
fn csrs(plane: &ControlPlane, signer: &str) -> Result<Vec<Value>> {
    let list = plane.get_json(CSRS)?;
    let mut items: Vec<Value> = list["items"]
        .as_array()
        .context("no CSR list")?
        .iter()
        .filter(|csr| csr["spec"]["signerName"] == signer)
        .cloned()
        .collect();
    items.sort_by_key(|csr| csr["metadata"]["creationTimestamp"].to_string());
    Ok(items)
}

/// Approves the node's serving CSRs as they come (upstream leaves them to the operator).
struct Approver {
    stop: Arc<AtomicBool>,
    approved: Arc<Mutex<BTreeSet<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Approver {
    fn start(plane: &ControlPlane) -> Self {
        let admin = plane.client(&plane.admin);
        let stop = Arc::new(AtomicBool::new(false));
        let approved = Arc::<Mutex<BTreeSet<String>>>::default();
        let (stopping, record) = (Arc::clone(&stop), Arc::clone(&approved));
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                let list = admin
                    .get(CSRS)
                    .ok()
                    .and_then(|body| serde_json::from_str::<Value>(&body).ok());
                let items = list
                    .as_ref()
                    .and_then(|l| l["items"].as_array())
                    .cloned()
                    .unwrap_or_default();
                for mut csr in items {
                    let pending = csr["status"]["conditions"].is_null();
                    let serving = csr["spec"]["signerName"] == "kubernetes.io/kubelet-serving";
                    let ours = csr["spec"]["username"] == format!("system:node:{NODE}").as_str();
                    if !(pending && serving && ours) {
                        continue;
                    }
                    let name = csr["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    csr["status"]["conditions"] = serde_json::json!([{
                        "type": "Approved", "status": "True",
                        "reason": "TestApproval", "message": "approved by the test"
                    }]);
                    let path = format!("{CSRS}/{name}/approval");
                    if admin
                        .send("PUT", &path, &csr.to_string())
                        .is_ok_and(|(code, _)| code == 200)
                    {
                        record
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .insert(name);
                    }
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        Self {
            stop,
            approved,
            thread: Some(thread),
        }
    }

    fn approved(&self) -> usize {
        self.approved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

impl Drop for Approver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The validity end of the certificate in `pem`.
fn not_after(pem: &[u8]) -> Result<SystemTime> {
    Ok(kernlet::cluster::csr::validity(pem)
        .context("no certificate")?
        .1)
}

#[test]
#[ignore = "host: needs root, containerd, runc and the Kubernetes binaries; run by cargo xtask test"]
fn a_node_bootstraps_and_renews_its_certificates() -> Result<()> {
    let test = "a_node_bootstraps_and_renews_its_certificates";
    let Some(mut plane) = local_control_plane(test)? else {
        return Ok(());
    };
    plane.start_controllers_signing(Some("2m30s"))?;
    let token = plane.bootstrap_token()?;
    let bootstrap = plane.token_kubeconfig("bootstrap", &token)?;
    let files = tempfile::tempdir()?;
    let kubeconfig = files.path().join("kubelet.conf");
    let args = [
        format!("--bootstrap-kubeconfig={}", bootstrap.display()),
        format!("--kubeconfig={}", kubeconfig.display()),
        "--rotate-certificates".to_owned(),
        "--rotate-server-certificates".to_owned(),
    ];
    let approver = Approver::start(&plane);
    // Started means /pods answered over TLS verified with the cluster CA for name `testnode`:
    // the serving certificate is the cluster's.
    let mut node = start_node(&plane, &args)?;
    ensure!(approver.approved() == 1, "one serving CSR approved");
    // Only system:node:testnode may create the Node: registering proves the new certificate.
    let path = format!("/api/v1/nodes/{NODE}");
    node.wait_until("the node is Ready", Duration::from_mins(1), |_| {
        Ok(plane.get_json(&path).is_ok_and(|n| is_ready(&n)))
    })
    .with_context(|| node.log())?;
    let client_signer = "kubernetes.io/kube-apiserver-client-kubelet";
    let items = csrs(&plane, client_signer)?;
    ensure!(items.len() == 1, "{items:#?}");
    let csr = &items[0];
    let id = token.split('.').next().unwrap_or_default();
    ensure!(
        csr["spec"]["username"] == format!("system:bootstrap:{id}").as_str(),
        "{csr:#}"
    );
    let approval = condition(csr, "Approved").context("not approved")?;
    ensure!(approval["status"] == "True", "{csr:#}");
    ensure!(csr["status"]["certificate"].is_string(), "{csr:#}");
    let written = std::fs::read_to_string(&kubeconfig)?;
    let current = node.dir().join("root/pki/kubelet-client-current.pem");
    ensure!(
        written.contains(&current.display().to_string()),
        "{written}"
    );
    ensure!(!written.contains(&token), "the token leaked into {written}");

    // A restart uses the certificates it has: no second request of either kind.
    node.stop_kernlet(nix::sys::signal::Signal::SIGTERM)?;
    node.start_kernlet()?;
    node.wait_until("the node is Ready again", Duration::from_mins(1), |_| {
        Ok(plane.get_json(&path).is_ok_and(|n| is_ready(&n)))
    })?;
    ensure!(csrs(&plane, client_signer)?.len() == 1);
    ensure!(approver.approved() == 1, "no second serving CSR");

    // Renewal: the node asks as itself before the first certificate expires.
    let first = std::fs::read_link(&current)?;
    let expires = not_after(&std::fs::read(&first)?)?;
    node.wait_until(
        "the client certificate is renewed",
        Duration::from_mins(3),
        |_| Ok(std::fs::read_link(&current).is_ok_and(|now| now != first)),
    )?;
    ensure!(SystemTime::now() < expires, "renewed only after expiry");
    let items = csrs(&plane, client_signer)?;
    let renewal = items.last().context("no CSR")?;
    ensure!(
        items.len() == 2
            && renewal["spec"]["username"] == format!("system:node:{NODE}").as_str()
            && condition(renewal, "Approved").is_some_and(|c| c["status"] == "True"),
        "{items:#?}"
    );

    // After the first certificate expired, the Lease goes on being renewed, and the kubelet
    // port serves a certificate that is still valid (a renewed one).
    let wait = expires
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    std::thread::sleep(wait + Duration::from_secs(2));
    let lease = format!("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{NODE}");
    let renewed_at = |plane: &ControlPlane| -> Result<String> {
        let lease = plane.get_json(&lease)?;
        Ok(lease["spec"]["renewTime"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    };
    let before = renewed_at(&plane)?;
    node.wait_until(
        "the Lease is renewed after the first certificate expired",
        Duration::from_secs(20),
        |_| Ok(renewed_at(&plane)? > before),
    )?;
    ensure!(plane.get_json(&path).is_ok_and(|n| is_ready(&n)));
    node.wait_until(
        "the kubelet port serves a renewed certificate",
        Duration::from_secs(30),
        |node| Ok(node.get("/pods").is_ok()),
    )?;
    ensure!(
        approver.approved() >= 2,
        "the serving certificate was renewed"
    );
    check_ttls(&node)
}

/// Upstream's certificate metrics, which clusters alert on: both certificates valid for a
/// while yet (at most the signing duration).
fn check_ttls(node: &kernlet_tests::node::TestNode) -> Result<()> {
    let metrics = node.get("/metrics")?;
    for family in [
        "kubelet_certificate_manager_client_ttl_seconds",
        "kubelet_certificate_manager_server_ttl_seconds",
    ] {
        let ttl: f64 = metrics
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{family} ")))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {family} in\n{metrics}"))?;
        ensure!(ttl > 0.0 && ttl <= 150.0, "{family} {ttl}");
    }
    Ok(())
}
