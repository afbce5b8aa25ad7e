//! Certificate managers, as upstream's `k8s.io/client-go/util/certificate` manager drives them
//! for the kubelet (`pkg/kubelet/certificate`):
//!
//! - **`rotateCertificates`**: the client certificate is renewed before it expires, through a
//!   CSR made with the node's own credentials (the controller manager approves these given the
//!   `selfnodeclient` binding), and every API client switches to it
//!   ([`super::credentials::Credentials::use_pair`]).
//! - **`serverTLSBootstrap`**: the kubelet port's certificate is requested from the cluster
//!   (signer `kubernetes.io/kubelet-serving`, the node's name and addresses; upstream leaves its
//!   approval to the operator) and renewed the same way; the server reads the new pair file
//!   (`kubelet-server-current.pem`) at its next handshake.
//!
//! A certificate is renewed at a random point between 70 % and 84 % of its lifetime (upstream's
//! `0.7 × total` with 20 % jitter), at once when there is none or it cannot be read. A failed
//! request is tried again with backoff (2 s doubling to 5 minutes); it never stops kernlet,
//! which goes on with the certificate it has.
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::credentials::Credentials;
use super::csr::{self, Identity, PairStore};
use super::pause;
use crate::stats::metrics::{CertificateKind, Metrics};

/// How long a request may wait for approval and signing (upstream's 15 minutes).
const WAIT_FOR: Duration = Duration::from_mins(15);
const FIRST_RETRY: Duration = Duration::from_secs(2);
const LAST_RETRY: Duration = Duration::from_mins(5);
/// The longest sleep before the wall clock is looked at again.
const LONGEST_NAP: Duration = Duration::from_hours(1);

/// Which certificate a manager keeps.
#[derive(Debug, Clone)]
pub enum Kind {
    /// The API client certificate; the credentials switch to each new one.
    Client(Credentials),
    /// The kubelet port's certificate, for these names and addresses.
    Serving {
        dns_names: Vec<String>,
        ips: Vec<IpAddr>,
    },
}

/// Keeps one certificate of the node current.
pub struct CertificateManager {
    /// The node's API client (its requests are made as the node).
    pub client: kube::Client,
    pub node_name: String,
    pub store: PairStore,
    pub kind: Kind,
    /// The certificate to start from when the store has none (the kubeconfig's own).
    pub initial: Option<Vec<u8>>,
    pub metrics: Arc<Metrics>,
}

impl CertificateManager {
    /// Renews the certificate whenever it is due, until cancelled.
    pub async fn run(&self, cancel: &CancellationToken) {
        let mut retry = FIRST_RETRY;
        let mut just_renewed = false;
        // The renewal time of the certificate in use, by its end: drawn once per certificate.
        let mut planned: Option<(SystemTime, SystemTime)> = None;
        loop {
            let now = crate::clock::wall();
            let current = std::fs::read(self.store.current())
                .ok()
                .or_else(|| self.initial.clone());
            let validity = current.as_deref().and_then(csr::validity);
            self.metrics
                .set_certificate_expiry(self.metric_kind(), validity.map(|(_, to)| to));
            let deadline = validity.map(|(from, to)| match planned {
                Some((end, deadline)) if end == to => deadline,
                _ => {
                    let deadline = renewal_deadline(from, to, crate::clock::random_fraction());
                    tracing::info!(certificate = self.call(), expires = ?to, renewal = ?deadline,
                            "certificate renewal planned");
                    planned = Some((to, deadline));
                    deadline
                }
            });
            if let Some(wait) = deadline.and_then(|d| d.duration_since(now).ok()) {
                retry = FIRST_RETRY;
                // Naps of at most an hour, so a wall clock that jumps (a resumed machine) is
                // noticed.
                if !pause(wait.min(LONGEST_NAP), cancel).await {
                    return;
                }
                if wait > LONGEST_NAP {
                    continue;
                }
            } else if just_renewed {
                // A certificate due as soon as it is issued (its lifetime shorter than the
                // signer's backdating): renew it no faster than the backoff.
                tracing::warn!(
                    certificate = self.call(),
                    ?retry,
                    "the new certificate is due for renewal already"
                );
                if !pause(retry, cancel).await {
                    return;
                }
                retry = (retry * 2).min(LAST_RETRY);
            }
            let renewed = tokio::select! {
                renewed = self.renew() => renewed,
                () = cancel.cancelled() => return,
            };
            self.metrics.count_api_request(self.call(), renewed.is_ok());
            just_renewed = renewed.is_ok();
            match renewed {
                Ok(path) => {
                    if let Kind::Client(credentials) = &self.kind {
                        credentials.use_pair(path);
                    }
                }
                Err(error) => {
                    self.metrics
                        .count_certificate_renew_error(self.metric_kind());
                    tracing::warn!(certificate = self.call(), %error, ?retry, "certificate renewal failed; trying again");
                    if !pause(retry, cancel).await {
                        return;
                    }
                    retry = (retry * 2).min(LAST_RETRY);
                }
            }
        }
    }

    /// The name of this manager's supervised task, and of its calls in
    /// `kernlet_api_requests_total`.
    #[must_use]
    pub const fn task_name(&self) -> &'static str {
        self.call()
    }

    const fn metric_kind(&self) -> CertificateKind {
        match self.kind {
            Kind::Client(_) => CertificateKind::Client,
            Kind::Serving { .. } => CertificateKind::Serving,
        }
    }

    const fn call(&self) -> &'static str {
        match self.kind {
            Kind::Client(_) => "certificate-client",
            Kind::Serving { .. } => "certificate-serving",
        }
    }

    /// One request: a new key, a CSR, the signed pair written to the store.
    async fn renew(&self) -> Result<PathBuf, csr::CsrError> {
        let (dns_names, ips): (&[String], &[IpAddr]) = match &self.kind {
            Kind::Client(_) => (&[], &[]),
            Kind::Serving { dns_names, ips } => (dns_names, ips),
        };
        let identity = match self.kind {
            Kind::Client(_) => super::bootstrap::client_identity(&self.node_name),
            Kind::Serving { .. } => Identity {
                node_name: &self.node_name,
                dns_names,
                ips,
                signer: csr::SERVING_SIGNER,
                usages: &csr::SERVING_USAGES,
            },
        };
        let key = csr::new_key()?;
        let request = csr::request_pem(&identity, &key)?;
        let name = csr::Name::Generated;
        let certificate =
            csr::request_certificate(self.client.clone(), name, &identity, request, WAIT_FOR)
                .await?;
        self.store.update(&certificate, &key)
    }
}

/// When a certificate valid from `from` to `to` is renewed: at `0.7 + 0.14 × fraction` of its
/// lifetime (`fraction` in [0, 1)).
#[must_use]
pub fn renewal_deadline(from: SystemTime, to: SystemTime, fraction: f64) -> SystemTime {
    let lifetime = to.duration_since(from).unwrap_or_default();
    from + lifetime.mul_f64(0.7 + 0.14 * fraction.clamp(0.0, 1.0))
}

/// The serving certificate's names: the node's name and its addresses (upstream takes them
/// from the Node's status addresses: the hostname and the IPs).
#[must_use]
pub fn serving_names(node_name: &str, host_ips: &[IpAddr]) -> (Vec<String>, Vec<IpAddr>) {
    let mut ips = host_ips.to_vec();
    ips.dedup();
    let dns = if node_name.parse::<IpAddr>().is_ok() {
        Vec::new()
    } else {
        vec![node_name.to_owned()]
    };
    (dns, ips)
}

/// The managers `config` asks for (`rotateCertificates`, `serverTLSBootstrap`), their requests
/// made with `client`.
#[must_use]
pub fn managers(
    config: &crate::config::KubeletConfig,
    credentials: &Credentials,
    client: &kube::Client,
    host_ips: &[IpAddr],
    metrics: &Arc<Metrics>,
) -> Vec<CertificateManager> {
    let manager = |store, kind, initial| CertificateManager {
        client: client.clone(),
        node_name: config.node_name.clone(),
        store,
        kind,
        initial,
        metrics: metrics.clone(),
    };
    let mut managers = Vec::new();
    if config.cluster.rotate_certificates {
        let initial = config
            .kubeconfig
            .as_deref()
            .and_then(super::bootstrap::kubeconfig_cert);
        let store = super::bootstrap::client_store(&config.cert_dir);
        managers.push(manager(store, Kind::Client(credentials.clone()), initial));
    }
    if config.cluster.server_tls_bootstrap {
        let (dns_names, ips) = serving_names(&config.node_name, host_ips);
        let store = PairStore {
            dir: config.cert_dir.clone(),
            prefix: "kubelet-server",
        };
        managers.push(manager(store, Kind::Serving { dns_names, ips }, None));
    }
    managers
}

/// The client certificate pair to start with: with `rotateCertificates`, a valid pair in the
/// cert dir wins over the kubeconfig's own (it is the newer), as upstream's store does.
#[must_use]
pub fn starting_pair(config: &crate::config::KubeletConfig) -> Option<PathBuf> {
    let current = super::bootstrap::client_store(&config.cert_dir).current();
    let now = crate::clock::wall();
    (config.cluster.rotate_certificates
        && std::fs::read(&current).is_ok_and(|pem| csr::valid_at(&pem, now)))
    .then_some(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_falls_between_seventy_and_eighty_four_percent_of_the_lifetime() {
        let from = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let to = from + Duration::from_secs(1_000);
        let at = |fraction| {
            renewal_deadline(from, to, fraction)
                .duration_since(from)
                .unwrap()
        };
        assert_eq!(at(0.0), Duration::from_secs(700));
        assert_eq!(at(0.5), Duration::from_secs(770));
        assert!(at(0.999_999) < Duration::from_mins(14));
        assert_eq!(at(7.0), Duration::from_mins(14), "clamped");
        assert_eq!(
            renewal_deadline(to, from, 0.5),
            to,
            "an inverted validity is due at once"
        );
    }

    #[test]
    fn serving_names_are_the_node_name_and_its_addresses() {
        let ips: Vec<IpAddr> = vec!["10.0.0.5".parse().unwrap(), "10.0.0.5".parse().unwrap()];
        let (dns, addresses) = serving_names("node-a", &ips);
        assert_eq!(dns, ["node-a"]);
        assert_eq!(addresses, ["10.0.0.5".parse::<IpAddr>().unwrap()]);
        let (dns, _) = serving_names("10.0.0.5", &ips);
        assert!(dns.is_empty(), "an IP as node name is not a DNS name");
    }
}
