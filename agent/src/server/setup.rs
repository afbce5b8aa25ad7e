//! The endpoints a configuration asks for (upstream `cmd/kubelet/app/server.go` and
//! `auth.go`): the kubelet port with TLS and the configured authentication and authorization,
//! the read-only port when `readOnlyPort` is set, the healthz port when `healthzPort` is.
//!
//! Webhook authentication and authorization need the API server's reviews. Without an API
//! client kernlet refuses to start, as upstream does ("no client provided, cannot use webhook
//! authentication"), and names the ways out.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::{
    Access, AccessReviewer, Authenticator, Authorizer, Endpoint, Limits, RouteSet, TokenReviewer,
    tls,
};
use crate::config::{AuthorizationMode, KubeletConfig};

/// The API server's reviews, when kernlet has an API client.
#[derive(Clone)]
pub struct Reviewers {
    pub tokens: Arc<dyn TokenReviewer>,
    pub access: Arc<dyn AccessReviewer>,
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(
        "no client provided, cannot use webhook authentication: kernlet has no API server \
         client (standalone mode). Set authentication.webhook.enabled: false and let clients \
         authenticate with certificates (authentication.x509.clientCAFile, or --client-ca-file), \
         or run in cluster mode with --kubeconfig"
    )]
    TokenWebhook,
    #[error(
        "no client provided, cannot use webhook authorization: kernlet has no API server client \
         (standalone mode). Set authorization.mode: AlwaysAllow (every authenticated client may \
         do everything), or run in cluster mode with --kubeconfig"
    )]
    AccessWebhook,
    #[error("kubelet port tls: {0}")]
    Tls(#[from] tls::TlsError),
}

/// A listening endpoint to start: where, what, and its name for the logs.
pub struct Planned {
    pub addr: SocketAddr,
    pub endpoint: Endpoint,
    pub name: &'static str,
}

/// The endpoints `config` asks for (none without `enableServer` but the healthz port).
pub fn endpoints(
    config: &KubeletConfig,
    host_ips: &[IpAddr],
    reviewers: Option<&Reviewers>,
) -> Result<Vec<Planned>, SetupError> {
    let mut planned = Vec::new();
    if config.enable_server {
        planned.push(Planned {
            addr: SocketAddr::new(config.address, config.port),
            endpoint: kubelet_port(config, host_ips, reviewers)?,
            name: "kubelet",
        });
        if config.read_only_port != 0 {
            planned.push(Planned {
                addr: SocketAddr::new(config.address, config.read_only_port),
                endpoint: Endpoint::plain(RouteSet::ReadOnly),
                name: "read-only",
            });
        }
    }
    if config.healthz_port != 0 {
        planned.push(Planned {
            addr: SocketAddr::new(config.healthz_bind_address, config.healthz_port),
            endpoint: Endpoint::plain(RouteSet::Healthz),
            name: "healthz",
        });
    }
    Ok(planned)
}

fn kubelet_port(
    config: &KubeletConfig,
    host_ips: &[IpAddr],
    reviewers: Option<&Reviewers>,
) -> Result<Endpoint, SetupError> {
    let authn = &config.authentication;
    let tokens = match (authn.webhook_enabled, reviewers) {
        (false, _) => None,
        (true, Some(r)) => Some((r.tokens.clone(), authn.webhook_cache_ttl)),
        (true, None) => return Err(SetupError::TokenWebhook),
    };
    let authorization = &config.authorization;
    let authorizer = match (authorization.mode, reviewers) {
        (AuthorizationMode::AlwaysAllow, _) => Authorizer::AlwaysAllow,
        (AuthorizationMode::Webhook, Some(r)) => Authorizer::webhook(
            r.access.clone(),
            authorization.webhook_cache_authorized_ttl,
            authorization.webhook_cache_unauthorized_ttl,
        ),
        (AuthorizationMode::Webhook, None) => return Err(SetupError::AccessWebhook),
    };
    let tls = tls::build(&tls::TlsSettings {
        cert_file: config.tls_cert_file.clone(),
        key_file: config.tls_private_key_file.clone(),
        cert_dir: config.cert_dir.clone(),
        client_ca_file: authn.x509_client_ca_file.clone(),
        min_version: config.tls_min_version,
        cipher_suites: config.tls_cipher_suites.clone(),
        host_name: config.node_name.clone(),
        host_ips: host_ips.to_vec(),
        bootstrap: config.cluster.server_tls_bootstrap,
    })?;
    let authenticator = Authenticator::new(tls.client_ca.clone(), tokens, authn.anonymous_enabled);
    Ok(Endpoint {
        tls: Some(tls),
        access: Access {
            authenticator,
            authorizer,
            node_name: config.node_name.clone(),
        },
        // Without the debugging handlers (logs, exec, attach, port-forward, configz,
        // runningpods) the kubelet port serves upstream's default routes only.
        routes: if config.enable_debugging_handlers {
            RouteSet::Full
        } else {
            RouteSet::NoDebugging
        },
        limits: Limits::default(),
    })
}
