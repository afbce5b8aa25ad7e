//! What a user may do: upstream's kubelet authorization (`pkg/kubelet/server/auth.go`,
//! `nodeAuthorizerAttributesGetter`, and the delegating authorizer of
//! `k8s.io/apiserver/pkg/authorization/authorizerfactory`).
//!
//! A request becomes attributes on the `nodes` resource named after this node: the verb from
//! the method (`POST` create, `GET` get, `PUT` update, `PATCH` patch, `DELETE` delete; anything
//! else has no verb, as upstream) and the subresource from the path: `stats`, `metrics`, `log`
//! (`/logs/`), `checkpoint`, else `proxy`; with fine-grained kubelet authorization (KEP-2862,
//! GA in v1.36) `/pods` and `/runningpods/` try `pods`, `/healthz` `healthz`, `/configz`
//! `configz` first, then `proxy`: either allows. `AlwaysAllow` allows every authenticated
//! request; `Webhook` asks an [`AccessReviewer`] (a `SubjectAccessReview`) and caches its
//! answers, allowed for `cacheAuthorizedTTL` and denied for `cacheUnauthorizedTTL`.

use std::sync::Arc;
use std::time::Duration;

use hyper::Method;

use super::authn::{ReviewError, ReviewFuture, User};
use super::cache::{CAPACITY, TtlCache};

/// One `SubjectAccessReview`'s resource attributes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attributes {
    pub user: User,
    /// `get`, `create`, …; empty for a method upstream has no verb for.
    pub verb: &'static str,
    /// Always `nodes` (group "", version `v1`).
    pub resource: &'static str,
    pub subresource: &'static str,
    /// The node's name.
    pub name: String,
}

/// An access review's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The reviewer's reason, for the log.
    pub reason: String,
}

/// Reviews attributes (a `SubjectAccessReview`). The API client provides it.
pub trait AccessReviewer: Send + Sync {
    fn review<'a>(&'a self, attributes: &'a Attributes) -> ReviewFuture<'a, Decision>;
}

/// The configured authorizer.
pub enum Authorizer {
    AlwaysAllow,
    Webhook {
        reviewer: Arc<dyn AccessReviewer>,
        allowed_ttl: Duration,
        denied_ttl: Duration,
        cache: TtlCache<Attributes, Decision>,
    },
}

impl Authorizer {
    /// `Webhook` through `reviewer`, caching for the two TTLs.
    #[must_use]
    pub fn webhook(
        reviewer: Arc<dyn AccessReviewer>,
        allowed_ttl: Duration,
        denied_ttl: Duration,
    ) -> Self {
        Self::Webhook {
            reviewer,
            allowed_ttl,
            denied_ttl,
            cache: TtlCache::new(CAPACITY),
        }
    }

    /// Whether `user` may `method` `path` on node `node`: the first subresource that allows
    /// wins. `Err` when the reviewer could not answer (a 500, as upstream).
    pub async fn authorize(
        &self,
        user: &User,
        method: &Method,
        path: &str,
        node: &str,
    ) -> Result<(Decision, Attributes), ReviewError> {
        let mut last = None;
        for subresource in subresources(path) {
            let attributes = Attributes {
                user: user.clone(),
                verb: verb(method),
                resource: "nodes",
                subresource,
                name: node.to_owned(),
            };
            let decision = self.decide(&attributes).await?;
            if decision.allowed {
                return Ok((decision, attributes));
            }
            last = Some((decision, attributes));
        }
        // `subresources` is never empty; this is its last answer.
        last.ok_or_else(|| ReviewError("no subresource to authorize".to_owned()))
    }

    async fn decide(&self, attributes: &Attributes) -> Result<Decision, ReviewError> {
        match self {
            Self::AlwaysAllow => Ok(Decision {
                allowed: true,
                reason: String::new(),
            }),
            Self::Webhook {
                reviewer,
                allowed_ttl,
                denied_ttl,
                cache,
            } => {
                if let Some(known) = cache.get(attributes) {
                    return Ok(known);
                }
                let decision = reviewer.review(attributes).await?;
                let ttl = if decision.allowed {
                    *allowed_ttl
                } else {
                    *denied_ttl
                };
                cache.put(attributes.clone(), decision.clone(), ttl);
                Ok(decision)
            }
        }
    }
}

/// Upstream's verb for a method.
#[must_use]
pub fn verb(method: &Method) -> &'static str {
    match *method {
        Method::POST => "create",
        Method::GET => "get",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "",
    }
}

/// `path` is `prefix` (without its trailing slash) or below it (upstream's `isSubpath`).
fn is_subpath(path: &str, prefix: &str) -> bool {
    let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The subresources tried for `path`, in order.
#[must_use]
pub fn subresources(path: &str) -> Vec<&'static str> {
    let mut out = Vec::with_capacity(2);
    if is_subpath(path, "/pods") || is_subpath(path, "/runningpods/") {
        out.push("pods");
    } else if is_subpath(path, "/healthz") {
        out.push("healthz");
    } else if is_subpath(path, "/configz") {
        out.push("configz");
    }
    out.push(if is_subpath(path, "/stats") {
        "stats"
    } else if is_subpath(path, "/metrics") {
        "metrics"
    } else if is_subpath(path, "/logs/") {
        "log"
    } else if is_subpath(path, "/checkpoint") {
        "checkpoint"
    } else {
        "proxy"
    });
    out
}
