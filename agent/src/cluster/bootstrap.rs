//! Kubelet TLS bootstrapping (`--bootstrap-kubeconfig`): when `--kubeconfig` holds no valid
//! client certificate, kernlet asks the cluster for one with the bootstrap credentials, as
//! upstream's `pkg/kubelet/certificate/bootstrap` does:
//!
//! - a certificate already in the cert dir (`kubelet-client-current.pem`) and still valid is
//!   used as it is;
//! - otherwise an ECDSA P-256 key (kept in `kubelet-client.key.tmp` until the certificate
//!   arrives, so a restart asks again with the same key and the same request name) goes into a
//!   `CertificateSigningRequest` for `CN=system:node:<name>, O=system:nodes` with signer
//!   `kubernetes.io/kube-apiserver-client-kubelet` and usages `digital signature`, `client auth`;
//!   the controller manager approves it (given the `nodeclient` RBAC binding) and signs it;
//! - kernlet waits for the certificate (a watch), writes certificate and key to
//!   `kubelet-client-<time>.pem`, points `kubelet-client-current.pem` at it, and writes
//!   `--kubeconfig` with the bootstrap kubeconfig's cluster and that file as its credentials.
//!
//! A denied or failed request is an error: kernlet cannot join without credentials.
use std::path::Path;
use std::time::Duration;

use kube::config::{AuthInfo, Context, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext};
use sha2::{Digest, Sha256};

use super::ClusterError;
use super::csr::{self, CsrError, Identity, PairStore};
use crate::config::ApiRate;

/// The client certificate's pairs in the cert dir (`kubelet-client-current.pem`).
#[must_use]
pub fn client_store(cert_dir: &Path) -> PairStore {
    PairStore {
        dir: cert_dir.to_owned(),
        prefix: "kubelet-client",
    }
}
const PENDING_KEY: &str = "kubelet-client.key.tmp";
/// How long a request may wait for approval and signing (upstream's one hour).
const WAIT_FOR: Duration = Duration::from_hours(1);

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Connect(#[from] ClusterError),
    #[error("reading bootstrap kubeconfig {path}: {reason}")]
    Bootstrap { path: String, reason: String },
    #[error(transparent)]
    Csr(#[from] CsrError),
}

/// Makes `kubeconfig` hold a valid client certificate, requesting one with `bootstrap`'s
/// credentials when it does not.
pub async fn ensure_credentials(
    kubeconfig: &Path,
    bootstrap: &Path,
    cert_dir: &Path,
    node_name: &str,
    rate: ApiRate,
) -> Result<(), BootstrapError> {
    let now = crate::clock::wall();
    if kubeconfig_cert(kubeconfig).is_some_and(|pem| csr::valid_at(&pem, now)) {
        return Ok(());
    }
    let store = client_store(cert_dir);
    let current = store.current();
    let cluster = bootstrap_cluster(bootstrap)?;
    if std::fs::read(&current).is_ok_and(|pem| csr::valid_at(&pem, now)) {
        tracing::info!(path = %current.display(), "using the client certificate in the cert dir");
        return write_kubeconfig(kubeconfig, cluster, &current);
    }
    std::fs::create_dir_all(cert_dir).map_err(csr::file_error("creating", cert_dir))?;
    let key = pending_key(&cert_dir.join(PENDING_KEY))?;
    let (name, request) = certificate_request(node_name, &key)?;
    let client = super::connect(bootstrap, rate).await?;
    tracing::info!(csr = %name, "requesting a client certificate (TLS bootstrap)");
    let identity = client_identity(node_name);
    let name = csr::Name::Fixed(name);
    let certificate = csr::request_certificate(client, name, &identity, request, WAIT_FOR).await?;
    let current = store.update(&certificate, &key)?;
    let _ = std::fs::remove_file(cert_dir.join(PENDING_KEY));
    write_kubeconfig(kubeconfig, cluster, &current)
}

/// What a node asks for as its client identity.
#[must_use]
pub fn client_identity(node_name: &str) -> Identity<'_> {
    Identity {
        node_name,
        dns_names: &[],
        ips: &[],
        signer: csr::CLIENT_SIGNER,
        usages: &csr::CLIENT_USAGES,
    }
}

/// The client certificate `kubeconfig` names (file or inline data), if it can be read.
#[must_use]
pub fn kubeconfig_cert(kubeconfig: &Path) -> Option<Vec<u8>> {
    let config = Kubeconfig::read_from(kubeconfig).ok()?;
    let user = config
        .contexts
        .iter()
        .find(|c| Some(&c.name) == config.current_context.as_ref())?
        .context
        .as_ref()?
        .user
        .clone()?;
    let auth = config
        .auth_infos
        .iter()
        .find(|a| a.name == user)?
        .auth_info
        .as_ref()?;
    if let Some(data) = &auth.client_certificate_data {
        use base64::Engine as _;
        return base64::engine::general_purpose::STANDARD.decode(data).ok();
    }
    std::fs::read(auth.client_certificate.as_ref()?).ok()
}

/// The current cluster of the bootstrap kubeconfig (paths made absolute by the reader).
fn bootstrap_cluster(bootstrap: &Path) -> Result<NamedCluster, BootstrapError> {
    let error = |reason: String| BootstrapError::Bootstrap {
        path: bootstrap.display().to_string(),
        reason,
    };
    let config = Kubeconfig::read_from(bootstrap).map_err(|e| error(e.to_string()))?;
    let context = config
        .contexts
        .iter()
        .find(|c| Some(&c.name) == config.current_context.as_ref())
        .and_then(|c| c.context.as_ref())
        .ok_or_else(|| error("no current context".to_owned()))?;
    config
        .clusters
        .into_iter()
        .find(|c| c.name == context.cluster)
        .ok_or_else(|| error(format!("no cluster named {:?}", context.cluster)))
}

/// The key of the request in flight, or a new one.
fn pending_key(path: &Path) -> Result<rcgen::KeyPair, BootstrapError> {
    if let Ok(pem) = std::fs::read_to_string(path)
        && let Ok(key) = rcgen::KeyPair::from_pem(&pem)
    {
        return Ok(key);
    }
    let key = csr::new_key()?;
    csr::write_private(path, key.serialize_pem().as_bytes())?;
    Ok(key)
}

/// The request's name (from its key, subject and usages, so the same key asks under the same
/// name) and its PEM.
fn certificate_request(
    node_name: &str,
    key: &rcgen::KeyPair,
) -> Result<(String, String), BootstrapError> {
    let request = csr::request_pem(&client_identity(node_name), key)?;
    let mut digest = Sha256::new();
    digest.update(key.public_key_der());
    digest.update(format!("system:node:{node_name}").as_bytes());
    digest.update(csr::CLIENT_USAGES.join(",").as_bytes());
    let hash = digest.finalize()[..16]
        .iter()
        .fold(String::new(), |hex, b| hex + &format!("{b:02x}"));
    Ok((format!("node-csr-{hash}"), request))
}

/// `--kubeconfig` with the bootstrap cluster and `credentials` (certificate and key in one
/// file), as upstream names its parts.
fn write_kubeconfig(
    path: &Path,
    mut cluster: NamedCluster,
    credentials: &Path,
) -> Result<(), BootstrapError> {
    "default-cluster".clone_into(&mut cluster.name);
    let file = credentials.display().to_string();
    let config = Kubeconfig {
        api_version: Some("v1".to_owned()),
        kind: Some("Config".to_owned()),
        clusters: vec![cluster],
        auth_infos: vec![NamedAuthInfo {
            name: "default-auth".to_owned(),
            auth_info: Some(AuthInfo {
                client_certificate: Some(file.clone()),
                client_key: Some(file),
                ..AuthInfo::default()
            }),
            ..NamedAuthInfo::default()
        }],
        contexts: vec![NamedContext {
            name: "default-context".to_owned(),
            context: Some(Context {
                cluster: "default-cluster".to_owned(),
                user: Some("default-auth".to_owned()),
                namespace: Some("default".to_owned()),
                ..Context::default()
            }),
            ..NamedContext::default()
        }],
        current_context: Some("default-context".to_owned()),
        ..Kubeconfig::default()
    };
    let text = serde_yaml::to_string(&config).map_err(|e| BootstrapError::Bootstrap {
        path: path.display().to_string(),
        reason: format!("encoding the kubeconfig: {e}"),
    })?;
    Ok(csr::write_private(path, text.as_bytes())?)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn requests_are_named_by_key_and_carry_the_node_identity() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let (name, pem) = certificate_request("n1", &key).unwrap();
        let (again, _) = certificate_request("n1", &key).unwrap();
        assert_eq!(name, again, "the same key asks under the same name");
        assert!(name.starts_with("node-csr-") && name.len() == 41, "{name}");
        assert!(
            pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"),
            "{pem}"
        );
        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        assert_ne!(certificate_request("n1", &other).unwrap().0, name);
    }

    #[test]
    fn the_written_kubeconfig_names_the_cluster_and_the_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let bootstrap = dir.path().join("bootstrap.conf");
        std::fs::write(
            &bootstrap,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    \
             server: https://10.0.0.1:6443\n    certificate-authority: ca.crt\nusers:\n\
             - name: u\n  user:\n    token: abc.def\ncontexts:\n- name: x\n  context:\n    \
             cluster: c\n    user: u\ncurrent-context: x\n",
        )
        .unwrap();
        let cluster = bootstrap_cluster(&bootstrap).unwrap();
        let kubeconfig = dir.path().join("kubelet.conf");
        let pem = client_store(dir.path()).current();
        write_kubeconfig(&kubeconfig, cluster, &pem).unwrap();
        let written = Kubeconfig::read_from(&kubeconfig).unwrap();
        let cluster = written.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://10.0.0.1:6443"));
        let ca = dir.path().join("ca.crt").display().to_string();
        assert_eq!(cluster.certificate_authority.as_deref(), Some(ca.as_str()));
        let auth = written.auth_infos[0].auth_info.as_ref().unwrap();
        let pem = pem.display().to_string();
        assert_eq!(auth.client_certificate.as_deref(), Some(pem.as_str()));
        assert_eq!(auth.client_key.as_deref(), Some(pem.as_str()));
        assert!(auth.token.is_none());
        let mode = std::fs::metadata(&kubeconfig).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
