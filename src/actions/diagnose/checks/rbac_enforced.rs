//! rbac_enforced: a SubjectAccessReview for a made-up user with no bindings, asking to delete
//! secrets in kube-system; allowed means RBAC is not enforced (critical).

use k8s_openapi::api::authorization::v1::ResourceAttributes;
use serde_json::json;

use super::{Check, Outcome, Run, reason};
use crate::actions::diagnose::Diagnose;
use crate::actions::diagnose::report::{Finding, Severity, finding};
use crate::client::Cluster;
use crate::error::Result;
use crate::k8s::access;

/// Runs the check.
pub(super) async fn run(_: &Diagnose, run: &mut Run<'_>) -> Outcome {
    rbac_enforced(&run.cx.cluster).await.map_err(reason)
}

/// The made-up user of the RBAC probe: no binding names it.
const NOBODY: &str = "kubemend:diagnose:no-such-user";

async fn rbac_enforced(cluster: &Cluster) -> Result<Vec<Finding>> {
    let answer = access::review(
        cluster,
        NOBODY.into(),
        Vec::new(),
        ResourceAttributes {
            namespace: Some("kube-system".into()),
            resource: Some("secrets".into()),
            verb: Some("delete".into()),
            ..ResourceAttributes::default()
        },
    )
    .await?;
    Ok(vec![rbac_finding(answer.allowed, &answer.reason)])
}

/// The finding of the RBAC probe.
#[must_use]
pub fn rbac_finding(allowed: bool, why: &str) -> Finding {
    let why = if why.is_empty() {
        String::new()
    } else {
        format!(" (reason: {why})")
    };
    let mut f = if allowed {
        let mut f = finding(
            Check::RbacEnforced,
            Severity::Critical,
            "apiserver/authorization".into(),
            format!(
                "a user no binding names ({NOBODY}) is allowed to delete secrets in kube-system{why}: \
                 RBAC is not enforced"
            ),
        );
        "enable RBAC (`microk8s enable rbac`: --authorization-mode=RBAC,Node); until then every \
         authenticated client may do anything and ClusterRole fixes change nothing; no kubemend \
         action does this"
            .clone_into(&mut f.hint);
        f
    } else {
        let mut f = finding(
            Check::RbacEnforced,
            Severity::Info,
            "apiserver/authorization".into(),
            format!("a user no binding names may not delete secrets in kube-system{why}"),
        );
        "nothing to do".clone_into(&mut f.hint);
        f
    };
    f.data.insert("allowed".into(), json!(allowed));
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rbac_allowed_for_nobody_is_critical() {
        assert_eq!(rbac_finding(true, "").severity, Severity::Critical);
        let f = rbac_finding(false, "");
        assert_eq!(f.severity, Severity::Info);
    }
}
