//! The kubelet port's webhook authentication and authorization, answered by the API server:
//! a `TokenReview` (`authentication.k8s.io/v1`) per bearer token and a `SubjectAccessReview`
//! (`authorization.k8s.io/v1`) per request's attributes. The server caches the answers
//! (`cacheTTL`, `cacheAuthorizedTTL`, `cacheUnauthorizedTTL`); this only asks.
//!
//! Upstream: `k8s.io/apiserver/pkg/authentication/token/webhook` and
//! `pkg/authorization/authorizerfactory` as `pkg/kubelet/server/auth.go` builds them, through
//! the node's own client (the `Node` authorizer grants `create` on both reviews).

use std::collections::BTreeMap;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::Api;
use kube::api::PostParams;

use crate::server::{
    AccessReviewer, Attributes, Decision, ReviewError, ReviewFuture, TokenReviewer, User,
};

/// Both reviews through one API client.
#[derive(Clone)]
pub struct ApiReviewer {
    pub client: kube::Client,
}

impl TokenReviewer for ApiReviewer {
    fn review<'a>(&'a self, token: &'a str) -> ReviewFuture<'a, Option<User>> {
        Box::pin(async move {
            let api: Api<TokenReview> = Api::all(self.client.clone());
            let review = TokenReview {
                spec: TokenReviewSpec {
                    token: Some(token.to_owned()),
                    audiences: None,
                },
                ..TokenReview::default()
            };
            let answer = api
                .create(&PostParams::default(), &review)
                .await
                .map_err(|error| ReviewError(format!("token review: {error}")))?;
            let status = answer.status.unwrap_or_default();
            if status.authenticated != Some(true) {
                return Ok(None);
            }
            let user = status.user.unwrap_or_default();
            Ok(Some(User {
                name: user.username.unwrap_or_default(),
                uid: user.uid.unwrap_or_default(),
                groups: user.groups.unwrap_or_default(),
                extra: user.extra.unwrap_or_default().into_iter().collect(),
            }))
        })
    }
}

impl AccessReviewer for ApiReviewer {
    fn review<'a>(&'a self, attributes: &'a Attributes) -> ReviewFuture<'a, Decision> {
        Box::pin(async move {
            let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
            let user = &attributes.user;
            let review = SubjectAccessReview {
                spec: SubjectAccessReviewSpec {
                    user: Some(user.name.clone()),
                    uid: Some(user.uid.clone()).filter(|uid| !uid.is_empty()),
                    groups: Some(user.groups.clone()),
                    extra: Some(user.extra.clone().into_iter().collect::<BTreeMap<_, _>>())
                        .filter(|extra| !extra.is_empty()),
                    resource_attributes: Some(ResourceAttributes {
                        verb: Some(attributes.verb.to_owned()),
                        group: Some(String::new()),
                        version: Some("v1".to_owned()),
                        resource: Some(attributes.resource.to_owned()),
                        subresource: Some(attributes.subresource.to_owned()),
                        name: Some(attributes.name.clone()),
                        ..ResourceAttributes::default()
                    }),
                    non_resource_attributes: None,
                },
                ..SubjectAccessReview::default()
            };
            let answer = api
                .create(&PostParams::default(), &review)
                .await
                .map_err(|error| ReviewError(format!("subject access review: {error}")))?;
            let status = answer.status.unwrap_or_default();
            let reason = match (status.reason, status.evaluation_error) {
                (Some(reason), _) if !reason.is_empty() => reason,
                (_, Some(error)) => error,
                _ => String::new(),
            };
            Ok(Decision {
                allowed: status.allowed,
                reason,
            })
        })
    }
}
