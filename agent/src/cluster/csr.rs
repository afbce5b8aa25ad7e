//! Certificates through `certificates.k8s.io`: a `CertificateSigningRequest` for the node's
//! identity, waited on until it is signed, and the cert dir's pair files, as upstream's
//! `k8s.io/client-go/util/certificate` (`csr` and the file store) keep them:
//! `<prefix>-<time>.pem` holds certificate and key, `<prefix>-current.pem` links to the newest.
//!
//! Used by TLS bootstrapping ([`super::bootstrap`]) and by the certificate managers of
//! [`super::rotation`] (the client certificate's renewal, the serving certificate).
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec, CertificateSigningRequestStatus,
};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

/// The signer of kubelet client certificates.
pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The signer of kubelet serving certificates (never approved automatically upstream).
pub const SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
/// A client certificate's usages, for an ECDSA key.
pub const CLIENT_USAGES: [&str; 2] = ["digital signature", "client auth"];
/// A serving certificate's usages, for an ECDSA key (upstream adds `key encipherment` only
/// for RSA keys).
pub const SERVING_USAGES: [&str; 2] = ["digital signature", "server auth"];

#[derive(Debug, thiserror::Error)]
pub enum CsrError {
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

pub(super) fn file_error(
    what: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> CsrError {
    let path = path.display().to_string();
    move |source| CsrError::File { what, path, source }
}

/// What a request asks for: the node's identity, its names (serving only) and usages.
#[derive(Debug, Clone)]
pub struct Identity<'a> {
    pub node_name: &'a str,
    pub dns_names: &'a [String],
    pub ips: &'a [std::net::IpAddr],
    pub signer: &'static str,
    pub usages: &'a [&'static str],
}

/// A new ECDSA P-256 key (the kubelet's choice).
pub fn new_key() -> Result<rcgen::KeyPair, CsrError> {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| CsrError::Key(e.to_string()))
}

/// The PEM request for `CN=system:node:<name>, O=system:nodes` with `identity`'s names.
pub fn request_pem(identity: &Identity<'_>, key: &rcgen::KeyPair) -> Result<String, CsrError> {
    let error = |e: rcgen::Error| CsrError::Key(e.to_string());
    let mut params = rcgen::CertificateParams::new(identity.dns_names.to_vec()).map_err(error)?;
    params
        .subject_alt_names
        .extend(identity.ips.iter().map(|ip| rcgen::SanType::IpAddress(*ip)));
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("system:node:{}", identity.node_name),
    );
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:nodes");
    params
        .serialize_request(key)
        .and_then(|csr| csr.pem())
        .map_err(error)
}

/// Where the request goes: a fixed name (bootstrap: the same key asks again under the same
/// name) or upstream's `csr-` generated names.
pub enum Name {
    Fixed(String),
    Generated,
}

/// Creates the request and waits (at most `wait_for`) until it is signed; the certificate PEM.
pub async fn request_certificate(
    client: kube::Client,
    name: Name,
    identity: &Identity<'_>,
    request: String,
    wait_for: Duration,
) -> Result<Vec<u8>, CsrError> {
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let (name, generate) = match name {
        Name::Fixed(name) => (Some(name), None),
        Name::Generated => (None, Some("csr-".to_owned())),
    };
    let shown = name.clone().unwrap_or_else(|| "csr-".to_owned());
    let api_error = |name: &str| {
        let name = name.to_owned();
        move |source| CsrError::Api { name, source }
    };
    let object = CertificateSigningRequest {
        metadata: ObjectMeta {
            name: name.clone(),
            generate_name: generate,
            ..ObjectMeta::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(request.into_bytes()),
            signer_name: identity.signer.to_owned(),
            usages: Some(identity.usages.iter().map(|u| (*u).to_owned()).collect()),
            ..CertificateSigningRequestSpec::default()
        },
        status: None,
    };
    let name = match api.create(&PostParams::default(), &object).await {
        Ok(created) => created.metadata.name.unwrap_or(shown),
        // Asked before (a restart while waiting): the same key made the same name.
        Err(error) if super::is_status(&error, 409) && name.is_some() => shown,
        Err(error) => return Err(api_error(&shown)(error)),
    };
    tracing::info!(csr = %name, signer = identity.signer, "certificate signing request created");
    let settled = |csr: Option<&CertificateSigningRequest>| {
        csr.and_then(|c| c.status.as_ref()).is_some_and(|status| {
            status.certificate.as_ref().is_some_and(|c| !c.0.is_empty())
                || refusal(status).is_some()
        })
    };
    let waited = tokio::time::timeout(
        wait_for,
        kube::runtime::wait::await_condition(api, &name, settled),
    )
    .await;
    let refused = |reason: String| CsrError::Refused {
        name: name.clone(),
        reason,
    };
    let csr = match waited {
        Err(_) => return Err(refused(format!("not signed within {wait_for:?}"))),
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
fn refusal(status: &CertificateSigningRequestStatus) -> Option<String> {
    status.conditions.iter().flatten().find_map(|c| {
        (matches!(c.type_.as_str(), "Denied" | "Failed") && c.status == "True").then(|| {
            let reason = c.reason.as_deref().unwrap_or_default();
            let message = c.message.as_deref().unwrap_or_default();
            format!("{}: {reason} {message}", c.type_.to_lowercase())
        })
    })
}

/// A pair store in the cert dir: `<prefix>-current.pem` and the files it has pointed at.
#[derive(Debug, Clone)]
pub struct PairStore {
    pub dir: PathBuf,
    /// `kubelet-client` or `kubelet-server`.
    pub prefix: &'static str,
}

impl PairStore {
    /// The link to the pair in use.
    #[must_use]
    pub fn current(&self) -> PathBuf {
        self.dir.join(format!("{}-current.pem", self.prefix))
    }

    /// Writes `certificate` with `key` as a new file and points the current link at it.
    pub fn update(&self, certificate: &[u8], key: &rcgen::KeyPair) -> Result<PathBuf, CsrError> {
        std::fs::create_dir_all(&self.dir).map_err(file_error("creating", &self.dir))?;
        let file = self.dir.join(format!("{}-{}.pem", self.prefix, stamp()));
        let pem = [certificate, key.serialize_pem().as_bytes()].concat();
        write_private(&file, &pem)?;
        let current = self.current();
        let link = PathBuf::from(format!("{}.tmp", current.display()));
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&file, &link).map_err(file_error("linking", &link))?;
        std::fs::rename(&link, &current).map_err(file_error("replacing", &current))?;
        tracing::info!(path = %file.display(), "certificate written");
        Ok(current)
    }
}

/// The validity (not before, not after) of the first certificate in `pem`.
#[must_use]
pub fn validity(pem: &[u8]) -> Option<(SystemTime, SystemTime)> {
    use tokio_rustls::rustls::pki_types::{CertificateDer, pem::PemObject};
    let der = CertificateDer::pem_slice_iter(pem).next()?.ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let at = |t: x509_parser::time::ASN1Time| {
        let seconds = u64::try_from(t.timestamp()).unwrap_or(0);
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    };
    let validity = cert.validity();
    Some((at(validity.not_before), at(validity.not_after)))
}

/// Whether `pem` holds a certificate and none has expired at `now` (upstream checks only the end,
/// so a clock slightly behind the signer's does not refuse a fresh certificate).
#[must_use]
pub fn valid_at(pem: &[u8], now: SystemTime) -> bool {
    use tokio_rustls::rustls::pki_types::{CertificateDer, pem::PemObject};
    let Ok(seconds) = now.duration_since(SystemTime::UNIX_EPOCH) else {
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

/// Writes `bytes` to `path` (mode 0600), through a temporary file and a rename.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CsrError> {
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
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let stamp = k8s_openapi::jiff::Timestamp::from_second(i64::try_from(seconds).unwrap_or(0))
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    stamp.strftime("%Y-%m-%d-%H-%M-%S").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(from: (i32, u8, u8), to: (i32, u8, u8)) -> (String, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["x".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
        params.not_after = rcgen::date_time_ymd(to.0, to.1, to.2);
        (params.self_signed(&key).unwrap().pem(), key)
    }

    #[test]
    fn validity_is_checked_against_the_clock() {
        let (pem, _) = certificate((2026, 1, 1), (2027, 1, 1));
        let at = |secs: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
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
        let (from, to) = validity(pem.as_bytes()).unwrap();
        assert_eq!(from, at(1_767_225_600), "2026-01-01");
        assert_eq!(to, at(1_798_761_600), "2027-01-01");
    }

    #[test]
    fn requests_carry_the_node_identity_and_its_names() {
        use x509_parser::prelude::FromDer as _;
        let key = new_key().unwrap();
        let ips = ["10.1.2.3".parse().unwrap()];
        let identity = Identity {
            node_name: "n1",
            dns_names: &["n1.example".to_owned()],
            ips: &ips,
            signer: SERVING_SIGNER,
            usages: &SERVING_USAGES,
        };
        let pem = request_pem(&identity, &key).unwrap();
        let der = tokio_rustls::rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
            .map(|d: tokio_rustls::rustls::pki_types::CertificateSigningRequestDer<'_>| d)
            .unwrap();
        let (_, csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(der.as_ref())
                .unwrap();
        let subject = csr.certification_request_info.subject.to_string();
        assert_eq!(subject, "CN=system:node:n1, O=system:nodes");
        let names = format!(
            "{:?}",
            csr.requested_extensions().unwrap().collect::<Vec<_>>()
        );
        assert!(names.contains("n1.example"), "{names}");
        assert!(names.contains("[10, 1, 2, 3]"), "{names}");
    }

    #[test]
    fn the_store_points_current_at_the_newest_pair() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let store = PairStore {
            dir: dir.path().join("pki"),
            prefix: "kubelet-server",
        };
        let (pem, key) = certificate((2026, 1, 1), (2027, 1, 1));
        let current = store.update(pem.as_bytes(), &key).unwrap();
        assert_eq!(current, dir.path().join("pki/kubelet-server-current.pem"));
        let target = std::fs::read_link(&current).unwrap();
        let name = target.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("kubelet-server-20"), "{name}");
        let written = std::fs::read_to_string(&current).unwrap();
        assert!(written.starts_with(&pem), "{written}");
        assert!(written.contains("PRIVATE KEY"), "{written}");
        let mode = std::fs::metadata(&current).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
