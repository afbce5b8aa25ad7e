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
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use kube::config::{AuthInfo, Context, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext};
use sha2::{Digest, Sha256};

use super::ClusterError;
use crate::config::ApiRate;

/// The signer of kubelet client certificates.
pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The certificate in use, in the cert dir.
pub const CURRENT: &str = "kubelet-client-current.pem";
const PENDING_KEY: &str = "kubelet-client.key.tmp";
/// How long a request may wait for approval and signing (upstream's one hour).
const WAIT_FOR: Duration = Duration::from_hours(1);

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Connect(#[from] ClusterError),
    #[error("reading bootstrap kubeconfig {path}: {reason}")]
    Bootstrap { path: String, reason: String },
    #[error("{what} {path}: {source}")]
    File {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("making the certificate request: {0}")]
    Key(String),
    #[error("certificate signing request {name}: {source}")]
    Api {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("certificate signing request {name}: {reason}")]
    Refused { name: String, reason: String },
}

fn file_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BootstrapError {
    let path = path.display().to_string();
    move |source| BootstrapError::File { what, path, source }
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
    if kubeconfig_cert(kubeconfig).is_some_and(|pem| valid_at(&pem, now)) {
        return Ok(());
    }
    let current = cert_dir.join(CURRENT);
    let cluster = bootstrap_cluster(bootstrap)?;
    if std::fs::read(&current).is_ok_and(|pem| valid_at(&pem, now)) {
        tracing::info!(path = %current.display(), "using the client certificate in the cert dir");
        return write_kubeconfig(kubeconfig, cluster, &current);
    }
    std::fs::create_dir_all(cert_dir).map_err(file_error("creating", cert_dir))?;
    let key = pending_key(&cert_dir.join(PENDING_KEY))?;
    let (name, request) = certificate_request(node_name, &key)?;
    let client = super::connect(bootstrap, rate).await?;
    tracing::info!(csr = %name, "requesting a client certificate (TLS bootstrap)");
    let certificate = request_certificate(client, &name, request).await?;
    let file = cert_dir.join(format!("kubelet-client-{}.pem", stamp()));
    let pem = [certificate.as_slice(), key.serialize_pem().as_bytes()].concat();
    write_private(&file, &pem)?;
    let link = cert_dir.join(format!("{CURRENT}.tmp"));
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&file, &link).map_err(file_error("linking", &link))?;
    std::fs::rename(&link, &current).map_err(file_error("replacing", &current))?;
    let _ = std::fs::remove_file(cert_dir.join(PENDING_KEY));
    tracing::info!(path = %file.display(), "client certificate issued");
    write_kubeconfig(kubeconfig, cluster, &current)
}

/// The client certificate `kubeconfig` names (file or inline data), if it can be read.
fn kubeconfig_cert(kubeconfig: &Path) -> Option<Vec<u8>> {
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

/// Whether `pem` holds a certificate and none has expired at `now` (upstream checks only the end,
/// so a clock slightly behind the signer's does not refuse a fresh certificate).
fn valid_at(pem: &[u8], now: std::time::SystemTime) -> bool {
    use tokio_rustls::rustls::pki_types::{CertificateDer, pem::PemObject};
    let Ok(seconds) = now.duration_since(std::time::UNIX_EPOCH) else {
        return false;
    };
    let now = i64::try_from(seconds.as_secs()).unwrap_or(i64::MAX);
    let certs: Vec<CertificateDer<'_>> = CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect();
    !certs.is_empty()
        && certs.iter().all(|der| {
            x509_parser::parse_x509_certificate(der.as_ref())
                .is_ok_and(|(_, cert)| now < cert.validity().not_after.timestamp())
        })
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
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| BootstrapError::Key(e.to_string()))?;
    write_private(path, key.serialize_pem().as_bytes())?;
    Ok(key)
}

/// The request's name (from its key, subject and usages, so the same key asks under the same
/// name) and its PEM.
fn certificate_request(
    node_name: &str,
    key: &rcgen::KeyPair,
) -> Result<(String, String), BootstrapError> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| BootstrapError::Key(e.to_string()))?;
    let subject = format!("system:node:{node_name}");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, &subject);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:nodes");
    let request = params
        .serialize_request(key)
        .and_then(|csr| csr.pem())
        .map_err(|e| BootstrapError::Key(e.to_string()))?;
    let mut digest = Sha256::new();
    digest.update(key.public_key_der());
    digest.update(subject.as_bytes());
    digest.update(b"digital signature,client auth");
    let hash = digest.finalize()[..16]
        .iter()
        .fold(String::new(), |hex, b| hex + &format!("{b:02x}"));
    Ok((format!("node-csr-{hash}"), request))
}

/// Creates (or finds) the request and waits until it is signed.
async fn request_certificate(
    client: kube::Client,
    name: &str,
    request: String,
) -> Result<Vec<u8>, BootstrapError> {
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let api_error = |source| BootstrapError::Api {
        name: name.to_owned(),
        source,
    };
    let object = CertificateSigningRequest {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(request.into_bytes()),
            signer_name: CLIENT_SIGNER.to_owned(),
            usages: Some(vec![
                "digital signature".to_owned(),
                "client auth".to_owned(),
            ]),
            ..CertificateSigningRequestSpec::default()
        },
        status: None,
    };
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => {}
        // Asked before (a restart while waiting): the same key made the same name.
        Err(error) if super::is_status(&error, 409) => {}
        Err(error) => return Err(api_error(error)),
    }
    let settled = |csr: Option<&CertificateSigningRequest>| {
        csr.and_then(|c| c.status.as_ref()).is_some_and(|status| {
            status.certificate.as_ref().is_some_and(|c| !c.0.is_empty())
                || refusal(status).is_some()
        })
    };
    let waited = tokio::time::timeout(
        WAIT_FOR,
        kube::runtime::wait::await_condition(api, name, settled),
    )
    .await;
    let refused = |reason: String| BootstrapError::Refused {
        name: name.to_owned(),
        reason,
    };
    let csr = match waited {
        Err(_) => return Err(refused(format!("not signed within {WAIT_FOR:?}"))),
        Ok(Err(error)) => return Err(refused(format!("watching it failed: {error}"))),
        Ok(Ok(csr)) => csr.ok_or_else(|| refused("deleted while waiting".to_owned()))?,
    };
    let status = csr.status.unwrap_or_default();
    if let Some(reason) = refusal(&status) {
        return Err(refused(reason));
    }
    Ok(status.certificate.map(|c| c.0).unwrap_or_default())
}

/// `Denied` or `Failed`, with its reason and message.
fn refusal(
    status: &k8s_openapi::api::certificates::v1::CertificateSigningRequestStatus,
) -> Option<String> {
    status.conditions.iter().flatten().find_map(|c| {
        (matches!(c.type_.as_str(), "Denied" | "Failed") && c.status == "True").then(|| {
            let reason = c.reason.as_deref().unwrap_or_default();
            let message = c.message.as_deref().unwrap_or_default();
            format!("{}: {reason} {message}", c.type_.to_lowercase())
        })
    })
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
    write_private(path, text.as_bytes())
}

/// Writes `bytes` to `path` (mode 0600), through a temporary file and a rename.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), BootstrapError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let temporary = PathBuf::from(format!("{}.writing", path.display()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(file_error("writing", &temporary))?;
    std::io::Write::write_all(&mut file, bytes).map_err(file_error("writing", &temporary))?;
    std::fs::rename(&temporary, path).map_err(file_error("writing", path))
}

/// Upstream's file-name time: `2026-12-06-21-40-03`.
fn stamp() -> String {
    let seconds = crate::clock::wall()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let stamp = k8s_openapi::jiff::Timestamp::from_second(i64::try_from(seconds).unwrap_or(0))
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    stamp.strftime("%Y-%m-%d-%H-%M-%S").to_string()
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
    fn validity_is_checked_against_the_clock() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["x".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2026, 1, 1);
        params.not_after = rcgen::date_time_ymd(2027, 1, 1);
        let pem = params.self_signed(&key).unwrap().pem();
        let at = |secs: u64| std::time::UNIX_EPOCH + Duration::from_secs(secs);
        assert!(valid_at(pem.as_bytes(), at(1_780_000_000)), "mid-2026");
        assert!(
            !valid_at(pem.as_bytes(), at(1_800_000_000)),
            "2027: expired"
        );
        assert!(
            valid_at(pem.as_bytes(), at(1_700_000_000)),
            "2023: not yet valid, but not expired"
        );
        assert!(!valid_at(b"not a certificate", at(1_780_000_000)));
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
        let pem = dir.path().join(CURRENT);
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
