//! TLS for the kubelet port: the serving certificate, the client certificates, the versions and
//! cipher suites (upstream `cmd/kubelet/app/server.go` `InitializeTLS`).
//!
//! - The certificate is `tlsCertFile` / `tlsPrivateKeyFile` (the chain and its key, PEM), read
//!   again when either file changes (checked at most once a second, on a handshake), so a
//!   rotated certificate is served without a restart; a file that cannot be read then keeps the
//!   old one and logs why. Without them, upstream's self-signed pair in `--cert-dir`
//!   (`kubelet.crt` with its CA after it, `kubelet.key`), generated on first start and reused
//!   after. Beyond upstream, its names include `localhost`, `127.0.0.1` and the node's
//!   addresses, so a local client can verify it.
//! - Client certificates are requested, never required (a client may use a bearer token, or be
//!   anonymous). The handshake only checks that the client holds the certificate's key; the
//!   chain is verified against `authentication.x509.clientCAFile` per request by
//!   [`ClientCa::verify`], so a certificate from another CA gets a 401, as upstream, rather than
//!   a failed handshake.
//! - `tlsMinVersion`: TLS 1.2 (rustls' default and upstream's) or 1.3. `tlsCipherSuites` picks
//!   the TLS 1.2 suites by Go's names; TLS 1.3's suites are always offered, as Go does. Suites
//!   rustls does not implement (CBC, static RSA, RC4, 3DES: all on Go's insecure list or
//!   deprecated) are left out with a warning.
//!
//! rustls over ring, the provider the probes' HTTPS client already uses (no second TLS stack).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{
    self, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
    client::danger::HandshakeSignatureValid,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, UnixTime, pem::PemObject},
    server::{
        ClientHello, ResolvesServerCert, WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
    sign::CertifiedKey,
};

use crate::config::TlsVersion;

/// How often the certificate and CA files are checked for a change, at most.
const RELOAD_CHECK: Duration = Duration::from_secs(1);
/// Validity of the generated serving certificate and its CA (upstream: one year).
const SELF_SIGNED_VALIDITY: Duration = Duration::from_hours(365 * 24);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} holds no PEM certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("cannot read a private key from {}: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    #[error("tlsCertFile is {cert} but tlsPrivateKeyFile is {key}: give both or neither")]
    HalfPair { cert: String, key: String },
    #[error("cannot generate the self-signed serving certificate: {0}")]
    Generate(String),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("client CA file {}: {reason}", path.display())]
    ClientCa { path: PathBuf, reason: String },
    #[error("tls setup: {0}")]
    Setup(#[from] rustls::Error),
}

/// Where the server's TLS comes from (the config's TLS fields).
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Where the self-signed pair lives when no files are given (`--cert-dir`).
    pub cert_dir: PathBuf,
    /// `authentication.x509.clientCAFile`: client certificates are requested only with it.
    pub client_ca_file: Option<PathBuf>,
    pub min_version: Option<TlsVersion>,
    /// Go's names; empty for the defaults.
    pub cipher_suites: Vec<String>,
    /// The node's name and addresses, for the self-signed certificate.
    pub host_name: String,
    pub host_ips: Vec<IpAddr>,
    /// `serverTLSBootstrap`: the certificate is [`SERVING_CURRENT`] in the cert dir, written by
    /// cluster mode once the cluster signed it; until then handshakes fail, as upstream's.
    pub bootstrap: bool,
}

/// The serving pair requested from the cluster (`serverTLSBootstrap`), in the cert dir.
pub const SERVING_CURRENT: &str = "kubelet-server-current.pem";

/// The server side of TLS: the acceptor and, when client certificates are requested, their CA.
#[derive(Clone)]
pub struct Tls {
    pub acceptor: TlsAcceptor,
    pub client_ca: Option<Arc<ClientCa>>,
}

/// Builds the acceptor: loads or generates the certificate, loads the client CA.
pub fn build(settings: &TlsSettings) -> Result<Tls, TlsError> {
    #[expect(
        deprecated,
        reason = "ring has no post-quantum key exchange; rustls' other provider needs cmake and nasm"
    )]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (cert_file, key_file) = match (&settings.cert_file, &settings.key_file) {
        _ if settings.bootstrap => {
            let pair = settings.cert_dir.join(SERVING_CURRENT);
            (pair.clone(), pair)
        }
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        (None, None) => self_signed(settings)?,
        (cert, key) => {
            let show = |p: &Option<PathBuf>| {
                p.as_ref()
                    .map_or("unset".to_owned(), |p| p.display().to_string())
            };
            return Err(TlsError::HalfPair {
                cert: show(cert),
                key: show(key),
            });
        }
    };
    let resolver = if settings.bootstrap {
        ReloadingCert::awaited(cert_file, key_file, provider.clone())
    } else {
        ReloadingCert::new(cert_file, key_file, provider.clone())?
    };
    let client_ca = match &settings.client_ca_file {
        Some(path) => Some(Arc::new(ClientCa::new(path.clone(), provider.clone())?)),
        None => None,
    };
    let versions: &[&rustls::SupportedProtocolVersion] = match settings.min_version {
        Some(TlsVersion::Tls13) => &[&rustls::version::TLS13],
        _ => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let provider = Arc::new(with_suites(&provider, &settings.cipher_suites));
    let builder =
        ServerConfig::builder_with_provider(provider.clone()).with_protocol_versions(versions)?;
    let builder = if client_ca.is_some() {
        builder.with_client_cert_verifier(Arc::new(RequestClientCert(provider)))
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Tls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        client_ca,
    })
}

/// The provider with only the chosen TLS 1.2 suites (all TLS 1.3 suites stay).
fn with_suites(provider: &CryptoProvider, names: &[String]) -> CryptoProvider {
    let mut provider = provider.clone();
    if names.is_empty() {
        return provider;
    }
    let rustls_name = |suite: &rustls::SupportedCipherSuite| format!("{:?}", suite.suite());
    let chosen = |suite: &rustls::SupportedCipherSuite| {
        let name = rustls_name(suite);
        name.starts_with("TLS13_")
            || names
                .iter()
                .any(|go| *go == name || format!("{go}_SHA256") == name)
    };
    for go in names {
        let known = provider.cipher_suites.iter().any(|suite| {
            let name = rustls_name(suite);
            *go == name
                || format!("{go}_SHA256") == name
                || go.replacen("TLS_", "TLS13_", 1) == name
        });
        if !known {
            tracing::warn!(suite = %go, "tlsCipherSuites: not implemented by rustls; not offered");
        }
    }
    provider.cipher_suites.retain(chosen);
    provider
}

/// Upstream's self-signed pair in the cert dir: reused when both files exist.
fn self_signed(settings: &TlsSettings) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert = settings.cert_dir.join("kubelet.crt");
    let key = settings.cert_dir.join("kubelet.key");
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    let (cert_pem, key_pem) = generate(&settings.host_name, &settings.host_ips)?;
    let write = |path: &Path, text: &str, mode: u32| {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::create_dir_all(&settings.cert_dir)
            .and_then(|()| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(mode)
                    .open(path)
            })
            .and_then(|mut file| file.write_all(text.as_bytes()))
            .map_err(|source| TlsError::Write {
                path: path.to_owned(),
                source,
            })
    };
    write(&key, &key_pem, 0o600)?;
    write(&cert, &cert_pem, 0o644)?;
    tracing::info!(cert = %cert.display(), "generated a self-signed serving certificate");
    Ok((cert, key))
}

/// A CA and a serving certificate it signed, as upstream's `GenerateSelfSignedCertKey`: the
/// chain (serving certificate, then CA) and the key, PEM.
pub fn generate(host: &str, ips: &[IpAddr]) -> Result<(String, String), TlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let error = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let now = crate::clock::wall()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let start = time::OffsetDateTime::UNIX_EPOCH + now;
    let end = start + SELF_SIGNED_VALIDITY;
    let stamp = now.as_secs();

    let ca_key = KeyPair::generate().map_err(error)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(error)?;
    ca.distinguished_name
        .push(DnType::CommonName, format!("{host}-ca@{stamp}"));
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    (ca.not_before, ca.not_after) = (start, end);
    let ca = ca.self_signed(&ca_key).map_err(error)?;

    let mut names = vec![
        host.to_owned(),
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
    ];
    names.extend(ips.iter().map(ToString::to_string));
    names.dedup();
    let key = KeyPair::generate().map_err(error)?;
    let mut leaf = CertificateParams::new(names).map_err(error)?;
    leaf.distinguished_name
        .push(DnType::CommonName, format!("{host}@{stamp}"));
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    (leaf.not_before, leaf.not_after) = (start, end);
    let leaf = leaf.signed_by(&key, &ca, &ca_key).map_err(error)?;
    Ok((leaf.pem() + &ca.pem(), key.serialize_pem()))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn load_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let certs = read_certs(cert)?;
    let key_error = |reason: String| TlsError::Key {
        path: key.to_owned(),
        reason,
    };
    let bytes = std::fs::read(key).map_err(|source| TlsError::Read {
        path: key.to_owned(),
        source,
    })?;
    let der = PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| key_error(e.to_string()))?;
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| key_error(e.to_string()))?;
    let pair = CertifiedKey::new(certs, signing);
    pair.keys_match()
        .map_err(|e| key_error(format!("does not match {}: {e}", cert.display())))?;
    Ok(pair)
}

/// The modification times of `paths`, to notice a change.
fn stamps(paths: &[&Path]) -> Vec<Option<SystemTime>> {
    paths
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

/// A value loaded from files, loaded again when they change.
struct Reloading<T> {
    state: Mutex<(Arc<T>, Vec<Option<SystemTime>>, Instant)>,
}

impl<T> Reloading<T> {
    fn new(value: T, paths: &[&Path]) -> Self {
        Self {
            state: Mutex::new((Arc::new(value), stamps(paths), Instant::now())),
        }
    }

    /// The value, reloaded by `load` first if a file changed since the last check.
    fn current(&self, paths: &[&Path], load: impl FnOnce() -> Result<T, TlsError>) -> Arc<T> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if now.duration_since(state.2) >= RELOAD_CHECK {
            state.2 = now;
            let seen = stamps(paths);
            if seen != state.1 {
                state.1 = seen;
                match load() {
                    Ok(value) => {
                        tracing::info!(file = %paths[0].display(), "reloaded");
                        state.0 = Arc::new(value);
                    }
                    Err(error) => tracing::warn!(%error, "keeping the previous one"),
                }
            }
        }
        state.0.clone()
    }
}

/// The serving certificate, reloaded when its files change; none yet while a requested one
/// is awaited.
struct ReloadingCert {
    paths: [PathBuf; 2],
    provider: Arc<CryptoProvider>,
    pair: Reloading<Option<Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    fn new(cert: PathBuf, key: PathBuf, provider: Arc<CryptoProvider>) -> Result<Self, TlsError> {
        let pair = Some(Arc::new(load_pair(&cert, &key, &provider)?));
        let pair = Reloading::new(pair, &[&cert, &key]);
        Ok(Self {
            paths: [cert, key],
            provider,
            pair,
        })
    }

    /// A certificate that may not exist yet: served from the first handshake after it appears.
    fn awaited(cert: PathBuf, key: PathBuf, provider: Arc<CryptoProvider>) -> Self {
        let pair = match load_pair(&cert, &key, &provider) {
            Ok(pair) => Some(Arc::new(pair)),
            Err(error) => {
                tracing::info!(%error, "no serving certificate yet: the kubelet port refuses handshakes until the cluster signs one");
                None
            }
        };
        let pair = Reloading::new(pair, &[&cert, &key]);
        Self {
            paths: [cert, key],
            provider,
            pair,
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let [cert, key] = &self.paths;
        let pair = self.pair.current(&[cert, key], || {
            load_pair(cert, key, &self.provider).map(|pair| Some(Arc::new(pair)))
        });
        if pair.is_none() {
            tracing::debug!("handshake refused: no serving certificate yet");
        }
        (*pair).clone()
    }
}

/// `authentication.x509.clientCAFile`, reloaded when it changes: verifies client chains.
pub struct ClientCa {
    path: PathBuf,
    provider: Arc<CryptoProvider>,
    verifier: Reloading<Arc<dyn ClientCertVerifier>>,
}

impl ClientCa {
    pub fn new(path: PathBuf, provider: Arc<CryptoProvider>) -> Result<Self, TlsError> {
        let verifier = Self::load(&path, &provider)?;
        let verifier = Reloading::new(verifier, &[&path]);
        Ok(Self {
            path,
            provider,
            verifier,
        })
    }

    fn load(
        path: &Path,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in read_certs(path)? {
            roots.add(cert).map_err(|e| TlsError::ClientCa {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        }
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| TlsError::ClientCa {
                path: path.to_owned(),
                reason: e.to_string(),
            })
    }

    /// Whether `chain` (leaf first) is a valid client certificate chain to the CA now.
    pub fn verify(&self, chain: &[CertificateDer<'static>]) -> Result<(), rustls::Error> {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Err(rustls::Error::NoCertificatesPresented);
        };
        let verifier = self
            .verifier
            .current(&[&self.path], || Self::load(&self.path, &self.provider));
        let now = crate::clock::wall()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        verifier
            .verify_client_cert(leaf, intermediates, UnixTime::since_unix_epoch(now))
            .map(|_| ())
    }
}

/// Asks for a client certificate and checks the client holds its key; the chain is judged
/// per request ([`ClientCa::verify`]).
#[derive(Debug)]
struct RequestClientCert(Arc<CryptoProvider>);

impl ClientCertVerifier for RequestClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
