//! Client credentials for kernlet's TLS port: a client CA (for kernlet's
//! `authentication.x509.clientCAFile`) and a certificate it signed, as an operator would issue
//! with their cluster CA. The user is `kernlet-admin` in `system:masters`; the fixture's
//! config authorizes every authenticated user (`AlwaysAllow`).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// The client user's name (its certificate's CN).
pub const CLIENT_USER: &str = "kernlet-admin";

/// Where the files are.
#[derive(Debug, Clone)]
pub struct ClientPki {
    /// The CA kernlet trusts for client certificates.
    pub ca: PathBuf,
    /// The client's certificate and key (PEM).
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ClientPki {
    /// The files in `dir`, created if missing (a second call reuses them).
    pub fn ensure(dir: &Path) -> Result<Self> {
        let pki = Self {
            ca: dir.join("client-ca.crt"),
            cert: dir.join("client.crt"),
            key: dir.join("client.key"),
        };
        if pki.ca.exists() && pki.cert.exists() && pki.key.exists() {
            return Ok(pki);
        }
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.distinguished_name
            .push(DnType::CommonName, "kernlet-client-ca");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = ca.self_signed(&ca_key)?;
        let key = KeyPair::generate()?;
        let mut client = CertificateParams::new(Vec::<String>::new())?;
        client
            .distinguished_name
            .push(DnType::CommonName, CLIENT_USER);
        client
            .distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client = client.signed_by(&key, &ca, &ca_key)?;
        let write = |path: &Path, text: String| {
            fs::write(path, text).with_context(|| format!("writing {}", path.display()))
        };
        write(&pki.ca, ca.pem())?;
        write(&pki.cert, client.pem())?;
        write(&pki.key, key.serialize_pem())?;
        Ok(pki)
    }

    /// The `authentication` and `authorization` config lines that make kernlet accept this
    /// client (and nothing anonymous): standalone, so no webhooks.
    #[must_use]
    pub fn kernlet_config(&self) -> [(&'static str, String); 2] {
        [
            (
                "authentication",
                format!(
                    "{{x509: {{clientCAFile: {}}}, webhook: {{enabled: false}}, \
                     anonymous: {{enabled: false}}}}",
                    self.ca.display()
                ),
            ),
            ("authorization", "{mode: AlwaysAllow}".to_owned()),
        ]
    }

    /// The `curl` line that reads `path` from kernlet on `port` with this identity, trusting
    /// kernlet's serving certificate in `cert_dir`.
    #[must_use]
    pub fn curl(&self, cert_dir: &Path, port: u16, path: &str) -> String {
        format!(
            "curl --cacert {} --cert {} --key {} https://localhost:{port}{path}",
            cert_dir.join("kubelet.crt").display(),
            self.cert.display(),
            self.key.display()
        )
    }
}
