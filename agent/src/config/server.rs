//! The server's part of the configuration: `authentication`, `authorization`, `tlsMinVersion`
//! and `tlsCipherSuites` (upstream `KubeletAuthentication`, `KubeletAuthorization`, and the TLS
//! options of `cmd/kubelet/app/options` with component-base's cipher names).

use std::path::PathBuf;
use std::time::Duration;

/// `authentication` (upstream `KubeletAuthentication`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authentication {
    /// `x509.clientCAFile`.
    pub x509_client_ca_file: Option<PathBuf>,
    /// `webhook.enabled`.
    pub webhook_enabled: bool,
    /// `webhook.cacheTTL`.
    pub webhook_cache_ttl: Duration,
    /// `anonymous.enabled`.
    pub anonymous_enabled: bool,
}

impl Default for Authentication {
    fn default() -> Self {
        Self {
            x509_client_ca_file: None,
            webhook_enabled: true,
            webhook_cache_ttl: Duration::from_mins(2),
            anonymous_enabled: false,
        }
    }
}

/// `authorization` (upstream `KubeletAuthorization`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// `mode`.
    pub mode: AuthorizationMode,
    /// `webhook.cacheAuthorizedTTL`.
    pub webhook_cache_authorized_ttl: Duration,
    /// `webhook.cacheUnauthorizedTTL`.
    pub webhook_cache_unauthorized_ttl: Duration,
}

impl Default for Authorization {
    fn default() -> Self {
        Self {
            mode: AuthorizationMode::Webhook,
            webhook_cache_authorized_ttl: Duration::from_mins(5),
            webhook_cache_unauthorized_ttl: Duration::from_secs(30),
        }
    }
}

/// `authorization.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorizationMode {
    /// `Webhook`: ask the API server with a `SubjectAccessReview`.
    Webhook,
    /// `AlwaysAllow`: every authenticated request is allowed.
    AlwaysAllow,
}

/// `tlsMinVersion`. Upstream also accepts `VersionTLS10` and `VersionTLS11`, which kernlet's TLS
/// library (rustls) does not speak; the config refuses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// `VersionTLS12`.
    Tls12,
    /// `VersionTLS13`.
    Tls13,
}

impl TlsVersion {
    /// Upstream's name, as written in the config file.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Tls12 => "VersionTLS12",
            Self::Tls13 => "VersionTLS13",
        }
    }
}

/// The cipher suite names upstream accepts in `tlsCipherSuites` (Go's `crypto/tls` names, the
/// secure and the insecure lists of component-base `cliflag`). Which of them are offered is the
/// server's business: rustls implements the ECDHE-AEAD suites and TLS 1.3's only.
pub const GO_CIPHER_SUITES: [&str; 29] = [
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_RC4_128_SHA",
    "TLS_FALLBACK_SCSV",
    "TLS_EMPTY_RENEGOTIATION_INFO_SCSV",
];
