//! Who is asking: upstream's delegating authenticator for the kubelet port
//! (`k8s.io/apiserver/pkg/authentication/authenticatorfactory`, as `cmd/kubelet/app/auth.go`
//! builds it).
//!
//! In order: a client certificate verified against `authentication.x509.clientCAFile` (user =
//! CN, groups = O); a bearer token (`Authorization: Bearer …`, or on a WebSocket request the
//! subprotocol `base64url.bearer.authorization.k8s.io.<base64url token>`, as browsers cannot set
//! headers: upstream's `websocket.ProtocolAuthenticator`) reviewed by a [`TokenReviewer`]
//! (a `TokenReview` on the API server) with its answers, yes or no, cached for
//! `authentication.webhook.cacheTTL`; then, only if enabled and no credential was presented,
//! `system:anonymous` in `system:unauthenticated`. Credentials that are presented and fail are a
//! 401 even with anonymous access on (upstream's fail-on-error union). Without a token reviewer
//! the `Authorization` header is not a credential and is ignored. Authenticated users are in
//! `system:authenticated`.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::{AUTHORIZATION, HeaderMap};
use tokio_rustls::rustls::pki_types::CertificateDer;

use super::cache::{CAPACITY, TtlCache};
use super::tls::ClientCa;

/// The user's name, uid, groups and extra attributes (upstream `user.Info`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl User {
    /// `system:anonymous` in `system:unauthenticated`.
    #[must_use]
    pub fn anonymous() -> Self {
        Self {
            name: "system:anonymous".to_owned(),
            groups: vec!["system:unauthenticated".to_owned()],
            ..Self::default()
        }
    }
}

/// A review the API server could not give (unreachable, refused, malformed answer).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ReviewError(pub String);

/// A boxed future of a review.
pub type ReviewFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ReviewError>> + Send + 'a>>;

/// Reviews a bearer token (a `TokenReview`): the user it belongs to, or `None` when the API
/// server says it is not authenticated. The API client provides it.
pub trait TokenReviewer: Send + Sync {
    fn review<'a>(&'a self, token: &'a str) -> ReviewFuture<'a, Option<User>>;
}

/// Why a request is not authenticated (all are a 401; the reason goes to the log only).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthnError {
    #[error("no credentials and anonymous access is disabled")]
    NoCredentials,
    #[error("client certificate not accepted: {0}")]
    Certificate(String),
    #[error("bearer token not accepted by the token review")]
    InvalidToken,
    #[error("token review failed: {0}")]
    Review(String),
    #[error("{0}")]
    ProtocolToken(&'static str),
}

/// The token half: the reviewer and its cache.
struct Tokens {
    reviewer: Arc<dyn TokenReviewer>,
    ttl: Duration,
    cache: TtlCache<String, Option<User>>,
}

/// The configured ways to authenticate.
pub struct Authenticator {
    client_ca: Option<Arc<ClientCa>>,
    tokens: Option<Tokens>,
    anonymous: bool,
}

impl Authenticator {
    /// `client_ca` from the TLS setup; `tokens` with its cache TTL when the webhook is enabled.
    #[must_use]
    pub fn new(
        client_ca: Option<Arc<ClientCa>>,
        tokens: Option<(Arc<dyn TokenReviewer>, Duration)>,
        anonymous: bool,
    ) -> Self {
        Self {
            client_ca,
            tokens: tokens.map(|(reviewer, ttl)| Tokens {
                reviewer,
                ttl,
                cache: TtlCache::new(CAPACITY),
            }),
            anonymous,
        }
    }

    /// Anyone is `system:anonymous`: the read-only port and the healthz port.
    #[must_use]
    pub fn anonymous_only() -> Self {
        Self::new(None, None, true)
    }

    /// The user making a request that came with the client `chain` (leaf first; empty for
    /// none) and `headers`.
    pub async fn authenticate(
        &self,
        chain: &[CertificateDer<'static>],
        headers: &HeaderMap,
    ) -> Result<User, AuthnError> {
        let mut failure = None;
        if let (Some(ca), false) = (&self.client_ca, chain.is_empty()) {
            match ca.verify(chain) {
                // A verified certificate without a common name names nobody: on to the token
                // or anonymous, as upstream.
                Ok(()) => {
                    if let Some(user) = user_of(&chain[0]) {
                        return Ok(authenticated(user));
                    }
                }
                Err(error) => failure = Some(AuthnError::Certificate(error.to_string())),
            }
        }
        // Without a token reviewer a token is not a credential (upstream has no token
        // authenticator then): the header is ignored.
        let token = match bearer_token(headers) {
            Some(token) => Some(token.to_owned()),
            None if self.tokens.is_some() => protocol_token(headers)?,
            None => None,
        };
        if let (Some(tokens), Some(token)) = (&self.tokens, token) {
            return match review(tokens, &token).await {
                Ok(Some(user)) => Ok(authenticated(user)),
                Ok(None) => Err(AuthnError::InvalidToken),
                Err(error) => Err(AuthnError::Review(error.0)),
            };
        }
        match failure {
            Some(failure) => Err(failure),
            None if self.anonymous => Ok(User::anonymous()),
            None => Err(AuthnError::NoCredentials),
        }
    }
}

/// Every authenticated user is in `system:authenticated` (upstream's
/// `AuthenticatedGroupAdder`).
fn authenticated(mut user: User) -> User {
    const GROUP: &str = "system:authenticated";
    if !user.groups.iter().any(|g| g == GROUP) {
        user.groups.push(GROUP.to_owned());
    }
    user
}

/// The prefix of a WebSocket subprotocol that carries a bearer token.
pub(super) const TOKEN_PROTOCOL: &str = "base64url.bearer.authorization.k8s.io.";

/// The token a WebSocket request carries as a subprotocol (upstream's checks and messages: one
/// token at most, base64url without padding, UTF-8, and another subprotocol beside it to answer
/// with); `None` for other requests.
fn protocol_token(headers: &HeaderMap) -> Result<Option<String>, AuthnError> {
    use base64::Engine as _;
    if !super::query::is_websocket(headers) {
        return Ok(None);
    }
    let mut token = None;
    let mut others = 0;
    let offered = headers
        .get_all(hyper::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim);
    for protocol in offered {
        let Some(encoded) = protocol.strip_prefix(TOKEN_PROTOCOL) else {
            others += usize::from(!protocol.is_empty());
            continue;
        };
        if token.is_some() {
            return Err(AuthnError::ProtocolToken(
                "multiple base64.bearer.authorization tokens specified",
            ));
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| {
                AuthnError::ProtocolToken("invalid base64.bearer.authorization token encoding")
            })?;
        let text = String::from_utf8(bytes)
            .map_err(|_| AuthnError::ProtocolToken("invalid base64.bearer.authorization token"))?;
        token = Some(text);
    }
    if token.is_some() && others == 0 {
        return Err(AuthnError::ProtocolToken("missing additional subprotocol"));
    }
    Ok(token.filter(|t| !t.is_empty()))
}

async fn review(tokens: &Tokens, token: &str) -> Result<Option<User>, ReviewError> {
    if let Some(known) = tokens.cache.get(&token.to_owned()) {
        return Ok(known);
    }
    let answer = tokens.reviewer.review(token).await?;
    tokens
        .cache
        .put(token.to_owned(), answer.clone(), tokens.ttl);
    Ok(answer)
}

/// `Authorization: Bearer <token>` (the scheme in any case), split on single spaces as
/// upstream's `bearertoken` does; an empty token is no token.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let mut parts = value.splitn(3, ' ');
    let scheme = parts.next()?;
    let token = parts.next()?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The user a verified client certificate names: CN, and each O as a group (upstream's
/// `CommonNameUserConversion`); `None` without a common name.
#[must_use]
pub fn user_of(cert: &CertificateDer<'_>) -> Option<User> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = parsed.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?;
    if name.is_empty() {
        return None;
    }
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(str::to_owned)
        .collect();
    Some(User {
        name: name.to_owned(),
        groups,
        ..User::default()
    })
}
