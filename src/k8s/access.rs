//! SubjectAccessReviews: whether a user may do something, as the API server's authorizers
//! answer it. A review is a read: the API server stores nothing.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

use crate::client::Cluster;
use crate::error::Result;

/// The answer to one review.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    /// Whether the request would be allowed.
    pub allowed: bool,
    /// The authorizer's reason, if it gave one.
    pub reason: String,
}

/// Whether `user`, in `groups`, may do what `attributes` say.
pub async fn review(
    cluster: &Cluster,
    user: String,
    groups: Vec<String>,
    attributes: ResourceAttributes,
) -> Result<Answer> {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user),
            groups: (!groups.is_empty()).then_some(groups),
            resource_attributes: Some(attributes),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(cluster.client.clone());
    let answer = api
        .create(&PostParams::default(), &review)
        .await
        .map_err(cluster.error("create", "subjectaccessreview"))?;
    let status = answer.status.unwrap_or_default();
    Ok(Answer {
        allowed: status.allowed,
        reason: status.reason.unwrap_or_default(),
    })
}
